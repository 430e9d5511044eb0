"""Shot detection: vidmem against PySceneDetect's ContentDetector, same videos, same run.

Accuracy on a cut set composed from real clips with known hard cuts, dissolves and fades
(tests/bench/cutset.py); speed (source frames per second, decoding included) on the cut set and on
bbb_10min.mp4. Each detector runs `--repeat` times per video and the fastest run counts.

Run: .venv/bin/python -m tests.bench.bench_shots [--repeat 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from indexers.decode import DecodeOptions, probe, stream_frames
from indexers.shots import ContentShotDetector
from tests.bench.common import RESULTS, SHARED, WORK, machine, write_results
from tests.bench.cutset import compose_cut_set, pyscenedetect_boundaries, score


def vidmem_boundaries(path: Path, decoder: str, reference_only: bool = True) -> tuple[list[float], float]:
    start = time.perf_counter()
    info = probe(path)
    opts = DecodeOptions(reference_only=reference_only)
    result = ContentShotDetector().detect(stream_frames(info, opts, decoder), info.duration)
    return [s.start for s in result.shots[1:]], time.perf_counter() - start


def decode_only(path: Path, reference_only: bool) -> tuple[list[float], float]:
    """The floor: PyAV decoding with the same settings, nothing else."""
    import av

    start = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.options = {"skip_loop_filter": "all"}
        if reference_only:
            stream.codec_context.skip_frame = "NONREF"
        for _ in container.decode(stream):
            pass
    return [], time.perf_counter() - start


def best_of(fn, repeat: int):  # type: ignore[no-untyped-def]
    runs = [fn() for _ in range(repeat)]
    return min(runs, key=lambda r: r[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    cutset = compose_cut_set(WORK)
    tol = 1.5 / cutset.fps  # one sampled frame, plus rounding of frame times
    bbb = SHARED / "media" / "bbb_10min.mp4"
    bbb_frames = round(probe(bbb).duration * (probe(bbb).fps or 24))
    detectors = {
        "vidmem (pyav, reference frames: default)": lambda p: vidmem_boundaries(p, "pyav"),
        "vidmem (pyav, every frame)": lambda p: vidmem_boundaries(p, "pyav", reference_only=False),
        "vidmem (decord, every frame)": lambda p: vidmem_boundaries(p, "decord"),
        "PySceneDetect ContentDetector": lambda p: pyscenedetect_boundaries(p),
    }
    floors = {}
    for name, ref in (("reference frames", True), ("every frame", False)):
        _, floor_cut = best_of(lambda ref=ref: decode_only(cutset.path, ref), args.repeat)
        _, floor_bbb = best_of(lambda ref=ref: decode_only(bbb, ref), args.repeat)
        floors[name] = {
            "cutset_fps": round(cutset.n_frames / floor_cut, 1),
            "bbb_fps": round(bbb_frames / floor_bbb, 1),
        }
    rows = []
    for name, fn in detectors.items():
        pred, secs = best_of(lambda fn=fn: fn(cutset.path), args.repeat)
        sc = score(pred, cutset.transitions, tol)
        _, bbb_secs = best_of(lambda fn=fn: fn(bbb), args.repeat)
        rows.append(
            {
                "detector": name,
                "precision": round(sc.precision, 3),
                "recall": round(sc.recall, 3),
                "f1": round(sc.f1, 3),
                "recall_by_kind": {k: round(v, 3) for k, v in sc.recall_by_kind.items()},
                "tp": sc.tp,
                "fp": sc.fp,
                "fn": sc.fn,
                "cutset_fps": round(cutset.n_frames / secs, 1),
                "bbb_fps": round(bbb_frames / bbb_secs, 1),
            }
        )
    peer = rows[-1]
    for r in rows:
        r["speed_vs_pyscenedetect_bbb"] = round(r["bbb_fps"] / peer["bbb_fps"], 2)
        r["speed_vs_pyscenedetect_cutset"] = round(r["cutset_fps"] / peer["cutset_fps"], 2)
    kinds = sorted({t.kind for t in cutset.transitions})
    counts = {k: len(cutset.of_kind(k)) for k in kinds}
    for floor in floors.values():
        floor["speed_vs_pyscenedetect_bbb"] = round(floor["bbb_fps"] / peer["bbb_fps"], 2)
    data = {
        "decode_only": floors,
        "machine": machine(),
        "tolerance_s": tol,
        "cutset": {"duration_s": cutset.duration, "frames": cutset.n_frames, "transitions": counts},
        "rows": rows,
    }
    lines = [
        "# Shot detection: vidmem vs PySceneDetect",
        "",
        f"Machine: {data['machine']}. Command: `.venv/bin/python -m tests.bench.bench_shots --repeat {args.repeat}`.",
        f"Cut set: {cutset.duration:.0f} s composed from real clips (bbb, bikes, megamind, vtest) with "
        + ", ".join(f"{n} {k}s" for k, n in counts.items())
        + f" at known frames (tests/bench/cutset.py). A boundary matches a transition within ±{tol:.3f} s",
        "of its span (one frame at 24 fps, plus rounding). Speed: source frames per second, decoding included,",
        "fastest of the repeats; bbb_10min.mp4 is 1280×720 h264.",
        "",
        "| detector | precision | recall | F1 | recall cut / dissolve / fade | cut set fps | bbb_10min fps | speed vs PySceneDetect (bbb) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rk = r["recall_by_kind"]
        lines.append(
            f"| {r['detector']} | {r['precision']} | {r['recall']} | {r['f1']} | "
            f"{rk.get('cut', 0)} / {rk.get('dissolve', 0)} / {rk.get('fade', 0)} | {r['cutset_fps']} | "
            f"{r['bbb_fps']} | {r['speed_vs_pyscenedetect_bbb']}× |"
        )
    for name, floor in floors.items():
        lines.append(
            f"| decode only (PyAV, {name}, no detection) | – | – | – | – | {floor['cutset_fps']} | "
            f"{floor['bbb_fps']} | {floor['speed_vs_pyscenedetect_bbb']}× |"
        )
    lines += ["", "![speed and F1](shots.png)", ""]
    write_results("shots", data, "\n".join(lines))
    plot(rows, RESULTS / "shots.png")
    print("\n".join(lines))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    names = [r["detector"].replace(" ContentDetector", "").replace(", ", "\n", 1) for r in rows]
    a.barh(names, [r["bbb_fps"] for r in rows], color=["#1f5fbf", "#3b7dd8", "#7aa6e6", "#999999"])
    a.set_xlabel("frames/s on bbb_10min (720p), decoding included")
    x = range(len(rows))
    for i, key in enumerate(("precision", "recall", "f1")):
        b.bar([j + (i - 1) * 0.27 for j in x], [r[key] for r in rows], width=0.27, label=key)
    b.set_xticks(list(x), names, fontsize=8)
    b.set_ylim(0, 1.05)
    b.legend(fontsize=8)
    b.set_title("cut set (hard cuts, dissolves, fades)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
