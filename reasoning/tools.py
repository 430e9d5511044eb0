"""The tools an agent (or the answer loop) calls: search moments, read the context around one, and
request an insert or an edit and follow its job.

`TOOLS` holds the reading tools' OpenAI-format definitions (JSON Schema parameters) — what the answer
loop offers an LLM; `AGENT_TOOLS` adds `request_insert`, `request_edit` and `job_status` — what an
agent gets over the API, LangChain and MCP. `call_tool` runs a reading tool, `call_agent_tool` any of
them, returning JSON. The same functions back every surface, so an agent sees one behaviour
everywhere. Edits go through an `Edits` (the service's job queue), which this package cannot import.

A call that cannot run (an unknown tool, missing or mistyped arguments, a video that does not exist
or is outside the caller's scope, a span that is reversed or past the video's end) raises `ToolError`,
whose message is written for the caller to correct its call: the answer loop hands it back to the
model as the tool's result instead of failing the question.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from sqlalchemy import select

from kernels.timecode import hms
from memory import Store, TranscriptCue
from memory.runtime.text import Embedder, SentenceEmbedder
from reasoning.retrieve import RetrieveOptions, retrieve
from reasoning.search import Moment

MAX_TOP = 20
MAX_CONTEXT_SECONDS = 600.0


class ToolError(ValueError):
    """A tool call that cannot run, said so that the caller (often a model) can correct it."""


TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search_moments",
            "description": "Find the moments of the videos that answer a query, with their time spans.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for, in plain language."},
                    "video_id": {"type": "string", "description": "Search inside this video only."},
                    "top": {"type": "integer", "minimum": 1, "maximum": MAX_TOP, "description": "Moments."},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_context",
            "description": "Read what is said in a video between two times (seconds), with timestamps.",
            "parameters": {
                "type": "object",
                "properties": {
                    "video_id": {"type": "string"},
                    "start": {"type": "number", "minimum": 0, "description": "Seconds."},
                    "end": {"type": "number", "minimum": 0, "description": "Seconds."},
                },
                "required": ["video_id", "start", "end"],
            },
        },
    },
]


POINT = ["generate", "extend", "title", "freeze"]
SPAN = ["bridge", "retake", "slowmo", "pip", "trim", "crossfade"]
_COMMON: dict[str, Any] = {
    "video_id": {"type": "string"},
    "duration": {
        "type": "number",
        "exclusiveMinimum": 0,
        "description": "Seconds of the result (snapped to the backend's frame grid).",
    },
    "intent": {
        "type": "string",
        "description": "What the result should show, in plain words (the prompt); empty: written from the scenes around.",
    },
    "seed": {"type": "integer", "minimum": 0},
    "backend": {
        "type": "string",
        "description": "ffmpeg (renders without a model), diffusers or http (a video model).",
    },
}

EDIT_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "request_insert",
            "description": "Insert new material at a time of a video (snapped to the nearest shot boundary): generate "
            "(from a prompt), extend (continue the shot that ends there), title (a title card), freeze (hold the "
            "frame). Returns the job that renders it onto a timeline.",
            "parameters": {
                "type": "object",
                "properties": {
                    **_COMMON,
                    "operation": {"type": "string", "enum": POINT},
                    "at": {"type": "number", "minimum": 0, "description": "Seconds."},
                    "text": {"type": "string", "description": "A title card's text."},
                },
                "required": ["video_id", "operation", "at"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "request_edit",
            "description": "Change a span of a video: bridge (a transition from the frame before to the frame after), "
            "retake (regenerate it from a prompt), slowmo, pip (inset another moment), trim (cut it out), crossfade "
            "(cut it out and dissolve the join). Returns the job that renders it onto a timeline.",
            "parameters": {
                "type": "object",
                "properties": {
                    **_COMMON,
                    "operation": {"type": "string", "enum": SPAN},
                    "start": {"type": "number", "minimum": 0, "description": "Seconds."},
                    "end": {"type": "number", "minimum": 0, "description": "Seconds."},
                    "speed": {
                        "type": "number",
                        "exclusiveMinimum": 0.05,
                        "exclusiveMaximum": 1,
                        "description": "slowmo: playback speed.",
                    },
                    "overlay_video_id": {
                        "type": "string",
                        "description": "pip: the video to inset (default: this one).",
                    },
                    "overlay_start": {"type": "number", "minimum": 0, "description": "pip: seconds into it."},
                },
                "required": ["video_id", "operation", "start", "end"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "job_status",
            "description": "The status and progress of a job; when a generation is done, its timeline and files.",
            "parameters": {
                "type": "object",
                "properties": {"job_id": {"type": "string"}},
                "required": ["job_id"],
            },
        },
    },
]
AGENT_TOOLS: list[dict[str, Any]] = [*TOOLS, *EDIT_TOOLS]


class Edits(Protocol):
    """Where checked edit requests go, and where their jobs are read (the service's job queue)."""

    def submit(self, request: Any, plan: Any) -> dict[str, Any]:
        """Queue `request` (checked: `plan`); the job as JSON."""
        ...

    def status(self, job_id: str) -> dict[str, Any]:
        """The job as JSON; `ToolError` if there is none the caller may read."""
        ...


def search_moments(
    store: Store,
    query: str,
    library: str | None = "default",
    video_id: str | None = None,
    top: int = 5,
    embedder: Embedder | None = None,
) -> list[Moment]:
    """The best moments for `query`, their spans cut to the answer."""
    top = max(1, min(int(top), MAX_TOP))
    return retrieve(store, query, library, video_id, RetrieveOptions(top=top), embedder or SentenceEmbedder())


def read_context(store: Store, video_id: str, start: float, end: float, library: str | None = None) -> Moment:
    """The transcript of one video between `start` and `end` (at most 10 minutes), one moment whose
    text carries each cue's `HH:MM:SS`. With `library`, a video of another library is refused as if it
    did not exist. `ToolError` for an unknown video, a reversed span or one that starts past the end."""
    start, end = max(0.0, float(start)), float(end)
    if end <= start:
        raise ToolError(f"end ({end:g} s) must be after start ({start:g} s)")
    end = min(end, start + MAX_CONTEXT_SECONDS)
    with store.session() as s:
        video = store.video_in(s, video_id, library)
        if video is None:
            where = f" in library {library!r}" if library is not None else ""
            raise ToolError(
                f"no video with id {video_id!r}{where}; use a video_id from the evidence or from search_moments"
            )
        if video.duration and start >= video.duration:
            raise ToolError(
                f"video {video_id} is {hms(video.duration)} ({video.duration:g} s) long; "
                f"start ({start:g} s) is past its end"
            )
        cues = s.scalars(
            select(TranscriptCue)
            .where(TranscriptCue.video_id == video_id, TranscriptCue.end > start, TranscriptCue.start < end)
            .order_by(TranscriptCue.start)
        ).all()
        text = " ".join(f"[{hms(c.start)}] {c.text}" for c in cues)
        first = cues[0].start if cues else start
        last = cues[-1].end if cues else end
    return Moment(video_id, first, last, 0.0, text, "context")


def call_tool(
    store: Store,
    name: str,
    arguments: dict[str, Any],
    library: str | None = "default",
    video_id: str | None = None,
    embedder: Embedder | None = None,
) -> list[Moment]:
    """Run a tool of `TOOLS` by name. `library`/`video_id` bound the scope: a tool call cannot read
    outside what the caller may read. `ToolError` for a call that cannot run."""
    if not isinstance(arguments, dict):
        raise ToolError(f"{name}: arguments must be a JSON object, got {arguments!r}")
    if name == "search_moments":
        query = _argument(name, arguments, "query", str)
        if not query.strip():
            raise ToolError("search_moments: query is empty; say what to look for")
        within = arguments.get("video_id")
        if within is not None and not isinstance(within, str):
            raise ToolError(f"search_moments: video_id must be a string, got {within!r}")
        if video_id is not None and within not in (None, video_id):
            raise ToolError(f"search_moments: video {within!r} is outside the scope of this question")
        top = arguments.get("top", 5)
        if isinstance(top, bool) or not isinstance(top, int | float):
            raise ToolError(f"search_moments: top must be an integer from 1 to {MAX_TOP}, got {top!r}")
        if within is not None:
            read_context(store, within, 0.0, 1.0, library)  # the same "no such video" as read_context
        return search_moments(store, query, library, video_id or within, int(top), embedder)
    if name == "read_context":
        vid = _argument(name, arguments, "video_id", str)
        start = _argument(name, arguments, "start", float)
        end = _argument(name, arguments, "end", float)
        if video_id is not None and vid != video_id:
            raise ToolError(f"read_context: video {vid!r} is outside the scope of this question")
        return [read_context(store, vid, start, end, library)]
    raise ToolError(f"unknown tool {name!r}; choose one of {', '.join(t['function']['name'] for t in TOOLS)}")


def _argument(tool: str, arguments: dict[str, Any], key: str, kind: type) -> Any:
    """`arguments[key]` as `kind` (a number for float), or a `ToolError` naming the tool and key."""
    if key not in arguments:
        raise ToolError(f"{tool}: the argument {key!r} is missing")
    value = arguments[key]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ToolError(f"{tool}: {key} must be a number of seconds, got {value!r}")
        return float(value)
    if not isinstance(value, kind):
        raise ToolError(f"{tool}: {key} must be a {kind.__name__}, got {value!r}")
    return value


def edit_request(name: str, arguments: dict[str, Any]) -> Any:
    """The `EditRequest` a `request_insert` / `request_edit` call asks for; `ToolError` if malformed."""
    from pydantic import ValidationError

    from reasoning.generate import EditRequest

    allowed = POINT if name == "request_insert" else SPAN
    operation = arguments.get("operation")
    if operation not in allowed:
        raise ToolError(f"{name}: operation must be one of {', '.join(allowed)}, got {operation!r}")
    fields: dict[str, Any] = {
        "video_id": _argument(name, arguments, "video_id", str),
        "operation": operation,
        "prompt": arguments.get("intent") or "",
    }
    if name == "request_insert":
        fields["anchor"] = _argument(name, arguments, "at", float)
    else:
        fields["anchor"] = (
            _argument(name, arguments, "start", float),
            _argument(name, arguments, "end", float),
        )
    for key in ("duration", "seed", "backend", "text", "speed"):
        if arguments.get(key) is not None:
            fields[key] = arguments[key]
    if operation == "pip":
        fields["overlay"] = {
            "video_id": arguments.get("overlay_video_id"),
            "start": arguments.get("overlay_start", 0.0),
        }
    try:
        return EditRequest.model_validate(fields)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ToolError(f"{name}: {where + ': ' if where else ''}{first['msg']}") from None


def call_agent_tool(
    store: Store,
    name: str,
    arguments: dict[str, Any],
    library: str | None,
    edits: Edits | None,
    backend_options: dict[str, dict[str, Any]] | None = None,
    embedder: Embedder | None = None,
) -> Any:
    """Run any tool of `AGENT_TOOLS` by name; JSON out. A request is checked here (anchor inside the
    video and snapped, duration on the backend's grid, an operation the backend can do) and only
    then submitted: a `ToolError` says why it cannot be, and nothing is queued."""
    if not isinstance(arguments, dict):
        raise ToolError(f"{name}: arguments must be a JSON object, got {arguments!r}")
    if name in ("search_moments", "read_context"):
        return [m.to_json() for m in call_tool(store, name, arguments, library, None, embedder)]
    if edits is None:
        raise ToolError(f"{name}: edits are not available here (no job queue)")
    if name == "job_status":
        return edits.status(_argument(name, arguments, "job_id", str))
    if name in ("request_insert", "request_edit"):
        from reasoning.generate import RequestError, prepare

        request = edit_request(name, arguments)
        try:
            plan, _ = prepare(store, request, library, backend_options)
        except RequestError as e:
            raise ToolError(f"{name}: {e}") from None
        return edits.submit(request, plan)
    raise ToolError(
        f"unknown tool {name!r}; choose one of {', '.join(t['function']['name'] for t in AGENT_TOOLS)}"
    )
