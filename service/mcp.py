"""`vidmem mcp`: the agent tools as an MCP server (the official `mcp` SDK, stdio).

The same five tools as the answer loop, the REST API (`/v1/tools`) and LangChain, run by the same
`reasoning.tools.call_agent_tool`: `search_moments`, `read_context`, `request_insert`, `request_edit`
(queued as `generate` jobs for the service's workers, or for `vidmem jobs`), `job_status`. It runs
as the local user (like the CLI), reading one library by default. A call that cannot run is a tool
error whose text says how to fix it, and nothing is queued.
"""

from __future__ import annotations

from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError as McpToolError

from memory import Store
from reasoning.tools import AGENT_TOOLS, ToolError, call_agent_tool
from service.jobs import QueueEdits
from service.settings import Settings


def build_server(settings: Settings, library: str | None = None) -> MCPServer:
    store = Store(settings.home, settings.database_url, settings.index_backend)
    scope = library or settings.library
    edits = QueueEdits(store, None)
    options = settings.generation_options()
    described = {t["function"]["name"]: t["function"]["description"] for t in AGENT_TOOLS}

    def call(name: str, **arguments: Any) -> Any:
        given = {k: v for k, v in arguments.items() if v is not None}
        try:
            return call_agent_tool(store, name, given, scope, edits, options)
        except ToolError as e:  # the caller's to fix: its text goes back, not a crash report
            raise McpToolError(str(e)) from None

    server = MCPServer(
        name="vidmem",
        instructions=f"Search and read the recordings of library {scope!r}; request inserts and edits, "
        "which render as jobs onto a timeline; follow them with job_status. Times are seconds.",
    )

    def search_moments(query: str, video_id: str | None = None, top: int = 5) -> list[dict[str, Any]]:
        return call("search_moments", query=query, video_id=video_id, top=top)  # type: ignore[no-any-return]

    def read_context(video_id: str, start: float, end: float) -> list[dict[str, Any]]:
        return call("read_context", video_id=video_id, start=start, end=end)  # type: ignore[no-any-return]

    def request_insert(
        video_id: str,
        operation: Literal["generate", "extend", "title", "freeze"],
        at: float,
        duration: float | None = None,
        intent: str = "",
        text: str | None = None,
        seed: int | None = None,
        backend: str = "ffmpeg",
    ) -> dict[str, Any]:
        return call("request_insert", video_id=video_id, operation=operation, at=at, duration=duration,  # type: ignore[no-any-return]
                    intent=intent, text=text, seed=seed, backend=backend)  # fmt: skip

    def request_edit(
        video_id: str,
        operation: Literal["bridge", "retake", "slowmo", "pip", "trim", "crossfade"],
        start: float,
        end: float,
        duration: float | None = None,
        intent: str = "",
        speed: float | None = None,
        overlay_video_id: str | None = None,
        overlay_start: float | None = None,
        seed: int | None = None,
        backend: str = "ffmpeg",
    ) -> dict[str, Any]:
        return call("request_edit", video_id=video_id, operation=operation, start=start, end=end,  # type: ignore[no-any-return]
                    duration=duration, intent=intent, speed=speed, overlay_video_id=overlay_video_id,
                    overlay_start=overlay_start, seed=seed, backend=backend)  # fmt: skip

    def job_status(job_id: str) -> dict[str, Any]:
        return call("job_status", job_id=job_id)  # type: ignore[no-any-return]

    for fn in (search_moments, read_context, request_insert, request_edit, job_status):
        server.add_tool(fn, name=fn.__name__, description=described[fn.__name__])
    return server
