"""Self-checks for the synthetic media builders in tests/media.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.media import (
    CutClip,
    FadeClip,
    NarratedClip,
    count_frames,
    has_audio,
    make_cut_clip,
    make_fade_clip,
    make_long_clip,
    make_narrated_clip,
    probe_duration,
    truncate_copy,
    write_srt,
    write_vtt,
)


def _scene_change_times(path: Path, threshold: float = 0.3) -> list[float]:
    """Times (s) of frames whose ffmpeg scene score exceeds ``threshold``."""
    proc = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-i",
            str(path),
            "-vf",
            f"select='gt(scene,{threshold})',showinfo",
            "-f",
            "null",
            "-",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return [float(t) for t in re.findall(r"pts_time:([0-9.]+)", proc.stderr)]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def cut_clip(media_dir: Path) -> CutClip:
    return make_cut_clip(media_dir)


@pytest.fixture(scope="module")
def fade_clip(media_dir: Path) -> FadeClip:
    return make_fade_clip(media_dir)


@pytest.fixture(scope="module")
def narrated_clip(media_dir: Path) -> NarratedClip:
    return make_narrated_clip(media_dir)


def test_cut_clip_frames_and_duration(cut_clip: CutClip) -> None:
    assert cut_clip.cut_frames == (48, 120)
    assert cut_clip.cut_times == pytest.approx((2.0, 5.0))
    assert count_frames(cut_clip.path) == 180
    assert probe_duration(cut_clip.path) == pytest.approx(cut_clip.duration, abs=1 / 24)


def test_cut_clip_cuts_are_exact(cut_clip: CutClip) -> None:
    found = _scene_change_times(cut_clip.path)
    assert found == pytest.approx(list(cut_clip.cut_times), abs=1e-3)


def test_fade_clip_arithmetic(fade_clip: FadeClip) -> None:
    assert fade_clip.duration == pytest.approx(10.0)
    assert count_frames(fade_clip.path) == fade_clip.total_frames == 240
    assert probe_duration(fade_clip.path) == pytest.approx(10.0, abs=1 / 24)
    t1, t2 = fade_clip.transitions
    assert (t1.kind, t1.start, t1.end, t1.midpoint) == ("fade", 3.0, 4.0, 3.5)
    assert (t2.kind, t2.start, t2.end, t2.midpoint) == ("fadeblack", 6.0, 7.0, 6.5)
    # A dissolve has no single-frame jump anywhere near a hard-cut threshold
    # outside the transitions.
    for t in _scene_change_times(fade_clip.path, threshold=0.3):
        assert any(tr.start <= t <= tr.end for tr in fade_clip.transitions), t


def test_narrated_clip_audio_and_video(narrated_clip: NarratedClip) -> None:
    clip = narrated_clip
    assert has_audio(clip.path)
    assert count_frames(clip.path) == clip.total_frames == 720
    assert clip.cut_times == pytest.approx((10.0, 20.0))
    assert [p.start for p in clip.phrases] == pytest.approx([2.0, 12.0, 22.0])
    for p in clip.phrases:
        assert 0.5 < p.end - p.start < 8.0
    assert probe_duration(clip.path, "a:0") >= clip.phrases[-1].end
    assert probe_duration(clip.path) == pytest.approx(30.0, abs=0.2)
    assert _scene_change_times(clip.path) == pytest.approx([10.0, 20.0], abs=1e-3)


def test_subtitle_writers(tmp_path: Path) -> None:
    cues = [(2.0, 4.5566, "hello there"), (3725.25, 3726.0, "later")]
    srt = write_srt(tmp_path / "a.srt", cues).read_text(encoding="utf-8")
    vtt = write_vtt(tmp_path / "a.vtt", cues).read_text(encoding="utf-8")

    srt_lines = srt.splitlines()
    assert srt_lines[:3] == ["1", "00:00:02,000 --> 00:00:04,557", "hello there"]
    assert "01:02:05,250 --> 01:02:06,000" in srt_lines
    assert re.fullmatch(r"\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}", srt_lines[1])

    vtt_lines = vtt.splitlines()
    assert vtt_lines[0] == "WEBVTT"
    assert "00:00:02.000 --> 00:00:04.557" in vtt_lines
    assert "01:02:05.250 --> 01:02:06.000" in vtt_lines


def test_long_clip_and_truncate(media_dir: Path, cut_clip: CutClip) -> None:
    long_path = make_long_clip(media_dir / "long", cut_clip.path, copies=3)
    assert probe_duration(long_path) == pytest.approx(3 * cut_clip.duration, abs=0.2)

    dst = truncate_copy(cut_clip.path, media_dir / "trunc.mp4", keep_fraction=0.5)
    assert dst.stat().st_size == int(cut_clip.path.stat().st_size * 0.5)
    assert dst.read_bytes() == cut_clip.path.read_bytes()[: dst.stat().st_size]
