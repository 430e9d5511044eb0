"""The recurrent decision both memory gates make (kernels/gru.py): numpy and torch compute the same
numbers, weights survive a round trip, and fitting learns what only a recurrent state can know."""

from __future__ import annotations

import numpy as np
import torch

from kernels.gru import GRUHead, fit_gru_head, torch_gru_head


def test_numpy_and_torch_agree_and_export_round_trips() -> None:
    w = GRUHead.random(5, 6, np.random.default_rng(0))
    w = GRUHead(**{**w.__dict__, "bias_ih": np.full(18, 0.1), "head_bias": -0.2})
    xs = np.random.default_rng(1).normal(size=(12, 5))
    module = torch_gru_head(w).double()
    with torch.no_grad():
        want = module(torch.as_tensor(xs)).numpy()
        flat = module(torch.as_tensor(xs), recurrent=False).numpy()
    np.testing.assert_allclose(w.run(xs), want, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(w.run(xs, recurrent=False), flat, rtol=1e-7, atol=1e-10)
    back = module.export()
    np.testing.assert_allclose(back.run(xs), want, rtol=1e-7, atol=1e-10)
    assert back.constant().run(xs).tolist() == [0.5] * 12


def test_fitting_learns_what_needs_the_state() -> None:
    """Label: a spike (x > 1) has been seen earlier in the sequence. Only the recurrent state can
    know it; without recurrence the head sees the current input alone."""
    rng = np.random.default_rng(3)
    data = []
    for _ in range(60):
        xs = rng.normal(0, 0.3, (12, 1))
        at = rng.integers(0, 12)
        xs[at, 0] = 2.0
        ys = (np.arange(12) >= at).astype(np.float64)
        data.append((xs, ys))
    train, held = data[:40], data[40:]

    def accuracy(w: GRUHead, recurrent: bool) -> float:
        return float(np.mean([((w.run(x, recurrent) > 0.5) == (y > 0.5)).mean() for x, y in held]))

    init = GRUHead.random(1, 4, np.random.default_rng(4))
    recurrent = fit_gru_head(init, train, 40, np.random.default_rng(5), lr=0.05, balance=False)
    flat = fit_gru_head(init, train, 40, np.random.default_rng(5), lr=0.05, balance=False, recurrent=False)
    assert accuracy(recurrent, True) > 0.95
    assert accuracy(flat, False) < 0.8
