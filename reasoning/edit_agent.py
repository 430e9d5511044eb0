"""An editor's or agent's intent in plain words ("slow down the moment where they open the menu")
turned by the reasoning LLM into a checked edit request and a queued job.

The LLM does what it is good at and nothing it is bad at: vidmem finds the candidate moments
(hybrid search inside the video at the level of transcript cues, else shots: an edit wants a tight
moment, not the long refined span an answer reads), the model picks the operation, the moment,
where relative to it (before, after, over it), a length, and writes the prompt from what the moment
says — under a JSON schema (vLLM structured output), never free text with timestamps in it. The
times come from the moment it picked; the request is then checked like any other (anchor inside the
video and snapped to a shot boundary, duration on the backend's grid). A request that cannot be
honoured goes back to the model once with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from kernels.timecode import hms
from memory import Store
from memory.runtime.llm import LLM, LLMError
from memory.runtime.text import Embedder, SentenceEmbedder
from reasoning.generate.backends import CAPABILITIES
from reasoning.generate.request import POINT_OPERATIONS
from reasoning.search import SearchOptions, search
from reasoning.tools import Edits, ToolError, call_agent_tool

WHAT = {
    "title": "a title card with text, inserted before or after the moment",
    "freeze": "hold one frame of the moment still for a few seconds",
    "extend": "make the shot that ends the moment last longer",
    "generate": "new footage from the prompt, inserted before or after the moment",
    "bridge": "replace the moment with a transition from the frame before it to the frame after it",
    "retake": "regenerate the moment from the prompt",
    "slowmo": "play the moment in slow motion",
    "trim": "cut the moment out",
    "crossfade": "cut the moment out and dissolve across the join",
}
"""What each operation does, as the model is told (pip is left out: it needs a second moment)."""

SYSTEM = (
    "You turn a video editor's request into one edit. You are given the request and numbered moments "
    "of the video that match it, with their times, the best match first. Choose the moment the request "
    "is about (the one whose words match it), the operation, and "
    "where: before the moment, after it, or over it. Give a length in seconds for inserted material, and "
    "write a short visual prompt describing what the result shows, from the moment's content. For a "
    "title, also give its text. Operations:\n"
)


@dataclass
class IntentResult:
    """What became of one intent."""

    intent: str
    arguments: dict[str, Any] | None = None
    """The tool call vidmem built from the model's choice."""
    job: dict[str, Any] | None = None
    """The queued job (with its plan), when the request was valid."""
    error: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    choices: list[dict[str, Any]] = field(default_factory=list)
    """The model's replies, in order."""

    @property
    def valid(self) -> bool:
        return self.job is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "valid": self.valid,
            "arguments": self.arguments,
            "job": self.job,
            "error": self.error,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 3),
            "choices": self.choices,
        }


def schema(operations: list[str], moments: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {  # the moment first: what the request is about, then what to do to it
            "moment": {"type": "integer", "minimum": 1, "maximum": moments},
            "operation": {"type": "string", "enum": operations},
            "where": {"type": "string", "enum": ["before", "after", "over"]},
            "seconds": {"type": "number", "minimum": 0.5, "maximum": 8},
            "prompt": {"type": "string", "minLength": 3, "maxLength": 300},
            "text": {"type": "string", "maxLength": 80},
        },
        "required": ["moment", "operation", "where", "seconds", "prompt"],
    }


def arguments_for(
    choice: dict[str, Any], moments: list[Any], video_id: str, backend: str
) -> tuple[str, dict[str, Any]]:
    """The tool call a model's choice stands for (times from the moment it chose)."""
    m = moments[max(1, min(int(choice["moment"]), len(moments))) - 1]
    op = choice["operation"]
    prompt = str(choice.get("prompt") or "").strip()
    if op in POINT_OPERATIONS:
        at = m.end if choice.get("where") == "after" else m.start
        args: dict[str, Any] = {"video_id": video_id, "operation": op, "at": round(at, 3), "intent": prompt,
                                "duration": float(choice.get("seconds") or 2.0), "backend": backend}  # fmt: skip
        if op == "title":
            args["text"] = str(choice.get("text") or prompt)[:200]
        return "request_insert", args
    args = {"video_id": video_id, "operation": op, "start": round(m.start, 3), "end": round(m.end, 3),
            "intent": prompt, "backend": backend}  # fmt: skip
    if op == "crossfade":
        args["duration"] = min(float(choice.get("seconds") or 1.0), 2.0)
    return "request_edit", args


def request_from_intent(
    store: Store,
    llm: LLM,
    intent: str,
    video_id: str,
    edits: Edits,
    library: str | None = None,
    backend: str = "ffmpeg",
    backend_options: dict[str, dict[str, Any]] | None = None,
    embedder: Embedder | None = None,
    top: int = 4,
) -> IntentResult:
    """Find where `intent` applies in the video, let `llm` choose the edit, check it and queue it."""
    t0 = time.perf_counter()
    result = IntentResult(intent)
    embedder = embedder or SentenceEmbedder()
    moments = search(store, intent, library, video_id, SearchOptions(top=top, level="cue"), embedder)
    if not moments:  # no transcript: the shots' captions and tags
        moments = search(store, intent, library, video_id, SearchOptions(top=top, level="shot"), embedder)
    if not moments:
        result.error = "nothing in the video matches the request"
        result.seconds = time.perf_counter() - t0
        return result
    operations = [op for op in WHAT if op in CAPABILITIES.get(backend, {}).get("operations", set())]
    listing = "\n".join(
        f"[{i}] {hms(m.start)}-{hms(m.end)}: {m.text[:300]}" for i, m in enumerate(moments, 1)
    )
    messages: list[dict[str, str]] = [
        {"role": "system", "content": SYSTEM + "\n".join(f"- {op}: {WHAT[op]}" for op in operations)},
        {"role": "user", "content": f"Request: {intent}\n\nMoments:\n{listing}"},
    ]
    for attempt in (1, 2):
        result.attempts = attempt
        try:
            choice = llm.chat_json(messages, schema(operations, len(moments)), max_tokens=160)  # type: ignore[arg-type]
        except LLMError as e:
            result.error = f"the model gave no usable choice: {e}"
            break
        result.choices.append(choice)
        name, args = arguments_for(choice, moments, video_id, backend)
        result.arguments = args
        try:
            result.job = call_agent_tool(store, name, args, library, edits, backend_options, embedder)
            result.error = None
            break
        except ToolError as e:
            result.error = str(e)
            messages += [
                {"role": "assistant", "content": str(choice)},
                {"role": "user", "content": f"That edit cannot be made: {e}. Choose again."},
            ]
    result.seconds = time.perf_counter() - t0
    return result
