"""`/v1/search` (moments) and `/v1/ask` (an answer citing them), within what the key may read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query

from service.api.deps import API_PREFIX, Caller, Svc, check_limits, link, query_library
from service.api.errors import BODY, CALLER, ApiError, errors
from service.api.models import AnswerOut, AskIn, MomentOut, SearchOut

if TYPE_CHECKING:
    from reasoning.answer import Answer, AnswerEngine
    from service.api.deps import Service

router = APIRouter(prefix=API_PREFIX, tags=["search"])


@router.get("/search", responses=errors(*CALLER, 400, 404, 422))
def search_moments(
    who: Caller,
    svc: Svc,
    q: Annotated[str, Query(min_length=1, max_length=10_000, description="What to look for.")],
    library: Annotated[str | None, Query(max_length=128)] = None,
    video: Annotated[str | None, Query(max_length=32)] = None,
    level: Literal["moment", "all", "chapter", "scene", "shot", "cue"] = "moment",
    top: Annotated[int, Query(ge=1, le=10_000)] = 10,
    start: Annotated[float | None, Query(alias="from", ge=0, description="Seconds (one video).")] = None,
    end: Annotated[float | None, Query(alias="to", ge=0, description="Seconds (one video).")] = None,
    refine: bool = False,
) -> SearchOut:
    """Hybrid (BM25 + dense) search; `refine` cuts each hit to where the answer starts and ends."""
    from reasoning.retrieve import RetrieveOptions, retrieve
    from reasoning.search import SearchOptions, search

    check_limits(svc.settings, q, top)
    scope = query_library(svc, who, library, video)
    if start is not None and end is not None and start >= end:
        raise ApiError(422, "invalid_request", "`from` must be before `to`")
    enc = svc.embedder()
    if refine:
        opts = RetrieveOptions(top=top)
        found = retrieve(svc.store, q, scope, video, opts, enc, time_from=start, time_to=end)
    else:
        options = SearchOptions(top=top, level=level)
        found = search(svc.store, q, scope, video, options, enc, time_from=start, time_to=end)
    return SearchOut(query=q, library=scope, video=video, moments=[moment_out(m.to_json()) for m in found])


def _read_whole(svc: Service, body: AskIn, engine: AnswerEngine) -> Answer:
    from reasoning.answer import LLMEngine
    from reasoning.gru_mem import read_whole

    if body.video is None:
        raise ApiError(422, "invalid_request", "`mode: whole` reads one video: give `video`")
    if not isinstance(engine, LLMEngine):
        raise ApiError(
            422, "invalid_request", "`mode: whole` needs an LLM engine (`engine`: openai or local)"
        )
    return read_whole(svc.store, body.video, body.question, engine.llm)


def moment_out(m: dict[str, Any]) -> MomentOut:
    """A moment with the page's deep links: its own, and each of the other times it was seen."""
    also = [{**o, "link": link(o["video_id"], o["start"])} for o in m["also"]]
    return MomentOut.model_validate({**m, "also": also, "link": link(m["video_id"], m["start"])})


@router.post("/ask", response_model_exclude_unset=True, responses=errors(*CALLER, *BODY, 404, 503))
def ask(body: AskIn, who: Caller, svc: Svc) -> AnswerOut:
    """Answer a question from the videos with citations inside the evidence it was given."""
    from memory.runtime.llm import LLMUnavailable
    from reasoning.answer import AskOptions
    from reasoning.answer import ask as run_ask

    check_limits(svc.settings, body.question, body.evidence)
    scope = query_library(svc, who, body.library, body.video)
    options = AskOptions(
        evidence=body.evidence, gists=body.gists, exit_gate=body.exit_gate, fallback=body.fallback
    )
    try:
        engine = svc.engine(body.engine)
        if body.mode == "whole":
            answer = _read_whole(svc, body, engine)
        else:
            answer = run_ask(svc.store, body.question, engine, scope, body.video, options, svc.embedder())
    except LLMUnavailable as e:
        raise ApiError(
            503,
            "unavailable",
            f"the answer engine's LLM server cannot be reached: {e} (ask with "
            '"fallback": true for the extractive answer)',
        ) from None
    out = answer.to_json()
    out["citations"] = [{**c.to_json(), "link": link(c.video_id, c.start)} for c in answer.citations]
    return AnswerOut.model_validate(out)
