"""Token merging: reduce the frame vectors of a shot to a few, ToMe style (Bolya et al., 2023).

Each round splits the tokens alternately into two sets A and B, links every A token to its most
similar B token (cosine), and merges the r most similar links: the A token is folded into its B token
as a size-weighted mean. Rounds repeat until at most `keep` tokens remain. Sizes count the frames a
token stands for, so a merged vector is the plain mean of its frames; `owner` maps every input frame
to the token that holds it (its time span follows from that).

`merge_tokens` is the batched torch kernel; `merge_tokens_reference` is a plain-Python version of the
same rule that the tests compare it against.
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
