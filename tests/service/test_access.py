"""Keys and access as an operator expects: rotating the configured key, read and write roles on every
route that changes something, the page's session (a revocable token, not the key), the per-key rate
limit, the limit on wrong keys per client address, multipart uploads, and the migration that brought
roles and sessions, on SQLite and PostgreSQL. Real catalog, real ASGI app (TestClient), real ingestion of ffmpeg-made media."""

from __future__ import annotations

import hashlib
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from memory import ApiKey, Store, WebSession
from service.app import COOKIE, create_app
from tests.helpers import ADMIN, OTHER, TALK, H, error, run_jobs, settings_for, upload
from tests.media import make_cut_clip, write_srt

BOUNDARY = "vidmem-test-boundary-7f3a"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def file_part(filename: str, data: bytes, kind: str = "video/mp4") -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {kind}\r\n\r\n"
    ).encode()
    return head + data + b"\r\n"


def form_body(filename: str, data: bytes, kind: str = "video/mp4") -> bytes:
    """A multipart/form-data body with one file part, as `curl -F file=@NAME` sends it."""
    return file_part(filename, data, kind) + f"--{BOUNDARY}--\r\n".encode()


FORM = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cut_clip(tmp_path_factory.mktemp("clip"), cut_frames=(48, 120), total_frames=180).path


def _url(backend: str, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("postgres_url") if backend == "postgresql" else None


# --- the configured key and the first admin key -------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rotating_the_configured_key_revokes_the_key_it_made(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _url(backend, request)
    first, second = "first-configured-key-0001", "second-configured-key-0002"

    def served(key: str | None) -> TestClient:
        return TestClient(create_app(settings_for(tmp_path, api_key=key, database_url=url)))

    with served(first) as c:
        assert c.get("/v1/me", headers=bearer(first)).json()["admin"] is True
        assert c.post("/v1/session", json={"key": first}).status_code == 200
        page_session = c.cookies[COOKIE]
        assert c.get("/v1/libraries").status_code == 200
    capsys.readouterr()

    with served(second) as c:  # the setting changed: the old key and its page sessions are gone
        assert "revoked" in capsys.readouterr().err
        assert c.get("/v1/me", headers=bearer(first)).status_code == 401
        assert c.get("/v1/me", headers=bearer(second)).json()["admin"] is True
        c.cookies.set(COOKIE, page_session)
        assert c.get("/v1/libraries").status_code == 401
        keys = c.get("/v1/keys", headers=bearer(second)).json()
        configured = [(k["prefix"], k["revoked"]) for k in keys if k["source"] == "configured"]
        assert configured == [(first[:8], True), (second[:8], False)]
    assert not (tmp_path / "home" / "admin.key").exists()

    with served(second) as c:  # the same setting again: nothing changes
        assert c.get("/v1/me", headers=bearer(second)).status_code == 200
        assert len(c.get("/v1/keys", headers=bearer(second)).json()) == 2

    with served(None) as c:  # removed: its key is revoked, and an admin key is made into the file
        assert c.get("/v1/me", headers=bearer(second)).status_code == 401
        made = (tmp_path / "home" / "admin.key").read_text().strip()
        assert c.get("/v1/me", headers=bearer(made)).json()["admin"] is True
        assert made not in capsys.readouterr().err

    # a secret that was revoked does not come back through the config file: it stays refused
    with served(first) as c:
        assert "stays revoked" in capsys.readouterr().err
        assert c.get("/v1/me", headers=bearer(first)).status_code == 401
        assert c.get("/v1/me", headers=bearer(made)).status_code == 200


def test_vidmem_serve_refuses_a_short_configured_key_with_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app as cli

    out = CliRunner().invoke(
        cli,  # (were the key taken, the host cannot be bound: uvicorn would fail, not serve forever)
        ["serve", "--home", str(tmp_path / "home"), "--workers", "0", "--host", "256.0.0.1"],
        env={"VIDMEM_API_KEY": "short-key"},
    )
    assert out.exit_code == 1 and "at least 16 characters" in out.output and "Traceback" not in out.output


# --- roles ------------------------------------------------------------------------------------------------


def test_every_write_route_needs_a_write_key_and_server_paths_an_admin_or_a_grant(
    tmp_path: Path, clip: Path
) -> None:
    granted = tmp_path / "granted"
    granted.mkdir()
    cfg = settings_for(tmp_path, library_media_roots={"main": [granted]})
    with TestClient(create_app(cfg)) as c:
        assert c.post("/v1/libraries", json={"name": "main"}, headers=H).status_code == 201
        made = {}
        for role in ("read", "write"):
            r = c.post("/v1/keys", json={"name": role, "library": "main", "role": role}, headers=H)
            assert r.status_code == 201 and r.json()["role"] == role
            made[role] = r.json()["key"]
        R, W = bearer(made["read"]), bearer(made["write"])
        default = c.post("/v1/keys", json={"name": "plain", "library": "main"}, headers=H).json()
        assert default["role"] == "read"  # least privilege unless asked
        assert c.get("/v1/me", headers=R).json()["role"] == "read"
        assert c.post("/v1/keys", json={"name": "x", "role": "write"}, headers=H).status_code == 400

        assert upload(c, "main", write_srt(tmp_path / "talk.srt", TALK)).status_code == 202
        run_jobs(cfg)
        [video] = c.get("/v1/libraries/main/videos", headers=H).json()
        in_root = write_srt(cfg.media_roots[0] / "root.srt", OTHER)
        write_srt(granted / "granted.srt", OTHER)
        srt = write_srt(tmp_path / "other.srt", OTHER).read_bytes()

        def routes(headers: dict[str, str]) -> dict[str, object]:
            return {
                "upload": c.post(
                    "/v1/libraries/main/videos",
                    params={"filename": "o.srt"},
                    content=srt,
                    headers={**headers, "Content-Type": "application/x-subrip"},
                ),
                "multipart upload": c.post(
                    "/v1/libraries/main/videos",
                    content=form_body("o2.srt", srt, "application/x-subrip"),
                    headers={**headers, **FORM},
                ),
                "import from a media root": c.post(
                    "/v1/libraries/main/imports", json={"path": str(in_root)}, headers=headers
                ),
                "import from a granted root": c.post(
                    "/v1/libraries/main/imports", json={"path": str(granted / "granted.srt")}, headers=headers
                ),
                "create a library": c.post("/v1/libraries", json={"name": "more"}, headers=headers),
                "create a key": c.post("/v1/keys", json={"name": "k"}, headers=headers),
                "revoke a key": c.delete("/v1/keys/1", headers=headers),
                "delete a video": c.delete(f"/v1/videos/{video['id']}", headers=headers),
            }

        for name, r in routes(R).items():  # a read key: 403, the one error shape, whatever it tried
            assert r.status_code == 403, (name, r.text)  # type: ignore[attr-defined]
            assert error(r)["code"] == "forbidden", name
        assert len(c.get("/v1/libraries/main/videos", headers=R).json()) == 1  # nothing changed
        assert [j["status"] for j in c.get("/v1/jobs", headers=H).json()] == ["done"]
        # what a read key is for still works
        assert c.get("/v1/search", params={"q": "giraffe"}, headers=R).json()["moments"]
        assert c.get(f"/v1/videos/{video['id']}/hierarchy", headers=R).status_code == 200

        expected = {"upload": 202, "multipart upload": 202, "import from a media root": 403,
                    "import from a granted root": 202, "create a library": 403, "create a key": 403,
                    "revoke a key": 403, "delete a video": 204}  # fmt: skip
        got = {name: r.status_code for name, r in routes(W).items()}  # type: ignore[attr-defined]
        assert got == expected
        assert c.get(f"/v1/videos/{video['id']}", headers=H).status_code == 404  # deleted by the write key

        # the admin key imports from the media roots; another library's write key sees nothing here
        r = c.post("/v1/libraries/main/imports", json={"path": "root.srt"}, headers=H)
        assert r.status_code == 202
        c.post("/v1/libraries", json={"name": "else"}, headers=H)
        foreign = c.post("/v1/keys", json={"name": "f", "library": "else", "role": "write"}, headers=H)
        F = bearer(foreign.json()["key"])
        assert upload(c, "main", tmp_path / "other.srt", key=foreign.json()["key"]).status_code == 404
        assert c.post("/v1/libraries/main/imports", json={"path": "x"}, headers=F).status_code == 404
        assert c.post("/v1/libraries/else/imports", json={"path": "root.srt"}, headers=F).status_code == 403


def test_keys_with_roles_from_the_command_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app as cli

    home = tmp_path / "home"
    store = Store(home)
    with store.session() as s:
        store.library(s, "talks")
    store.close()
    run = CliRunner()
    opts = ["--home", str(home)]
    writer = run.invoke(cli, ["keys", "create", "ed", "--library", "talks", "--role", "write", *opts])
    reader = run.invoke(cli, ["keys", "create", "viewer", "--library", "talks", *opts])
    assert writer.exit_code == 0 and reader.exit_code == 0, writer.output + reader.output
    bad = run.invoke(cli, ["keys", "create", "x", "--library", "talks", "--role", "owner", *opts])
    assert bad.exit_code == 1 and "choose read or write" in bad.output
    lone = run.invoke(cli, ["keys", "create", "x", "--role", "write", *opts])
    assert lone.exit_code == 1 and "--role goes with --library" in lone.output
    listed = json.loads(run.invoke(cli, ["keys", "list", "--json", *opts]).output)
    assert [(k["name"], k["library"], k["role"]) for k in listed] == [
        ("ed", "talks", "write"),
        ("viewer", "talks", "read"),
    ]
    with TestClient(create_app(settings_for(tmp_path))) as c:
        srt = write_srt(tmp_path / "t.srt", TALK)
        assert upload(c, "talks", srt, key=reader.output.strip()).status_code == 403
        assert upload(c, "talks", srt, key=writer.output.strip()).status_code == 202


# --- the page's session -----------------------------------------------------------------------------------


def test_the_page_session_is_a_revocable_token_not_the_key(cfg_client: tuple) -> None:  # type: ignore[type-arg]
    cfg, c = cfg_client
    r = c.post("/v1/session", json={"key": ADMIN})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # plain http
    token = c.cookies[COOKIE]
    assert ADMIN not in r.headers["set-cookie"] and len(token) >= 40
    store: Store = c.app.state.service.store  # type: ignore[attr-defined]
    with store.session() as s:
        [row] = s.scalars(select(WebSession)).all()
    assert row.digest == hashlib.sha256(token.encode()).hexdigest() and token not in row.digest
    assert cfg.session_seconds - 5 < row.expires - time.time() <= cfg.session_seconds
    assert c.get("/v1/libraries").status_code == 200

    assert c.delete("/v1/session").status_code == 204  # logout revokes it: the token is dead
    c.cookies.set(COOKIE, token)
    r = c.get("/v1/libraries")
    assert r.status_code == 401 and "session ended" in error(r)["message"]

    # revoking the key ends every session opened with it
    c.post("/v1/libraries", json={"name": "main"}, headers=H)
    made = c.post("/v1/keys", json={"name": "ed", "library": "main"}, headers=H).json()
    c.cookies.clear()
    c.post("/v1/session", json={"key": made["key"]})
    assert c.get("/v1/me").json()["name"] == "ed"
    key_id = next(k["id"] for k in c.get("/v1/keys", headers=H).json() if k["name"] == "ed")
    assert c.delete(f"/v1/keys/{key_id}", headers=H).status_code == 204
    assert c.get("/v1/me").status_code == 401
    with store.session() as s:
        assert s.scalar(select(WebSession.revoked).where(WebSession.key_id == key_id)) is True

    # an expired session is refused
    c.cookies.clear()
    c.post("/v1/session", json={"key": ADMIN})
    assert c.get("/v1/me").status_code == 200
    with store.session() as s:
        s.execute(update(WebSession).values(expires=time.time() - 1))
    assert c.get("/v1/me").status_code == 401


@pytest.fixture
def cfg_client(tmp_path: Path) -> Iterator[tuple]:  # type: ignore[type-arg]
    cfg = settings_for(tmp_path)
    with TestClient(create_app(cfg)) as c:
        yield cfg, c


def test_the_session_cookie_is_secure_over_https(tmp_path: Path) -> None:
    with TestClient(create_app(settings_for(tmp_path)), base_url="https://vidmem.example") as c:
        r = c.post("/v1/session", json={"key": ADMIN})
        assert "secure" in [p.strip().lower() for p in r.headers["set-cookie"].split(";")]
        assert c.get("/v1/me").json()["admin"] is True


# --- the rate limit ---------------------------------------------------------------------------------------


def test_each_key_is_held_to_its_rate_limit_with_retry_after(tmp_path: Path) -> None:
    cfg = settings_for(tmp_path, rate_limit=0.5, rate_limit_burst=2)
    with TestClient(create_app(cfg)) as c:
        assert c.post("/v1/libraries", json={"name": "main"}, headers=H).status_code == 201  # the burst:
        made = c.post("/v1/keys", json={"name": "ed", "library": "main"}, headers=H)  # two at once
        assert made.status_code == 201
        r = c.get("/v1/me", headers=H)
        body = error(r)
        assert r.status_code == 429 and body["code"] == "too_many_requests"
        wait = int(r.headers["retry-after"])  # whole seconds
        assert 1 <= wait <= 2
        assert c.get("/v1/me", headers=bearer(made.json()["key"])).status_code == 200  # its own bucket
        assert c.get("/health").status_code == 200  # health is never limited
        time.sleep(wait)
        assert c.get("/v1/me", headers=H).status_code == 200  # refilled when Retry-After said


def test_wrong_keys_are_limited_per_client_address_with_retry_after(tmp_path: Path) -> None:
    """5 wrong keys at once per address (the default burst), then one per `auth_failure_seconds`;
    right keys never spend the budget, and another address has its own."""
    cfg = settings_for(tmp_path, auth_failure_seconds=2.0)
    app = create_app(cfg)
    with TestClient(app, client=("203.0.113.7", 50000)) as c:
        other = TestClient(app, client=("198.51.100.2", 50000))
        # a bad bearer key on any route counts like a failed login
        for _ in range(cfg.auth_failure_burst):
            assert other.get("/v1/libraries", headers=bearer("vm_guess-000000000001")).status_code == 401
        assert other.post("/v1/session", json={"key": ADMIN}).status_code == 429

        for _ in range(8):  # successes do not count: logging in again and again is never held back
            assert c.post("/v1/session", json={"key": ADMIN}).status_code == 200
        for _ in range(cfg.auth_failure_burst):  # another address spent its budget, not this one's
            assert c.post("/v1/session", json={"key": "vm_guess-000000000002"}).status_code == 401
        r = c.post("/v1/session", json={"key": "vm_guess-000000000003"})
        assert r.status_code == 429 and error(r)["code"] == "too_many_requests"
        assert "wrong API key" in error(r)["message"] and r.headers["retry-after"] == "2"
        # spent: every key gets 429, the right one too (a 200 would tell a guess was right), at login
        # and as a bearer key on any route
        assert c.post("/v1/session", json={"key": ADMIN}).status_code == 429
        assert c.get("/v1/me", headers=H).status_code == 429

        time.sleep(2.05)  # one attempt comes back per auth_failure_seconds
        assert c.post("/v1/session", json={"key": ADMIN}).status_code == 200  # given back: not spent
        assert c.get("/v1/me", headers=H).status_code == 200
        assert c.post("/v1/session", json={"key": "vm_guess-000000000004"}).status_code == 401
        assert c.post("/v1/session", json={"key": ADMIN}).status_code == 429
    # 0 seconds: wrong keys are not limited
    (tmp_path / "open").mkdir()
    with TestClient(create_app(settings_for(tmp_path / "open", auth_failure_seconds=0))) as c:
        codes = {c.post("/v1/session", json={"key": "vm_guess-000000000005"}).status_code for _ in range(20)}
        assert codes == {401} and c.post("/v1/session", json={"key": ADMIN}).status_code == 200


# --- multipart uploads ------------------------------------------------------------------------------------


def test_a_multipart_upload_ingests_like_the_raw_body(tmp_path: Path, clip: Path) -> None:
    cfg = settings_for(tmp_path)
    with TestClient(create_app(cfg)) as c:
        for lib in ("raw", "form"):
            c.post("/v1/libraries", json={"name": lib}, headers=H)
        raw = upload(c, "raw", clip, "video/mp4")
        form = c.post(  # what `curl -F file=@cuts.mp4` sends (httpx builds the same body)
            "/v1/libraries/form/videos",
            files={"file": ("cuts.mp4", clip.read_bytes(), "video/mp4")},
            headers=H,
        )
        assert raw.status_code == 202 and form.status_code == 202, form.text
        assert form.json()["title"] == "cuts.mp4"
        run_jobs(cfg)
        videos = {}
        for lib in ("raw", "form"):
            [v] = c.get(f"/v1/libraries/{lib}/videos", headers=H).json()
            assert v["status"] == "ready" and v["size_bytes"] == clip.stat().st_size
            videos[lib] = c.get(f"/v1/videos/{v['id']}/timeline", headers=H).json()
            media = c.get(f"/v1/videos/{v['id']}/media", headers=H)
            assert media.content == clip.read_bytes()  # the bytes that arrived are the file's
        shots = [[(s["start"], s["end"]) for s in videos[lib]["shots"]] for lib in ("raw", "form")]
        assert shots[0] == shots[1] and [round(s[0], 2) for s in shots[1]] == [0.0, 2.0, 5.0]
        assert videos["raw"]["video"]["duration"] == videos["form"]["video"]["duration"]


def test_multipart_uploads_are_refused_clearly_and_leave_nothing(tmp_path: Path, clip: Path) -> None:
    cfg = settings_for(tmp_path, upload_max_bytes=10_000)
    big = clip.read_bytes()
    assert len(big) > 10_000
    with TestClient(create_app(cfg)) as c:
        c.post("/v1/libraries", json={"name": "main"}, headers=H)
        post = "/v1/libraries/main/videos"

        huge = form_body("big.mp4", big + bytes(80_000))  # declared length over the limit: at once
        r = c.post(post, content=huge, headers={**H, **FORM})
        assert r.status_code == 413 and error(r)["code"] == "too_large"

        body = form_body("big.mp4", big)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as the file part streams in
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        r = c.post(post, content=chunks(), headers={**H, **FORM})
        assert r.status_code == 413 and error(r)["code"] == "too_large"

        no_file = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--{BOUNDARY}--\r\n'
        ).encode()
        r = c.post(post, content=no_file, headers={**H, **FORM})
        assert r.status_code == 422 and "no file part" in error(r)["message"]

        r = c.post(post, content=form_body("a.mp4", b"x" * 100)[:-20], headers={**H, **FORM})
        assert r.status_code == 400 and "closing boundary" in error(r)["message"]
        r = c.post(post, content=b"--x\r\n", headers={**H, "Content-Type": "multipart/form-data"})
        assert r.status_code == 400 and "boundary" in error(r)["message"]
        r = c.post(post, content=form_body("page.html", b"<html>", "text/html"), headers={**H, **FORM})
        assert r.status_code == 415
        two = file_part("a.srt", b"1", "text/vtt") + form_body("b.srt", b"2", "text/vtt")
        r = c.post(post, content=two, headers={**H, **FORM})
        assert r.status_code == 422 and "one file per upload" in error(r)["message"]

        # a hostile name loses its directories: the file lands in a fresh folder under uploads/
        srt = write_srt(tmp_path / "talk.srt", TALK).read_bytes()
        r = c.post(
            post, content=form_body("../../talk.srt", srt, "application/x-subrip"), headers={**H, **FORM}
        )
        assert r.status_code == 202 and r.json()["title"] == "talk.srt"
        [folder] = list(cfg.uploads_dir.iterdir())
        assert [p.name for p in folder.iterdir()] == ["talk.srt"] and not (cfg.home / "talk.srt").exists()
        r = c.post(post, content=form_body("../../etc/passwd", b"root:x:0:0\n", "application/octet-stream"),
                   headers={**H, **FORM})  # fmt: skip
        assert r.status_code == 422 and "passwd" in error(r)["message"] and "../" not in r.text
        assert len(list(cfg.uploads_dir.iterdir())) == 1  # every refused upload was removed


# --- the migration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_roles_and_sessions_migration_keeps_what_keys_could_do(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    from alembic import command
    from sqlalchemy import create_engine

    from memory.store import _alembic_config, sqlite_url

    home = tmp_path / "home"
    home.mkdir()
    url = _url(backend, request) or sqlite_url(home)
    engine = create_engine(url)
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")  # a catalog from before roles and sessions
        conn.execute(text("INSERT INTO libraries (name, created_at) VALUES ('talks', CURRENT_TIMESTAMP)"))
        talks = conn.execute(text("SELECT id FROM libraries")).scalar_one()
        for name, library in (("configured", None), ("editor", talks), ("ops", None)):
            conn.execute(
                text(
                    "INSERT INTO api_keys (name, prefix, digest, library_id, created_at, revoked) "
                    "VALUES (:n, 'vm_x', :d, :l, CURRENT_TIMESTAMP, false)"
                ),
                {"n": name, "d": hashlib.sha256(name.encode()).hexdigest(), "l": library},
            )
    engine.dispose()

    store = Store(home, None if backend == "sqlite" else url)  # migrates to the newest revision
    try:
        with store.session() as s:
            keys = s.scalars(select(ApiKey)).all()
            rows = {k.name: (k.role, k.source) for k in keys}
            configured = next(k.id for k in keys if k.name == "configured")
        assert rows == {
            "configured": ("admin", "configured"),
            "editor": ("write", None),
            "ops": ("admin", None),
        }
        with store.engine.begin() as conn:  # and back down, and up again
            cfg = _alembic_config(store.engine)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004")
            assert "sessions" not in {r[0] for r in conn.execute(text(_tables(backend)))}
            command.upgrade(cfg, "head")
    finally:
        store.close()

    from service import auth

    store = Store(home, None if backend == "sqlite" else url)
    try:
        who = auth.authenticate(store, "editor")
        assert who is not None and who.role == "write" and who.may_write(talks)  # as it could before
        assert auth.configure_key(store, "a-new-configured-key-1").revoked == [configured]  # the old one goes
        assert auth.authenticate(store, "configured") is None
        assert auth.authenticate(store, "a-new-configured-key-1") is not None
    finally:
        store.close()


def _tables(backend: str) -> str:
    if backend == "sqlite":
        return "SELECT name FROM sqlite_master WHERE type = 'table'"
    return "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"


def test_admin_key_file_is_private_even_under_a_loose_umask(tmp_path: Path) -> None:
    import os

    from service import auth

    old = os.umask(0)
    try:
        store = Store(tmp_path / "home")
        path = auth.write_admin_key(store, tmp_path / "home")
        store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list((tmp_path / "home").glob(".admin.key*"))  # no temp file left beside it
