"""Token reduction of the visual index: vectors kept against one per sampled frame, and what that costs
in query-by-frame retrieval of the right shot.

On bbb_10min.mp4: the shots come from the shot stage; frames are sampled inside each shot at `--fps`
(as the vision stage does) and encoded by the default image encoder (EfficientNet-Lite0). Indexes
compared side by side, each vector labelled with its shot:
- `per-frame`: one vector per sampled frame (the peer: what a frame-level index stores);
- `temporal`: the vision stage's token merging (kernels/tokens.py `merge_temporal`: at most 4
  contiguous runs per shot, the exact optimum for a penalty per run) at its default penalty, and a
  sweep of penalties;
- `ToMe`: bipartite soft matching (`merge_tokens`) while links of a cosine threshold remain, at most
  4 per shot, and a sweep of thresholds;
- `mean`: one vector per shot, the mean of its frames; `keyframe`: the middle frame's vector only.
Queries are held-out frames (halfway between two sampled frames, never indexed); a query is right
when its shot is the top-1 (recall@1) or among the top-10 distinct shots (recall@10), shots ranked
by their best vector.

Run: .venv/bin/python -m tests.bench.bench_tokens [--fps 1 2 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from indexers.decode import DecodeOptions, probe, sample_frames
from indexers.shots import ShotOptions
from indexers.visual import LookOptions, VisualJob, run_visual, sample_times
from kernels.tokens import merge_temporal, merge_tokens
from memory.runtime.images import EfficientNetEncoder
from tests.bench.common import SHARED, WORK, machine, write_results

VIDEO = SHARED / "media" / "bbb_10min.mp4"
THRESHOLDS = (0.75, 0.82, 0.9, 0.95)
PENALTIES = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4)


def encode(info, times: list[float], enc: EfficientNetEncoder) -> tuple[list[int], np.ndarray]:  # type: ignore[no-untyped-def]
    """Vectors of the frames at `times` (those that decode), in batches, and which times they are."""
    got, vecs, batch = [], [], []
    for at, _, frame in sample_frames(info, times, max_side=320):
        got.append(at)
        batch.append(frame)
        if len(batch) == 64:
            vecs.append(enc.encode(np.stack(batch)))
            batch = []
    if batch:
        vecs.append(enc.encode(np.stack(batch)))
    return got, np.concatenate(vecs)


def recall(
    index: np.ndarray, labels: np.ndarray, queries: np.ndarray, truth: np.ndarray
) -> tuple[float, float]:
    """recall@1 and @10 of the right shot, shots ranked by their best vector."""
    sims = queries @ index.T  # (Q, V)
    n_shots = int(labels.max()) + 1
    best = np.full((len(queries), n_shots), -np.inf, np.float32)
    for v in range(len(index)):
        np.maximum(best[:, labels[v]], sims[:, v], out=best[:, labels[v]])
    order = np.argsort(-best, axis=1)[:, :10]
    r1 = float(np.mean(order[:, 0] == truth))
    r10 = float(np.mean([truth[q] in order[q] for q in range(len(queries))]))
    return r1, r10


def reduce(  # type: ignore[no-untyped-def]
    frames: np.ndarray, owner: np.ndarray, shots: list[tuple[float, float]], how: str, param: float, keep: int
):
    vecs, labels = [], []
    for i, (start, end) in enumerate(shots):
        x = frames[owner == i]
        if not len(x):
            continue
        if how == "mean":
            out = x.mean(0, keepdims=True)
        elif how == "keyframe":
            out = x[len(x) // 2 : len(x) // 2 + 1]
        elif how == "tome":
            out = merge_tokens(torch.from_numpy(x), keep, threshold=param).tokens.numpy()
        else:  # as the vision stage does: each frame weighs the seconds of shot it stands for
            seconds = torch.full((len(x),), max(end - start, 1e-3) / len(x))
            out = merge_temporal(torch.from_numpy(x), keep, param, seconds).tokens.numpy()
        vecs.append(out / np.linalg.norm(out, axis=1, keepdims=True))
        labels += [i] * len(out)
    return np.concatenate(vecs).astype(np.float32), np.array(labels)


def run(fps: float, shots: list[tuple[float, float]], info, enc) -> dict:  # type: ignore[no-untyped-def]
    look = LookOptions(fps=fps, max_frames=10_000)  # no cap: the peer keeps every sampled frame
    times, owner_list = sample_times(shots, look)
    step = 1.0 / fps
    queries_t, truth_list = [], []
    for t, i in zip(times, owner_list, strict=True):
        q = t + step / 2
        if shots[i][0] + 0.1 < q < shots[i][1] - 0.1:  # held out, inside the same shot
            queries_t.append(q)
            truth_list.append(i)
    t0 = time.perf_counter()
    cache = WORK / f"tokens-{VIDEO.stem}-{fps:g}fps-{len(shots)}shots.npz"
    if cache.exists():  # encoding is the slow part: reuse it when only the reduction changed
        z = np.load(cache)
        frames, owner, queries, truth = z["frames"], z["owner"], z["queries"], z["truth"]
    else:
        got, frames = encode(info, times, enc)
        owner = np.array(owner_list)[got]
        qgot, queries = encode(info, queries_t, enc)
        truth = np.array(truth_list)[qgot]
        WORK.mkdir(parents=True, exist_ok=True)
        np.savez(cache, frames=frames, owner=owner, queries=queries, truth=truth)
    seconds = time.perf_counter() - t0
    hours = info.duration / 3600
    full = recall(frames, owner, queries, truth)
    rows = [{"index": "per-frame", "vectors": len(frames), "r1": full[0], "r10": full[1]}]
    for how in ("mean", "keyframe"):
        v, lab = reduce(frames, owner, shots, how, 0.0, 1)
        r = recall(v, lab, queries, truth)
        rows.append({"index": how, "vectors": len(v), "r1": r[0], "r10": r[1]})
    default = LookOptions()
    for pen in PENALTIES:
        v, lab = reduce(frames, owner, shots, "temporal", pen, default.keep)
        r = recall(v, lab, queries, truth)
        name = f"temporal, penalty {pen}" + (" (default)" if pen == default.merge_penalty else "")
        rows.append({"index": name, "vectors": len(v), "r1": r[0], "r10": r[1]})
    for th in THRESHOLDS:
        v, lab = reduce(frames, owner, shots, "tome", th, default.keep)
        r = recall(v, lab, queries, truth)
        rows.append({"index": f"ToMe, threshold {th}", "vectors": len(v), "r1": r[0], "r10": r[1]})
    for row in rows:
        row["per_hour"] = row["vectors"] / hours
        row["share"] = row["vectors"] / len(frames)
        row["r1_ratio"] = row["r1"] / full[0] if full[0] else 0.0
        row["r10_ratio"] = row["r10"] / full[1] if full[1] else 0.0
    return {
        "fps": fps,
        "frames": len(frames),
        "queries": len(queries),
        "encode_seconds": seconds,
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fps", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    args = ap.parse_args()
    info = probe(VIDEO)
    result = run_visual(VisualJob(info, DecodeOptions(), ShotOptions(), look=None))
    shots = [(s.start, s.end) for s in result.shots]
    enc = EfficientNetEncoder()
    runs = [run(fps, shots, info, enc) for fps in args.fps]
    md = [
        "# Token reduction of the visual index",
        "",
        f"`{VIDEO.name}`: {info.duration / 60:.1f} min, {len(shots)} shots "
        f"({len(shots) / (info.duration / 3600):.0f} per hour). Encoder: EfficientNet-Lite0 pooled features. "
        "Queries are held-out frames (halfway between two sampled frames); recall of the right shot, "
        "shots ranked by their best vector.",
        "",
        "Reproduce: `.venv/bin/python -m tests.bench.bench_tokens --fps "
        + " ".join(f"{f:g}" for f in args.fps)
        + "`",
        f"Machine: {machine()}.",
        "",
    ]
    for r in runs:
        md += [
            f"## Sampling {r['fps']:g} frame(s) per second: {r['frames']} frames, {r['queries']} queries",
            "",
            "| index | vectors | per hour | share of per-frame | recall@1 | recall@10 | @1 vs per-frame | @10 vs per-frame |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in r["rows"]:
            md.append(
                f"| {row['index']} | {row['vectors']} | {row['per_hour']:.0f} | {100 * row['share']:.1f}% | "
                f"{row['r1']:.3f} | {row['r10']:.3f} | {100 * row['r1_ratio']:.1f}% | {100 * row['r10_ratio']:.1f}% |"
            )
        md.append("")
    write_results(
        "tokens",
        {"video": VIDEO.name, "shots": len(shots), "duration": info.duration, "runs": runs},
        "\n".join(md) + "\n",
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
