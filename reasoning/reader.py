"""The exit gate: read evidence coarse to fine, and stop when what was read suffices.

The candidates, in reading order: the gists among the best coarse hits (a scene's or a chapter's
text, cut to `gist_words` words; at most `gists` of them), then the refined spans in rank order (at
most `spans`). After each item a GRU cell (kernels.gru) takes features of what was just read; its
head gives the probability that reading on would add nothing. Reading ends at the first span where
that probability reaches the fitted threshold; gists alone never end it.

The features (`EXIT_FEATURES`) use what was read so far and the retrieval scores, which are known
before anything is read (ranking costs no reading): the item's cosine with the question, the best
so far and the gain over it, its redundancy with what was read, its span score (the span scorer's,
less the video's rank penalty), how far it fell below the first span's and how far the next falls, the share of the question's words read so far and
those this item added, whether it is in the first span's video, the tokens read, the step, and the
spans left.

The head and its threshold (`exit_model.json`) were fitted by tests/fit/exit_folds.py on TutorialVQA
questions, on folds split by video: the label at an item is 1 when what was read up to it holds all
that the remaining candidates would add (a span at IoU >= 0.3 with the answer, or no candidate has
one). Without the weights file the gate is off and the pack is read whole, and the reading says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from kernels.gru import GRUHead
from kernels.timecode import hms
from memory.lexical import tokens as words_of
from memory.runtime.text import Embedder, token_counts
from reasoning.retrieve import Retrieved
from reasoning.search import Moment

MODEL_FILE = Path(__file__).with_name("exit_model.json")

EXIT_FEATURES = (
    "is_gist",
    "sim",
    "best_sim",
    "gain",
    "redundancy",
    "score",
    "score_drop",
    "next_drop",
    "q_cover",
    "q_new",
    "same_video",
    "log_tokens",
    "step",
    "spans_left",
)

GISTS = ("scene", "chapter")
"""Coarse hit kinds read as gists."""
GIST_RANK = 10
"""Gists are taken from this many best coarse hits."""


@dataclass
class ExitWeights(GRUHead):
    """The stop head (kernels.gru) and the probability at which reading stops."""

    threshold: float = 0.5

    def to_json(self) -> dict[str, Any]:
        return {"features": list(EXIT_FEATURES), **self.arrays_json(), "threshold": self.threshold}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ExitWeights:
        if list(raw.get("features", [])) != list(EXIT_FEATURES):
            raise ValueError(
                "exit weights were fitted on other features; refit them (tests/fit/exit_folds.py)"
            )
        return cls(**GRUHead.arrays_from(raw), threshold=float(raw["threshold"]))


@cache
def load_exit_weights(path: Path = MODEL_FILE) -> ExitWeights | None:
    """The shipped stop head, or None when the file is missing (the gate is then off)."""
    if not Path(path).is_file():
        return None
    return ExitWeights.from_json(json.loads(Path(path).read_text()))


@dataclass
class ReadOptions:
    spans: int = 5
    """Refined spans that may be read."""
    gists: int = 2
    """Gists (scene or chapter texts among the best coarse hits) read before the spans."""
    gist_words: int = 40
    """Words of a gist that are read."""
    gate: bool = True
    """Stop when the exit gate says what was read suffices (False: read every candidate)."""
    threshold: float | None = None
    """Stop probability at which reading ends; None: the fitted one."""
    recurrent: bool = True
    """Carry the GRU state from item to item (False: the ablation without recurrence)."""

    def __post_init__(self) -> None:
        if self.spans < 1 or self.gists < 0 or self.gist_words < 1:
            raise ValueError("spans must be >= 1, gists >= 0 and gist_words >= 1")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a probability in [0, 1], got {self.threshold}")


@dataclass
class ReadItem:
    moment: Moment
    role: str  # gist | span
    tokens: int
    stop: float | None = None
    """The stop head's probability after reading this item (None with the gate off)."""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "role": self.role,
            "kind": self.moment.kind,
            "video_id": self.moment.video_id,
            "start": round(self.moment.start, 3),
            "end": round(self.moment.end, 3),
            "timestamp": hms(self.moment.start),
            "tokens": self.tokens,
        }
        if self.stop is not None:
            out["stop"] = round(self.stop, 4)
        return out


@dataclass
class Reading:
    """What was read, in order, and why reading ended."""

    read: list[ReadItem]
    candidates: int
    exit: str
    """`gate` (the stop head said it suffices), `all read` (no candidate left) or `off` (gate off:
    the whole pack read; `note` says why when it was not asked for)."""
    threshold: float | None = None
    note: str = ""

    @property
    def tokens(self) -> int:
        return sum(item.tokens for item in self.read)

    def to_json(self) -> dict[str, object]:
        exit_: dict[str, object] = {"reason": self.exit, "after": len(self.read), "of": self.candidates}
        if self.threshold is not None:
            exit_["threshold"] = round(self.threshold, 4)
        if self.note:
            exit_["note"] = self.note
        return {"read": [i.to_json() for i in self.read], "tokens": self.tokens, "exit": exit_}


def candidates(retrieved: Retrieved, options: ReadOptions) -> list[tuple[str, Moment]]:
    """The items that may be read, in reading order: gists, then spans."""
    out: list[tuple[str, Moment]] = []
    for m in retrieved.coarse[:GIST_RANK]:
        if len(out) >= options.gists:
            break
        if m.kind in GISTS:
            words = m.text.split()
            text = " ".join(words[: options.gist_words]) + (" …" if len(words) > options.gist_words else "")
            out.append(("gist", Moment(m.video_id, m.start, m.end, m.score, text, m.kind, m.also)))
    out += [("span", m) for m in retrieved.moments[: options.spans]]
    return out


def exit_features(
    question: str, qvec: np.ndarray, items: list[tuple[str, Moment]], vectors: np.ndarray, tokens: list[int]
) -> np.ndarray:
    """(T, len(EXIT_FEATURES)): each item's features as read in order (see the module's docstring)."""
    asked = set(words_of(question)) or {""}
    spans = [i for i, (role, _) in enumerate(items) if role == "span"]
    first = items[spans[0]][1] if spans else None
    sims = vectors @ qvec if len(items) else np.zeros(0)
    out = np.zeros((len(items), len(EXIT_FEATURES)))
    best, seen, read_tokens = 0.0, set[str](), 0
    for t, (role, m) in enumerate(items):
        sim = float(sims[t])
        redundancy = float((vectors[:t] @ vectors[t]).max()) if t else 0.0
        words = set(words_of(m.text)) & asked
        new = words - seen
        seen |= words
        read_tokens += tokens[t]
        drop = next_drop = 0.0
        if role == "span" and first is not None:
            drop = min(max(first.score - m.score, 0.0), 5.0) / 5.0
            later = [i for i in spans if i > t]
            next_drop = min(max(m.score - items[later[0]][1].score, 0.0), 5.0) / 5.0 if later else 1.0
        out[t] = (
            float(role == "gist"),
            sim,
            max(best, sim),
            max(0.0, sim - best),
            redundancy,
            min(max(m.score, -10.0), 10.0) / 5.0 if role == "span" else 0.0,
            drop,
            next_drop,
            len(seen) / len(asked),
            len(new) / len(asked),
            float(first is not None and m.video_id == first.video_id),
            math.log1p(read_tokens) / 8.0,
            t / 10.0,
            sum(1 for i in spans if i > t) / 10.0,
        )
        best = max(best, sim)
    return out


def read(
    question: str,
    qvec: np.ndarray,
    retrieved: Retrieved,
    embedder: Embedder,
    options: ReadOptions | None = None,
    weights: ExitWeights | None = None,
) -> Reading:
    """Read the candidates coarse to fine until the exit gate stops (see the module's docstring)."""
    opts = options or ReadOptions()
    items = candidates(retrieved, opts)
    texts = [m.text for _, m in items]
    tokens = token_counts(texts)
    w = weights or (load_exit_weights() if opts.gate else None)
    if not opts.gate or w is None:  # the whole pack is read: no features to compute
        note = "" if not opts.gate else f"no exit weights at {MODEL_FILE}: the gate is off"
        read_ = [ReadItem(m, role, n) for (role, m), n in zip(items, tokens, strict=True)]
        return Reading(read_, len(items), "off", None, note)
    vectors = embedder.embed(texts) if items else np.zeros((0, len(qvec)), np.float32)
    feats = exit_features(question, qvec, items, vectors, tokens)
    threshold = w.threshold if opts.threshold is None else opts.threshold
    h = np.zeros(w.hidden)
    read_ = []
    for t, ((role, m), n) in enumerate(zip(items, tokens, strict=True)):
        h = w.step(feats[t], h) if opts.recurrent else h
        p = w.prob(feats[t], h)
        read_.append(ReadItem(m, role, n, p))
        if role == "span" and p >= threshold and t < len(items) - 1:
            return Reading(read_, len(items), "gate", threshold)
    return Reading(read_, len(items), "all read", threshold)
