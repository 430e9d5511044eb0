"""Finding the moment and answering with proof (reasoning/retrieve.py, refine.py, answer.py, tools.py,
langchain.py; `vidmem ask` and `vidmem eval tutorialvqa`), on real stores, the real MiniLM model,
the real span scorer and the real packaged LLM.

The library is made here: three transcript-only items whose topics sit at known times, so every
expectation comes from what was written, not from a recorded output.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from indexers import IngestOptions, ingest
from indexers.captions import CaptionOptions
from kernels.timecode import parse_hms
from memory import Store, TranscriptCue
from memory.runtime.llm import LLMUnavailable, OpenAIChatLLM, ToolCall
from memory.runtime.text import SentenceEmbedder, token_counts
from reasoning.answer import (
    NOT_FOUND,
    AskOptions,
    Evidence,
    ExtractiveEngine,
    LLMEngine,
    ask,
    check,
    number_evidence,
)
from reasoning.gru_mem import WholeOptions, WholeReading, read_whole
from reasoning.gru_mem import chunks as whole_chunks
from reasoning.reader import (
    EXIT_FEATURES,
    ExitWeights,
    Reading,
    ReadOptions,
    exit_features,
    load_exit_weights,
    read,
)
from reasoning.reader import candidates as read_candidates
from reasoning.refine import FEATURES, CueRun, SpanScorer, best_spans, candidates, span_features
from reasoning.retrieve import RetrieveOptions, load_cues, retrieve
from reasoning.tools import TOOLS, ToolError, call_tool, read_context
from tests.conftest import SHARED_EVAL, packaged_model_cache
from tests.helpers import cli
from tests.media import write_srt

FILLER = [
    "Welcome back to the channel.",
    "Thanks for watching and see you next time.",
    "Let me know in the comments what you think.",
]
MASKS = [  # 40-70 s of the first item
    "Now let's hide part of the photo with a layer mask.",
    "Select the layer and click the add layer mask button at the bottom of the layers panel.",
    "Paint with black on the mask to hide pixels, and with white to reveal them again.",
    "To undo a mask, drag its thumbnail to the trash icon.",
]
EXPORT = [  # 100-124 s of the first item
    "When you are done, export the design for the web.",
    "Choose File, Export, Export As, and pick PNG or JPEG.",
    "Set the image size and quality, then click Export.",
]
BREAD = [  # 20-44 s of the second item
    "Mix the flour, water, salt and yeast into a sticky dough.",
    "Knead the dough for ten minutes until it feels smooth.",
    "Leave it to rise in a warm place for an hour.",
]
CAR = [  # 30-45 s of the third item
    "The witness said the blue car drove through the red light.",
    "She saw the driver wearing a green cap before the crash.",
]


def _timed(start: float, lines: list[str], each: float = 7.0) -> list[tuple[float, float, str]]:
    return [(start + i * each, start + i * each + each - 0.5, t) for i, t in enumerate(lines)]


def _item(blocks: list[tuple[float, list[str]]], end: float) -> list[tuple[float, float, str]]:
    """Topic blocks at their times, filler lines around them every 6 s."""
    cues = [c for start, lines in blocks for c in _timed(start, lines)]
    taken = [(a, b) for a, b, _ in cues]
    t, k = 0.0, 0
    while t < end:
        if all(t + 5.5 <= a or t >= b for a, b in taken):
            cues.append((t, t + 5.5, FILLER[k % len(FILLER)]))
            k += 1
        t += 6.0
    return sorted(cues)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, dict[str, str]]:
    root = tmp_path_factory.mktemp("answers")
    store = Store(root / "home")
    items = {
        "photo": _item([(40.0, MASKS), (100.0, EXPORT)], 150.0),
        "bread": _item([(20.0, BREAD)], 80.0),
        "car": _item([(30.0, CAR)], 70.0),
    }
    ids = {}
    for name, cues in items.items():
        path = write_srt(root / f"{name}.srt", cues)
        opts = IngestOptions(library="howto", captions=CaptionOptions(llm=None))
        ids[name] = ingest(store, path, opts, root / "models").video_id
    return store, ids


def _covers(m, start: float, end: float, min_iou: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    inter = max(0.0, min(m.end, end) - max(m.start, start))
    return inter / (max(m.end, end) - min(m.start, start)) >= min_iou


# ------------------------------------------------------------------------------------------- refine


def test_every_cue_is_an_embedded_unit(library) -> None:  # type: ignore[no-untyped-def]
    store, ids = library
    run = load_cues(store, ids["photo"], SentenceEmbedder().space)
    assert run.text[:1] == ["Welcome back to the channel."]
    assert any(t == MASKS[1] for t in run.text)
    assert (np.diff(run.start) >= 0).all() and run.vectors.shape == (len(run), 384)
    np.testing.assert_allclose(np.linalg.norm(run.vectors, axis=1), 1.0, atol=1e-4)


def test_candidates_are_every_short_run() -> None:
    a, b = candidates(5, 3)
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == [
        (0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (2, 4), (3, 3), (3, 4), (4, 4),
    ]  # fmt: skip


def test_span_features_are_finite_and_the_scorer_loads() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    run = CueRun("v", np.arange(12) * 5.0, np.arange(12) * 5.0 + 4.5, [f"line {i}" for i in range(12)], x)
    a, b, F = span_features(run, x[3], "line 3", max_cues=20)
    assert F.shape == (len(a), len(FEATURES)) and np.isfinite(F).all()
    scorer = SpanScorer.load()
    assert scorer.w1.shape[1] == len(FEATURES)
    spans = best_spans(run, x[3], "line 3", top=3)
    assert len(spans) == 3 and spans[0].score >= spans[1].score >= spans[2].score
    assert all(s.last < t.first or t.last < s.first for s in spans for t in spans if s is not t)


def test_the_span_kept_has_the_highest_expected_iou_not_the_top_score() -> None:
    """best_spans against a brute-force reading of its rule over the same candidates and scores."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    run = CueRun("v", np.arange(30) * 4.0, np.arange(30) * 4.0 + 3.5, [f"line {i}" for i in range(30)], x)
    scorer = SpanScorer.load()
    a, b, F = span_features(run, x[7], "line 7", scorer.max_cues)
    z = scorer(F)
    pool = np.argsort(-z)[:400]
    p = np.exp((z[pool] - z[pool].max()) / 0.8)
    p /= p.sum()

    def iou(i: int, j: int) -> float:
        s0, s1, t0, t1 = run.start[a[i]], run.end[b[i]], run.start[a[j]], run.end[b[j]]
        return max(0.0, min(s1, t1) - max(s0, t0)) / (max(s1, t1) - min(s0, t0))

    expected = [sum(pj * iou(i, j) for j, pj in zip(pool, p, strict=True)) for i in pool]
    want = pool[int(np.argmax(expected))]
    [got] = best_spans(run, x[7], "line 7", scorer, temperature=0.8)
    assert (got.first, got.last) == (a[want], b[want])
    assert got.score == pytest.approx(float(z.max()))  # the region's strength: its best score
    [top] = best_spans(run, x[7], "line 7", scorer, temperature=None)
    assert (top.first, top.last) == (a[np.argmax(z)], b[np.argmax(z)])
    assert (got.first, got.last) != (top.first, top.last)  # here the two rules disagree


def test_refined_span_is_the_topic_block_not_a_stored_unit(library) -> None:  # type: ignore[no-untyped-def]
    store, ids = library
    got = retrieve(store, "how do I hide part of a photo with a layer mask", "howto", ids["photo"])
    top = got[0]
    assert top.kind == "span" and top.video_id == ids["photo"]
    assert _covers(top, 40.0, 40.0 + 7 * len(MASKS)), (top.start, top.end)
    coarse = retrieve(store, "how do I hide part of a photo with a layer mask", "howto", ids["photo"],
                      RetrieveOptions(refine=False))  # fmt: skip
    assert coarse[0].kind != "span"


def test_library_wide_retrieval_finds_the_video_and_the_span(library) -> None:  # type: ignore[no-untyped-def]
    store, ids = library
    for query, name, start, n in [
        ("how long should I knead the dough", "bread", 20.0, len(BREAD)),
        ("what did the witness see about the car", "car", 30.0, len(CAR)),
        ("how to export an image as PNG for the web", "photo", 100.0, len(EXPORT)),
    ]:
        top = retrieve(store, query, "howto")[0]
        assert top.video_id == ids[name], query
        assert _covers(top, start, start + 7 * n, 0.3), (query, top.start, top.end)


def test_a_time_range_keeps_the_answer_inside_it(library) -> None:  # type: ignore[no-untyped-def]
    store, ids = library
    got = retrieve(store, "layer mask", "howto", ids["photo"], time_from=90.0, time_to=150.0)
    assert got and all(m.end > 90.0 and m.start < 150.0 for m in got)


# ------------------------------------------------------------------------------------------- answers


def _evidence() -> list[Evidence]:
    return [
        Evidence(1, "v1", 40.0, 68.0, " ".join(MASKS), 1.0),
        Evidence(2, "v1", 100.0, 121.0, " ".join(EXPORT), 0.5),
    ]


def test_check_drops_unknown_citations_and_invented_timestamps() -> None:
    reply = {
        "answerable": True,
        "answer": "At 00:00:45 add a mask; at 01:30:00 it is gone.",
        "citations": [1, 7, "x"],
    }
    a = check(reply, _evidence(), "test")
    assert [(c.video_id, c.start, c.end) for c in a.citations] == [("v1", 40.0, 68.0)]
    assert "00:00:45" in a.answer and "01:30:00" not in a.answer
    assert a.dropped == 3  # citation 7, citation "x", the invented timestamp
    no = check({"answerable": False, "answer": "", "citations": [1]}, _evidence(), "test")
    assert no.citations == [] and no.answer == NOT_FOUND and not no.answerable


def test_extractive_quotes_the_best_evidence_or_says_it_found_nothing() -> None:
    engine = ExtractiveEngine()
    a = engine.answer("how do I export the design as a PNG", _evidence())
    assert a.answerable and a.citations[0].start == 100.0 and "Export As" in a.answer
    assert "00:01:40" in a.answer
    none = engine.answer("what is the capital of Peru", _evidence()[:1])
    assert not none.answerable and none.citations == []


def test_ask_with_the_packaged_llm_cites_only_its_evidence(library) -> None:  # type: ignore[no-untyped-def]
    """The default answer model (Qwen 0.5B in-process, converted by `make models`): whatever it
    writes, what leaves cites only the evidence it was given."""
    from memory.runtime.llm import make_llm

    store, ids = library
    engine = LLMEngine(make_llm("qwen0.5b", packaged_model_cache()))
    answer = ask(store, "how do I add a layer mask?", engine, "howto")
    spans = {(e.video_id, e.start, e.end) for e in answer.evidence}
    assert answer.evidence, "evidence was retrieved"
    assert all((c.video_id, c.start, c.end) in spans for c in answer.citations)
    for t in re.findall(r"\b\d{2}:\d{2}:\d{2}\b", answer.answer):
        assert any(c.start - 1 <= parse_hms(t) <= c.end + 1 for c in answer.citations), t
    assert {"answer", "citations", "engine", "answerable", "fallback"} <= set(answer.to_json())
    assert answer.fallback is None, answer.fallback  # the model answered: a fallback would not count
    assert answer.engine == "llm:qwen0.5b"


def test_an_unusable_local_reply_falls_back_to_the_extractive_answer() -> None:
    """A local model that never writes the JSON asked for (SmolLM2 often does not): the answer is the
    extractive one, and says why."""
    from memory.runtime.llm import LLM

    class Garbled(LLM):  # our LLM base with a reply that is never JSON: the real failure, made certain
        name = "garbled"

        def chat_batch(self, conversations, max_tokens):  # type: ignore[no-untyped-def]
            return ["Sure! The answer is at 09:99 in the video." for _ in conversations]

    answer = LLMEngine(Garbled()).answer("how do I export the design as a PNG", _evidence())
    assert answer.engine == "extractive" and answer.fallback is not None
    assert answer.fallback.source == "llm:garbled" and "unusable" in answer.fallback.reason
    assert answer.to_json()["fallback"] == {"from": "llm:garbled", "reason": answer.fallback.reason}
    assert answer.citations and answer.citations[0].start == 100.0 and "09:99" not in answer.answer


# ------------------------------------------------------------------------------------------- tools


def test_tool_definitions_are_json_schema_and_run(library) -> None:  # type: ignore[no-untyped-def]
    store, ids = library
    names = {t["function"]["name"] for t in TOOLS}
    assert names == {"search_moments", "read_context"}
    for t in TOOLS:
        params = t["function"]["parameters"]
        assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])
    found = call_tool(store, "search_moments", {"query": "knead the dough", "top": 2}, "howto")
    assert found and found[0].video_id == ids["bread"]
    ctx = read_context(store, ids["car"], 29.0, 45.0)
    assert "[00:00:30] The witness said" in ctx.text and ctx.start >= 29.0 - 7
    with pytest.raises(ValueError, match="outside the scope"):
        call_tool(
            store, "read_context", {"video_id": ids["car"], "start": 0, "end": 10}, "howto", ids["bread"]
        )
    with pytest.raises(ValueError, match="unknown tool"):
        call_tool(store, "rm_rf", {}, "howto")


def test_a_tool_call_that_cannot_run_is_a_tool_error_saying_how_to_fix_it(library) -> None:  # type: ignore[no-untyped-def]
    """What a model gets wrong raises ToolError (never StoreError, which the API maps to 404), with a
    message aimed at correcting the call."""
    store, ids = library
    bad = {
        "invented id": (
            "read_context",
            {"video_id": "ffffffffffff", "start": 0, "end": 30},
            "no video with id",
        ),
        "reversed": ("read_context", {"video_id": ids["car"], "start": 40, "end": 20}, "must be after start"),
        "past the end": (
            "read_context",
            {"video_id": ids["car"], "start": 5000, "end": 5030},
            "past its end",
        ),
        "missing": ("read_context", {"video_id": ids["car"], "start": 0}, "'end' is missing"),
        "mistyped": (
            "read_context",
            {"video_id": ids["car"], "start": "soon", "end": 3},
            "number of seconds",
        ),
        "not finite": ("read_context", {"video_id": ids["car"], "start": float("nan"), "end": 3}, "number"),
        "unknown tool": (
            "rm_rf",
            {"path": "/"},
            "unknown tool 'rm_rf'; choose one of search_moments, read_context",
        ),
        "empty query": ("search_moments", {"query": "  "}, "query is empty"),
        "invented scope": (
            "search_moments",
            {"query": "car", "video_id": "ffffffffffff"},
            "no video with id",
        ),
    }
    for name, arguments, message in bad.values():
        with pytest.raises(ToolError, match=re.escape(message)):
            call_tool(store, name, arguments, "howto")
    # a video that exists in another library is refused exactly as an unknown one: nothing leaks
    with pytest.raises(ToolError, match="no video with id .* in library 'elsewhere'"):
        call_tool(store, "read_context", {"video_id": ids["car"], "start": 0, "end": 10}, "elsewhere")


def test_langchain_retriever_returns_documents_with_times(library) -> None:  # type: ignore[no-untyped-def]
    from langchain_core.documents import Document

    from reasoning.langchain import VidmemRetriever, langchain_tools

    store, ids = library
    docs = VidmemRetriever(store=store, library="howto", k=2).invoke("what did the witness say about the car")
    assert docs and isinstance(docs[0], Document)
    meta = docs[0].metadata
    assert meta["video_id"] == ids["car"] and meta["start"] < meta["end"]
    assert re.fullmatch(r"\d{2}:\d{2}:\d{2}", meta["timestamp"])
    search_tool, context_tool = langchain_tools(store, "howto")
    hits = search_tool.invoke({"query": "knead the dough", "top": 1})
    assert hits[0]["video_id"] == ids["bread"]
    assert "witness" in context_tool.invoke({"video_id": ids["car"], "start": 25, "end": 40})["text"]


# ------------------------------------------------------------------------------------------- eval


def test_eval_tutorialvqa_on_a_few_videos(tmp_path: Path) -> None:
    """The CLI on three of the real videos and their dev questions; what it writes for ingestion
    holds each sentence's text and times and nothing else (no segment grouping, no titles)."""

    src = SHARED_EVAL / "tutorialvqa"
    events = json.loads((src / "helpx_photoshop_tutorials.events.json").read_text())[:3]
    keep = {v["video_id"] for v in events}
    data = tmp_path / "data"
    data.mkdir()
    (data / "helpx_photoshop_tutorials.events.json").write_text(json.dumps(events))
    key = [v for v in json.loads((src / "videos.json").read_text()) if v["video_id"] in keep]
    (data / "videos.json").write_text(json.dumps(key))
    dev = [q for q in json.loads((src / "dev.json").read_text()) if q["video_id"] in keep]
    (data / "mini.json").write_text(json.dumps(dev))
    home = tmp_path / "home"
    for mode in ("single", "library"):
        proc = cli(home, "eval", "tutorialvqa", "--data", data, "--split", "mini", "--mode", mode, "--json")
        result = json.loads(proc.stdout)
        assert set(result) == {"R1@0.3", "R1@0.5", "R1@0.7", "mIoU", "n"} and result["n"] == len(dev)
        assert 100 >= result["R1@0.3"] >= result["R1@0.5"] >= result["R1@0.7"] >= 0
        assert result["R1@0.3"] > 20, result  # far above chance on real questions
    tracks = {p.stem.removeprefix("tutorialvqa-"): p for p in (home / "eval" / "tutorialvqa").glob("*.srt")}
    assert sorted(tracks) == sorted(keep)
    for v in events:  # each track is the sentences with their times, in order, and nothing else
        said = [
            s
            for seg in v["segments"]
            for s in seg["sentences"]
            if s["begin"] is not None and s["end"] is not None
        ]
        said.sort(key=lambda s: int(s["sent_id"]))
        blocks = [b.splitlines() for b in tracks[v["video_id"]].read_text().strip().split("\n\n")]
        assert [b[2] for b in blocks] == [s["sent"].strip() for s in said]
        assert [parse_hms(b[1].split(" --> ")[0]) for b in blocks] == pytest.approx(
            [float(s["begin"]) for s in said], abs=1e-3
        )
    missing = cli(home, "eval", "tutorialvqa", "--data", data, "--split", "nope", ok=False)
    assert missing.returncode == 1 and "no such split" in missing.stderr


# ------------------------------------------------------------------ answers with tools, on the real server


class Steered(OpenAIChatLLM):
    """The real vLLM server with its tool rounds steered, so that each test's path is certain.
    `script` holds one step per round: a `ToolCall` used as if the model had written it (a bad call,
    made certain), a tool name the server must call (a named `tool_choice`: the model still writes
    the arguments), or None (the model chooses). Every conversation sent for a tool decision is kept
    in `sent`. The answer itself is always the server's."""

    def __init__(self, served: OpenAIChatLLM, script: list[ToolCall | str | None]) -> None:
        super().__init__(served.url, served.name, max_retries=0)
        self.script, self.sent = list(script), []  # type: ignore[var-annotated]

    def chat_tools(self, messages, tools, tool_choice="required", max_tokens=256, lenient=False):  # type: ignore[no-untyped-def]
        self.sent.append(list(messages))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, ToolCall):
            return [step]
        if isinstance(step, str):
            tool_choice = {"type": "function", "function": {"name": step}}
        return super().chat_tools(messages, tools, tool_choice, max_tokens, lenient)


def _answered_by_the_model(answer, llm: OpenAIChatLLM) -> None:  # type: ignore[no-untyped-def]
    """The LLM wrote this answer (a fallback does not count), and it cites only its evidence."""
    assert answer.fallback is None, answer.fallback
    assert answer.engine == f"llm:{llm.name}"
    spans = {(e.video_id, e.start, e.end) for e in answer.evidence}
    assert all((c.video_id, c.start, c.end) in spans for c in answer.citations)


def _tool_results(conversation: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [m["content"] for m in conversation if m["role"] == "tool"]


def test_a_tool_round_on_the_server_adds_evidence_and_the_model_answers(library, served) -> None:  # type: ignore[no-untyped-def]
    store, ids = library
    llm = Steered(served, ["search_moments", None])
    answer = ask(store, "how do I add a layer mask?", LLMEngine(llm, AskOptions(max_tool_rounds=2)), "howto")
    _answered_by_the_model(answer, llm)
    first = answer.tools[0]
    assert first.name == "search_moments" and first.error is None and first.arguments["query"]
    assert len(llm.sent) == 2, "the second round was asked with the first round's result"
    [result] = _tool_results(llm.sent[1])  # the server took the tool message (OpenAI tool protocol)
    assert re.match(r"\[\d+\] video [0-9a-f]+, \d\d:\d\d:\d\d - ", result), result
    assert isinstance(answer.reading, Reading)  # what the exit gate read first, then what the tools added
    assert len(answer.evidence) == len(answer.reading.read) + sum(t.added for t in answer.tools)
    assert answer.to_json()["tools"][0]["name"] == "search_moments"


def test_a_tool_call_with_an_invented_id_goes_back_to_the_model(library, served) -> None:  # type: ignore[no-untyped-def]
    """Today's crash: a model reading an invented video. The error is the tool's result, the loop
    goes on, and the model answers; no StoreError reaches the caller."""
    store, ids = library
    invented = ToolCall("read_context", {"video_id": "ffffffffffff", "start": 0, "end": 30}, "call_bad")
    llm = Steered(served, [invented, None])
    answer = ask(store, "what did the witness see?", LLMEngine(llm, AskOptions(max_tool_rounds=2)), "howto")
    _answered_by_the_model(answer, llm)
    assert answer.tools[0].error is not None and "no video with id 'ffffffffffff'" in answer.tools[0].error
    assert answer.tools[0].added == 0
    [result] = _tool_results(llm.sent[1])
    assert result.startswith("error: no video with id 'ffffffffffff'")


def test_the_tool_rounds_stop_at_the_cap_and_the_model_answers(library, served) -> None:  # type: ignore[no-untyped-def]
    store, ids = library
    llm = Steered(served, ["search_moments", "search_moments", "search_moments"])
    answer = ask(store, "how is the bread made?", LLMEngine(llm, AskOptions(max_tool_rounds=2)), "howto")
    _answered_by_the_model(answer, llm)
    assert len(llm.sent) == 2 and len(llm.script) == 1, "a third round was asked for"
    assert [t.name for t in answer.tools] == ["search_moments", "search_moments"]


# ------------------------------------------------------------------ a server that cannot be reached


def test_an_unreachable_server_is_an_error_unless_a_fallback_is_asked(library) -> None:  # type: ignore[no-untyped-def]
    from service.llm_server import free_port

    store, ids = library
    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = LLMEngine(OpenAIChatLLM(url, "qwen0.5b", max_retries=0, timeout=5))
    with pytest.raises(LLMUnavailable, match=f"cannot reach {re.escape(url)}"):
        ask(store, "how do I add a layer mask?", engine, "howto")
    answer = ask(store, "how do I add a layer mask?", engine, "howto", options=AskOptions(fallback=True))
    assert answer.engine == "extractive" and answer.citations
    assert answer.fallback is not None and answer.fallback.source == "llm:qwen0.5b"
    assert "could not be reached" in answer.fallback.reason and url in answer.fallback.reason


def test_the_api_and_the_cli_say_an_unreachable_server(library, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """503 naming the URL, or the marked extractive answer when the request asks for a fallback; the
    CLI exits 1 unless --fallback."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.llm_server import free_port
    from service.settings import Settings

    store, ids = library
    url = f"http://127.0.0.1:{free_port()}/v1"
    key = "test-admin-key-for-answers-0123"
    given: dict[str, object] = dict(
        home=store.home, workers=0, api_key=key, llm="none", llm_url=url, llm_model="qwen0.5b"
    )
    auth = {"Authorization": f"Bearer {key}"}
    question = {"question": "how do I add a layer mask?", "library": "howto"}
    with TestClient(create_app(Settings(**given))) as client:  # type: ignore[arg-type]
        down = client.post("/v1/ask", json=question, headers=auth)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "unavailable" and url in down.json()["error"]["message"]
        marked = client.post("/v1/ask", json={**question, "fallback": True}, headers=auth)
        assert marked.status_code == 200, marked.text
        body = marked.json()
        assert body["engine"] == "extractive" and body["citations"]
        assert body["fallback"]["from"] == "llm:qwen0.5b" and url in body["fallback"]["reason"]
        fine = client.post("/v1/ask", json={**question, "engine": "extractive"}, headers=auth).json()
        assert fine["fallback"] is None and fine["engine"] == "extractive"
        (seen,) = client.get("/ready").json()["llm"]  # what the engine saw of its server
        assert (
            seen["url"] == url
            and not seen["up"]
            and seen["failures"] >= 1
            and "cannot reach" in seen["last_error"]
        )
    env = {"VIDMEM_LLM_URL": url, "VIDMEM_LLM_MODEL": "qwen0.5b", "VIDMEM_LLM": "none"}
    failed = cli(store.home, "ask", "how do I add a layer mask?", "--library", "howto", ok=False, env=env)
    assert failed.returncode == 1 and f"cannot reach {url}" in failed.stderr and "--fallback" in failed.stderr
    proc = cli(
        store.home, "ask", "how do I add a layer mask?", "--library", "howto", "--fallback", "--json", env=env
    )
    said = json.loads(proc.stdout)
    assert said["fallback"]["from"] == "llm:qwen0.5b" and "fallback:" in proc.stderr


# ------------------------------------------------------------------------- the exit gate (reading)


def _gate(bias: float) -> ExitWeights:
    """Stop-head weights whose head says `sigmoid(bias)` whatever it reads."""
    w = ExitWeights.random(len(EXIT_FEATURES), 4, np.random.default_rng(0), threshold=0.5)
    return dataclasses.replace(w, head=np.zeros_like(w.head), head_bias=bias)


def test_ask_reads_gists_then_spans_and_reports_what_it_read(library) -> None:  # type: ignore[no-untyped-def]
    store, ids = library
    answer = ask(store, "how do I add a layer mask?", ExtractiveEngine(), "howto")
    reading = answer.reading
    assert isinstance(reading, Reading)
    assert load_exit_weights() is not None, "the shipped exit weights must load"
    assert reading.exit in ("gate", "all read") and reading.threshold is not None
    roles = [item.role for item in reading.read]
    assert "span" in roles and roles == sorted(roles)  # gists ("gist" < "span") all come first
    # the engine sees what was read, numbered spans first (test_evidence_is_numbered_spans_first...)
    assert [(e.start, e.end, e.role) for e in answer.evidence] == [
        (i.start, i.end, i.role) for i in number_evidence(reading.read)
    ]
    assert reading.tokens == sum(token_counts([i.moment.text for i in reading.read])) > 0
    first_span = next(i.moment for i in reading.read if i.role == "span")
    assert first_span.video_id == ids["photo"] and _covers(first_span, 40.0, 68.0, 0.3)
    assert all(i.stop is not None and 0.0 <= i.stop <= 1.0 for i in reading.read)
    out = answer.to_json()
    assert out["tokens"] == reading.tokens and len(out["read"]) == len(reading.read)  # type: ignore[arg-type]
    assert out["exit"]["reason"] == reading.exit  # type: ignore[index]
    assert answer.citations and answer.citations[0].video_id == ids["photo"]  # a span is quoted, not a gist
    # in one video the scenes rank among the coarse hits: gists are read first, numbered last
    scoped = ask(store, "how do I add a layer mask?", ExtractiveEngine(), "howto", ids["photo"])
    assert isinstance(scoped.reading, Reading)
    read_roles = [i.role for i in scoped.reading.read]
    assert read_roles[0] == "gist" and "span" in read_roles
    gists = [(i.moment.start, i.moment.end) for i in scoped.reading.read if i.role == "gist"]
    assert scoped.evidence[0].role == "span" and scoped.evidence[0].number == 1
    assert [(e.start, e.end) for e in scoped.evidence if e.role == "gist"] == gists
    assert [e.role for e in scoped.evidence] == sorted(read_roles, reverse=True)  # spans, then gists


def test_evidence_is_numbered_spans_first_while_reading_stays_coarse_to_fine() -> None:
    """A small model cites [1] in nearly every answer: [1] must be the best refined moment, never a
    chapter's gist, though the gists are read first."""
    from reasoning.retrieve import Retrieved
    from reasoning.search import Moment

    enc = SentenceEmbedder()
    q = "how long does the dough rise?"
    coarse = [
        Moment("v", 0, 600, 0.9, "Baking bread at home: flour, water, salt and yeast.", "chapter"),
        Moment("v", 0, 60, 0.8, "Kneading and leaving the dough.", "scene"),
    ]
    spans = [
        Moment("v", 20, 30, 3.0, "Leave the dough to rise for an hour.", "span"),
        Moment("v", 40, 50, 1.0, "Then bake it for forty minutes.", "span"),
    ]
    reading = read(q, enc.embed([q])[0], Retrieved(coarse, spans), enc, ReadOptions(gate=False))
    assert [i.role for i in reading.read] == ["gist", "gist", "span", "span"]  # read coarse to fine
    evidence = number_evidence(reading.read)
    assert [(e.number, e.role, e.start) for e in evidence] == [
        (1, "span", 20), (2, "span", 40), (3, "gist", 0), (4, "gist", 0),
    ]  # fmt: skip
    assert evidence[0].line().startswith("[1] video v, 00:00:20 - 00:00:30: Leave the dough")
    assert evidence[2].text.startswith("Baking bread") and "(gist of the part)" in evidence[2].line()


def test_the_exit_gate_stops_at_the_first_span_it_trusts_and_never_on_a_gist(library) -> None:  # type: ignore[no-untyped-def]
    from reasoning.retrieve import retrieve_levels

    store, _ = library
    enc = SentenceEmbedder()
    q = "how do I add a layer mask?"
    qvec = enc.embed([q])[0]
    found = retrieve_levels(store, q, "howto", None, RetrieveOptions(top=5), enc, query_vector=qvec)
    every = read(q, qvec, found, enc, ReadOptions(gate=False))
    assert every.exit == "off" and len(every.read) == every.candidates == len(
        read_candidates(found, ReadOptions())
    )
    sure = read(q, qvec, found, enc, ReadOptions(), weights=_gate(10.0))
    assert sure.exit == "gate" and sure.read[-1].role == "span"
    assert [i.role for i in sure.read].count("span") == 1 and sure.tokens < every.tokens
    unsure = read(q, qvec, found, enc, ReadOptions(), weights=_gate(-10.0))
    assert unsure.exit == "all read" and len(unsure.read) == every.candidates
    assert [i.tokens for i in unsure.read] == [i.tokens for i in every.read]


def test_exit_weights_keep_their_threshold_and_refuse_other_features() -> None:
    w = ExitWeights.random(len(EXIT_FEATURES), 4, np.random.default_rng(2), threshold=0.73)
    raw = json.loads(json.dumps(w.to_json()))
    again = ExitWeights.from_json(raw)
    assert again.threshold == 0.73
    np.testing.assert_array_equal(again.weight_hh, w.weight_hh)
    raw["features"] = raw["features"][:-1]
    try:
        ExitWeights.from_json(raw)
    except ValueError as e:
        assert "refit" in str(e)
    else:
        raise AssertionError("weights fitted on other features must be refused")


def test_exit_features_see_only_what_was_read_and_the_scores() -> None:
    from reasoning.search import Moment

    enc = SentenceEmbedder()
    q = "how long does the dough rise?"
    items = [
        ("gist", Moment("v", 0, 60, 0.1, "Baking bread at home.", "scene")),
        ("span", Moment("v", 20, 30, 3.0, "Leave the dough to rise for an hour.", "span")),
        ("span", Moment("v", 40, 50, 1.0, "Then bake it for forty minutes.", "span")),
    ]
    texts = [m.text for _, m in items]
    tokens = token_counts(texts)
    x = exit_features(q, enc.embed([q])[0], items, enc.embed(texts), tokens)
    f = {name: x[:, i] for i, name in enumerate(EXIT_FEATURES)}
    assert list(f["is_gist"]) == [1, 0, 0]
    assert f["score"][0] == 0 and f["score"][1] == pytest.approx(3.0 / 5)
    assert f["score_drop"][1] == 0 and f["score_drop"][2] == pytest.approx(2.0 / 5)
    assert f["next_drop"][1] == pytest.approx(2.0 / 5) and f["next_drop"][2] == 1.0  # nothing after it
    assert np.all(np.diff(f["q_cover"]) >= 0) and f["q_cover"][1] > f["q_cover"][0]  # "dough", "rise"
    assert np.all(np.diff(f["log_tokens"]) > 0) and f["redundancy"][0] == 0
    assert list(f["spans_left"] * 10) == [2, 1, 0]


# ------------------------------------------------ a whole video, part by part (GRU-Mem, real server)


class Gated(OpenAIChatLLM):
    """The real vLLM server, with some reading steps' decisions pinned by narrowing the schema the
    server decodes under (`{"const": value}`): the model still writes its memory; which step updates
    or exits is made certain. Every step's schema is kept in `schemas`."""

    def __init__(self, served: OpenAIChatLLM, pins: dict[int, dict[str, bool]]) -> None:
        super().__init__(served.url, served.name, max_retries=0)
        self.pins, self.step, self.schemas = pins, 0, []  # type: ignore[var-annotated]

    def chat_json(self, messages, schema, max_tokens=256):  # type: ignore[no-untyped-def]
        if "exit" in schema["properties"]:
            self.step += 1
            props = dict(schema["properties"])
            for key, value in self.pins.get(self.step, {}).items():
                props[key] = {"type": "boolean", "const": value}
            schema = {**schema, "properties": props}
            self.schemas.append(schema)
        return super().chat_json(messages, schema, max_tokens)


def test_the_parts_of_a_whole_video_cover_its_lines_once_in_order(library) -> None:  # type: ignore[no-untyped-def]
    store, ids = library
    parts = whole_chunks(store, ids["photo"], 60)
    lines = [line for p in parts for line in p.lines]
    assert len(parts) > 2 and [n.number for n in parts] == list(range(1, len(parts) + 1))
    with store.session() as s:
        cues = s.execute(
            select(TranscriptCue.start)
            .where(TranscriptCue.video_id == ids["photo"])
            .order_by(TranscriptCue.start)
        ).all()
    assert [a for a, _, _ in lines] == [c.start for c in cues]
    for p in parts:
        sizes = token_counts([t for _, _, t in p.lines])
        assert sum(sizes) <= 60 or len(p.lines) == 1


def test_a_whole_video_read_part_by_part_on_the_server(library, served) -> None:  # type: ignore[no-untyped-def]
    store, ids = library
    pins = {1: {"update": False, "exit": True}, 2: {"exit": False}, 3: {"update": True, "exit": True}}
    llm = Gated(served, pins)
    options = WholeOptions(chunk_tokens=60, memory_chars=200)
    answer = read_whole(store, ids["photo"], "What does the video teach, step by step?", llm, options)
    reading = answer.reading
    assert isinstance(reading, WholeReading)
    assert reading.exit == "model" and len(reading.steps) == 3 < reading.chunks  # its exit gate stopped it
    assert reading.steps[0].update is False and reading.steps[0].memory == ""  # the update gate kept it empty
    assert reading.steps[0].exit and reading.steps[0].ignored  # nothing kept: its exit is not followed
    assert [s["properties"]["exit"].get("const") for s in llm.schemas] == [True, False, True]
    assert reading.steps[2].update and 0 < len(reading.steps[2].memory) <= 200
    assert reading.memory == reading.steps[2].memory
    assert reading.tokens == llm.prompt_tokens > 0
    assert answer.engine == f"gru-mem:{served.name}"
    read_spans = {(s.chunk.start, s.chunk.end) for s in reading.steps}
    assert all((c.start, c.end) in read_spans for c in answer.citations)
    out = answer.to_json()
    assert out["exit"] == {"reason": "model", "after": 3, "of": reading.chunks}
    assert [r["update"] for r in out["read"]][0] is False  # type: ignore[index]
    free = read_whole(
        store, ids["bread"], "What is made in this video?", served, WholeOptions(chunk_tokens=60)
    )
    assert isinstance(free.reading, WholeReading) and free.reading.exit in ("model", "all read")
    assert len(free.reading.memory) <= WholeOptions().memory_chars
