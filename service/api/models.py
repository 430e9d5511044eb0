"""What goes in and comes out of the API, as pydantic models: `/openapi.json` is generated from them,
and every response is validated against its model before it leaves (`extra="forbid"`: a field the
model does not declare is a server error in the tests, not a silent drift of the documented shape).

The shapes are the library's own: a video is `Video.to_json()` plus the API's `media` and `page`
links, a moment `Moment.to_json()` plus its `link`, a job `service.jobs.job_json`, an answer
`Answer.to_json()` with a `link` on each citation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    """A response body: exactly the declared fields."""

    model_config = ConfigDict(extra="forbid")


# --- errors -------------------------------------------------------------------------------------------


class ErrorDetail(Out):
    status: int = Field(description="The HTTP status, repeated.")
    code: str = Field(description="Short and machine-readable: `not_found`, `bad_media`, `forbidden`, …")
    message: str = Field(description="What went wrong and, where it can, how to fix the call.")


class ErrorBody(Out):
    """Every failure's body, whatever the status."""

    error: ErrorDetail


# --- requests -----------------------------------------------------------------------------------------


class LibraryIn(BaseModel):
    name: str = Field(min_length=1, max_length=128, description="Letters, digits, space, `_`, `.`, `-`.")


class ImportIn(BaseModel):
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="A file inside one of the server's media roots, or (admin keys) an `s3://`, `https://` or `file://` URL under `VIDMEM_MEDIA_URL_ROOTS`.",
    )


class AskIn(BaseModel):
    question: str = Field(min_length=1, max_length=10_000)
    library: str | None = Field(None, max_length=128)
    video: str | None = Field(None, max_length=32)
    engine: Literal["auto", "local", "openai", "extractive"] | None = None
    evidence: int = Field(5, ge=1, le=20, description="Refined spans that may be read.")
    gists: int = Field(2, ge=0, le=5, description="Scene or chapter gists read before the spans.")
    exit_gate: bool = Field(
        True, description="Stop reading when the exit gate says what was read suffices (false: read all)."
    )
    mode: Literal["moments", "whole"] = Field(
        "moments",
        description="`moments`: answer from retrieved evidence; `whole`: read the whole `video` part by "
        "part with a bounded memory (GRU-Mem; needs an LLM engine).",
    )
    fallback: bool = Field(
        False,
        description="When the LLM's server cannot be reached, answer with the extractive engine "
        "(the answer's `fallback` says so) instead of failing with 503.",
    )


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    library: str | None = Field(
        None, max_length=128, description="The library the key may read; none: admin."
    )
    role: Literal["read", "write"] | None = Field(
        None, description="A library key's role: `read` (default) or `write` (also upload and delete)."
    )


class SessionIn(BaseModel):
    key: str = Field(min_length=1, max_length=256)


# --- the service and who calls it ---------------------------------------------------------------------


class Health(Out):
    status: Literal["ok"]


class LLMEndpoint(Out):
    url: str
    up: bool = Field(description="False while it is skipped after failures (a cool-down).")
    busy: int = Field(description="Requests in flight to it.")
    served: int = Field(description="Requests it answered.")
    failures: int = Field(description="Failures in a row.")
    last_error: str = ""


class Ready(Out):
    status: Literal["ready"]
    workers: int = Field(description="Ingestion worker processes running.")
    llm: list[LLMEndpoint] = Field(
        default_factory=list,
        description="The LLM servers (replicas) the answer engine has used, as it last saw them; "
        "empty before the first question. A replica down does not make the service unready.",
    )


class Me(Out):
    name: str
    library: str | None = Field(description="The key's one library; null for an admin key.")
    admin: bool
    role: Literal["admin", "read", "write"]


class NewKey(Out):
    key: str = Field(description="The secret: shown in this response only.")
    name: str
    library: str | None
    role: Literal["admin", "read", "write"]


class KeyInfo(Out):
    id: int
    name: str
    prefix: str = Field(description="The secret's first characters, to recognise it.")
    library: str | None
    role: Literal["admin", "read", "write"]
    source: str | None = Field(description="`configured` for the key VIDMEM_API_KEY registered.")
    revoked: bool
    created_at: str


# --- the catalog --------------------------------------------------------------------------------------


class LibraryOut(Out):
    name: str
    videos: int = Field(description="Videos it holds.")
    created_at: str = Field(description="ISO 8601, UTC.")


class VideoFacts(Out):
    """`Video.to_json()`: what the catalog knows of a video (seconds, pixels, bytes)."""

    id: str
    library: str
    title: str
    kind: Literal["video", "audio", "transcript"]
    status: Literal["pending", "ingesting", "ready", "failed"]
    duration: float
    fps: float | None
    width: int | None
    height: int | None
    language: str | None
    size_bytes: int
    identity: Literal["sha256", "s3-etag", "http-etag", "http-modified", "unknown"] = Field(
        description="How its content hash (the ingest key: the same content twice in a library is one "
        "video) was made: `sha256` of the bytes; for media in an object store, a sha256 of the "
        "object's ETag (`s3-etag`, `http-etag`) or Last-Modified (`http-modified`) and size; "
        "`unknown` for a URL ingested before the catalog recorded it."
    )
    created_at: str = Field(description="ISO 8601, UTC.")


class VideoOut(VideoFacts):
    """A video with the API's links: its media (byte ranges) and the page that plays it."""

    media: str = Field(description="`/v1/videos/ID/media`.")
    page: str = Field(description="`/videos/ID`, the editor's page.")


class JobOut(Out):
    id: str
    kind: Literal["ingest", "regate", "generate"] = Field(
        description="What it runs: `ingest` a file, `regate` the library's memory, or `generate` an edit "
        "(an insert rendered by a generation backend onto a timeline)."
    )
    library: str
    title: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    stage: str | None = Field(description="The stage running or last done (`render` for a generation).")
    progress: float = Field(ge=0, le=1)
    video_id: str | None
    error: str | None
    attempts: int
    owner: str | None = Field(
        default=None,
        description="While it runs: the worker running it, `host:pid` (`VIDMEM_NODE`), so an operator of "
        "several hosts sees where; a job whose host dies is taken over by another host's worker.",
    )
    created_at: str
    updated_at: str
    request: dict[str, Any] | None = Field(
        default=None, description="A generation's edit request, as sent (`POST /v1/edits`)."
    )
    result: dict[str, Any] | None = Field(
        default=None,
        description="A finished generation: `plan` (the request in frames: anchor snapped, duration on the "
        "backend's grid, prompt and where it came from), `artifact` (the rendered insert), `timeline` "
        "(frames, fps, where the insert lies), `files` (names under `/v1/jobs/{id}/files/`) and `preview`.",
    )


# --- timelines ----------------------------------------------------------------------------------------


class TagOut(Out):
    """A candidate of what a span shows, never a fact (below any measured precision)."""

    kind: str = Field(description="`label` (an ImageNet class), `face` or `person`.")
    name: str
    score: float = Field(
        description="The model's confidence (a label's probability 0-1; a face's or person's "
        "detector margin, unbounded); a scene's or chapter's: the highest of its shots'."
    )
    count: int = Field(description="The most seen on one frame (faces, people; 1 for a label).")
    shots: int = Field(ge=1, description="Shots that carry it: 1 for a shot's own tag.")


class Span(Out):
    start: float
    end: float
    caption: str | None
    tags: list[TagOut] = Field(
        description="Candidates (labels, faces, people), not facts: a shot's own, strongest first; a "
        "scene's or chapter's are its shots' merged (highest score, shots counted), at most 8."
    )


class Shot(Span):
    """A shot: the finest span, the one the vision stage looked at."""

    retained: bool | None = Field(
        description="Whether the library's memory keeps the shot: true while it stands in a live "
        "slot (its own, or the one it folded into); false when skipped or its slot was evicted; null "
        "when it was never gated (forgotten by `vidmem reindex --all`, or not gated yet)."
    )
    salience: float | None = Field(
        description="The memory's write-head score for the shot (0-1); null when never gated."
    )


class ScreenTextOut(Out):
    start: float
    end: float
    text: str
    box: list[float] | None = Field(description="`[x0, y0, x1, y1]` in fractions of the frame.")
    score: float


class Cue(Out):
    start: float
    end: float
    text: str


class Timeline(Out):
    """Flat lists in seconds."""

    video: VideoOut
    summary: str | None
    chapters: list[Span]
    scenes: list[Span]
    shots: list[Shot]
    screen_text: list[ScreenTextOut]
    transcript: list[Cue]


class SceneNode(Span):
    shots: list[Shot]
    screen_text: list[ScreenTextOut]
    transcript: list[Cue]


class ChapterNode(Span):
    scenes: list[SceneNode]


class Hierarchy(Out):
    """Chapters holding their scenes, scenes their shots, on-screen text and transcript."""

    format: Literal["vidmem.timeline/1"]
    video: VideoOut
    summary: str | None
    chapters: list[ChapterNode]


# --- search and answers -------------------------------------------------------------------------------


class OccurrenceOut(Out):
    """Another time the memory saw a moment: a unit it folded into the same slot."""

    video_id: str
    start: float = Field(description="Seconds.")
    end: float = Field(description="Seconds.")
    timestamp: str = Field(description="`start` as `HH:MM:SS`.")
    link: str = Field(description="`/videos/ID?t=SECONDS`, the page's deep link.")


class MomentOut(Out):
    """`Moment.to_json()` and the page's deep link."""

    video_id: str
    start: float = Field(description="Seconds.")
    end: float = Field(description="Seconds.")
    timestamp: str = Field(description="`start` as `HH:MM:SS`.")
    end_timestamp: str = Field(description="`end` as `HH:MM:SS`.")
    level: str = Field(description="The unit: window, cue, shot, scene, chapter, or span (refined).")
    kind: str = Field(description="The same as `level`.")
    score: float
    text: str
    also: list[OccurrenceOut] = Field(
        description="The other times the memory folded into this moment's slot (a repeat), each citable."
    )
    link: str = Field(description="`/videos/ID?t=SECONDS`, the page's deep link.")


class SearchOut(Out):
    query: str
    library: str | None = Field(description="The library searched; null: every library (admin).")
    video: str | None
    moments: list[MomentOut]


class CitationOut(Out):
    video_id: str
    start: float
    end: float
    timestamp: str
    link: str


class FallbackOut(Out):
    from_: str = Field(alias="from", description="The engine that was asked and did not answer.")
    reason: str

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class ToolUseOut(Out):
    name: str
    arguments: dict[str, object]
    added: int = Field(description="Moments it added to the evidence.")
    error: str = Field(
        "", description="Why the call could not run (sent back to the model); absent if it ran."
    )


class ReadItemOut(Out):
    role: Literal["gist", "span", "chunk"] = Field(
        description="`gist` and `span`: evidence read by the exit gate; `chunk`: a part of a whole "
        "video read with a bounded memory (`mode: whole`)."
    )
    kind: str = Field(description="The unit read: span, cue, window, shot, scene or chapter.")
    video_id: str
    start: float
    end: float
    timestamp: str = Field(description="`start` as HH:MM:SS.")
    tokens: int
    stop: float | None = Field(None, description="The exit gate's stop probability after this item.")
    update: bool | None = Field(None, description="A chunk: whether the model changed its memory.")
    exit: bool | None = Field(None, description="A chunk: whether the model stopped reading after it.")
    memory: str | None = Field(None, description="A chunk: the model's memory after it.")
    ignored: bool | None = Field(
        None, description="A chunk: the model asked to exit with an empty memory, and reading went on."
    )


class ExitOut(Out):
    reason: Literal["gate", "all read", "off", "model", "limit", "unusable reply"] = Field(
        description="`gate`: the stop head said what was read suffices; `all read`: no candidate left; "
        "`off`: the gate was off (asked, or no weights: then `note` says so); for `mode: whole`, "
        "`model`: the model's exit gate, `limit`: the chunk limit came first, `unusable reply`: a "
        "step's reply was not the JSON asked for (`note` says which)."
    )
    after: int = Field(description="Items read.")
    of: int = Field(description="Candidates there were.")
    threshold: float | None = None
    note: str = ""


class AnswerOut(Out):
    answer: str
    answerable: bool
    citations: list[CitationOut]
    engine: str = Field(description="The engine that wrote the answer: `llm:MODEL` or `extractive`.")
    fallback: FallbackOut | None = Field(description="Set when the engine asked for did not answer.")
    tools: list[ToolUseOut] = Field([], description="The tool calls made before answering; absent if none.")
    note: str = Field("", description="What else was degraded; absent if nothing.")
    read: list[ReadItemOut] = Field(
        [], description="The evidence read, in reading order (gists, then spans)."
    )
    tokens: int = Field(0, description="Evidence tokens read (the packaged text model's tokenizer).")
    exit: ExitOut | None = Field(None, description="Why reading stopped.")
    memory: str | None = Field(None, description="`mode: whole`: the model's memory when it stopped.")


# --- the memory ---------------------------------------------------------------------------------------


class SlotCounts(Out):
    live: int = Field(description="Slots the bank holds: what the search indexes keep.")
    merged: int = Field(description="Slots joined into a more salient one (their units followed).")
    nested: int = Field(
        description="Cue slots let go while a live window slot holds their words (still found through it)."
    )
    evicted: int = Field(description="Slots dropped as the least salient when the bank was full.")


class ActionCounts(Out):
    write: int = Field(description="Units that wrote a new slot.")
    fold: int = Field(description="Units the same as a slot's exemplar: an occurrence of it.")
    skip: int = Field(description="Units below `VIDMEM_MEMORY_SKIP_BELOW`.")


class RowCounts(Out):
    gated: int = Field(
        description="Embedding rows of the units the memory decides on (shots, windows, cues)."
    )
    retained: int = Field(description="Of those, the rows the search indexes hold.")
    retention: float = Field(ge=0, le=1, description="`retained / gated` (1.0 with none gated).")


class SlotOut(Out):
    """A live slot: its exemplar's place, and the units it stands for."""

    slot: int
    kind: Literal["shot", "window", "cue"]
    state: Literal["live", "merged", "nested", "evicted"]
    video_id: str = Field(description="The exemplar's video.")
    start: float = Field(description="The exemplar's start, seconds.")
    end: float = Field(description="Seconds.")
    timestamp: str = Field(description="`start` as `HH:MM:SS`.")
    salience: float
    occurrences: int = Field(description="Units folded into it, its exemplar included.")


class MemoryStatsOut(Out):
    """`memory.bank.stats`: a library's memory in numbers (the same as `vidmem memory stats --json`)."""

    slots: SlotCounts
    budget: int = Field(description="Slots the bank may hold now; 0 before any unit was gated.")
    units: int = Field(description="Units gated (shots, transcript windows, cues).")
    actions: dict[str, ActionCounts] = Field(description="Per unit kind (`shot`, `window`, `cue`).")
    rows: RowCounts
    largest: list[SlotOut] = Field(description="The live slots standing for the most units, at most 5.")


class DecisionSlotOut(Out):
    id: int
    state: Literal["live", "merged", "nested", "evicted"] = Field(description="The slot's state now.")
    video_id: str = Field(description="Its exemplar's video.")
    start: float = Field(description="Its exemplar's start, seconds.")
    timestamp: str = Field(description="`start` as `HH:MM:SS`.")
    exemplar: bool = Field(description="Whether this unit is the slot's exemplar (it wrote the slot).")
    into: int | None = Field(
        None, description="A nested slot: the window slot that holds its words (null otherwise)."
    )


class DecisionOut(Out):
    """What the memory did with one of a video's units, and why (`vidmem memory show --json`)."""

    kind: Literal["shot", "window", "cue"]
    start: float = Field(description="Seconds.")
    end: float = Field(description="Seconds.")
    timestamp: str = Field(description="`start` as `HH:MM:SS`.")
    action: Literal["write", "fold", "skip"]
    similarity: float = Field(
        description="Cosine with the nearest slot of its kind when it arrived (0: none)."
    )
    salience: float = Field(description="The write head's score (0-1).")
    slot: DecisionSlotOut | None = Field(description="The slot it wrote or folded into; null when skipped.")
