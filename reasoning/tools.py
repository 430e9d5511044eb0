"""The tools an agent (or the answer loop) calls: search moments, read the context around one.

`TOOLS` holds their OpenAI-format definitions (JSON Schema parameters) — what an LLM is offered and
what the REST API and LangChain expose; `call_tool` runs one by name on validated arguments. The
same two functions back all of them, so an agent sees one behaviour everywhere.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from kernels.timecode import hms
from memory import Store, StoreError, TranscriptCue
from memory.encoders import Embedder, SentenceEmbedder
from reasoning.retrieve import RetrieveOptions, retrieve
from reasoning.search import Moment

MAX_TOP = 20
MAX_CONTEXT_SECONDS = 600.0

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
    text carries each cue's `HH:MM:SS`. With `library`, a video of another library is refused."""
    start, end = max(0.0, float(start)), float(end)
    if end <= start:
        raise ValueError(f"end ({end} s) must be after start ({start} s)")
    end = min(end, start + MAX_CONTEXT_SECONDS)
    with store.session() as s:
        video = store.get_video(s, video_id)
        if library is not None and video.library.name != library:
            raise StoreError(f"no video with id {video_id!r} in library {library!r}")
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
    outside what the caller may read."""
    if name == "search_moments":
        return search_moments(
            store,
            str(arguments["query"]),
            library,
            video_id or arguments.get("video_id"),
            int(arguments.get("top", 5)),
            embedder,
        )
    if name == "read_context":
        vid = str(arguments["video_id"])
        if video_id is not None and vid != video_id:
            raise ValueError(f"read_context: video {vid!r} is outside the scope of this question")
        return [read_context(store, vid, float(arguments["start"]), float(arguments["end"]), library)]
    raise ValueError(f"unknown tool {name!r}; tools: {', '.join(t['function']['name'] for t in TOOLS)}")
