"""FAISS indexes derived from the `embeddings` table: one file per (library, vector space).

Each file is written atomically (temp file + rename) with a small manifest (vector count and
largest id). On load, a manifest that disagrees with SQL means a write was interrupted, and the
index is rebuilt from SQL, which is always the source of truth. faiss is imported on first use.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from memory.models import EmbeddingRow


def vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _flat_index(dim: int) -> Any:
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


class VectorIndex:
    """Inner-product search over L2-normalised vectors (cosine similarity)."""

    def __init__(self, folder: Path, sessions: sessionmaker[Session]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sessions = sessions
        self._cache: dict[Path, tuple[float, Any]] = {}

    def path(self, library_id: int, space: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", space)
        return self.folder / f"lib{library_id}-{slug}.faiss"

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        with open(path.with_suffix(".lock"), "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _sql_state(self, library_id: int, space: str) -> tuple[int, int]:
        with self._sessions() as s:
            count, top = s.execute(
                select(func.count(), func.coalesce(func.max(EmbeddingRow.id), 0)).where(
                    EmbeddingRow.library_id == library_id, EmbeddingRow.space == space
                )
            ).one()
        return int(count), int(top)

    def _write(self, path: Path, index: Any) -> None:
        import faiss

        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        faiss.write_index(index, str(tmp))
        ids = faiss.vector_to_array(index.id_map) if index.ntotal else np.zeros(0, np.int64)
        manifest = {"count": int(index.ntotal), "max_id": int(ids.max()) if len(ids) else 0}
        mtmp = path.with_name(path.name + f".json.tmp{os.getpid()}")
        mtmp.write_text(json.dumps(manifest))
        os.replace(tmp, path)
        os.replace(mtmp, path.with_name(path.name + ".json"))
        self._cache.pop(path, None)

    def _read(self, path: Path) -> tuple[Any, dict] | None:
        """The index file and its manifest as written, or None when either is missing or unreadable."""
        import faiss

        try:
            manifest = json.loads(path.with_name(path.name + ".json").read_text())
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            return None
        cached = self._cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1], manifest
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:  # torn or foreign file: the caller rebuilds from SQL
            return None
        self._cache[path] = (mtime, index)
        return index, manifest

    def _load(self, library_id: int, space: str) -> Any | None:
        """The index for a space, rebuilt first if it disagrees with SQL; None when it has no rows."""
        path = self.path(library_id, space)
        count, top = self._sql_state(library_id, space)
        if count == 0:
            return None
        found = self._read(path)
        if found is None or found[1] != {"count": count, "max_id": top}:
            with self._locked(path):
                self.rebuild(library_id, space)
            found = self._read(path)
        return found[0] if found else None

    def add(self, library_id: int, space: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Append vectors (N, D) under their SQL ids; the rows must already be committed.

        Appends to the file when it holds exactly the rows before these; otherwise rebuilds from SQL.
        """
        if not len(ids):
            return
        path = self.path(library_id, space)
        with self._locked(path):
            count, top = self._sql_state(library_id, space)
            found = self._read(path)
            if found is None and count == len(ids):
                index = _flat_index(vectors.shape[1])
            elif found and found[1]["count"] + len(ids) == count and found[1]["max_id"] < min(ids):
                index = found[0]
            else:
                self.rebuild(library_id, space)
                return
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, np.int64))
            self._write(path, index)

    def rebuild(self, library_id: int, space: str) -> int:
        """Write the index for a space from SQL rows; returns the number of vectors."""
        path = self.path(library_id, space)
        index = None
        with self._sessions() as s:
            rows = s.execute(
                select(EmbeddingRow.id, EmbeddingRow.vector)
                .where(EmbeddingRow.library_id == library_id, EmbeddingRow.space == space)
                .order_by(EmbeddingRow.id)
                .execution_options(yield_per=4096)
            )
            for chunk in rows.partitions(4096):
                ids = np.array([r[0] for r in chunk], dtype=np.int64)
                vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in chunk])
                if index is None:
                    index = _flat_index(vecs.shape[1])
                index.add_with_ids(vecs, ids)
        if index is None:
            for p in (path, path.with_name(path.name + ".json")):
                p.unlink(missing_ok=True)
            self._cache.pop(path, None)
            return 0
        self._write(path, index)
        return int(index.ntotal)

    def clear(self) -> None:
        for p in self.folder.glob("*.faiss*"):
            p.unlink()
        self._cache.clear()

    def search(
        self, library_id: int, space: str, query: np.ndarray, k: int, allowed: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (id, cosine) for one query vector (D,), optionally restricted to `allowed` ids."""
        import faiss

        index = self._load(library_id, space)
        if index is None or k <= 0:
            return []
        params = None
        if allowed is not None:
            if not allowed:
                return []
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]  # SWIG kwargs
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        scores, ids = index.search(q, min(k, index.ntotal), params=params)
        return [(int(i), float(sc)) for i, sc in zip(ids[0], scores[0], strict=True) if i >= 0]
