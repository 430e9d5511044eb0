"""The indexes search runs on: the lexical file (BM25 postings and scoping metadata) and FAISS flat or
HNSW by size, both derived from SQL (real SQLite or PostgreSQL, real FAISS) and rebuilt from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from memory import EmbeddingRow, Store
from memory.lexical import LexicalIndex, bm25_top
from memory.vectors import IndexOptions, _is_hnsw, vector_bytes
from reasoning.search import SearchOptions, bm25, search, tokens
from tests.helpers import SPACE, ToyEmbedder, add_video, unit

DIM = 32

CORPUS = [
    "the rocket engine ignites and the rocket climbs",
    "a chef slices onions for the soup",
    "onions onions everywhere in the kitchen",
    "the launch of the rocket was delayed by rain",
    "rain rain and more rain over the harbour",
    "kitchen knives and a cutting board",
    "the harbour at night with boats and lights",
    "engine trouble grounded the plane",
    "the chef tastes the soup and adds salt",
    "boats leave the harbour at dawn",
    "an orchestra tunes before the concert",
    "the concert hall fills with music",
]


@pytest.fixture
def corpus(store: Store) -> tuple[int, str, str, dict[str, int]]:
    rng = np.random.default_rng(0)
    vecs = unit(rng.standard_normal((len(CORPUS), DIM)))
    half = len(CORPUS) // 2
    lib, a, ids_a = add_video(store, "main", "a", CORPUS[:half], vecs[:half])
    _, b, ids_b = add_video(store, "main", "b", CORPUS[half:], vecs[half:])
    return lib, a, b, dict(zip(CORPUS, ids_a + ids_b, strict=True))


def reference(query: str, texts: list[str], ids: list[int]) -> list[tuple[int, float]]:
    """The plain BM25 ranking (score desc, id asc) of `reasoning.search.bm25`."""
    scores = bm25(tokens(query), [tokens(t) for t in texts], 1.2, 0.75)
    return [(i, -sc) for sc, i in sorted((-sc, i) for sc, i in zip(scores, ids, strict=True) if sc > 0)]


QUERIES = ["rocket", "the rocket engine", "onions onions soup", "rain harbour boats", "zeppelin", "the of"]


# --------------------------------------------------------------------------- BM25


def test_lexical_scores_equal_the_reference_bm25(store: Store, corpus) -> None:  # type: ignore[no-untyped-def]
    lib, a, _, ids = corpus
    rows = store.lexical.load(lib)
    assert rows is not None and len(rows) == len(CORPUS)
    everything = np.ones(len(rows), bool)
    for q in QUERIES:
        got = bm25_top([(rows, everything)], tokens(q), 1.2, 0.75, top=50)
        want = reference(q, CORPUS, [ids[t] for t in CORPUS])
        assert got == want, q  # same ids, same order, bit-identical scores
    # inside one video the statistics are that video's, as the reference over its rows alone
    only_a = rows.is_("video", [a])
    texts_a = CORPUS[: len(CORPUS) // 2]
    for q in QUERIES:
        got = bm25_top([(rows, only_a)], tokens(q), 1.2, 0.75, top=3)
        assert got == reference(q, texts_a, [ids[t] for t in texts_a])[:3], q


def test_tokens_have_one_definition() -> None:
    from memory.lexical import tokens as lexical_tokens

    assert tokens is lexical_tokens  # reasoning.search re-exports the index's own tokeniser
    assert tokens("The Rocket, the ROCKET's engine!") == ["rocket", "rocket", "s", "engine"]


# --------------------------------------------------------------------------- rebuilt from SQL


def _sql_count(store: Store, lib: int) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).where(EmbeddingRow.library_id == lib)) or 0)


def _ranking(store: Store, lib: int, q: str) -> list[tuple[int, float]]:
    rows = store.lexical.load(lib)
    assert rows is not None
    return bm25_top([(rows, np.ones(len(rows), bool))], tokens(q), 1.2, 0.75, top=50)


def test_a_deleted_or_corrupt_lexical_file_is_rebuilt(store: Store, corpus) -> None:  # type: ignore[no-untyped-def]
    lib = corpus[0]
    before = [_ranking(store, lib, q) for q in QUERIES]
    path = store.lexical.path(lib)
    manifest = path.with_name(path.name + ".json")
    assert json.loads(manifest.read_text()) == {"count": len(CORPUS), "max_id": max(corpus[3].values())}

    path.unlink()
    assert [_ranking(store, lib, q) for q in QUERIES] == before
    assert path.is_file()

    path.write_bytes(path.read_bytes()[:200])  # torn: the manifest still says all is well
    fresh = Store(store.home, store.url, store.index)  # a new process: nothing cached
    try:
        assert [_ranking(fresh, lib, q) for q in QUERIES] == before
    finally:
        fresh.close()

    manifest.write_text(json.dumps({"count": 3, "max_id": 1}))  # disagrees with SQL
    assert [_ranking(store, lib, q) for q in QUERIES] == before
    assert json.loads(manifest.read_text())["count"] == len(CORPUS)
    assert not [p.name for p in store.lexical.folder.iterdir() if ".tmp" in p.name]


def test_rows_added_behind_its_back_are_picked_up(store: Store, corpus) -> None:  # type: ignore[no-untyped-def]
    lib, a, _, _ = corpus
    store.lexical.load(lib)  # cached and verified
    with store.session() as s:
        row = EmbeddingRow(
            library_id=lib,
            video_id=a,
            kind="window",
            start=500.0,
            end=510.0,
            text="a zeppelin drifts over the harbour",
            modality="text",
            model="toy",
            space=SPACE,
            vector=vector_bytes(unit(np.ones(DIM))),
        )
        s.add(row)
        s.flush()
        new_id = row.id
    assert [i for i, _ in _ranking(store, lib, "zeppelin")] == [new_id]  # appended, not rebuilt
    rows = store.lexical.load(lib)
    assert rows is not None and len(rows) == _sql_count(store, lib) == len(CORPUS) + 1
    assert rows.start[rows.positions(np.array([new_id]))[0]] == 500.0


def test_deleting_a_video_removes_its_rows_from_both_indexes(store: Store, corpus) -> None:  # type: ignore[no-untyped-def]
    lib, a, b, ids = corpus
    store.delete_video(a)
    rows = store.lexical.load(lib)
    assert rows is not None and set(rows.ids.tolist()) == {ids[t] for t in CORPUS[len(CORPUS) // 2 :]}
    assert not rows.is_("video", [a]).any()
    assert _ranking(store, lib, "onions") == []  # only in video a
    assert {i for i, _ in _ranking(store, lib, "harbour")} == {ids[CORPUS[6]], ids[CORPUS[9]]}
    q = unit(np.ones(DIM))
    assert {i for i, _ in store.vectors.search(lib, SPACE, q, k=20)} == set(rows.ids.tolist())
    embedder = ToyEmbedder({"rocket": q})
    assert {m.video_id for m in search(store, "rocket", "main", embedder=embedder)} == {b}


def _vector(store: Store, row_id: int) -> bytes:
    with store.session() as s:
        return bytes(s.scalar(select(EmbeddingRow.vector).where(EmbeddingRow.id == row_id)) or b"")


# --------------------------------------------------------------------------- HNSW above the threshold


def clustered(n: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, DIM)))
    return unit(centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, DIM)) / np.sqrt(DIM))


def test_hnsw_path_finds_the_exact_top_hit_and_respects_a_video_filter(sqlite_store: Store) -> None:
    store = sqlite_store
    store.vectors.options = IndexOptions(hnsw_threshold=100, exact_below=50)
    x = clustered(600, 12, seed=1)
    lib, a, ids_a = add_video(store, "main", "a", [f"a{i}" for i in range(300)], x[:300])
    _, b, ids_b = add_video(store, "main", "b", [f"b{i}" for i in range(300)], x[300:])
    ids = np.array(ids_a + ids_b)
    loaded = store.vectors._load(lib, SPACE)
    assert loaded is not None and _is_hnsw(loaded.index) and loaded.index.ntotal == 600

    queries = clustered(30, 12, seed=2)
    for q in queries:
        exact = ids[np.argmax(x @ q)]
        hits = store.vectors.search(lib, SPACE, q, k=10)
        assert hits[0][0] == exact
        assert hits[0][1] == pytest.approx(float(np.max(x @ q)), abs=1e-5)
        # restricted to video b: 300 allowed > exact_below, so the graph is searched with a filter
        only_b = store.vectors.search(lib, SPACE, q, k=10, allowed=ids_b)
        assert {i for i, _ in only_b} <= set(ids_b) and len(only_b) == 10
        assert only_b[0][0] == ids[300 + np.argmax(x[300:] @ q)]
        # a handful of allowed ids: scanned exactly, every one of them returned, best first
        few = ids_a[:5]
        got = store.vectors.search(lib, SPACE, q, k=10, allowed=few)
        assert [i for i, _ in got] == [few[j] for j in np.argsort(-(x[:5] @ q), kind="stable")]
    # read-only id arrays (memoised scopes) get their bitmap kept: each query still keeps to its own
    frozen_a, frozen_b = np.array(ids_a), np.array(ids_b)
    frozen_a.setflags(write=False)
    frozen_b.setflags(write=False)
    for q in queries[:6]:
        for frozen in (frozen_a, frozen_b):
            got = store.vectors.search(lib, SPACE, q, k=10, allowed=frozen)
            assert {i for i, _ in got} <= set(frozen.tolist()) and len(got) == 10
    assert len(loaded.bitmaps) == 2

    # appends keep the graph; the new vectors are found
    extra = clustered(20, 12, seed=3)
    _, _, ids_c = add_video(store, "main", "c", [f"c{i}" for i in range(20)], extra)
    loaded = store.vectors._load(lib, SPACE)
    assert loaded is not None and _is_hnsw(loaded.index) and loaded.index.ntotal == 620
    assert store.vectors.search(lib, SPACE, extra[7], k=1)[0][0] == ids_c[7]

    # through search(): a video filter keeps to that video
    embedder = ToyEmbedder({"b0": x[300]})
    moments = search(store, "b0", "main", video_id=b, embedder=embedder)
    assert moments and {m.video_id for m in moments} == {b}
    assert moments[0].text == "b0" and moments[0].start == 0.0


def test_a_flat_index_past_the_threshold_becomes_hnsw(sqlite_store: Store) -> None:
    store = sqlite_store
    x = clustered(120, 4, seed=4)
    lib, _, ids = add_video(store, "main", "a", [f"t{i}" for i in range(120)], x)
    loaded = store.vectors._load(lib, SPACE)
    assert loaded is not None and not _is_hnsw(loaded.index)  # default threshold: exact
    store.vectors.options = IndexOptions(hnsw_threshold=100)
    loaded = store.vectors._load(lib, SPACE)  # rebuilt: the type follows the size
    assert loaded is not None and _is_hnsw(loaded.index)
    assert store.vectors.search(lib, SPACE, x[5], k=1)[0][0] == ids[5]


# --------------------------------------------------------------------------- scope filters


def test_time_range_keeps_only_overlapping_units(store: Store) -> None:
    texts = [f"the rocket part {i}" for i in range(12)]
    x = clustered(12, 3, seed=5)
    lib, a, ids = add_video(store, "main", "a", texts, x, kinds=["window", "shot", "scene"] * 4, span=10.0)
    embedder = ToyEmbedder({"rocket": x[4]})
    opts = SearchOptions(level="all", top=20)
    every = search(store, "rocket", video_id=a, options=opts, embedder=embedder)
    assert len(every) == 12
    inside = search(
        store, "rocket", video_id=a, options=opts, embedder=embedder, time_from=25.0, time_to=51.0
    )
    assert sorted(m.start for m in inside) == [20.0, 30.0, 40.0, 50.0]  # [20, 30) .. [50, 60) overlap
    assert all(m.end > 25.0 and m.start < 51.0 for m in inside)
    assert sorted(
        m.start for m in search(store, "rocket", video_id=a, options=opts, embedder=embedder, time_from=95.0)
    ) == [90.0, 100.0, 110.0]
    shots = search(
        store, "rocket", video_id=a, options=SearchOptions(level="shot"), embedder=embedder, time_to=35.0
    )
    assert sorted(m.start for m in shots) == [10.0] and shots[0].kind == "shot"
    with pytest.raises(ValueError, match="time_from"):
        search(store, "rocket", video_id=a, embedder=embedder, time_from=30.0, time_to=10.0)
    # the scope masks are memoised per loaded file: a time range narrows a copy, never the memo
    assert len(search(store, "rocket", video_id=a, options=opts, embedder=embedder)) == 12


def test_search_ranks_as_the_reference_fusion(store: Store, corpus) -> None:  # type: ignore[no-untyped-def]
    """Lexical ranks from the reference BM25 and dense ranks from exact cosine, fused by RRF (k=60)."""
    lib, _, _, ids = corpus
    rng = np.random.default_rng(9)
    q = unit(rng.standard_normal(DIM))
    by_id = {ids[t]: t for t in CORPUS}
    vecs = {i: np.frombuffer(_vector(store, i), np.float32) for i in by_id}
    dense = sorted(vecs, key=lambda i: -float(vecs[i] @ q))
    for query in ("the rocket engine", "rain harbour boats"):
        lexical = [i for i, _ in reference(query, CORPUS, [ids[t] for t in CORPUS])]
        fused: dict[int, float] = {}
        for ranking in (lexical, dense):
            for rank, i in enumerate(ranking):
                fused[i] = fused.get(i, 0.0) + 1.0 / (60 + rank + 1)
        want = sorted(fused, key=lambda i: -fused[i])[:5]
        got = search(store, query, "main", options=SearchOptions(top=5), embedder=ToyEmbedder({query: q}))
        assert [m.text for m in got] == [by_id[i] for i in want]
        assert [m.score for m in got] == pytest.approx([fused[i] for i in want])


def test_a_fresh_lexical_index_object_reads_the_written_file(sqlite_store: Store) -> None:
    x = clustered(10, 2, seed=6)
    lib, _, _ = add_video(sqlite_store, "main", "a", CORPUS[:10], x)
    other = LexicalIndex(sqlite_store.lexical.folder, sqlite_store._sessions)
    rows = other.load(lib)
    assert rows is not None and len(rows) == 10
    assert rows.is_("kind", ["window"]).all() and set(rows.spaces.tolist()) == {SPACE}


def test_derived_files_are_atomic_and_a_rewrite_elsewhere_is_seen(tmp_path: Path) -> None:
    """The one machinery behind the FAISS and lexical files (memory.derived): a second holder (as in
    another process) sees a rewrite through the file stamp; a torn or mismatched manifest reads as
    absent, so the owner rebuilds from SQL; no temp file is left behind."""
    from memory.derived import DerivedFiles, manifest_path

    def load(path: Path, manifest: dict) -> list[int] | None:  # type: ignore[type-arg]
        value = json.loads(path.read_text())
        return value if manifest == {"count": len(value)} else None

    def save(value: list[int], tmp: Path) -> None:
        tmp.write_text(json.dumps(value))

    path = tmp_path / "lib1.test"
    mine, theirs = DerivedFiles(load, save), DerivedFiles(load, save)
    mine.write(path, [1, 2], {"count": 2})
    first = theirs.read(path)
    assert first is not None and first.value == [1, 2]
    assert theirs.read(path) is first  # unchanged on disk: served from memory
    mine.write(path, [1, 2, 3], {"count": 3})
    again = theirs.read(path)
    assert again is not None and again.value == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib1.test", "lib1.test.json"]
    manifest_path(path).write_text('{"count": 9}')  # a manifest that does not describe the data
    assert DerivedFiles(load, save).read(path) is None
    manifest_path(path).write_text('{"cou')  # torn
    assert DerivedFiles(load, save).read(path) is None
    mine.remove(path)
    assert not path.exists() and not manifest_path(path).exists() and mine.read(path) is None
