"""Two service hosts on one store: two `vidmem serve` processes with separate homes and ports,
sharing nothing but the catalog (PostgreSQL with pgvector, `VIDMEM_INDEX_BACKEND=postgres`: the
vectors and the lexical postings live in it) and the media folder. They are two hosts to the job queue (`VIDMEM_NODE`), so a
dead host's job is taken over through its stale heartbeat, not through its missing process.

- a video imported through one is searchable through the other, neither restarted;
- the host running an import is killed (SIGKILL, its worker with it): the other takes the job over
  once the heartbeat is stale and finishes it;
- a video deleted through one is gone from the other, and from the killed one once it is back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Server
from tests.media import make_narrated_clip

STALE = 4.0
FIRST = ("the purple giraffe eats bright oranges", "seven silver submarines dive at midnight")
SECOND = ("a quiet library keeps ancient maps", "the copper kettle whistles at dawn")


def _env(url: str, host: str) -> dict[str, str]:
    return {
        "VIDMEM_DATABASE_URL": url,
        "VIDMEM_INDEX_BACKEND": "postgres",
        "VIDMEM_NODE": host,
        "VIDMEM_JOB_STALE_SECONDS": str(STALE),
    }


def _wait(server: Server, job: str, until: Any, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = server.get(f"/v1/jobs/{job}").json()
        if until(state):
            return state  # type: ignore[no-any-return]
        if state["status"] in ("failed", "cancelled") or time.monotonic() > deadline:
            pytest.fail(f"job {job}: {state}\n{server.log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def _found(server: Server, phrase: str) -> set[str]:
    r = server.get("/v1/search", params={"q": phrase, "library": "news", "top": 5})
    assert r.status_code == 200, r.text
    return {m["video_id"] for m in r.json()["moments"] if phrase.split()[1] in m["text"].lower()}


@pytest.fixture
def hosts(tmp_path: Path, pgvector_url: str) -> Iterator[tuple[Server, Server, Path]]:
    media = tmp_path / "media"
    make_narrated_clip(media, phrases=FIRST, starts=(2.0, 12.0), total_seconds=22.0, name="first.mp4")
    make_narrated_clip(media, phrases=SECOND, starts=(2.0, 12.0), total_seconds=22.0, name="second.mp4")
    a = Server(tmp_path / "a", media, tmp_path / "a.log", env=_env(pgvector_url, "host-a"))
    b = Server(tmp_path / "b", media, tmp_path / "b.log", env=_env(pgvector_url, "host-b"))
    a.start()
    b.start()
    try:
        yield a, b, media
    finally:
        a.stop()
        b.stop()


def test_two_hosts_share_videos_jobs_and_deletes(hosts: tuple[Server, Server, Path]) -> None:
    a, b, _ = hosts
    assert a.post("/v1/libraries", json={"name": "news"}).status_code == 201
    assert b.get("/v1/libraries").status_code == 200 and "news" in b.get("/v1/libraries").text

    first = a.post("/v1/libraries/news/imports", json={"path": "first.mp4"}).json()
    done = _wait(a, first["id"], lambda s: s["status"] == "done")
    video1 = done["video_id"]
    assert _found(b, FIRST[1]) == {video1}  # through the other host, nothing restarted

    second = b.post("/v1/libraries/news/imports", json={"path": "second.mp4"}).json()
    running = _wait(b, second["id"], lambda s: s["status"] == "running" and (s.get("progress") or 0) > 0)
    owner = running["owner"]
    dead, alive = (a, b) if owner.startswith("host-a:") else (b, a)
    assert owner.startswith(("host-a:", "host-b:"))
    dead.kill()
    killed_at = time.monotonic()
    other = "host-b:" if dead is a else "host-a:"
    _wait(alive, second["id"], lambda s: (s["owner"] or "").startswith(other))  # the other host took it
    assert time.monotonic() - killed_at >= STALE * 0.5  # through the stale heartbeat, not a local pid check
    taken = _wait(alive, second["id"], lambda s: s["status"] == "done")
    assert taken["attempts"] == 2
    video2 = taken["video_id"]
    assert _found(alive, SECOND[0]) == {video2}

    assert alive.delete(f"/v1/videos/{video1}").status_code in (200, 204)
    assert _found(alive, FIRST[1]) == set()
    dead.start()  # back, on its own home: what it sees is the shared store's
    assert _found(dead, FIRST[1]) == set() and _found(dead, SECOND[0]) == {video2}
