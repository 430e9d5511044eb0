"""FAISS indexes derived from the `embeddings` table: one file per (library, vector space).

Each file is written atomically with a small manifest (vector count and largest id) by
`memory.derived`. On load, a manifest that disagrees with SQL means a write was interrupted, and the
index is rebuilt from SQL, which is always the source of truth. faiss is imported on first use.

The index type follows the size of the space (`IndexOptions`): exact inner-product search (flat)
below `hnsw_threshold` vectors, an HNSW graph from there on, so a query stays in the milliseconds at
a million vectors. Both keep the vectors themselves, which restricted searches over a few ids scan
exactly: a graph search with a selective filter can miss the true best match.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from memory.catalog import EmbeddingRow
from memory.derived import Derived, DerivedFiles, file_lock, table_top


def vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


@dataclass
class IndexOptions:
    """How a space's index is built and searched. Recall figures are measured by
    tests/bench/bench_search.py (docs/benchmarks/search.md) on clustered 384-d vectors."""

    hnsw_threshold: int = 50_000
    """Vectors from which a space is indexed by an HNSW graph; below it search is exact (flat). At
    50k vectors an exact scan costs ~2 ms on one core, and exact results are what small libraries
    (and the tests) expect."""
    hnsw_m: int = 32
    """Graph links per vector: 32 holds recall@10 near 0.99 on 384-d text embeddings, where 16
    loses ~8 points at the same search effort; it costs 256 bytes per vector beside the vector."""
    ef_construction: int = 80
    """Candidates kept while inserting: 80 rather than 40 raises recall@10 from 0.93 to 0.99 at
    ef_search 64 (10^5 vectors) for about the same build time."""
    ef_search: int = 128
    """Candidates kept while searching (at least k): recall@10 0.999 at 10^5 vectors, ~0.6 ms."""
    exact_below: int = 20_000
    """A search restricted to at most this many ids scans their vectors exactly (~3 ms at 20k)
    instead of filtering the graph, which misses when few vectors are allowed."""

    def __post_init__(self) -> None:
        if self.hnsw_threshold < 1 or self.hnsw_m < 2 or self.ef_construction < 1 or self.ef_search < 1:
            raise ValueError(
                "hnsw_threshold, ef_construction and ef_search must be >= 1 and hnsw_m >= 2, got "
                f"{self.hnsw_threshold}, {self.ef_construction}, {self.ef_search}, {self.hnsw_m}"
            )


def _faiss() -> Any:
    """faiss, imported on first use; typed loosely (its SWIG stubs miss much of the API used here)."""
    import faiss

    return faiss


def _flat_index(dim: int) -> Any:
    faiss = _faiss()

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _hnsw_index(dim: int, opts: IndexOptions) -> Any:
    faiss = _faiss()
    graph = faiss.IndexHNSWFlat(dim, opts.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = opts.ef_construction
    graph.hnsw.efSearch = opts.ef_search
    return faiss.IndexIDMap2(graph)


def _is_hnsw(index: Any) -> bool:
    faiss = _faiss()
    return isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW)


def _stored_vectors(index: Any) -> np.ndarray:
    """A read-only view (N, D) of the vectors an id-mapped flat or HNSW-flat index holds, in the
    order they were added (the order of `index.id_map`)."""
    faiss = _faiss()
    inner = faiss.downcast_index(index.index)
    flat = faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner
    view = faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    view.flags.writeable = False
    return view


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run FAISS on the calling thread only. One query gains nothing from a thread team (FAISS
    splits work by query), and waking one on a busy machine cost 50-90 ms per search here (0.25 ms
    without). OpenMP's thread count is per calling thread, so other threads keep theirs."""
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@dataclass
class _Faiss:
    """A loaded index with its ids in storage order (ascending: rows are added in id order)."""

    index: Any
    ids: np.ndarray
    bitmaps: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Id bitmaps of read-only `allowed` arrays (a memoised scope), by the array's identity (the
    entry holds the array, so the identity cannot be reused while it is kept)."""

    @classmethod
    def of(cls, index: Any) -> _Faiss:
        ids = _faiss().vector_to_array(index.id_map) if index.ntotal else np.zeros(0, np.int64)
        return cls(index, ids.astype(np.int64))

    def manifest(self) -> dict[str, int]:
        return {"count": int(self.index.ntotal), "max_id": int(self.ids.max()) if len(self.ids) else 0}


def _load_faiss(path: Path, manifest: dict[str, Any]) -> _Faiss | None:
    """An index file as written, or None when it is torn or not ours (ids not ascending)."""
    try:
        loaded = _Faiss.of(_faiss().read_index(str(path)))
    except (OSError, ValueError, RuntimeError):  # missing, torn or foreign: rebuilt from SQL
        return None
    return loaded if not np.any(np.diff(loaded.ids) <= 0) else None


def _save_faiss(loaded: _Faiss, tmp: Path) -> None:
    _faiss().write_index(loaded.index, str(tmp))


class VectorIndex:
    """Inner-product search over L2-normalised vectors (cosine similarity)."""

    def __init__(
        self, folder: Path, sessions: sessionmaker[Session], options: IndexOptions | None = None
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sessions = sessions
        self.options = options or IndexOptions()
        self._files: DerivedFiles[_Faiss] = DerivedFiles(_load_faiss, _save_faiss)

    def _new_index(self, dim: int, count: int) -> Any:
        """An empty index of the type a space of `count` vectors gets."""
        if count >= self.options.hnsw_threshold:
            return _hnsw_index(dim, self.options)
        return _flat_index(dim)

    def path(self, library_id: int, space: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", space)
        return self.folder / f"lib{library_id}-{slug}.faiss"

    def _sql_state(self, library_id: int, space: str) -> tuple[int, int]:
        with self._sessions() as s:
            count, top = s.execute(
                select(func.count(), func.coalesce(func.max(EmbeddingRow.id), 0)).where(
                    EmbeddingRow.library_id == library_id, EmbeddingRow.space == space, EmbeddingRow.retained
                )
            ).one()
        return int(count), int(top)

    def _write(self, path: Path, index: Any) -> None:
        loaded = _Faiss.of(index)
        self._files.write(path, loaded, loaded.manifest())

    def recheck(self) -> None:
        """Compare every cached index with SQL again on its next use (a caller saw a row vanish)."""
        self._files.recheck()

    def _wanted(self, loaded: _Faiss) -> bool:
        """Whether a loaded index has the type its size calls for (the threshold may have changed)."""
        return _is_hnsw(loaded.index) == (loaded.index.ntotal >= self.options.hnsw_threshold)

    def _load(self, library_id: int, space: str) -> _Faiss | None:
        """The index for a space, rebuilt first if it disagrees with SQL; None when it has no rows."""
        path = self.path(library_id, space)
        top_all = table_top(self._sessions)
        cached = self._files.verified(path, top_all)
        if cached and self._wanted(cached.value):
            return cached.value
        count, top = self._sql_state(library_id, space)
        if count == 0:
            return None
        found: Derived[_Faiss] | None = self._files.read(path)
        if (
            found is None
            or found.manifest != {"count": count, "max_id": top}
            or not self._wanted(found.value)
        ):
            with file_lock(path):
                self.rebuild(library_id, space)
            found = self._files.read(path)
        if found is None:
            return None
        found.verified_top = top_all
        return found.value

    def add(self, library_id: int, space: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Append vectors (N, D) under their SQL ids; the rows must already be committed.

        Appends to the file when it holds exactly the rows before these and keeps its type at the
        new size; otherwise (a gap, or the space just crossed `hnsw_threshold`) rebuilds from SQL.
        """
        if not len(ids):
            return
        path = self.path(library_id, space)
        with file_lock(path):
            count, top = self._sql_state(library_id, space)
            found = self._files.read(path)
            if found is None and count == len(ids):
                index = self._new_index(vectors.shape[1], count)
            elif (
                found
                and found.manifest["count"] + len(ids) == count
                and found.manifest["max_id"] < min(ids)
                and _is_hnsw(found.value.index) == (count >= self.options.hnsw_threshold)
            ):
                index = found.value.index
            else:
                self.rebuild(library_id, space)
                return
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, np.int64))
            self._write(path, index)

    def rebuild(self, library_id: int, space: str) -> int:
        """Write the index for a space from SQL rows; returns the number of vectors."""
        path = self.path(library_id, space)
        count, _ = self._sql_state(library_id, space)
        index = None
        with self._sessions() as s:
            rows = s.execute(
                select(EmbeddingRow.id, EmbeddingRow.vector)
                .where(
                    EmbeddingRow.library_id == library_id, EmbeddingRow.space == space, EmbeddingRow.retained
                )
                .order_by(EmbeddingRow.id)
                .execution_options(yield_per=4096)
            )
            for chunk in rows.partitions(4096):
                ids = np.array([r[0] for r in chunk], dtype=np.int64)
                vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in chunk])
                if index is None:
                    index = self._new_index(vecs.shape[1], count)
                index.add_with_ids(vecs, ids)
        if index is None:
            self._files.remove(path)
            return 0
        self._write(path, index)
        return int(index.ntotal)

    def count(self, library_id: int, space: str) -> int:
        """Vectors the index holds for a library's space (after syncing it with SQL)."""
        loaded = self._load(library_id, space)
        return 0 if loaded is None else int(loaded.index.ntotal)

    def clear(self) -> None:
        for p in self.folder.glob("*.faiss*"):
            p.unlink()
        self._files.loaded.clear()

    def search(
        self,
        library_id: int,
        space: str,
        query: np.ndarray,
        k: int,
        allowed: Sequence[int] | np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (id, cosine) for one query vector (D,), optionally restricted to `allowed` ids.

        Exact on flat indexes and on restrictions to at most `exact_below` ids; approximate (HNSW)
        otherwise, with the graph search widened as the allowed share of the space shrinks.
        """
        loaded = self._load(library_id, space)
        if loaded is None or k <= 0:
            return []
        with _one_thread():
            return self._search(loaded, np.ascontiguousarray(query, dtype=np.float32), k, allowed)

    def _search(
        self, loaded: _Faiss, query: np.ndarray, k: int, allowed: Sequence[int] | np.ndarray | None
    ) -> list[tuple[int, float]]:
        faiss = _faiss()
        index = loaded.index
        q = query.reshape(1, -1)
        if allowed is None:
            params = None
            if _is_hnsw(index):
                params = faiss.SearchParametersHNSW(efSearch=max(self.options.ef_search, k))
            scores, ids = index.search(q, min(k, index.ntotal), params=params)
            return [(int(i), float(sc)) for i, sc in zip(ids[0], scores[0], strict=True) if i >= 0]
        wanted = np.asarray(allowed, dtype=np.int64)
        if not len(wanted):
            return []
        if len(wanted) > self.options.exact_below and _is_hnsw(index):
            bitmap = self._bitmap(loaded, allowed, wanted)
            selector = faiss.IDSelectorBitmap(8 * len(bitmap), faiss.swig_ptr(bitmap))
            share = len(wanted) / index.ntotal
            ef = max(self.options.ef_search, k)
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=int(min(ef / share, 8 * ef)))
            scores, ids = index.search(q, k, params=params)
            return [(int(i), float(sc)) for i, sc in zip(ids[0], scores[0], strict=True) if i >= 0]
        wanted = np.unique(wanted)
        pos = np.searchsorted(loaded.ids, wanted)
        known = pos < len(loaded.ids)
        known[known] = loaded.ids[pos[known]] == wanted[known]
        pos = pos[known]  # ids the index holds (a row committed after the load is not among them)
        return self._exact(loaded, pos, q[0], k) if len(pos) else []

    @staticmethod
    def _bitmap(loaded: _Faiss, allowed: object, wanted: np.ndarray) -> np.ndarray:
        """A bitmap over ids, filled straight from them: no sort, no lookup (~1 ms at 10^6); kept
        for a read-only `allowed` (the same scope, query after query)."""
        reuse = isinstance(allowed, np.ndarray) and not allowed.flags.writeable
        if reuse and id(allowed) in loaded.bitmaps:
            held, bitmap = loaded.bitmaps[id(allowed)]
            if held is allowed:
                return bitmap
        top = int(loaded.ids[-1])
        members = np.zeros(top + 1, dtype=bool)
        members[wanted[wanted <= top]] = True
        bitmap = np.packbits(members, bitorder="little")  # faiss reads bit (id & 7) of byte id >> 3
        if reuse:
            if len(loaded.bitmaps) >= 8:
                loaded.bitmaps.pop(next(iter(loaded.bitmaps)))
            loaded.bitmaps[id(allowed)] = (allowed, bitmap)  # type: ignore[assignment]
        return bitmap

    @staticmethod
    def _exact(loaded: _Faiss, pos: np.ndarray, q: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Exact top-k over the stored vectors at positions `pos`, best first (ties: lower id)."""
        scores = _stored_vectors(loaded.index)[pos] @ q  # (len(pos),)
        if len(pos) > k:
            keep = np.argpartition(-scores, k - 1)[:k]
            pos, scores = pos[keep], scores[keep]
        order = np.lexsort((loaded.ids[pos], -scores))
        return [(int(loaded.ids[pos[j]]), float(scores[j])) for j in order]
