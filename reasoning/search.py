"""Hybrid search: BM25 over the stored text and dense search in FAISS, fused by reciprocal rank.

Searches the units written at ingestion (transcript windows; shots with their speech, on-screen
text and tags; scenes and chapters with their captions) across a library or inside one video.
With an image encoder that has a text tower (CLIP/SigLIP), the query also searches the shots'
visual vectors (text-to-frame). `search_frame` finds the shots that look like a given frame.
Overlapping hits from the same video are merged into one moment.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from kernels.timecode import hms
from memory import EmbeddingRow, Library, Store, StoreError, Video
from memory.bank import exemplars_seen_in, interleave, occurrences, unit_scores
from memory.lexical import LexicalRows, bm25_top, tokens
from memory.runtime.images import ImageEncoder
from memory.runtime.text import Embedder, SentenceEmbedder


@dataclass
class Moment:
    """A place in a video that answers a query; times in seconds."""

    video_id: str
    start: float
    end: float
    score: float
    text: str
    kind: str  # window | shot | scene | chapter
    also: list[tuple[str, float, float]] = field(default_factory=list)
    """The other units the memory folded into this one's slot (video id, start, end): the same
    thing seen again, each citable."""

    def to_json(self) -> dict[str, object]:
        """The one JSON shape of a moment: `vidmem search --json`, the API (which adds its `link`),
        the tools' results and LangChain's metadata. `kind` repeats `level` (the unit's kind: window,
        cue, shot, scene, chapter, span, context) for the clients that read it under that name."""
        return {
            "video_id": self.video_id,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "timestamp": hms(self.start),
            "end_timestamp": hms(self.end),
            "level": self.kind,
            "kind": self.kind,
            "score": round(float(self.score), 6),
            "text": self.text,
            "also": [
                {"video_id": v, "start": round(a, 3), "end": round(b, 3), "timestamp": hms(a)}
                for v, a, b in self.also
            ],
        }


LEVELS = {
    "moment": ("window", "shot"),
    "shot": ("shot",),
    "scene": ("scene",),
    "chapter": ("chapter",),
    "cue": ("cue",),
    "all": ("cue", "window", "shot", "scene", "chapter"),
}
"""What `--level` searches: moments (transcript windows and shots, the default), one level (`cue`: a
single transcript line), or all."""


ALSO_LIMIT = 50
"""Other occurrences listed with a moment (a slide shown a hundred times lists fifty)."""


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
    *,
    time_from: float | None = None,
    time_to: float | None = None,
    query_vector: np.ndarray | None = None,
) -> list[Moment]:
    """Moments for `query` in a library (or all libraries when None) or in one video, best first.

    `time_from`/`time_to` (seconds on each video's own timeline; meant for one video) keep the
    units that overlap that range. `query_vector`: the query already embedded by `embedder` (a
    caller that needs the vector too embeds once: it is most of a query's time on a CPU).
    """
    opts = options or SearchOptions()
    query = query.strip()
    if not query:
        raise ValueError("empty query: say what to look for")
    scope = _scope(store, library, video_id, opts.level, time_from, time_to)
    if not scope:
        return []
    lexical = bm25_top(
        [(rows, mask) for _, rows, mask in scope.parts], tokens(query), opts.k1, opts.b, opts.candidates
    )
    rankings = [[i for i, _ in lexical]]
    enc = embedder or SentenceEmbedder()
    qvec = enc.embed([query])[0] if query_vector is None else query_vector
    rankings.append(_dense(store, scope, enc.space, qvec, opts))
    if image_encoder is not None and image_encoder.has_text:
        rankings.append(
            _dense(store, scope, image_encoder.space, image_encoder.encode_text([query])[0], opts)
        )
    return _fuse(store, scope, rankings, opts, (enc.space, qvec))


def search_frame(
    store: Store,
    frame: np.ndarray,
    encoder: ImageEncoder,
    library: str | None = "default",
    video_id: str | None = None,
    options: SearchOptions | None = None,
    *,
    time_from: float | None = None,
    time_to: float | None = None,
) -> list[Moment]:
    """Shots that look like `frame` (an RGB uint8 array (H, W, 3)), best first."""
    opts = options or SearchOptions(level="shot")
    scope = _scope(store, library, video_id, opts.level, time_from, time_to)
    if not scope:
        return []
    qvec = encoder.encode(frame[None])[0]
    return _fuse(store, scope, [_dense(store, scope, encoder.space, qvec, opts)], opts, (encoder.space, qvec))


@dataclass
class _Scope:
    parts: list[tuple[int, LexicalRows, np.ndarray]]
    """Per library in scope: its id, its rows (the lexical file) and the mask (N,) of the rows a
    query may return: those of the videos in scope, and the memory's exemplars of units of theirs
    that folded into a slot of another video."""
    videos: frozenset[str]
    time_from: float | None = None
    time_to: float | None = None

    def __bool__(self) -> bool:
        return bool(self.parts)

    def holds(self, video: str, start: float, end: float) -> bool:
        """Whether a unit (an occurrence) is inside the scope."""
        return (
            video in self.videos
            and (self.time_from is None or end > self.time_from)
            and (self.time_to is None or start < self.time_to)
        )


def _scope(
    store: Store,
    library: str | None,
    video_id: str | None,
    level: str,
    time_from: float | None,
    time_to: float | None,
) -> _Scope:
    """The rows in scope, from the derived per-library files: SQL answers only which libraries and
    which ready videos (a few rows), never the embedding rows themselves."""
    if time_from is not None and time_to is not None and time_from >= time_to:
        raise ValueError(f"time_from ({time_from} s) must be before time_to ({time_to} s)")
    with store.session() as s:
        if video_id is not None:
            lib_ids = [store.get_video(s, video_id).library_id]
        elif library is not None:
            lib_ids = [store.library(s, library, create=False).id]
        else:
            lib_ids = list(s.scalars(select(Library.id)))
        ready = select(Video.id).where(Video.library_id.in_(lib_ids), Video.status == "ready")
        if video_id is not None:
            ready = ready.where(Video.id == video_id)
        videos = list(s.scalars(ready))
        folded = np.array(exemplars_seen_in(s, videos) if video_id is not None else [], dtype=np.int64)
    scope = _Scope([], frozenset(videos), time_from, time_to)
    for lib_id in lib_ids:
        rows = store.lexical.load(lib_id)
        if rows is None:
            continue
        key = ("scope", frozenset(LEVELS[level]), frozenset(videos))
        mask = rows.memo(key, lambda: rows.is_("kind", LEVELS[level]) & rows.is_("video", videos))  # noqa: B023
        if time_from is not None or time_to is not None:
            mask = mask.copy()
            if time_from is not None:
                mask &= rows.end > time_from
            if time_to is not None:
                mask &= rows.start < time_to
        if len(folded):  # exemplars elsewhere of this video's folded units (times: checked per occurrence)
            pos = rows.positions(folded)
            pos = pos[pos >= 0]
            if len(pos):
                mask = mask.copy()
                mask[pos] |= rows.is_("kind", LEVELS[level])[pos]
        if mask.any():
            scope.parts.append((lib_id, rows, mask))
    return scope


def _dense(store: Store, scope: _Scope, space: str, qvec: np.ndarray, opts: SearchOptions) -> list[int]:
    """Ids of the rows in scope nearest to qvec in one vector space, best first."""
    dense: list[tuple[int, float]] = []
    for lib_id, rows, mask in scope.parts:
        in_space = rows.is_("space", [space])

        def narrowed() -> tuple[np.ndarray, int, np.ndarray | None]:
            allowed = mask & in_space  # noqa: B023
            n = int(np.count_nonzero(allowed))
            # restricted in FAISS only when the scope is narrower than the library's index
            whole = n == int(np.count_nonzero(in_space))  # noqa: B023
            return allowed, n, None if whole else rows.ids[allowed]  # noqa: B023

        allowed, n, ids = rows.derived(f"dense:{space}", mask, narrowed)
        if n == 0:
            continue
        found = store.vectors.search(lib_id, space, qvec, opts.candidates, allowed=ids)
        pos = rows.positions(np.array([i for i, _ in found], dtype=np.int64))
        dense += [hit for hit, p in zip(found, pos, strict=True) if p >= 0 and allowed[p]]
    dense.sort(key=lambda p: -p[1])
    return _slots_by_best_unit(store, scope, space, qvec, dense[: opts.candidates])


def _slots_by_best_unit(
    store: Store, scope: _Scope, space: str, qvec: np.ndarray, hits: list[tuple[int, float]]
) -> list[int]:
    """Ids best first, a memory slot's exemplar scoring as the best of itself and the units in scope
    that folded into it, each by its own rows (kept in SQL): the index holds one unit of a slot, and
    a returning camera set-up folded into another's slot should rank as well as the set-up it is.
    Units that joined through a merge of slots (a full bank) do not lift it: on TutorialVQA at 30%
    kept they cost 0.7 points of R5@0.3 where folds alone changed nothing (one-off)."""
    with store.session() as s:
        units = unit_scores(s, [i for i, _ in hits], (space, qvec), folded=True)
    best = {
        hit: max((u.similarity for u in us if scope.holds(u.video, u.start, u.end)), default=-2.0)
        for hit, us in units.items()
    }
    hits = [(i, max(score, best.get(i, -2.0))) for i, score in hits]
    return [i for i, _ in sorted(hits, key=lambda p: -p[1])]


def _fuse(
    store: Store,
    scope: _Scope,
    rankings: list[list[int]],
    opts: SearchOptions,
    query: tuple[str, np.ndarray] | None = None,
) -> list[Moment]:
    """Reciprocal-rank fusion of the rankings; overlapping hits in one video become one moment.
    A hit on a memory slot stands for each of its places, ranked by their own likeness to the query
    (`memory.bank.interleave`). Only the chosen moments' texts are read from SQL."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, i in enumerate(ranking):
            fused[i] = fused.get(i, 0.0) + 1.0 / (opts.rrf_k + rank + 1)
    order = sorted(fused, key=lambda i: -fused[i])
    where: dict[int, tuple[LexicalRows, int]] = {}
    wanted = np.array(order, dtype=np.int64)
    for _, rows, _ in scope.parts:
        for i, p in zip(order, rows.positions(wanted), strict=True):
            if p >= 0:
                where[i] = (rows, int(p))
    with store.session() as s:
        slots = occurrences(s, order, query)  # a hit on a memory slot's exemplar stands for all its units

    places: dict[int, list[tuple[str, float, float]]] = {}
    ranked: list[list[tuple[float | None, tuple[str, float, float]]]] = []
    for i in order:
        rows, p = where[i]
        own = (str(rows.videos[rows.video[p]]), float(rows.start[p]), float(rows.end[p]))
        stands = slots.get(i) or [(None, *own)]
        places[i] = [(v, a, b) for _, v, a, b in stands]
        ranked.append([(sim, (v, a, b)) for sim, v, a, b in stands if scope.holds(v, a, b)])
    moments: list[Moment] = []
    ids: list[int] = []
    for h, (video, start, end) in interleave(ranked):
        if any(m.video_id == video and _overlap(m.start, m.end, start, end) > 0.5 for m in moments):
            continue
        i = order[h]
        rows, p = where[i]
        also = [o for o in places[i] if o != (video, start, end)][:ALSO_LIMIT]
        score = min(fused[i], moments[-1].score) if moments else fused[i]  # a place that waited ranks lower
        moments.append(Moment(video, start, end, score, "", str(rows.kinds[rows.kind[p]]), also))
        ids.append(i)
        if len(moments) == opts.top:
            break
    with store.session() as s:
        found = s.execute(select(EmbeddingRow.id, EmbeddingRow.text).where(EmbeddingRow.id.in_(ids)))
        texts = {i: text for i, text in found}
    if len(texts) < len(ids):  # rows deleted behind the derived files' back: compare them with SQL again
        store.lexical.recheck()
        store.vectors.recheck()
    for m, i in zip(moments, ids, strict=True):
        m.text = texts.get(i, "")
    return [m for m, i in zip(moments, ids, strict=True) if i in texts]


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Intersection over the shorter span."""
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    return inter / max(1e-6, min(a1 - a0, b1 - b0))


__all__ = ["Moment", "SearchOptions", "StoreError", "bm25", "search", "search_frame", "tokens"]
