"""Answers with proof: the question, an evidence pack of timestamped moments, and an answer whose every
citation points inside that pack.

`ask()` retrieves evidence (reasoning.retrieve: coarse to fine), numbers it `[1]..[k]` with its
`HH:MM:SS` span and video, and hands it to an answer engine:

- `extractive` (no LLM): the best evidence, quoted, with its timestamps. Says it found nothing when
  no moment is similar enough to the question.
- `llm` (any `memory.llm.LLM`: the packaged model in-process, or vLLM through the OpenAI API): the model
  must reply with a JSON object `{"answerable", "answer", "citations": [evidence numbers]}` (structured
  output: vLLM enforces the schema while decoding). With a server engine it can first call tools —
  search again, read more context around a moment — up to `max_tool_rounds` times.

What leaves is checked, whatever the engine wrote: a citation is an evidence number and becomes that
evidence's own span, so it cannot point outside what the model read; an unknown number is dropped; a
timestamp written in the answer's text that falls in no cited evidence is removed. An answer the
model calls answerable but cites nothing valid for is asked once more, then replaced by the
extractive answer (so is a reply that is not the JSON asked for, or cut short, or a failed server; `note` says why).
When the model says the evidence does not contain the answer, the answer says so
and cites nothing.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from kernels.timecode import hms, parse_hms
from memory import Store
from memory.encoders import Embedder, SentenceEmbedder
from reasoning.retrieve import RetrieveOptions, retrieve
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

    def line(self) -> str:
        return f"[{self.number}] video {self.video_id}, {hms(self.start)} - {hms(self.end)}: {self.text}"


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
class Answer:
    answer: str
    citations: list[Citation]
    engine: str
    answerable: bool
    evidence: list[Evidence] = field(default_factory=list)
    dropped: int = 0
    """Citations or timestamps the engine wrote that pointed outside the evidence (removed)."""
    note: str = ""
    """Why the answer is not the engine's own (its reply was unusable, so the extractive one stands)."""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "answer": self.answer,
            "citations": [c.to_json() for c in self.citations],
            "engine": self.engine,
            "answerable": self.answerable,
        }
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class AskOptions:
    evidence: int = 5
    """Moments given to the engine."""
    min_similarity: float = 0.25
    """Cosine (question vs the best evidence) under which the extractive engine says it found nothing."""
    max_tokens: int = 256
    """Longest answer an LLM may write, in tokens."""
    max_tool_rounds: int = 2
    """Tool calls (search again, read context) a server engine may make before it must answer."""

    def __post_init__(self) -> None:
        if self.evidence < 1 or self.max_tokens < 16 or self.max_tool_rounds < 0:
            raise ValueError("evidence must be >= 1, max_tokens >= 16 and max_tool_rounds >= 0")


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
        if evidence:
            vecs = self.embedder.embed([question] + [e.text for e in evidence])
            sims = vecs[1:] @ vecs[0]
            best = int(sims.argmax())
            if float(sims[best]) >= self.min_similarity:
                e = evidence[best]
                text = f'{hms(e.start)} - {hms(e.end)}: "{e.text}"'
                return Answer(text, [Citation(e.video_id, e.start, e.end)], self.name, True, evidence)
        return Answer(NOT_FOUND, [], self.name, False, evidence)


class LLMEngine(AnswerEngine):
    """An LLM answers from the evidence in a JSON object; its citations are checked before they leave."""

    def __init__(self, llm, options: AskOptions | None = None, fallback: AnswerEngine | None = None) -> None:  # type: ignore[no-untyped-def]
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
        from memory.llm import LLMError

        server = bool(getattr(self.llm, "url", None))
        if context is not None and self.options.max_tool_rounds and server:
            # a server without tool calling (no parser for this model): answer from the evidence as is
            with contextlib.suppress(LLMError):
                evidence = self._gather(question, list(evidence), context)
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
        except LLMError as e:  # an unusable reply (cut short, not JSON) or a server that failed: say so
            return self._fall_back(question, evidence, f"the model's reply was unusable: {e}", 0)
        if checked.answerable and not checked.citations:
            return self._fall_back(question, evidence, "the model cited no evidence", checked.dropped)
        return checked

    def _fall_back(self, question: str, evidence: list[Evidence], why: str, dropped: int) -> Answer:
        answer = self.fallback.answer(question, evidence)
        answer.engine = f"{self.name}+{answer.engine}"
        answer.dropped, answer.note = dropped, why
        return answer

    def _gather(self, question: str, evidence: list[Evidence], tools: ToolBox) -> list[Evidence]:
        """Let a server model search again or read around a moment before it answers."""
        from reasoning.tools import TOOLS

        messages = self._messages(question, evidence) + [
            {
                "role": "user",
                "content": "Before answering, call a tool to read more: search_moments to search again, "
                "read_context to read the transcript around a moment, or done if the evidence suffices.",
            }
        ]
        offered = [*TOOLS, _DONE]
        for _ in range(self.options.max_tool_rounds):
            calls = self.llm.chat_tools(messages, offered, "required", 128)
            if not calls or calls[0].name == "done":
                break
            found = tools.run(calls[0].name, calls[0].arguments)
            for m in found:
                if not any(e.video_id == m.video_id and abs(e.start - m.start) < 1 for e in evidence):
                    evidence.append(Evidence(len(evidence) + 1, m.video_id, m.start, m.end, m.text, m.score))
            messages = self._messages(question, evidence) + messages[-1:]
        return evidence


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
        from reasoning.tools import call_tool

        return call_tool(self.store, name, arguments, self.library, self.video_id, self.embedder)


def ask(
    store: Store,
    question: str,
    engine: AnswerEngine,
    library: str | None = "default",
    video_id: str | None = None,
    options: AskOptions | None = None,
    embedder: Embedder | None = None,
) -> Answer:
    """Retrieve evidence for `question` and answer it with `engine`, citations checked."""
    opts = options or AskOptions()
    question = question.strip()
    if not question:
        raise ValueError("empty question: ask something")
    enc = embedder or SentenceEmbedder()
    moments = retrieve(store, question, library, video_id, RetrieveOptions(top=opts.evidence), enc)
    evidence = [Evidence(i, m.video_id, m.start, m.end, m.text, m.score) for i, m in enumerate(moments, 1)]
    return engine.answer(question, evidence, ToolBox(store, library, video_id, enc))


def make_engine(
    name: str, llm=None, embedder: Embedder | None = None, options: AskOptions | None = None
) -> AnswerEngine:  # type: ignore[no-untyped-def]
    """`extractive`, or an LLM engine around `llm` (local or server; see memory.llm.make_llm)."""
    opts = options or AskOptions()
    extractive = ExtractiveEngine(embedder, opts.min_similarity)
    if name == "extractive":
        return extractive
    if llm is None:
        raise ValueError(f"answer engine {name!r} needs an LLM (memory.llm.make_llm)")
    return LLMEngine(llm, opts, extractive)
