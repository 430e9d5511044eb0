"""`/v1/libraries`: the libraries a key may read, and making one (admin)."""

from __future__ import annotations

import re

from fastapi import APIRouter

from memory import StoreError
from service.api.deps import API_PREFIX, Caller, Svc, require_admin
from service.api.errors import BODY, CALLER, ApiError, errors
from service.api.models import LibraryIn, LibraryOut

router = APIRouter(prefix=API_PREFIX, tags=["libraries"])

LIBRARY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,127}$")


@router.get("/libraries", responses=errors(*CALLER))
def libraries(who: Caller, svc: Svc) -> list[LibraryOut]:
    """The libraries the key may read, with their video counts, by name."""
    return [
        LibraryOut.model_validate(lib.to_json(n)) for lib, n in svc.store.libraries() if who.may_read(lib.id)
    ]


@router.post("/libraries", status_code=201, responses=errors(*CALLER, *BODY, 403, 409))
def create_library(body: LibraryIn, who: Caller, svc: Svc) -> LibraryOut:
    """Make a library (admin)."""
    require_admin(who)
    if not LIBRARY_NAME.match(body.name):
        raise ApiError(422, "invalid_request", "a library name has letters, digits, space, `_`, `.` or `-`")
    try:
        lib = svc.store.create_library(body.name)
    except StoreError:
        raise ApiError(409, "conflict", f"a library named {body.name!r} exists") from None
    return LibraryOut.model_validate(lib.to_json(0))
