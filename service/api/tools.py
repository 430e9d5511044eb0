"""`/v1/tools`: the agent tools over REST — the same definitions and behaviour as the answer loop,
LangChain and MCP (`reasoning.tools.AGENT_TOOLS`, `call_agent_tool`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from reasoning.tools import AGENT_TOOLS, ToolError, call_agent_tool
from service import jobs
from service.api.deps import API_PREFIX, Caller, Svc, readable_library, readable_video, require_writer
from service.api.errors import BODY, CALLER, ApiError, errors

router = APIRouter(prefix=API_PREFIX, tags=["tools"])

WRITES = {"request_insert", "request_edit"}


class ToolCallIn(BaseModel):
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="The tool's arguments (its JSON schema)."
    )
    library: str | None = Field(
        default=None, max_length=128, description="The library searched (default: the key's, else `default`)."
    )


class ToolCallOut(BaseModel):
    tool: str
    result: Any = Field(description="What the tool returned: moments, a job, a job's status.")


@router.get("/tools", responses=errors(*CALLER))
def tools(who: Caller) -> list[dict[str, Any]]:
    """The agent tools' definitions (OpenAI function format, JSON Schema parameters)."""
    return AGENT_TOOLS


@router.post("/tools/{name}", responses=errors(*CALLER, *BODY, 403, 404))
async def call(name: str, body: ToolCallIn, who: Caller, svc: Svc) -> ToolCallOut:
    """Call one tool. A request the tool cannot run (unknown tool, bad arguments, an edit that cannot
    be honoured) is a 422 whose message says how to fix the call, and nothing is queued."""
    names = {t["function"]["name"] for t in AGENT_TOOLS}
    if name not in names:
        raise ApiError(404, "not_found", f"no tool {name!r}; the tools are {', '.join(sorted(names))}")
    library = body.library
    if library is None and who.library_id is not None:
        library = next((lib.name for lib, _ in svc.store.libraries() if lib.id == who.library_id), None)
    if library is not None:
        readable_library(svc, who, library)
    video = body.arguments.get("video_id")
    if isinstance(video, str) and name != "job_status":
        v = readable_video(svc, who, video)
        library = v.library.name
        if name in WRITES:
            require_writer(who, v.library, "requesting an edit")
    try:
        result = await run_in_threadpool(
            call_agent_tool,
            svc.store,
            name,
            body.arguments,
            library,
            jobs.QueueEdits(svc.store, library if who.library_id is not None else None),
            svc.settings.generation_options(),
            svc.embedder(),
        )
    except ToolError as e:
        raise ApiError(422, "invalid_tool_call", str(e)) from None
    return ToolCallOut(tool=name, result=result)
