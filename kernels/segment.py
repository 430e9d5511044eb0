"""Optimal partition of a sequence of weighted vectors into contiguous segments.

The cost of a segment is the weighted squared distance of its vectors to their weighted mean (the
k-means objective, restricted to contiguous runs); every segment also pays a fixed `penalty`. Dynamic
programming over prefix sums finds the exact minimum in O(n * max_len * d). Weights are durations in
seconds, so the result does not depend on how finely the timeline was cut into atoms (a 10 s cue
weighs as much as two 5 s ones saying the same).
"""

from __future__ import annotations

import numpy as np


def segment_costs(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prefix sums (W, S, Q) of weights, weighted vectors and weighted squared norms, length n + 1."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    zero = np.zeros((1, x.shape[1]))
    W = np.concatenate([[0.0], np.cumsum(w)])
    S = np.concatenate([zero, np.cumsum(w[:, None] * x, axis=0)])
    Q = np.concatenate([[0.0], np.cumsum(w * (x * x).sum(1))])
    return W, S, Q


def span_cost(W: np.ndarray, S: np.ndarray, Q: np.ndarray, a: np.ndarray | int, b: int) -> np.ndarray:
    """Cost of the segments [a, b) for one end b and one or many starts a."""
    dw = np.maximum(W[b] - W[a], 1e-12)
    ds = S[b] - S[a]
    return (Q[b] - Q[a]) - (ds * ds).sum(-1) / dw


def partition(
    x: np.ndarray,
    w: np.ndarray,
    penalty: float,
    starts: np.ndarray | None = None,
    ends: np.ndarray | None = None,
    min_len: float = 0.0,
    max_len: float = float("inf"),
    allowed: np.ndarray | None = None,
) -> list[int]:
    """Indices where segments begin (always starting with 0) for the least total cost.

    x: (n, d) vectors; w: (n,) positive weights; penalty: cost added per segment.
    starts/ends: (n,) times of each item (default: cumulative weights), used for min_len/max_len,
    the shortest and longest segment (min_len is dropped when no partition can meet it). allowed: (n,) bool, where a segment may begin (allowed[0] is implied).
    """
    n = len(x)
    if n == 0:
        return []
    w = np.asarray(w, np.float64)
    if (w <= 0).any():
        raise ValueError("weights must be positive")
    W, S, Q = segment_costs(x, w)
    if starts is None or ends is None:
        starts, ends = W[:-1], W[1:]
    starts = np.asarray(starts, np.float64)
    ends = np.asarray(ends, np.float64)
    ok = np.ones(n + 1, bool) if allowed is None else np.concatenate([np.asarray(allowed, bool), [True]])
    ok[0] = True
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    back = np.zeros(n + 1, np.int64)
    for b in range(1, n + 1):
        if not ok[b]:
            continue
        # starts a < b with ok[a], within max_len of the segment's end
        lo = int(np.searchsorted(starts, ends[b - 1] - max_len, side="left")) if np.isfinite(max_len) else 0
        cand = np.arange(min(lo, b - 1), b)
        cand = cand[ok[cand] & np.isfinite(best[cand])]
        if len(cand) == 0:  # nothing allowed within max_len: the longest segment that is
            cand = np.flatnonzero(ok[:b] & np.isfinite(best[:b]))[-1:]
        total = best[cand] + span_cost(W, S, Q, cand, b) + penalty
        total = np.where(ends[b - 1] - starts[cand] < min_len, np.inf, total)
        i = int(np.argmin(total))
        best[b], back[b] = total[i], cand[i]
    if not np.isfinite(best[n]):  # no partition has every segment min_len long: relax it
        return partition(x, w, penalty, starts, ends, 0.0, max_len, allowed) if min_len > 0 else [0]
    cuts = []
    b = n
    while b > 0:
        b = int(back[b])
        cuts.append(b)
    return sorted(cuts)
