"""Shared fixtures: real SQLite and PostgreSQL stores, media made once per session, the real media.

PostgreSQL is required, not optional: `make test` (and so CI) starts the server and sets
VIDMEM_TEST_POSTGRES_URL; without it the PostgreSQL-backed tests fail with a message saying so. The
same goes for the PostgreSQL with pgvector that `make postgres` starts from the PyPI wheel
(VIDMEM_TEST_PGVECTOR_URL), where the `postgres` index backend keeps the vectors.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memory import Store
from tests import media

SHARED_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
SHARED_EVAL = SHARED_MEDIA.parent / "eval"


def shared(name: str) -> Path:
    path = SHARED_MEDIA / name
    if not path.exists():
        pytest.fail(f"{path} is missing: tests read the real recordings from ../shared/media")
    return path


@pytest.fixture(autouse=True)
def _fail_on_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Any test during which something logged an ERROR fails."""
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    if errors:
        pytest.fail("ERROR logged: " + "; ".join(r.getMessage() for r in errors))


def _postgres_url(variable: str = "VIDMEM_TEST_POSTGRES_URL") -> str:
    url = os.environ.get(variable)
    if not url:
        pytest.fail(f"{variable} is not set: run the tests with `make test`, which starts PostgreSQL")
    return url


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    return _postgres_url()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    yield from _fresh_database(postgres_server_url)


@pytest.fixture
def pgvector_url() -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL with pgvector, dropped afterwards."""
    yield from _fresh_database(_postgres_url("VIDMEM_TEST_PGVECTOR_URL"))


def _fresh_database(server_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(server_url)
    name = f"vidmem_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "pgvector"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A real store on each backend: SQLite file under tmp_path, or a fresh PostgreSQL database
    (FAISS files beside it), or a fresh PostgreSQL database holding the vectors too (pgvector)."""
    if request.param == "pgvector":
        s = Store(tmp_path / "home", request.getfixturevalue("pgvector_url"), index="postgres")
    else:
        url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
        s = Store(tmp_path / "home", url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "home")
    yield s
    s.close()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def cut_clip(media_dir: Path) -> media.CutClip:
    return media.make_cut_clip(media_dir, cut_frames=(48, 120, 200), total_frames=264)


@pytest.fixture(scope="session")
def fade_clip(media_dir: Path) -> media.FadeClip:
    return media.make_fade_clip(media_dir)


@pytest.fixture(scope="session")
def narrated_clip(media_dir: Path) -> media.NarratedClip:
    return media.make_narrated_clip(media_dir)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the session (the split whisper base is joined once)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def slide_clip(media_dir: Path) -> media.SlideClip:
    """Two rendered slides around four seconds of OpenCV's pedestrian sample (vtest.avi, from 52 s:
    pedestrians near the camera)."""
    return media.make_slide_clip(media_dir, shared("vtest.avi"))


# --- the real vLLM server (the CPU build, in its own virtual environment) ----------------------------

SERVED = "qwen0.5b"
"""What the session's vLLM server serves: the packaged Qwen2.5-Coder-0.5B, converted into the model
cache that `make models` fills (`VIDMEM_HOME/models`, so the ~100 s conversion is paid once per
machine, not per run). Qwen rather than SmolLM2 although SmolLM2 starts faster (~36 s against ~55 s):
measured here, SmolLM2's tool calls under vLLM come back with arguments that are a JSON string, not
the object the schema asks for, so the tool-call tests need Qwen, and two servers would cost more
than one."""


def packaged_model_cache() -> Path:
    """The machine's model cache (`VIDMEM_HOME/models`), where `make models` converted Qwen 0.5B."""
    from service.settings import Settings

    given: dict[str, object] = {}
    return Settings(**given).cache_dir  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real vLLM server for the session; nothing is skipped without it: the tests fail and say
    to run `make vllm`."""
    from memory.runtime import ModelMissing
    from service.llm_server import default_venv, free_port, server_for, venv_ready

    venv = default_venv()
    if not venv_ready(venv):
        pytest.fail(f"no vLLM environment at {venv}: run `make vllm` (make test does it)")
    try:
        server = server_for(
            SERVED,
            packaged_model_cache(),
            port=free_port(),
            venv=venv,
            log_path=tmp_path_factory.mktemp("vllm") / "server.log",
        )
    except ModelMissing as e:
        pytest.fail(f"{e} (`make setup` installs it)")
    with server:
        group = server.process.pid if server.process else None
        yield server
    if group is not None:  # stop() reached the whole process group: no engine process left behind
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)


@pytest.fixture
def served(vllm_server: Any) -> Any:
    """An `OpenAIChatLLM` talking to the session's vLLM server (no retries: a failure shows at once)."""
    from memory.runtime.llm import OpenAIChatLLM

    return OpenAIChatLLM(vllm_server.url, vllm_server.served_name, max_retries=0)


@pytest.fixture(scope="session")
def smollm2_cache(model_cache: Path) -> Path:
    """A model cache with SmolLM2 converted from the real packaged GGUF (~30 s, once per session).

    Before converting, the cache gets the debris of killed conversions: a final-looking folder
    without the completion marker (with a truncated weights file) and the temporary folder of a
    process that no longer exists. The conversion must neither use nor keep them."""
    import subprocess

    from memory.runtime.llm import LLMS, prepare_llm

    folder = LLMS["smollm2"].folder
    cache = model_cache  # the session's model cache: ingestions in other tests use this conversion too
    if not (cache / "llm" / folder / "vidmem-converted.json").is_file():  # shared by test modules
        half = cache / "llm" / folder
        half.mkdir(parents=True)
        (half / "config.json").write_text('{"model_type": "llama"}')
        (half / "model.safetensors").write_bytes(b"\0" * 1000)
        gone = subprocess.Popen(["true"])  # a process id that has certainly ended
        gone.wait()
        dead = cache / "llm" / f".{folder}.tmp-{gone.pid}-deadbeef"
        dead.mkdir()
        (dead / "model.safetensors").write_bytes(b"\0" * 1000)
        prepare_llm(cache)
    return cache


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """moto's S3-compatible server on 127.0.0.1 (tests/remote.py) with a bucket `media`, the AWS
    variables set for the module's length: ask for it before a Ray cluster, so that the nodes'
    workers start with the credentials, as deployed ones would."""
    from tests.remote import S3Server, aws_environment

    with aws_environment():
        server = S3Server()
        server.bucket("media")
        try:
            yield server
        finally:
            server.stop()
