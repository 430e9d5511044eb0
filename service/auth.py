"""API keys: random tokens, stored as their SHA-256, each scoped to one library or to all (admin).

A key is `vm_` + 43 URL-safe characters (32 random bytes); nothing about it can be guessed, so a
plain hash at rest is as good as a slow one and lets every request be checked with one indexed
lookup. The secret is shown once, when it is made; listings show its first characters only.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from kernels.timecode import iso
from memory import ApiKey, Library, Store, StoreError

PREFIX = "vm_"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request is: an admin key (every library) or a key of one library."""

    key_id: int
    name: str
    library_id: int | None
    library: str | None

    @property
    def admin(self) -> bool:
        return self.library_id is None

    def may_read(self, library_id: int) -> bool:
        return self.admin or self.library_id == library_id


def create_key(store: Store, name: str, library: str | None = None, secret: str | None = None) -> str:
    """A new key (returned once, never stored) for `library`, or an admin key when None. `secret`
    registers a given key instead of a random one (the `api_key` setting)."""
    secret = secret or PREFIX + secrets.token_urlsafe(32)
    if len(secret) < 16:
        raise ValueError("an API key must have at least 16 characters")
    with store.session() as s:
        library_id = store.library(s, library, create=False).id if library else None
        s.add(ApiKey(name=name, prefix=secret[:8], digest=digest(secret), library_id=library_id))
    return secret


def ensure_key(store: Store, secret: str) -> bool:
    """Register `secret` as an admin key unless it is already known; True when it was added."""
    with store.session() as s:
        if s.scalar(select(ApiKey.id).where(ApiKey.digest == digest(secret))) is not None:
            return False
    create_key(store, "configured", None, secret)
    return True


def has_keys(store: Store) -> bool:
    with store.session() as s:
        return s.scalar(select(ApiKey.id).where(ApiKey.revoked.is_(False)).limit(1)) is not None


def authenticate(store: Store, secret: str) -> Principal | None:
    """The key's principal, or None for an unknown or revoked key."""
    if not secret or len(secret) > 256:
        return None
    with store.session() as s:
        row = s.execute(
            select(ApiKey, Library.name)
            .outerjoin(Library, Library.id == ApiKey.library_id)
            .where(ApiKey.digest == digest(secret), ApiKey.revoked.is_(False))
        ).first()
    if row is None:
        return None
    key, library = row
    return Principal(key.id, key.name, key.library_id, library)


def list_keys(store: Store) -> list[dict[str, object]]:
    with store.session() as s:
        rows = s.execute(
            select(ApiKey, Library.name)
            .outerjoin(Library, Library.id == ApiKey.library_id)
            .order_by(ApiKey.id)
        ).all()
    return [
        {
            "id": k.id,
            "name": k.name,
            "prefix": k.prefix,
            "library": lib,
            "revoked": k.revoked,
            "created_at": iso(k.created_at),
        }
        for k, lib in rows
    ]


def revoke_key(store: Store, key_id: int) -> None:
    with store.session() as s:
        key = s.get(ApiKey, key_id)
        if key is None:
            raise StoreError(f"no API key with id {key_id}")
        key.revoked = True
