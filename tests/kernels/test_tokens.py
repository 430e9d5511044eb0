"""Token merging (kernels/tokens.py): the torch kernel against its plain-Python reference, and the
properties a shot's reduced vectors must have."""

from __future__ import annotations

import pytest
import torch

from kernels.tokens import merge_temporal, merge_temporal_reference, merge_tokens, merge_tokens_reference


@pytest.mark.parametrize(("n", "keep"), [(2, 1), (7, 3), (16, 4), (33, 5), (50, 1), (64, 8)])
def test_kernel_matches_the_reference(n: int, keep: int) -> None:
    x = torch.randn(n, 12, generator=torch.Generator().manual_seed(n * 100 + keep))
    got, ref = merge_tokens(x, keep), merge_tokens_reference(x, keep)
    assert len(got.tokens) == len(ref.tokens) <= keep
    torch.testing.assert_close(got.tokens, ref.tokens, atol=1e-5, rtol=1e-5)
    assert got.sizes.tolist() == ref.sizes.tolist()
    assert got.owner.tolist() == ref.owner.tolist()


def test_each_token_is_the_mean_of_the_frames_it_owns() -> None:
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    m = merge_tokens(x, 6)
    assert m.sizes.sum().item() == 40
    for k in range(len(m.tokens)):
        rows = x[m.owner == k]
        assert len(rows) == int(m.sizes[k])
        torch.testing.assert_close(m.tokens[k], rows.mean(0), atol=1e-5, rtol=1e-5)


def test_distinct_looks_within_a_shot_stay_apart() -> None:
    """Three visual states (a wide shot, a close-up, a screen insert) -> three vectors, one each."""
    g = torch.Generator().manual_seed(2)
    centres = torch.eye(3, 16) * 5.0
    labels = torch.tensor([0] * 12 + [1] * 9 + [2] * 11)
    x = centres[labels] + 0.3 * torch.randn(len(labels), 16, generator=g)
    m = merge_tokens(x, 3)
    assert len(m.tokens) == 3
    for k in range(3):
        assert len(set(labels[m.owner == k].tolist())) == 1, "a token mixes two looks"


def test_nothing_to_merge_and_bad_keep() -> None:
    x = torch.randn(4, 3)
    m = merge_tokens(x, 10)
    torch.testing.assert_close(m.tokens, x)
    assert m.owner.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="keep"):
        merge_tokens(x, 0)


@pytest.mark.parametrize(("n", "keep", "threshold"), [(9, 4, 0.2), (24, 6, 0.0), (31, 3, 0.5), (40, 8, -0.1)])
def test_kernel_matches_the_reference_with_a_threshold(n: int, keep: int, threshold: float) -> None:
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(n + keep))
    got, ref = merge_tokens(x, keep, threshold=threshold), merge_tokens_reference(x, keep, threshold)
    assert len(got.tokens) == len(ref.tokens) <= keep
    torch.testing.assert_close(got.tokens, ref.tokens, atol=1e-5, rtol=1e-5)
    assert got.owner.tolist() == ref.owner.tolist()


def test_a_threshold_folds_a_static_shot_into_one_vector_and_keeps_distinct_looks() -> None:
    g = torch.Generator().manual_seed(3)
    static = torch.ones(20, 16) + 0.01 * torch.randn(20, 16, generator=g)
    assert len(merge_tokens(static, 4, threshold=0.9).tokens) == 1
    assert len(merge_tokens(static, 4).tokens) == 4  # without one, `keep` is the only limit
    centres = torch.eye(2, 16) * 5.0
    labels = torch.tensor([0] * 10 + [1] * 10)
    two = centres[labels] + 0.3 * torch.randn(20, 16, generator=g)
    m = merge_tokens(two, 4, threshold=0.9)
    assert len(m.tokens) == 2
    assert all(len(set(labels[m.owner == k].tolist())) == 1 for k in range(2))


# --- temporal merging: the vision stage's rule ---------------------------------------------------


@pytest.mark.parametrize(
    ("n", "keep", "penalty", "weighted"),
    [(1, 4, 0.1, False), (5, 2, 0.0, False), (8, 4, 0.5, True), (10, 3, 2.0, True), (9, 9, 0.3, False)],
)
def test_temporal_kernel_finds_the_exact_optimum(n: int, keep: int, penalty: float, weighted: bool) -> None:
    g = torch.Generator().manual_seed(n * 10 + keep)
    x = torch.randn(n, 5, generator=g)
    w = (torch.rand(n, generator=g) + 0.2) if weighted else None
    got = merge_temporal(x, keep, penalty, w)
    ref = merge_temporal_reference(x, keep, penalty, None if w is None else w.tolist())
    assert got.owner.tolist() == ref.owner.tolist()
    torch.testing.assert_close(got.tokens, ref.tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.sizes, ref.sizes.float(), atol=1e-5, rtol=1e-5)


def test_temporal_runs_are_contiguous_weighted_means() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(30, 8, generator=g)
    w = torch.rand(30, generator=g) + 0.5
    m = merge_temporal(x, 4, 0.0, w)
    assert len(m.tokens) == 4  # no penalty: every run allowed is used
    assert m.owner.tolist() == sorted(m.owner.tolist())  # runs in time order, no interleaving
    for k in range(4):
        rows = m.owner == k
        torch.testing.assert_close(m.tokens[k], (x[rows] * w[rows, None]).sum(0) / w[rows].sum())
        torch.testing.assert_close(m.sizes[k], w[rows].sum())


def test_temporal_keeps_one_vector_per_look() -> None:
    """A static shot keeps one vector; a shot that cuts between three looks keeps three, each pure."""
    g = torch.Generator().manual_seed(5)
    static = torch.nn.functional.normalize(
        torch.ones(20, 16) + 0.01 * torch.randn(20, 16, generator=g), dim=1
    )
    assert len(merge_temporal(static, 4, 0.25, torch.full((20,), 0.5)).tokens) == 1
    centres = torch.eye(3, 16)
    labels = torch.tensor([0] * 8 + [1] * 5 + [2] * 7)
    looks = torch.nn.functional.normalize(centres[labels] + 0.05 * torch.randn(20, 16, generator=g), dim=1)
    m = merge_temporal(looks, 4, 0.25, torch.full((20,), 0.5))
    assert len(m.tokens) == 3
    assert all(len(set(labels[m.owner == k].tolist())) == 1 for k in range(3))
    assert len(merge_temporal(looks, 2, 0.25).tokens) == 2  # `keep` caps it


def test_temporal_rejects_bad_arguments() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="keep"):
        merge_temporal(x, 0, 0.1)
    with pytest.raises(ValueError, match="penalty"):
        merge_temporal(x, 2, -1.0)
    with pytest.raises(ValueError, match="weights"):
        merge_temporal(x, 2, 0.1, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert len(merge_temporal(x[:0], 2, 0.1).tokens) == 0
