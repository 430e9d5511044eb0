"""All settings in one place: environment `VIDMEM_*`, then CLI flags on top. docs/configuration.md
lists every field (a test fails when one is missing there)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "vidmem"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDMEM_", extra="ignore")

    home: Path = Field(
        default_factory=_default_home,
        description="Folder of the SQLite catalog, FAISS indexes and model cache.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the catalog (e.g. postgresql+psycopg://user@host/db); SQLite under `home` when unset.",
    )
    library: str = Field("default", description="Library used when a command names none.")
    decoder: str = Field("pyav", description="Video decoder: `pyav` or `decord`; the other is the fallback.")
    asr_model: str = Field(
        "base",
        description="Speech model: `base` (multilingual, language detection), `tiny.en` (English, faster) or a CTranslate2 folder.",
    )
    asr_language: str | None = Field(
        None, description="Force the transcript language (e.g. `en`); detected when unset."
    )
    text_model: str = Field(
        "all-MiniLM-L6-v2",
        description="Sentence-transformers model for text embeddings (packaged name or local folder).",
    )
    window_seconds: float = Field(
        20.0, gt=0, description="Length in seconds of the transcript windows that are embedded and searched."
    )

    image_encoder: str = Field(
        "efficientnet",
        description="Image encoder of the shots' visual vectors: `efficientnet` (packaged) or `clip:<folder or hub id>` (CLIP/SigLIP, adds text-to-frame search).",
    )
    vision: bool = Field(
        True,
        description="Look inside shots at ingestion: on-screen text, labels, faces, people, visual vectors.",
    )
    captioner: str = Field(
        "composed",
        description="`composed` (captions from what the models saw and heard, condensed by the LLM) or `openai-vlm` (a vision-language model at `llm_url` looks at keyframes).",
    )
    llm: str | None = Field(
        "smollm2",
        description="Embedded LLM that condenses captions: `smollm2` (packaged), a local transformers folder, or `none` for extractive captions.",
    )
    llm_url: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible server (vLLM), e.g. `http://127.0.0.1:8000/v1`; replaces the embedded LLM.",
    )
    llm_model: str | None = Field(
        None, description="Model name served at `llm_url` (what vLLM was started with)."
    )
    llm_api_key: str | None = Field(
        None, description="API key of the server at `llm_url`, if it asks for one."
    )
    answer_engine: str = Field(
        "auto",
        description="Who writes `vidmem ask` answers: `auto` (the server at `llm_url` when set, else the packaged `answer_llm`), `local` (`answer_llm` in-process), `openai` (the server at `llm_url`) or `extractive` (no LLM: the best evidence quoted).",
    )
    answer_llm: str = Field(
        "qwen0.5b",
        description="Packaged LLM (`smollm2`, `qwen0.5b`, `qwen1.5b`) or local transformers folder that answers with the `local` engine.",
    )
    vllm_venv: Path | None = Field(
        None,
        description="Virtual environment of the local vLLM server that `vidmem llm serve` starts; `.venv-vllm` in a source checkout (built by `make vllm`), else `home/vllm-venv`, when unset.",
    )

    @property
    def cache_dir(self) -> Path:
        return self.home / "models"
