"""What an agent or an editor asks for: an insert or an edit of one video, and the plan it resolves to.

`EditRequest` is the request as a caller writes it (pydantic: its JSON schema is what the tools and
the API offer). `plan_edit` checks it against the video and the chosen backend and resolves it to a
`Plan` in frames: the anchor snapped to the nearest shot boundary (a `[start, end]` to replace snaps
to a boundary within `SNAP_SPAN_SECONDS`, else to the nearest frame), the duration snapped to the
backend's frame grid, the conditioning frames placed. Anything it cannot honour is a `RequestError`
whose message says how to fix the call, and no job is made.

Operations, and the anchor each takes:

| operation | anchor | what lands on the timeline |
|---|---|---|
| `generate` | a time | new footage from the prompt, inserted there |
| `extend` | a time | the shot ending there, continued for `duration` |
| `title` | a time | a title card (`text`, else the prompt) |
| `freeze` | a time | the frame there, held for `duration` |
| `bridge` | `[start, end]` | the span replaced by a transition from the frame before it to the frame after it |
| `retake` | `[start, end]` | the span regenerated from the prompt (optionally inside `mask` only) |
| `slowmo` | `[start, end]` | the span played at `speed` (< 1), motion-interpolated |
| `pip` | `[start, end]` | the span with `overlay` (another moment) inset in a corner |
| `trim` | `[start, end]` | the span cut out |
| `crossfade` | `[start, end]` | the span cut out and the join dissolved over `duration` |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kernels.timecode import hms

Operation = Literal[
    "generate", "extend", "bridge", "retake", "title", "freeze", "slowmo", "pip", "trim", "crossfade"
]
OPERATIONS: tuple[str, ...] = Operation.__args__  # type: ignore[attr-defined]
POINT_OPERATIONS = frozenset({"generate", "extend", "title", "freeze"})
"""Operations anchored at one time (an insertion); the others replace a `[start, end]`."""

SNAP_SPAN_SECONDS = 0.5
"""A `[start, end]` end moves to a shot boundary this close; else it stays on its nearest frame."""

DEFAULT_SECONDS = {"generate": 3.0, "extend": 2.0, "title": 2.0, "freeze": 2.0, "crossfade": 1.0}


class RequestError(ValueError):
    """A request that cannot be honoured, said so that the caller (often a model) can fix it."""


class Condition(BaseModel):
    """A frame of the video that conditions the result (LTX's condition items; the ffmpeg backend's
    bridge and extension start or end on theirs)."""

    model_config = ConfigDict(extra="forbid")
    time: float = Field(ge=0, description="Where the frame is in the video, seconds (snapped to a frame).")
    position: int = Field(
        default=0, description="Which frame of the result it becomes: 0 the first, -1 the last."
    )
    strength: float = Field(default=1.0, ge=0, le=1, description="1 = that exact frame; lower = a hint.")


class Mask(BaseModel):
    """The region to regenerate (everything outside it is kept): a box in fractions of the frame."""

    model_config = ConfigDict(extra="forbid")
    x: float = Field(ge=0, le=1)
    y: float = Field(ge=0, le=1)
    width: float = Field(gt=0, le=1)
    height: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _inside(self) -> Mask:
        if self.x + self.width > 1 + 1e-9 or self.y + self.height > 1 + 1e-9:
            raise ValueError("the mask box must lie inside the frame (x + width <= 1, y + height <= 1)")
        return self


class Overlay(BaseModel):
    """What `pip` insets: a moment of a video (this one or another of the library)."""

    model_config = ConfigDict(extra="forbid")
    video_id: str | None = Field(default=None, max_length=64, description="None: the edited video.")
    start: float = Field(ge=0, description="Seconds into the overlay's video.")
    corner: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = "top-right"
    scale: float = Field(default=0.3, gt=0.05, le=0.8, description="Its width, as a share of the frame's.")


class EditRequest(BaseModel):
    """An insert or edit of one video. Times are seconds from the start of the media."""

    model_config = ConfigDict(extra="forbid")
    video_id: str = Field(max_length=64)
    operation: Operation
    anchor: float | tuple[float, float] = Field(
        description="A time (generate, extend, title, freeze: snapped to the nearest shot boundary) or "
        "a [start, end] to replace (the other operations)."
    )
    duration: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="Seconds of the result (snapped to the backend's frame grid). Default: 2-3 s for an "
        "insertion, the span itself for a replacement (slowmo: the span / speed), 1 s for a crossfade.",
    )
    prompt: str = Field(
        default="", max_length=4000, description="What to show (written from the scenes around when empty)."
    )
    negative_prompt: str = Field(default="", max_length=2000)
    text: str | None = Field(
        default=None, max_length=200, description="A title card's text (else the prompt)."
    )
    conditions: list[Condition] = Field(default_factory=list, max_length=8)
    mask: Mask | None = None
    audio: Literal["keep", "silence", "generate"] = Field(
        default="keep",
        description="keep: the source's sound where the edit keeps source time, silence elsewhere; "
        "silence; generate (backends that can).",
    )
    speed: float = Field(default=0.5, gt=0.05, lt=1, description="slowmo: the playback speed.")
    overlay: Overlay | None = None
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    backend: str = Field(default="ffmpeg", max_length=64)

    @model_validator(mode="after")
    def _anchor(self) -> EditRequest:
        point = self.operation in POINT_OPERATIONS
        if point and not isinstance(self.anchor, float | int):
            raise ValueError(f"{self.operation} takes one time as its anchor (seconds), not a [start, end]")
        if not point and isinstance(self.anchor, float | int):
            raise ValueError(f"{self.operation} takes a [start, end] anchor (seconds), not one time")
        times: list[float] = (
            [float(self.anchor)] if isinstance(self.anchor, float | int) else list(self.anchor)
        )
        if any(not math.isfinite(t) or t < 0 for t in times):
            raise ValueError("anchor times must be finite seconds >= 0")
        if not point and times[1] <= times[0]:
            raise ValueError(f"the anchor's end ({times[1]:g} s) must be after its start ({times[0]:g} s)")
        if self.operation == "pip" and self.overlay is None:
            raise ValueError("pip needs an overlay: {video_id, start} of the moment to inset")
        if self.operation == "title" and not (self.text or self.prompt).strip():
            raise ValueError("a title needs its text (text, or the prompt)")
        return self


@dataclass(frozen=True)
class Source:
    """The edited video as the plan needs it."""

    video_id: str
    path: str
    """What ffmpeg opens: the file, or for media by URL what the caller's opener gave (an https URL;
    for `s3://`, a pre-signed one). Never shown to users: it may carry a signature."""
    duration: float
    fps: float
    width: int
    height: int
    boundaries: tuple[float, ...]
    """Shot starts and the end, seconds, ascending."""
    library: str = ""
    uri: str = ""
    """The media as the catalog names it (`Video.uri`): the file's path or its URL (`path` if empty)."""
    options: tuple[str, ...] = ()
    """ffmpeg input options the media needs (a remote one: network protocols only, a read timeout)."""

    @property
    def remote(self) -> bool:
        return "://" in (self.uri or self.path)

    @property
    def name(self) -> str:
        """The media's file name (the last part of its path or URL)."""
        return (self.uri or self.path).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]

    def inputs(self) -> list[str]:
        """ffmpeg's arguments that open it: its options, then `-i`. RequestError for media by URL
        that was planned without being opened (`prepare(..., media=)`)."""
        if not self.path:
            raise RequestError(f"the media of {self.video_id} is at a URL that was not opened for reading")
        return [*self.options, "-i", self.path]


@dataclass(frozen=True)
class FrameGrid:
    """Frame counts a backend can make: `multiple * k + offset` for k >= 0, within [least, most]."""

    multiple: int = 1
    offset: int = 0
    least: int = 1
    most: int = 3600 * 30

    def snap(self, frames: float) -> int:
        """The valid count nearest `frames` (ties up), clamped to [least, most]."""
        k = max(0, round((frames - self.offset) / self.multiple + 1e-9))
        n = self.multiple * k + self.offset
        lo = self.least + (-(self.least - self.offset) % self.multiple)
        hi = self.most - ((self.most - self.offset) % self.multiple)
        return min(max(n, lo), hi)

    def describe(self) -> str:
        form = "any number of frames" if self.multiple == 1 else f"{self.multiple}k+{self.offset} frames"
        return f"{form}, {self.least} to {self.most}"


@dataclass(frozen=True)
class PlacedCondition:
    frame: int
    """Frame index in the source video."""
    position: int
    """Frame index in the result (>= 0)."""
    strength: float


@dataclass
class Plan:
    """A request resolved against its video and backend, in frames of the result's rate."""

    request: EditRequest
    source: Source
    fps: float
    """The result's frame rate (the source's, unless the backend has its own)."""
    start: int
    """Source frame where the edit begins (the insert's in-point on the timeline)."""
    end: int
    """Source frame where the source resumes (== start for an insertion)."""
    frames: int
    """Frames the backend renders (0: nothing to render, a trim)."""
    prompt: str
    prompt_source: Literal["caller", "scenes", "none"]
    conditions: list[PlacedCondition] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What was snapped or chosen, in words (shown with the job)."""
    overlay: Source | None = None
    """pip: the video the overlay comes from."""

    @property
    def operation(self) -> str:
        return self.request.operation

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    @property
    def timeline_frames(self) -> int:
        """Frames the piece has on the timeline, at the source's rate (what a backend delivers: a
        model rendering 8k+1 frames at 24 fps for a 30 fps video is conformed to 30 fps)."""
        return self.frames if self.fps == self.source.fps else round(self.frames * self.source.fps / self.fps)

    def to_json(self) -> dict[str, Any]:
        fps = self.source.fps
        return {
            "operation": self.operation,
            "video_id": self.source.video_id,
            "start": round(self.start / fps, 4),
            "end": round(self.end / fps, 4),
            "start_hms": hms(self.start / fps, millis=True),
            "end_hms": hms(self.end / fps, millis=True),
            "frames": self.frames,
            "fps": self.fps,
            "timeline_frames": self.timeline_frames,
            "seconds": round(self.seconds, 4),
            "prompt": self.prompt,
            "prompt_source": self.prompt_source,
            "conditions": [c.__dict__ for c in self.conditions],
            "notes": self.notes,
        }


def nearest(values: tuple[float, ...], t: float) -> float:
    return min(values, key=lambda b: (abs(b - t), b))


def plan_edit(
    request: EditRequest,
    source: Source,
    grid: FrameGrid,
    fps: float | None,
    context: str = "",
    overlay: Source | None = None,
) -> Plan:
    """`request` in frames against `source`, for a backend with `grid` and frame rate `fps` (None:
    the source's). `context`: what the scenes around say, the prompt when the caller gave none;
    `overlay`: pip's overlay video. `RequestError` for what cannot be honoured."""
    src_fps = source.fps
    last = max(1, int(round(source.duration * src_fps)))  # frames in the source
    notes: list[str] = []
    where = f"video {source.video_id} is {hms(source.duration)} ({source.duration:g} s) long"
    if isinstance(request.anchor, tuple):
        a, b = request.anchor
        if a >= source.duration:
            raise RequestError(f"{where}; the anchor's start ({a:g} s) is past its end")
        b = min(b, source.duration)
        start, end = _snap_span(a, source, notes), _snap_span(b, source, notes)
        if end <= start:
            raise RequestError(
                f"the anchor [{a:g}, {b:g}] s is shorter than one frame once snapped; widen it"
            )
    else:
        t = float(request.anchor)
        if t > source.duration:
            raise RequestError(f"{where}; the anchor ({t:g} s) is past its end")
        snapped = nearest(source.boundaries or (0.0, source.duration), t)
        start = end = min(last, int(round(snapped * src_fps)))
        if abs(snapped - t) > 0.5 / src_fps:
            notes.append(
                f"anchor {hms(t, millis=True)} snapped to the shot boundary at {hms(snapped, millis=True)}"
            )
    op = request.operation
    out_fps = float(fps or src_fps)
    if op == "trim":
        frames = 0
    else:
        if request.duration is not None:
            seconds = request.duration
        elif op in DEFAULT_SECONDS:
            seconds = DEFAULT_SECONDS[op]
        elif op == "slowmo":
            seconds = (end - start) / src_fps / request.speed
        else:
            seconds = (end - start) / src_fps
        wanted = seconds * out_fps
        frames = grid.snap(wanted)
        if wanted < grid.least - 0.5 or wanted > grid.most + 0.5:
            raise RequestError(
                f"duration {seconds:g} s is {wanted:.0f} frames at {out_fps:g} fps; this backend makes "
                f"{grid.describe()} ({grid.least / out_fps:.2f} to {grid.most / out_fps:.2f} s)"
            )
        if abs(frames - wanted) >= 0.5:
            notes.append(
                f"duration {seconds:g} s snapped to {frames} frames ({frames / out_fps:.3f} s) on the backend's grid"
            )
    if op == "crossfade":
        half = frames // 2
        if start - half < 0 or end + (frames - half) > last:
            raise RequestError(
                f"a {frames}-frame crossfade needs {half} frames before {hms(start / src_fps)} and "
                f"{frames - half} after {hms(end / src_fps)}; shorten it or move the cut"
            )
    if op == "slowmo":
        notes.append(f"played at {(end - start) / src_fps / max(frames / out_fps, 1e-9):.3f}x")
    conditions = _conditions(request, source, start, end, frames, last)
    prompt = request.prompt.strip()
    prompt_source: Literal["caller", "scenes", "none"] = "caller"
    if not prompt:
        prompt, prompt_source = (context.strip(), "scenes") if context.strip() else ("", "none")
    if op in ("generate", "retake") and not prompt:
        raise RequestError(
            f"{op} needs a prompt, and the scenes around {hms(start / src_fps)} say nothing to write one from"
        )
    if request.overlay is not None and request.operation == "pip":
        if overlay is None:
            raise RequestError(f"pip: no video with id {request.overlay.video_id!r} to take the overlay from")
        if request.overlay.start >= overlay.duration:
            raise RequestError(
                f"pip: the overlay's start ({request.overlay.start:g} s) is past the end of video "
                f"{overlay.video_id} ({overlay.duration:g} s)"
            )
    return Plan(
        request, source, out_fps, start, end, frames, prompt, prompt_source, conditions, notes, overlay
    )


def _snap_span(t: float, source: Source, notes: list[str]) -> int:
    b = nearest(source.boundaries or (0.0, source.duration), t)
    if abs(b - t) <= SNAP_SPAN_SECONDS:
        if abs(b - t) > 0.5 / source.fps:
            notes.append(f"{hms(t, millis=True)} snapped to the shot boundary at {hms(b, millis=True)}")
        t = b
    return min(int(round(t * source.fps)), max(1, int(round(source.duration * source.fps))))


def _conditions(
    request: EditRequest, source: Source, start: int, end: int, frames: int, last: int
) -> list[PlacedCondition]:
    """The caller's conditions, else the operation's own: an extension starts on the frame before its
    anchor, a bridge runs from the frame before its span to the frame after it, a retake is held to
    both ends."""
    out: list[PlacedCondition] = []
    for c in request.conditions:
        frame = int(round(c.time * source.fps))
        if frame >= last:
            raise RequestError(f"condition at {c.time:g} s is past the video's end ({source.duration:g} s)")
        position = c.position if c.position >= 0 else frames + c.position
        if frames and not 0 <= position < frames:
            raise RequestError(f"condition position {c.position} is outside the result's {frames} frames")
        out.append(PlacedCondition(frame, position, c.strength))
    if out or frames == 0:
        return out
    op = request.operation
    before, after = max(0, start - 1), min(last - 1, end)
    if op == "extend":
        out.append(PlacedCondition(before, 0, 1.0))
    elif op in ("bridge", "retake"):
        out += [PlacedCondition(before, 0, 1.0), PlacedCondition(after, frames - 1, 1.0)]
    return out
