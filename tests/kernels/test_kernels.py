"""Shot-change kernels (kernels/shots.py) against plain references, and timecodes (kernels/timecode.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from kernels.shots import (
    HSV_BINS,
    LUMA_GRID,
    BoundaryOptions,
    Signatures,
    block_means,
    change,
    local_median,
    pick_boundaries,
    rgb_to_hsv,
    signatures,
    transient_blocks,
)
from kernels.timecode import hms, parse_hms

H, W = 36, 64  # the thumbnail size the decoders hand to the kernels


# --------------------------------------------------------------------------- reference implementations


def reference_hist(frame: np.ndarray) -> np.ndarray:
    """Joint HSV histogram of one (H, W, 3) uint8 RGB frame, via OpenCV's float HSV conversion."""
    hsv = cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)  # H in [0, 360), S, V in [0, 1]
    nh, ns, nv = HSV_BINS
    h = np.clip(np.floor(hsv[..., 0] / 360.0 * nh), 0, nh - 1).astype(int)
    s = np.clip(np.floor(hsv[..., 1] * ns), 0, ns - 1).astype(int)
    v = np.clip(np.floor(hsv[..., 2] * nv), 0, nv - 1).astype(int)
    bins = (h * ns + s) * nv + v
    return np.bincount(bins.ravel(), minlength=nh * ns * nv) / bins.size


def reference_luma(frame: np.ndarray) -> np.ndarray:
    """Rec.601 luma in [0, 1], averaged over the LUMA_GRID cells (area resampling)."""
    rgb = frame.astype(np.float64) / 255.0
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    rows, cols = LUMA_GRID
    return cv2.resize(y, (cols, rows), interpolation=cv2.INTER_AREA).ravel()


def _test_frames() -> np.ndarray:
    """A mixed batch: noise, smooth gradients (many bin edges crossed), flat colours, greys."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(3)]
    yy, xx = np.mgrid[0:H, 0:W]
    grad = np.stack([xx * 255 // (W - 1), yy * 255 // (H - 1), 255 - xx * 255 // (W - 1)], -1)
    frames.append(grad.astype(np.uint8))
    hue = np.stack([xx * 4 % 256, np.full_like(xx, 200), (yy * 7) % 256], -1)
    frames.append(hue.astype(np.uint8))
    for colour in [
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (255, 255, 0),
        (0, 0, 0),
        (255, 255, 255),
        (128, 128, 128),
    ]:
        frames.append(np.broadcast_to(np.array(colour, np.uint8), (H, W, 3)).copy())
    return np.stack(frames)


def _sig(frame: np.ndarray) -> Signatures:
    return signatures(torch.from_numpy(frame[None]))


# --------------------------------------------------------------------------- signatures


def test_lookup_table_bins_equal_the_plain_hsv_reference() -> None:
    """signatures() gathers bins from a table; for colours on the 7-bit grid it must equal hsv_bins."""
    from kernels.shots import hsv_bins

    gen = torch.Generator().manual_seed(0)
    colours = (torch.randint(0, 128, (4, 64, 64, 3), generator=gen) * 2).to(torch.uint8)  # (T, H, W, 3)
    expected = hsv_bins((colours.float() + 0.5) / 255.0)
    for t in range(len(colours)):
        ref = torch.bincount(expected[t].reshape(-1), minlength=256).float() / (64 * 64)
        assert torch.equal(signatures(colours[t : t + 1]).hist[0], ref)


def test_signatures_match_a_per_frame_opencv_reference() -> None:
    frames = _test_frames()
    sig = signatures(torch.from_numpy(frames))
    assert sig.hist.shape == (len(frames), 256)
    assert sig.luma.shape == (len(frames), LUMA_GRID[0] * LUMA_GRID[1])
    assert torch.allclose(sig.hist.sum(-1), torch.ones(len(frames)), atol=1e-5)
    for i, frame in enumerate(frames):
        ref = reference_hist(frame)
        # The kernel bins colours quantised to 7 bits a channel (a lookup table), and the two HSV
        # conversions may put a pixel on a bin edge on either side: a few percent may move.
        tv = 0.5 * np.abs(sig.hist[i].numpy() - ref).sum()
        assert tv < 0.03, f"frame {i}: histogram differs from the OpenCV reference by TV {tv:.4f}"
        np.testing.assert_allclose(sig.luma[i].numpy(), reference_luma(frame), atol=1e-5)


@pytest.mark.parametrize(
    ("colour", "hsv_bin"),
    [
        ((255, 0, 0), (0, 3, 3)),  # red: hue 0, full saturation and value
        ((0, 255, 0), (16 // 3, 3, 3)),  # green: hue 1/3
        ((0, 0, 255), (2 * 16 // 3, 3, 3)),  # blue: hue 2/3
        ((0, 0, 0), (0, 0, 0)),  # black: no hue, no saturation
        ((255, 255, 255), (0, 0, 3)),  # white
        ((100, 100, 100), (0, 0, 1)),  # grey at 100/255 = 0.39 -> value bin 1
    ],
)
def test_flat_frame_falls_in_one_known_bin(
    colour: tuple[int, int, int], hsv_bin: tuple[int, int, int]
) -> None:
    frame = np.broadcast_to(np.array(colour, np.uint8), (H, W, 3)).copy()
    hist = _sig(frame).hist[0]
    h, s, v = hsv_bin
    _, ns, nv = HSV_BINS
    expected = (h * ns + s) * nv + v
    assert int(hist.argmax()) == expected
    assert float(hist[expected]) == pytest.approx(1.0)
    luma = _sig(frame).luma[0]
    assert torch.allclose(
        luma, torch.full_like(luma, float(np.dot(colour, [0.299, 0.587, 0.114]) / 255)), atol=1e-5
    )


def test_rgb_to_hsv_matches_opencv() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.random((500, 3), dtype=np.float32)
    ours = rgb_to_hsv(torch.from_numpy(rgb)).numpy()
    ref = cv2.cvtColor(rgb.reshape(1, -1, 3), cv2.COLOR_RGB2HSV).reshape(-1, 3)
    np.testing.assert_allclose(ours[:, 1:], ref[:, 1:], atol=1e-4)
    # hue is circular: compare on the circle
    dh = np.abs(ours[:, 0] - ref[:, 0] / 360.0)
    assert np.minimum(dh, 1 - dh).max() < 1e-4


def test_signatures_of_an_empty_batch() -> None:
    sig = signatures(torch.zeros(0, H, W, 3, dtype=torch.uint8))
    assert len(sig) == 0
    assert sig.hist.shape == (0, 256)


# --------------------------------------------------------------------------- change


def test_change_is_zero_for_identical_frames() -> None:
    frames = torch.from_numpy(_test_frames())
    a = signatures(frames)
    b = signatures(frames.clone())
    assert torch.equal(change(a, b), torch.zeros(len(frames)))


def test_change_is_large_for_very_different_frames() -> None:
    black = np.zeros((H, W, 3), np.uint8)
    white = np.full((H, W, 3), 255, np.uint8)
    # disjoint histograms and a full luma swing: both halves at their maximum
    assert float(change(_sig(black), _sig(white))[0]) == pytest.approx(1.0)
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    red = np.broadcast_to(np.array((220, 20, 20), np.uint8), (H, W, 3)).copy()
    assert float(change(_sig(noise), _sig(red))[0]) > 0.6
    # a slightly brighter copy of a frame is a small change, far below the default cut threshold
    brighter = np.clip(noise.astype(int) + 3, 0, 255).astype(np.uint8)
    assert float(change(_sig(noise), _sig(brighter))[0]) < BoundaryOptions().cut_threshold / 2


def test_change_is_symmetric_and_bounded() -> None:
    frames = torch.from_numpy(_test_frames())
    sig = signatures(frames)
    rolled = signatures(frames.roll(1, 0))
    forward, backward = change(sig, rolled), change(rolled, sig)
    assert torch.allclose(forward, backward)
    assert bool(((forward >= 0) & (forward <= 1)).all())


# --------------------------------------------------------------------------- transient blocks


def _textured() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx * 3 % 256, yy * 5 % 256, (xx + yy) * 2 % 256], -1).astype(np.uint8)


def test_block_means_are_block_averages() -> None:
    frame = _textured()
    blocks = block_means(torch.from_numpy(frame[None]))
    assert blocks.shape == (1, 3, H // 4, W // 4)
    expected = frame.astype(np.float64).reshape(H // 4, 4, W // 4, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(blocks[0].permute(1, 2, 0).numpy(), expected, atol=1e-4)


def test_transient_blocks_flags_a_pasted_foreign_block_only() -> None:
    base = _textured()
    damaged = base.copy()
    damaged[8:24, 16:40] = (250, 10, 200)  # a misplaced flat block, as a decoder conceals lost data
    pasted_share = (16 // 4) * (24 // 4) / ((H // 4) * (W // 4))
    seq = np.stack([base, base, damaged, base, base])
    share = transient_blocks(block_means(torch.from_numpy(seq)))
    assert share.shape == (3,)  # frames 1..T-2
    assert float(share[1]) == pytest.approx(pasted_share, abs=0.02)  # frame 2 is the damaged one
    assert float(share[0]) == 0.0 and float(share[2]) == 0.0


def test_transient_blocks_ignores_a_hard_cut() -> None:
    a = _textured()
    b = np.ascontiguousarray(255 - a[::-1])  # a different shot
    seq = np.stack([a, a, a, b, b, b])
    share = transient_blocks(block_means(torch.from_numpy(seq)))
    assert torch.equal(share, torch.zeros(4))


def test_transient_blocks_ignores_a_flash() -> None:
    a = _textured()
    flash = np.full_like(a, 255)  # every block jumps for one frame: a flash, not damage
    seq = np.stack([a, a, flash, a, a])
    blocks = block_means(torch.from_numpy(seq))
    # most blocks do jump away from agreeing neighbours ...
    away = torch.minimum((blocks[2] - blocks[1]).abs().mean(0), (blocks[2] - blocks[3]).abs().mean(0))
    assert float((away > 25).float().mean()) > 0.5
    # ... and yet the frame does not count as damaged
    assert torch.equal(transient_blocks(blocks), torch.zeros(3))


def test_transient_blocks_needs_three_frames() -> None:
    assert len(transient_blocks(block_means(torch.from_numpy(np.stack([_textured()] * 2))))) == 0


# --------------------------------------------------------------------------- boundaries


def _noise(n: int, level: float = 0.03, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return level * (0.5 + torch.rand(n, generator=g))


def test_local_median_matches_numpy() -> None:
    x = torch.rand(50, generator=torch.Generator().manual_seed(3))
    half = 4
    padded = np.pad(x.numpy(), half, mode="edge")
    ref = np.array([np.median(padded[i : i + 2 * half + 1]) for i in range(len(x))])
    np.testing.assert_allclose(local_median(x, half).numpy(), ref)


def test_pick_boundaries_finds_a_spike() -> None:
    fps, n = 25.0, 300
    cut = _noise(n)
    cut[137] = 0.5
    found = pick_boundaries(cut, torch.zeros(n), 0, fps, BoundaryOptions())
    assert [(i, k) for i, _, k in found] == [(137, "cut")]
    assert found[0][1] == pytest.approx(0.5)


def test_pick_boundaries_threshold_is_adaptive() -> None:
    fps, n = 25.0, 300
    busy = _noise(n, level=0.2)  # a busy shot: lots of motion, changes near the absolute threshold
    busy[150] = 0.45  # above cut_threshold but under cut_ratio x the local median
    assert pick_boundaries(busy, torch.zeros(n), 0, fps, BoundaryOptions()) == []
    busy[150] = 0.95  # well above the local median: a cut
    assert [i for i, _, _ in pick_boundaries(busy, torch.zeros(n), 0, fps, BoundaryOptions())] == [150]


def test_pick_boundaries_respects_min_shot() -> None:
    fps, n = 25.0, 400
    opts = BoundaryOptions(min_shot=0.6)
    min_gap = round(opts.min_shot * fps)
    cut = _noise(n)
    cut[5] = 0.9  # closer to the start than min_shot: no shot that short
    cut[100] = 0.5
    cut[100 + min_gap - 3] = 0.7  # too close to the previous one: the stronger wins
    cut[250] = 0.6
    cut[250 + min_gap] = 0.5  # exactly min_shot apart: both kept
    found = pick_boundaries(cut, torch.zeros(n), 0, fps, opts)
    assert [i for i, _, _ in found] == [100 + min_gap - 3, 250, 250 + min_gap]
    starts = [0] + [i for i, _, _ in found]
    assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= min_gap
    # with min_shot 0 every spike stands
    loose = pick_boundaries(cut, torch.zeros(n), 0, fps, BoundaryOptions(min_shot=0.0))
    assert [i for i, _, _ in loose] == [5, 100, 100 + min_gap - 3, 250, 250 + min_gap]


def test_pick_boundaries_finds_a_gradual_transition_mid_way() -> None:
    fps, n, lag = 25.0, 300, 12
    # a 1 s dissolve centred on frame 150: every frame changes a little, the lagged change a lot
    centre, half_len = 150, 12
    cut = _noise(n)
    cut[centre - half_len : centre + half_len] = 0.06
    lagged = _noise(n, level=0.05, seed=1)
    ramp = torch.clamp(1.0 - (torch.arange(n) - centre).abs().float() / (2 * half_len), min=0.0)
    lagged = torch.maximum(lagged, 0.7 * ramp)
    found = pick_boundaries(cut, lagged, lag, fps, BoundaryOptions())
    assert [(i, k) for i, _, k in found] == [(centre, "gradual")]
    # a hard cut inside the same window explains the lagged change: it is a cut, not also a dissolve
    cut[centre + 3] = 0.8
    found = pick_boundaries(cut, lagged, lag, fps, BoundaryOptions())
    assert [(i, k) for i, _, k in found] == [(centre + 3, "cut")]


def test_pick_boundaries_on_short_series() -> None:
    assert pick_boundaries(torch.zeros(1), torch.zeros(1), 0, 25.0, BoundaryOptions()) == []
    assert pick_boundaries(torch.zeros(0), torch.zeros(0), 0, 25.0, BoundaryOptions()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cut_threshold": 0.0}, "cut_threshold"),
        ({"cut_threshold": 1.5}, "cut_threshold"),
        ({"gradual_threshold": -0.1}, "gradual_threshold"),
        ({"gradual_threshold": 1.0}, "gradual_threshold"),
        ({"cut_ratio": 0.5}, "cut_ratio"),
        ({"gradual_ratio": 0.99}, "gradual_ratio"),
        ({"window": 0.0}, "window"),
        ({"min_shot": -0.1}, "min_shot"),
    ],
)
def test_boundary_options_reject_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BoundaryOptions(**kwargs)


def test_boundary_options_accept_edge_values() -> None:
    opts = BoundaryOptions(cut_ratio=1.0, gradual_ratio=1.0, min_shot=0.0, cut_threshold=0.01)
    assert opts.min_shot == 0.0


# --------------------------------------------------------------------------- timecodes


@pytest.mark.parametrize(
    "seconds",
    [0.0, 0.001, 1.5, 59.999, 61.25, 3599.999, 3600.0, 3725.5, 5 * 3600 + 7 * 60 + 9.042, 100 * 3600 + 0.5],
)
def test_hms_round_trips(seconds: float) -> None:
    text = hms(seconds, millis=True)
    assert parse_hms(text) == pytest.approx(seconds, abs=5e-4)
    # without millis the time is cut to the second it falls in (as a player's clock shows it)
    whole = hms(seconds)
    assert parse_hms(whole) == round(seconds * 1000) // 1000


def test_hms_formats() -> None:
    h, m, s, ms = 2, 3, 4, 56
    seconds = h * 3600 + m * 60 + s + ms / 1000
    assert hms(seconds) == f"{h:02d}:{m:02d}:{s:02d}"
    assert hms(seconds, millis=True) == f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"
    assert hms(-3.0) == "00:00:00"  # negative clamps
    assert hms(59.9996, millis=True) == "00:01:00.000"  # rounding carries into the minutes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("01:02:03,456", 3723.456),  # SRT
        ("01:02:03.456", 3723.456),  # WebVTT / ours
        ("02:30", 150.0),  # MM:SS
        ("42", 42.0),
        ("  00:00:01.5 ", 1.5),
        ("12:00:00,000", 12 * 3600.0),
    ],
)
def test_parse_hms_formats(text: str, seconds: float) -> None:
    assert parse_hms(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1:2:3:4", "01::03", "abc", "-5", "01:02:xx"])
def test_parse_hms_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hms(text)
