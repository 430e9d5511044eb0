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

    @property
    def cache_dir(self) -> Path:
        return self.home / "models"
