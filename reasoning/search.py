"""Hybrid search: BM25 over the stored text and dense search in FAISS, fused by reciprocal rank.

Searches the units written at ingestion (transcript windows; shots with their speech, on-screen
text and tags; scenes and chapters with their captions) across a library or inside one video.
With an image encoder that has a text tower (CLIP/SigLIP), the query also searches the shots'
visual vectors (text-to-frame). `search_frame` finds the shots that look like a given frame.
Overlapping hits from the same video are merged into one moment.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from memory import EmbeddingRow, Library, Store, StoreError, Video
from memory.encoders import Embedder, SentenceEmbedder
from memory.images import ImageEncoder

_TOKEN = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "she",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOP]


@dataclass
class Moment:
    """A place in a video that answers a query; times in seconds."""

    video_id: str
    start: float
    end: float
    score: float
    text: str
    kind: str  # window | shot | scene | chapter

    def to_json(self) -> dict[str, object]:
        return {
            "video_id": self.video_id,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "score": round(self.score, 6),
            "text": self.text,
            "level": self.kind,
        }


LEVELS = {
    "moment": ("window", "shot"),
    "shot": ("shot",),
    "scene": ("scene",),
    "chapter": ("chapter",),
    "all": ("window", "shot", "scene", "chapter"),
}
"""What `--level` searches: moments (transcript windows and shots, the default), one level, or all."""


@dataclass
class SearchOptions:
    top: int = 10
    """Moments returned."""
    candidates: int = 50
    """Hits taken from each of the lexical and the dense ranking before fusion."""
    rrf_k: float = 60.0
    """Reciprocal-rank-fusion constant: larger flattens the ranks' weights."""
    k1: float = 1.2
    """BM25 term-frequency saturation."""
    b: float = 0.75
    """BM25 length normalisation."""
    level: str = "moment"
    """Which units compete: a key of LEVELS."""

    def __post_init__(self) -> None:
        if self.top < 1 or self.candidates < 1:
            raise ValueError(f"top and candidates must be >= 1, got {self.top}, {self.candidates}")
        if self.level not in LEVELS:
            raise ValueError(f"unknown level {self.level!r}; choose one of {', '.join(LEVELS)}")


def bm25(query: Sequence[str], docs: Sequence[Sequence[str]], k1: float, b: float) -> list[float]:
    """Okapi BM25 score of each tokenised doc for the tokenised query."""
    n = len(docs)
    if n == 0 or not query:
        return [0.0] * n
    avg = sum(len(d) for d in docs) / n or 1.0
    df: Counter[str] = Counter()
    for d in docs:
        df.update(set(d))
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in set(query)}
    scores = []
    for d in docs:
        tf = Counter(d)
        norm = k1 * (1 - b + b * len(d) / avg)
        scores.append(sum(idf[t] * tf[t] * (k1 + 1) / (tf[t] + norm) for t in query if tf[t]))
    return scores


def search(
    store: Store,
    query: str,
    library: str | None = "default",
    video_id: str | None = None,
    options: SearchOptions | None = None,
    embedder: Embedder | None = None,
    image_encoder: ImageEncoder | None = None,
) -> list[Moment]:
    """Moments for `query` in a library (or all libraries when None) or in one video, best first."""
    opts = options or SearchOptions()
    query = query.strip()
    if not query:
        raise ValueError("empty query: say what to look for")
    rows, lib_ids = _scope(store, library, video_id, opts.level)
    if not rows:
        return []

    ids = [i for i in rows if rows[i].modality == "text"]
    lexical = bm25(tokens(query), [tokens(rows[i].text) for i in ids], opts.k1, opts.b)
    lex_rank = [i for _, i in sorted(((-sc, i) for sc, i in zip(lexical, ids, strict=True) if sc > 0))]
    rankings = [lex_rank[: opts.candidates]]

    enc = embedder or SentenceEmbedder()
    rankings.append(_dense(store, rows, lib_ids, enc.space, enc.embed([query])[0], opts, video_id))
    if image_encoder is not None and image_encoder.has_text:
        qvec = image_encoder.encode_text([query])[0]
        rankings.append(_dense(store, rows, lib_ids, image_encoder.space, qvec, opts, video_id))
    return _fuse(rows, rankings, opts)


def search_frame(
    store: Store,
    frame: np.ndarray,
    encoder: ImageEncoder,
    library: str | None = "default",
    video_id: str | None = None,
    options: SearchOptions | None = None,
) -> list[Moment]:
    """Shots that look like `frame` (an RGB uint8 array (H, W, 3)), best first."""
    opts = options or SearchOptions(level="shot")
    rows, lib_ids = _scope(store, library, video_id, opts.level)
    qvec = encoder.encode(frame[None])[0]
    return _fuse(rows, [_dense(store, rows, lib_ids, encoder.space, qvec, opts, video_id)], opts)


def _scope(store: Store, library: str | None, video_id: str | None, level: str):  # type: ignore[no-untyped-def]
    """The searchable rows (id -> row) in scope, and the libraries they come from."""
    with store.session() as s:
        if video_id is not None:
            lib_ids = [store.get_video(s, video_id).library_id]
        elif library is not None:
            lib_ids = [store.library(s, library, create=False).id]
        else:
            lib_ids = list(s.scalars(select(Library.id)))
        scope = select(
            EmbeddingRow.id,
            EmbeddingRow.video_id,
            EmbeddingRow.start,
            EmbeddingRow.end,
            EmbeddingRow.text,
            EmbeddingRow.kind,
            EmbeddingRow.space,
            EmbeddingRow.library_id,
            EmbeddingRow.modality,
        )
        scope = scope.join(Video, Video.id == EmbeddingRow.video_id).where(
            EmbeddingRow.library_id.in_(lib_ids), Video.status == "ready"
        )
        if video_id is not None:
            scope = scope.where(EmbeddingRow.video_id == video_id)
        scope = scope.where(EmbeddingRow.kind.in_(LEVELS[level]))
        rows = {r.id: r for r in s.execute(scope)}
    return rows, lib_ids


def _dense(store, rows, lib_ids, space: str, qvec, opts: SearchOptions, video_id) -> list[int]:  # type: ignore[no-untyped-def]
    """Ids of the rows in scope nearest to qvec in one vector space, best first."""
    dense: list[tuple[int, float]] = []
    for lib_id in lib_ids:
        allowed = [i for i in rows if rows[i].library_id == lib_id and rows[i].space == space]
        if allowed:
            dense += store.vectors.search(
                lib_id,
                space,
                qvec,
                opts.candidates,
                # restricted in FAISS when the scope is narrower than the library's index
                allowed=allowed if video_id is not None or opts.level != "all" else None,
            )
    dense = [(i, sc) for i, sc in dense if i in rows]
    dense.sort(key=lambda p: -p[1])
    return [i for i, _ in dense[: opts.candidates]]


def _fuse(rows, rankings: list[list[int]], opts: SearchOptions) -> list[Moment]:  # type: ignore[no-untyped-def]
    """Reciprocal-rank fusion of the rankings; overlapping hits in one video become one moment."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, i in enumerate(ranking):
            fused[i] = fused.get(i, 0.0) + 1.0 / (opts.rrf_k + rank + 1)
    order = sorted(fused, key=lambda i: -fused[i])

    moments: list[Moment] = []
    for i in order:
        r = rows[i]
        if any(m.video_id == r.video_id and _overlap(m.start, m.end, r.start, r.end) > 0.5 for m in moments):
            continue
        moments.append(Moment(r.video_id, r.start, r.end, fused[i], r.text, r.kind))
        if len(moments) == opts.top:
            break
    return moments


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Intersection over the shorter span."""
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    return inter / max(1e-6, min(a1 - a0, b1 - b0))


__all__ = ["Moment", "SearchOptions", "StoreError", "bm25", "search", "search_frame", "tokens"]
