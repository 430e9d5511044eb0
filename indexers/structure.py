"""Scenes and chapters: the timeline's atoms (shots, or transcript cues when there are no shots)
grouped into contiguous runs that say and show the same thing.

Each atom becomes a vector: the MiniLM embedding of the words spoken in it and, for shots, the shot's
colour signature. Scenes are the optimal partition of the atoms under a per-segment penalty
(kernels.segment); chapters are the optimal partition under a larger penalty with boundaries allowed
only where scenes begin, so chapters are made of whole scenes. Penalties are given in seconds of the
item's own variability (how much its content moves per second overall), so one setting suits a
slide talk and an action film alike. A cue that runs across a shot cut keeps the two shots in one
scene (transcript continuity).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Embed = Callable[[list[str]], np.ndarray]
"""Texts -> unit vectors (n, d)."""


@dataclass
class StructureOptions:
    scene_seconds: float = 7.0
    """Scene granularity: the per-scene penalty, in seconds of the item's mean variability."""
    chapter_seconds: float = 15.0
    """Chapter granularity, the same way; chapters are made of whole scenes."""
    min_scene: float = 6.0
    """Shortest scene (seconds) unless nothing else is possible."""
    min_chapter: float = 30.0
    """Shortest chapter (seconds)."""
    max_scene: float = 600.0
    """Longest scene (seconds): bounds the search, and the scene."""
    max_chapter: float = 3600.0
    """Longest chapter (seconds)."""
    visual_weight: float = 0.5
    """Share of the visual signature in a shot's vector when the shot also has speech."""

    def __post_init__(self) -> None:
        if not 0 < self.scene_seconds <= self.chapter_seconds:
            raise ValueError("need 0 < scene_seconds <= chapter_seconds")
        if not 0.0 <= self.visual_weight <= 1.0:
            raise ValueError("visual_weight must be in [0, 1]")


@dataclass
class Atom:
    start: float
    end: float
    text: str = ""
    visual: np.ndarray | None = None  # a colour signature, for shots


@dataclass
class Structure:
    scenes: list[tuple[float, float]]
    chapters: list[tuple[float, float]]


def atoms_from(
    shots: Sequence[tuple[float, float]],
    cues: Sequence[tuple[float, float, str]],
    visuals: Sequence[np.ndarray | None] | None = None,
) -> list[Atom]:
    """Shots with the words spoken in them, or the cues themselves when there are no shots."""
    if not shots:
        return [Atom(s, e, t) for s, e, t in cues if e > s]
    atoms = []
    for i, (start, end) in enumerate(shots):
        words = [t for s, e, t in cues if min(e, end) - max(s, start) > 0.5 * min(e - s, end - start)]
        atoms.append(Atom(start, end, " ".join(words), visuals[i] if visuals else None))
    return atoms


def _continuity(atoms: Sequence[Atom], cues: Sequence[tuple[float, float, str]]) -> np.ndarray:
    """Where a segment may begin: not at a cut that a cue runs across by more than 0.5 s each side."""
    ok = np.ones(len(atoms), bool)
    if not cues:
        return ok
    starts = np.array([c[0] for c in cues])
    ends = np.array([c[1] for c in cues])
    for i, atom in enumerate(atoms[1:], 1):
        ok[i] = not bool(((starts < atom.start - 0.5) & (ends > atom.start + 0.5)).any())
    return ok


def vectors(atoms: Sequence[Atom], embed: Embed, visual_weight: float) -> np.ndarray:
    """One unit-scale vector per atom: text embedding and visual signature side by side."""
    texts = [a.text for a in atoms]
    spoken = [i for i, t in enumerate(texts) if t.strip()]
    parts = []
    if spoken:
        emb = embed([texts[i] for i in spoken])
        text = np.zeros((len(atoms), emb.shape[1]), np.float32)
        text[spoken] = emb
        parts.append(text)
    if any(a.visual is not None for a in atoms):
        dim = next(len(a.visual) for a in atoms if a.visual is not None)
        vis = np.stack([_unit(a.visual) if a.visual is not None else np.zeros(dim) for a in atoms])
        if parts:  # shots with speech: mix; silent shots: visual only, at full weight
            has_text = np.zeros((len(atoms), 1))
            has_text[spoken] = 1.0
            parts[0] = parts[0] * np.sqrt(1.0 - visual_weight)
            vis = vis * np.where(has_text > 0, np.sqrt(visual_weight), 1.0)
        parts.append(vis)
    if not parts:
        return np.zeros((len(atoms), 1), np.float32)
    return np.concatenate(parts, axis=1).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.sqrt(np.maximum(np.asarray(v, np.float64), 0.0))  # Hellinger: histograms compare by sqrt
    return v / max(float(np.linalg.norm(v)), 1e-12)


def build(
    atoms: Sequence[Atom],
    duration: float,
    embed: Embed,
    opts: StructureOptions | None = None,
    cues: Sequence[tuple[float, float, str]] = (),
) -> Structure:
    """Scenes and chapters tiling [0, duration]; boundaries only where atoms begin, and not where one
    of `cues` runs across (pass the cues when the atoms are shots)."""
    from kernels.segment import partition, segment_costs, span_cost

    opts = opts or StructureOptions()
    whole = [(0.0, duration)]
    if len(atoms) < 2 or duration <= 0:
        return Structure(whole, whole)
    x = vectors(atoms, embed, opts.visual_weight)
    starts = np.array([a.start for a in atoms])
    ends = np.array([a.end for a in atoms])
    w = np.maximum(ends - starts, 0.2)
    W, S, Q = segment_costs(x, w)
    rate = float(span_cost(W, S, Q, 0, len(atoms))) / float(W[-1])  # variability per second
    if rate <= 1e-9:  # nothing changes: one scene, one chapter
        return Structure(whole, whole)
    ok = _continuity(atoms, cues) if cues else None
    scene_idx = partition(
        x, w, opts.scene_seconds * rate, starts, ends, opts.min_scene, opts.max_scene, allowed=ok
    )
    at_scene = np.zeros(len(atoms), bool)
    at_scene[scene_idx] = True
    chapter_idx = partition(
        x, w, opts.chapter_seconds * rate, starts, ends, opts.min_chapter, opts.max_chapter, allowed=at_scene
    )
    return Structure(_tile(starts, scene_idx, duration), _tile(starts, chapter_idx, duration))


def _tile(starts: np.ndarray, idx: Sequence[int], duration: float) -> list[tuple[float, float]]:
    """Segments from the atoms where they begin: the first from 0, each to the next, the last to the end."""
    bounds = [0.0] + [float(starts[i]) for i in idx[1:]] + [duration]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
