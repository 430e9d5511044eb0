"""A BERT sentence encoder in plain torch, for the sentence-transformers folders it can run: a
`BertModel` whose tokens are mean-pooled and normalised (all-MiniLM-L6-v2, the embedded default).

Why not sentence-transformers itself: importing it (and transformers, and scikit-learn behind it)
costs ~6.5 s of CPU before the first vector, which every `vidmem search` or `ask` from the command
line, every ingestion process and every Ray task paid. This module needs torch, `tokenizers` and
`safetensors` only (~1.5 s, torch's import), reads the folder's own weights and tokenizer, and gives
sentence-transformers' vectors to float rounding (tests/memory/test_text.py checks them against
it). Any other folder still goes to sentence-transformers (`memory.runtime.text.SentenceEmbedder`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def runs(folder: Path) -> bool:
    """Whether `folder` is a sentence-transformers model this module runs exactly: a BERT
    transformer, mean pooling of its tokens, then normalisation, with a fast tokenizer file."""
    try:
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        config = json.loads((folder / "config.json").read_text())
        wrapper = _wrapper_config(folder)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
    return (
        modules == ["Transformer", "Pooling", "Normalize"]
        and modes == {"pooling_mode_mean_tokens"}
        and config.get("model_type") == "bert"
        and config.get("hidden_act") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and (folder / "tokenizer.json").is_file()
        and (folder / "model.safetensors").is_file()
        and not wrapper.get("do_lower_case")  # sentence-transformers would lower-case the texts first
    )


def _wrapper_config(folder: Path) -> dict[str, Any]:
    """sentence-transformers' own settings for the folder (`max_seq_length`, `do_lower_case`)."""
    path = folder / "sentence_bert_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(d, d) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.up, self.down = nn.Linear(d, inner), nn.Linear(inner, d)

    def forward(self, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape

        def split(x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, heads, N, D / heads)
            return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(
            split(self.query(h)), split(self.key(h)), split(self.value(h)), keep
        )
        h = self.norm1(h + self.out(a.transpose(1, 2).reshape(b, n, d)))
        return self.norm2(h + self.down(F.gelu(self.up(h))))  # type: ignore[no-any-return]


class BertEncoder(nn.Module):
    """token ids (B, N) and their mask -> last hidden states (B, N, D), as `transformers.BertModel`."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        d, eps = config["hidden_size"], config["layer_norm_eps"]
        self.words = nn.Embedding(config["vocab_size"], d)
        self.positions = nn.Embedding(config["max_position_embeddings"], d)
        self.types = nn.Embedding(config["type_vocab_size"], d)
        self.norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(
            _Layer(d, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1])
        h = self.norm(self.words(ids) + self.positions(positions)[None] + self.types.weight[0])
        keep = mask[:, None, None, :].bool()  # (B, 1, 1, N): padding is never attended to
        for layer in self.layers:
            h = layer(h, keep)
        return h

    def load(self, weights: dict[str, torch.Tensor]) -> BertEncoder:
        """Take a `BertModel`'s tensors (named as in its safetensors file)."""
        names = {
            "embeddings.word_embeddings": "words",
            "embeddings.position_embeddings": "positions",
            "embeddings.token_type_embeddings": "types",
            "embeddings.LayerNorm": "norm",
        }
        parts = {
            "attention.self.query": "query",
            "attention.self.key": "key",
            "attention.self.value": "value",
            "attention.output.dense": "out",
            "attention.output.LayerNorm": "norm1",
            "intermediate.dense": "up",
            "output.dense": "down",
            "output.LayerNorm": "norm2",
        }
        state = {}
        for key, tensor in weights.items():
            key = key.removeprefix("bert.")
            stem, _, leaf = key.rpartition(".")
            if stem in names:
                state[f"{names[stem]}.{leaf}"] = tensor
            elif stem.startswith("encoder.layer."):
                i, _, part = stem.removeprefix("encoder.layer.").partition(".")
                if part in parts:
                    state[f"layers.{i}.{parts[part]}.{leaf}"] = tensor
        self.load_state_dict(state, strict=True)  # a tensor missing or misnamed fails here, loudly
        return self.eval()


class MeanPooledBert:
    """Texts -> L2-normalised mean-pooled BERT vectors (N, D), batched by length like
    sentence-transformers (texts longer than `max_seq_length` tokens are cut, as there)."""

    def __init__(self, folder: Path) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text())
        positions = int(config["max_position_embeddings"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(
            min(int(_wrapper_config(folder).get("max_seq_length", positions)), positions)
        )
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
        self.dim = int(config["hidden_size"])
        self.model = BertEncoder(config).load(load_file(str(folder / "model.safetensors")))

    def embed(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        texts = [str(t).strip() for t in texts]  # as sentence-transformers does
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths pad little
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for at in range(0, len(order), batch_size):
                rows = order[at : at + batch_size]
                encodings = self.tokenizer.encode_batch([texts[i] for i in rows])
                ids = torch.tensor([e.ids for e in encodings])
                mask = torch.tensor([e.attention_mask for e in encodings])
                h = self.model(ids, mask)
                weight = mask[..., None].to(h.dtype)
                pooled = (h * weight).sum(1) / weight.sum(1).clamp(min=1e-9)
                out[rows] = F.normalize(pooled, dim=1).numpy()
        return out
