"""The HTTP API, one router per resource; `service.app.create_app` mounts them.

- `deps`: the service's state (`Service`, built once at start-up, on `app.state`), the caller
  (`Caller`: key or page session, rate-limited) and what it may read and change;
- `errors`: the one error shape and the exception → status mapping;
- `models`: the request and response bodies (what `/openapi.json` describes);
- routers: `health` (`/health`, `/ready`), `auth` (session, me, keys), `libraries`, `videos`
  (uploads, imports, facts, timeline, hierarchy, export, media, thumbnail, delete), `jobs`,
  `edits` (generation requests; a job's cancel, retry and files), `tools` (the agent tools),
  `memory` (a library's memory, a video's decisions, regate), `search` (search, ask), `page` (the
  editor's page).

Routers stay thin: check the caller, validate, call the library (`memory`, `reasoning`, the job
queue in `service.jobs`, uploads in `service.uploads`) and shape the answer.
"""

from __future__ import annotations

from fastapi import APIRouter

from service.api import auth, edits, health, jobs, libraries, memory, page, search, tools, videos

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    auth.router,
    libraries.router,
    videos.router,
    jobs.router,
    edits.router,
    tools.router,
    memory.router,
    search.router,
    page.router,
)
"""In the order `/openapi.json` lists them."""
