"""A library's memory bank in the catalog: the gate loaded from its live slots, a video's units as
the gate sees them, and the one write of what the gate decided (slots, units, retention).

What the search indexes hold follows `EmbeddingRow.retained`: gists (scenes, chapters, anything the
gate does not decide on) always, the rows of each live slot's exemplar, and a shot slot's other
words (the text rows of shots merged into it that said, showed or were named otherwise). A hit on
any of a slot's rows stands for every unit of its slot (`occurrences`).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any, NamedTuple, TypeVar

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, aliased

from kernels.timecode import hms
from memory.catalog import EmbeddingRow, IndexEpoch, MemorySlot, MemoryUnit, Segment, Video
from memory.gate import (
    KINDS,
    NESTS,
    BankEvent,
    Decision,
    GateUnit,
    GateWeights,
    MemoryGate,
    MemoryOptions,
    Slot,
    budget_for,
    unit_vector,
)
from memory.vectors import vector_bytes


def load_gate(
    s: Session, library_id: int, options: MemoryOptions | None = None, weights: GateWeights | None = None
) -> MemoryGate:
    """The library's gate (`weights`: the shipped ones by default), its bank holding the live slots
    kept so far."""
    gate = MemoryGate(options, weights)
    live = (MemorySlot.library_id == library_id, MemorySlot.state == "live")
    exemplar = aliased(EmbeddingRow)
    # a shot slot's text rows: its exemplar's (which folding compares too), and the other words it
    # kept from the shots merged into it (retained, standing for it, in other shots)
    words: dict[int, tuple[int, bytes]] = {}
    others: dict[int, dict[int, np.ndarray]] = {}
    for slot_id, rid, blob, own in s.execute(
        select(
            MemorySlot.id,
            EmbeddingRow.id,
            EmbeddingRow.vector,
            (EmbeddingRow.segment_id == exemplar.segment_id) | (EmbeddingRow.id == MemorySlot.exemplar_id),
        )
        .join(MemorySlot, MemorySlot.id == EmbeddingRow.slot_id)
        .join(exemplar, exemplar.id == MemorySlot.exemplar_id)
        .where(*live, MemorySlot.kind == "shot", EmbeddingRow.modality == "text", EmbeddingRow.retained)
    ):
        if own:
            words[slot_id] = (rid, blob)
        else:
            others.setdefault(slot_id, {})[rid] = np.frombuffer(blob, np.float32)
    # where the slots that may nest in a window stand, when that is more than their exemplar's place
    # (a cue said again elsewhere nests only where every place of it does: memory.gate.NESTS)
    nestable = (*live, MemorySlot.kind.in_(list(NESTS)))
    several = (
        select(MemoryUnit.slot_id)
        .join(MemorySlot, MemorySlot.id == MemoryUnit.slot_id)
        .where(*nestable)
        .group_by(MemoryUnit.slot_id)
        .having(func.count() > 1)
    )
    places: dict[int, list[tuple[str, float, float, int]]] = {}
    for owner, video_id, start, end, row_id in s.execute(
        select(MemoryUnit.slot_id, MemoryUnit.video_id, MemoryUnit.start, MemoryUnit.end, MemoryUnit.row_id)
        .where(MemoryUnit.slot_id.in_(several))
        .order_by(MemoryUnit.video_id, MemoryUnit.start)
    ):
        if owner is not None:
            places.setdefault(owner, []).append((video_id, start, end, row_id))
    for row in s.scalars(select(MemorySlot).where(*live).order_by(MemorySlot.id)):
        slot = Slot(row.id, row.kind, row.exemplar_id, row.video_id, row.start, row.end, row.salience)
        slot.occurrences = places.get(row.id, [])
        slot.words = others.get(row.id, {})
        text_row, text = words.get(row.id, (None, None))
        gate.restore(
            slot,
            np.frombuffer(row.vector, np.float32),
            np.frombuffer(text, np.float32) if text else None,
            text_row,
        )
    return gate


def video_units(s: Session, video_id: str) -> list[GateUnit]:
    """The video's shots, transcript windows and cues, in time order, as the gate sees them: a shot
    by its visual vectors' mean (its text vector when it has none), the others by their text."""
    rows = s.execute(
        select(
            EmbeddingRow.id,
            EmbeddingRow.kind,
            EmbeddingRow.segment_id,
            EmbeddingRow.start,
            EmbeddingRow.end,
            EmbeddingRow.modality,
            EmbeddingRow.text,
            EmbeddingRow.vector,
        )
        .where(EmbeddingRow.video_id == video_id, EmbeddingRow.kind.in_(KINDS))
        .order_by(EmbeddingRow.id)
    ).all()
    units: dict[tuple[str, int], GateUnit] = {}
    visual: dict[tuple[str, int], list[np.ndarray]] = {}
    for rid, kind, segment_id, start, end, modality, text, blob in rows:
        key = (kind, segment_id if kind == "shot" and segment_id is not None else -rid)
        vec = np.frombuffer(blob, np.float32)
        unit = units.get(key)
        if unit is None:
            unit = units[key] = GateUnit(rid, kind, video_id, start, end, vec, 0, [], segment_id)
        unit.rows.append(rid)
        if modality == "visual":
            visual.setdefault(key, []).append(vec)
        else:
            unit.words = len(text.split())
            unit.text_vector = vec if kind == "shot" else None
            unit.text_row = rid if kind == "shot" else None
            if key not in visual:
                unit.vector = vec
    for key, vecs in visual.items():
        units[key].vector = unit_vector(vecs)
    return sorted(units.values(), key=lambda u: (u.start, KINDS.index(u.kind), u.key))


def budget(s: Session, library_id: int, options: MemoryOptions, new_units: int) -> int:
    """The bank's size once `new_units` more units have been gated in the library."""
    seen = s.scalar(select(func.count(MemoryUnit.id)).where(MemoryUnit.library_id == library_id)) or 0
    hours = (
        s.scalar(
            select(func.coalesce(func.sum(Video.duration), 0.0)).where(
                Video.library_id == library_id, Video.status != "failed"
            )
        )
        or 0.0
    ) / 3600
    return budget_for(options, int(seen) + new_units, float(hours))


@dataclass
class Stored:
    """What the write changed in the search indexes' rows."""

    added: list[int]
    """Rows now retained that were not (the video's gists and its exemplars)."""
    dropped: int
    """Rows of earlier videos no longer retained (their slot merged away or evicted)."""


STATES = {"merge": "merged", "nest": "nested", "evict": "evicted"}
"""A slot's state (`MemorySlot.state`) after each bank event that ends it."""


def store_decisions(
    s: Session, library_id: int, video_ids: Sequence[str], gate: MemoryGate, decisions: Sequence[Decision]
) -> Stored:
    """Write the gate's decisions on the units of `video_ids` (one video's, or a whole library's when
    it is gated again), the bank's new state and what is retained, in the caller's transaction."""
    ids: dict[int, int] = {}  # gate slot id -> catalog id (new slots are negative in the gate)
    new = [(slot, gate.vectors[slot.id], "live") for slot in gate.slots.values() if slot.id < 0]
    new += [(slot, vec, "gone") for slot, vec in gate.gone.values() if slot.id < 0]
    for slot, vec, _ in new:
        row = MemorySlot(
            library_id=library_id,
            kind=slot.kind,
            exemplar_id=slot.exemplar,
            video_id=slot.video_id,
            start=slot.start,
            end=slot.end,
            salience=slot.salience,
            state="live",
            vector=vector_bytes(vec),
        )
        s.add(row)
        s.flush()
        ids[slot.id] = row.id

    def mapped(i: int) -> int:
        return ids.get(i, i)

    into: dict[int, int] = {}  # merged slot -> the one it joined: its units follow it there
    holder: dict[int, int] = {}  # nested slot -> the window slot holding its words
    state: dict[int, str] = {}
    for event in gate.events:
        state[mapped(event.slot)] = STATES[event.action]
        if event.into is not None:
            (into if event.action == "merge" else holder)[mapped(event.slot)] = mapped(event.into)

    def final(slot: int) -> int:
        while slot in into:
            slot = into[slot]
        return slot

    for slot_id, st in state.items():
        s.execute(
            update(MemorySlot)
            .where(MemorySlot.id == slot_id)
            .values(state=st, into_id=into.get(slot_id, holder.get(slot_id)))
        )
    for slot in gate.slots.values():
        if slot.id > 0:
            s.execute(update(MemorySlot).where(MemorySlot.id == slot.id).values(salience=slot.salience))
    merged = [i for i, st in state.items() if st == "merged"]
    for gone in merged:  # units folded earlier follow their slot into the one it joined
        s.execute(update(MemoryUnit).where(MemoryUnit.slot_id == gone).values(slot_id=final(gone)))
    s.add_all(
        MemoryUnit(
            library_id=library_id,
            video_id=d.unit.video_id,
            row_id=d.unit.key,
            segment_id=d.unit.segment_id,
            kind=d.unit.kind,
            start=d.unit.start,
            end=d.unit.end,
            action=d.action,
            slot_id=final(mapped(d.slot)) if d.slot is not None else None,
            similarity=round(d.similarity, 6),
            salience=round(d.salience, 6),
        )
        for d in decisions
    )
    s.flush()

    # retention: the video's gists, and every live slot's exemplar
    live = {mapped(i) for i in gate.slots}
    units = {d.unit.key: d.unit.rows for d in decisions}
    for i, slot in gate.slots.items():
        if slot.exemplar in units:
            rows = units[slot.exemplar]
            s.execute(
                update(EmbeddingRow).where(EmbeddingRow.id.in_(rows)).values(retained=True, slot_id=mapped(i))
            )
    for i, (slot, _) in gate.gone.items():  # slots written and gone within this video still name their rows
        if i < 0 and slot.exemplar in units:
            rows = units[slot.exemplar]
            s.execute(update(EmbeddingRow).where(EmbeddingRow.id.in_(rows)).values(slot_id=mapped(i)))
    for i in gate.worded & gate.slots.keys():  # a shot slot's other words stand for it (`Slot.words`)
        s.execute(
            update(EmbeddingRow)
            .where(EmbeddingRow.id.in_(list(gate.slots[i].words)))
            .values(retained=True, slot_id=mapped(i))
        )
    gists = (EmbeddingRow.video_id.in_(video_ids), EmbeddingRow.kind.not_in(KINDS))
    s.execute(update(EmbeddingRow).where(*gists).values(retained=True))
    added = list(
        s.scalars(select(EmbeddingRow.id).where(EmbeddingRow.video_id.in_(video_ids), EmbeddingRow.retained))
    )
    earlier = [i for i in state if i > 0 and i not in ids.values()]  # slots of earlier videos now gone
    dropped = 0
    if earlier:
        gone_rows = (EmbeddingRow.slot_id.in_(earlier), EmbeddingRow.retained)
        dropped = len(list(s.scalars(select(EmbeddingRow.id).where(*gone_rows))))
        s.execute(update(EmbeddingRow).where(*gone_rows).values(retained=False))
    _segments_retained(s, decisions, live, final, mapped, state)
    s.add(IndexEpoch(library_id=library_id))
    return Stored(sorted(added), dropped)


def _segments_retained(
    s: Session,
    decisions: Sequence[Decision],
    live: set[int],
    final: Callable[[int], int],
    mapped: Callable[[int], int],
    state: dict[int, str],
) -> None:
    """A shot is retained while its unit stands in a live slot (its own or one it folded into);
    salience is the write head's score."""
    for d in decisions:
        if d.unit.kind != "shot" or d.unit.segment_id is None:
            continue
        kept = d.slot is not None and final(mapped(d.slot)) in live
        s.execute(
            update(Segment)
            .where(Segment.id == d.unit.segment_id)
            .values(retained=kept, salience=round(d.salience, 6))
        )
    evicted = [i for i, st in state.items() if st == "evicted"]
    if evicted:
        shots = select(MemoryUnit.segment_id).where(
            MemoryUnit.slot_id.in_(evicted), MemoryUnit.kind == "shot"
        )
        s.execute(update(Segment).where(Segment.id.in_(shots)).values(retained=False))


def unit_rows(s: Session, unit: MemoryUnit) -> list[int]:
    """The embedding rows of a unit: a shot's text and visual rows, else its one row."""
    if unit.kind != "shot" or unit.segment_id is None:
        return [unit.row_id]
    return list(
        s.scalars(
            select(EmbeddingRow.id).where(
                EmbeddingRow.video_id == unit.video_id,
                EmbeddingRow.kind == "shot",
                EmbeddingRow.segment_id == unit.segment_id,
            )
        )
    )


def hand_over(s: Session, video_id: str) -> bool:
    """Before a video is deleted: each live slot whose exemplar is one of its units, and that also
    stands for units of other videos, takes the earliest of those as its exemplar (so they stay
    searchable). True when one did."""
    changed = False
    for slot in s.scalars(
        select(MemorySlot).where(MemorySlot.video_id == video_id, MemorySlot.state == "live")
    ):
        heir = s.scalars(
            select(MemoryUnit)
            .where(
                MemoryUnit.slot_id == slot.id, MemoryUnit.video_id != video_id, MemoryUnit.action != "skip"
            )
            .order_by(MemoryUnit.id)
            .limit(1)
        ).first()
        if heir is None:
            continue
        rows = unit_rows(s, heir)
        units = {u.key: u for u in video_units(s, heir.video_id) if u.key == heir.row_id}
        slot.exemplar_id, slot.video_id, slot.start, slot.end = (
            heir.row_id,
            heir.video_id,
            heir.start,
            heir.end,
        )
        if heir.row_id in units:
            slot.vector = vector_bytes(units[heir.row_id].vector)
        s.execute(
            update(EmbeddingRow).where(EmbeddingRow.id.in_(rows)).values(retained=True, slot_id=slot.id)
        )
        changed = True
    if changed:
        s.add(IndexEpoch(library_id=s.scalar(select(Video.library_id).where(Video.id == video_id)) or 0))
    return changed


def forget(s: Session, library_id: int) -> None:
    """Empty the library's memory: every row retained again (the full index), no slot, no decision;
    its videos' memory stage is to be run again (`regate`)."""
    s.execute(
        update(EmbeddingRow).where(EmbeddingRow.library_id == library_id).values(retained=True, slot_id=None)
    )
    s.execute(delete(MemoryUnit).where(MemoryUnit.library_id == library_id))
    s.execute(delete(MemorySlot).where(MemorySlot.library_id == library_id))
    shots = select(Video.id).where(Video.library_id == library_id)
    s.execute(update(Segment).where(Segment.video_id.in_(shots)).values(retained=None, salience=None))
    s.add(IndexEpoch(library_id=library_id))


class UnitScore(NamedTuple):
    similarity: float
    """Of the unit's own best row to the query (-2 when not scored)."""
    video: str
    start: float
    end: float


def unit_scores(
    s: Session, hits: Iterable[int], query: tuple[str, np.ndarray] | None = None, folded: bool = False
) -> dict[int, list[UnitScore]]:
    """Per hit row id that is a live slot's exemplar: every unit its slot stands for, its own
    included, in video and time order. Other rows are not in the answer. `folded`: only the units
    that folded into a slot as the same thing seen again, not its exemplar nor the units that joined
    it through a merge of slots (a full bank merges its nearest pair, alike or not).

    With `query` (a vector space and the query's vector in it), each unit's similarity is that of its
    own best row in that space (kept in SQL when the memory folded it); -2 without a query, or
    (unless `folded`) when no hit's slot stands for more than one unit."""
    wanted = list(hits)
    if not wanted:
        return {}
    rows = s.execute(
        select(EmbeddingRow.id, MemoryUnit.video_id, MemoryUnit.start, MemoryUnit.end, MemoryUnit.row_id)
        .add_columns(MemoryUnit.kind, MemoryUnit.segment_id)
        .join(MemorySlot, MemorySlot.id == EmbeddingRow.slot_id)
        .join(MemoryUnit, MemoryUnit.slot_id == MemorySlot.id)
        .where(EmbeddingRow.id.in_(wanted), MemorySlot.state == "live")
        .where(MemoryUnit.action == "fold" if folded else MemoryUnit.action != "skip")
        .order_by(MemoryUnit.video_id, MemoryUnit.start)
    ).all()
    score: dict[tuple[str, int], float] = {}
    if query is not None and rows and (folded or max(Counter(r[0] for r in rows).values()) > 1):
        space, q = query
        segments = {r.segment_id for r in rows if r.kind == "shot" and r.segment_id is not None}
        singles = {r.row_id for r in rows if r.kind != "shot" or r.segment_id is None}
        for rid, segment, blob in s.execute(
            select(EmbeddingRow.id, EmbeddingRow.segment_id, EmbeddingRow.vector).where(
                EmbeddingRow.space == space,
                (EmbeddingRow.id.in_(singles))
                | ((EmbeddingRow.kind == "shot") & EmbeddingRow.segment_id.in_(segments)),
            )
        ):
            sim = float(np.frombuffer(blob, np.float32) @ q)
            key = ("row", rid) if rid in singles else ("segment", segment or -1)
            score[key] = max(score.get(key, -2.0), sim)
    out: dict[int, list[UnitScore]] = {}
    for hit, video, start, end, row_id, kind, segment in rows:
        key = ("segment", segment) if kind == "shot" and segment is not None else ("row", row_id)
        out.setdefault(hit, []).append(UnitScore(score.get(key, -2.0), video, start, end))
    return out


def occurrences(
    s: Session, hits: Iterable[int], query: tuple[str, np.ndarray] | None = None
) -> dict[int, list[tuple[float | None, str, float, float]]]:
    """Per hit row id that is a live slot's exemplar: every place its slot stands for (similarity,
    video id, start, end), its own included, with units that follow one another in one video joined
    into one place (`join_runs`). Other rows are not in the answer.

    In video and time order; with `query` (a vector space and the query's vector in it), the places
    most like the query first, each scored by its best unit's own rows in that space (`unit_scores`;
    None where not scored): a slot that stands for two returning camera set-ups answers with the one
    asked about first. Either way the videos take turns (each one's first unit, then each one's
    second...), so a slot with fifty places in one recording still names every other recording it
    was seen in among its first places."""
    return {hit: slot_places(units) for hit, units in unit_scores(s, hits, query).items()}


V = TypeVar("V")  # a video's id (the benchmarks number their copies)

RUN_GAP = 0.5
"""Seconds between two places of one slot in one video that still make one moment: shots one after
another (the same thing on both sides of a cut) or windows that overlap."""


def join_runs(
    places: Iterable[tuple[float, V, float, float]], gap: float = RUN_GAP
) -> list[tuple[float, V, float, float]]:
    """A slot's places (similarity, video, start, end) with those that follow one another in one
    video, at most `gap` seconds apart, joined into one place: closing credits cut into seven shots
    that all folded into one slot are one moment, not seven that crowd out every other recording.
    A joined place scores as its best part. Videos in the order they first come, each in time order."""
    per_video: dict[V, list[tuple[float, V, float, float]]] = {}
    for place in places:
        per_video.setdefault(place[1], []).append(place)
    out: list[tuple[float, V, float, float]] = []
    for video, own in per_video.items():
        run: tuple[float, V, float, float] | None = None
        for sim, _, start, end in sorted(own, key=lambda p: p[2]):
            if run is not None and start <= run[3] + gap:
                run = (max(run[0], sim), video, run[2], max(run[3], end))
                continue
            if run is not None:
                out.append(run)
            run = (sim, video, start, end)
        if run is not None:
            out.append(run)
    return out


def take_turns(places: Sequence[tuple[V, float, float]]) -> list[tuple[V, float, float]]:
    """The places reordered so that videos take turns, each keeping its own order; a video's turn
    comes where its first place was."""
    per_video: dict[V, list[tuple[V, float, float]]] = {}
    for place in places:
        per_video.setdefault(place[0], []).append(place)
    return [place for turn in zip_longest(*per_video.values()) for place in turn if place is not None]


def slot_places(
    units: Iterable[tuple[float, V, float, float]],
) -> list[tuple[float | None, V, float, float]]:
    """A slot's units (similarity, video, start, end; -2: not scored) as the places it answers with:
    runs joined (`join_runs`), most like the query first, the videos taking turns (`take_turns`);
    the similarity None where not scored."""
    runs = sorted(join_runs(units), key=lambda u: -u[0])
    sims = {(v, a, b): sim for sim, v, a, b in runs}
    return [
        (None if sims[p] <= -2.0 else sims[p], *p) for p in take_turns([(v, a, b) for _, v, a, b in runs])
    ]


P = TypeVar("P")


def interleave(hits: Sequence[Sequence[tuple[float | None, P]]]) -> Iterator[tuple[int, P]]:
    """Hits in rank order, each with its places (similarity to the query, or None where not known;
    the place), its best first, merged into one ranking of (hit index, place), lazily. A hit's first place
    keeps the hit's rank; each of its other places waits behind every later hit whose first place
    looks more like the query than it does, and places that waited come out most alike first.

    A slot the bank filled by merging stands for its own thing and for whatever joined it: its
    places that look less like the query than the next hit does (another copy of the thing asked
    about, held by another slot) no longer crowd that hit out of the first moments. A place of
    unknown similarity waits for nothing, and a hit whose first place is unknown lets every waiting
    place go before it: nothing is held back without a measure that says it ranks lower."""
    held: list[tuple[int, P]] = []
    waiting: list[tuple[float, int]] = []  # (-similarity, index into `held`): a heap
    for h, places in enumerate(hits):
        if not places:
            continue
        bar = places[0][0]
        while waiting and (bar is None or -waiting[0][0] >= bar):
            yield held[heapq.heappop(waiting)[1]]
        yield h, places[0][1]
        for sim, place in places[1:]:
            heapq.heappush(waiting, (-math.inf if sim is None else -sim, len(held)))
            held.append((h, place))
    yield from (held[i] for _, i in sorted(waiting))


def exemplars_seen_in(s: Session, video_ids: Sequence[str]) -> list[int]:
    """Retained rows of other videos standing for a unit of one of `video_ids` (the exemplars of
    the slots those units folded into): what a search scoped to those videos must also look at."""
    if not video_ids:
        return []
    slots = select(MemoryUnit.slot_id).where(
        MemoryUnit.video_id.in_(video_ids), MemoryUnit.slot_id.is_not(None)
    )
    return list(
        s.scalars(
            select(EmbeddingRow.id).where(
                EmbeddingRow.slot_id.in_(slots),
                EmbeddingRow.retained,
                EmbeddingRow.video_id.not_in(video_ids),
            )
        )
    )


def stats(s: Session, library_id: int, options: MemoryOptions | None = None, top: int = 5) -> dict[str, Any]:
    """The library's memory in numbers: slots by state, units gated by action and kind, how much of
    the gated rows the indexes hold, the bank's budget, and the slots that stand for the most."""
    opts = options or MemoryOptions()
    by_state = dict(
        s.execute(
            select(MemorySlot.state, func.count())
            .where(MemorySlot.library_id == library_id)
            .group_by(MemorySlot.state)
        ).all()
    )
    actions: dict[str, dict[str, int]] = {}
    for kind, action, n in s.execute(
        select(MemoryUnit.kind, MemoryUnit.action, func.count())
        .where(MemoryUnit.library_id == library_id)
        .group_by(MemoryUnit.kind, MemoryUnit.action)
    ):
        actions.setdefault(kind, {"write": 0, "fold": 0, "skip": 0})[action] = int(n)
    units = sum(sum(a.values()) for a in actions.values())
    gated = (EmbeddingRow.library_id == library_id, EmbeddingRow.kind.in_(KINDS))
    rows = s.scalar(select(func.count()).select_from(EmbeddingRow).where(*gated)) or 0
    kept = s.scalar(select(func.count()).select_from(EmbeddingRow).where(*gated, EmbeddingRow.retained)) or 0
    counts = (
        select(MemoryUnit.slot_id, func.count().label("n"))
        .where(MemoryUnit.library_id == library_id, MemoryUnit.slot_id.is_not(None))
        .group_by(MemoryUnit.slot_id)
        .subquery()
    )
    biggest = s.execute(
        select(MemorySlot, counts.c.n)
        .join(counts, counts.c.slot_id == MemorySlot.id)
        .where(MemorySlot.state == "live")
        .order_by(counts.c.n.desc(), MemorySlot.id)
        .limit(top)
    ).all()
    return {
        "slots": {st: int(by_state.get(st, 0)) for st in ("live", *STATES.values())},
        "budget": budget(s, library_id, opts, 0) if units else 0,
        "units": units,
        "actions": actions,
        "rows": {
            "gated": int(rows),
            "retained": int(kept),
            "retention": round(kept / rows, 4) if rows else 1.0,
        },
        "largest": [slot_json(slot, int(n)) for slot, n in biggest],
    }


def slot_json(slot: MemorySlot, occurrences: int) -> dict[str, Any]:
    return {
        "slot": slot.id,
        "kind": slot.kind,
        "state": slot.state,
        "video_id": slot.video_id,
        "start": round(slot.start, 3),
        "end": round(slot.end, 3),
        "timestamp": hms(slot.start),
        "salience": round(slot.salience, 4),
        "occurrences": occurrences,
    }


def decisions_of(s: Session, video_id: str) -> list[dict[str, Any]]:
    """What the gate did with each of a video's units, in time order, and why: the slot it joined
    (its exemplar's place, its state now), the cosine with it on arrival and the salience."""
    rows = s.execute(
        select(MemoryUnit, MemorySlot)
        .outerjoin(MemorySlot, MemorySlot.id == MemoryUnit.slot_id)
        .where(MemoryUnit.video_id == video_id)
        .order_by(MemoryUnit.start, MemoryUnit.kind, MemoryUnit.id)
    ).all()
    out = []
    for unit, slot in rows:
        item: dict[str, Any] = {
            "kind": unit.kind,
            "start": round(unit.start, 3),
            "end": round(unit.end, 3),
            "timestamp": hms(unit.start),
            "action": unit.action,
            "similarity": round(unit.similarity, 4),
            "salience": round(unit.salience, 4),
            "slot": None,
        }
        if slot is not None:
            item["slot"] = {
                "id": slot.id,
                "state": slot.state,
                "video_id": slot.video_id,
                "start": round(slot.start, 3),
                "timestamp": hms(slot.start),
                "exemplar": slot.exemplar_id == unit.row_id,
                "into": slot.into_id if slot.state == "nested" else None,
            }
        out.append(item)
    return out


__all__ = [
    "BankEvent",
    "Stored",
    "budget",
    "decisions_of",
    "exemplars_seen_in",
    "interleave",
    "join_runs",
    "load_gate",
    "occurrences",
    "slot_json",
    "slot_places",
    "stats",
    "store_decisions",
    "take_turns",
    "video_units",
]
