"""A GRU cell with a logistic head over [state, input]: the recurrent decision both gates of the
memory make (write or not while ingesting, stop or not while answering).

`GRUHead` runs in numpy from plain arrays (inference needs no torch); `torch_gru_head` builds the same
network as a torch module for fitting, and `export()` gives the arrays back. The layout is
torch.nn.GRUCell's (rows r, z, n), so the two compute the same numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

W = TypeVar("W", bound="GRUHead")

ARRAYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "head")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class GRUHead:
    weight_ih: np.ndarray  # (3H, F)
    weight_hh: np.ndarray  # (3H, H)
    bias_ih: np.ndarray  # (3H,)
    bias_hh: np.ndarray  # (3H,)
    head: np.ndarray  # (H + F,)
    head_bias: float
    fitted_on: str = ""

    @property
    def hidden(self) -> int:
        return self.weight_hh.shape[1]

    @property
    def inputs(self) -> int:
        return self.weight_ih.shape[1]

    def step(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        """One GRU step: x (F,), h (H,) -> h' (H,), as torch.nn.GRUCell computes it."""
        H = self.hidden
        gi = self.weight_ih @ x + self.bias_ih  # (3H,)
        gh = self.weight_hh @ h + self.bias_hh
        r = sigmoid(gi[:H] + gh[:H])
        z = sigmoid(gi[H : 2 * H] + gh[H : 2 * H])
        n = np.tanh(gi[2 * H :] + r * gh[2 * H :])
        return (1.0 - z) * n + z * h

    def prob(self, x: np.ndarray, h: np.ndarray) -> float:
        """The head: a probability in (0, 1) from the state and the input."""
        return float(sigmoid(np.array(self.head @ np.concatenate([h, x]) + self.head_bias)))

    def run(self, xs: np.ndarray, recurrent: bool = True) -> np.ndarray:
        """The head's probabilities along a (T, F) sequence, the state starting at zero."""
        h = np.zeros(self.hidden)
        out = []
        for x in np.asarray(xs, np.float64):
            h = self.step(x, h) if recurrent else h
            out.append(self.prob(x, h))
        return np.array(out)

    def arrays_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k).tolist() for k in ARRAYS}
        out["head_bias"] = self.head_bias
        out["fitted_on"] = self.fitted_on
        return out

    @staticmethod
    def arrays_from(raw: dict[str, Any]) -> dict[str, Any]:
        """The constructor arguments held in `raw` (what `arrays_json` wrote)."""
        out: dict[str, Any] = {k: np.asarray(raw[k], dtype=np.float64) for k in ARRAYS}
        out["head_bias"] = float(raw["head_bias"])
        out["fitted_on"] = str(raw.get("fitted_on", ""))
        return out

    @classmethod
    def random(cls: type[W], features: int, hidden: int, rng: np.random.Generator, **extra: Any) -> W:
        """Small random weights to start fitting from."""
        return cls(
            weight_ih=rng.normal(0, 0.3, (3 * hidden, features)),
            weight_hh=rng.normal(0, 0.3, (3 * hidden, hidden)),
            bias_ih=np.zeros(3 * hidden),
            bias_hh=np.zeros(3 * hidden),
            head=rng.normal(0, 0.1, hidden + features),
            head_bias=0.0,
            **extra,
        )

    def constant(self: W) -> W:
        """The same weights with the head outputting 1/2 whatever it sees (the ablation without a head)."""
        return dataclasses.replace(self, head=np.zeros_like(self.head), head_bias=0.0)


def torch_gru_head(weights: W) -> Any:
    """`weights` as a torch module (for fitting): `module(xs)` over a (T, F) sequence returns the
    head's probabilities (T,), the state starting at zero; `module.export()` returns weights of the
    same class with the fitted arrays (its other fields kept)."""
    import torch
    from torch import nn

    class Module(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.GRUCell(weights.inputs, weights.hidden)
            self.head = nn.Linear(weights.hidden + weights.inputs, 1)
            with torch.no_grad():
                for name in ARRAYS[:4]:
                    getattr(self.cell, name).copy_(torch.as_tensor(getattr(weights, name)))
                self.head.weight.copy_(torch.as_tensor(weights.head)[None])
                self.head.bias.fill_(weights.head_bias)

        def forward(self, xs: torch.Tensor, recurrent: bool = True) -> torch.Tensor:
            h = xs.new_zeros(self.cell.hidden_size)
            out = []
            for x in xs:  # (F,)
                h = self.cell(x[None], h[None])[0] if recurrent else h
                out.append(self.head(torch.cat([h, x])))
            return torch.sigmoid(torch.cat(out))

        def export(self) -> W:
            get = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
            fitted = {name: get(getattr(self.cell, name)) for name in ARRAYS[:4]}
            return dataclasses.replace(
                weights, **fitted, head=get(self.head.weight)[0], head_bias=float(self.head.bias.item())
            )

    return Module()


def fit_gru_head(
    init: W,
    data: list[tuple[np.ndarray, np.ndarray]],
    epochs: int,
    rng: np.random.Generator,
    seed: int = 0,
    lr: float = 0.02,
    balance: bool = True,
    recurrent: bool = True,
) -> W:
    """Fit `init` on sequences (xs (T, F), ys (T,) in {0, 1}) by binary cross-entropy, one sequence a
        step (Adam) in the order `rng` draws, the two classes weighted equally when `balance`; torch
    seeded with `seed`; `recurrent` False keeps the state at zero (the ablation). Needs torch."""
    import torch

    torch.manual_seed(seed)
    model = torch_gru_head(init).double()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    pos = float(np.mean(np.concatenate([y for _, y in data]))) if data else 0.5
    weight = torch.tensor((1 - pos) / max(pos, 1e-6) if balance else 1.0, dtype=torch.float64)
    for _ in range(epochs):
        for i in rng.permutation(len(data)):
            xs, ys = data[i]
            if not len(xs):
                continue
            p = model(torch.as_tensor(xs), recurrent).clamp(1e-6, 1 - 1e-6)
            y = torch.as_tensor(ys)
            loss = -(weight * y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.export()  # type: ignore[no-any-return]
