"""Shot-change primitives on batches of small RGB frames (torch, batched).

A frame's *signature* is a joint HSV histogram plus a tiny luma thumbnail. The change between two
frames is the mean of the histograms' total-variation distance and a scaled mean absolute luma
difference, both in [0, 1]. Boundaries are picked from the change series by an adaptive threshold
(a peak must stand `ratio` times above the local median) for hard cuts, and by the change between
frames a lag apart for gradual transitions (dissolves, fades), whose boundary is put mid-transition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

HSV_BINS = (16, 4, 4)
"""Hue, saturation and value bins of the joint histogram (256 bins in all)."""
LUMA_GRID = (9, 16)
"""Rows and columns of the luma thumbnail compared pixel by pixel."""


@dataclass
class Signatures:
    hist: torch.Tensor  # (T, 256) float32, rows sum to 1
    luma: torch.Tensor  # (T, 9*16) float32 in [0, 1]

    def __len__(self) -> int:
        return int(self.hist.shape[0])

    def cat(self, other: Signatures) -> Signatures:
        return Signatures(torch.cat([self.hist, other.hist]), torch.cat([self.luma, other.luma]))

    def tail(self, n: int) -> Signatures:
        return Signatures(self.hist[len(self) - n :], self.luma[len(self) - n :]) if n else self.empty()

    @staticmethod
    def empty() -> Signatures:
        return Signatures(torch.zeros(0, 256), torch.zeros(0, LUMA_GRID[0] * LUMA_GRID[1]))


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) float RGB in [0, 1] -> (..., 3) HSV with hue in [0, 1)."""
    r, g, b = rgb.unbind(-1)
    maxc, _ = rgb.max(-1)
    minc, _ = rgb.min(-1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    sat = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    return torch.stack([hue, sat, maxc], -1)


def hsv_bins(rgb: torch.Tensor) -> torch.Tensor:
    """Joint HSV bin index (0..255) of each pixel of (..., 3) float RGB in [0, 1] (plain reference)."""
    hsv = rgb_to_hsv(rgb)
    nh, ns, nv = HSV_BINS
    h = (hsv[..., 0] * nh).long().clamp_(0, nh - 1)
    s = (hsv[..., 1] * ns).long().clamp_(0, ns - 1)
    v = (hsv[..., 2] * nv).long().clamp_(0, nv - 1)
    return (h * ns + s) * nv + v


_LUT: torch.Tensor | None = None


def _bin_lut() -> torch.Tensor:
    """hsv_bins of every RGB colour quantised to 7 bits a channel (2M uint8 entries), built once:
    a gather replaces the per-pixel HSV arithmetic."""
    global _LUT
    if _LUT is None:
        levels = (torch.arange(128, dtype=torch.float32) * 2 + 0.5) / 255.0  # centre of each 7-bit step
        r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
        _LUT = hsv_bins(torch.stack([r, g, b], -1)).reshape(-1).to(torch.uint8)
    return _LUT


def signatures(frames: torch.Tensor) -> Signatures:
    """Signatures of a batch of RGB frames (T, H, W, 3) uint8."""
    t, h, w, _ = frames.shape
    if t == 0:
        return Signatures.empty()
    q = (frames >> 1).long()  # (T, H, W, 3) in 0..127
    bins = _bin_lut()[(q[..., 0] << 14) | (q[..., 1] << 7) | q[..., 2]].long()  # (T, H, W)
    nbins = HSV_BINS[0] * HSV_BINS[1] * HSV_BINS[2]
    offsets = torch.arange(t).view(t, 1, 1) * nbins
    hist = torch.bincount((bins + offsets).reshape(-1), minlength=t * nbins).view(t, nbins).float()
    hist /= float(h * w)
    luma = (frames.float() * torch.tensor([0.299 / 255, 0.587 / 255, 0.114 / 255])).sum(-1)  # (T, H, W)
    thumb = F.adaptive_avg_pool2d(luma.unsqueeze(1), LUMA_GRID).reshape(t, -1)
    return Signatures(hist, thumb)


def change(a: Signatures, b: Signatures) -> torch.Tensor:
    """Row-wise change between two aligned signature batches -> (T,) in [0, 1]."""
    hist_tv = 0.5 * (a.hist - b.hist).abs().sum(-1)
    luma_mad = (a.luma - b.luma).abs().mean(-1)
    return 0.5 * hist_tv + 0.5 * (2.0 * luma_mad).clamp(max=1.0)


def block_means(frames: torch.Tensor, block: int = 4) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (T, 3, H/block, W/block) float block averages."""
    return F.avg_pool2d(frames.permute(0, 3, 1, 2).float(), block)


def transient_blocks(blocks: torch.Tensor, jump: float = 25.0, agree: float = 6.0) -> torch.Tensor:
    """Share of blocks in frames 1..T-2 that jump away from both neighbours while those agree -> (T-2,).

    Decoders conceal corrupt data by pasting misplaced or flat blocks that last a frame or so;
    real motion moves the neighbours apart and a cut changes the next frame too, so neither counts.
    A frame where most blocks are transient is a flash, not damage, and scores 0.
    """
    if len(blocks) < 3:
        return torch.zeros(0)
    a, b, c = blocks[:-2], blocks[1:-1], blocks[2:]
    away = torch.minimum((b - a).abs().mean(1), (b - c).abs().mean(1))
    share = ((away > jump) & ((a - c).abs().mean(1) < agree)).float().mean(dim=(1, 2))
    return torch.where(share > 0.5, torch.zeros_like(share), share)


@dataclass
class BoundaryOptions:
    """How boundaries are picked from change series. Times in seconds."""

    cut_threshold: float = 0.22
    """Smallest change between consecutive frames that can be a hard cut."""
    cut_ratio: float = 3.0
    """A hard cut must exceed this multiple of the local median change (adaptive threshold)."""
    gradual_threshold: float = 0.30
    """Smallest change across a lag that can be a gradual transition."""
    gradual_ratio: float = 2.5
    """A gradual transition must exceed this multiple of the local median lagged change."""
    window: float = 2.0
    """Half-width of the window whose median is the local baseline."""
    min_shot: float = 0.6
    """Shortest shot kept; of two closer boundaries the stronger wins."""

    def __post_init__(self) -> None:
        for name in ("cut_threshold", "gradual_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.cut_ratio < 1.0 or self.gradual_ratio < 1.0:
            raise ValueError("cut_ratio and gradual_ratio must be >= 1 (peaks above the local median)")
        if self.window <= 0 or self.min_shot < 0:
            raise ValueError(f"window must be > 0 and min_shot >= 0, got {self.window}, {self.min_shot}")


def local_median(x: torch.Tensor, half: int) -> torch.Tensor:
    """Median of x over [i - half, i + half] (edges replicate) -> same shape as x."""
    if len(x) == 0:
        return x
    padded = F.pad(x.view(1, 1, -1), (half, half), mode="replicate").view(-1)
    return padded.unfold(0, 2 * half + 1, 1).median(-1).values


def _peaks(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mask of positions that hold the maximum of x within +-radius."""
    pooled = F.max_pool1d(x.view(1, 1, -1), 2 * radius + 1, stride=1, padding=radius).view(-1)
    return x >= pooled


def pick_boundaries(
    cut_change: torch.Tensor, lag_change: torch.Tensor, lag: int, fps: float, opts: BoundaryOptions
) -> list[tuple[int, float, str]]:
    """Frame indices where a new shot starts, with strength and kind ('cut' or 'gradual').

    cut_change[i]: change between frames i-1 and i (cut_change[0] is ignored).
    lag_change[i]: change between frames i-lag and i+lag (0 where out of range).
    """
    n = len(cut_change)
    if n < 2:
        return []
    half = max(1, round(opts.window * fps))
    base = local_median(cut_change, half)
    is_cut = (
        (cut_change >= opts.cut_threshold) & (cut_change >= opts.cut_ratio * base) & _peaks(cut_change, 1)
    )
    is_cut[0] = False
    found: list[tuple[int, float, str]] = []
    for i in is_cut.nonzero().view(-1).tolist():
        # a fade through black/white spikes at its start and end with busy change between: one boundary
        if found and lag and i - found[-1][0] <= 2 * lag + 1:
            prev = found[-1][0]
            if float(cut_change[prev + 1 : i].mean()) >= opts.cut_threshold / 3:
                found[-1] = ((prev + i) // 2, max(found[-1][1], float(cut_change[i])), "gradual")
                continue
        found.append((int(i), float(cut_change[i]), "cut"))
    if lag > 0:
        lbase = local_median(lag_change, 2 * half)
        radius = max(1, lag)
        is_grad = (lag_change >= opts.gradual_threshold) & (lag_change >= opts.gradual_ratio * lbase)
        is_grad &= _peaks(lag_change, radius)
        cut_idx = torch.tensor([f[0] for f in found], dtype=torch.long)
        for i in is_grad.nonzero().view(-1).tolist():
            lo, hi = max(1, i - lag), min(n, i + lag + 1)
            if len(cut_idx) and bool(((cut_idx >= lo) & (cut_idx < hi)).any()):
                continue  # a hard cut explains this lagged change
            # spread out, not one jump: a gradual transition changes a little on many frames
            if float(cut_change[lo:hi].max()) > 0.6 * float(lag_change[i]):
                continue
            found.append((int(i), float(lag_change[i]), "gradual"))
    found.sort()
    min_gap = max(1, round(opts.min_shot * fps))
    kept: list[tuple[int, float, str]] = []
    for b in found:
        if b[0] < min_gap:
            continue
        if kept and b[2] == kept[-1][2] == "gradual" and b[0] - kept[-1][0] <= 2 * lag + 1:
            # a long fade out and in peaks twice, once per half: one transition, at its middle
            kept[-1] = ((kept[-1][0] + b[0]) // 2, max(kept[-1][1], b[1]), "gradual")
            continue
        if kept and b[0] - kept[-1][0] < min_gap:
            if b[1] > kept[-1][1]:
                kept[-1] = b
            continue
        kept.append(b)
    return kept
