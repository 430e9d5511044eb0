"""The HTTP service: `create_app(settings)` builds the FastAPI app that `vidmem serve` runs.

The routes live in `service.api`, one router per resource, and stay thin: they check the caller's
key and scope, validate, and call the library (memory, indexers through the job queue, reasoning).
Everything under `/v1` needs an API key (`Authorization: Bearer KEY`, `X-API-Key: KEY`, or the
page's session cookie, which holds a revocable session token, never the key); `/health` and `/ready`
do not. A key of one library sees nothing of another: its videos, jobs and searches answer 404 as if
they did not exist; a `read` key of it may not upload, import or delete (403). Each key is held to
`rate_limit` requests per second (429 with Retry-After). Every failure has one JSON shape,
`{"error": {"status", "code", "message"}}`, and never a traceback.

Uploads (`service.uploads`) are the request body itself or a `multipart/form-data` form with one file
part, streamed to disk and cut off at `upload_max_bytes`; the file is probed before a job is queued,
so what is not media is refused at once. Ingestion runs in worker processes (`service.jobs`); the
job's id comes back with 202 and `/v1/jobs/{id}` follows it.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from indexers.heap import share_heaps
from memory import Store
from service import auth
from service.api import ROUTERS, errors
from service.api.deps import API_PREFIX, COOKIE, Service
from service.api.errors import ApiError
from service.api.page import STATIC
from service.settings import Settings

__all__ = ["API_PREFIX", "COOKIE", "ApiError", "Service", "announce_admin_key", "create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service for `settings` (default: read from the environment and config file)."""
    cfg = settings or Settings()  # type: ignore[call-arg]
    svc = Service(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # before the request threads start: 2 heaps, as in the workers (the stream's figures were
        # measured so; this part's own effect was not measured apart)
        share_heaps(2)
        announce_admin_key(svc.store, cfg)
        svc.pool.start()
        svc.warm()
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
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def announce_admin_key(store: Store, cfg: Settings) -> Path | None:
    """Make the `api_key` setting the configured key (the key an earlier value registered is
    revoked), and when no admin key is left, make one and write it to `home/admin.key`, readable by
    its owner only: the service never runs open, and no key is ever printed or logged. Returns the
    file written, if any."""
    change = auth.configure_key(store, cfg.api_key)
    if change.revoked:
        what = "changed" if cfg.api_key else "was removed"
        print(f"vidmem: VIDMEM_API_KEY {what}: the key it registered before (id "
              f"{', '.join(map(str, change.revoked))}) is revoked, with its page sessions",
              file=sys.stderr, flush=True)  # fmt: skip
    if change.refused is not None:
        print(f"vidmem: VIDMEM_API_KEY names key {change.refused}, which was revoked; it stays revoked "
              "and is not accepted: configure a new key", file=sys.stderr, flush=True)  # fmt: skip
    if auth.has_admin_key(store):
        return None
    path = auth.write_admin_key(store, cfg.home)
    print(
        f"vidmem: no admin key was configured, so one was made and written to {path} (readable by "
        f"its owner only);\nsend it as `Authorization: Bearer $(cat {path})`, or paste it into the "
        f"page at http://{cfg.host}:{cfg.port}/",
        file=sys.stderr,
        flush=True,
    )
    return path
