"""Span refinement: from a coarse hit to where the answer really starts and ends.

Coarse search finds the region (a window, a scene, a chapter); the answer is a run of transcript cues
inside or around it whose edges rarely match any stored unit. Every contiguous run of up to
`max_cues` cues near the hit is a candidate; each is described by a few general features and
scored by a small MLP (`SpanScorer`):

- relevance: the query's cosine with the run's mean cue vector, the mean, maximum, first and last
  cue similarities, and BM25 of the query over the cues (IDF within the neighbourhood);
- contrast: how much less relevant the two cues before and after the run are;
- boundaries: how sharply the topic changes at each edge (cosine between the two cues before and
  the two after), the pause there, and how often an optimal partition of the neighbourhood
  (kernels.segment, several penalties) cuts there;
- shape: the run's length in cues and seconds, and its cohesion.

The run returned is the one with the highest expected IoU under the softmax of the scores (minimum-
Bayes-risk decoding), not the argmax: many good candidates agreeing beat one sharp peak.

The weights (`span_model.json`, ~800 numbers) were fitted on the TutorialVQA *train* questions
(tests/fit/train_span.py): they rank candidate runs by their overlap with the answer, and hold
no text or video of that data. Features are per run and per query; nothing is cached between calls.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from kernels.segment import partition
from memory.lexical import tokens

MODEL_FILE = Path(__file__).with_name("span_model.json")
FEATURES = [
    "spansim",
    "meansim",
    "max",
    "before",
    "after",
    "bsA",
    "bsB",
    "edgeA",
    "edgeB",
    "gapA",
    "gapB",
    "logL",
    "logL2",
    "logdur",
    "coh",
    "first",
    "last",
    "contrast",
    "persA",
    "persB",
    "bmmean",
    "bmlog",
    "bmmax",
]
PENALTIES = (2.0, 4.0, 7.0, 11.0, 16.0, 24.0)
"""Partition penalties (in units of the neighbourhood's variance per second) for boundary persistence."""


@dataclass
class CueRun:
    """A neighbourhood of one video's cues in time order, with their text vectors (n, d)."""

    video_id: str
    start: np.ndarray  # (n,) seconds
    end: np.ndarray  # (n,) seconds
    text: list[str]
    vectors: np.ndarray  # (n, d) float32, L2-normalised

    def __len__(self) -> int:
        return len(self.text)

    def window(self, lo: int, hi: int) -> CueRun:
        return CueRun(
            self.video_id, self.start[lo:hi], self.end[lo:hi], self.text[lo:hi], self.vectors[lo:hi]
        )


@dataclass
class Span:
    video_id: str
    first: int  # index of the first cue in the CueRun
    last: int  # index of the last cue (inclusive)
    start: float
    end: float
    score: float


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


def candidates(n: int, max_cues: int) -> tuple[np.ndarray, np.ndarray]:
    """All runs [a, b] (inclusive) of at most max_cues cues, as two index arrays."""
    a = np.repeat(np.arange(n), max_cues)
    b = a + np.tile(np.arange(max_cues), n)
    keep = b < n
    return a[keep], b[keep]


def _bm25_cues(docs: list[list[str]], query: list[str], k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """BM25 of the query over each cue, IDF and mean length taken within these cues."""
    n = len(docs)
    out = np.zeros(n)
    if not query or not n:
        return out
    df: Counter[str] = Counter()
    for d in docs:
        df.update(set(d))
    avg = max(1.0, sum(len(d) for d in docs) / n)
    terms = set(query)
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
    for i, d in enumerate(docs):
        tf = Counter(t for t in d if t in terms)
        norm = k1 * (1 - b + b * len(d) / avg)
        out[i] = sum(idf[t] * f * (k1 + 1) / (f + norm) for t, f in tf.items())
    return out


def _persistence(x: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """(n + 1,) share of the partitions (one per penalty) that cut before each cue; 1 at both ends."""
    n = len(x)
    w = np.maximum(seconds, 0.3)
    mean = np.average(x, axis=0, weights=w)
    var = float(((x - mean) ** 2).sum(1) @ w / w.sum())
    out = np.zeros(n + 1)
    for p in PENALTIES:
        for cut in partition(x, w, p * max(var, 1e-9)):
            out[cut] += 1
    out /= len(PENALTIES)
    out[0] = out[n] = 1.0
    return out


def _run_max(values: np.ndarray, max_cues: int) -> np.ndarray:
    """(n, max_cues): [i, L - 1] is the largest of values[i .. i + L - 1] (-inf past the end)."""
    n = len(values)
    out = np.full((n, max_cues), -np.inf)
    out[:, 0] = values
    for k in range(1, min(max_cues, n)):
        out[: n - k, k] = np.maximum(out[: n - k, k - 1], values[k:])
    return out


def span_features(run: CueRun, qvec: np.ndarray, query: str, max_cues: int = 20) -> tuple[np.ndarray, ...]:
    """(a, b, F): every candidate run [a, b] of `run` and its features (m, len(FEATURES))."""
    n = len(run)
    x = run.vectors.astype(np.float64)
    a, b = candidates(n, max_cues)
    length = (b - a + 1).astype(np.float64)
    prefix = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, 0)])
    sums = prefix[b + 1] - prefix[a]  # (m, d)
    norms = np.linalg.norm(sums, axis=1)
    q = np.asarray(qvec, np.float64)
    spansim = (sums @ q) / np.maximum(norms, 1e-9)
    s = x @ q  # (n,) cue similarities
    cs = np.concatenate([[0.0], np.cumsum(s)])
    meansim = (cs[b + 1] - cs[a]) / length
    mx = _run_max(s, max_cues)[a, b - a]

    def context(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        lo, hi = np.clip(lo, 0, n), np.clip(hi, 0, n)
        return np.where(hi > lo, (cs[hi] - cs[lo]) / np.maximum(hi - lo, 1), 0.0)

    before, after = context(a - 2, a), context(b + 1, b + 3)
    edge = np.full(n + 1, 0.5)  # topic change before cue i: the two cues before against the two after
    for i in range(1, n):
        edge[i] = 1.0 - float(_unit(x[max(0, i - 2) : i].mean(0)) @ _unit(x[i : i + 2].mean(0)))
    gap = np.zeros(n + 1)
    gap[1:n] = run.start[1:] - run.end[:-1]
    pers = _persistence(x, run.end - run.start)
    duration = np.maximum(run.end[b] - run.start[a], 0.1)
    bm = _bm25_cues([tokens(t) for t in run.text], tokens(query))
    cb = np.concatenate([[0.0], np.cumsum(bm)])
    span_bm = cb[b + 1] - cb[a]
    top_bm = max(float(bm.max()), 1e-6) if n else 1e-6
    F = np.stack(
        [
            spansim,
            meansim,
            mx,
            before,
            after,
            edge[a],
            edge[b + 1],
            (a == 0).astype(float),
            (b == n - 1).astype(float),
            np.minimum(gap[a], 5.0),
            np.minimum(gap[b + 1], 5.0),
            np.log(length),
            np.log(length) ** 2,
            np.log1p(duration),
            norms / length,
            s[a],
            s[b],
            spansim - np.maximum(before, after),
            pers[a],
            pers[b + 1],
            span_bm / top_bm / length,
            np.log1p(span_bm),
            _run_max(bm, max_cues)[a, b - a] / top_bm,
        ],
        axis=1,
    )
    return a, b, F


@dataclass
class SpanScorer:
    """A one-hidden-layer MLP over standardised span features: score = w2 . tanh(W1 (f - mu) / sd + b1)."""

    mu: np.ndarray
    sd: np.ndarray
    w1: np.ndarray  # (hidden, features)
    b1: np.ndarray
    w2: np.ndarray  # (hidden,)
    max_cues: int = 20

    @classmethod
    def load(cls, path: Path = MODEL_FILE) -> SpanScorer:
        return _load(str(path))

    def to_json(self) -> dict[str, object]:
        return {
            "features": FEATURES,
            "max_cues": self.max_cues,
            "mu": self.mu.tolist(),
            "sd": self.sd.tolist(),
            "w1": self.w1.tolist(),
            "b1": self.b1.tolist(),
            "w2": self.w2.tolist(),
        }

    def __call__(self, F: np.ndarray) -> np.ndarray:
        h = np.tanh(((F - self.mu) / self.sd) @ self.w1.T + self.b1)
        return h @ self.w2


@cache
def _load(path: str) -> SpanScorer:
    raw = json.loads(Path(path).read_text())
    if raw["features"] != FEATURES:
        raise ValueError(f"{path} was fitted on other features; refit it (tests/fit/train_span.py)")
    mu, sd, w1, b1, w2 = (np.asarray(raw[k], np.float64) for k in ("mu", "sd", "w1", "b1", "w2"))
    return SpanScorer(mu, sd, w1, b1, w2, max_cues=int(raw["max_cues"]))


MBR_TEMPERATURE = 0.8
"""Softmax temperature over the scores for the expected-IoU choice (picked on train: R1@0.5 42.6 by
the argmax, 48.4 at 0.8, 48.7 at 1.0 with a worse R1@0.7, 47.2 at 1.1; 930 train questions)."""

MBR_POOL = 400
"""Best-scoring candidates the expected-IoU choice looks at."""


def best_spans(
    run: CueRun,
    qvec: np.ndarray,
    query: str,
    scorer: SpanScorer | None = None,
    top: int = 1,
    temperature: float | None = MBR_TEMPERATURE,
) -> list[Span]:
    """The `top` best runs of cues in `run` (not overlapping one another), best first.

    Not the single best-scoring run: the scorer's softmax over candidates (at `temperature`) is
    read as a distribution over where the answer is, and the run with the highest expected IoU
    under it is chosen — minimum-Bayes-risk decoding, which prefers a run many good candidates
    agree with over a lone sharp peak. `temperature=None` takes the argmax. A span's score is the
    best candidate score in its region (what ranks regions and videos against each other).
    """
    if not len(run):
        return []
    scorer = scorer or SpanScorer.load()
    a, b, F = span_features(run, qvec, query, scorer.max_cues)
    z = scorer(F)
    alive = np.ones(len(z), bool)
    out: list[Span] = []
    while len(out) < top and alive.any():
        pool = np.flatnonzero(alive)
        pool = pool[np.argsort(-z[pool])[:MBR_POOL]]
        k = (
            int(pool[0])
            if temperature is None
            else int(pool[_expected_iou(run, a, b, z, pool, temperature).argmax()])
        )
        out.append(
            Span(
                run.video_id,
                int(a[k]),
                int(b[k]),
                float(run.start[a[k]]),
                float(run.end[b[k]]),
                float(z[pool[0]]),
            )
        )
        alive &= (b < a[k]) | (a > b[k])  # the next span lies elsewhere
    return out


def _expected_iou(
    run: CueRun, a: np.ndarray, b: np.ndarray, z: np.ndarray, pool: np.ndarray, temperature: float
) -> np.ndarray:
    """For each candidate in `pool`, its IoU in seconds with every other, weighted by softmax(z / T)."""
    s0, s1 = run.start[a[pool]], run.end[b[pool]]
    inter = np.maximum(0.0, np.minimum(s1[:, None], s1[None]) - np.maximum(s0[:, None], s0[None]))
    union = np.maximum(s1[:, None], s1[None]) - np.minimum(s0[:, None], s0[None])
    p = np.exp((z[pool] - z[pool].max()) / temperature)
    return (inter / np.maximum(union, 1e-9)) @ (p / p.sum())
