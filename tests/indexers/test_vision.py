"""What is on screen (indexers/vision.py), with the real models: RapidOCR reads rendered text exactly,
also after an H.264 round trip; the same line over several frames is one ScreenText; labels stay off
content-free frames; the face cascade and HOG find faces and pedestrians in real recordings.

Frames from ../shared/media at fixed times: megamind.avi 7.0 s shows one frontal face (Roxanne,
level weight ~5.8), vtest.avi 20 s several pedestrians, megamind.avi 6.5-8 s a restaurant with
candles on the tables ("candle", 0.3-0.5 per frame). docs/benchmarks/labels.md has the thresholds and where they come from.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from indexers.vision import (
    ScreenText,
    TextBox,
    VisionOptions,
    analyse_shot,
    box_iou,
    class_names,
    dedupe_text,
    edit_similarity,
    labels_from_logits,
    may_hold_text,
    nms,
    shot_labels,
    softmax,
)
from tests import media
from tests.conftest import shared

ROOT = Path(__file__).resolve().parents[2]
W, H = 1280, 720
LINES = [
    ("Quarterly results 2024", 64),
    ("Revenue grew by 12 percent", 40),
    ("Source: internal report, page 7", 20),
]


def render(lines: list[tuple[str, int]] = LINES, size: tuple[int, int] = (W, H)) -> tuple[np.ndarray, list]:
    """Text drawn with PIL's default font on a dark frame, and where each line went (fractions)."""
    im = Image.new("RGB", size, (20, 32, 60))
    draw, y, boxes = ImageDraw.Draw(im), 80, []
    for text, px in lines:
        font = ImageFont.load_default(size=px)
        draw.text((100, y), text, font=font, fill=(255, 255, 255))
        x0, y0, x1, y1 = draw.textbbox((100, y), text, font=font)
        boxes.append((x0 / size[0], y0 / size[1], x1 / size[0], y1 / size[1]))
        y += 2 * px
    return np.asarray(im), boxes


def frames_at(path: Path, times: list[float]) -> list[np.ndarray]:
    """RGB frames, the first at or after each time (seconds), seeking to the keyframe before each."""
    import av

    out = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.time_base is not None
        for t in times:
            c.seek(int(t / stream.time_base), stream=stream, backward=True)
            out.append(next(f for f in c.decode(stream) if f.time >= t - 1e-3).to_ndarray(format="rgb24"))
    return out


@pytest.fixture(scope="module")
def slide() -> tuple[np.ndarray, list]:
    return render()


@pytest.fixture(scope="module")
def reader():  # type: ignore[no-untyped-def]
    from indexers.vision import RapidOCRReader

    return RapidOCRReader()


@pytest.fixture(scope="module")
def detector():  # type: ignore[no-untyped-def]
    from indexers.vision import OpenCVPeopleDetector

    return OpenCVPeopleDetector()


def content_free() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    ramp = np.broadcast_to(np.linspace(0, 255, W, dtype=np.uint8)[None, :, None], (H, W, 3))
    return [
        np.zeros((H, W, 3), np.uint8),
        np.full((H, W, 3), (200, 40, 40), np.uint8),
        rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        np.ascontiguousarray(ramp),
    ]


def test_importing_vision_loads_no_model_library() -> None:
    code = "import sys, indexers.vision; print(sorted({'torch', 'cv2', 'rapidocr', 'onnxruntime'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------- OCR


def test_ocr_reads_rendered_lines_exactly_where_they_were_drawn(reader, slide) -> None:  # type: ignore[no-untyped-def]
    frame, drawn = slide
    got = reader.read(frame)
    assert [t.text for t in got] == [text for text, _ in LINES]
    for t, box in zip(got, drawn, strict=True):
        assert box_iou(t.box, box) > 0.5, (t, box)
        assert 0.6 <= t.score <= 1.0


def test_ocr_reads_the_same_after_an_h264_round_trip(reader, slide, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    png = tmp_path / "slide.png"
    Image.fromarray(slide[0]).save(png)
    clip = tmp_path / "slide.mp4"
    media._ffmpeg(
        "-loop", "1", "-i", png, "-t", "2", "-r", "25", "-c:v", "libx264", "-pix_fmt", "yuv420p", clip
    )
    (frame,) = frames_at(clip, [1.0])
    assert frame.shape == (H, W, 3)
    assert [t.text for t in reader.read(frame)] == [text for text, _ in LINES]


def test_ocr_finds_nothing_on_frames_without_text(reader) -> None:  # type: ignore[no-untyped-def]
    for frame in content_free():
        assert reader.read(frame) == []


def test_ocr_drops_a_lone_glyph_and_keeps_the_line_beside_it(reader) -> None:  # type: ignore[no-untyped-def]
    frame, _ = render([("Q", 72), ("Lower third caption", 40)])
    assert [t.text for t in reader.read(frame)] == ["Lower third caption"]
    from indexers.vision import RapidOCRReader

    keep_all = RapidOCRReader(VisionOptions(ocr_min_chars=1))
    assert "Q" in [t.text for t in keep_all.read(frame)]  # the detector does read it: the rule drops it


def test_ocr_reads_lines_one_at_a_time_so_short_ones_keep_their_spaces(reader) -> None:  # type: ignore[no-untyped-def]
    """bbb_10min.mp4's end credits: RapidOCR's batches of six pad a short title to the width of the
    long lines beside it, and it loses its spaces; read one at a time, it keeps them
    (docs/benchmarks/ocr_batch.md)."""
    frames = frames_at(shared("bbb_10min.mp4"), [523.042, 527.125])
    one = [[t.text for t in reader.read(f)] for f in frames]
    assert "RENDERING PROVIDED BY" in one[0] and "DOLBY MASTERING" in one[1]
    from indexers.vision import RapidOCRReader

    six = [[t.text for t in RapidOCRReader(VisionOptions(ocr_rec_batch=6)).read(f)] for f in frames]
    assert "RENDERINGPROVIDEDBY" in six[0] and "DOLBYMASTERING" in six[1]
    with pytest.raises(ValueError, match="ocr_rec_batch"):
        VisionOptions(ocr_rec_batch=0)


# -------------------------------------------------------------------------------------- text gate

# One step tighter, and looser, than the defaults on every shape knob (docs/benchmarks/text_gate.md):
# a frame chosen to pass (or be skipped) must still be so there, so that these tests hold with margin.
TIGHT = VisionOptions(
    text_gate_min_height=6, text_gate_min_width=30, text_gate_aspect=3.5, text_gate_fill=0.5
)
LOOSE = VisionOptions(
    text_gate_min_height=4, text_gate_min_width=12, text_gate_aspect=2.0, text_gate_fill=0.3
)
NO_TEXT_BBB = [262.0, 396.0, 416.0]
"""bbb_10min.mp4 times of frames without text, with fine texture (grass, bark, fur): OCR reads nothing
and the gate skips them even with the looser rule."""


def caption(frame: np.ndarray, text: str, px: int, at: tuple[int, int]) -> np.ndarray:
    """`text` in white with a 1 px dark outline (subtitle style), PIL's default font at `px`."""
    im = Image.fromarray(frame)
    font = ImageFont.load_default(size=px)
    ImageDraw.Draw(im).text(at, text, font=font, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(im)


def test_the_text_gate_passes_small_lines_that_ocr_then_reads(reader) -> None:  # type: ignore[no-untyped-def]
    # a 14 px subtitle on real frames the gate skips without it
    for t, at in ((262.0, (100, 80)), (416.0, (100, 650))):
        (frame,) = frames_at(shared("bbb_10min.mp4"), [t])
        assert not may_hold_text(frame)
        lined = caption(frame, "Lower third caption text", 14, at)
        assert may_hold_text(lined) and may_hold_text(lined, TIGHT)
        assert [x.text for x in reader.read(lined)] == ["Lower third caption text"]
    # a slide: the gate passes 12 and 14 px lines (OCR does not read PIL's 14 px font there; 16 px it does)
    for px in (12, 14):
        assert may_hold_text(render([("Source: internal report, page 7", px)])[0], TIGHT)
    slide, _ = render([("Source: internal report, page 7", 16)])
    assert may_hold_text(slide, TIGHT)
    assert [x.text for x in reader.read(slide)] == ["Source: internal report, page 7"]


def test_the_text_gate_skips_text_free_real_frames() -> None:
    from indexers.vision import RapidOCRReader

    ungated = RapidOCRReader(VisionOptions(ocr_text_gate=False))
    for frame in frames_at(shared("bbb_10min.mp4"), NO_TEXT_BBB):
        assert ungated.read(frame) == []  # what the gate is for: a detector pass that finds nothing
        assert not may_hold_text(frame) and not may_hold_text(frame, LOOSE)
    for frame in content_free()[:2]:  # black, flat colour
        assert not may_hold_text(frame)


def test_analyse_shot_reads_the_same_with_the_gate_on_and_off() -> None:
    """Big Buck Bunny's title (21 s), credits fading in at low contrast (494 s, the hardest frame of the
    calibration) and the scrolling end credits: a gate that drops text changes what is read."""
    times = [21.0, 494.0, 520.0, 545.0, 570.0]
    off = VisionOptions(ocr_text_gate=False, people=False)
    on = VisionOptions(ocr_text_gate=True, people=False)
    for t, frame in zip(times, frames_at(shared("bbb_10min.mp4"), times), strict=True):
        assert may_hold_text(frame, on)
        ungated = [x.text for x in analyse_shot([frame], [t], off).texts]
        assert ungated, t
        assert [x.text for x in analyse_shot([frame], [t], on).texts] == ungated


def test_the_text_gate_says_how_to_fix_bad_options() -> None:
    with pytest.raises(ValueError, match="text_gate_contrasts"):
        VisionOptions(text_gate_contrasts=())
    with pytest.raises(ValueError, match="text_gate_fill"):
        VisionOptions(text_gate_fill=1.5)


# -------------------------------------------------------------------------------------- dedupe


def tb(text: str, score: float = 0.95, y: float = 0.1, x: float = 0.1) -> TextBox:
    return TextBox(text, score, (x, y, x + 0.5, y + 0.06))


def test_dedupe_merges_one_line_over_frames_with_ocr_jitter() -> None:
    readings = [
        (2.0, [tb("Revenue grew by 12 percent", 0.91), tb("Source: internal report", 0.9, y=0.5)]),
        (1.0, [tb("Revenue grew by 12 percant", 0.80)]),  # one character misread, earlier frame
        (3.0, [tb("revenue grew  by 12 percent", 0.97)]),  # case and spaces differ
    ]
    assert dedupe_text(readings) == [
        ScreenText("revenue grew  by 12 percent", 1.0, 3.0, tb("").box, 0.97),  # the best-scored spelling
        ScreenText("Source: internal report", 2.0, 2.0, tb("", y=0.5).box, 0.9),
    ]


def test_dedupe_keeps_different_lines_apart() -> None:
    readings = [
        (0.0, [tb("Chapter 1"), tb("Chapter 1", x=0.45)]),  # twice on one frame: two lines
        (1.0, [tb("Chapter 2")]),  # same place, another number: another line
        (2.0, [tb("Revenue grew", y=0.7)]),
        (3.0, [tb("Revenue fell", y=0.7)]),  # similarity 0.75: different words
    ]
    texts = [(t.text, t.start, t.end) for t in dedupe_text(readings)]
    assert texts == [
        ("Chapter 1", 0.0, 0.0),
        ("Chapter 1", 0.0, 0.0),
        ("Chapter 2", 1.0, 1.0),
        ("Revenue grew", 2.0, 2.0),
        ("Revenue fell", 3.0, 3.0),
    ]
    assert (
        edit_similarity("Revenue grew", "Revenue fell") < 0.8 <= edit_similarity("abcdefghij", "abcdefghik")
    )


def test_dedupe_follows_a_line_that_moved_but_not_one_of_another_size() -> None:
    """A credit roll: the same name read higher up on a later frame is one line; the same words
    in a larger type (a title, not the credit) are another."""
    readings = [
        (1.0, [tb("Sacha Goedegebure", y=0.8)]),
        (2.0, [tb("Sacha Goedegebure", y=0.5), tb("Andy Goralczyk", y=0.8)]),
        (3.0, [TextBox("Sacha Goedegebure", 0.9, (0.1, 0.1, 0.9, 0.3))]),  # three times as tall
    ]
    texts = [(t.text, t.start, t.end) for t in dedupe_text(readings)]
    assert texts == [
        ("Sacha Goedegebure", 1.0, 2.0),
        ("Andy Goralczyk", 2.0, 2.0),
        ("Sacha Goedegebure", 3.0, 3.0),
    ]


# ---------------------------------------------------------------------------------------- labels


def test_labels_come_from_softmax_probabilities_above_the_threshold() -> None:
    logits = np.zeros((3, 1000), np.float32)
    logits[0, 207] = 12.0  # one clear class
    logits[2, [1, 2]] = 8.0  # two classes share the mass: 0.43 each
    labels = labels_from_logits(logits, threshold=0.3, top_k=3)
    assert labels[0] == [(class_names()[207], pytest.approx(0.9939, abs=1e-3))]
    assert labels[1] == []  # flat: 0.001 each
    assert [n for n, _ in labels[2]] == [class_names()[1], class_names()[2]]
    probs = softmax(logits)
    assert np.allclose(probs.sum(axis=1), 1.0)
    # a class on one frame of three averages to a third: dropped at 0.4, kept at 0.3
    assert shot_labels(probs, threshold=0.4) == []
    assert shot_labels(probs, threshold=0.3)[0][0] == class_names()[207]


def test_a_real_frame_gets_a_sensible_label_and_content_free_frames_none() -> None:
    from indexers.vision import _torch_threads
    from memory.runtime.images import EfficientNetEncoder

    enc = EfficientNetEncoder()
    restaurant = frames_at(shared("megamind.avi"), [6.5, 7.0, 8.0])  # candles on the tables
    with _torch_threads(1):  # as in the visual worker; two threads on busy cores are much slower
        probs = softmax(enc.features_and_logits(np.stack(restaurant))[1])
        _, logits = enc.features_and_logits(np.stack(content_free()))
    assert "candle" in [name for name, _ in shot_labels(probs)]
    assert labels_from_logits(logits) == [[], [], [], []]


def test_a_still_picture_is_encoded_once_and_a_change_again() -> None:
    """A held picture with sensor-like noise (+-2 levels) takes the features of its first frame; a
    different picture is encoded on its own, and so is a slow pan, which never drifts far from one
    frame to the next but does from the frame kept."""
    from indexers.vision import still_frames

    face, candles = frames_at(shared("megamind.avi"), [7.0, 8.0])
    rng = np.random.default_rng(0)
    noisy = [
        np.clip(face.astype(np.int16) + rng.integers(-2, 3, face.shape), 0, 255).astype(np.uint8)
        for _ in range(4)
    ]
    assert still_frames([face, *noisy, candles, candles], 1.0).tolist() == [0, 0, 0, 0, 0, 5, 5]
    pan = [np.roll(face, 6 * k, axis=1) for k in range(8)]  # 6 px a frame: 48 px by the end
    assert len(set(still_frames(pan, 1.0).tolist())) > 1
    assert still_frames([face] * 3, 0.0).tolist() == [0, 1, 2]  # off

    shot = analyse_shot([face, *noisy], [0.0, 1.0, 2.0, 3.0, 4.0], VisionOptions(ocr=False, people=False))
    assert np.allclose(shot.features, shot.features[0])  # one pass stood for the five frames


def test_the_exported_graph_gives_the_eager_networks_outputs() -> None:
    """The visual worker runs EfficientNet as an ONNX graph in ONNX Runtime (exported on a batch of
    2): on real frames, in batches of other sizes, it must give the package's eager module's
    features and logits, so tags and visual vectors do not change with the speed-up."""
    from memory.runtime.images import EfficientNetEncoder

    enc = EfficientNetEncoder()
    real = np.stack(frames_at(shared("megamind.avi"), [1.0, 3.0, 6.5, 7.0, 8.0]))
    for batch in (real[:1], real, np.stack(content_free())):
        fast, fast_logits = enc.features_and_logits(batch)
        ref, ref_logits = enc.features_and_logits(batch, eager=True)
        assert fast.shape == (len(batch), 1280) and fast_logits.shape == (len(batch), 1000)
        assert np.abs(fast - ref).max() < 1e-4
        assert np.abs(fast_logits - ref_logits).max() < 1e-3
        assert (fast_logits.argmax(1) == ref_logits.argmax(1)).all()
    # a shot's frames go in as a list, never stacked at full size: the same outputs
    listed, listed_logits = enc.features_and_logits(list(real))
    stacked, stacked_logits = enc.features_and_logits(real)
    assert np.array_equal(listed, stacked) and np.array_equal(listed_logits, stacked_logits)
    with pytest.raises(ValueError, match="uint8 RGB"):
        enc.features_and_logits([real[0], real[0, :, :, :2]])


# ---------------------------------------------------------------------------------- faces, people


def test_the_face_cascade_finds_a_face_where_there_is_one(detector) -> None:  # type: ignore[no-untyped-def]
    (frame,) = frames_at(shared("megamind.avi"), [7.0])
    found = detector.detect(frame)
    assert len(found.faces) == 1
    x0, y0, x1, y1 = found.faces[0].box  # her face, left of centre
    assert 0.15 < x0 < x1 < 0.6 and 0.1 < y0 < y1 < 0.8
    for empty in content_free():
        assert detector.detect(empty).faces == []


def test_hog_finds_pedestrians(detector) -> None:  # type: ignore[no-untyped-def]
    (frame,) = frames_at(shared("vtest.avi"), [20.0])
    found = detector.detect(frame)
    assert found.people and found.count >= 1
    assert all(d.score >= VisionOptions().people_threshold for d in found.people)
    boxes = [d.box for d in found.people]
    assert nms(boxes, [d.score for d in found.people], 0.2) == list(range(len(boxes)))  # already suppressed
    for empty in content_free():
        assert detector.detect(empty).people == []


# -------------------------------------------------------------------------------------- one call


def test_analyse_shot_returns_texts_labels_counts_and_features(slide) -> None:  # type: ignore[no-untyped-def]
    frame, _ = slide
    shifted = np.roll(frame, 2, axis=1)  # the same slide, a little jitter
    black = np.zeros_like(frame)
    seen = analyse_shot([frame, shifted, black], [10.0, 10.5, 11.0], VisionOptions(detect_frames=3), 0)
    assert seen.features.shape == (3, 1280) and seen.features.dtype == np.float32
    assert np.allclose(np.linalg.norm(seen.features, axis=1), 1.0, atol=1e-4)
    assert seen.analysed[0] == 0 and len(seen.analysed) <= 3
    assert [t.text for t in seen.texts] == [text for text, _ in LINES]
    assert all(10.0 <= t.start <= t.end <= 11.0 for t in seen.texts)
    assert seen.faces == 0 and seen.people == 0 and seen.face_score == 0.0
    assert len(seen.detections) == len(seen.analysed)
    assert all(isinstance(name, str) and 0.0 < p <= 1.0 for name, p in seen.labels)


NAMES = [
    f"{first} {last}"
    for first, last in zip(
        [
            "Ton",
            "Sacha",
            "Andy",
            "Campbell",
            "Nathan",
            "Brecht",
            "Jan",
            "Pablo",
            "Enrico",
            "Esther",
            "Bassam",
            "Ben",
        ],
        [
            "Roosendaal",
            "Goedegebure",
            "Goralczyk",
            "Barton",
            "Vegdahl",
            "Van Lommel",
            "Morgenstern",
            "Vazquez",
            "Valenza",
            "Wouters",
            "Kurdali",
            "Dansie",
        ],
        strict=True,
    )
]


def credit_roll(frames: int) -> list[np.ndarray]:
    """Twelve names, one every 120 px on a 1440 px tall page, scrolled up 150 px a frame past a
    1280x720 window."""
    page = Image.new("RGB", (W, 1440 + 150 * frames), (0, 0, 0))
    draw, font = ImageDraw.Draw(page), ImageFont.load_default(size=36)
    for k, name in enumerate(NAMES):
        draw.text((480, 400 + 120 * k), name, font=font, fill=(235, 235, 235))
    rows = np.asarray(page)
    return [np.ascontiguousarray(rows[150 * i : 150 * i + H]) for i in range(frames)]


def test_a_shot_whose_text_scrolls_is_read_on_more_frames_and_a_still_one_once(slide) -> None:  # type: ignore[no-untyped-def]
    """Text read on the keyframe is read again where its area changed, most changed first: a credit
    roll gives up names the keyframe never showed, each once; a held slide costs one reading."""
    roll = credit_roll(10)
    times = [float(i) for i in range(10)]
    one = analyse_shot(roll, times, VisionOptions(people=False, text_frames=1), keyframe_index=5)
    more = analyse_shot(roll, times, VisionOptions(people=False), keyframe_index=5)
    assert one.read == [5] and len(more.read) == 4 and more.read[0] == 5
    on_keyframe = {t.text for t in one.texts}
    assert on_keyframe < set(NAMES)
    read = [t.text for t in more.texts]
    assert set(read) <= set(NAMES) and len(read) == len(set(read))  # every name once, however far it moved
    assert len(set(read) - on_keyframe) >= 4, (on_keyframe, read)
    frame, _ = slide
    held = [frame, np.roll(frame, 1, axis=1), frame, np.roll(frame, 1, axis=0), frame]
    still = analyse_shot(held, [0.0, 1.0, 2.0, 3.0, 4.0], VisionOptions(people=False), keyframe_index=2)
    assert still.read == [2]
    assert [t.text for t in still.texts] == [text for text, _ in LINES]


def long_shot(caption_at: range | None, seconds: int = 21) -> list[np.ndarray]:
    """A shot of `seconds` frames, one a second: a bright block crossing a dark set (the picture
    changes throughout) and, on the frames in `caption_at`, a lower third naming the speaker."""
    frames = []
    for i in range(seconds):
        im = Image.new("RGB", (W, H), (40, 40, 48))
        draw = ImageDraw.Draw(im)
        draw.rectangle((60 * i, 120, 60 * i + 320, 480), fill=(200, 190, 170))
        if caption_at is not None and i in caption_at:
            draw.rectangle((80, 560, 760, 660), fill=(10, 20, 90))
            draw.text(
                (100, 580),
                "Ada Lovelace, mathematician",
                font=ImageFont.load_default(size=44),
                fill=(255, 255, 255),
            )
        frames.append(np.asarray(im))
    return frames


def test_text_on_screen_for_part_of_a_long_shot_is_found_where_the_keyframe_shows_none() -> None:
    """A lower third shown for five seconds of a 20-second shot, away from its keyframe: the probes
    (`text_probe_every`) find it and the name is read; without them it is lost; a long shot that
    holds no text, or one that holds still, costs the probes or nothing more."""
    times = [float(i) for i in range(21)]
    o = VisionOptions(people=False)
    found = analyse_shot(long_shot(range(2, 7)), times, o, keyframe_index=10)
    assert found.read[0] == 10 and 3 in found.read, found.read  # the first of three 6.7 s parts: its middle
    assert [t.text for t in found.texts] == ["Ada Lovelace, mathematician"]
    assert 2 <= found.texts[0].start <= 3  # widened to the frames that show it, not the keyframe's time
    off = analyse_shot(
        long_shot(range(2, 7)), times, VisionOptions(people=False, text_probe_every=0), keyframe_index=10
    )
    assert off.read == [10] and off.texts == []
    none = analyse_shot(long_shot(None), times, o, keyframe_index=10)
    assert none.read == [10, 3, 17] and none.texts == []  # one probe per part without a frame read
    still = [long_shot(None)[5]] * 21
    assert analyse_shot(still, times, o, keyframe_index=10).read == [10]
    short = analyse_shot(long_shot(range(0, 2), seconds=8), times[:8], o, keyframe_index=4)
    assert short.read == [4] and short.texts == []  # no longer than text_probe_every: the keyframe alone


def test_analyse_shot_says_how_to_fix_a_bad_call(slide) -> None:  # type: ignore[no-untyped-def]
    frame, _ = slide
    with pytest.raises(ValueError, match="one time per frame"):
        analyse_shot([frame], [0.0, 1.0])
    with pytest.raises(ValueError, match="RGB uint8"):
        analyse_shot([frame.astype(np.float32)], [0.0])
    with pytest.raises(ValueError, match="detect_frames must be >= 1"):
        VisionOptions(detect_frames=0)
    with pytest.raises(ValueError, match="text_frames must be >= 1"):
        VisionOptions(text_frames=0)
    with pytest.raises(ValueError, match="text_probe_every must be >= 0"):
        VisionOptions(text_probe_every=-1)
