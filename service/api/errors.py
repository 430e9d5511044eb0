"""The service's one error shape, `{"error": {"status", "code", "message"}}`, and the one mapping
from exceptions to statuses: a route raises `ApiError` (or lets a `StoreError`, `MediaError`,
`ValueError` or validation error through) and the handlers here write the body; nothing else does,
and no traceback leaves the server."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from memory import StoreError
from service.api.models import ErrorBody

log = logging.getLogger("vidmem.service")

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "too_large", 415: "unsupported_media_type", 416: "range_not_satisfiable",
         422: "invalid_request", 429: "too_many_requests", 503: "unavailable"}  # fmt: skip
"""The code of each status when nothing more precise is known (`bad_media` is a 422 too)."""

_WHEN = {
    400: "A body that is not JSON, a malformed multipart body, or a value the library refuses.",
    401: "No key, or an unknown or revoked one.",
    403: "The key may read but not do this (admin route, `read` key, path outside the media roots).",
    404: "No such library, video, job or key (or not the key's).",
    409: "Conflicts with what exists (the library exists; the video is being ingested).",
    413: "The upload is over `VIDMEM_UPLOAD_MAX_BYTES`.",
    415: "The upload's declared type is not media.",
    416: "The byte range is past the end of the media.",
    422: "A parameter out of its bounds, or a file that is not readable media (`bad_media`).",
    429: "The key is over its rate limit, or the address sent too many wrong keys; `Retry-After` says when to try again.",
    503: "Not ready, or the answer engine's LLM server cannot be reached.",
}


class ApiError(Exception):
    """A failure with its HTTP status and a short machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody.model_validate({"error": {"status": status, "code": code, "message": message}})
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status it can answer with the error body, for OpenAPI."""
    return {s: {"model": ErrorBody, "description": _WHEN[s]} for s in sorted(statuses)}


CALLER = (401, 429)
"""What any route behind a key can answer: no or a bad key, over the rate limit or too many bad keys."""

BODY = (400, 422)
"""What any route with a JSON body can answer: a body that does not parse, or breaks its schema."""


def install(app: FastAPI) -> None:
    """The exception handlers that turn every failure into the one error shape."""
    from indexers.decode import MediaError

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.code, e.message, e.headers)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, e: StoreError) -> JSONResponse:
        return error_response(404, "not_found", str(e))

    @app.exception_handler(MediaError)
    async def media_error(request: Request, e: MediaError) -> JSONResponse:
        return error_response(422, "bad_media", str(e))

    @app.exception_handler(ValueError)
    async def value_error(request: Request, e: ValueError) -> JSONResponse:
        return error_response(400, "bad_request", str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}" for err in e.errors()[:5]
        )
        return error_response(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        headers = dict(e.headers) if e.headers else None
        return error_response(e.status_code, CODES.get(e.status_code, "error"), str(e.detail), headers)

    @app.exception_handler(Exception)
    async def crash(request: Request, e: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:8]
        log.exception("request %s %s failed (ref %s)", request.method, request.url.path, ref)
        return error_response(500, "internal", f"internal error (ref {ref}); the server log has the details")

    # a response that does not fit its model is the server's fault, not a bad request (pydantic's
    # ValidationError is a ValueError, which would otherwise be a 400)
    app.add_exception_handler(ValidationError, crash)
