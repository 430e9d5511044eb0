"""Search latency at 10^3 .. 10^6 indexed segments, against brute-force numpy over the same vectors.

Synthetic libraries go through the real Store (SQLite): 384-d unit vectors drawn around cluster
centres (one cluster per ~1,000 segments; a member's cosine to its centre is ~0.7), and texts of
10-60 words from a Zipfian vocabulary (s = 1.05 over 30,000 words: the stop words take the top
ranks, as in English, then made-up words) so BM25 meets realistic postings. Each library is one "bench" library of videos of 500 segments (60% transcript windows,
30% shots, 8% scenes, 2% chapters, laid end to end in time). The rows are inserted in bulk and the
derived indexes (FAISS, lexical) are built once; all of it is cached under
`VIDMEM_BENCH_DIR/search/` so a rerun only measures.

Measured per size, on held-out queries (new points near a cluster centre; 3-5 words taken from a
random segment's text):
- `search`: the whole `reasoning.search.search()` call (SQL staleness checks, scope, BM25, dense,
  fusion, reading the hits' texts), with an embedder that returns the precomputed query vector, so
  the MiniLM forward pass (measured once, separately) is not what is timed;
- `dense`: `VectorIndex.search` alone (exact flat below the HNSW threshold, HNSW above);
- `numpy`: brute force over the same vectors in the same process: `X @ q` then argpartition;
- recall@10 of `dense` against the exact top-10, and the one-video filtered search's latency.

Run: .venv/bin/python -m tests.bench.bench_search [--sizes 1000 10000 100000 1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from memory import EmbeddingRow, Store, Video
from memory.lexical import STOP
from memory.runtime.text import Embedder
from memory.vectors import _is_hnsw
from reasoning.search import search
from tests.bench.common import RESULTS, WORK, machine, write_results

DIM = 384
VOCAB = 30_000
ZIPF_S = 1.05
PER_VIDEO = 500
KINDS = (("window", 0.60), ("shot", 0.30), ("scene", 0.08), ("chapter", 0.02))
SPACE = "text:bench-384"
SIZES = (1_000, 10_000, 100_000, 1_000_000)
BUILD_VERSION = 2
"""Bumped when the synthetic data changes, so a cached library is rebuilt."""


class FixedEmbedder(Embedder):
    """Returns the next precomputed vector: the query's encoding is not what the benchmark times."""

    name = "bench-384"

    def __init__(self) -> None:
        self.vector = np.zeros(DIM, np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.repeat(self.vector[None], len(texts), axis=0)


def vocabulary(rng: np.random.Generator) -> np.ndarray:
    """VOCAB distinct words by Zipf rank: the stop words first (as in English, where they are the most
    frequent; the index leaves them out), then made-up words of 2-4 syllables."""
    syllables = np.array([c + v for c in "bdfgklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")])
    words: dict[str, None] = dict.fromkeys(sorted(STOP))
    while len(words) < VOCAB:
        n = int(rng.integers(2, 5))
        words["".join(rng.choice(syllables, n))] = None
    return np.array(list(words))


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def home_for(n: int) -> Path:
    return WORK / "search" / f"n{n}"


def build(n: int, n_queries: int, seed: int = 0) -> Path:
    """The cached synthetic library of n segments (SQL rows, vectors.npy, queries.json); built once."""
    home = home_for(n)
    done = home / "built.json"
    if done.is_file() and json.loads(done.read_text()) == {"n": n, "version": BUILD_VERSION}:
        return home
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    words = vocabulary(rng)
    ranks = np.arange(1, VOCAB + 1, dtype=np.float64)
    zipf = ranks**-ZIPF_S
    zipf /= zipf.sum()
    centres = unit(rng.standard_normal((max(8, n // 1000), DIM)))
    store = Store(home)
    n_videos = -(-n // PER_VIDEO)
    with store.session() as s:
        lib = store.library(s, "bench")
        videos = [
            Video(
                library_id=lib.id, uri=f"/bench/{v}.mp4", title=f"v{v}", content_hash=f"h{v}", status="ready"
            )
            for v in range(n_videos)
        ]
        s.add_all(videos)
        s.flush()
        lib_id, video_ids = lib.id, [v.id for v in videos]
    vectors = np.lib.format.open_memmap(home / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    texts: list[str] = []
    kinds = np.array([k for k, _ in KINDS])
    probs = np.array([p for _, p in KINDS])
    chunk = 20_000
    t0 = time.perf_counter()
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        m = hi - lo
        vec = unit(centres[rng.integers(0, len(centres), m)] + rng.standard_normal((m, DIM)) / np.sqrt(DIM))
        vectors[lo:hi] = vec
        lengths = rng.integers(10, 61, m)
        flat = words[rng.choice(VOCAB, int(lengths.sum()), p=zipf)]
        cuts = np.cumsum(lengths)[:-1]
        chunk_texts = [" ".join(ws) for ws in np.split(flat, cuts)]
        texts += chunk_texts
        kind = rng.choice(kinds, m, p=probs)
        rows = []
        for j in range(m):
            i = lo + j
            at = 30.0 * (i % PER_VIDEO)
            rows.append(
                {
                    "library_id": lib_id,
                    "video_id": video_ids[i // PER_VIDEO],
                    "kind": str(kind[j]),
                    "start": at,
                    "end": at + 30.0,
                    "text": chunk_texts[j],
                    "modality": "text",
                    "model": "bench-384",
                    "space": SPACE,
                    "vector": vec[j].tobytes(),
                }
            )
        with store.session() as s:
            s.execute(insert(EmbeddingRow), rows)
        print(f"  n={n}: {hi} rows in SQL ({time.perf_counter() - t0:.0f} s)", flush=True)
    vectors.flush()
    queries = {
        "vectors": unit(
            centres[rng.integers(0, len(centres), n_queries)]
            + rng.standard_normal((n_queries, DIM)) / np.sqrt(DIM)
        ).tolist(),
        "texts": [
            " ".join(rng.choice(texts[int(rng.integers(0, n))].split(), int(rng.integers(3, 6))))
            for _ in range(n_queries)
        ],
        "video": video_ids[len(video_ids) // 2],
    }
    (home / "queries.json").write_text(json.dumps(queries))
    store.close()
    done.write_text(json.dumps({"n": n, "version": BUILD_VERSION}))
    return home


def pct(xs: list[float]) -> dict[str, float]:
    """p50 and p95 of latencies given in seconds, in ms."""
    return {"p50_ms": float(np.percentile(xs, 50) * 1e3), "p95_ms": float(np.percentile(xs, 95) * 1e3)}


def measure(n: int, home: Path) -> dict:
    """Latencies and recall on one cached library (derived indexes built here once, if missing)."""
    store = Store(home)
    with store.session() as s:
        lib_id = store.library(s, "bench", create=False).id
    t0 = time.perf_counter()
    loaded = store.vectors._load(lib_id, SPACE)  # builds the FAISS file when missing or stale
    t_vectors = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = store.lexical.load(lib_id)
    t_lexical = time.perf_counter() - t0
    assert loaded is not None and rows is not None and len(rows) == n
    index_type = "HNSW" if _is_hnsw(loaded.index) else "flat"
    x = np.load(home / "vectors.npy")  # (n, DIM), row i has id ids[i]
    ids = rows.ids
    queries = json.loads((home / "queries.json").read_text())
    qvecs = np.array(queries["vectors"], np.float32)
    texts = queries["texts"]
    moment = rows.is_("kind", ("window", "shot"))
    moment_ids = ids[moment]
    emb = FixedEmbedder()
    t_search, t_dense, t_numpy, t_video, t_filtered = [], [], [], [], []
    recall, recall_filtered = [], []
    for i in range(-5, len(texts)):  # the first five warm the caches and are not counted
        j = max(i, 0)
        q = qvecs[j]
        emb.vector = q
        t0 = time.perf_counter()
        search(store, texts[j], "bench", embedder=emb)
        t1 = time.perf_counter()
        hits = store.vectors.search(lib_id, SPACE, q, 10)
        t2 = time.perf_counter()
        scores = x @ q
        top = np.argpartition(-scores, 10)[:10]
        top = top[np.argsort(-scores[top])]
        t3 = time.perf_counter()
        search(store, texts[j], video_id=queries["video"], embedder=emb)
        t4 = time.perf_counter()
        filtered = store.vectors.search(lib_id, SPACE, q, 10, allowed=moment_ids)
        t5 = time.perf_counter()
        if i < 0:
            continue
        t_search.append(t1 - t0)
        t_dense.append(t2 - t1)
        t_numpy.append(t3 - t2)
        t_video.append(t4 - t3)
        t_filtered.append(t5 - t4)
        recall.append(len({h for h, _ in hits} & set(ids[top].tolist())) / 10)
        in_moment = np.flatnonzero(moment)
        best = in_moment[np.argpartition(-scores[in_moment], 10)[:10]]
        recall_filtered.append(len({h for h, _ in filtered} & set(ids[best].tolist())) / 10)
    store.close()
    out = {
        "n": n,
        "index": index_type,
        "index_load_or_build_s": round(t_vectors, 2),
        "lexical_load_or_build_s": round(t_lexical, 2),
        "postings": len(rows.docs),
        "vocabulary": len(rows.vocab),
        "search": pct(t_search),
        "dense": pct(t_dense),
        "numpy": pct(t_numpy),
        "search_one_video": pct(t_video),
        "dense_moment_filter": pct(t_filtered),
        "recall_at_10": float(np.mean(recall)),
        "recall_at_10_moment_filter": float(np.mean(recall_filtered)),
        "queries": len(texts),
    }
    out["numpy_over_dense_p50"] = out["numpy"]["p50_ms"] / out["dense"]["p50_ms"]
    out["search_over_numpy_p50"] = out["search"]["p50_ms"] / out["numpy"]["p50_ms"]
    return out


def minilm_ms(repeat: int = 20) -> float:
    """Median time of one query's MiniLM encoding (the part the fixed embedder leaves out)."""
    from memory.runtime.text import SentenceEmbedder

    enc = SentenceEmbedder()
    enc.embed(["warm up"])
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        enc.embed(["where do they talk about the quarterly revenue"])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in results]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label in (
        ("search", "search() p95"),
        ("dense", "dense (FAISS) p95"),
        ("numpy", "numpy brute force p95"),
    ):
        ax.plot(ns, [r[key]["p95_ms"] for r in results], marker="o", label=label)
    ax.axhline(50, color="grey", linestyle="--", linewidth=1, label="target 50 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("indexed segments")
    ax.set_ylabel("latency (ms)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(results: list[dict], minilm: float) -> str:
    lines = [
        "# Search latency: 10^3 to 10^6 segments",
        "",
        "`.venv/bin/python -m tests.bench.bench_search` on " + machine() + ".",
        "",
        "Synthetic libraries through the real Store (SQLite): 384-d clustered unit vectors, Zipfian texts;",
        f"{results[0]['queries']} held-out queries per size (p50/p95 in ms). `search` is the whole `search()` call",
        "(default level: windows and shots; SQL checks, scope, BM25, dense, fusion, texts) with a precomputed",
        f"query vector; the MiniLM encoding it leaves out costs {minilm:.1f} ms per query (median).",
        "`dense` is `VectorIndex.search` (k=10) alone; `numpy` is brute force (`X @ q` + argpartition) over the",
        "same vectors in the same process. Recall@10 is the dense top-10 against the exact one.",
        "",
        "| segments | index | search p50 / p95 | one video p50 / p95 | dense p50 / p95 | numpy p50 / p95 "
        "| numpy ÷ dense (p50) | search ÷ numpy (p50) | recall@10 | recall@10, moment filter |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['n']:,} | {r['index']} "
            f"| {r['search']['p50_ms']:.1f} / {r['search']['p95_ms']:.1f} "
            f"| {r['search_one_video']['p50_ms']:.1f} / {r['search_one_video']['p95_ms']:.1f} "
            f"| {r['dense']['p50_ms']:.2f} / {r['dense']['p95_ms']:.2f} "
            f"| {r['numpy']['p50_ms']:.2f} / {r['numpy']['p95_ms']:.2f} "
            f"| {r['numpy_over_dense_p50']:.1f}× | {r['search_over_numpy_p50']:.2f}× "
            f"| {r['recall_at_10']:.3f} | {r['recall_at_10_moment_filter']:.3f} |"
        )
    lines += [
        "",
        "Index build (or load, when cached) in seconds, and the lexical file's size:",
        "",
        "| segments | FAISS build/load s | lexical build/load s | postings | vocabulary |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['n']:,} | {r['index_load_or_build_s']} | {r['lexical_load_or_build_s']} "
            f"| {r['postings']:,} | {r['vocabulary']:,} |"
        )
    lines += ["", "![latency vs size](search.png)", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    results: list[dict] = []
    minilm = None if args.build_only else minilm_ms()
    for n in args.sizes:
        t0 = time.perf_counter()
        home = build(n, args.queries)
        print(f"n={n}: data ready in {time.perf_counter() - t0:.0f} s", flush=True)
        if minilm is None:
            continue
        results.append(measure(n, home))
        print(json.dumps(results[-1]), flush=True)
        # written after every size, so a long run that is stopped keeps what it measured
        data = {"machine": machine(), "minilm_query_ms": minilm, "results": results}
        write_results("search", data, report(results, minilm))
        plot(results, RESULTS / "search.png")


if __name__ == "__main__":
    main()
