"""The visual pass in a worker process: find the shots and look inside each one (on-screen text,
labels, faces and people, token-reduced visual vectors), from one decoding pass, while the parent
transcribes the audio. A shot is looked at as soon as the detector has settled its end, ~10 s behind
the stream (`run_along`); a resumed ingestion whose shots are known looks at them in a pass of its
own (`run_look`).

A process of its own, for three reasons:
- decoding and speech recognition use the cores together instead of one after the other;
- the worker's memory goes back whole when it exits, so decoder and feature leftovers never sit in
  the parent's heap under the next stage (docs/benchmarks/ingest.md, peak RSS over duration);
- a decoder that crashes on hostile input takes down the worker, not the ingestion or the service:
  the crash comes back as a `MediaError`.
The worker reads the file and computes; only the parent writes to the catalog.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexers.decode import (
    DecodeOptions,
    FrameBatch,
    MediaError,
    MediaInfo,
    look_size,
    sample_frames,
    stream_frames,
)
from indexers.shots import SETTLE, ContentShotDetector, Shot, ShotOptions, ShotResult, rate_of

_ROOT = str(Path(__file__).resolve().parents[1])  # where `indexers` is importable from


@dataclass
class LookOptions:
    """How the frames inside each shot are sampled, encoded and reduced."""

    fps: float = 1.0
    """Frames sampled per second of shot (evenly spaced; at least one per shot)."""
    max_frames: int = 16
    """At most this many frames per shot, however long it is."""
    max_side: int = 1280
    """Sampled frames are scaled to at most this many pixels on the longer side (OCR reads 720p)."""
    encoder: str = "efficientnet"
    """Image encoder of the visual vectors (memory.runtime.images): `efficientnet` or `clip:<folder>`."""
    keep: int = 4
    """At most this many visual vectors per shot after token merging."""
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    """Shots analysed at once, each on a thread running its models on one core (decoding goes on
    meanwhile). Speech recognition in the parent shares the same cores (docs/benchmarks/ingest.md)."""
    merge_penalty: float = 0.25
    """What one more vector must buy to be kept: the fall in squared distance (unit vectors) of the
    shot's frames to their run's mean, in seconds of shot. A static shot keeps one vector, a shot
    that changes keeps one per stretch that looks alike (docs/benchmarks/tokens.md)."""
    vision: Any = None
    """What is looked for inside each shot, and how hard: `indexers.vision.VisionOptions` (None: its
    defaults). Kept here so that it travels with the look to the visual worker and to Ray tasks."""

    @classmethod
    def at_rate(cls, fps: float, vision: Any = None, **given: Any) -> LookOptions:
        """Options that encode `fps` frames a second of shot (up to 4, the rate the one decoding pass
        keeps frames at), and as many more at most per shot as the default's `max_frames` at 1 a second."""
        if not 0 < fps <= _Along.rate:
            raise ValueError(f"fps must be in (0, {_Along.rate:g}], got {fps}")
        return cls(fps=fps, max_frames=max(1, round(cls.max_frames * fps)), vision=vision, **given)


@dataclass
class ShotLook:
    """What the vision stage found in one shot."""

    index: int  # the shot's ordinal
    texts: list[Any]  # indexers.vision.ScreenText, de-duplicated
    labels: list[tuple[str, float]]  # ImageNet class, score
    faces: int
    people: int
    face_score: float
    person_score: float
    vectors: np.ndarray  # (k, D) float32, L2-normalised, k <= keep
    spans: list[tuple[float, float]]  # the frames each vector stands for, first to last time
    frames: int  # frames sampled
    model: str = ""  # the image encoder that made the vectors


ShotFrames = list[tuple[float, np.ndarray]]
"""One shot's sampled frames, (time, RGB frame (H, W, 3) uint8)."""


class Windows(Protocol):
    """One long video's visual pass under way elsewhere, window by window."""

    def result(self, progress: Callable[[float], None]) -> tuple[ShotResult | None, list[ShotLook]]:
        """The shots and the looks inside them, as one pass over the whole video finds them
        (`join_windows`), reporting the share of windows done; when the shots were known (a resumed
        ingestion), no shots and the looks inside the known ones, as `run_look` finds them."""
        ...


class WindowsElsewhere(Protocol):
    """Runs the visual pass of a long video somewhere else, one task per window of it
    (`indexers.distributed.RemoteWindows`): each decodes its window, finds the shots that begin
    there and looks inside them (`run_along` with a window), or, when the shots are known already,
    seeks to its window and looks inside the known shots that begin there (`look_window`); only
    shots and looks come back."""

    def wanted(self, duration: float) -> bool:
        """Whether a video this long is split into windows (else one pass, here)."""
        ...

    def start(self, job: VisualJob) -> Windows:
        """The windows of `job`'s video sent out (`window_edges`)."""
        ...


@dataclass
class VisualJob:
    info: MediaInfo
    decode: DecodeOptions
    shots: ShotOptions
    decoder: str = "pyav"
    look: LookOptions | None = field(default_factory=LookOptions)
    """Look inside the shots too (the vision stage); None: shots only."""
    known_shots: list[tuple[float, float]] | None = None
    """Shots already found (a resumed ingestion): skip detection, look inside these."""


def run_visual(job: VisualJob, progress: Callable[[float], None] | None = None) -> ShotResult:
    """Shot detection, in this process."""
    frames = stream_frames(job.info, job.decode, job.decoder)
    return ContentShotDetector(job.shots).detect(frames, job.info.duration, progress)


def sample_times(shots: list[tuple[float, float]], opts: LookOptions) -> tuple[list[float], list[int]]:
    """Evenly spaced sample times inside each shot, and the shot each belongs to."""
    times: list[float] = []
    owner: list[int] = []
    for i, (start, end) in enumerate(shots):
        n = int(min(opts.max_frames, max(1, round((end - start) * opts.fps))))
        times += [start + (end - start) * (k + 0.5) / n for k in range(n)]
        owner += [i] * n
    return times, owner


Frame = Any
"""An RGB frame (H, W, 3) uint8, or a decoded `av.VideoFrame` converted to one when it is analysed."""


class _Looker:
    """Looks inside shots on a pool of `opts.workers` threads (the models release the GIL) while the
    caller goes on decoding; `submit` waits for the oldest shot when that many are under way, which
    bounds the frames held. Results are keyed by the shot's (start, end)."""

    def __init__(
        self, opts: LookOptions, vision: Any, size: tuple[int, int] | None, progress: Callable[[], None]
    ) -> None:
        self.opts, self.vision, self.size, self.progress = opts, vision, size, progress
        self.looks: dict[tuple[float, float], ShotLook] = {}
        self.running: deque[tuple[tuple[float, float], Future[ShotLook]]] = deque()
        import torch

        from indexers.vision import VisionOptions
        from memory.runtime.images import image_encoder

        self.vision = vision or opts.vision or VisionOptions()
        self.encoder = image_encoder(opts.encoder)
        self.threads_before = torch.get_num_threads()
        torch.set_num_threads(self.vision.threads)  # once for the pass: the analysing threads share it
        self.pool = ThreadPoolExecutor(opts.workers, thread_name_prefix="vidmem-look")

    def submit(self, start: float, end: float, got: list[tuple[float, Frame]]) -> None:
        self.running.append(((start, end), self.pool.submit(self._look, start, end, got)))
        while len(self.running) > self.opts.workers:
            self._collect()

    def _collect(self) -> None:
        key, future = self.running.popleft()
        self.looks[key] = future.result()
        self.progress()

    def finish(self) -> dict[tuple[float, float], ShotLook]:
        while self.running:
            self._collect()
        return self.looks

    def close(self) -> None:
        import torch

        for _, f in self.running:
            f.cancel()
        self.pool.shutdown(wait=True)
        torch.set_num_threads(self.threads_before)

    def _rgb(self, frame: Frame) -> np.ndarray:
        if isinstance(frame, np.ndarray):
            return frame
        if self.size is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", width=self.size[0], height=self.size[1])

    def _look(self, start: float, end: float, got: list[tuple[float, Frame]]) -> ShotLook:
        for k, (t, f) in enumerate(got):  # in place: each decoded frame goes as its RGB copy comes
            got[k] = (t, self._rgb(f))
        return look_inside(start, end, got, self.opts, self.vision, self.encoder)


def look_inside(
    start: float, end: float, got: ShotFrames, opts: LookOptions, vision: Any = None, encoder: Any = None
) -> ShotLook:
    """What one shot's sampled frames show: on-screen text, labels, faces and people, and its
    token-merged visual vectors. `vision`: `indexers.vision.VisionOptions` (the defaults when None);
    `encoder`: the image encoder `opts.encoder` names, when the caller holds it already."""
    import torch

    from indexers.vision import VisionOptions, analyse_shot
    from kernels.tokens import merge_temporal
    from memory.runtime.images import image_encoder

    vision = vision or opts.vision or VisionOptions()
    encoder = encoder or image_encoder(opts.encoder)
    if not got:  # no frame decoded inside it (damaged stretch): nothing seen
        return ShotLook(-1, [], [], 0, 0, 0.0, 0.0, np.zeros((0, 0), np.float32), [], 0, encoder.name)
    frames = [f for _, f in got]
    ts = [t for t, _ in got]
    seen = analyse_shot(frames, ts, vision, keyframe_index=len(frames) // 2)
    seen.texts = [_widen(t, ts, seen.features, vision.distinct_below) for t in seen.texts]
    own_vectors = opts.encoder != "efficientnet"  # EfficientNet features come with the labels
    feats = encoder.encode(frames) if own_vectors else seen.features
    seconds = torch.full((len(feats),), max(end - start, 1e-3) / len(feats))
    merged = merge_temporal(torch.from_numpy(feats), opts.keep, opts.merge_penalty, seconds)
    vecs = merged.tokens.numpy()
    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    own = merged.owner.numpy()
    spans = [
        (min(ts[j] for j in np.flatnonzero(own == k)), max(ts[j] for j in np.flatnonzero(own == k)))
        for k in range(len(vecs))
    ]
    return ShotLook(
        -1,
        seen.texts,
        seen.labels,
        seen.faces,
        seen.people,
        seen.face_score,
        seen.person_score,
        vecs.astype(np.float32),
        spans,
        len(frames),
        encoder.name,
    )


def _in_order(shots: list[tuple[float, float]], looks: dict[tuple[float, float], ShotLook]) -> list[ShotLook]:
    return [dataclasses.replace(looks[shot], index=i) for i, shot in enumerate(shots)]


def run_look(
    info: MediaInfo,
    shots: list[tuple[float, float]],
    opts: LookOptions,
    progress: Callable[[float], None] | None = None,
    vision: Any = None,
    seek_beyond: float = 0.0,
) -> list[ShotLook]:
    """Look inside every shot: one pass over the video, each shot analysed as soon as its frames are
    in. `opts.workers` shots are analysed at once, on threads (the models release the GIL), while
    this thread goes on decoding. `vision`: the `indexers.vision.VisionOptions` (the defaults when
    None). `seek_beyond`: see `sample_frames` (for a few shots spread over a long video, or shots
    that begin far into it)."""
    times, owner = sample_times(shots, opts)
    done = 0

    def advanced() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done / len(shots))

    looker = _Looker(opts, vision, look_size(info, opts.max_side), advanced)
    try:
        pending: list[tuple[float, Frame]] = []
        current = 0
        for at, t, frame in sample_frames(info, times, opts.max_side, seek_beyond=seek_beyond):
            shot = owner[at]
            while current < shot:
                looker.submit(*shots[current], pending)
                pending, current = [], current + 1
            pending.append((t, frame))
        while current < len(shots):
            looker.submit(*shots[current], pending)
            pending, current = [], current + 1
        looks = looker.finish()
    finally:
        looker.close()
    if progress:
        progress(1.0)
    return _in_order(shots, looks)


class _Along:
    """The look fed by the shot detector's own decoding pass, so the video is decoded once for both.

    The decoder hands over its frames (`tap`); a few a second are kept until the shot they fall in is
    settled (`ContentShotDetector.detect` reports boundaries ~10 s behind the stream), then that
    shot's sample frames are picked among them as `sample_times` places them and the shot goes to
    the pool. The frames kept are those of the detector's pass: reference frames, decoded without
    the loop filter, so the shots stay exactly those of a detection on its own (with the filter,
    gradual boundaries moved by a frame or two); on bbb_10min's title and credits OCR read as many
    words on such frames as on filtered ones (a one-off check, not a benchmark script).
    When the stream ends the final shots are known: a shot that differs from the settled ones is
    looked at from the frames still kept, or, rarely, by seeking to it (`run_look`)."""

    rate = 4.0
    """Frames kept per second of video: the first decoded frame at or after each quarter second."""
    cap = 64
    """Frames kept at most of a shot: one longer than `cap` quarter seconds (a slide of many
    minutes) keeps every second, fourth... quarter second from its start (`_thin`), so it holds a
    bounded number of frames."""

    def __init__(
        self, info: MediaInfo, opts: LookOptions, looker: _Looker, window: tuple[float, float] | None = None
    ) -> None:
        self.opts, self.looker = opts, looker
        self.size = look_size(info, opts.max_side)
        self.shrink = self.size is not None and (info.width, info.height) != self.size
        self.kept: list[tuple[float, Frame]] = []
        self.next = 0.0
        self.start, self.end = window or (0.0, math.inf)
        self.open = self.start  # where the first shot not yet submitted starts
        self.opened = self.start <= 0  # whether `open` is a boundary yet (a window's first one settled)
        self.done = False  # a boundary at or after the window's end settled: its last shot is submitted
        self.fed = False

    def tap(self, t: float, frame: Any) -> None:
        self.fed = True
        if t < self.next - 0.02 or t < self.open:
            return
        self.next = (math.floor((t + 0.02) * self.rate) + 1) / self.rate
        if self.shrink:  # keep the scaled frame, not a 4K one
            assert self.size is not None
            frame = frame.reformat(width=self.size[0], height=self.size[1])
        self.kept.append((t, frame))

    def settled(self, boundaries: list[float], until: float) -> None:
        for b in boundaries:
            if self.done:
                break
            if not self.opened:  # a window's shots begin at its first boundary at or after its start
                if b >= self.start:
                    self.open, self.opened, self.done = b, True, b >= self.end
                    self.kept = [(t, f) for t, f in self.kept if t >= b]
            elif b > self.open:
                self.submit(self.open, b)
                self.done = b >= self.end
        if not self.opened:  # up to `until`, the frames are of the shot the window before owns
            self.kept = [(t, f) for t, f in self.kept if t > until]
        else:  # no boundary is settled between `open` and `until`: the frames there are one shot's
            self._thin(self.open, until)

    def _thin(self, start: float, upto: float) -> None:
        """Of the frames of the shot from `start` up to `upto`, keep those on every 2^k-th quarter
        second from its start, for the least k that leaves at most `cap` of them. What is kept depends on
        the shot's start and length only, not on when the stream was read up to where: a window's
        pass keeps the frames a pass over the whole video keeps."""
        step = 1
        while (upto - start) * self.rate / step > self.cap:
            step *= 2
        if step > 1:
            first = math.floor((start + 0.02) * self.rate)
            self.kept = [
                (t, f)
                for t, f in self.kept
                if t >= upto or (math.floor((t + 0.02) * self.rate) - first) % step == 0
            ]

    def submit(self, start: float, end: float) -> None:
        self._thin(start, end)
        inside = [(t, f) for t, f in self.kept if start - 0.02 <= t < end]
        self.looker.submit(start, end, _pick(inside, sample_times([(start, end)], self.opts)[0]))
        self.kept = [(t, f) for t, f in self.kept if t >= end]
        self.open = end


def _pick(frames: list[tuple[float, Frame]], times: list[float]) -> list[tuple[float, Frame]]:
    """For each time, the first frame at or after it within half a second (as `sample_frames`
    takes them), else the nearest one: each frame once, in time order."""
    if not frames:
        return []
    stamps = np.array([t for t, _ in frames])
    chosen: list[int] = []
    for t in times:
        i = int(np.searchsorted(stamps, t - 0.02))
        if i == len(stamps) or stamps[i] > t + 0.5:
            i = int(np.argmin(np.abs(stamps - t)))
        chosen.append(i)
    return [frames[i] for i in sorted(set(chosen))]


CONTEXT = 2 * SETTLE
"""Seconds decoded before a window's start: the boundary picker's view of the frames there is then
that of a pass from the beginning (it looks a few seconds around a frame; `SETTLE`)."""


def run_along(
    job: VisualJob,
    progress: StageProgress,
    on_shots: Callable[[ShotResult], None] | None = None,
    window: tuple[float, float] | None = None,
) -> tuple[ShotResult, list[ShotLook]]:
    """Shots and the look inside them from one decoding pass (see `_Along`).

    `window` (start, end): one window of a long video (`indexers.distributed.RemoteWindows`). The
    pass decodes from `CONTEXT` seconds before `start` and stops once a boundary at or after `end`
    has settled; it returns the shots that begin in the window, from its first boundary at or after
    `start` (0 for the first window), the last one ending at that boundary after `end` (or the
    video's end). Its windows' shots, joined, are those of one pass over the whole video, but for
    the rare boundary that two windows place differently (the owner looks at that shot again)."""
    assert job.look is not None
    info, duration = job.info, job.info.duration
    along: _Along | None = None

    def advanced() -> None:
        if along is not None:
            progress("vision", min(0.99, along.open / max(duration, 1e-6)))

    looker = _Looker(job.look, None, look_size(info, job.look.max_side), advanced)
    try:
        along = _Along(info, job.look, looker, window)
        decode, detecting = job.decode, job.shots
        if window is not None and window[0] > 0:
            decode = dataclasses.replace(decode, start=max(0.0, window[0] - CONTEXT))
            detecting = dataclasses.replace(detecting, rate=detecting.rate or stream_rate(job))
        frames: Iterable[FrameBatch] = stream_frames(info, decode, job.decoder, tap=along.tap)
        if window is not None:
            frames = itertools.takewhile(lambda _: not along.done, frames)  # type: ignore[union-attr]
        found = ContentShotDetector(detecting).detect(
            frames, duration, lambda f: progress("shots", f), along.settled
        )
        if window is not None:
            found = dataclasses.replace(found, shots=_owned(found.shots, *window))
        if on_shots:
            on_shots(found)
        shots = [(sh.start, sh.end) for sh in found.shots]
        submitted = set(looker.looks) | {key for key, _ in looker.running}
        missing = []
        for start, end in shots:
            if (start, end) in submitted:
                continue
            if start >= along.open and along.fed:
                along.submit(start, end)
            else:
                missing.append((start, end))
        looks = looker.finish()
    finally:
        looker.close()
    if missing:  # settled boundaries the final picks moved, or a decoder that could not feed the tap
        looks.update(zip(missing, run_look(info, missing, job.look, seek_beyond=2 * SETTLE), strict=True))
    progress("vision", 1.0)
    return found, _in_order(shots, looks)


def stream_rate(job: VisualJob) -> float:
    """The frames per second the shot detector sizes its picker by on this video (`ShotOptions.rate`):
    the mean over the stream's first batch, decoded again here."""
    first = next(iter(stream_frames(job.info, job.decode, job.decoder)), None)
    return rate_of(first.times) if first is not None and len(first.times) > 1 else 1.0


def look_window(job: VisualJob, start: float, end: float) -> list[ShotLook]:
    """The looks inside the known shots (`job.known_shots`) that begin in the window [start, end),
    as `run_look` over all of them finds them, from a pass that seeks to the window's first shot
    (a resumed ingestion's vision stage, one task per window: `indexers.distributed.RemoteWindows`)."""
    assert job.look is not None and job.known_shots is not None
    shots = [(a, b) for a, b in job.known_shots if start <= a < end]
    return run_look(job.info, shots, job.look, seek_beyond=2 * SETTLE) if shots else []


def window_edges(duration: float, window: float) -> list[tuple[float, float]]:
    """(start, end) of each window of a video: `window` seconds each, the last one to the end
    (longer, rather than a sliver of a window after it)."""
    n = max(1, math.floor(duration / window))
    return [(k * window, (k + 1) * window if k < n - 1 else math.inf) for k in range(n)]


def join_windows(
    job: VisualJob, parts: list[tuple[ShotResult, list[ShotLook]]]
) -> tuple[ShotResult, list[ShotLook]]:
    """One pass's shots and looks from its windows' (`run_along` with a window, in order): a
    window's last shot ends where the next window's first begins (the video's end for the last).
    The two windows placed that boundary alike but for a rare local difference; a shot whose end
    moved so is looked at again here (seeking to it)."""
    assert job.look is not None
    shots: list[Shot] = []
    looks: dict[tuple[float, float], ShotLook] = {}
    for found, seen in parts:
        if shots and found.shots and shots[-1].end != found.shots[0].start:
            shots[-1] = dataclasses.replace(shots[-1], end=found.shots[0].start)
        shots += found.shots
        looks.update(((sh.start, sh.end), look) for sh, look in zip(found.shots, seen, strict=True))
    if not shots:
        raise MediaError("no video frame could be decoded")
    last = parts[-1][0]
    end = max(job.info.duration, last.last_frame)
    if shots[-1].end != end:
        shots[-1] = dataclasses.replace(shots[-1], end=end)
    spans = [(sh.start, sh.end) for sh in shots]
    moved = [span for span in spans if span not in looks]
    if moved:
        looks.update(zip(moved, run_look(job.info, moved, job.look, seek_beyond=2 * SETTLE), strict=True))
    found = ShotResult(
        shots,
        sum(p.frames for p, _ in parts),
        sum(p.damaged_frames for p, _ in parts),
        last.last_frame,
    )
    return found, _in_order(spans, looks)


def _owned(shots: list[Shot], start: float, end: float) -> list[Shot]:
    """The shots a window owns: from its first boundary at or after `start` (the first shot, for the
    first window) to the last that begins before `end`."""
    first = 0 if start <= 0 else next((i for i, sh in enumerate(shots) if sh.start >= start), len(shots))
    return [sh for sh in shots[first:] if sh.start < end]


def _widen(text: Any, times: list[float], features: np.ndarray, similar: float) -> Any:
    """A line read on some frames was on screen as long as the frames around them look the same
    (EfficientNet cosine >= `similar` with the frame it was read on): OCR runs on few frames, and a
    slide shown for a minute should not say it was seen for an instant."""
    import dataclasses

    first = min(range(len(times)), key=lambda i: abs(times[i] - text.start))
    last = min(range(len(times)), key=lambda i: abs(times[i] - text.end))
    lo, hi = first, last
    while lo > 0 and float(features[lo - 1] @ features[first]) >= similar:
        lo -= 1
    while hi < len(times) - 1 and float(features[hi + 1] @ features[last]) >= similar:
        hi += 1
    return dataclasses.replace(text, start=min(text.start, times[lo]), end=max(text.end, times[hi]))


@dataclass
class VisualResult:
    shots: ShotResult | None  # None when the shots were known already
    looks: list[ShotLook] | None  # None when the job did not look inside the shots


StageProgress = Callable[[str, float], None]
"""Called with (stage, fraction done): stage is `shots` or `vision`."""


def run_job(
    job: VisualJob,
    progress: StageProgress | None = None,
    on_shots: Callable[[ShotResult], None] | None = None,
    on_looks: Callable[[list[ShotLook]], None] | None = None,
) -> VisualResult:
    """The whole visual pass in this process: shots (unless known) and what is inside them, from
    one decoding pass when both are asked for."""
    report: StageProgress = progress or (lambda stage, fraction: None)
    result = None
    if job.known_shots is None and job.look is not None:  # one decoding pass for both
        result, seen = run_along(job, report, on_shots)
        if on_looks:
            on_looks(seen)
        return VisualResult(result, seen)
    if job.known_shots is None:
        result = run_visual(job, lambda f: report("shots", f))
        if on_shots:
            on_shots(result)
        shots = [(sh.start, sh.end) for sh in result.shots]
    else:
        shots = job.known_shots
    looks = None
    if job.look is not None:
        looks = run_look(job.info, shots, job.look, lambda f: report("vision", f))
        if on_looks:
            on_looks(looks)
    return VisualResult(result, looks)


class VisualWorker:
    """Runs `run_job` in a child process from construction on; `result()` waits for it.

    A reader thread passes progress to `progress(stage, fraction)`, the shots to `on_shots` and the
    looks to `on_looks` as each arrives (they may commit at once). `error` is set as soon as the worker
    or a callback fails, so the caller can stop its own work early. Use as a context manager: leaving
    the block stops a worker that is still running."""

    def __init__(
        self,
        job: VisualJob,
        progress: StageProgress | None = None,
        on_shots: Callable[[ShotResult], None] | None = None,
        on_looks: Callable[[list[ShotLook]], None] | None = None,
    ) -> None:
        self._progress, self._on_shots, self._on_looks = progress, on_shots, on_looks
        self._result = VisualResult(None, None)
        self._done = False
        self.error: BaseException | None = None
        # a fresh interpreter, not multiprocessing: the caller's __main__ is never re-imported
        read_fd, write_fd = os.pipe()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([_ROOT, os.environ.get("PYTHONPATH", "")])}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "indexers.visual", str(write_fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            pass_fds=(write_fd,),
            env=env,
        )
        os.close(write_fd)  # the child holds the only writer: its exit is our EOF
        self._conn = Connection(read_fd, writable=False)
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.write(pickle.dumps(job))
            self._proc.stdin.close()
        self._reader = threading.Thread(target=self._read, name="vidmem-visual-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                kind, value = self._conn.recv()
                if kind == "progress":
                    if self._progress:
                        self._progress(*value)
                elif kind == "shots":
                    if self._on_shots:
                        self._on_shots(value)
                    self._result.shots = value
                elif kind == "looks":
                    if self._on_looks:
                        self._on_looks(value)
                    self._result.looks = value
                elif kind == "done":
                    self._done = True
                    return
                else:
                    self.error = value
                    return
        except (EOFError, OSError):
            code = self._proc.wait()
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            self._stderr.seek(0)
            last = (self._stderr.read().decode(errors="replace").strip().splitlines() or [""])[-1]
            self.error = MediaError(
                f"the video decoder {how} before finishing{f' ({last})' if last else ''}; "
                "the file may be damaged"
            )
        except Exception as e:  # a callback failed: stop the worker, keep the reason
            self.error = e
            self._proc.kill()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def result(self) -> VisualResult:
        self._reader.join()
        self._proc.wait()
        if self.error is not None:
            raise self.error
        assert self._done
        return self._result

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._reader.join()  # the pipe is at EOF now; a commit under way finishes first
        self._conn.close()
        self._stderr.close()

    def __enter__(self) -> VisualWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _worker_main(fd: int) -> None:
    """The child: a pickled VisualJob on stdin; progress, the shots, the looks, then `done` (or the
    error) on `fd`."""
    _die_with_parent()
    from indexers.heap import steady_heap

    # mmap from 16 MB, not 1 MB as in the ingesting process: frames (1.4-2.7 MB at 720p) and feature
    # maps allocated and freed thousands of times would each be a fresh mmap, zero-filled page by
    # page; glibc's default (a threshold that grows to 32 MB) held more at the peak for the same CPU
    # time (one-off measurements on bbb_10min: docs/benchmarks/README.md, "The vision stage"). Two
    # heaps, not 8 per core: each analysing thread's heap kept its own freed frames, and the peak
    # followed the frame size (docs/benchmarks/stream.md)
    steady_heap(16 << 20, arenas=2)
    conn = Connection(fd, readable=False)
    sent = 0.0

    def progress(stage: str, fraction: float) -> None:
        nonlocal sent
        if time.monotonic() - sent >= 0.2:
            sent = time.monotonic()
            conn.send(("progress", (stage, fraction)))

    try:
        job = pickle.load(sys.stdin.buffer)
        run_job(
            job,
            progress,
            lambda r: conn.send(("shots", r)),
            lambda looks: conn.send(("looks", looks)),
        )
        conn.send(("done", None))
    except MediaError as e:
        conn.send(("error", e))
    except BaseException as e:  # anything else, as text: it may not pickle
        conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))
    finally:
        conn.close()


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when its parent dies (a killed ingestion leaves none)."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(pr_set_pdeathsig, signal.SIGKILL)


if __name__ == "__main__":
    # run the module's own copy, not __main__'s: what it pickles must name `indexers.visual` classes
    from indexers.visual import _worker_main as worker_main

    worker_main(int(sys.argv[1]))
