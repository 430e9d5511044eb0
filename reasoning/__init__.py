"""Reasoning over what was ingested: search now; answers, tools and generation come next.

Reads the memory only (never imports indexers)."""

from reasoning.search import Moment, SearchOptions, search

__all__ = ["Moment", "SearchOptions", "search"]
