"""Differently encoded copies of a recording, and the shots the vision stage sees in each: the
streams the memory's fold threshold is fitted on (tests/fit/fit_gate.py, on other media) and the
memory benchmark replays (tests/bench/bench_memory.py, on bbb_10min.mp4).

A copy's recipe: width (640–1280 px), x264 CRF (18–35), a brightness shift (±0.05), a centred crop
keeping 96% of each side, and 0–2 s cut from the start. Copies are made once with ffmpeg and cached
under `$VIDMEM_BENCH_DIR` by recipe; so are the shots and visual vectors found in them (the vision
stage itself: `indexers.visual.run_job`, shots then EfficientNet vectors token-merged per shot).
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tests.bench.common import WORK


@dataclass(frozen=True)
class Recipe:
    width: int  # pixels, even
    crf: int
    brightness: float  # added to luma, in [-1, 1] units of ffmpeg's eq filter
    crop: float = 0.96  # share of each side kept, centred
    trim: float = 0.0  # seconds cut from the start

    @property
    def tag(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def recipes(n: int, seed: int = 0) -> list[Recipe]:
    """`n` recipes spread over the ranges (a fixed permutation per axis, so no two copies share
    one setting and the extremes are all used)."""
    rng = np.random.default_rng(seed)
    axes = [rng.permutation(n) / max(1, n - 1) for _ in range(4)]
    return [
        Recipe(
            width=int(round((640 + 640 * axes[0][i]) / 2) * 2),
            crf=int(round(18 + 17 * axes[1][i])),
            brightness=round(-0.05 + 0.1 * axes[2][i], 3),
            trim=round(2.0 * axes[3][i], 2),
        )
        for i in range(n)
    ]


def reencode(src: Path, recipe: Recipe) -> Path:
    """The copy of `src` made by `recipe` (made once, then cached)."""
    out = WORK / "copies" / f"{src.stem}-{recipe.tag}.mp4"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    c = recipe.crop
    vf = f"crop=trunc(iw*{c}/2)*2:trunc(ih*{c}/2)*2,scale={recipe.width}:-2,eq=brightness={recipe.brightness}"
    tmp = out.with_suffix(".tmp.mp4")
    cmd = ["ffmpeg", "-v", "error", "-y", "-ss", f"{recipe.trim}", "-i", str(src), "-vf", vf]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(recipe.crf), "-an", str(tmp)]
    subprocess.run(cmd, check=True)
    tmp.rename(out)
    return out


@dataclass
class ShotVectors:
    """The shots of one file and their visual vectors (the token-merged rows a search scores a shot
    by); `vectors` is what the memory compares for each (their unit-norm mean)."""

    spans: np.ndarray  # (S, 2) seconds
    tokens: list[np.ndarray]  # per shot (k, D) float32, unit norm, k <= LookOptions.keep

    @functools.cached_property
    def vectors(self) -> np.ndarray:
        """(S, D) float32, unit norm."""
        from memory.gate import unit_vector

        return np.stack([unit_vector(list(t)) for t in self.tokens])


def shot_vectors(path: Path, fps: float | None = None) -> ShotVectors:
    """Shots and per-shot vectors of `path`, as the ingestion's visual pass finds them (cached).
    `fps`: frames encoded per second of shot (`VIDMEM_VISION_FPS`; None: the default)."""
    from indexers.decode import DecodeOptions, probe
    from indexers.shots import ShotOptions
    from indexers.vision import VisionOptions
    from indexers.visual import LookOptions, VisualJob, run_job

    rate = "" if fps is None else f"-fps{fps:g}"
    cache = WORK / "shot-vectors" / f"{path.stem}-{path.stat().st_size}-tokens{rate}.npz"
    if cache.exists():
        got = np.load(cache)
        return ShotVectors(got["spans"], np.split(got["tokens"], np.cumsum(got["counts"])[:-1]))
    # the vectors come from the frames sampled, whatever else is looked for: no OCR, faces or people
    look = LookOptions() if fps is None else LookOptions.at_rate(fps, VisionOptions(ocr=False, people=False))
    result = run_job(VisualJob(probe(path), DecodeOptions(), ShotOptions(), look=look))
    assert result.shots is not None and result.looks is not None
    spans = np.array([(sh.start, sh.end) for sh in result.shots.shots], dtype=np.float64)
    tokens = [look.vectors.astype(np.float32) for look in result.looks]
    cache.parent.mkdir(parents=True, exist_ok=True)
    counts = np.array([len(t) for t in tokens])
    np.savez(cache, spans=spans, tokens=np.concatenate(tokens), counts=counts)
    return ShotVectors(spans, tokens)


def frame_vectors(path: Path, times: list[float]) -> np.ndarray:
    """EfficientNet vectors (N, D) of the frames of `path` at `times` (held-out queries)."""
    from indexers.decode import probe, sample_frames
    from memory.runtime.images import image_encoder

    frames = np.stack([frame for _, _, frame in sample_frames(probe(path), times, max_side=1280)])
    return image_encoder("efficientnet").encode(frames)


def frame_rows(path: Path, spans: np.ndarray, fps: float = 4.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every frame `fps` times a second inside each shot of `path` (4: the rate the look's decoding
    pass keeps frames at), encoded by EfficientNet and not merged: per shot its rows (k, D) and
    their frame times (k,), for a ceiling with nothing merged (cached)."""
    from indexers.decode import probe, sample_frames
    from memory.runtime.images import image_encoder

    key = hashlib.sha1(np.ascontiguousarray(spans).tobytes()).hexdigest()[:10]
    cache = WORK / "shot-vectors" / f"{path.stem}-{path.stat().st_size}-{key}-frames{fps:g}.npz"
    if cache.exists():
        got = np.load(cache)
    else:
        times, owner = [], []
        for k, (a, b) in enumerate(spans):
            n = max(1, round((b - a) * fps))
            times += [float(a + (i + 0.5) * (b - a) / n) for i in range(n)]
            owner += [k] * n
        encoder = image_encoder("efficientnet")
        rows: list[np.ndarray] = []
        kept: list[int] = []
        at: list[float] = []
        batch: list[tuple[int, float, np.ndarray]] = []

        def flush() -> None:
            if batch:
                rows.append(encoder.encode(np.stack([f for _, _, f in batch])))
                kept.extend(owner[i] for i, _, _ in batch)
                at.extend(t for _, t, _ in batch)
                batch.clear()

        for item in sample_frames(probe(path), times, max_side=1280):
            batch.append(item)
            if len(batch) == 32:
                flush()
        flush()
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, rows=np.concatenate(rows), owner=np.array(kept), times=np.array(at))
        got = np.load(cache)
    owner_of = got["owner"]
    return (
        [got["rows"][owner_of == k] for k in range(len(spans))],
        [got["times"][owner_of == k] for k in range(len(spans))],
    )


def frame_times(path: Path, times: list[float]) -> np.ndarray:
    """The time of the frame `frame_vectors` takes for each of `times`."""
    from indexers.decode import probe, sample_frames

    return np.array([t for _, t, _ in sample_frames(probe(path), times, max_side=64)])
