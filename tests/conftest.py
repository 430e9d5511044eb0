"""Shared fixtures: real SQLite and PostgreSQL stores, media made once per session, the real media.

PostgreSQL is required, not optional: `make test` (and so CI) starts the server and sets
VIDMEM_TEST_POSTGRES_URL; without it the PostgreSQL-backed tests fail with a message saying so.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

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


def _postgres_url() -> str:
    url = os.environ.get("VIDMEM_TEST_POSTGRES_URL")
    if not url:
        pytest.fail(
            "VIDMEM_TEST_POSTGRES_URL is not set: run the tests with `make test`, which starts PostgreSQL"
        )
    return url


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    return _postgres_url()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(postgres_server_url)
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


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A real store on each backend: SQLite file under tmp_path, or a fresh PostgreSQL database."""
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
