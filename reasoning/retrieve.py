"""Coarse to fine: find the region with hybrid search over every level, then cut the answer span.

1. **coarse** — `search()` over every level at once (chapters, scenes, shots, transcript windows and
   cues, on-screen text and tags in the shots' text): BM25 and dense rankings fused by reciprocal rank.
   Its hits name the videos and the regions worth reading.
2. **fine** — in each of the best `videos` videos, the cues around its hits (the whole video when it
   is short) go to `reasoning.refine`, which scores every contiguous run of cues and keeps the best
   one: the answer's own start and end, on cue edges, rather than the edges of a stored unit. A
   span inside a unit the memory folded with others (a line said again) keeps their places
   (`Moment.also`).

A video with no transcript cues (silent footage) keeps its coarse hits as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from memory import EmbeddingRow, Store
from memory.bank import join_runs
from memory.catalog import MemorySlot, MemoryUnit
from memory.runtime.images import ImageEncoder
from memory.runtime.text import Embedder, SentenceEmbedder
from reasoning.refine import CueRun, SpanScorer, best_spans
from reasoning.search import ALSO_LIMIT, Moment, SearchOptions, search


@dataclass
class RetrieveOptions:
    top: int = 5
    """Moments returned."""
    videos: int = 3
    """Videos whose regions are refined (1 inside one video)."""
    coarse: int = 30
    """Coarse hits read before refining."""
    whole_video_cues: int = 160
    """A video with at most this many cues is refined whole; a longer one around its hits only."""
    margin: float = 60.0
    """Seconds of context read on both sides of a coarse hit in a long video."""
    refine: bool = True
    """Cut the span to the answer (False: return the coarse hits)."""
    video_penalty: float = 1.0
    """Subtracted from a span's score per place its video stands below the best video of the coarse
    ranking. The span scorer ranks runs within a video; across videos the coarse fusion, which sees
    every level, is the better judge. Chosen on dev (TutorialVQA dev, library-wide: R1@0.5 26.6 with
    1.0, 22.8 by span score alone, 26.4 by coarse rank alone; with the expected-IoU span choice, on 465
    train questions: 29.0 with 1.0, 29.9 with 2.0 or 3.0, 29.5 refining the first video only)."""

    def __post_init__(self) -> None:
        if min(self.top, self.videos, self.coarse, self.whole_video_cues) < 1 or self.margin < 0:
            raise ValueError("top, videos, coarse and whole_video_cues must be >= 1 and margin >= 0")


def load_cues(store: Store, video_id: str, space: str) -> CueRun:
    """A video's transcript cues with their text vectors, in time order."""
    with store.session() as s:
        rows = s.execute(
            select(EmbeddingRow.start, EmbeddingRow.end, EmbeddingRow.text, EmbeddingRow.vector)
            .where(EmbeddingRow.video_id == video_id, EmbeddingRow.kind == "cue", EmbeddingRow.space == space)
            .order_by(EmbeddingRow.start, EmbeddingRow.id)
        ).all()
    dim = len(rows[0].vector) // 4 if rows else 0
    return CueRun(
        video_id,
        np.array([r.start for r in rows], np.float64),
        np.array([r.end for r in rows], np.float64),
        [r.text for r in rows],
        np.stack([np.frombuffer(r.vector, np.float32) for r in rows])
        if rows
        else np.zeros((0, dim), np.float32),
    )


def _seen_elsewhere(
    store: Store, video_id: str, spans: list[tuple[float, float]], slack: float = 0.5
) -> list[list[tuple[str, float, float]]]:
    """Per span of the video, the other places of the smallest transcript unit (cue or window)
    holding it (within `slack` seconds) that the memory folded with others: a line said again, so
    the span was said there too (units one after another joined into one place, `join_runs`). A
    span that no such unit holds gets none."""
    with store.session() as s:
        units = s.execute(
            select(MemoryUnit.id, MemoryUnit.slot_id, MemoryUnit.start, MemoryUnit.end)
            .join(MemorySlot, MemorySlot.id == MemoryUnit.slot_id)
            .where(
                MemoryUnit.video_id == video_id,
                MemoryUnit.kind.in_(("cue", "window")),
                MemoryUnit.action != "skip",
                MemorySlot.state == "live",
            )
        ).all()
        holding = {
            i: sorted(
                (u for u in units if u.start - slack <= a and b <= u.end + slack),
                key=lambda u: u.end - u.start,
            )
            for i, (a, b) in enumerate(spans)
        }
        slots = {u.slot_id for found in holding.values() for u in found}
        places: dict[int | None, list[tuple[int, str, float, float]]] = {}  # slot: (unit, video, start, end)
        if slots:
            for uid, slot, video, start, end in s.execute(
                select(
                    MemoryUnit.id, MemoryUnit.slot_id, MemoryUnit.video_id, MemoryUnit.start, MemoryUnit.end
                )
                .where(MemoryUnit.slot_id.in_(slots), MemoryUnit.action != "skip")
                .order_by(MemoryUnit.video_id, MemoryUnit.start)
            ):
                places.setdefault(slot, []).append((uid, video, start, end))
    out: list[list[tuple[str, float, float]]] = []
    for i in range(len(spans)):
        others: list[tuple[str, float, float]] = []
        for u in holding[i]:
            runs = join_runs((0.0, v, a, b) for _, v, a, b in places.get(u.slot_id, []))
            others = [(v, a, b) for _, v, a, b in runs if not (v == video_id and a <= u.start and u.end <= b)]
            if others:
                break
        out.append(others[:ALSO_LIMIT])
    return out


def _neighbourhoods(run: CueRun, hits: list[Moment], opts: RetrieveOptions) -> list[CueRun]:
    """The stretches of cues worth refining: the whole run when short, else merged windows around hits."""
    if len(run) <= opts.whole_video_cues:
        return [run]
    spans = sorted((h.start - opts.margin, h.end + opts.margin) for h in hits)
    merged: list[list[float]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    out = []
    for lo, hi in merged:
        idx = np.flatnonzero((run.end > lo) & (run.start < hi))
        if len(idx):
            out.append(run.window(int(idx[0]), int(idx[-1]) + 1))
    return out


@dataclass
class Retrieved:
    coarse: list[Moment]
    """The coarse hits over every level, best first (gists among them)."""
    moments: list[Moment]
    """The refined moments, best first."""


def retrieve(
    store: Store,
    query: str,
    library: str | None = "default",
    video_id: str | None = None,
    options: RetrieveOptions | None = None,
    embedder: Embedder | None = None,
    image_encoder: ImageEncoder | None = None,
    *,
    time_from: float | None = None,
    time_to: float | None = None,
    scorer: SpanScorer | None = None,
) -> list[Moment]:
    """The best moments for `query`, their spans cut to the answer, best first."""
    return retrieve_levels(
        store,
        query,
        library,
        video_id,
        options,
        embedder,
        image_encoder,
        time_from=time_from,
        time_to=time_to,
        scorer=scorer,
    ).moments


def retrieve_levels(
    store: Store,
    query: str,
    library: str | None = "default",
    video_id: str | None = None,
    options: RetrieveOptions | None = None,
    embedder: Embedder | None = None,
    image_encoder: ImageEncoder | None = None,
    *,
    time_from: float | None = None,
    time_to: float | None = None,
    scorer: SpanScorer | None = None,
    query_vector: np.ndarray | None = None,
) -> Retrieved:
    """The coarse hits and the refined moments for `query` (`retrieve` returns the latter)."""
    opts = options or RetrieveOptions()
    enc = embedder or SentenceEmbedder()
    qvec = enc.embed([query.strip() or query])[0] if query_vector is None else query_vector
    coarse = search(
        store,
        query,
        library,
        video_id,
        SearchOptions(top=opts.coarse, level="all"),
        enc,
        image_encoder,
        time_from=time_from,
        time_to=time_to,
        query_vector=qvec,
    )
    if not opts.refine or not coarse:
        return Retrieved(coarse, coarse[: opts.top])
    order: list[str] = []
    for m in coarse:
        if m.video_id not in order:
            order.append(m.video_id)
    moments: list[Moment] = []
    for rank, vid in enumerate(order[: 1 if video_id else opts.videos]):
        hits = [m for m in coarse if m.video_id == vid]
        run = load_cues(store, vid, enc.space)
        if time_from is not None or time_to is not None:
            inside = (run.end > (time_from or -np.inf)) & (run.start < (time_to or np.inf))
            idx = np.flatnonzero(inside)
            run = run.window(int(idx[0]), int(idx[-1]) + 1) if len(idx) else run.window(0, 0)
        if not len(run):  # nothing said here: the coarse hit is the answer, ranked with the spans
            h = hits[0]
            moments.append(
                Moment(h.video_id, h.start, h.end, -opts.video_penalty * rank, h.text, h.kind, h.also)
            )
            continue
        found = []
        for part in _neighbourhoods(run, hits, opts):
            for span in best_spans(part, qvec, query, scorer, top=2):
                text = " ".join(part.text[span.first : span.last + 1])
                score = span.score - opts.video_penalty * rank
                found.append(Moment(vid, span.start, span.end, score, text, "span"))
        for m, also in zip(
            found, _seen_elsewhere(store, vid, [(m.start, m.end) for m in found]), strict=True
        ):
            m.also = also
        moments += found
    moments.sort(key=lambda m: -m.score)
    return Retrieved(coarse, moments[: opts.top])
