"""Token merging (kernels/tokens.py): the torch kernel against its plain-Python reference, and the
properties a shot's reduced vectors must have."""

from __future__ import annotations

import pytest
import torch

from kernels.tokens import merge_tokens, merge_tokens_reference


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
