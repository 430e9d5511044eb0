"""The memory of vidmem: the SQL catalog, the FAISS indexes derived from it, and (later) the gate.

Nothing heavy is imported here; faiss loads when a vector index is first used.
"""

from memory.catalog import (
    LEVELS,
    STAGES,
    ApiKey,
    EmbeddingRow,
    IngestJob,
    Job,
    Library,
    ScreenText,
    Segment,
    Tag,
    TranscriptCue,
    Video,
    WebSession,
)
from memory.store import Store, StoreError

__all__ = [
    "LEVELS",
    "STAGES",
    "ApiKey",
    "EmbeddingRow",
    "IngestJob",
    "Job",
    "Library",
    "ScreenText",
    "Segment",
    "Store",
    "StoreError",
    "Tag",
    "TranscriptCue",
    "Video",
    "WebSession",
]
