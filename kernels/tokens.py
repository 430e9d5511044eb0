"""Token merging: reduce the frame vectors of a shot to a few.

Two rules, both returning `Merged` (the vectors, the frames each stands for, and which token holds
every input frame):

- `merge_temporal` (what the vision stage uses): the frames, in time order, are cut into at most
  `keep` contiguous runs, each replaced by its mean. The cut is the exact optimum of the k-means
  objective restricted to runs (duration-weighted squared distance to the run's mean) plus a fixed
  `penalty` per run, found by dynamic programming. Frames of a shot change gradually (a pan, a
  zoom, someone walking in), so contiguous runs fit them better than unordered clusters: on
  bbb_10min it keeps 9% of the per-frame vectors at 99% of their recall@1, where ToMe matching keeps
  9.9% at 97.6% (docs/benchmarks/tokens.md). Weights are seconds, so the penalty means the same at
  any sampling rate.
- `merge_tokens`: ToMe-style bipartite soft matching (Bolya et al., 2023), kept as the peer the
  benchmark compares against and for unordered token sets. Each round splits the tokens alternately into two sets A and B, links every A token to its most
similar B token (cosine), and merges the r most similar links: the A token is folded into its B token
as a size-weighted mean. Rounds repeat until at most `keep` tokens remain. Sizes count the frames a
token stands for, so a merged vector is the plain mean of its frames; `owner` maps every input frame
to the token that holds it (its time span follows from that).

Each kernel has a plain-Python reference (`*_reference`) that the tests compare it against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Merged:
    tokens: torch.Tensor  # (k, d) merged vectors
    sizes: torch.Tensor  # (k,) frames each stands for
    owner: torch.Tensor  # (n,) index into tokens for every input frame


def _round(
    x: torch.Tensor, size: torch.Tensor, owner: torch.Tensor, forced: int, threshold: float | None
) -> tuple[torch.Tensor, ...]:
    a, b = x[0::2], x[1::2]
    sa, sb = size[0::2], size[1::2]
    scores = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (|A|, |B|)
    best, dst_of = scores.max(dim=-1)  # first maximum on ties
    order = torch.argsort(-best, stable=True)  # strongest links first, ties by position
    similar = int((best >= threshold).sum()) if threshold is not None else 0
    r = min(max(forced, similar), len(a))
    if r == 0:
        return x, size, owner  # nothing similar enough: order unchanged
    merged, kept = order[:r], torch.sort(order[r:]).values
    dst = dst_of[merged]
    b_sum = (b * sb[:, None]).index_add(0, dst, a[merged] * sa[merged, None])
    b_size = sb.index_add(0, dst, sa[merged])
    tokens = torch.cat([a[kept], b_sum / b_size[:, None]])
    sizes = torch.cat([sa[kept], b_size])
    # where each current token goes: kept A tokens first, then B (with what merged into it)
    new_of_a = torch.empty(len(a), dtype=torch.long)
    new_of_a[kept] = torch.arange(len(kept))
    new_of_a[merged] = len(kept) + dst
    new_index = torch.empty(len(x), dtype=torch.long)
    new_index[0::2] = new_of_a
    new_index[1::2] = len(kept) + torch.arange(len(b))
    return tokens, sizes, new_index[owner]


def merge_tokens(
    x: torch.Tensor, keep: int, sizes: torch.Tensor | None = None, threshold: float | None = None
) -> Merged:
    """Merge the rows of x (n, d) down to at most `keep` tokens (keep >= 1).

    With a `threshold` (cosine), merging goes on below `keep` while links at least that similar
    remain: a static shot becomes one token, a shot that changes keeps one per look it has."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    x = x.float()
    size = torch.ones(len(x)) if sizes is None else sizes.float()
    owner = torch.arange(len(x))
    while len(x) > 1:
        forced = min(max(0, len(x) - keep), len(x) // 2)  # |A| = ceil(n/2) >= r: progress each round
        if forced == 0 and threshold is None:
            break
        n = len(x)
        x, size, owner = _round(x, size, owner, forced, threshold)
        if len(x) == n:
            break  # no link left above the threshold
    return Merged(x, size, owner)


def merge_tokens_reference(x: torch.Tensor, keep: int, threshold: float | None = None) -> Merged:
    """The same rule, one token at a time in plain Python (slow; for the tests)."""
    toks = [row.double() for row in x]
    size = [1.0] * len(toks)
    owner = list(range(len(toks)))
    while len(toks) > 1:
        forced = min(max(0, len(toks) - keep), len(toks) // 2)
        if forced == 0 and threshold is None:
            break
        a_idx, b_idx = list(range(0, len(toks), 2)), list(range(1, len(toks), 2))
        links = []  # (score, position in A, position in B)
        for i, ai in enumerate(a_idx):
            best, best_j = -2.0, 0
            for j, bj in enumerate(b_idx):
                sim = float(F.cosine_similarity(toks[ai], toks[bj], dim=0))
                if sim > best:
                    best, best_j = sim, j
            links.append((best, i, best_j))
        links.sort(key=lambda t: (-t[0], t[1]))
        similar = sum(1 for sim, _, _ in links if threshold is not None and sim >= threshold)
        r = min(max(forced, similar), len(links))
        if r == 0:
            break
        merged = {i: j for _, i, j in links[:r]}
        kept = sorted(i for _, i, _ in links[r:])
        b_tok = [toks[bj] * size[bj] for bj in b_idx]
        b_size = [size[bj] for bj in b_idx]
        for i, j in merged.items():
            b_tok[j] = b_tok[j] + toks[a_idx[i]] * size[a_idx[i]]
            b_size[j] += size[a_idx[i]]
        new_pos = {}
        for n, i in enumerate(kept):
            new_pos[a_idx[i]] = n
        for i, j in merged.items():
            new_pos[a_idx[i]] = len(kept) + j
        for j, bj in enumerate(b_idx):
            new_pos[bj] = len(kept) + j
        toks = [toks[a_idx[i]] for i in kept] + [t / s for t, s in zip(b_tok, b_size, strict=True)]
        size = [size[a_idx[i]] for i in kept] + b_size
        owner = [new_pos[o] for o in owner]
    return Merged(
        torch.stack(toks).float() if toks else x[:0].float(),
        torch.tensor(size),
        torch.tensor(owner, dtype=torch.long),
    )


def merge_temporal(x: torch.Tensor, keep: int, penalty: float, weights: torch.Tensor | None = None) -> Merged:
    """Cut the rows of x (n, d), in time order, into at most `keep` contiguous runs (keep >= 1), each
    replaced by its weighted mean, minimising the runs' weighted squared distances to their means
    plus `penalty` per run. weights: (n,) seconds each frame stands for (default 1). Fewer runs win
    ties, so a static shot keeps one vector."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if penalty < 0:
        raise ValueError(f"penalty must be >= 0, got {penalty}")
    n = len(x)
    if n == 0:
        return Merged(x.float(), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    xd = x.double()
    w = torch.ones(n, dtype=torch.float64) if weights is None else weights.double()
    if (w <= 0).any():
        raise ValueError("weights must be positive")
    zero = torch.zeros(1, dtype=torch.float64)
    W = torch.cat([zero, w.cumsum(0)])  # (n+1,) prefix sums
    S = torch.cat([torch.zeros(1, x.shape[1], dtype=torch.float64), (w[:, None] * xd).cumsum(0)])
    Q = torch.cat([zero, (w * (xd * xd).sum(1)).cumsum(0)])
    # cost[a, b] of the run of frames a..b-1 (a < b): Q - |S|^2 / W over the run
    sq = (S * S).sum(1)  # |S_b - S_a|^2 from the Gram matrix: (n+1)^2 memory, not (n+1)^2 * d
    ds2 = (sq[None, :] + sq[:, None] - 2.0 * (S @ S.T)).clamp_min(0.0)
    dw = (W[None, :] - W[:, None]).clamp_min(1e-12)
    cost = (Q[None, :] - Q[:, None]) - ds2 / dw
    cost = cost.masked_fill(~torch.ones(n + 1, n + 1, dtype=torch.bool).triu(1), float("inf"))
    k_max = min(keep, n)
    best = torch.full((k_max + 1, n + 1), float("inf"), dtype=torch.float64)
    best[0, 0] = 0.0
    back = torch.zeros(k_max + 1, n + 1, dtype=torch.long)
    for k in range(1, k_max + 1):  # best[k, b]: frames 0..b-1 in exactly k runs
        best[k], back[k] = (best[k - 1][:, None] + cost).min(dim=0)
    totals = best[1:, n] + penalty * torch.arange(1, k_max + 1, dtype=torch.float64)
    k = int(torch.argmin(totals)) + 1  # first minimum: the fewest runs
    cuts, b = [n], n
    for j in range(k, 0, -1):
        b = int(back[j, b])
        cuts.append(b)
    cuts.reverse()  # [0, ..., n]
    owner = torch.empty(n, dtype=torch.long)
    tokens, sizes = [], []
    for r, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        owner[a:b] = r
        sizes.append(W[b] - W[a])
        tokens.append((S[b] - S[a]) / sizes[-1])
    return Merged(torch.stack(tokens).float(), torch.stack(sizes).float(), owner)


def merge_temporal_reference(
    x: torch.Tensor, keep: int, penalty: float, weights: list[float] | None = None
) -> Merged:
    """The same optimum by trying every set of cut positions (2^(n-1) of them: for the tests)."""
    import itertools

    n = len(x)
    rows = [r.double() for r in x]
    w = [1.0] * n if weights is None else [float(v) for v in weights]

    def run_cost(a: int, b: int) -> float:
        mean = sum(rows[i] * w[i] for i in range(a, b)) / sum(w[a:b])
        return sum(w[i] * float(((rows[i] - mean) ** 2).sum()) for i in range(a, b))

    best: tuple[float, int, list[int]] | None = None
    for k in range(1, min(keep, n) + 1):
        for inner in itertools.combinations(range(1, n), k - 1):
            cuts = [0, *inner, n]
            total = sum(run_cost(a, b) for a, b in itertools.pairwise(cuts)) + penalty * k
            if best is None or total < best[0] - 1e-9:
                best = (total, k, cuts)
    assert best is not None
    cuts = best[2]
    owner = [r for r, (a, b) in enumerate(itertools.pairwise(cuts)) for _ in range(a, b)]
    tokens = [sum(rows[i] * w[i] for i in range(a, b)) / sum(w[a:b]) for a, b in itertools.pairwise(cuts)]
    sizes = [sum(w[a:b]) for a, b in itertools.pairwise(cuts)]
    return Merged(torch.stack(tokens).float(), torch.tensor(sizes), torch.tensor(owner, dtype=torch.long))
