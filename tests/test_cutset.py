"""Checks of the real-clip shot-boundary ground truth (tests/bench/cutset.py).

Composing the set takes up to about a minute the first time; it is cached under
``$VIDMEM_BENCH_DIR`` (default ``/tmp/vidmem-bench``) by recipe hash.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.bench.cutset import (
    CUT,
    CutSet,
    Transition,
    _check_recipe,
    _Join,
    _join_graph,
    _Piece,
    _truth,
    compose_cut_set,
    default_work_dir,
    frame_diffs,
    media_available,
    pyscenedetect_boundaries,
    score,
)

FRAME_TOL = 1.5 / 24

pytestmark = pytest.mark.skipif(not media_available(), reason="ffmpeg or /work/shared/media missing")


@pytest.fixture(scope="module")
def cut_set() -> CutSet:
    return compose_cut_set(default_work_dir())


def _ffprobe_frames(path) -> tuple[int, float, list[str]]:
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-count_frames",
            "-show_entries", "stream=codec_type,nb_read_frames:format=duration",
            "-of", "json", str(path),
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    info = json.loads(out)
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    return (
        int(video[0]["nb_read_frames"]),
        float(info["format"]["duration"]),
        [s["codec_type"] for s in info["streams"]],
    )


def test_frame_count_matches_truth_arithmetic(cut_set: CutSet) -> None:
    # total = sum of piece lengths - sum of the overlaps the gradual transitions eat
    overlaps = sum(t.length_frames for t in cut_set.transitions if t.kind != "cut")
    expected = sum(p["frames"] for p in cut_set.pieces) - overlaps
    last = cut_set.pieces[-1]
    assert last["out_start"] + last["frames"] == expected == cut_set.n_frames

    frames, duration, streams = _ffprobe_frames(cut_set.path)
    assert streams == ["video"]
    assert frames == expected
    assert cut_set.fps == 24.0
    assert duration == pytest.approx(expected / 24, abs=1.5 / 24)
    assert 120 <= cut_set.duration <= 240

    kinds = [t.kind for t in cut_set.transitions]
    assert 20 <= kinds.count("cut") <= 30
    assert 8 <= kinds.count("dissolve") + kinds.count("fade") <= 12
    assert kinds.count("dissolve") >= 3 and kinds.count("fade") >= 3
    for t in cut_set.transitions:
        assert t.start <= t.mid <= t.end
        if t.kind == "cut":
            assert t.start == t.end == t.start_frame / 24
            assert t.length_frames == 0
        else:
            assert 12 <= t.length_frames <= 36  # 0.5-1.5 s
            assert t.end_frame - t.start_frame == t.length_frames - 2
            assert t.end - t.start == pytest.approx((t.end_frame - t.start_frame) / 24)


def test_cut_positions_are_frame_exact(cut_set: CutSet) -> None:
    """Every hard cut is the largest frame-to-frame change around it, at exactly its frame."""
    diffs = frame_diffs(cut_set.path)
    assert len(diffs) == cut_set.n_frames
    for t in cut_set.of_kind("cut"):
        f = t.start_frame
        around = diffs[f - 6 : f] + diffs[f + 1 : f + 7]
        assert diffs[f] > 2.5 * max(around), (t, diffs[f - 6 : f + 7])
    # (gradual transitions between moving shots have no such signature; their frame positions are
    # checked on flat colours in test_join_frame_positions_on_flat_colours)


def test_join_frame_positions_on_flat_colours() -> None:
    """The production join graph and truth arithmetic, on flat-colour pieces with this ffmpeg."""
    levels = [128, 255, 0, 128, 255, 40]  # luma of each piece (full range 0-255 before yuv conversion)
    n = 80
    pieces = [_Piece("vtest", 1.0, n) for _ in levels]
    joins = [_Join("fade", 12), CUT, _Join("fadewhite", 24), _Join("fadeblack", 18), _Join("fade", 36)]
    _check_recipe(pieces, joins)
    truth, total, _ = _truth(pieces, joins)
    graph, out_label = _join_graph(pieces, joins)
    inputs: list[str] = []
    for v in levels:
        inputs += ["-f", "lavfi", "-i", f"color=c=0x{v:02x}{v:02x}{v:02x}:s=64x36:r=24:d={n / 24}"]
    raw = subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", *inputs, "-filter_complex", graph,
            "-map", f"[{out_label}]", "-f", "rawvideo", "-pix_fmt", "gray", "-",
        ],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    luma = np.frombuffer(raw, np.uint8).reshape(-1, 36 * 64).mean(axis=1)
    assert len(luma) == total

    def is_level(frame: int, piece: int) -> bool:
        ref = luma[pieces_start[piece] + 2]  # a frame well inside the piece
        return abs(luma[frame] - ref) < 0.6

    # the first frame of each piece's pure part
    pieces_start = [0] + [t.end_frame for t in truth]
    for k, t in enumerate(truth):
        a, b = k, k + 1
        if t.kind == "cut":
            assert is_level(t.start_frame - 1, a) and is_level(t.start_frame, b), t
            continue
        assert is_level(t.start_frame - 1, a), t  # last pure frame of the old shot
        assert not is_level(t.start_frame, a), t  # the change starts at start_frame
        assert not is_level(t.end_frame - 1, b), t  # still blended one frame before end
        assert is_level(t.end_frame, b), t  # first pure frame of the new shot


def test_score_perfect_on_mids(cut_set: CutSet) -> None:
    truth = cut_set.transitions
    s = score([t.mid for t in truth], truth, FRAME_TOL)
    assert (s.tp, s.fp, s.fn) == (len(truth), 0, 0)
    assert s.precision == s.recall == s.f1 == 1.0
    assert s.recall_by_kind == {"cut": 1.0, "dissolve": 1.0, "fade": 1.0}


def test_score_matching_rules() -> None:
    truth = [
        Transition("cut", 10.0, 10.0, 10.0),
        Transition("dissolve", 20.0, 21.0, 20.5, "fade"),
    ]
    # two predictions near one cut: only one may match; the closer one to mid wins
    s = score([9.99, 10.05, 20.1, 30.0], truth, 0.1)
    assert (s.tp, s.fp, s.fn) == (2, 2, 0)
    assert sorted(p for p, _ in s.matches) == [9.99, 20.1]
    # inside [start - tol, end + tol] only
    s = score([19.8, 21.2], truth, 0.1)
    assert (s.tp, s.fp, s.fn) == (0, 2, 2)
    assert s.recall_by_kind == {"cut": 0.0, "dissolve": 0.0}
    s = score([], truth, 0.1)
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)


def test_pyscenedetect_finds_most_hard_cuts(cut_set: CutSet) -> None:
    boundaries, seconds = pyscenedetect_boundaries(cut_set.path)
    s = score(boundaries, cut_set.transitions, FRAME_TOL)
    print(
        f"\nPySceneDetect ContentDetector on {cut_set.path.name}: {len(boundaries)} boundaries, "
        f"P={s.precision:.3f} R={s.recall:.3f} F1={s.f1:.3f} by kind {s.recall_by_kind} "
        f"(tp={s.tp} fp={s.fp} fn={s.fn}); {cut_set.n_frames / seconds:.0f} frames/s"
    )
    assert s.recall_by_kind["cut"] >= 0.8
