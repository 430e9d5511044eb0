"""vidmem for LangChain: a retriever of moments and the same tools an answer loop calls.

`VidmemRetriever` returns `Document`s whose `page_content` is what is said in the moment and whose
`metadata` is the rest of the moment's one JSON shape (`Moment.to_json`): `video_id`, `start`, `end`
(seconds), `timestamp` and `end_timestamp` (`HH:MM:SS`), `level` (and `kind`, the same) and `score`,
so a chain can cite and seek. `langchain_tools()` wraps `reasoning.tools` as LangChain tools with the
same JSON-schema arguments. langchain-core is imported here only, when this module is.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import StructuredTool
from pydantic import ConfigDict

from memory import Store
from reasoning.search import Moment
from reasoning.tools import EDIT_TOOLS, TOOLS, Edits, call_agent_tool, read_context, search_moments


def to_document(m: Moment) -> Document:
    """The moment's text as the page, the rest of its one JSON shape (`Moment.to_json`) as metadata."""
    metadata = m.to_json()
    return Document(page_content=str(metadata.pop("text")), metadata=metadata)


class VidmemRetriever(BaseRetriever):
    """Moments of a library (or of one video) for a query, coarse to fine, as Documents."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Store
    library: str | None = "default"
    video_id: str | None = None
    k: int = 5

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [
            to_document(m) for m in search_moments(self.store, query, self.library, self.video_id, self.k)
        ]


def langchain_tools(
    store: Store,
    library: str | None = "default",
    edits: Edits | None = None,
    backend_options: dict[str, dict[str, Any]] | None = None,
) -> list[StructuredTool]:
    """`search_moments` and `read_context` as LangChain tools, bound to one library; with `edits`
    (e.g. `service.jobs.QueueEdits`), also `request_insert`, `request_edit` and `job_status`."""
    specs = {t["function"]["name"]: t["function"] for t in TOOLS}

    def search(query: str, video_id: str | None = None, top: int = 5) -> list[dict[str, Any]]:
        return [m.to_json() for m in search_moments(store, query, library, video_id, top)]

    def context(video_id: str, start: float, end: float) -> dict[str, Any]:
        return read_context(store, video_id, start, end, library).to_json()

    tools = [
        StructuredTool.from_function(
            func=search,
            name="search_moments",
            description=specs["search_moments"]["description"],
            args_schema=specs["search_moments"]["parameters"],
        ),
        StructuredTool.from_function(
            func=context,
            name="read_context",
            description=specs["read_context"]["description"],
            args_schema=specs["read_context"]["parameters"],
        ),
    ]
    for spec in (t["function"] for t in EDIT_TOOLS if edits is not None):

        def run(_name: str = spec["name"], **arguments: Any) -> Any:
            return call_agent_tool(store, _name, arguments, library, edits, backend_options)

        tools.append(
            StructuredTool.from_function(
                func=run, name=spec["name"], description=spec["description"], args_schema=spec["parameters"]
            )
        )
    return tools
