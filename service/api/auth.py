"""`/v1/session` (the page logs in and out), `/v1/me`, and `/v1/keys` (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam

from service import auth
from service.api.deps import (
    API_PREFIX,
    COOKIE,
    Caller,
    Svc,
    authenticate_key,
    readable_library,
    require_admin,
)
from service.api.errors import BODY, CALLER, errors
from service.api.models import KeyIn, KeyInfo, Me, NewKey, SessionIn
from service.auth import Principal

router = APIRouter(prefix=API_PREFIX, tags=["auth"])


def _me(who: Principal) -> Me:
    return Me(name=who.name, library=who.library, admin=who.admin, role=who.role)  # type: ignore[arg-type]


# a session cookie for the page (the player's <video> cannot send headers)
@router.post("/session", responses=errors(401, 429, *BODY))
def login(body: SessionIn, request: Request, response: Response, svc: Svc) -> Me:
    """Log the page in with a key: a session for `session_seconds`, whose random token (not the
    key) is the HttpOnly, SameSite=Strict cookie (Secure over HTTPS) the page's requests send.
    A wrong key counts against the client's address: past `VIDMEM_AUTH_FAILURE_BURST` of them, 429
    with Retry-After, whatever the key, until the address may try again."""
    who = authenticate_key(svc, request, body.key)
    seconds = svc.settings.session_seconds
    token = auth.open_session(svc.store, who, seconds)
    response.set_cookie(COOKIE, token, max_age=seconds, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")  # fmt: skip
    return _me(who)


@router.delete("/session", status_code=204, response_class=Response)
def logout(request: Request, svc: Svc) -> Response:
    """Log the page out: its session is revoked in the catalog and the cookie cleared."""
    auth.close_session(svc.store, request.cookies.get(COOKIE, ""))
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


@router.get("/me", responses=errors(*CALLER))
def me(who: Caller) -> Me:
    """Who the key is."""
    return _me(who)


@router.post("/keys", status_code=201, responses=errors(*CALLER, *BODY, 403, 404))
def new_key(body: KeyIn, who: Caller, svc: Svc) -> NewKey:
    """Make an API key (admin). The secret is in this response only."""
    require_admin(who)
    if body.library is not None:
        readable_library(svc, who, body.library)
    secret = auth.create_key(svc.store, body.name, body.library, role=body.role)
    role = "admin" if body.library is None else body.role or "read"
    return NewKey(key=secret, name=body.name, library=body.library, role=role)


@router.get("/keys", responses=errors(*CALLER, 403))
def keys(who: Caller, svc: Svc) -> list[KeyInfo]:
    """Every key: its first characters, never the secret (admin)."""
    require_admin(who)
    return [KeyInfo.model_validate(k) for k in auth.list_keys(svc.store)]


@router.delete(
    "/keys/{key_id}", status_code=204, response_class=Response, responses=errors(*CALLER, 403, 404, 422)
)
def revoke(key_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)], who: Caller, svc: Svc) -> Response:
    """Revoke a key and every page session opened with it (admin)."""
    require_admin(who)
    auth.revoke_key(svc.store, key_id)
    return Response(status_code=204)
