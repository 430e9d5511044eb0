"""The update side of the gated recurrent memory: what a library keeps of the units it ingests.

Units (a shot, a transcript window, a transcript cue) stream past in time order. A per-library bank
of at most B slots holds what is kept; a slot is one exemplar unit (its vectors and gist, never
averaged: no drift) and every occurrence folded into it (video, start, end), so a repeat that
returns an hour later is one entry that still cites every time it was seen. For each unit the gate
decides (`Decision`):

- **fold**: it is the same as a slot's exemplar (cosine >= that kind's fold threshold): the slot
  gains an occurrence;
- **write**: a new slot, with the salience the write head gives it;
- **skip**: salience below `skip_below` (0 by default: nothing is skipped unless asked).

When the bank holds more than B slots, it first lets go of what another slot already holds whole: a
cue slot every place of which lies inside a live window slot's exemplar (`NESTS`; a window is its
cues' words, so they stay findable through it, and spans are still cut from the cue in SQL), the
least salient first. Then it merges its most similar pair anywhere in the bank (their occurrences
joined under the more salient exemplar) or evicts its least salient slot, whichever loses less: a
pair as similar as `s` costs `1 - s`, an eviction the slot's salience.

A small recurrent state carries local context ("still on the same slide"): a GRU cell over per-unit
features (`FEATURES`), reset at each video's start, whose state feeds the write head. It runs here in
numpy from JSON weights (`gate_model.json`); `torch_gate` builds the same network in torch for
fitting, and the tests hold the two equal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from kernels.gru import GRUHead, torch_gru_head

MODEL_FILE = Path(__file__).with_name("gate_model.json")

FEATURES = ("s_max", "s_prev", "log_seconds", "log_words", "is_shot", "is_window", "is_cue", "fill")
"""Per-unit inputs of the GRU cell: the cosine with the nearest slot of the unit's kind and with the
previous unit of its kind in this video, its length (log1p seconds / 5, log1p words / 5), its kind,
and how full the bank is (slots / B)."""

FOLD_CANDIDATES = 4
"""Slots above the fold threshold a shot is compared with on its words, most similar first."""

KINDS = ("shot", "window", "cue")
"""The units the gate decides on. Scenes, chapters and the video summary are the gists: always kept."""

NESTS = {"cue": "window"}
"""A kind whose words a coarser kind holds whole: a transcript window is its cues joined
(indexers.embed), so a cue inside a kept window is still found through it."""

NEST_SLACK = 1e-3
"""Seconds a nested place may reach past its holder's edges (rounding of stored times)."""


@dataclass
class GateUnit:
    """One unit of the stream."""

    key: int
    """Its first embedding row id: the exemplar's id when it writes a slot."""
    kind: str  # shot | window | cue
    video_id: str
    start: float  # seconds
    end: float
    vector: np.ndarray
    """(D,) unit-norm float32: what folding compares (a shot's visual vectors' mean when it has
    some, else its text vector)."""
    words: int = 0
    rows: list[int] = field(default_factory=list)
    """Every embedding row of the unit (a shot has a text row and a few visual ones)."""
    segment_id: int | None = None
    text_vector: np.ndarray | None = None
    """A shot's text vector (what is said and read in it), when it has one: two shots that look
    alike fold only when they also say and show the same words (two slides of one deck look alike)."""
    text_row: int | None = None
    """The embedding row of a shot's words (`text_vector`'s)."""


@dataclass
class Decision:
    """What the gate did with one unit, and why."""

    unit: GateUnit
    action: str  # fold | write | skip
    slot: int | None
    """The slot it folded into or wrote; None when skipped."""
    similarity: float
    """Cosine with the nearest slot of its kind when it arrived (0 with none)."""
    salience: float
    features: np.ndarray | None = None
    """The unit's inputs to the GRU cell (`FEATURES`), for fitting."""


@dataclass
class BankEvent:
    """A change to the bank beside the unit's own decision: a merge, a nested cue let go, or an
    eviction."""

    action: str  # merge | nest | evict
    slot: int
    """The slot that is gone (merged away, nested or evicted)."""
    into: int | None = None
    """The slot a merged one joined, or the window slot that holds a nested one's words."""
    similarity: float = 0.0
    salience: float = 0.0


@dataclass
class Slot:
    id: int
    kind: str
    exemplar: int  # the exemplar unit's key
    video_id: str
    start: float
    end: float
    salience: float
    occurrences: list[tuple[str, float, float, int]] = field(default_factory=list)
    """(video id, start, end, unit key) of every unit it stands for, its exemplar's included."""
    born: int = 0
    """Order of arrival in the bank (restored slots first): among equally salient slots the
    oldest is evicted first."""
    words: dict[int, np.ndarray] = field(default_factory=dict)
    """A shot slot's other words: text row id -> text vector of each shot merged into it whose words
    its exemplar's (and the others here) do not match. Their text rows stay in the search indexes,
    standing for the slot: the slot keeps one look, but stays findable by everything said, read or
    named in the shots it stands for."""

    @property
    def seconds(self) -> float:
        return sum(b - a for _, a, b, _ in self.occurrences)


@dataclass
class MemoryOptions:
    budget: float = 1.0
    """Slots the bank may hold, as a share of the gated units the library has seen (0 < budget
    <= 1). 1: folding alone decides what is kept; 0.1: one slot for ten units."""
    slots_per_hour: float = 0.0
    """Streaming budget: at most this many slots per hour of media seen (0: the share alone)."""
    fold_shot: float | None = None
    """Cosine at which a shot folds into a slot; None: the fitted threshold in gate_model.json."""
    fold_text: float | None = None
    """Cosine at which a transcript window or cue folds into a slot; None: the fitted one."""
    skip_below: float = 0.0
    """Salience under which a unit is skipped outright (0: never skip)."""
    vision_fps: float = 1.0
    """Frames a second of shot the shots' vectors were encoded at (`VIDMEM_VISION_FPS`): picks the
    shot fold threshold fitted on vectors of that rate, where one was (gate_model.json)."""
    recurrent: bool = True
    """Carry the GRU state from unit to unit (False: the ablation without recurrence)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.budget <= 1.0:
            raise ValueError(f"memory budget is a share of units in (0, 1], got {self.budget}")
        if self.slots_per_hour < 0:
            raise ValueError(f"slots_per_hour must be >= 0, got {self.slots_per_hour}")
        for name in ("fold_shot", "fold_text"):
            value = getattr(self, name)
            if value is not None and not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} is a cosine in [-1, 1], got {value}")
        if not 0.0 <= self.skip_below <= 1.0:
            raise ValueError(f"skip_below is a salience in [0, 1], got {self.skip_below}")
        if not self.vision_fps > 0:
            raise ValueError(f"vision_fps must be > 0, got {self.vision_fps}")


# -- the recurrent cell and the write head ----------------------------------------------------------


@dataclass
class GateWeights(GRUHead):
    """The GRU cell and write head (kernels.gru) with the fold thresholds fitted beside them."""

    fold_shot: float = 0.86
    fold_text: float = 0.98
    fold_shot_at: dict[str, float] = field(default_factory=dict)
    """Shot fold thresholds fitted on vectors of other rates, by frames a second ("4"); `fold_shot`
    is the default rate's (1)."""

    def fold_shot_for(self, fps: float) -> float:
        """The shot fold threshold for vectors of `fps` frames a second (the default rate's if none
        was fitted for it)."""
        return self.fold_shot_at.get(f"{fps:g}", self.fold_shot)

    def salience(self, x: np.ndarray, h: np.ndarray) -> float:
        """The write head: how much the unit is worth a slot, in (0, 1)."""
        return self.prob(x, h)

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            **self.arrays_json(),
            "fold_shot": self.fold_shot,
            "fold_text": self.fold_text,
            "fold_shot_at": self.fold_shot_at,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> GateWeights:
        if list(raw.get("features", [])) != list(FEATURES):
            raise ValueError("gate weights were fitted on other features; refit them (tests/fit/fit_gate.py)")
        return cls(
            **GRUHead.arrays_from(raw),
            fold_shot=float(raw["fold_shot"]),
            fold_text=float(raw["fold_text"]),
            fold_shot_at={k: float(v) for k, v in raw.get("fold_shot_at", {}).items()},
        )


@cache
def load_weights(path: Path = MODEL_FILE) -> GateWeights:
    return GateWeights.from_json(json.loads(Path(path).read_text()))


torch_gate = torch_gru_head
"""The gate's network as a torch module (kernels.gru.torch_gru_head), for fitting."""


# -- the bank -----------------------------------------------------------------------------------------


class _KindBank:
    """The live slots of one kind: their exemplar vectors, and each one's most similar other slot
    (so that the most similar pair anywhere is found without comparing all pairs again)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.vecs = np.zeros((0, 0), np.float32)
        self.nn_sim: list[float] = []
        self.nn_of: list[int] = []

    def __len__(self) -> int:
        return len(self.ids)

    def nearest(self, v: np.ndarray, k: int = 1) -> list[tuple[int, float]]:
        """The k slots most similar to v, best first (fewer when the bank holds fewer)."""
        n = len(self.ids)
        if not n:
            return []
        sims = self.vecs[:n] @ v
        top = np.argsort(-sims)[:k] if k > 1 else [int(np.argmax(sims))]
        return [(self.ids[i], float(sims[i])) for i in top]

    def add(self, slot: int, v: np.ndarray) -> None:
        n = len(self.ids)
        if n == 0 or self.vecs.shape[1] != len(v):
            if n and self.vecs.shape[1] != len(v):
                raise ValueError(f"a unit of {len(v)} dimensions among slots of {self.vecs.shape[1]}")
            self.vecs = np.zeros((16, len(v)), np.float32)
        elif n == len(self.vecs):
            self.vecs = np.concatenate([self.vecs, np.zeros_like(self.vecs)])
        sims = self.vecs[:n] @ v
        self.vecs[n] = v
        self.ids.append(slot)
        best = int(np.argmax(sims)) if n else -1
        self.nn_sim.append(float(sims[best]) if n else -math.inf)
        self.nn_of.append(self.ids[best] if n else -1)
        for j in np.flatnonzero(sims > np.asarray(self.nn_sim[:n])):
            self.nn_sim[j], self.nn_of[j] = float(sims[j]), slot

    def remove(self, slot: int) -> None:
        i = self.ids.index(slot)
        last = len(self.ids) - 1
        for arr in (self.ids, self.nn_of):
            arr[i] = arr[last]
            arr.pop()
        self.nn_sim[i] = self.nn_sim[last]
        self.nn_sim.pop()
        self.vecs[i] = self.vecs[last]
        for j, other in enumerate(self.nn_of):  # whose nearest it was look again
            if other == slot:
                self._renew(j)

    def _renew(self, j: int) -> None:
        n = len(self.ids)
        sims = self.vecs[:n] @ self.vecs[j]
        sims[j] = -math.inf
        best = int(np.argmax(sims)) if n > 1 else -1
        self.nn_sim[j] = float(sims[best]) if best >= 0 else -math.inf
        self.nn_of[j] = self.ids[best] if best >= 0 else -1

    def closest_pair(self) -> tuple[int, int, float] | None:
        if len(self.ids) < 2:
            return None
        j = int(np.argmax(self.nn_sim))
        return self.ids[j], self.nn_of[j], self.nn_sim[j]


class MemoryGate:
    """One library's bank and the gate in front of it. Feed each video's units in time order with
    `gate(units, budget)`; it yields one `Decision` per unit, and `events` collects the merges and
    evictions the bank made to stay within its budget."""

    def __init__(self, options: MemoryOptions | None = None, weights: GateWeights | None = None) -> None:
        self.options = options or MemoryOptions()
        self.weights = weights or load_weights()
        self.fold = {
            "shot": self.options.fold_shot
            if self.options.fold_shot is not None
            else self.weights.fold_shot_for(self.options.vision_fps),
            "window": self.options.fold_text
            if self.options.fold_text is not None
            else self.weights.fold_text,
            "cue": self.options.fold_text if self.options.fold_text is not None else self.weights.fold_text,
        }
        self.slots: dict[int, Slot] = {}
        self.banks: dict[str, _KindBank] = {kind: _KindBank() for kind in KINDS}
        self.vectors: dict[int, np.ndarray] = {}
        self.texts: dict[int, np.ndarray] = {}
        """A shot slot's exemplar text vector, when it has one."""
        self.text_rows: dict[int, int] = {}
        """A shot slot's exemplar text row, when it has one."""
        self.worded: set[int] = set()
        """Slots that gained other words (`Slot.words`) since this gate was made."""
        self.events: list[BankEvent] = []
        self.gone: dict[int, tuple[Slot, np.ndarray]] = {}
        """Slots merged away, nested or evicted since this gate was made, with their vectors."""
        self.nested: dict[int, int] = {}
        """Live slots of a kind in `NESTS` whose every place a live slot of the coarser kind holds:
        slot -> the slot holding its first place."""
        self._holders: dict[str, dict[int, tuple[float, float]]] = {}
        """Per video, its live slots of a holding kind (windows) and their exemplars' spans."""
        self._nestable: dict[str, set[int]] = {}
        """Per video, the live slots of a nesting kind (cues) with a place in it."""
        self.next_new = -1
        self.born = 0
        """Slots written here get ids -1, -2, …, until the catalog gives them theirs."""

    # -- state kept in the catalog between ingestions ------------------------------------------------

    def restore(
        self,
        slot: Slot,
        vector: np.ndarray,
        text_vector: np.ndarray | None = None,
        text_row: int | None = None,
    ) -> None:
        """Put back a live slot kept from earlier ingestions (`memory.catalog.MemorySlot`, id > 0),
        with its exemplar's text vector and row when it has words (its other words in `slot.words`).
        Its occurrences are those given (a cue's every place, for nesting) or else its exemplar's."""
        if not slot.occurrences:
            slot.occurrences = [(slot.video_id, slot.start, slot.end, slot.exemplar)]
        if text_vector is not None:
            self.texts[slot.id] = text_vector
        if text_row is not None:
            self.text_rows[slot.id] = text_row
        slot.born = self.born = self.born + 1
        self.slots[slot.id] = slot
        self.vectors[slot.id] = vector
        self.banks[slot.kind].add(slot.id, vector)
        self._placed(slot.id)

    def __len__(self) -> int:
        return len(self.slots)

    # -- the stream ----------------------------------------------------------------------------------

    def gate(self, units: Iterable[GateUnit], budget: int) -> Iterator[Decision]:
        """Decide on one video's units (in time order); the bank ends at most `budget` slots."""
        w, opts = self.weights, self.options
        h = np.zeros(w.hidden)
        prev: dict[str, np.ndarray] = {}
        for unit in units:
            if unit.kind not in self.banks:
                raise ValueError(f"unknown unit kind {unit.kind!r}; choose one of {', '.join(KINDS)}")
            v = unit.vector
            nearest = self.banks[unit.kind].nearest(v, k=FOLD_CANDIDATES)
            s_max = nearest[0][1] if nearest else 0.0
            s_prev = float(prev[unit.kind] @ v) if unit.kind in prev else 0.0
            prev[unit.kind] = v
            x = np.array(
                [
                    s_max,
                    s_prev,
                    math.log1p(max(0.0, unit.end - unit.start)) / 5,
                    math.log1p(unit.words) / 5,
                    unit.kind == "shot",
                    unit.kind == "window",
                    unit.kind == "cue",
                    len(self.slots) / max(1, budget),
                ],
                dtype=np.float64,
            )
            if opts.recurrent:
                h = w.step(x, h)
            salience = w.salience(x, h)
            near = next(
                (i for i, sim in nearest if sim >= self.fold[unit.kind] and self._same_words(unit, i)), None
            )
            if near is not None:
                slot = self.slots[near]
                slot.occurrences.append((unit.video_id, unit.start, unit.end, unit.key))
                slot.salience = max(slot.salience, salience)
                self._placed(near)
                yield Decision(unit, "fold", near, s_max, salience, x)
                continue
            if salience < opts.skip_below:
                yield Decision(unit, "skip", None, s_max, salience, x)
                continue
            slot_id = self._write(unit, salience)
            while len(self.slots) > budget:
                self._shrink()
            yield Decision(unit, "write", slot_id, s_max, salience, x)

    def _same_words(self, unit: GateUnit, slot: int) -> bool:
        """Whether a shot and a slot agree on their words: neither has any, or their text vectors
        reach the text fold threshold. Transcript units are their words: always."""
        if unit.kind != "shot":
            return True
        theirs = self.texts.get(slot)
        if unit.text_vector is None or theirs is None:
            return unit.text_vector is None and theirs is None
        return float(unit.text_vector @ theirs) >= self.fold["window"]

    def _write(self, unit: GateUnit, salience: float) -> int:
        slot = Slot(
            self.next_new,
            unit.kind,
            unit.key,
            unit.video_id,
            unit.start,
            unit.end,
            salience,
            [(unit.video_id, unit.start, unit.end, unit.key)],
        )
        self.next_new -= 1
        slot.born = self.born = self.born + 1
        self.slots[slot.id] = slot
        self.vectors[slot.id] = unit.vector
        if unit.text_vector is not None:
            self.texts[slot.id] = unit.text_vector
        if unit.text_row is not None:
            self.text_rows[slot.id] = unit.text_row
        self.banks[unit.kind].add(slot.id, unit.vector)
        self._placed(slot.id)
        return slot.id

    def _shrink(self) -> None:
        """Let go of the least salient nested slot (what a live window holds whole loses nothing
        the search cannot find); else merge the most similar pair (of one kind) or evict the least
        salient slot: whichever loses less (`1 - similarity` against the evicted slot's salience)."""
        if self.nested:
            gone = min(self.nested, key=lambda i: (self.slots[i].salience, self.slots[i].born))
            holder = self.nested[gone]
            sim = float(self.vectors[gone] @ self.vectors[holder])
            salience = self.slots[gone].salience
            self._drop(gone)
            self.events.append(BankEvent("nest", gone, holder, sim, salience))
            return
        pairs = [p for p in (b.closest_pair() for b in self.banks.values()) if p is not None]
        pair = max(pairs, key=lambda p: p[2], default=None)
        weakest = min(self.slots.values(), key=lambda s: (s.salience, s.born))
        if pair is not None and 1.0 - pair[2] <= weakest.salience:
            a, b, sim = pair
            sa, sb = self.slots[a], self.slots[b]
            keep, gone = (a, b) if (sa.salience, -sa.born) >= (sb.salience, -sb.born) else (b, a)
            self.slots[keep].occurrences += self.slots[gone].occurrences
            self.slots[keep].occurrences.sort(key=lambda o: (o[0], o[1]))
            self._join_words(keep, gone)
            self.slots[keep].salience = max(self.slots[keep].salience, self.slots[gone].salience)
            self._drop(gone)
            self._placed(keep)
            self.events.append(BankEvent("merge", gone, keep, sim, self.slots[keep].salience))
        else:
            self._drop(weakest.id)
            self.events.append(BankEvent("evict", weakest.id, None, 0.0, weakest.salience))

    def _join_words(self, keep: int, gone: int) -> None:
        """The words of a shot slot merged away that the kept slot lacks (its exemplar's, then its
        own other words) become the kept slot's other words. Words match at the text fold threshold,
        as when a shot folds."""
        kept, lost = self.slots[keep], self.slots[gone]
        if kept.kind != "shot":
            return
        known = [v for v in (self.texts.get(keep), *kept.words.values()) if v is not None]
        offered = dict(lost.words)
        if gone in self.text_rows and gone in self.texts:
            offered = {self.text_rows[gone]: self.texts[gone], **offered}
        for row, vector in offered.items():
            if all(float(vector @ k) < self.fold["window"] for k in known):
                kept.words[row] = vector
                known.append(vector)
                self.worded.add(keep)

    def _drop(self, slot_id: int) -> None:
        slot = self.slots.pop(slot_id)
        self.banks[slot.kind].remove(slot_id)
        self.gone[slot_id] = (slot, self.vectors.pop(slot_id))
        if slot.kind in NESTS:
            self.nested.pop(slot_id, None)
            for video, _, _ in _places(slot):
                self._nestable.get(video, set()).discard(slot_id)
        elif slot.kind in NESTS.values():
            self._holders.get(slot.video_id, {}).pop(slot_id, None)
            for other in list(self._nestable.get(slot.video_id, ())):
                self._nest(other)

    # -- what holds what ----------------------------------------------------------------------------

    def _placed(self, slot_id: int) -> None:
        """Keep `nested` true after a slot was added or gained places."""
        slot = self.slots[slot_id]
        if slot.kind in NESTS:
            for video, _, _ in _places(slot):
                self._nestable.setdefault(video, set()).add(slot_id)
            self._nest(slot_id)
        elif slot.kind in NESTS.values() and slot_id not in self._holders.get(slot.video_id, {}):
            self._holders.setdefault(slot.video_id, {})[slot_id] = (slot.start, slot.end)
            for other in list(self._nestable.get(slot.video_id, ())):
                if other not in self.nested:
                    self._nest(other)

    def _nest(self, slot_id: int) -> None:
        """Whether a live window holds each place of the slot: `nested` says so, or forgets it."""
        places = _places(self.slots[slot_id])
        holders = [h for h in (self._holder(video, a, b) for video, a, b in places) if h is not None]
        if len(holders) == len(places):
            self.nested[slot_id] = holders[0]
        else:
            self.nested.pop(slot_id, None)

    def _holder(self, video: str, start: float, end: float) -> int | None:
        for slot_id, (a, b) in self._holders.get(video, {}).items():
            if a - NEST_SLACK <= start and end <= b + NEST_SLACK:
                return slot_id
        return None


def _places(slot: Slot) -> list[tuple[str, float, float]]:
    """Where a slot stands: its occurrences (its exemplar's place when it has none)."""
    return [(v, a, b) for v, a, b, _ in slot.occurrences] or [(slot.video_id, slot.start, slot.end)]


def budget_for(options: MemoryOptions, units: int, hours: float) -> int:
    """The bank's size for a library that has seen `units` gated units and `hours` of media."""
    share = math.ceil(options.budget * units)
    if options.slots_per_hour > 0:
        share = min(share, math.ceil(options.slots_per_hour * max(hours, 1 / 60)))
    return max(1, share)


def unit_vector(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The unit-norm mean of a unit's vectors (a shot's token-merged visual vectors)."""
    mean = np.mean(np.stack(vectors), axis=0).astype(np.float32)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)
