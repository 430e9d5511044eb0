"""What the routers share: the service's state (built once at start-up, kept on `app.state`), the
caller (by key or session, within its rate limit) and the checks of what it may see and change.

A key of one library sees nothing of another: its videos, jobs and searches answer 404 as if they
did not exist; a `read` key of it may not upload, import or delete (403)."""

from __future__ import annotations

import logging
import math
import threading
from typing import Annotated, Any

from fastapi import Depends, Request

from memory import Library, Store, Video
from service import auth, jobs
from service.api.errors import ApiError
from service.auth import Principal
from service.settings import Settings

API_PREFIX = "/v1"
COOKIE = "vidmem_session"
log = logging.getLogger("vidmem.service")


class Service:
    """The engines the routes call: settings, the store, the ingestion workers, the rate limiters
    (requests per key, wrong keys per client address), and the embedder and answer engines, each loaded
    on first use and then kept."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.home, settings.database_url, settings.index_backend)
        self.pool = jobs.WorkerPool(settings, settings.workers)
        self.limiter = auth.RateLimiter(settings.rate_limit, settings.rate_limit_burst)
        every = settings.auth_failure_seconds  # wrong keys per client address: no guessing at full speed
        self.auth_failures = auth.RateLimiter(1.0 / every if every > 0 else 0.0, settings.auth_failure_burst)
        self._lock = threading.Lock()
        self._embedder: Any = None
        self._engines: dict[str, Any] = {}
        self.warming: threading.Thread | None = None

    def embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from memory.runtime.text import SentenceEmbedder

                self._embedder = SentenceEmbedder(self.settings.text_model)
            return self._embedder

    def warm(self) -> threading.Thread:
        """Load the text model on a thread now, while the service starts: the first search does not
        wait seconds for it, and the server's memory is that of a service in use from the start.
        A model that cannot load is said in the log here, and again by the search that needs it."""

        def load() -> None:
            try:
                self.embedder().load()
            except Exception as e:  # noqa: BLE001 - the search that needs it reports it to its caller
                log.warning("the text model did not load at start (%s); searches will try again", e)

        self.warming = threading.Thread(target=load, name="vidmem-warm-text", daemon=True)
        self.warming.start()
        return self.warming

    def engine(self, name: str | None) -> Any:
        from service.settings import make_answer_engine

        key = name or self.settings.answer_engine
        embedder = self.embedder()
        with self._lock:
            if key not in self._engines:
                self._engines[key] = make_answer_engine(self.settings, embedder, key)
            return self._engines[key]

    def llm_endpoints(self) -> list[dict[str, Any]]:
        """What the answer engines built so far know of their LLM servers (replicas): up or cooling
        down, requests in flight and answered. Nothing is probed."""
        with self._lock:
            engines = list(self._engines.values())
        seen: dict[str, dict[str, Any]] = {}
        for engine in engines:
            health = getattr(getattr(engine, "llm", None), "health", None)
            for state in health() if callable(health) else []:
                seen.setdefault(state["url"], state)
        return list(seen.values())


def _service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


Svc = Annotated[Service, Depends(_service)]


def authenticate_key(svc: Service, request: Request, secret: str) -> Principal:
    """The principal of a key a client sent (header or login), or 401; 429 with Retry-After when
    its address has spent its wrong attempts (`auth_failure_burst`, then one per
    `auth_failure_seconds`), whatever the key: so that keys cannot be guessed at full speed.

    Only a wrong key is counted (into debt when many were checked at once), so right keys, however
    many and however concurrent, never use the budget up; nor do they refill it, or a caller
    holding one key could guess others between its uses."""
    address = request.client.host if request.client else ""
    wait = svc.auth_failures.check(address)
    if wait > 0:
        after = max(1, math.ceil(wait))
        raise ApiError(
            429, "too_many_requests", f"too many failed attempts with a wrong API key from this address; "
            f"retry in {after} s", {"Retry-After": str(after)},
        )  # fmt: skip
    who = auth.authenticate(svc.store, secret)
    if who is None:
        svc.auth_failures.charge(address)
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    return who


def _principal(request: Request, svc: Svc) -> Principal:
    """The caller, by its key (header) or the page's session (cookie), within its rate limit."""
    header = request.headers.get("authorization", "")
    secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
    secret = secret or request.headers.get("x-api-key", "")
    token = request.cookies.get(COOKIE, "")
    who: Principal | None
    if secret:
        who = authenticate_key(svc, request, secret)
    elif token:
        who = auth.session_principal(svc.store, token)
        if who is None:
            raise ApiError(
                401, "unauthorized", "the session ended (logged out, expired, or its key was revoked)"
            )
    else:
        raise ApiError(401, "unauthorized", "an API key is required: send `Authorization: Bearer <key>`")
    wait = svc.limiter.wait(who.key_id)
    if wait > 0:
        after = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "too_many_requests",
            f"key {who.name!r} is over its limit of {svc.settings.rate_limit:g} requests per second; "
            f"retry in {after} s",
            {"Retry-After": str(after)},
        )
    return who


Caller = Annotated[Principal, Depends(_principal)]


def require_admin(who: Principal) -> None:
    if not who.admin:
        raise ApiError(403, "forbidden", "this needs an admin key")


def require_writer(who: Principal, library: Library, what: str) -> None:
    """403 unless the caller may change `library` (an admin key, or a `write` key of it)."""
    if not who.may_write(library.id):
        raise ApiError(
            403, "forbidden", f"key {who.name!r} may only read library {library.name!r}; {what} needs a "
            "`write` key of it or an admin key"
        )  # fmt: skip


def readable_library(svc: Service, who: Principal, name: str) -> Library:
    """The named library if the caller may read it; 404 otherwise (no hint that it exists)."""
    lib = svc.store.find_library(name)
    if lib is None or not who.may_read(lib.id):
        raise ApiError(404, "not_found", f"no library named {name!r}")
    return lib


def readable_video(svc: Service, who: Principal, video_id: str) -> Video:
    """The video (its `library` loaded) if the caller may read it; 404 otherwise."""
    video = svc.store.find_video(video_id)
    if video is None or not who.may_read(video.library_id):
        raise ApiError(404, "not_found", f"no video with id {video_id!r}")
    return video


def query_library(svc: Service, who: Principal, library: str | None, video: str | None) -> str | None:
    """The library a search or question runs in: the named one, the video's, the key's own, or
    (admin only) every library."""
    if video is not None:
        return readable_video(svc, who, video).library.name
    if library is not None:
        return readable_library(svc, who, library).name
    return who.library


def check_limits(cfg: Settings, text_in: str, count: int) -> None:
    if len(text_in) > cfg.query_max_chars:
        raise ApiError(422, "invalid_request", f"queries are limited to {cfg.query_max_chars} characters")
    if count > cfg.max_results:
        raise ApiError(422, "invalid_request", f"at most {cfg.max_results} results per request")
    if not text_in.strip():
        raise ApiError(422, "invalid_request", "the query is empty")


def links(video_id: str) -> dict[str, str]:
    """The API's links of a video: its media (byte ranges) and the page that plays it."""
    return {"media": f"{API_PREFIX}/videos/{video_id}/media", "page": f"/videos/{video_id}"}


def video_json(video: Video) -> dict[str, Any]:
    """A video as the API shows it: `Video.to_json()` and its links."""
    return {**video.to_json(), **links(video.id)}


def link(video_id: str, start: float) -> str:
    """The page's deep link to a moment."""
    return f"/videos/{video_id}?t={start:.2f}"
