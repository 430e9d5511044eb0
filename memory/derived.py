"""Files derived from the catalog — the FAISS indexes (`memory.vectors`) and the lexical postings
(`memory.lexical`) — and the one way they are written, cached and checked.

SQL is the source of truth; a derived file is a cache of it that survives restarts. Each is written
atomically: the data to a temp file, a small JSON manifest (row count, largest id) to another, then
both renamed into place, data first. A reader that finds the manifest missing, unreadable or not
describing the data treats the file as absent, and its owner rebuilds it from SQL.

In memory, a loaded file stays valid while its *stamp* (inode, mtime, size of the data and the
manifest) is unchanged: every atomic write makes a new inode, so a copy loaded by one process sees a
rewrite by another. Comparing a file with SQL costs a count over its rows; `table_top` (the largest
embedding id, one index lookup) says when that comparison is due again.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from memory.catalog import EmbeddingRow, IndexEpoch

Stamp = tuple[tuple[int, int, int], ...] | None
"""(inode, mtime in ns, size) of each file, or None when one is missing."""

T = TypeVar("T")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`'s `.lock` sibling, across processes: one writer of a derived
    file at a time."""
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def file_stamp(*paths: Path) -> Stamp:
    """Identity of files as written (inode, mtime in ns, size of each), None if one is missing:
    every atomic write (temp file + rename) changes it, so a cached copy knows when it is stale."""
    try:
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in (p.stat() for p in paths))
    except OSError:
        return None


Top = tuple[int, int]


def table_top(sessions: sessionmaker[Session]) -> Top:
    """The largest embedding id in the whole table and the largest index epoch: two primary-key
    lookups, whatever the sizes.

    Derived files are compared with SQL (a count over their rows, ~75 ms at 10^6 rows in SQLite)
    only when this has moved since they last agreed: rows are only ever added with new ids; a change
    of which rows are retained (the memory stage, a re-gating) adds an `IndexEpoch`; and the paths
    that delete rows (`Store.delete_video`, re-embedding a video) rewrite the files themselves,
    which changes their file stamp.
    """
    with sessions() as s:
        top = s.scalar(select(func.coalesce(func.max(EmbeddingRow.id), 0))) or 0
        epoch = s.scalar(select(func.coalesce(func.max(IndexEpoch.id), 0))) or 0
    return int(top), int(epoch)


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


@dataclass
class Derived(Generic[T]):
    """One derived file as loaded: its value, the manifest it was written with, its stamp."""

    value: T
    manifest: dict[str, Any]
    stamp: Stamp
    verified_top: Top = (-1, -1)
    """`table_top` when this file last agreed with SQL; (-1, -1) until it has been checked."""


class DerivedFiles(Generic[T]):
    """The derived files of one kind, and their loaded values keyed by path.

    `load(path, manifest)` reads a file's value, or returns None when the file is torn, foreign or
    not what `manifest` describes; `save(value, tmp)` writes a value to a temp path."""

    def __init__(
        self, load: Callable[[Path, dict[str, Any]], T | None], save: Callable[[T, Path], None]
    ) -> None:
        self._load, self._save = load, save
        self.loaded: dict[Path, Derived[T]] = {}

    def write(self, path: Path, value: T, manifest: dict[str, Any]) -> Derived[T]:
        """Write `value` and its manifest atomically; the value stays loaded (reading back a
        million vectors would cost seconds)."""
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        mtmp = path.with_name(path.name + f".json.tmp{os.getpid()}")
        self._save(value, tmp)
        mtmp.write_text(json.dumps(manifest))
        os.replace(tmp, path)
        os.replace(mtmp, manifest_path(path))
        self.loaded[path] = found = Derived(value, manifest, file_stamp(path, manifest_path(path)))
        return found

    def read(self, path: Path) -> Derived[T] | None:
        """The file as written (from memory while its stamp is unchanged), or None when it or its
        manifest is missing, unreadable or inconsistent."""
        stamp = file_stamp(path, manifest_path(path))
        cached = self.loaded.get(path)
        if cached and stamp is not None and cached.stamp == stamp:
            return cached
        try:
            manifest = json.loads(manifest_path(path).read_text())
        except (OSError, ValueError):
            return None
        value = self._load(path, manifest) if isinstance(manifest, dict) else None
        if value is None:
            return None
        self.loaded[path] = found = Derived(value, manifest, stamp)
        return found

    def verified(self, path: Path, top: Top) -> Derived[T] | None:
        """The loaded file when it agreed with SQL at `table_top` == `top` and is unchanged on disk."""
        cached = self.loaded.get(path)
        if cached and cached.verified_top == top and cached.stamp == file_stamp(path, manifest_path(path)):
            return cached
        return None

    def remove(self, path: Path) -> None:
        for p in (path, manifest_path(path)):
            p.unlink(missing_ok=True)
        self.loaded.pop(path, None)

    def recheck(self) -> None:
        """Compare every loaded file with SQL again on its next use (a caller saw a row vanish)."""
        for found in self.loaded.values():
            found.verified_top = (-1, -1)
