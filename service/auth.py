"""API keys: random tokens, stored as their SHA-256, each scoped to one library or to all (admin).

A key is `vm_` + 43 URL-safe characters (32 random bytes); nothing about it can be guessed, so a
plain hash at rest is as good as a slow one and lets every request be checked with one indexed
lookup. The secret is shown once, when it is made; listings show its first characters only.

A key of one library is `read` (search, ask, watch) or `write` (also upload and delete); an admin
key may do everything. The page logs in with a key and gets a session: the cookie holds a random
token (its hash in the catalog, with an expiry), never the key, and logging out or revoking the
key ends it.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from kernels.timecode import iso
from memory import ApiKey, Library, Store, StoreError, WebSession

PREFIX = "vm_"
ROLES = ("read", "write")
"""Roles of a key of one library; an admin key's role is `admin`."""
CONFIGURED = "configured"
"""`ApiKey.source` of the key the `api_key` setting registered."""
FIRST_START = "first-start"
"""`ApiKey.source` of the admin key made when the catalog held none."""
ADMIN_KEY_FILE = "admin.key"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request is: an admin key (every library) or a key of one library."""

    key_id: int
    name: str
    library_id: int | None
    library: str | None
    role: str
    """`admin`, or `read` / `write` for a key of one library."""

    @property
    def admin(self) -> bool:
        return self.library_id is None

    def may_read(self, library_id: int) -> bool:
        return self.admin or self.library_id == library_id

    def may_write(self, library_id: int) -> bool:
        """Upload into and delete from the library (an admin key, or a `write` key of it)."""
        return self.admin or (self.library_id == library_id and self.role == "write")


def _role(library: str | None, role: str | None) -> str:
    if library is None:
        if role not in (None, "admin"):
            raise ValueError(f"an admin key has no role ({role!r} given); a role goes with a library")
        return "admin"
    role = role or "read"
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose read or write")
    return role


def create_key(
    store: Store,
    name: str,
    library: str | None = None,
    secret: str | None = None,
    role: str | None = None,
    source: str | None = None,
) -> str:
    """A new key (returned once, never stored) for `library`, or an admin key when None; a key of
    a library is `read` unless `role` says `write`. `secret` registers a given key instead of a
    random one (the `api_key` setting)."""
    secret = secret or PREFIX + secrets.token_urlsafe(32)
    if len(secret) < 16:
        raise ValueError("an API key must have at least 16 characters")
    role = _role(library, role)
    with store.session() as s:
        library_id = store.library(s, library, create=False).id if library else None
        s.add(
            ApiKey(
                name=name,
                prefix=secret[:8],
                digest=digest(secret),
                library_id=library_id,
                role=role,
                source=source,
            )
        )
    return secret


@dataclass(frozen=True)
class KeyChange:
    """What `configure_key` did."""

    revoked: list[int]
    """Keys an earlier value of the setting registered, revoked now."""
    refused: int | None = None
    """The key the setting names when it was revoked: it stays revoked, and is not accepted."""


def configure_key(store: Store, secret: str | None) -> KeyChange:
    """Make `secret` (the `api_key` setting; None when unset) the one configured admin key: the
    key an earlier value registered is revoked with its sessions, a new value is registered. A
    value that names a revoked key stays revoked: a secret that was withdrawn, perhaps because it
    leaked, does not come back through the config file."""
    if secret is not None and len(secret) < 16:
        raise ValueError("VIDMEM_API_KEY must have at least 16 characters")
    wanted = digest(secret) if secret else None
    for attempt in (1, 2):  # a second server starting at the same moment may register it first
        try:
            with store.session() as s:
                old = s.scalars(
                    select(ApiKey).where(ApiKey.source == CONFIGURED, ApiKey.revoked.is_(False))
                ).all()
                gone = [k.id for k in old if k.digest != wanted]
                if gone:
                    s.execute(update(ApiKey).where(ApiKey.id.in_(gone)).values(revoked=True))
                    s.execute(update(WebSession).where(WebSession.key_id.in_(gone)).values(revoked=True))
                refused = None
                if secret is not None and wanted is not None:
                    known = s.scalar(select(ApiKey).where(ApiKey.digest == wanted))
                    if known is None:
                        s.add(
                            ApiKey(
                                name=CONFIGURED,
                                prefix=secret[:8],
                                digest=wanted,
                                library_id=None,
                                role="admin",
                                source=CONFIGURED,
                            )
                        )
                    elif known.revoked:
                        refused = known.id
            return KeyChange(gone, refused)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def has_admin_key(store: Store) -> bool:
    with store.session() as s:
        live = select(ApiKey.id).where(ApiKey.revoked.is_(False), ApiKey.library_id.is_(None))
        return s.scalar(live.limit(1)) is not None


def write_admin_key(store: Store, home: Path) -> Path:
    """Make an admin key and write it to `home/admin.key`, readable by its owner only (0600); the
    file is written before the key is registered, so no key exists that nobody can read."""
    secret = PREFIX + secrets.token_urlsafe(32)
    home.mkdir(parents=True, exist_ok=True)
    path = home / ADMIN_KEY_FILE
    tmp = home / f".{ADMIN_KEY_FILE}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)  # a leftover of a start that died here
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (secret + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    try:
        create_key(store, "admin (made at first start)", source=FIRST_START, secret=secret)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _principal(key: ApiKey, library: str | None) -> Principal:
    return Principal(key.id, key.name, key.library_id, library, key.role)


def _live_principal(store: Store, *where: Any, via_session: bool = False) -> Principal | None:
    """The principal of the unrevoked key that `where` selects (joined to its sessions when
    `via_session`), or None."""
    query = select(ApiKey, Library.name).outerjoin(Library, Library.id == ApiKey.library_id)
    if via_session:
        query = query.join(WebSession, WebSession.key_id == ApiKey.id)
    with store.session() as s:
        row = s.execute(query.where(ApiKey.revoked.is_(False), *where)).first()
    return None if row is None else _principal(*row)


def authenticate(store: Store, secret: str) -> Principal | None:
    """The key's principal, or None for an unknown or revoked key."""
    if not secret or len(secret) > 256:
        return None
    return _live_principal(store, ApiKey.digest == digest(secret))


def open_session(store: Store, who: Principal, seconds: float) -> str:
    """A new session of `who`'s key for `seconds`; returns its token (the cookie's value), of
    which the catalog keeps only the hash. Sessions that ended are cleared on the way."""
    token = secrets.token_urlsafe(32)
    now = time.time()
    with store.session() as s:
        s.execute(delete(WebSession).where(WebSession.expires < now - 86400))
        s.add(WebSession(digest=digest(token), key_id=who.key_id, expires=now + seconds))
    return token


def session_principal(store: Store, token: str) -> Principal | None:
    """The principal of a live session (not expired, not revoked, its key not revoked), or None."""
    if not token or len(token) > 256:
        return None
    live = (
        WebSession.digest == digest(token),
        WebSession.revoked.is_(False),
        WebSession.expires > time.time(),
    )
    return _live_principal(store, *live, via_session=True)


def close_session(store: Store, token: str) -> None:
    """End a session (logout); an unknown token is no error."""
    if token and len(token) <= 256:
        with store.session() as s:
            s.execute(update(WebSession).where(WebSession.digest == digest(token)).values(revoked=True))


class RateLimiter:
    """A token bucket per key (an API key's id, a client's address): `rate` requests per second
    on average, up to `burst` at once (0: twice the rate, at least 1); `rate` 0 is no limit. Each
    server process counts the requests it serves."""

    MAX_BUCKETS = 10_000
    """Buckets kept before the full ones (which say nothing a fresh bucket would not) are dropped:
    a caller with many addresses cannot grow the memory without bound."""

    def __init__(self, rate: float, burst: int = 0) -> None:
        self.rate = rate
        self.burst = float(burst or max(1, math.ceil(2 * rate)))
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, monotonic seconds)
        self._lock = threading.Lock()

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, then = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate)

    def wait(self, key: Hashable) -> float:
        """0 when `key` may make a request now (it is counted); else the seconds until it may."""
        return self._take(key, charge=True)

    def check(self, key: Hashable) -> float:
        """What `wait` would answer, counting nothing: for a limit on failures, which checks before
        the attempt and `charge`s after it, only when it failed."""
        return self._take(key, charge=False)

    def charge(self, key: Hashable) -> None:
        """Count one failure, into debt when the bucket is empty: concurrent attempts that all
        passed `check` are each paid for, so that on average no more get through than the rate."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._keep(key, self._tokens(key, now) - 1.0, now)

    def _take(self, key: Hashable, charge: bool) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens = self._tokens(key, now)
            if tokens >= 1.0:
                if charge:
                    self._keep(key, tokens - 1.0, now)
                return 0.0
            self._keep(key, tokens, now)
            return (1.0 - tokens) / self.rate

    def _keep(self, key: Hashable, tokens: float, now: float) -> None:
        if len(self._buckets) >= self.MAX_BUCKETS and key not in self._buckets:
            self._prune(now)
        self._buckets[key] = (tokens, now)

    def _prune(self, now: float) -> None:
        full = [k for k in self._buckets if self._tokens(k, now) >= self.burst]
        for k in full:
            del self._buckets[k]


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
            "role": k.role,
            "source": k.source,
            "revoked": k.revoked,
            "created_at": iso(k.created_at),
        }
        for k, lib in rows
    ]


def revoke_key(store: Store, key_id: int) -> None:
    """Revoke a key and every session opened with it."""
    with store.session() as s:
        key = s.get(ApiKey, key_id)
        if key is None:
            raise StoreError(f"no API key with id {key_id}")
        key.revoked = True
        s.execute(update(WebSession).where(WebSession.key_id == key_id).values(revoked=True))
