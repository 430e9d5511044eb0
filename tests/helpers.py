"""Helpers the test modules share (no test module imports another)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient

from memory import EmbeddingRow, Store, Video
from memory.runtime.text import Embedder
from memory.vectors import vector_bytes
from service import jobs
from service.settings import Settings

VIDMEM = Path(sys.executable).parent / "vidmem"
"""The console script of the environment running the tests."""


def _env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDMEM_")}
    env["VIDMEM_HOME"] = str(home)
    env.update(extra or {})
    return env


def cli(
    home: Path, *args: str | Path, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script; with ok=True, fail the test unless it exits 0 without a traceback."""
    proc = subprocess.run(
        [str(VIDMEM), *map(str, args)], env=_env(home, env), capture_output=True, text=True, timeout=600
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    if ok:
        assert proc.returncode == 0, f"vidmem {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stderr}"
    return proc


def cli_json(home: Path, *args: str | Path, env: dict[str, str] | None = None) -> Any:
    return json.loads(cli(home, *args, "--json", env=env).stdout)


# --- the API through its ASGI app (tests/service) ---------------------------------------------------

ADMIN = "test-admin-key-0123456789"
H = {"Authorization": f"Bearer {ADMIN}"}

TALK = [
    (0.0, 6.0, "welcome to the rocket workshop"),
    (6.0, 12.0, "today we bake sourdough bread with rye flour"),
    (12.0, 18.0, "the purple giraffe eats bright oranges"),
    (18.0, 24.0, "finally we polish the brass telescope"),
]
OTHER = [
    (0.0, 8.0, "the harbour pilot steers the cargo ship"),
    (8.0, 16.0, "a seagull steals a sandwich from the deck"),
]

SAID_AGAIN = "remember to subscribe for more pottery videos"
REPEATED = [
    (2.0, 6.0, SAID_AGAIN),
    (14.0, 19.0, "the clay is wedged to push out the air bubbles"),
    (26.0, 31.0, "centre the clay on the wheel with wet hands"),
    (38.0, 43.0, "pull the walls up slowly and evenly"),
    (50.0, 54.0, SAID_AGAIN),
]
"""A talk whose first line is said again at its end: the memory folds the cue at 50 s into the slot
the one at 2 s wrote (the only fold: no window of it is said twice)."""


def settings_for(tmp: Path, **extra: object) -> Settings:
    media = tmp / "media"
    media.mkdir(exist_ok=True)
    given: dict[str, object] = dict(
        home=tmp / "home",
        workers=0,
        api_key=ADMIN,
        vision=False,
        llm="none",
        asr_model="tiny.en",
        media_roots=[media],
        answer_engine="extractive",
    )
    given.update(extra)
    return Settings(**given)  # type: ignore[arg-type]


def upload(
    client: TestClient, library: str, path: Path, kind: str = "application/octet-stream", key: str = ADMIN
):
    return client.post(
        f"/v1/libraries/{library}/videos",
        params={"filename": path.name},
        content=path.read_bytes(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": kind},
    )


def run_jobs(cfg: Settings) -> None:
    jobs.work(cfg, once=True)


def error(r) -> dict:  # type: ignore[no-untyped-def]
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message"}, body
    assert body["error"]["status"] == r.status_code
    assert "Traceback" not in body["error"]["message"]
    return body["error"]


# --- an OpenAI-compatible server that stands in for vLLM -----------------------------------------------


class ChatServer:
    """`POST /v1/chat/completions` on a random local port. `answer(body) -> str` writes the reply;
    `mode` = "ok" | "500" | "garbage" (HTTP 200 with a body that is not JSON)."""

    def __init__(self, answer: Callable[[dict[str, Any]], str] | None = None, mode: str = "ok") -> None:
        self.answer = answer or (lambda body: "ok")
        self.mode = mode
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": {"message": "not found"}}')
                if server.mode == "500":
                    return self._send(500, b'{"error": {"message": "CUDA out of memory"}}')
                if server.mode == "garbage":
                    return self._send(200, b"<html>proxy login</html>", "text/html")
                text = server.answer(body)
                reply = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
                self._send(200, json.dumps(reply).encode())

            def _send(self, status: int, data: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def dead_url() -> str:
    """The URL of a port nothing listens on (bound, then closed)."""
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as s:
        port = s.server_address[1]
    return f"http://127.0.0.1:{port}/v1"


# --- an ingestion watched from outside (tests/indexers/test_resume.py, tests/service/test_live.py) ---

PHRASES = (
    "the purple giraffe eats bright oranges",
    "seven silver submarines dive at midnight",
    "a quiet library keeps ancient maps",
    "the brave pilot lands on a frozen lake",
    "twelve golden lanterns glow above the market",
)
STARTS = (3.0, 15.0, 27.0, 39.0, 51.0)


def stages_done(db: Path) -> list[str] | None:
    """The job's checkpoint as the catalog holds it now; None while there is no job row yet."""
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            row = con.execute(
                "SELECT stages_done FROM ingest_jobs ORDER BY created_at DESC LIMIT 1"
            ).fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError:  # schema not created yet, or a writer holds the lock
        return None
    return json.loads(row[0]) if row and row[0] else ([] if row else None)


# --- `vidmem serve` in its own process --------------------------------------------------------------

KEY = "live-test-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`vidmem serve` on a free port, with its log; `kill()` is SIGKILL to the server process only."""

    def __init__(
        self, home: Path, media: Path, log: Path, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.home, self.media, self.log, self.extra_env = home, media, log, env or {}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIDMEM_")}
        env.update(
            VIDMEM_HOME=str(self.home),
            VIDMEM_API_KEY=KEY,
            VIDMEM_VISION="false",
            VIDMEM_LLM="none",
            VIDMEM_ASR_MODEL="base",
            VIDMEM_ANSWER_ENGINE="extractive",
            VIDMEM_JOB_STALE_SECONDS="600",  # a takeover must come from the dead owner, not from staleness
        )
        env.update(self.extra_env)
        cmd = [
            str(VIDMEM),
            "serve",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--media-root",
            str(self.media),
        ]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"vidmem serve exited ({self.proc.returncode}):\n{self.log.read_text(errors='replace')}"
                )
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"vidmem serve was not ready within {timeout}s:\n{self.log.read_text(errors='replace')}")

    def descendants(self) -> list[int]:
        assert self.proc is not None
        return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=AUTH, timeout=60, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers=AUTH, timeout=60, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.delete(f"{self.url}{path}", headers=AUTH, timeout=60, **kw)


# --- the edit agent: a narrated excerpt and intents about it (tests/reasoning, tests/bench) ----------

EDIT_CUES = [
    (2.0, 7.0, "Welcome back to the workshop, today we edit a short film."),
    (9.0, 14.0, "First we open the file menu and import the footage."),
    (17.0, 22.0, "The rabbit wakes up and stretches in the morning sun."),
    (25.0, 30.0, "Here a butterfly lands on the flower."),
    (33.0, 38.0, "Now we trim the clip so the intro is shorter."),
    (41.0, 46.0, "The squirrels throw nuts at the rabbit."),
    (49.0, 54.0, "Let us add a title for the second chapter."),
    (57.0, 62.0, "The rabbit smiles at the camera."),
    (65.0, 70.0, "Next we export the project to a video file."),
    (73.0, 78.0, "The apple falls from the tree."),
    (81.0, 86.0, "Thanks for watching, subscribe for more tutorials."),
    (88.0, 93.0, "The end credits roll over the meadow."),
]
"""Subtitles laid over 96 s of Big Buck Bunny: what the edit agent's intents refer to."""

INTENTS = [  # (intent, the operation meant, the cue it is about: 1-based)
    ("slow down the moment where they open the file menu", "slowmo", 2),
    ("put a title card saying Chapter Two before the part about the second chapter", "title", 7),
    ("freeze on the rabbit smiling at the camera", "freeze", 8),
    ("cut out the part where they thank viewers and ask to subscribe", "trim", 11),
    ("make the shot of the apple falling last longer", "extend", 10),
    ("slow motion for the butterfly landing on the flower", "slowmo", 4),
    ("remove the welcome intro", "trim", 1),
    ("add a title 'Export' before they export the project", "title", 9),
    ("hold the frame where the rabbit wakes up", "freeze", 3),
    ("crossfade over the squirrels throwing nuts", "crossfade", 6),
    ("extend the end credits", "extend", 12),
    ("slow down the squirrels throwing nuts", "slowmo", 6),
    ("cut the explanation about trimming the clip", "trim", 5),
    ("insert a title 'Morning' before the rabbit stretches", "title", 3),
    ("freeze frame on the butterfly", "freeze", 4),
    ("bridge over the apple falling from the tree", "bridge", 10),
    ("slow down the end credits", "slowmo", 12),
    ("drop the part where they import the footage", "trim", 2),
    ("add a title card 'The End' after the credits", "title", 12),
    ("make the welcome shot last a bit longer", "extend", 1),
    ("dissolve across the part where the rabbit smiles", "crossfade", 8),
    ("freeze on the moment they export the video", "freeze", 9),
    ("slow motion when the apple falls", "slowmo", 10),
    ("replace the butterfly moment with a transition", "bridge", 4),
]


def edit_footage(folder: Path) -> tuple[Path, Path]:
    """96 s of Big Buck Bunny at 320x180 and the subtitles `EDIT_CUES` (ingest them with it)."""
    from tests.media import bbb_excerpt, write_srt

    clip = folder / "workshop.mp4"
    if not clip.is_file():
        bbb_excerpt(clip, 96, 320, 180)
    return clip, write_srt(folder / "workshop.srt", EDIT_CUES)


FAISS_FILES = pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)
"""For tests of the FAISS files themselves: the `store` fixture on its two catalogs with file indexes
(not the pgvector one, whose vectors are tables; tests/memory/test_pgvector.py covers those)."""


# --- toy rows for the index tests (tests/memory) ------------------------------------------------------

SPACE = "text:toy"


class ToyEmbedder(Embedder):
    """Returns a fixed vector per query text (what the test put in `vectors`)."""

    name = "toy"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def add_video(
    store: Store,
    library: str,
    name: str,
    texts: list[str],
    vectors: np.ndarray,
    kinds: list[str] | None = None,
    span: float = 10.0,
) -> tuple[int, str, list[int]]:
    """A ready video with one text embedding row per text (times i*span .. (i+1)*span), indexed."""
    with store.session() as s:
        lib = store.library(s, library)
        video = Video(library_id=lib.id, uri=f"/m/{name}.mp4", title=name, content_hash=name, status="ready")
        s.add(video)
        s.flush()
        rows = [
            EmbeddingRow(
                library_id=lib.id,
                video_id=video.id,
                kind=(kinds or ["window"] * len(texts))[i],
                start=span * i,
                end=span * (i + 1),
                text=t,
                modality="text",
                model="toy",
                space=SPACE,
                vector=vector_bytes(vectors[i]),
            )
            for i, t in enumerate(texts)
        ]
        s.add_all(rows)
        s.flush()
        lib_id, video_id, ids = lib.id, video.id, [r.id for r in rows]
    store.vectors.add(lib_id, SPACE, ids, vectors)
    store.lexical.add(lib_id, ids)
    return lib_id, video_id, ids
