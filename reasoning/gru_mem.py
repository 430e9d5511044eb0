"""GRU-Mem with an LLM: read a whole recording chunk by chunk with a bounded text memory.

For questions about a whole recording that no single moment answers ("how does their argument
change over the talk?"). As in GRU-Mem ("When to Memorize and When to Stop", arXiv 2602.10560), the
model reads the recording in order, one chunk at a time, keeping a short text memory, and decides
per chunk under a JSON schema (vLLM structured output; the local engine checks the same schema):

    {"update": bool, "memory": str, "exit": bool}

- **update gate**: `update` false keeps the memory as it was (the chunk adds nothing the question
  needs); true replaces it with `memory`, at most `memory_chars` characters, its notes marked with
  the `[HH:MM:SS]` of what they come from;
- **exit gate**: `exit` true ends reading: the memory already answers the question. An exit with
  an empty memory cannot be right (nothing was kept to answer from): it is not followed, and the
  step says so (`ignored`). Small models otherwise stop at an opening "welcome back".

The chunks are the video's chapters, a chapter longer than `chunk_tokens` split at its transcript
lines, each given as its lines with their times. After an exit or the last chunk, one more call
answers from the memory under the answer schema (reasoning.answer), citing the numbers of the chunks
read; citations are checked like any answer's, so they point at chunks that were read.
GRU-Mem fits its gates with RL; here the model is prompted (no training): its decisions are the
served model's own, and `Answer.reading` reports every one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from kernels.timecode import hms
from memory import Segment, Store, StoreError, TranscriptCue, Video
from memory.runtime.llm import LLM, LLMError, LLMUnavailable
from memory.runtime.text import token_counts
from reasoning.answer import NOT_FOUND, Answer, Evidence, answer_schema, check

STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "update": {"type": "boolean"},
        "memory": {"type": "string", "maxLength": 600},
        "exit": {"type": "boolean"},
    },
    "required": ["update", "memory", "exit"],
}
"""One reading step's reply; `memory`'s bound is set per request (`step_schema`)."""

SYSTEM = (
    "You read a video's transcript one part at a time to answer a question about the whole video. "
    "You keep a short memory of notes. For each part, reply with JSON: update (true if this part "
    "holds something the question needs), memory (your notes after this part: what the question "
    "needs so far, each note starting with the [HH:MM:SS] time it comes from; keep it short), and "
    "exit (true only when your memory already answers the question fully and later parts cannot "
    "change the answer)."
)

ANSWER_SYSTEM = (
    "You answer a question about a video from your notes, taken while reading it part by part. "
    "Cite the numbers of the parts your answer rests on. If the notes do not contain the answer, set "
    "answerable to false and say so; never guess. Answer in one to four sentences."
)


def step_schema(memory_chars: int) -> dict[str, Any]:
    memory = {"type": "string", "maxLength": memory_chars}
    return {**STEP_SCHEMA, "properties": {**STEP_SCHEMA["properties"], "memory": memory}}


@dataclass
class WholeOptions:
    chunk_tokens: int = 900
    """Longest chunk, in transcript tokens: a longer chapter is split at its lines."""
    memory_chars: int = 600
    """Longest memory the model may keep (GRU-Mem keeps ~100-150 tokens)."""
    max_chunks: int = 40
    """Chunks read at most (a longer recording's remaining chunks are not read, and the reading says so)."""
    step_tokens: int = 256
    answer_tokens: int = 256

    def __post_init__(self) -> None:
        if self.chunk_tokens < 50 or self.memory_chars < 50 or self.max_chunks < 1:
            raise ValueError("chunk_tokens and memory_chars must be >= 50 and max_chunks >= 1")


@dataclass
class Chunk:
    number: int
    start: float
    end: float
    lines: list[tuple[float, float, str]]

    def text(self) -> str:
        return "\n".join(f"[{hms(a)}] {t}" for a, _, t in self.lines)


@dataclass
class Step:
    """One chunk read: what the model decided."""

    chunk: Chunk
    update: bool
    exit: bool
    memory: str
    prompt_tokens: int
    ignored: bool = False
    """The model asked to exit with nothing in memory; reading went on."""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "role": "chunk",
            "kind": "chunk",
            "start": round(self.chunk.start, 3),
            "end": round(self.chunk.end, 3),
            "timestamp": hms(self.chunk.start),
            "tokens": self.prompt_tokens,
            "update": self.update,
            "exit": self.exit,
            "memory": self.memory,
        }
        if self.ignored:
            out["ignored"] = True
        return out


@dataclass
class WholeReading:
    """The chunks read, the model's decisions on each, and why reading ended."""

    video_id: str
    steps: list[Step]
    chunks: int
    exit: str
    """`model` (its exit gate), `all read`, or `limit` (max_chunks reached first)."""
    memory: str
    answer_tokens: int = 0
    note: str = ""

    @property
    def tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.steps) + self.answer_tokens

    def to_json(self) -> dict[str, object]:
        exit_: dict[str, object] = {"reason": self.exit, "after": len(self.steps), "of": self.chunks}
        if self.note:
            exit_["note"] = self.note
        read = [{**s.to_json(), "video_id": self.video_id} for s in self.steps]
        return {"read": read, "tokens": self.tokens, "exit": exit_, "memory": self.memory}


def chunks(store: Store, video_id: str, chunk_tokens: int) -> list[Chunk]:
    """The video's chapters as chunks of its transcript lines, long ones split at lines."""
    with store.session() as s:
        if s.get(Video, video_id) is None:
            raise StoreError(f"no video {video_id!r}")
        chapters = s.execute(
            select(Segment.start, Segment.end)
            .where(Segment.video_id == video_id, Segment.level == "chapter")
            .order_by(Segment.start)
        ).all()
        cues = s.execute(
            select(TranscriptCue.start, TranscriptCue.end, TranscriptCue.text)
            .where(TranscriptCue.video_id == video_id)
            .order_by(TranscriptCue.start)
        ).all()
    lines = [(float(a), float(b), str(t).strip()) for a, b, t in cues if str(t).strip()]
    if not lines:
        return []
    bounds = [(float(a), float(b)) for a, b in chapters] or [(lines[0][0], lines[-1][1])]
    sizes = token_counts([t for _, _, t in lines])
    out: list[Chunk] = []
    i = 0
    for n, (_, end) in enumerate(bounds):
        last = n == len(bounds) - 1
        part: list[tuple[float, float, str]] = []
        used = 0
        while i < len(lines) and (last or lines[i][0] < end):
            if part and used + sizes[i] > chunk_tokens:
                out.append(Chunk(len(out) + 1, part[0][0], part[-1][1], part))
                part, used = [], 0
            part.append(lines[i])
            used += sizes[i]
            i += 1
        if part:
            out.append(Chunk(len(out) + 1, part[0][0], part[-1][1], part))
    return out


def read_whole(
    store: Store, video_id: str, question: str, llm: LLM, options: WholeOptions | None = None
) -> Answer:
    """Read `video_id` chunk by chunk with a bounded memory, then answer from the memory (the
    answer's `reading` is the WholeReading).
    `memory.runtime.llm.LLMUnavailable` when the server cannot be reached; a step reply that is
    unusable (not the JSON asked for) ends reading there, and the reading's note says so."""
    opts = options or WholeOptions()
    question = question.strip()
    if not question:
        raise ValueError("empty question: ask something")
    parts = chunks(store, video_id, opts.chunk_tokens)
    schema = step_schema(opts.memory_chars)
    memory = ""
    steps: list[Step] = []
    reason, note = "all read", ""
    for chunk in parts:
        if len(steps) >= opts.max_chunks:
            reason = "limit"
            note = f"read the first {opts.max_chunks} of {len(parts)} parts (max_chunks)"
            break
        messages = [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": f"Question: {question}\n\nYour memory so far:\n{memory or '(empty)'}\n\n"
                f"Part {chunk.number} of {len(parts)} ({hms(chunk.start)} - {hms(chunk.end)}):\n{chunk.text()}",
            },
        ]
        before = llm.prompt_tokens
        try:
            reply = llm.chat_json(messages, schema, opts.step_tokens)
        except LLMUnavailable:
            raise
        except LLMError as e:
            reason, note = "unusable reply", f"part {chunk.number}: the model's reply was unusable: {e}"
            break
        update, exit_ = bool(reply.get("update")), bool(reply.get("exit"))
        if update:
            memory = str(reply.get("memory", ""))[: opts.memory_chars].strip()
        ignored = exit_ and not memory
        steps.append(Step(chunk, update, exit_, memory, llm.prompt_tokens - before, ignored))
        if exit_ and not ignored:
            reason = "model"
            break
    reading = WholeReading(video_id, steps, len(parts), reason, memory, note=note)
    evidence = [
        Evidence(s.chunk.number, video_id, s.chunk.start, s.chunk.end, "", 0.0, "chunk") for s in steps
    ]
    engine = f"gru-mem:{llm.name}"
    if not steps:
        why = note or "the video has no transcript to read"
        return Answer(NOT_FOUND, [], engine, False, evidence, note=why, reading=reading)
    read_parts = "\n".join(f"[{s.chunk.number}] {hms(s.chunk.start)} - {hms(s.chunk.end)}" for s in steps)
    messages = [
        {"role": "system", "content": ANSWER_SYSTEM},
        {
            "role": "user",
            "content": f"Parts read:\n{read_parts}\n\nYour notes:\n{memory or '(none)'}\n\nQuestion: {question}",
        },
    ]
    before = llm.prompt_tokens
    reply = llm.chat_json(messages, answer_schema(max(s.chunk.number for s in steps)), opts.answer_tokens)
    reading.answer_tokens = llm.prompt_tokens - before
    answer = check(reply, evidence, engine)
    answer.note, answer.reading = note, reading
    return answer
