"""The HTTP service: `create_app(settings)` builds the FastAPI app that `vidmem serve` runs.

Routes stay thin: they check the caller's key and scope, validate, and call the library
(memory, indexers through the job queue, reasoning). Everything under `/v1` needs an API key
(`Authorization: Bearer KEY`, `X-API-Key: KEY`, or the page's session cookie); `/health` and
`/ready` do not. A key of one library sees nothing of another: its videos, jobs and searches
answer 404 as if they did not exist. Every failure has one JSON shape,
`{"error": {"status", "code", "message"}}`, and never a traceback.

Uploads are the request body itself (`POST /v1/libraries/{library}/videos?filename=NAME`), streamed
to disk and cut off at `upload_max_bytes`; the file is probed before a job is queued, so what is
not media is refused at once. Ingestion runs in worker processes (`service.jobs`); the job's id
comes back with 202 and `/v1/jobs/{id}` follows it.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sqlalchemy import func, select, text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from kernels.timecode import hms, iso
from memory import Job, Library, Store, StoreError, Video
from service import auth, jobs
from service.auth import Principal
from service.settings import Settings

log = logging.getLogger("vidmem.service")

STATIC = Path(__file__).with_name("static")
API_PREFIX = "/v1"
COOKIE = "vidmem_key"
LIBRARY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,127}$")
UPLOAD_TYPES = (
    "video/",
    "audio/",
    "application/octet-stream",
    "application/mp4",
    "application/x-subrip",
    "text/vtt",
)
"""Content types an upload may declare; the bytes are then probed, whatever was declared."""


class ApiError(Exception):
    """A failure with its HTTP status and a short machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"status": status, "code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "too_large", 415: "unsupported_media_type", 416: "range_not_satisfiable",
          422: "invalid_request", 503: "unavailable"}  # fmt: skip


# --- request and response bodies (what the OpenAPI schema shows) -------------------------------------


class LibraryIn(BaseModel):
    name: str = Field(min_length=1, max_length=128, description="Letters, digits, space, `_`, `.`, `-`.")


class ImportIn(BaseModel):
    path: str = Field(
        min_length=1, max_length=4096, description="A file inside one of the server's media roots."
    )


class AskIn(BaseModel):
    question: str = Field(min_length=1, max_length=10_000)
    library: str | None = Field(None, max_length=128)
    video: str | None = Field(None, max_length=32)
    engine: Literal["auto", "local", "openai", "extractive"] | None = None
    evidence: int = Field(5, ge=1, le=20)


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    library: str | None = Field(
        None, max_length=128, description="The library the key may read; none: admin."
    )


class SessionIn(BaseModel):
    key: str = Field(min_length=1, max_length=256)


# --- the app -------------------------------------------------------------------------------------------


class Service:
    """What the routes share: settings, the store, the lazily loaded embedder and answer engines."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.home, settings.database_url)
        self.pool = jobs.WorkerPool(settings, settings.workers)
        self._lock = threading.Lock()
        self._embedder: Any = None
        self._engines: dict[str, Any] = {}

    def embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from memory.encoders import SentenceEmbedder

                self._embedder = SentenceEmbedder(self.settings.text_model)
            return self._embedder

    def engine(self, name: str | None) -> Any:
        from service.settings import make_answer_engine

        key = name or self.settings.answer_engine
        embedder = self.embedder()
        with self._lock:
            if key not in self._engines:
                self._engines[key] = make_answer_engine(self.settings, embedder, key)
            return self._engines[key]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service for `settings` (default: read from the environment and config file)."""
    cfg = settings or Settings()  # type: ignore[call-arg]
    svc = Service(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        announce_admin_key(svc.store, cfg)
        svc.pool.start()
        try:
            yield
        finally:
            svc.pool.stop()
            svc.store.close()

    app = FastAPI(
        title="vidmem",
        version="1",
        summary="Long-video understanding and retrieval: ingest, search, ask, export, stream.",
        lifespan=lifespan,
    )
    app.state.service = svc
    _install_errors(app)
    _routes(app, svc)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def announce_admin_key(store: Store, cfg: Settings) -> str | None:
    """Register the configured key, or make and print an admin key when the catalog has none: the
    service never runs open. Returns a key it made (printed once, never stored in clear)."""
    if cfg.api_key:
        auth.ensure_key(store, cfg.api_key)
        return None
    if auth.has_keys(store):
        return None
    secret = auth.create_key(store, "admin (made at first start)")
    print(
        f"vidmem: no API key was configured, so this admin key was made; it is shown only now:\n"
        f"    {secret}\n"
        f"send it as `Authorization: Bearer <key>`, or paste it into the page at http://{cfg.host}:{cfg.port}/",
        file=sys.stderr,
        flush=True,
    )
    return secret


def _install_errors(app: FastAPI) -> None:
    from indexers.decode import MediaError

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.code, e.message)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, e: StoreError) -> JSONResponse:
        return _error(404, "not_found", str(e))

    @app.exception_handler(MediaError)
    async def media_error(request: Request, e: MediaError) -> JSONResponse:
        return _error(422, "bad_media", str(e))

    @app.exception_handler(ValueError)
    async def value_error(request: Request, e: ValueError) -> JSONResponse:
        return _error(400, "bad_request", str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}" for err in e.errors()[:5]
        )
        return _error(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        headers = dict(e.headers) if e.headers else None
        return _error(e.status_code, _CODES.get(e.status_code, "error"), str(e.detail), headers)

    @app.exception_handler(Exception)
    async def crash(request: Request, e: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:8]
        log.exception("request %s %s failed (ref %s)", request.method, request.url.path, ref)
        return _error(500, "internal", f"internal error (ref {ref}); the server log has the details")


# --- auth and scope --------------------------------------------------------------------------------


def _principal(request: Request) -> Principal:
    svc: Service = request.app.state.service
    header = request.headers.get("authorization", "")
    secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
    secret = secret or request.headers.get("x-api-key", "") or request.cookies.get(COOKIE, "")
    if not secret:
        raise ApiError(401, "unauthorized", "an API key is required: send `Authorization: Bearer <key>`")
    who = auth.authenticate(svc.store, secret)
    if who is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    return who


Caller = Annotated[Principal, Depends(_principal)]


def _admin(who: Principal) -> None:
    if not who.admin:
        raise ApiError(403, "forbidden", "this needs an admin key")


def _library(svc: Service, who: Principal, name: str) -> Library:
    """The named library if the caller may read it; 404 otherwise (no hint that it exists)."""
    with svc.store.session() as s:
        lib = s.scalar(select(Library).where(Library.name == name))
    if lib is None or not who.may_read(lib.id):
        raise ApiError(404, "not_found", f"no library named {name!r}")
    return lib


def _video(svc: Service, who: Principal, video_id: str) -> Video:
    with svc.store.session() as s:
        video = s.get(Video, video_id)
    if video is None or not who.may_read(video.library_id):
        raise ApiError(404, "not_found", f"no video with id {video_id!r}")
    return video


def _library_for_query(svc: Service, who: Principal, library: str | None, video: str | None) -> str | None:
    """The library a search or question runs in: the named one, the video's, the key's own, or
    (admin only) every library."""
    if video is not None:
        v = _video(svc, who, video)
        with svc.store.session() as s:
            return s.get(Library, v.library_id).name  # type: ignore[union-attr]
    if library is not None:
        return _library(svc, who, library).name
    return who.library


def _video_json(video: Video, library: str) -> dict[str, Any]:
    return {
        "id": video.id,
        "library": library,
        "title": video.title,
        "kind": video.kind,
        "status": video.status,
        "duration": round(video.duration, 3),
        "fps": video.fps,
        "width": video.width,
        "height": video.height,
        "language": video.language,
        "size_bytes": video.size_bytes,
        "created_at": iso(video.created_at),
        "media": f"{API_PREFIX}/videos/{video.id}/media",
        "page": f"/videos/{video.id}",
    }


def _moment_json(m: Any) -> dict[str, Any]:
    return {
        "video_id": m.video_id,
        "start": round(m.start, 3),
        "end": round(m.end, 3),
        "timestamp": hms(m.start),
        "end_timestamp": hms(m.end),
        "kind": m.kind,
        "score": round(float(m.score), 6),
        "text": m.text,
        "link": f"/videos/{m.video_id}?t={m.start:.2f}",
    }


def _safe_name(filename: str) -> str:
    """A file name with no directory part and only harmless characters (`../../etc/passwd` -> `passwd`)."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._ \-]", "_", base).strip(" .")
    return base[:200] or "upload"


def confine(path: str, roots: list[Path]) -> Path:
    """`path` as a regular file inside one of `roots` (symlinks resolved first, so none can lead
    out); ApiError otherwise. A relative path is taken inside the first root."""
    if not roots:
        raise ApiError(
            403, "forbidden", "server-side paths are disabled; set VIDMEM_MEDIA_ROOTS, or upload the file"
        )
    if "\x00" in path or ".." in Path(path).parts:
        raise ApiError(403, "forbidden", "a path may not contain `..`")
    candidate = Path(path) if Path(path).is_absolute() else roots[0] / path
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ApiError(404, "not_found", f"no such file: {path}") from None
    if not any(real.is_relative_to(r.resolve()) for r in roots):
        raise ApiError(403, "forbidden", f"{path} is outside the allowed media roots")
    if not real.is_file():
        raise ApiError(404, "not_found", f"not a file: {path}")
    return real


# --- routes ------------------------------------------------------------------------------------------


def _routes(app: FastAPI, svc: Service) -> None:  # noqa: C901 - one place that lists every route
    cfg = svc.settings
    v1 = API_PREFIX

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["service"], responses={503: {"description": "not ready"}})
    def ready() -> Any:
        """Readiness: the catalog answers and the ingestion workers run."""
        try:
            with svc.store.session() as s:
                s.execute(text("SELECT 1"))
        except Exception:
            log.exception("readiness: the catalog does not answer")
            return _error(503, "unavailable", "the catalog does not answer")
        alive = svc.pool.alive()
        if alive < cfg.workers:
            return _error(503, "unavailable", f"{alive} of {cfg.workers} ingestion workers are running")
        return {"status": "ready", "workers": alive}

    # session cookie for the page (the player's <video> cannot send headers)
    @app.post(f"{v1}/session", tags=["auth"])
    def login(body: SessionIn, response: Response) -> dict[str, Any]:
        """Check a key and keep it in an HttpOnly cookie for the page's media requests."""
        who = auth.authenticate(svc.store, body.key)
        if who is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key")
        response.set_cookie(COOKIE, body.key, httponly=True, samesite="strict", max_age=30 * 86400)
        return {"name": who.name, "library": who.library, "admin": who.admin}

    @app.delete(f"{v1}/session", tags=["auth"], status_code=204)
    def logout() -> Response:
        """Forget the page's key (the cookie)."""
        response = Response(status_code=204)
        response.delete_cookie(COOKIE)
        return response

    @app.get(f"{v1}/me", tags=["auth"])
    def me(who: Caller) -> dict[str, Any]:
        return {"name": who.name, "library": who.library, "admin": who.admin}

    # keys
    @app.post(f"{v1}/keys", tags=["auth"], status_code=201)
    def new_key(body: KeyIn, who: Caller) -> dict[str, Any]:
        """Make an API key (admin). The secret is in this response only."""
        _admin(who)
        if body.library is not None:
            _library(svc, who, body.library)
        secret = auth.create_key(svc.store, body.name, body.library)
        return {"key": secret, "name": body.name, "library": body.library}

    @app.get(f"{v1}/keys", tags=["auth"])
    def keys(who: Caller) -> list[dict[str, Any]]:
        _admin(who)
        return auth.list_keys(svc.store)

    @app.delete(f"{v1}/keys/{{key_id}}", tags=["auth"], status_code=204)
    def revoke(key_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)], who: Caller) -> Response:
        _admin(who)
        auth.revoke_key(svc.store, key_id)
        return Response(status_code=204)

    # libraries
    @app.get(f"{v1}/libraries", tags=["libraries"])
    def libraries(who: Caller) -> list[dict[str, Any]]:
        with svc.store.session() as s:
            rows = s.execute(
                select(Library, func.count(Video.id))
                .outerjoin(Video, Video.library_id == Library.id)
                .group_by(Library.id)
                .order_by(Library.name)
            ).all()
        return [
            {"name": lib.name, "videos": n, "created_at": iso(lib.created_at)}
            for lib, n in rows
            if who.may_read(lib.id)
        ]

    @app.post(f"{v1}/libraries", tags=["libraries"], status_code=201)
    def create_library(body: LibraryIn, who: Caller) -> dict[str, Any]:
        _admin(who)
        if not LIBRARY_NAME.match(body.name):
            raise ApiError(
                422, "invalid_request", "a library name has letters, digits, space, `_`, `.` or `-`"
            )
        with svc.store.session() as s:
            if s.scalar(select(Library.id).where(Library.name == body.name)) is not None:
                raise ApiError(409, "conflict", f"a library named {body.name!r} exists")
            lib = svc.store.library(s, body.name)
            return {"name": lib.name, "videos": 0, "created_at": iso(lib.created_at)}

    @app.get(f"{v1}/libraries/{{library}}/videos", tags=["videos"])
    def videos(library: str, who: Caller) -> list[dict[str, Any]]:
        lib = _library(svc, who, library)
        with svc.store.session() as s:
            rows = s.scalars(select(Video).where(Video.library_id == lib.id).order_by(Video.created_at)).all()
        return [_video_json(v, lib.name) for v in rows]

    @app.post(
        f"{v1}/libraries/{{library}}/videos",
        tags=["videos"],
        status_code=202,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def upload(
        library: str,
        request: Request,
        who: Caller,
        filename: Annotated[str, Query(min_length=1, max_length=255)],
    ) -> dict[str, Any]:
        """Upload a media (or .srt/.vtt) file as the request body; ingestion is queued (202 + job)."""
        lib = await run_in_threadpool(_library, svc, who, library)  # the catalog and the probe block:
        kind = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
        if not kind.startswith(UPLOAD_TYPES):  # off the event loop, so other requests go on meanwhile
            raise ApiError(
                415, "unsupported_media_type", f"{kind} is not a media type; send the file's bytes"
            )
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cfg.upload_max_bytes:
            raise ApiError(413, "too_large", f"uploads are limited to {cfg.upload_max_bytes} bytes")
        name = _safe_name(filename)
        folder = cfg.uploads_dir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        target = folder / name
        try:
            size = 0
            with open(target, "wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > cfg.upload_max_bytes:
                        raise ApiError(
                            413, "too_large", f"uploads are limited to {cfg.upload_max_bytes} bytes"
                        )
                    fh.write(chunk)
            if size == 0:
                raise ApiError(422, "bad_media", "the upload is empty")
            await run_in_threadpool(_probe, target, name)
            job = await run_in_threadpool(jobs.enqueue, svc.store, lib.name, target, name, True)
        except BaseException:  # refused, cut off, or the client went away: nothing stays
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return jobs.job_json(job, lib.name)

    @app.post(f"{v1}/libraries/{{library}}/imports", tags=["videos"], status_code=202)
    def import_path(library: str, body: ImportIn, who: Caller) -> dict[str, Any]:
        """Ingest a file already on the server, inside a configured media root (202 + job)."""
        lib = _library(svc, who, library)
        path = confine(body.path, cfg.media_roots)
        _probe(path, path.name)
        job = jobs.enqueue(svc.store, lib.name, path, path.name, upload=False)
        return jobs.job_json(job, lib.name)

    # jobs
    @app.get(f"{v1}/jobs", tags=["jobs"])
    def list_jobs(
        who: Caller,
        library: Annotated[str | None, Query(max_length=128)] = None,
        status: Literal["queued", "running", "done", "failed"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        query = select(Job, Library.name).join(Library, Library.id == Job.library_id)
        if library is not None:
            query = query.where(Job.library_id == _library(svc, who, library).id)
        elif not who.admin:
            query = query.where(Job.library_id == who.library_id)
        if status is not None:
            query = query.where(Job.status == status)
        with svc.store.session() as s:
            rows = s.execute(query.order_by(Job.created_at.desc()).limit(limit)).all()
        return [jobs.job_json(j, name) for j, name in rows]

    @app.get(f"{v1}/jobs/{{job_id}}", tags=["jobs"])
    def get_job(job_id: str, who: Caller) -> dict[str, Any]:
        try:
            job, name = jobs.get_job(svc.store, job_id)
        except StoreError:
            job = None
        if job is None or not who.may_read(job.library_id):
            raise ApiError(404, "not_found", f"no job with id {job_id!r}")
        return jobs.job_json(job, name)

    # videos
    @app.get(f"{v1}/videos/{{video_id}}", tags=["videos"])
    def video(video_id: str, who: Caller) -> dict[str, Any]:
        v = _video(svc, who, video_id)
        with svc.store.session() as s:
            name = s.get(Library, v.library_id).name  # type: ignore[union-attr]
        return _video_json(v, name)

    @app.get(f"{v1}/videos/{{video_id}}/timeline", tags=["videos"])
    def video_timeline(video_id: str, who: Caller) -> dict[str, Any]:
        """Chapters, scenes, shots, on-screen text and transcript as flat lists (seconds)."""
        from service.export import timeline

        _video(svc, who, video_id)
        t = timeline(svc.store, video_id)
        t["video"].pop("uri", None)  # a server path is not the client's business
        return t

    @app.get(f"{v1}/videos/{{video_id}}/hierarchy", tags=["videos"])
    def hierarchy(video_id: str, who: Caller) -> dict[str, Any]:
        """Chapters holding their scenes, scenes their shots, on-screen text and transcript."""
        from service.export import nested, timeline

        _video(svc, who, video_id)
        t = timeline(svc.store, video_id)
        t["video"].pop("uri", None)
        return nested(t)

    @app.get(
        f"{v1}/videos/{{video_id}}/export",
        tags=["videos"],
        responses={200: {"content": {"text/vtt": {}, "application/json": {}}}},
    )
    def export(video_id: str, who: Caller, format: Literal["vtt", "json"] = "json") -> Response:
        """WebVTT chapters (`<track kind="chapters">`) or the nested timeline as a JSON file."""
        from service.export import nested, timeline, webvtt_chapters

        v = _video(svc, who, video_id)
        t = timeline(svc.store, video_id)
        t["video"].pop("uri", None)
        stem = _safe_name(Path(v.title).stem) or v.id
        if format == "vtt":
            return PlainTextResponse(
                webvtt_chapters(t),
                media_type="text/vtt",
                headers={"Content-Disposition": f'attachment; filename="{stem}.chapters.vtt"'},
            )
        return JSONResponse(nested(t), headers={"Content-Disposition": f'attachment; filename="{stem}.json"'})

    @app.get(
        f"{v1}/videos/{{video_id}}/media",
        tags=["videos"],
        responses={206: {"description": "the requested byte range"}, 416: {"description": "bad range"}},
    )
    def media(video_id: str, who: Caller) -> Response:
        """The media file, with HTTP byte ranges (`Range: bytes=START-END`) so a player can seek."""
        v = _video(svc, who, video_id)
        path = Path(v.uri)
        if not path.is_file():
            raise ApiError(404, "not_found", f"the media of video {video_id} is no longer on the server")
        return FileResponse(
            path, media_type=_media_type(path), filename=v.title, content_disposition_type="inline"
        )

    @app.get(
        f"{v1}/videos/{{video_id}}/thumbnail",
        tags=["videos"],
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def thumbnail(
        video_id: str,
        who: Caller,
        t: Annotated[float, Query(ge=0, le=1e7)] = 0.0,
        width: Annotated[int, Query(ge=32, le=1280)] = 320,
    ) -> Response:
        """The keyframe at or before `t` seconds, as a JPEG `width` pixels wide (cached)."""
        v = _video(svc, who, video_id)
        if v.kind != "video":
            raise ApiError(404, "not_found", f"video {video_id} has no picture ({v.kind})")
        return Response(_thumbnail(cfg, v, t, width), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400"})  # fmt: skip

    @app.delete(f"{v1}/videos/{{video_id}}", tags=["videos"], status_code=204)
    def delete_video(video_id: str, who: Caller) -> Response:
        """Remove a video: its rows, vectors, thumbnails and uploaded file; nothing else."""
        v = _video(svc, who, video_id)
        with svc.store.session() as s:
            busy = s.scalar(
                select(Job.id).where(Job.video_id == video_id, Job.status.in_(("queued", "running")))
            )
        if busy is not None or v.status == "ingesting":
            raise ApiError(
                409, "conflict", f"video {video_id} is being ingested; delete it when its job ends"
            )
        svc.store.delete_video(video_id)
        uploads = cfg.uploads_dir.resolve()
        folder = Path(v.uri).parent
        if folder.resolve().parent == uploads:
            shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(cfg.home / "thumbs" / video_id, ignore_errors=True)
        return Response(status_code=204)

    # search and answers
    @app.get(f"{v1}/search", tags=["search"])
    def search_moments(
        who: Caller,
        q: Annotated[str, Query(min_length=1, max_length=10_000, description="What to look for.")],
        library: Annotated[str | None, Query(max_length=128)] = None,
        video: Annotated[str | None, Query(max_length=32)] = None,
        level: Literal["moment", "all", "chapter", "scene", "shot", "cue"] = "moment",
        top: Annotated[int, Query(ge=1, le=10_000)] = 10,
        start: Annotated[float | None, Query(alias="from", ge=0, description="Seconds (one video).")] = None,
        end: Annotated[float | None, Query(alias="to", ge=0, description="Seconds (one video).")] = None,
        refine: bool = False,
    ) -> dict[str, Any]:
        """Hybrid (BM25 + dense) search; `refine` cuts each hit to where the answer starts and ends."""
        from reasoning.retrieve import RetrieveOptions, retrieve
        from reasoning.search import SearchOptions, search

        _limits(cfg, q, top)
        scope = _library_for_query(svc, who, library, video)
        if start is not None and end is not None and start >= end:
            raise ApiError(422, "invalid_request", "`from` must be before `to`")
        enc = svc.embedder()
        if refine:
            found = retrieve(
                svc.store, q, scope, video, RetrieveOptions(top=top), enc, time_from=start, time_to=end
            )
        else:
            opts = SearchOptions(top=top, level=level)
            found = search(svc.store, q, scope, video, opts, enc, time_from=start, time_to=end)
        return {"query": q, "library": scope, "video": video, "moments": [_moment_json(m) for m in found]}

    @app.post(f"{v1}/ask", tags=["search"])
    def ask(body: AskIn, who: Caller) -> dict[str, Any]:
        """Answer a question from the videos with citations inside the evidence it was given."""
        from memory.llm import LLMError
        from reasoning.answer import AskOptions
        from reasoning.answer import ask as run_ask

        _limits(cfg, body.question, body.evidence)
        scope = _library_for_query(svc, who, body.library, body.video)
        try:
            engine = svc.engine(body.engine)
            answer = run_ask(
                svc.store,
                body.question,
                engine,
                scope,
                body.video,
                AskOptions(evidence=body.evidence),
                svc.embedder(),
            )
        except LLMError as e:
            raise ApiError(503, "unavailable", f"the answer engine failed: {e}") from None
        out = answer.to_json()
        out["citations"] = [
            {**c.to_json(), "link": f"/videos/{c.video_id}?t={c.start:.2f}"} for c in answer.citations
        ]
        return out

    # the editor's page
    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.get("/videos/{video_id}", include_in_schema=False)
    def video_page(video_id: str) -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())


def _limits(cfg: Settings, text_in: str, count: int) -> None:
    if len(text_in) > cfg.query_max_chars:
        raise ApiError(422, "invalid_request", f"queries are limited to {cfg.query_max_chars} characters")
    if count > cfg.max_results:
        raise ApiError(422, "invalid_request", f"at most {cfg.max_results} results per request")
    if not text_in.strip():
        raise ApiError(422, "invalid_request", "the query is empty")


def _probe(path: Path, name: str) -> None:
    """Refuse what the pipeline could not read (not media, no stream, truncated container) now,
    before a job is queued; the message names the upload, not the server's path."""
    from indexers.decode import MediaError
    from indexers.pipeline import inspect_media

    try:
        inspect_media(path)
    except MediaError as e:
        raise ApiError(422, "bad_media", str(e).replace(str(path), name)) from None


_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
          ".mkv": "video/x-matroska", ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".wav": "audio/wav",
          ".ogg": "audio/ogg", ".srt": "application/x-subrip", ".vtt": "text/vtt"}  # fmt: skip


def _media_type(path: Path) -> str:
    return _TYPES.get(path.suffix.lower(), "application/octet-stream")


_thumb_lock = threading.Lock()


def _thumbnail(cfg: Settings, video: Video, t: float, width: int) -> bytes:
    """JPEG bytes of the keyframe at or before `t` (cached under `home/thumbs/VIDEO/`)."""
    import io

    import av
    from PIL import Image

    t = min(t, max(0.0, video.duration - 0.05))
    cache = cfg.home / "thumbs" / video.id / f"{round(t * 10)}-{width}.jpg"
    if cache.is_file():
        return cache.read_bytes()
    try:
        with av.open(video.uri) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            base = stream.time_base or 1
            container.seek(int(t / float(base)), stream=stream, backward=True, any_frame=False)
            frame = next(container.decode(stream), None)
            if frame is None:
                raise ApiError(404, "not_found", f"no picture at {hms(t)}")
            image = frame.to_image()
    except (av.FFmpegError, OSError, IndexError, StopIteration) as e:
        raise ApiError(404, "not_found", f"no picture at {hms(t)} ({type(e).__name__})") from None
    height = max(1, round(image.height * width / image.width))
    buf = io.BytesIO()
    image.resize((width, height), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=80)
    data = buf.getvalue()
    with _thumb_lock:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_bytes(data)
        tmp.replace(cache)
    return data
