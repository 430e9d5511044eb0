"""Fit the memory gate's fold thresholds (memory/gate_model.json), in closed form, on media the
memory benchmark does not use.

A unit folds into a slot when their cosine reaches the threshold of its kind. A false fold is a
unit folded into a slot of something else: it loses its own vector (a hit on the slot still cites
it, but a query for it may not find it). The threshold is set so that at most 1% of units would
fold falsely: the 99th percentile, over units, of the cosine with the *nearest* unit of something
else (a unit meets the whole bank, so its nearest stranger is what matters, not a random one). What
it costs is reported beside it: the share of same-thing pairs that still fold.

- shots: the shots of megamind.avi, bikes.mp4, vtest.avi and bbb_trailer.mp4, each file in its
  original and in 6 re-encoded copies (tests/bench/copies.py: 640–1280 px, CRF 18–35, brightness
  ±0.05, 96% crop, 0–2 s trimmed). A copy's shot and an original shot are the same thing when their
  spans overlap by half of each (after the trim). The trailer is cut from the same film as
  bbb_10min.mp4, which the benchmark replays; `--no-trailer` fits without it and is reported too.
- transcript lines: the cues of the TutorialVQA library that `tests/bench/bench_tutorialvqa.py`
  builds (no answer is read: only the sentences). Two cues are the same thing when their text is the
  same after lower-casing and dropping punctuation.

With `--fps F` the shots' vectors are those of `VIDMEM_VISION_FPS=F` (F frames a second of shot
encoded): shots only, reported in memory_fit_fpsF.md, shipped as the threshold for that rate
(`fold_shot_at`, which `MemoryOptions.vision_fps` picks).

Run: .venv/bin/python -m tests.fit.fit_gate [--copies 6] [--no-trailer] [--dry-run] [--fps F]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from memory.gate import MODEL_FILE
from tests.bench.common import SHARED, machine
from tests.bench.copies import recipes, reencode, shot_vectors

TRAIN_MEDIA = ["megamind.avi", "bikes.mp4", "vtest.avi", "bbb_trailer.mp4"]
FALSE_FOLDS = 0.01
DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "memory_fit.md"


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / max(1e-9, max(a[1] - a[0], b[1] - b[0]))


def shot_pairs(
    files: list[str], copies: int, fps: float | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(nearest-stranger cosine per unit, same-thing cosines, counts)."""
    units: list[tuple[str, int]] = []  # (file, original shot index)
    vecs: list[np.ndarray] = []
    same: list[float] = []
    for name in files:
        src = SHARED / "media" / name
        orig = shot_vectors(src, fps)
        for i, v in enumerate(orig.vectors):
            units.append((name, i))
            vecs.append(v)
        for recipe in recipes(copies, seed=1):
            copy = shot_vectors(reencode(src, recipe), fps)
            for span, v in zip(copy.spans, copy.vectors, strict=True):
                shifted = span + recipe.trim
                match = [i for i, o in enumerate(orig.spans) if _overlap(shifted, o) >= 0.5]
                if not match:
                    continue  # a shot the copy split or joined: neither same nor stranger for sure
                units.append((name, match[0]))
                vecs.append(v)
                same.append(float(v @ orig.vectors[match[0]]))
    m = np.stack(vecs)
    sims = m @ m.T
    ids = np.array([hash(u) for u in units])
    stranger = np.where(ids[:, None] == ids[None, :], -np.inf, sims)
    counts = {"units": len(units), "things": len(set(units)), "same pairs": len(same)}
    return stranger.max(axis=1), np.array(same), counts


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", text.lower()).strip()


def text_pairs() -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    from sqlalchemy import select

    from memory import EmbeddingRow
    from tests.bench.tutorialvqa import open_library

    store, _ = open_library()
    with store.session() as s:
        rows = s.execute(
            select(EmbeddingRow.text, EmbeddingRow.vector).where(EmbeddingRow.kind == "cue")
        ).all()
    texts = [_norm(t) for t, _ in rows]
    m = np.stack([np.frombuffer(v, np.float32) for _, v in rows])
    groups = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    g = np.array([groups[t] for t in texts])
    nearest = np.full(len(texts), -np.inf)
    same: list[float] = []
    for a in range(0, len(texts), 2048):
        sims = m[a : a + 2048] @ m.T
        mine = g[a : a + 2048, None] == g[None, :]
        idx = np.arange(a, min(a + 2048, len(texts)))
        sims[np.arange(len(idx)), idx] = -np.inf
        same += [float(x) for x in sims[mine & np.isfinite(sims)][:10000]]
        nearest[a : a + 2048] = np.where(mine, -np.inf, sims).max(axis=1)
    return nearest, np.array(same), {"units": len(texts), "things": len(groups), "same pairs": len(same)}


def threshold(nearest_stranger: np.ndarray) -> float:
    return float(np.quantile(nearest_stranger, 1.0 - FALSE_FOLDS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=6)
    ap.add_argument("--no-trailer", action="store_true", help="ship the threshold fitted without the trailer")
    ap.add_argument("--dry-run", action="store_true", help="report, do not write gate_model.json")
    ap.add_argument(
        "--fps", type=float, default=None, help="shots' vectors of VIDMEM_VISION_FPS=F; shots only"
    )
    args = ap.parse_args()

    rows = []
    fitted = {}
    for label, files in (
        ("shots, with the trailer", TRAIN_MEDIA),
        ("shots, without the trailer", [f for f in TRAIN_MEDIA if f != "bbb_trailer.mp4"]),
    ):
        nearest, same, counts = shot_pairs(files, args.copies, args.fps)
        tau = threshold(nearest)
        fitted[label] = tau
        rows.append((label, tau, float((same >= tau).mean()) if len(same) else float("nan"), counts))
    fold_shot = fitted["shots, without the trailer" if args.no_trailer else "shots, with the trailer"]
    if args.fps is not None:
        report_rate(rows, args, fold_shot)
        if not args.dry_run:
            raw = json.loads(MODEL_FILE.read_text())
            raw.setdefault("fold_shot_at", {})[f"{args.fps:g}"] = round(fold_shot, 4)
            MODEL_FILE.write_text(json.dumps(raw, indent=1) + "\n")
        return
    nearest, same, counts = text_pairs()
    fold_text = threshold(nearest)
    rows.append(("transcript cues (TutorialVQA)", fold_text, float((same >= fold_text).mean()), counts))

    lines = [
        "# Memory gate: fold thresholds",
        "",
        f"Made by `.venv/bin/python -m tests.fit.fit_gate --copies {args.copies}"
        f"{' --no-trailer' if args.no_trailer else ''}` on {machine()}.",
        "A threshold lets at most 1% of units fold into a slot of something else (the 99th percentile of",
        "each unit's cosine with its nearest stranger); *same pairs folded* is the share of pairs of one",
        "thing (a shot and its re-encoded copy; two cues with the same words) at or above it.",
        "",
        "| units | threshold | same pairs folded | units | things | same pairs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, tau, kept, c in rows:
        lines.append(
            f"| {label} | {tau:.4f} | {100 * kept:.1f}% | {c['units']} | {c['things']} | {c['same pairs']} |"
        )
    lines += [
        "",
        f"Shipped in `memory/gate_model.json`: shots {fold_shot:.4f}, transcript lines {fold_text:.4f}.",
        "The trailer is cut from the same film as bbb_10min.mp4 (the memory benchmark's recording); the",
        "row without it shows what the threshold is without that overlap.",
    ]
    DOC.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not args.dry_run:
        raw = json.loads(MODEL_FILE.read_text())
        raw["fold_shot"], raw["fold_text"] = round(fold_shot, 4), round(fold_text, 4)
        MODEL_FILE.write_text(json.dumps(raw, indent=1) + "\n")


def report_rate(rows: list, args: argparse.Namespace, fold_shot: float) -> None:  # type: ignore[type-arg]
    """The shot thresholds on vectors of `--fps` frames a second, beside the shipped one."""
    shipped = json.loads(MODEL_FILE.read_text())["fold_shot"]
    lines = [
        f"# Memory gate: fold thresholds on vectors of {args.fps:g} frames a second",
        "",
        f"Made by `.venv/bin/python -m tests.fit.fit_gate --copies {args.copies}"
        f"{' --no-trailer' if args.no_trailer else ''} --fps {args.fps:g}` on {machine()}.",
        f"The shots' vectors are those of `VIDMEM_VISION_FPS={args.fps:g}`; otherwise as memory_fit.md.",
        "",
        "| units | threshold | same pairs folded | units | things | same pairs |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {label} | {tau:.4f} | {100 * kept:.1f}% | {c['units']} | {c['things']} | {c['same pairs']} |"
            for label, tau, kept, c in rows
        ],
        "",
        f"Shipped in `memory/gate_model.json` for vectors of {args.fps:g} frames a second (`fold_shot_at`, the row "
        f"{'without' if args.no_trailer else 'with'} the trailer, as for 1 a second): {fold_shot:.4f}; "
        f"at 1 frame a second: {shipped:.4f}.",
    ]
    (DOC.parent / f"memory_fit_fps{args.fps:g}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
