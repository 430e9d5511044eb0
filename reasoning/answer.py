"""Answers with proof: the question, an evidence pack of timestamped moments, and an answer whose every
citation points inside that pack.

`ask()` retrieves evidence (reasoning.retrieve: coarse to fine), reads it through the exit gate
(reasoning.reader: gists, then spans, until what was read suffices), numbers it `[1]..[k]` with its
`HH:MM:SS` span and video — the spans first, then the gists (`number_evidence`) — and hands it to an
answer engine:

- `extractive` (no LLM): the best evidence, quoted, with its timestamps. Says it found nothing when
  no moment is similar enough to the question.
- `llm` (any `memory.runtime.llm.LLM`: the packaged model in-process, or vLLM through the OpenAI API): the model
  must reply with a JSON object `{"answerable", "answer", "citations": [evidence numbers]}` (structured
  output: vLLM enforces the schema while decoding). With a server engine it can first call tools —
  search again, read more context around a moment — for up to `max_tool_rounds` rounds. A call the
  model gets wrong (an invented video id, a reversed span, an unknown tool, arguments that break the
  schema) goes back to it as that tool's error result, and the loop goes on; every call is reported
  in the answer (`tools`).

What leaves is checked, whatever the engine wrote: a citation is an evidence number and becomes that
evidence's own span, so it cannot point outside what the model read; an unknown number is dropped; a
timestamp written in the answer's text that falls in no cited evidence is removed. An answer the
model calls answerable but cites nothing valid for is asked once more.

Failures are said, never hidden:
- a server that cannot be reached (`memory.runtime.llm.LLMUnavailable`) is an error: `ask` raises, the API
  answers 503, the CLI exits non-zero — unless the caller asked for a fallback (`AskOptions.fallback`);
- a reply that is unusable (not the JSON asked for, cut short, citing nothing valid), or a fallback
  the caller asked for, gives the extractive answer, and the answer's `fallback` says from which
  engine and why.
When the model says the evidence does not contain the answer, the answer says so and cites nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kernels.timecode import hms, parse_hms
from memory import Store
from memory.runtime import Registry
from memory.runtime.llm import LLM, LLMError, LLMUnavailable, ToolCall
from memory.runtime.text import Embedder, SentenceEmbedder
from reasoning.reader import ExitWeights, ReadItem, ReadOptions, read
from reasoning.retrieve import RetrieveOptions, retrieve_levels
from reasoning.search import Moment

NOT_FOUND = "The evidence does not contain the answer to this question."

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answerable": {"type": "boolean"},
        "citations": {"type": "array", "items": {"type": "integer"}, "maxItems": 8},
        "answer": {"type": "string", "maxLength": 600},
    },
    "required": ["answerable", "citations", "answer"],
}
"""What an LLM must reply: whether the evidence answers the question, the answer, and the numbers of
the evidence it rests on. The bounds keep the whole object inside `max_tokens`: measured with Qwen 0.5B
on vLLM, an unbounded answer string ran on until the reply was cut short and was not JSON. The
citations come before the answer: the model names its evidence first, and an answer cut short by
`max_tokens` still holds them (the local engine closes such a reply).
`answer_schema(k)` narrows the citations to the evidence numbers of one request."""


def answer_schema(evidence: int) -> dict[str, Any]:
    """ANSWER_SCHEMA with citations bounded to 1..`evidence`: a server cannot decode another number,
    and the local engine's check shows the model its mistake (small models cite `0` otherwise)."""
    items = {"type": "integer", "minimum": 1, "maximum": max(1, evidence)}
    citations = {**ANSWER_SCHEMA["properties"]["citations"], "items": items}
    return {**ANSWER_SCHEMA, "properties": {**ANSWER_SCHEMA["properties"], "citations": citations}}


SYSTEM = (
    "You answer questions about videos using only the numbered evidence: transcript excerpts with "
    "their time spans. Cite the numbers of the evidence your answer rests on. If the evidence does "
    "not contain the answer, set answerable to false and say so; never guess. Answer in one to three "
    "sentences of your own; do not copy the evidence."
)

EXAMPLE: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": "Evidence:\n[1] video a1b2c3, 00:00:05 - 00:00:12: We preheat the oven to 200 degrees.\n"
        "[2] video a1b2c3, 00:00:12 - 00:00:20: Then the dough rests for an hour under a towel.\n\n"
        "Question: How long does the dough rest?",
    },
    {
        "role": "assistant",
        "content": '{"answerable": true, "citations": [2], "answer": "The dough rests for an hour, under a towel."}',
    },
    {"role": "user", "content": "Question: What colour is the oven?"},
    {
        "role": "assistant",
        "content": '{"answerable": false, "citations": [], "answer": "The evidence does not say what colour the oven is."}',
    },
]
"""One worked exchange before the real question. Measured with Qwen 0.5B: shown only the reply's
shape, it copied the placeholders back (`"citations": [0], "answer": "..."`); shown an example, it
fills the object in."""

_TIME = re.compile(r"\b(?:\d{1,2}:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?\b")


@dataclass
class Evidence:
    """One numbered moment given to the engine."""

    number: int  # 1-based, as the model cites it
    video_id: str
    start: float
    end: float
    text: str
    score: float
    role: str = "span"
    """`span` (a refined moment) or `gist` (a scene's or chapter's text, read first for context)."""

    def line(self) -> str:
        what = " (gist of the part)" if self.role == "gist" else ""
        return (
            f"[{self.number}] video {self.video_id}, {hms(self.start)} - {hms(self.end)}{what}: {self.text}"
        )


@dataclass
class Citation:
    video_id: str
    start: float
    end: float

    def to_json(self) -> dict[str, object]:
        return {
            "video_id": self.video_id,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "timestamp": hms(self.start),
        }


@dataclass
class Fallback:
    """Why the answer is not the asked engine's own: which engine failed and how."""

    source: str
    """The engine that was asked (e.g. `llm:qwen0.5b`); the answer's `engine` is the one that answered."""
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"from": self.source, "reason": self.reason}


@dataclass
class ToolUse:
    """One tool call the model made while gathering evidence, and what came of it."""

    name: str
    arguments: dict[str, Any]
    error: str | None = None
    """What went back to the model instead of a result (the call could not run)."""
    added: int = 0
    """Moments it added to the evidence (those already there are not added twice)."""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "arguments": self.arguments, "added": self.added}
        if self.error is not None:
            out["error"] = self.error
        return out


class Report(Protocol):
    """How an answer's reading is reported: `read`, `tokens` and `exit` (and what else it adds)."""

    def to_json(self) -> dict[str, object]: ...


@dataclass
class Answer:
    answer: str
    citations: list[Citation]
    engine: str
    """The engine that wrote this answer (after a fallback, the fallback's)."""
    answerable: bool
    evidence: list[Evidence] = field(default_factory=list)
    dropped: int = 0
    """Citations or timestamps the engine wrote that pointed outside the evidence (removed)."""
    fallback: Fallback | None = None
    """Set when the engine asked for could not answer and another did."""
    tools: list[ToolUse] = field(default_factory=list)
    """The tool calls made before answering, in order."""
    note: str = ""
    """Anything else the reader should know about how the answer was made (tools unavailable)."""
    reading: Report | None = None
    """What was read before answering and why reading stopped: a `reasoning.reader.Reading` (the
    exit gate over the evidence) or a `reasoning.gru_mem.WholeReading` (a whole video, chunk by chunk)."""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "answer": self.answer,
            "citations": [c.to_json() for c in self.citations],
            "engine": self.engine,
            "answerable": self.answerable,
            "fallback": self.fallback.to_json() if self.fallback else None,
        }
        if self.tools:
            out["tools"] = [t.to_json() for t in self.tools]
        if self.note:
            out["note"] = self.note
        if self.reading is not None:
            out.update(self.reading.to_json())
        return out


@dataclass
class AskOptions:
    evidence: int = 5
    """Refined spans that may be read (the exit gate may stop sooner)."""
    gists: int = 2
    """Gists (scene or chapter texts among the best coarse hits) read before the spans."""
    exit_gate: bool = True
    """Stop reading when the exit gate says what was read suffices (reasoning.reader); False: read
    every candidate."""
    exit_weights: ExitWeights | None = None
    """The exit gate's stop head; None: the shipped one (reasoning/exit_model.json)."""
    min_similarity: float = 0.25
    """Cosine (question vs the best evidence) under which the extractive engine says it found nothing."""
    max_tokens: int = 256
    """Longest answer an LLM may write, in tokens."""
    max_tool_rounds: int = 2
    """Rounds of tool calls (search again, read context) a server engine may make before it must answer."""
    fallback: bool = False
    """When the engine's LLM server cannot be reached, `ask` answers with the extractive engine (the
    answer's `fallback` says so) instead of raising `memory.runtime.llm.LLMUnavailable`."""

    def __post_init__(self) -> None:
        if self.evidence < 1 or self.gists < 0 or self.max_tokens < 16 or self.max_tool_rounds < 0:
            raise ValueError("evidence must be >= 1, gists >= 0, max_tokens >= 16 and max_tool_rounds >= 0")


class AnswerEngine:
    """Base of answer engines: one required method, `answer`."""

    name = "base"

    def answer(self, question: str, evidence: list[Evidence], context: ToolBox | None = None) -> Answer:
        raise NotImplementedError


class ExtractiveEngine(AnswerEngine):
    """No LLM: the best evidence, quoted with its timestamps."""

    name = "extractive"

    def __init__(self, embedder: Embedder | None = None, min_similarity: float = 0.25) -> None:
        self.embedder = embedder or SentenceEmbedder()
        self.min_similarity = min_similarity

    def answer(self, question: str, evidence: list[Evidence], context: ToolBox | None = None) -> Answer:
        quotable = [e for e in evidence if e.role == "span"] or evidence  # a gist is cut short
        if quotable:
            vecs = self.embedder.embed([question] + [e.text for e in quotable])
            sims = vecs[1:] @ vecs[0]
            best = int(sims.argmax())
            if float(sims[best]) >= self.min_similarity:
                e = quotable[best]
                text = f'{hms(e.start)} - {hms(e.end)}: "{e.text}"'
                return Answer(text, [Citation(e.video_id, e.start, e.end)], self.name, True, evidence)
        return Answer(NOT_FOUND, [], self.name, False, evidence)


MAX_CALLS_PER_ROUND = 3
"""Tool calls of one reply that are run; the rest are answered with an error saying so."""
MAX_TOOL_TEXT = 1500
"""Characters of one tool result given to the model (ten minutes of transcript would not fit)."""


class LLMEngine(AnswerEngine):
    """An LLM answers from the evidence in a JSON object; its citations are checked before they leave."""

    def __init__(
        self, llm: LLM, options: AskOptions | None = None, fallback: AnswerEngine | None = None
    ) -> None:
        self.llm = llm
        self.options = options or AskOptions()
        self.fallback = fallback or ExtractiveEngine()
        self.name = f"llm:{getattr(llm, 'name', 'model')}"

    def _messages(self, question: str, evidence: list[Evidence]) -> list[dict[str, Any]]:
        pack = "\n".join(e.line() for e in evidence) or "(no evidence found)"
        return [
            {"role": "system", "content": SYSTEM},
            *EXAMPLE,
            {"role": "user", "content": f"Evidence:\n{pack}\n\nQuestion: {question}"},
        ]

    def answer(self, question: str, evidence: list[Evidence], context: ToolBox | None = None) -> Answer:
        """The model's checked answer; `memory.runtime.llm.LLMUnavailable` when its server cannot be reached
        (`ask` decides whether that falls back), the extractive answer marked as a fallback when the
        model's reply is unusable."""
        evidence = list(evidence)
        used: list[ToolUse] = []
        note = ""
        if context is not None and self.options.max_tool_rounds and getattr(self.llm, "url", None):
            evidence, used, note = self._gather(question, evidence, context)
        messages = self._messages(question, evidence)
        try:
            schema = answer_schema(len(evidence))
            reply = self.llm.chat_json(messages, schema, self.options.max_tokens)
            checked = check(reply, evidence, self.name)
            if checked.answerable and not checked.citations:  # answerable, nothing valid cited: once more
                retry = messages + [
                    {"role": "assistant", "content": json.dumps(reply)},
                    {
                        "role": "user",
                        "content": f"Cite the evidence numbers (1 to {len(evidence)}) your answer rests on, "
                        "or set answerable to false.",
                    },
                ]
                reply = self.llm.chat_json(retry, schema, self.options.max_tokens)
                checked = check(reply, evidence, self.name)
        except LLMUnavailable:
            raise
        except LLMError as e:  # an unusable reply (cut short, not JSON): say so
            answer = self._fall_back(question, evidence, f"the model's reply was unusable: {e}", 0)
        else:
            if checked.answerable and not checked.citations:
                answer = self._fall_back(question, evidence, "the model cited no evidence", checked.dropped)
            else:
                answer = checked
        answer.tools, answer.note = used, note
        return answer

    def _fall_back(self, question: str, evidence: list[Evidence], why: str, dropped: int) -> Answer:
        answer = self.fallback.answer(question, evidence)
        answer.fallback = Fallback(self.name, why)
        answer.dropped = dropped
        return answer

    def _gather(
        self, question: str, evidence: list[Evidence], tools: ToolBox
    ) -> tuple[list[Evidence], list[ToolUse], str]:
        """Let a server model search again or read around a moment before it answers: OpenAI tool
        calling, each result (or error) sent back as the tool's message, for at most
        `max_tool_rounds` rounds. Returns the evidence grown by what the tools found, the calls
        made, and a note when the server could not do tool calls at all."""
        from reasoning.tools import TOOLS

        messages = self._messages(question, evidence) + [
            {
                "role": "user",
                "content": "Before answering, call a tool to read more: search_moments to search again, "
                "read_context to read the transcript around a moment, or done if the evidence suffices.",
            }
        ]
        offered = [*TOOLS, _DONE]
        used: list[ToolUse] = []
        for round_ in range(self.options.max_tool_rounds):
            try:
                calls = self.llm.chat_tools(messages, offered, "required", 128, lenient=True)
            except LLMUnavailable:
                raise
            except LLMError as e:  # e.g. a server without tool calling for this model
                why = f"tool calls were not possible, the answer rests on the first evidence only: {e}"
                return evidence, used, why
            if not calls or all(c.name == "done" for c in calls):
                break
            ids = [c.id or f"call_{round_}_{i}" for i, c in enumerate(calls)]
            messages.append(
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": i,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for i, c in zip(ids, calls, strict=True)
                    ],
                }
            )
            for n, (call_id, call) in enumerate(zip(ids, calls, strict=True)):
                use, result = self._run(call, n, evidence, tools)
                used.append(use)
                messages.append({"role": "tool", "tool_call_id": call_id, "content": result[:MAX_TOOL_TEXT]})
        return evidence, used, ""

    @staticmethod
    def _run(call: ToolCall, n: int, evidence: list[Evidence], tools: ToolBox) -> tuple[ToolUse, str]:
        """Run the `n`-th call of a reply; new moments join `evidence` (numbered on). Returns what
        was done and the text sent back to the model: the moments with their numbers, or the error."""
        from reasoning.tools import ToolError

        use = ToolUse(call.name, call.arguments, call.error)
        if use.error is None and n >= MAX_CALLS_PER_ROUND:
            use.error = f"at most {MAX_CALLS_PER_ROUND} tool calls are run per turn; this one was not"
        if use.error is not None:
            return use, f"error: {use.error}"
        if call.name == "done":
            return use, "ok"
        try:
            found = tools.run(call.name, call.arguments)
        except ToolError as e:
            use.error = str(e)
            return use, f"error: {use.error}"
        lines = []
        for m in found:
            same = next(
                (e for e in evidence if e.video_id == m.video_id and abs(e.start - m.start) < 1), None
            )
            if same is None:
                same = Evidence(
                    len(evidence) + 1, m.video_id, m.start, m.end, m.text[:MAX_TOOL_TEXT], m.score
                )
                evidence.append(same)
                use.added += 1
            lines.append(same.line())
        return use, "\n".join(lines) or "nothing found"


_DONE = {
    "type": "function",
    "function": {
        "name": "done",
        "description": "The evidence is enough to answer (or to say it holds no answer).",
        "parameters": {"type": "object", "properties": {}},
    },
}


def check(reply: dict[str, Any], evidence: list[Evidence], engine: str) -> Answer:
    """The engine's reply as an Answer whose citations all point inside the evidence: unknown numbers
    are dropped, and a timestamp in the text that no cited evidence spans is removed."""
    by_number = {e.number: e for e in evidence}
    answerable = bool(reply.get("answerable", False))
    text = str(reply.get("answer", "")).strip()
    cited: list[Evidence] = []
    dropped = 0
    for raw in reply.get("citations") or []:
        try:
            n = int(raw)
        except (TypeError, ValueError):
            dropped += 1
            continue
        if n in by_number and by_number[n] not in cited:
            cited.append(by_number[n])
        elif n not in by_number:
            dropped += 1
    if not answerable:  # the model's own words here may be copied evidence: say it plainly
        return Answer(NOT_FOUND, [], engine, False, evidence, dropped)

    def keep(match: re.Match[str]) -> str:
        nonlocal dropped
        try:
            t = parse_hms(match.group(0))
        except ValueError:
            return match.group(0)
        if any(e.start - 1.0 <= t <= e.end + 1.0 for e in cited):
            return match.group(0)
        dropped += 1
        return ""

    text = re.sub(r"\s{2,}", " ", _TIME.sub(keep, text)).strip()
    citations = [Citation(e.video_id, e.start, e.end) for e in cited]
    return Answer(text, citations, engine, True, evidence, dropped)


class ToolBox:
    """The read-only tools an engine may call, bound to one store and scope."""

    def __init__(self, store: Store, library: str | None, video_id: str | None, embedder: Embedder) -> None:
        self.store, self.library, self.video_id, self.embedder = store, library, video_id, embedder

    def run(self, name: str, arguments: dict[str, Any]) -> list[Moment]:
        """The moments a tool returns; `reasoning.tools.ToolError` for a call that cannot run."""
        from reasoning.tools import call_tool

        return call_tool(self.store, name, arguments, self.library, self.video_id, self.embedder)


def number_evidence(items: Sequence[ReadItem]) -> list[Evidence]:
    """What was read, numbered for the engine: the refined spans first (in rank order), then the
    gists. Reading stays coarse to fine (`answer.reading`); only the numbers change. A small model
    cites [1] in nearly every answer (SmolLM2: 77 of 78 answers, one-off), so [1] must be the best
    moment, not a chapter's gist: numbered gists first, SmolLM2's answers cite the gold span for
    26.8% of 310 TutorialVQA dev questions, spans first for 41.9% (docs/benchmarks/exit_order.md)."""
    order = [it for it in items if it.role == "span"] + [it for it in items if it.role != "span"]
    return [
        Evidence(
            i, it.moment.video_id, it.moment.start, it.moment.end, it.moment.text, it.moment.score, it.role
        )
        for i, it in enumerate(order, 1)
    ]


def ask(
    store: Store,
    question: str,
    engine: AnswerEngine,
    library: str | None = "default",
    video_id: str | None = None,
    options: AskOptions | None = None,
    embedder: Embedder | None = None,
) -> Answer:
    """Retrieve evidence for `question` and answer it with `engine`, citations checked.
    `memory.runtime.llm.LLMUnavailable` when the engine's server cannot be reached, unless `options.fallback`."""
    opts = options or AskOptions()
    question = question.strip()
    if not question:
        raise ValueError("empty question: ask something")
    enc = embedder or SentenceEmbedder()
    qvec = enc.embed([question])[0]
    found = retrieve_levels(
        store, question, library, video_id, RetrieveOptions(top=opts.evidence), enc, query_vector=qvec
    )
    reading_opts = ReadOptions(spans=opts.evidence, gists=opts.gists, gate=opts.exit_gate)
    reading = read(question, qvec, found, enc, reading_opts, opts.exit_weights)
    evidence = number_evidence(reading.read)
    try:
        answer = engine.answer(question, evidence, ToolBox(store, library, video_id, enc))
    except LLMUnavailable as e:
        if not opts.fallback:
            raise
        answer = ExtractiveEngine(enc, opts.min_similarity).answer(question, evidence)
        answer.fallback = Fallback(engine.name, f"the LLM server could not be reached: {e}")
    answer.reading = reading
    return answer


ANSWER_ENGINES: Registry[str] = Registry(
    "answer engine",
    {
        "auto": "the server at `llm_url` when one is configured, else extractive",
        "local": "the packaged `answer_llm` in-process",
        "openai": "the OpenAI-compatible server at `llm_url` (vLLM)",
        "extractive": "no LLM: the best evidence, quoted",
    },
)
"""What `vidmem ask --engine` and the API's `engine` accept (service.settings.make_answer_engine
builds them); `make_engine` takes the resolved kind, `extractive` or `llm`."""


_KINDS: Registry[str] = Registry("answer engine kind", {"extractive": "ExtractiveEngine", "llm": "LLMEngine"})


def make_engine(
    name: str, llm: LLM | None = None, embedder: Embedder | None = None, options: AskOptions | None = None
) -> AnswerEngine:
    """`extractive`, or an LLM engine (`llm`) around `llm` (local or server; see
    memory.runtime.llm.make_llm)."""
    opts = options or AskOptions()
    extractive = ExtractiveEngine(embedder, opts.min_similarity)
    if name == "extractive":
        return extractive
    if name != "llm":
        raise _KINDS.unknown(name)
    if llm is None:
        raise ValueError(f"answer engine {name!r} needs an LLM (memory.runtime.llm.make_llm)")
    return LLMEngine(llm, opts, extractive)
