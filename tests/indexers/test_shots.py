"""Shot detection end to end: real decoders (PyAV, decord) feeding ContentShotDetector.

Ground truth comes from the synthetic clips' known cut frames / transition spans and from the cut
times documented for the real recordings in ../shared/media/README.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexers.decode import DECODERS, DecodeOptions, MediaError, MediaInfo, get_decoder, probe, stream_frames
from indexers.shots import ContentShotDetector, ShotOptions, ShotResult
from indexers.transcript import TranscribeOptions
from tests import media
from tests.conftest import shared

_CACHE: dict[tuple[str, str, int, bool], tuple[MediaInfo, ShotResult]] = {}


def detect(
    path: Path, decoder: str = "pyav", window: int = 256, reference_only: bool = True
) -> tuple[MediaInfo, ShotResult]:
    """Probe and detect shots once per (file, decoder, window, skipping) for the whole module."""
    key = (str(path), decoder, window, reference_only)
    if key not in _CACHE:
        info = probe(path)
        opts = DecodeOptions(window=window, reference_only=reference_only)
        result = ContentShotDetector(ShotOptions()).detect(
            get_decoder(decoder).frames(info, opts), info.duration
        )
        _CACHE[key] = (info, result)
    return _CACHE[key]


def boundaries(result: ShotResult) -> list[float]:
    return [s.start for s in result.shots[1:]]


def assert_tiles(result: ShotResult, duration: float) -> None:
    shots = result.shots
    assert shots, "no shot at all"
    assert shots[0].start == 0.0 and shots[0].transition == "start"
    for a, b in zip(shots, shots[1:], strict=False):
        assert a.end == b.start, f"gap or overlap between {a} and {b}"
    for s in shots:
        assert s.end > s.start, f"empty shot {s}"
        assert s.transition in ("start", "cut", "gradual")
    assert shots[-1].end == pytest.approx(duration, abs=1e-6)


def match_within(found: list[float], truth: list[float], tol: float) -> None:
    """One found boundary per true one, each within `tol` seconds, and nothing else."""
    assert len(found) == len(truth), f"found {found}, expected {truth}"
    for f, t in zip(found, truth, strict=True):
        assert abs(f - t) <= tol + 1e-9, f"boundary {f:.3f}s is more than {tol:.3f}s from the cut at {t:.3f}s"


# --------------------------------------------------------------------------- synthetic clips


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_cut_clip_every_cut_within_one_frame(cut_clip: media.CutClip, decoder: str) -> None:
    info, result = detect(cut_clip.path, decoder)
    if decoder == "pyav":  # non-reference frames are skipped, the others all analysed to the end
        assert 0.3 * cut_clip.total_frames < result.frames < cut_clip.total_frames
    else:
        assert result.frames == cut_clip.total_frames
    assert result.last_frame == pytest.approx(cut_clip.duration - 1.0 / cut_clip.fps, abs=1.0 / cut_clip.fps)
    assert result.damaged_frames == 0
    match_within(boundaries(result), list(cut_clip.cut_times), 1.0 / cut_clip.fps)
    assert [s.transition for s in result.shots[1:]] == ["cut"] * len(cut_clip.cut_times)


@pytest.mark.parametrize("clip", ["cut_clip", "fade_clip"])
def test_skipping_non_reference_frames_finds_the_same_shots(
    clip: str, request: pytest.FixtureRequest
) -> None:
    """Decoding every frame analyses them all; skipping the non-reference ones moves no boundary."""
    c = request.getfixturevalue(clip)
    _, every = detect(c.path, reference_only=False)
    _, skipped = detect(c.path)
    assert every.frames == c.total_frames
    assert skipped.frames < every.frames
    assert [s.transition for s in skipped.shots] == [s.transition for s in every.shots]
    np.testing.assert_allclose(boundaries(skipped), boundaries(every), atol=2.5 / c.fps)


def test_decoders_agree_on_cut_clip(cut_clip: media.CutClip) -> None:
    _, a = detect(cut_clip.path, "pyav")
    _, b = detect(cut_clip.path, "decord")
    assert len(boundaries(a)) == len(boundaries(b))
    np.testing.assert_allclose(boundaries(a), boundaries(b), atol=0.5 / cut_clip.fps)


def test_fade_clip_each_transition_has_a_boundary_inside_it(fade_clip: media.FadeClip) -> None:
    _, result = detect(fade_clip.path)
    found = boundaries(result)
    slack = 1.0 / fade_clip.fps
    for tr in fade_clip.transitions:
        inside = [b for b in found if tr.start - slack <= b <= tr.end + slack]
        assert inside, f"no boundary inside the {tr.kind} transition [{tr.start}, {tr.end}] (found {found})"
    for b in found:  # and none in the middle of a shot
        assert any(tr.start - slack <= b <= tr.end + slack for tr in fade_clip.transitions), (
            f"boundary at {b:.3f}s lies inside a shot, outside every transition {fade_clip.transitions}"
        )


def test_fade_clip_one_boundary_per_transition(fade_clip: media.FadeClip) -> None:
    """Three shots joined by two transitions are three shots: a fade through black is one boundary."""
    _, result = detect(fade_clip.path)
    slack = 1.0 / fade_clip.fps
    per_transition = {
        tr.kind: [b for b in boundaries(result) if tr.start - slack <= b <= tr.end + slack]
        for tr in fade_clip.transitions
    }
    assert all(len(v) == 1 for v in per_transition.values()), (
        f"expected exactly one boundary per transition, got {per_transition} "
        f"(shots: {[(round(s.start, 3), s.transition) for s in result.shots]})"
    )
    assert len(result.shots) == len(fade_clip.shot_lengths)


@pytest.mark.parametrize("clip", ["cut_clip", "fade_clip"])
def test_detection_does_not_depend_on_the_decode_window(clip: str, request: pytest.FixtureRequest) -> None:
    """Batches are a memory bound only: tiny windows (smaller than the gradual lag) change nothing."""
    path = request.getfixturevalue(clip).path
    _, big = detect(path, window=256)
    _, small = detect(path, window=5)
    assert small.frames == big.frames
    assert [(s.start, s.end, s.transition) for s in small.shots] == [
        (s.start, s.end, s.transition) for s in big.shots
    ]


@pytest.mark.parametrize("clip", ["cut_clip", "fade_clip"])
def test_shots_tile_the_synthetic_clips(clip: str, request: pytest.FixtureRequest) -> None:
    c = request.getfixturevalue(clip)
    info, result = detect(c.path)
    assert info.duration == pytest.approx(c.duration, abs=1.0 / c.fps)
    assert_tiles(result, info.duration)


# --------------------------------------------------------------------------- real recordings


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "cuts"),
    [
        ("megamind.avi", [4.13, 6.46, 8.38]),
        ("bikes.mp4", [1.2, 3.04, 5.48, 7.48, 9.68]),
    ],
)
def test_real_cuts_within_one_frame(name: str, cuts: list[float]) -> None:
    info, result = detect(shared(name))
    assert info.fps
    # the README's times are rounded to 10 ms: one frame plus that rounding
    match_within(boundaries(result), cuts, 1.0 / info.fps + 0.005)
    assert_tiles(result, info.duration)


@pytest.mark.slow
def test_fixed_camera_without_cuts_is_one_shot() -> None:
    info, result = detect(shared("vtest.avi"))
    assert info.fps
    assert result.frames == pytest.approx(info.duration * info.fps, abs=2)  # the whole file was analysed
    assert len(result.shots) == 1, [(s.start, s.transition) for s in result.shots]
    assert_tiles(result, info.duration)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["megamind.avi", "bikes.mp4"])
def test_decoders_agree_on_real_cuts(name: str) -> None:
    """decord is the fallback when PyAV cannot open a file: it must place cuts at the same times."""
    info, a = detect(shared(name), "pyav")
    _, b = detect(shared(name), "decord")
    assert boundaries(a), "no cut found by PyAV"
    assert len(boundaries(b)) == len(boundaries(a)), f"pyav {boundaries(a)} vs decord {boundaries(b)}"
    # within one frame: the decoders may disagree on where the first frame sits
    np.testing.assert_allclose(boundaries(b), boundaries(a), rtol=0, atol=1.0 / (info.fps or 25.0) + 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("decoder", sorted(DECODERS))
@pytest.mark.parametrize("name", ["megamind.avi", "bikes.mp4"])
def test_decoded_frame_times_increase_within_the_file(name: str, decoder: str) -> None:
    """Frames come in presentation order, so their times must rise by about one frame each."""
    info = probe(shared(name))
    assert info.fps
    every = DecodeOptions(reference_only=False)
    times = np.concatenate([b.times for b in get_decoder(decoder).frames(info, every)])
    assert times.min() >= 0.0 and times.max() <= info.duration + 1e-6, (
        f"{decoder}: frame times outside [0, {info.duration}]: {times[:5]} ... {times[-3:]}"
    )
    steps = np.diff(times)
    bad = np.flatnonzero(steps <= 0)
    assert len(bad) == 0, (
        f"{decoder}: {len(bad)} frame times go backwards or repeat, first at frame {bad[0] + 1}: "
        f"{times[max(0, bad[0] - 2) : bad[0] + 3]}"
    )
    assert np.median(steps) == pytest.approx(1.0 / info.fps, rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["megamind.avi", "bikes.mp4"])
def test_skipped_frames_leave_whole_frame_steps(name: str) -> None:
    """Skipping non-reference frames keeps every other frame's own time: steps are whole frames."""
    info = probe(shared(name))
    assert info.fps
    times = np.concatenate([b.times for b in get_decoder("pyav").frames(info, DecodeOptions())])
    frames = np.diff(times) * info.fps
    assert (frames > 0.5).all(), f"frame times repeat or go backwards: {frames[frames <= 0.5][:5]}"
    np.testing.assert_allclose(frames, np.round(frames), atol=0.05)
    assert len(times) < 0.9 * info.duration * info.fps  # something was skipped


@pytest.mark.slow
def test_damaged_video_is_refused() -> None:
    path = shared("megamind_damaged.avi")
    info = probe(path)
    with pytest.raises(MediaError, match="damaged"):
        ContentShotDetector(ShotOptions()).detect(stream_frames(info, DecodeOptions()), info.duration)


@pytest.mark.slow
def test_damaged_video_passes_when_allowed() -> None:
    path = shared("megamind_damaged.avi")
    info = probe(path)
    opts = ShotOptions(allow_damaged=True)
    result = ContentShotDetector(opts).detect(stream_frames(info, DecodeOptions()), info.duration)
    # the refusal rule, checked from the counts it reports
    assert result.damaged_frames >= 3
    assert result.damaged_frames > opts.max_damaged * result.frames
    assert_tiles(result, info.duration)
    # the clean recording has no damaged frame at all
    _, clean = detect(shared("megamind.avi"))
    assert clean.damaged_frames == 0


def test_truncated_video_is_refused(cut_clip: media.CutClip, tmp_path: Path, sqlite_store) -> None:
    """A download cut short (moov atom first, mdat missing its tail) must not ingest as a whole video.

    ffprobe still reports the full duration from the moov atom, but frames stop early; shots that
    claim to cover seconds no frame was decoded from are wrong. Ingestion must refuse it and leave
    nothing behind; with allow_damaged it ingests what is there.
    """
    from indexers import IngestOptions, ingest
    from memory import Video

    broken = media.truncate_copy(cut_clip.path, tmp_path / "truncated.mp4", keep_fraction=0.02)
    with pytest.raises(MediaError, match="truncated"):
        ingest(sqlite_store, broken, IngestOptions(transcribe=TranscribeOptions(model="tiny.en")))
    with sqlite_store.session() as s:
        assert s.query(Video).count() == 0
    res = ingest(sqlite_store, broken, IngestOptions(shots=ShotOptions(allow_damaged=True)))
    assert res.duration == pytest.approx(cut_clip.duration, abs=0.2)


def test_unknown_decoder_name() -> None:
    with pytest.raises(ValueError, match="unknown decoder"):
        get_decoder("no-such-decoder")


def test_each_shot_carries_its_mean_colour_signature(cut_clip: media.CutClip) -> None:
    """256 HSV-histogram bins (a distribution) + 144 luma cells; neighbouring shots differ."""
    _, result = detect(cut_clip.path)
    sigs = [s.signature for s in result.shots]
    assert all(s is not None and s.shape == (400,) and s.dtype == np.float32 for s in sigs)
    for s in sigs:
        assert s is not None
        assert float(s[:256].sum()) == pytest.approx(1.0, abs=1e-3)
        assert (s >= 0).all() and (s[256:] <= 1.0 + 1e-6).all()
    for a, b in zip(sigs, sigs[1:], strict=False):
        assert a is not None and b is not None
        assert 0.5 * float(np.abs(a[:256] - b[:256]).sum()) > 0.2, "two different sources look alike"
