"""`/health` and `/ready`: open to anyone (no key), for load balancers and orchestrators."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import Svc
from service.api.errors import error_response, errors
from service.api.models import Health, LLMEndpoint, Ready

log = logging.getLogger("vidmem.service")
router = APIRouter(tags=["service"])


@router.get("/health")
def health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/ready", response_model=Ready, responses=errors(503))
def ready(svc: Svc) -> Ready | JSONResponse:
    """Readiness: the catalog answers and the ingestion workers run; with the LLM replicas' state."""
    try:
        svc.store.ping()
    except Exception:
        log.exception("readiness: the catalog does not answer")
        return error_response(503, "unavailable", "the catalog does not answer")
    alive = svc.pool.alive()
    if alive < svc.settings.workers:
        return error_response(
            503, "unavailable", f"{alive} of {svc.settings.workers} ingestion workers are running"
        )
    return Ready(status="ready", workers=alive, llm=[LLMEndpoint(**e) for e in svc.llm_endpoints()])
