"""All settings in one place. Sources, strongest first: CLI flags, environment `VIDMEM_*`, a TOML
config file (`VIDMEM_CONFIG`, else `~/.config/vidmem/config.toml` when it exists), the defaults.
docs/configuration.md lists every field (a test fails when one is missing there)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if TYPE_CHECKING:
    from indexers import IngestOptions
    from indexers.source import StorageOptions
    from indexers.vision import VisionOptions
    from memory.gate import MemoryOptions
    from memory.runtime.text import Embedder
    from reasoning.answer import AnswerEngine


def config_file() -> Path | None:
    """The TOML config file in force: `VIDMEM_CONFIG` (which must exist), else the user's one if any."""
    named = os.environ.get("VIDMEM_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"VIDMEM_CONFIG={named}: no such config file")
        return path
    default = Path.home() / ".config" / "vidmem" / "config.toml"
    return default if default.is_file() else None


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
    index_backend: Literal["files", "postgres"] = Field(
        "files",
        description="Where the search indexes live: `files` (FAISS and BM25 files under `home`, one process's copy) or `postgres` (vectors in pgvector tables, BM25 postings in a full-text-search table, both in the catalog's PostgreSQL and shared by every host; needs a PostgreSQL `database_url` with the `vector` extension).",
    )
    ray_window: float = Field(
        1800.0,
        ge=0,
        description="`vidmem ingest --ray`: a recording longer than two windows of this many seconds is split. Its own task finds the shots and reads the audio; each window of shots is looked inside (vision) by a task of its own, and each audio chunk after the first speech is heard by one, on any node; its task commits what they found. 0: one task per file, whatever its length.",
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
    memory_budget: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Slots the library's memory may hold, as a share of the shots, windows and cues it has seen "
        "(1: only repeats are folded; 0.3: about 3 units in 10 stay in the search indexes).",
    )
    memory_slots_per_hour: float = Field(
        0.0,
        ge=0,
        description="Streaming budget: at most this many memory slots per hour of media (0: no cap).",
    )
    memory_skip_below: float = Field(
        0.0, ge=0, le=1, description="Salience under which the memory skips a unit outright (0: never)."
    )

    image_encoder: str = Field(
        "efficientnet",
        description="Image encoder of the shots' visual vectors: `efficientnet` (packaged) or `clip:<folder or hub id>` (CLIP/SigLIP, adds text-to-frame search).",
    )
    vision: bool = Field(
        True,
        description="Look inside shots at ingestion: on-screen text, labels, faces, people, visual vectors.",
    )
    vision_people: bool = Field(
        True,
        description="Look for frontal faces and people (OpenCV Haar and HOG) on each shot's keyframe: 12.8 of the 29.5 CPU-s the vision models cost on bbb_10min (docs/benchmarks/look_costs.md); `false` keeps OCR, labels and visual vectors.",
    )
    vision_fps: float = Field(
        1.0,
        gt=0,
        le=4,
        description="Frames a second of shot encoded for its visual vectors and labels (at most 16 per shot at 1, 64 at 4). More find a frame again across re-encodes better and cost EfficientNet's time on each (docs/benchmarks/memory_fps4.md).",
    )
    vision_text_frames: int = Field(
        4,
        ge=1,
        le=16,
        description="Frames per shot OCR may read when text was found and its area changes (a credit roll, a scrolled page, burned-in subtitles); 1 reads the keyframe only.",
    )
    vision_text_probe_seconds: float = Field(
        8.0,
        ge=0,
        description="A shot whose keyframe shows no text gets one more frame read per this many seconds of its length (a lower third inside a long shot); 0 turns it off.",
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
        description="Base URL of an OpenAI-compatible server (vLLM), e.g. `http://127.0.0.1:8000/v1`; replaces the embedded LLM. Several replicas of the same model: their URLs separated by commas (each request goes to the one with the fewest in flight; one that fails is skipped until it answers again).",
    )
    llm_model: str | None = Field(
        None, description="Model name served at `llm_url` (what vLLM was started with)."
    )
    llm_api_key: str | None = Field(
        None, description="API key of the server at `llm_url`, if it asks for one."
    )
    answer_engine: str = Field(
        "auto",
        description="Who writes `vidmem ask` answers: `auto` (the server at `llm_url` when set, else `extractive`), `local` (`answer_llm` in-process), `openai` (the server at `llm_url`) or `extractive` (no LLM: the best evidence quoted).",
    )
    answer_llm: str = Field(
        "smollm2",
        description="Packaged LLM (`smollm2`, `qwen0.5b`, `qwen1.5b`) or local transformers folder that answers with the `local` engine.",
    )
    vllm_venv: Path | None = Field(
        None,
        description="Virtual environment of the local vLLM server that `vidmem llm serve` starts; `.venv-vllm` in a source checkout (built by `make vllm`), else `home/vllm-venv`, when unset.",
    )

    # the generation bridge
    generation_url: str | None = Field(
        None,
        description="Base URL of the `http` generation backend's server (e.g. `http://gpu-box:8091` for vLLM-Omni, `http://gpu-box:8188` for ComfyUI); unset: no `http` backend.",
    )
    generation_protocol: Literal["openai-videos", "comfyui"] = Field(
        "openai-videos",
        description="What the server at `generation_url` speaks: `openai-videos` (`/v1/videos`, as vLLM-Omni serves it) or `comfyui` (`/prompt`, `/history`, `/view`).",
    )
    generation_model: str = Field("", description="Model name sent to an `openai-videos` server.")
    generation_workflow: Path | None = Field(
        None,
        description="ComfyUI workflow template (API-format JSON with `{{prompt}}`, `{{seed}}`, `{{frames}}`, `{{image}}`… placeholders) for the `comfyui` protocol.",
    )
    generation_api_key: str | None = Field(
        None, description="Bearer key of the generation server, if it asks for one."
    )
    generation_fps: float = Field(
        24.0,
        gt=0,
        le=240,
        description="Frame rate the remote model renders at (its pieces are conformed to the video's).",
    )

    diffusers_model: Path | None = Field(
        None,
        description="Folder of a diffusers video pipeline (`save_pretrained` layout, e.g. LTX-Video) for the `diffusers` generation backend; unset: no `diffusers` backend. No weights ship with vidmem.",
    )
    diffusers_pipeline: Literal["ltx-condition", "ltx2-condition", "wan-vace"] = Field(
        "ltx-condition",
        description="Which diffusers pipeline `diffusers_model` holds: `ltx-condition` (LTX-Video, `LTXConditionPipeline`), `ltx2-condition` (LTX-2, `LTX2ConditionPipeline`: also `audio: generate`) or `wan-vace` (Wan VACE, `WanVACEPipeline`: masks).",
    )
    diffusers_device: str = Field(
        "cpu", description="Device of the diffusers pipeline (`cuda`, `cuda:1`, `cpu`)."
    )
    diffusers_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype of the diffusers pipeline (`bfloat16` on GPUs)."
    )
    diffusers_steps: int = Field(40, ge=1, le=200, description="Denoising steps of the diffusers pipeline.")

    # the service (`vidmem serve`)
    host: str = Field("127.0.0.1", description="Address `vidmem serve` listens on.")
    port: int = Field(8765, ge=0, le=65535, description="Port `vidmem serve` listens on.")
    api_key: str | None = Field(
        None,
        min_length=16,
        description="An admin API key the service accepts (stored hashed at start); changing or removing it revokes the one it registered before. When unset and the catalog holds no key, `vidmem serve` makes one and writes it to `home/admin.key` (mode 0600).",
    )
    workers: int = Field(
        1,
        ge=0,
        le=16,
        description="Ingestion worker processes the service runs (0: none, e.g. a read-only replica).",
    )
    media_roots: list[Path] = Field(
        default_factory=list,
        description="Folders the API may ingest server-side paths from (JSON list in the environment); empty: only uploads.",
    )
    library_media_roots: dict[str, list[Path]] = Field(
        default_factory=dict,
        description="Media roots granted to one library (JSON object: library -> folders): a `write` key of that library may import from them; other server-side imports need an admin key.",
    )
    session_seconds: int = Field(
        12 * 3600, gt=0, description="How long a login of the page (its session cookie) lasts, in seconds."
    )
    rate_limit: float = Field(
        0.0,
        ge=0,
        description="Requests per second each API key may make on average (token bucket; 0: no limit); beyond it, 429 with Retry-After.",
    )
    rate_limit_burst: int = Field(
        0,
        ge=0,
        description="Requests a key may make at once above `rate_limit` (the bucket's size); 0: twice the rate, at least 1.",
    )
    auth_failure_burst: int = Field(
        5,
        ge=1,
        description="Wrong API keys (a failed login of the page, or a bad key on any route) one client address may send at once before it gets 429 with Retry-After.",
    )
    auth_failure_seconds: float = Field(
        10.0,
        ge=0,
        description="Seconds after which an address that spent `auth_failure_burst` may try once more (its bucket refills one attempt per this many seconds); 0: wrong keys are not limited.",
    )
    media_url_roots: list[str] = Field(
        default_factory=list,
        description="URL prefixes (`s3://bucket/prefix`, `https://host/path`) an admin key may import media from by URL (JSON list in the environment); empty: no URL imports through the API. The CLI reads any `s3://`, `https://`, `http://` or `file://` URL.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="Endpoint of the S3-compatible object store that `s3://` media and `upload_url` live in (MinIO, Ceph, …; e.g. `http://127.0.0.1:9000`); AWS S3 when unset. Credentials and region come from the standard AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`, `AWS_DEFAULT_REGION`) or an instance role.",
    )
    upload_url: str | None = Field(
        None,
        pattern=r"^s3://[^/\s]+(/\S*)?$",
        description="`s3://bucket/prefix`: uploads are streamed into the object store (a multipart upload of 8 MiB parts sent as they fill: a few parts in memory, never a local copy) as `prefix/<id>/<name>` instead of `home/uploads`, and read from there by byte ranges; deleting the video deletes the object. Unset: uploads go to `home/uploads`.",
    )
    upload_max_bytes: int = Field(
        8 * 1024**3, gt=0, description="Largest upload the API accepts, in bytes (larger ones get 413)."
    )
    query_max_chars: int = Field(1000, gt=0, description="Longest search query or question, in characters.")
    max_results: int = Field(100, gt=0, description="Most results one search request may ask for.")
    job_stale_seconds: float = Field(
        30.0,
        gt=0,
        description="A running job whose worker has not reported for this long is taken over by another worker (its own process gone).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_file()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def cache_dir(self) -> Path:
        return self.home / "models"

    @property
    def uploads_dir(self) -> Path:
        return self.home / "uploads"

    def storage_options(self) -> StorageOptions:
        """How media named by URL is reached (indexers.source)."""
        from indexers.source import StorageOptions

        return StorageOptions(s3_endpoint_url=self.s3_endpoint_url)

    def open_media(self, uri: str) -> tuple[str, tuple[str, ...]]:
        """How ffmpeg reads the media at `uri` (`reasoning.generate.Opener`): after checking the
        object is there (MediaError when it is not, or the store cannot be reached), its https URL
        (pre-signed for `s3://`) and the input options a remote input needs."""
        from indexers.source import media_source

        source = media_source(uri, self.storage_options())
        source.stat()
        return source.ffmpeg_input(), tuple(source.ffmpeg_options())

    @property
    def edits_dir(self) -> Path:
        """Where generation jobs write their insert, timeline files and preview (a folder per job)."""
        return self.home / "edits"

    def generation_options(self) -> dict[str, dict[str, Any]]:
        """Constructor options of each generation backend, by name (the ffmpeg backend takes none)."""
        return {
            "diffusers": {
                "model": self.diffusers_model,
                "pipeline": self.diffusers_pipeline,
                "device": self.diffusers_device,
                "dtype": self.diffusers_dtype,
                "steps": self.diffusers_steps,
            },
            "http": {
                "url": self.generation_url,
                "protocol": self.generation_protocol,
                "model": self.generation_model,
                "workflow": self.generation_workflow,
                "api_key": self.generation_api_key,
                "fps": self.generation_fps,
            },
        }

    def vision_options(self) -> VisionOptions:
        from indexers.vision import VisionOptions

        return VisionOptions(
            people=self.vision_people,
            text_frames=self.vision_text_frames,
            text_probe_every=self.vision_text_probe_seconds,
        )

    def memory_options(self) -> MemoryOptions:
        from memory.gate import MemoryOptions

        return MemoryOptions(
            budget=self.memory_budget,
            slots_per_hour=self.memory_slots_per_hour,
            skip_below=self.memory_skip_below,
            vision_fps=self.vision_fps,
        )

    def ingest_options(self, library: str | None = None, **given: Any) -> IngestOptions:
        """The pipeline's options from these settings (`given`: IngestOptions fields, e.g. subtitles)."""
        from indexers import IngestOptions
        from indexers.captions import CaptionOptions
        from indexers.shots import ShotOptions
        from indexers.transcript import TranscribeOptions
        from indexers.visual import LookOptions

        allow_damaged = bool(given.pop("allow_damaged", False))
        return IngestOptions(
            library=library or self.library,
            decoder=self.decoder,
            text_model=self.text_model,
            window_seconds=self.window_seconds,
            shots=ShotOptions(allow_damaged=allow_damaged),
            transcribe=TranscribeOptions(model=self.asr_model, language=self.asr_language),
            look=LookOptions.at_rate(self.vision_fps, self.vision_options(), encoder=self.image_encoder)
            if self.vision
            else None,
            memory=self.memory_options(),
            storage=self.storage_options(),
            captions=CaptionOptions(
                captioner=self.captioner,
                llm=self.llm,
                url=self.llm_url,
                model=self.llm_model,
                api_key=self.llm_api_key,
            ),
            **given,
        )


def make_answer_engine(cfg: Settings, embedder: Embedder | None, name: str | None = None) -> AnswerEngine:
    """The answer engine `name` (default: the `answer_engine` setting; `auto` picks the server at
    `llm_url` when set, else `extractive`: measured on TutorialVQA dev (docs/benchmarks/ask.md), the
    packaged models in-process were no more faithful than the quoted evidence and 20-70× slower),
    with its LLM built from the settings.
    ValueError when it cannot be built as configured."""
    from memory.runtime.llm import make_llm
    from reasoning.answer import ANSWER_ENGINES, make_engine

    name = name or cfg.answer_engine
    if name not in ANSWER_ENGINES:
        raise ANSWER_ENGINES.unknown(name)
    if name == "auto":
        name = "openai" if cfg.llm_url else "extractive"
    if name == "extractive":
        return make_engine("extractive", embedder=embedder)
    if name == "openai":
        if not cfg.llm_url or not cfg.llm_model:
            raise ValueError(
                "the openai engine needs VIDMEM_LLM_URL and VIDMEM_LLM_MODEL (see `vidmem llm serve`)"
            )
        llm = make_llm(cfg.llm_model, url=cfg.llm_url, api_key=cfg.llm_api_key)
    else:
        llm = make_llm(cfg.answer_llm, cfg.cache_dir)
    return make_engine("llm", llm, embedder)
