"""Shot detection over streamed frames: hard cuts and gradual transitions (dissolves, fades).

Signatures are computed per window and only scalars are kept (two floats per analysed frame), so
memory stays flat over hours of video; boundaries are picked once the stream ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from indexers.decode import FrameBatch, MediaError

if TYPE_CHECKING:
    from kernels.shots import BoundaryOptions


def _default_boundaries() -> BoundaryOptions:
    from kernels.shots import BoundaryOptions

    return BoundaryOptions()


@dataclass
class Shot:
    start: float  # seconds
    end: float  # seconds
    transition: str  # how it began: 'start' | 'cut' | 'gradual'
    signature: np.ndarray | None = None
    """Mean colour signature of the shot (HSV histogram 256 + luma grid 144, float32)."""


@dataclass
class ShotOptions:
    boundaries: BoundaryOptions = field(default_factory=_default_boundaries)
    """Thresholds of the boundary picker (kernels.shots.BoundaryOptions)."""
    lag: float = 0.5
    """Seconds between the two frames compared for gradual transitions (0 disables them)."""
    damaged_area: float = 0.1
    """A frame is damaged when at least this share of its blocks is transient (kernels.shots)."""
    max_damaged: float = 0.005
    """Fail when more than this share of analysed frames (and at least 3) is damaged."""
    allow_damaged: bool = False
    """Ingest damaged video anyway."""
    rate: float | None = None
    """Frames analysed per second, which sizes the boundary picker's windows and the lag: the mean
    rate of the stream's first batch of frames (None: measured on it as it is read). A window of a
    long video read on its own is given its video's (`indexers.visual.run_along`), so that it picks
    the boundaries a pass over the whole video picks."""


@dataclass
class ShotResult:
    shots: list[Shot]
    frames: int  # analysed frames
    damaged_frames: int
    last_frame: float  # time of the last decoded frame (seconds): short of the duration means truncated


class ShotDetector:
    """Base of shot detectors: one required method, `detect`."""

    name = "base"

    def detect(
        self, batches: Iterable[FrameBatch], duration: float, progress: Callable[[float], None] | None = None
    ) -> ShotResult:
        raise NotImplementedError


class ContentShotDetector(ShotDetector):
    """HSV-histogram + luma-thumbnail change with adaptive thresholds (kernels.shots)."""

    name = "content"

    def __init__(self, options: ShotOptions | None = None) -> None:
        self.opts = options or ShotOptions()

    def detect(
        self,
        batches: Iterable[FrameBatch],
        duration: float,
        progress: Callable[[float], None] | None = None,
        settled: Callable[[list[float], float], None] | None = None,
    ) -> ShotResult:
        """The shots of the stream. `settled(boundaries, until)`, when given, is called as the stream
        is read with the boundary times no later frame can move any more (`SETTLE` seconds behind
        the last frame), and the time up to which that holds: what comes after a settled boundary
        can be looked at before the stream ends (indexers.visual)."""
        import torch

        from kernels.shots import (
            Signatures,
            block_means,
            change,
            pick_boundaries,
            signatures,
            transient_blocks,
        )

        opts = self.opts
        times: list[np.ndarray] = []
        cut_change: list = []
        lag_change: list = []
        damaged = 0
        first_damage: float | None = None
        buf = Signatures.empty()  # the last 2*lag signatures, then the current window
        buf_start = 0  # global index of buf[0]
        next_center = 0  # first frame whose lagged change is not computed yet
        lag = 0
        rate: float | None = None  # frames analysed per second (`ShotOptions.rate`)
        total = 0
        seconds: dict[int, tuple[np.ndarray, int]] = {}  # per second: sum of signatures, frames
        prev_blocks = torch.zeros(0, 3, 9, 16)  # block means of the last two frames
        prev_times = np.zeros(0)
        settle = _Settler(opts.boundaries)
        with torch.inference_mode():
            for batch in batches:
                if total == 0 and len(batch.times) > 1:
                    rate = opts.rate or rate_of(batch.times)
                    lag = round(opts.lag * rate)
                frames = torch.from_numpy(batch.rgb)
                sig = signatures(frames)
                _add_seconds(seconds, batch.times, torch.cat([sig.hist, sig.luma], 1).numpy())
                blocks = torch.cat([prev_blocks, block_means(frames)])
                bad = (transient_blocks(blocks) >= opts.damaged_area).numpy()
                if bad.any() and first_damage is None:
                    first_damage = float(np.concatenate([prev_times, batch.times])[1 + int(np.argmax(bad))])
                damaged += int(bad.sum())
                prev_blocks, prev_times = blocks[-2:], np.concatenate([prev_times, batch.times])[-2:]
                prev = buf.tail(1) if len(buf) else sig.tail(min(1, len(sig)))
                joined = prev.cat(sig)  # frame i-1 for every frame i of this window
                step = change(Signatures(joined.hist[:-1], joined.luma[:-1]), sig)
                if total == 0:
                    step[0] = 0.0
                cut_change.append(step)
                times.append(batch.times)
                total += len(sig)
                buf = buf.cat(sig)
                if lag:
                    last_center = total - 1 - lag  # centres whose i+lag frame has arrived
                    if last_center >= next_center:
                        centres = torch.arange(next_center, last_center + 1)
                        lo, hi = centres - lag, centres + lag
                        valid = lo >= 0
                        out = torch.zeros(len(centres))
                        if bool(valid.any()):
                            a = Signatures(buf.hist[lo[valid] - buf_start], buf.luma[lo[valid] - buf_start])
                            b = Signatures(buf.hist[hi[valid] - buf_start], buf.luma[hi[valid] - buf_start])
                            out[valid] = change(a, b)
                        lag_change.append(out)
                        next_center = last_center + 1
                    keep = min(len(buf), 2 * lag + 1)
                    buf_start += len(buf) - keep
                    buf = buf.tail(keep)
                else:
                    buf_start += len(buf) - 1
                    buf = buf.tail(1)
                if settled is not None and total > 1:
                    upto = settle.update(times, cut_change, lag_change, lag, rate)
                    if upto is not None:
                        settled(*upto)
                if progress and len(batch.times):
                    progress(min(1.0, float(batch.times[-1]) / max(duration, 1e-6)))
        if total == 0:
            raise MediaError("no video frame could be decoded")
        if damaged >= 3 and damaged > opts.max_damaged * total and not opts.allow_damaged:
            from kernels.timecode import hms

            raise MediaError(
                f"damaged video: {damaged} of {total} frames show corrupt blocks, the first at "
                f"{hms(first_damage or 0.0, millis=True)}; re-encode a clean copy, or pass --allow-damaged to ingest it anyway"
            )
        t = np.concatenate(times)
        cuts = torch.cat(cut_change)
        lags = torch.cat(lag_change) if lag_change else torch.zeros(0)
        lags = torch.cat([lags, torch.zeros(total - len(lags))])
        picked = pick_boundaries(cuts, lags, lag, rate or opts.rate or 1.0, opts.boundaries)
        starts = [0.0] + [float(t[i]) for i, _, _ in picked]
        kinds = ["start"] + [k for _, _, k in picked]
        ends = starts[1:] + [max(duration, float(t[-1]))]
        shots = [
            Shot(s, e, k, _mean_of(seconds, s, e))
            for s, e, k in zip(starts, ends, kinds, strict=True)
            if e > s
        ]
        return ShotResult(shots, total, damaged, float(t[-1]))


SETTLE = 10.0
"""Seconds behind the last frame read after which a boundary is taken as settled: the boundary picker
looks at most a few seconds around a frame (local medians over 2 x `BoundaryOptions.window`, peaks
over the lag, merges within the minimum shot)."""


class _Settler:
    """Boundaries picked while the stream is read, over the recent change series only: those at
    least SETTLE seconds behind the last frame are reported once. The final picks are made over the
    whole series when the stream ends; the rare one that differs is looked at again there."""

    def __init__(self, opts: BoundaryOptions) -> None:
        self.opts = opts
        self.until = -1  # frames up to this index are settled

    def update(
        self, times: list, cuts: list, lags: list, lag: int, rate: float | None
    ) -> tuple[list[float], float] | None:
        """New settled boundary times and the time they hold up to, or None when nothing moved.
        `times`, `cuts`, `lags`: the detector's per-batch chunks of the series so far; `rate`: the
        detector's frames per second (None: the mean of the series so far)."""
        import torch

        from kernels.shots import pick_boundaries

        n = sum(len(c) for c in times)
        first, last = float(times[0][0]), float(times[-1][-1])
        fps = rate or (n - 1) / max(1e-3, last - first)  # else as `rate_of` the series so far
        context = max(1, round(SETTLE * fps))
        until = n - 1 - context
        if until <= self.until:
            return None
        lo = max(0, self.until - context)
        t = _tail(times, n - lo)
        cut = torch.from_numpy(_tail([c.numpy() for c in cuts], n - lo))
        lagged_n = sum(len(c) for c in lags) - lo
        lagged = (
            torch.from_numpy(_tail([c.numpy() for c in lags], lagged_n)) if lagged_n > 0 else torch.zeros(0)
        )
        lagged = torch.cat([lagged, torch.zeros(len(cut) - len(lagged))])
        picked = [lo + i for i, _, _ in pick_boundaries(cut, lagged, lag, fps, self.opts)]
        new = [float(t[i - lo]) for i in picked if self.until < i <= until]
        self.until = until
        return new, float(t[until - lo])


def _tail(chunks: list, n: int) -> np.ndarray:
    """The last n values of a list of 1-D chunks, concatenated (only the chunks needed)."""
    parts, have = [], 0
    for c in reversed(chunks):
        if have >= n:
            break
        parts.append(c)
        have += len(c)
    joined = np.concatenate(parts[::-1]) if parts else np.zeros(0)
    return joined[len(joined) - n :]


def _add_seconds(acc: dict[int, tuple[np.ndarray, int]], times: np.ndarray, feats: np.ndarray) -> None:
    """Sum the frames' signatures per second of video: 1.6 KB a second, whatever the frame rate."""
    if len(times) == 0:
        return
    secs = np.floor(times).astype(np.int64)  # sorted: frames come in display order
    starts = np.flatnonzero(np.r_[True, secs[1:] != secs[:-1]])
    sums = np.add.reduceat(feats.astype(np.float64), starts, axis=0)
    counts = np.diff(np.r_[starts, len(secs)])
    for sec, total, n in zip(secs[starts].tolist(), sums, counts.tolist(), strict=True):
        old, m = acc.get(sec, (0.0, 0))
        acc[sec] = (old + total, m + n)


def _mean_of(acc: dict[int, tuple[np.ndarray, int]], start: float, end: float) -> np.ndarray | None:
    """Mean signature of the seconds a shot covers (its first and last partly)."""
    parts = [acc[k] for k in range(int(start), int(np.ceil(end))) if k in acc]
    if not parts:
        return None
    total = np.sum([p[0] for p in parts], axis=0)
    return (total / sum(p[1] for p in parts)).astype(np.float32)


def rate_of(times: np.ndarray) -> float:
    """Analysed frames per second, as a mean: skipped non-reference frames make the spacing uneven."""
    return (len(times) - 1) / max(1e-3, float(times[-1] - times[0]))
