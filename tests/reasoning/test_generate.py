"""The generation bridge with its embedded backend, on real footage: every ffmpeg operation renders
exactly the frames it planned, the timeline re-reads through OpenTimelineIO (.otio, CMX 3600 EDL, FCP
XML), the preview holds the timeline's frames and shows the insert where it lies, and a bridge or
extension starts on its conditioning frame. Requests that cannot be honoured are refused with the
reason, and nothing is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from indexers import ingest
from indexers.captions import CaptionOptions
from indexers.pipeline import IngestOptions
from memory import Store
from reasoning.generate import EditRequest, RequestError, prepare, run_edit
from reasoning.generate.media import count_frames, grab, psnr
from reasoning.generate.request import FrameGrid
from tests.media import bbb_excerpt


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> tuple[Store, str, Path]:
    """24 s of Big Buck Bunny (real footage with hard cuts and sound) at 480x270, ingested without
    the vision stage."""
    root = tmp_path_factory.mktemp("generate")
    clip = bbb_excerpt(root / "bbb24.mp4", 24, 480, 270)
    store = Store(root / "home")
    options = IngestOptions(library="edits", captions=CaptionOptions(llm=None), look=None)
    video_id = ingest(store, clip, options, cache_dir=model_cache).video_id
    yield store, video_id, root
    store.close()


def boundaries(store: Store, video_id: str) -> list[float]:
    from reasoning.generate import load_source

    return list(load_source(store, video_id).boundaries)


def request(video_id: str, operation: str, **given: Any) -> EditRequest:
    return EditRequest.model_validate({"video_id": video_id, "operation": operation, **given})


def test_frame_grids_snap_to_the_nearest_valid_count() -> None:
    ltx = FrameGrid(multiple=8, offset=1, least=9, most=257)
    assert [ltx.snap(f) for f in (1, 9, 12, 13, 48, 300)] == [9, 9, 9, 17, 49, 257]
    assert FrameGrid().snap(47.4) == 47


def test_the_capability_table_says_what_the_backends_do() -> None:
    """Refusals name backends from `CAPABILITIES` without importing them: it must match the classes."""
    from reasoning.generate.backends import BACKENDS, CAPABILITIES, _who_can

    assert set(CAPABILITIES) == set(BACKENDS.names())
    for name, cap in CAPABILITIES.items():
        assert cap["operations"] == BACKENDS.get(name).operations, name
    assert _who_can("masks") == "backends that can: diffusers"  # wan-vace
    assert _who_can("sound") == "backends that can: diffusers, http"  # ltx2, a served model with sound


def test_requests_that_cannot_be_honoured_say_why(footage: tuple[Store, str, Path]) -> None:
    store, vid, root = footage
    before = sorted(p.name for p in root.iterdir())
    cases = {
        "past its end": request(vid, "freeze", anchor=99.0),
        "backends that can: diffusers, http": request(vid, "generate", anchor=3.0, prompt="a rabbit"),
        "unknown generation backend 'sora'": request(vid, "freeze", anchor=3.0, backend="sora"),
        "renders at most 600 s": request(vid, "title", anchor=3.0, text="x", duration=900.0),
        "no video with id": request("nope", "freeze", anchor=3.0),
        "needs 12 frames before": request(vid, "crossfade", anchor=(0.2, 6.0), duration=1.0),
    }
    for says, req in cases.items():
        with pytest.raises(RequestError, match=says):
            prepare(store, req)
    for wrong in (
        {"operation": "freeze", "anchor": [1.0, 2.0]},
        {"operation": "slowmo", "anchor": 1.0},
        {"operation": "slowmo", "anchor": [3.0, 2.0]},
        {"operation": "pip", "anchor": [1.0, 2.0]},
        {"operation": "freeze", "anchor": 1.0, "duration": -1},
        {"operation": "freeze", "anchor": 1.0, "mystery": 1},
    ):
        with pytest.raises(ValidationError):
            request(vid, **wrong)
    assert sorted(p.name for p in root.iterdir()) == before  # nothing written


def test_anchor_snaps_to_the_nearest_shot_boundary(footage: tuple[Store, str, Path]) -> None:
    store, vid, _ = footage
    cuts = boundaries(store, vid)
    inner = [b for b in cuts if 2 < b < 20]
    assert inner, cuts
    plan, _ = prepare(store, request(vid, "freeze", anchor=inner[0] + 0.3, duration=1.0))
    assert plan.start == round(inner[0] * plan.fps) == plan.end
    assert plan.frames == round(1.0 * plan.fps)
    assert any("snapped to the shot boundary" in n for n in plan.notes)


OPERATIONS: dict[str, dict[str, Any]] = {
    "title": {"anchor": 5.0, "text": "Chapter two", "duration": 1.5},
    "freeze": {"anchor": 5.0, "duration": 1.0},
    "extend": {"anchor": 5.0, "duration": 1.0},
    "bridge": {"anchor": (6.0, 7.0)},
    "slowmo": {"anchor": (9.0, 10.0), "speed": 0.5},
    "pip": {"anchor": (12.0, 13.5), "overlay": {"start": 2.0, "corner": "bottom-left"}},
    "trim": {"anchor": (14.0, 16.0)},
    "crossfade": {"anchor": (17.0, 19.0), "duration": 0.5},
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_each_operation_lands_on_a_timeline_frame_exactly(
    operation: str, footage: tuple[Store, str, Path]
) -> None:
    import opentimelineio as otio

    store, vid, root = footage
    plan, backend = prepare(store, request(vid, operation, **OPERATIONS[operation]))
    out = root / f"op-{operation}"
    result = run_edit(store, plan, backend, out, job=f"test-{operation}")
    last = round(plan.source.duration * plan.source.fps)
    timeline = result["timeline"]
    # what the timeline must hold: the source less what was replaced, plus the insert
    expected = last - (plan.end - plan.start) + (0 if operation == "crossfade" else plan.frames)
    assert timeline["frames"] == expected
    preview = out / "preview.mp4"
    assert result["preview"]["frames"] == timeline["frames"]  # a short timeline is previewed whole
    assert count_frames(preview) == timeline["frames"]
    if operation != "trim":
        insert = out / "insert.mp4"
        assert count_frames(insert) == plan.frames
        first = grab(insert, 0, plan.fps)
        at = grab(preview, timeline["insert_at"], plan.fps)
        assert psnr(first, at) >= 45, operation  # the preview shows the insert where the timeline says
    # the editor's files re-read through OpenTimelineIO
    built = otio.adapters.read_from_file(str(out / "edit.otio"))
    assert built.duration().to_frames() == timeline["frames"]
    assert built.is_equivalent_to(otio.adapters.read_from_file(str(out / "edit.otio")))
    video = built.video_tracks()[0]
    inserts = [c for c in video.find_clips() if "vidmem" in c.metadata]
    if operation in ("trim",):
        assert not inserts
    elif operation == "crossfade":
        dissolve = [t for t in video if isinstance(t, otio.schema.Transition)]
        assert len(dissolve) == 1 and dissolve[0].metadata["vidmem"]["operation"] == "crossfade"
        assert dissolve[0].in_offset.to_frames() + dissolve[0].out_offset.to_frames() == plan.frames
    else:
        (clip,) = inserts
        meta = clip.metadata["vidmem"]
        assert (
            meta["job"] == f"test-{operation}"
            and meta["backend"] == "ffmpeg"
            and meta["operation"] == operation
        )
        assert clip.source_range.duration.to_frames() == plan.frames
    edl = otio.adapters.read_from_file(str(out / "edit.edl"), rate=plan.source.fps)
    assert edl.duration().to_frames() == timeline["frames"]
    if operation != "crossfade":
        want = [
            (c.source_range.start_time.to_frames(), c.source_range.duration.to_frames())
            for c in video.find_clips()
        ]
        got = [
            (c.source_range.start_time.to_frames(), c.source_range.duration.to_frames())
            for c in edl.find_clips()
        ]
        assert got == want
    fcp = otio.adapters.read_from_file(str(out / "edit.xml"))
    assert fcp.video_tracks()[0].duration().to_frames() == timeline["frames"]


def test_bridge_and_extension_start_on_their_conditioning_frame(footage: tuple[Store, str, Path]) -> None:
    """The conditioning frame, decoded independently (PyAV, by index), against the insert's first
    frame: >= 35 dB at CRF 18; and a frame of another shot, the negative control, <= 15 dB."""
    import av

    store, vid, root = footage
    cuts = boundaries(store, vid)
    for operation, given in (
        ("bridge", {"anchor": (6.0, 7.0)}),
        ("extend", {"anchor": 5.0, "duration": 1.0}),
    ):
        plan, backend = prepare(store, request(vid, operation, **given))
        run_edit(store, plan, backend, root / f"cond-{operation}")
        first = grab(root / f"cond-{operation}" / "insert.mp4", 0, plan.fps)
        wanted = plan.conditions[0].frame
        far = max((b for b in cuts if b < cuts[-1] - 1), key=lambda b: abs(b * plan.fps - wanted))
        elsewhere = round(far * plan.fps) + 2  # inside the shot furthest away
        frames: dict[int, np.ndarray] = {}
        with av.open(plan.source.path) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in (wanted, elsewhere):
                    frames[i] = frame.to_ndarray(format="rgb24")
                if len(frames) == 2:
                    break
        assert psnr(first, frames[wanted]) >= 35, operation
        assert psnr(first, frames[elsewhere]) <= 15, operation


def test_slow_motion_makes_new_frames(footage: tuple[Store, str, Path]) -> None:
    """Motion-interpolated, not repeated: at half speed a plain retime would repeat every frame."""
    store, vid, root = footage
    plan, backend = prepare(store, request(vid, "slowmo", anchor=(9.0, 10.0), speed=0.5, audio="silence"))
    run_edit(store, plan, backend, root / "slow")
    frames = [grab(root / "slow" / "insert.mp4", k, plan.fps) for k in range(10, 20)]
    repeats = sum(psnr(a, b) > 50 for a, b in zip(frames, frames[1:], strict=False))
    assert repeats <= 2, repeats
