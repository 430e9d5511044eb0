"""The `postgres` index backend's lexical side: BM25 postings in PostgreSQL full-text search
(`memory.fulltext`), on the real PostgreSQL with pgvector that `make postgres` starts
(VIDMEM_TEST_PGVECTOR_URL).

What it must do beyond what the shared store tests check on every backend: score exactly as the
reference BM25 from postings no file holds, whatever the tokens (quotes, backslashes, a word said
hundreds of times, a token past PostgreSQL's lexeme size); find the rows through the GIN index;
serve two hosts from one database with no postings file on either; drop a deleted video's lexemes
with the catalog's rows, with no rebuild; and hold exactly the retained text rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from memory import Store
from memory.fulltext import MAX_COUNT, POSTINGS, TABLE, FullTextPostings, any_of, document, lexeme
from memory.lexical import LexicalRows, bm25_top
from reasoning.search import SearchOptions, bm25, search, tokens
from tests.helpers import ToyEmbedder, add_video, unit

DIM = 16

TEXTS = [
    "rock'n'roll never dies, said the drummer",
    r"the backup sits in C:\temp\rock and D:\archive",
    "it's the rocket's engine that roars",
    "onions " * 300 + "and a little soup",  # one term far past 256 positions of one lexeme
    "x" * 3000 + " a token longer than a lexeme may be",
    "Café crème at the harbour, café noir at night",
    "the chef slices onions for the soup",
    "rain over the harbour and the boats",
    "",  # a text row without tokens still counts in the collection
]
QUERIES = [
    "rock'n'roll",
    r"C:\temp\rock",
    "the rocket's engine",
    "onions onions soup",  # a repeated term
    "x" * 3000,
    "CAFÉ harbour",
    "the of and it's",  # stop words and an 's': only `s` is left
    "the of and",  # all stop words: nothing to rank
    "zeppelin",
]


def reference(query: str, texts: list[str], ids: list[int]) -> list[tuple[int, float]]:
    """`reasoning.search.bm25` over `texts`, ranked as `bm25_top` ranks (score desc, id asc)."""
    scores = bm25(tokens(query), [tokens(t) for t in texts], 1.2, 0.75)
    return sorted(((i, s) for i, s in zip(ids, scores, strict=True) if s > 0), key=lambda h: (-h[1], h[0]))


@pytest.fixture
def pg_store(pgvector_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "home", pgvector_url, index="postgres")
    yield s
    s.close()


def _rows(store: Store, lib: int) -> LexicalRows:
    rows = store.lexical.load(lib)
    assert rows is not None
    assert rows.source is not None and len(rows.vocab) == 0  # the postings come from PostgreSQL alone
    return rows


def _held(store: Store) -> set[int]:
    """The ids the lexemes table holds."""
    with store.engine.connect() as c:
        return set(c.scalars(text(f"SELECT id FROM {TABLE}")))


def test_scores_from_postgres_equal_the_reference_bm25(pg_store: Store) -> None:
    x = unit(np.random.default_rng(0).standard_normal((len(TEXTS), DIM)))
    half = 5
    lib, a, ids_a = add_video(pg_store, "lex", "a", TEXTS[:half], x[:half])
    _, _, ids_b = add_video(pg_store, "lex", "b", TEXTS[half:], x[half:])
    ids = ids_a + ids_b
    rows = _rows(pg_store, lib)
    everything = np.ones(len(rows), bool)
    for q in QUERIES:
        got = bm25_top([(rows, everything)], tokens(q), 1.2, 0.75, top=50)
        assert got == reference(q, TEXTS, ids), q  # same ids, same order, bit-identical scores
    assert bm25_top([(rows, everything)], tokens("the of and"), 1.2, 0.75, top=50) == []
    assert [i for i, _ in bm25_top([(rows, everything)], tokens("onions"), 1.2, 0.75, top=1)] == [ids[3]]
    # inside one video: that video's statistics, as the reference over its rows alone
    only_a = rows.is_("video", [a])
    for q in QUERIES:
        got = bm25_top([(rows, only_a)], tokens(q), 1.2, 0.75, top=50)
        assert got == reference(q, TEXTS[:half], ids_a), q
    # the same numbers through search(): the lexical ranking is what the fusion receives
    enc = ToyEmbedder({"rock'n'roll": x[0]})
    assert search(pg_store, "rock'n'roll", "lex", options=SearchOptions(top=1), embedder=enc)[0].start == 0.0


def test_documents_keep_counts_and_odd_lexemes(pg_store: Store) -> None:
    """Quotes and backslashes round-trip through tsvector and tsquery input (our `\\w+` tokens hold
    neither, but a lexeme that did must not break the literal); a count is the lexeme's one position,
    clamped at 16,383; a token past 2,046 bytes is stored as a digest, matched the same way."""
    long = "y" * 2100
    words = ["it's"] * 3 + ["a\\b", "plain", long] + ["many"] * 20_000
    with pg_store.engine.connect() as c:
        got = dict(
            c.execute(
                text("SELECT t.lexeme, t.positions[1] FROM unnest(CAST(:d AS tsvector)) AS t"),
                {"d": document(words)},
            ).all()
        )
        assert got == {"it's": 3, "a\\b": 1, "plain": 1, lexeme(long): 1, "many": MAX_COUNT}
        assert lexeme(long).startswith("#") and lexeme("plain") == "plain"
        for terms, hit in ((["a\\b"], True), (["it's", "zzz"], True), ([long], True), (["it"], False)):
            assert (
                c.scalar(
                    text("SELECT CAST(:d AS tsvector) @@ CAST(:q AS tsquery)"),
                    {"d": document(words), "q": any_of(terms)},
                )
                is hit
            ), terms
        assert c.scalar(text("SELECT CAST(:d AS tsvector) = ''::tsvector"), {"d": document([])})


def test_the_postings_query_uses_the_gin_index(pg_store: Store) -> None:
    """A rare term in a library of 3,000 rows: the matches are found through the GIN index over
    the documents, not by reading every row of the library (its b-tree) or of the table."""
    n = 3000
    x = unit(np.random.default_rng(1).standard_normal((n, DIM)))
    lib, _, _ = add_video(pg_store, "gin", "a", [f"word{i} common" for i in range(n)], x, span=1.0)
    with pg_store.engine.begin() as c:
        c.execute(text(f"ANALYZE {TABLE}"))
        c.execute(text("SET LOCAL enable_seqscan = off"))  # a table this small fits a page or two
        plan = "\n".join(
            c.scalars(
                text(f"EXPLAIN {POSTINGS}"),
                {"lib": lib, "q": any_of(["word7"]), "lexemes": ["word7"]},
            )
        )
    assert f"{TABLE}_doc" in plan, plan


def test_two_hosts_share_the_postings_and_a_delete_needs_no_rebuild(
    pgvector_url: str, tmp_path: Path
) -> None:
    """Two stores with separate homes on one database (as two `vidmem serve` hosts): what one adds
    the other ranks at once, though neither holds a postings file; a video deleted in the catalog
    (the row alone, no index call) takes its lexemes with it."""
    one = Store(tmp_path / "one", pgvector_url, index="postgres")
    two = Store(tmp_path / "two", pgvector_url, index="postgres")
    try:
        texts = ["the chef slices onions", "a goal in the last minute", "rain over the harbour"]
        x = unit(np.random.default_rng(2).standard_normal((3, DIM)))
        lib, a, ids_a = add_video(one, "shared", "a", texts[:2], x[:2])
        rows = _rows(two, lib)
        everything = np.ones(len(rows), bool)
        assert [i for i, _ in bm25_top([(rows, everything)], ["onions"], 1.2, 0.75, 5)] == [ids_a[0]]
        _, b, ids_b = add_video(two, "shared", "b", texts[2:], x[2:])
        rows = _rows(one, lib)
        assert [
            i for i, _ in bm25_top([(rows, np.ones(len(rows), bool))], ["harbour"], 1.2, 0.75, 5)
        ] == ids_b
        hits = search(
            one, "rain harbour", "shared", None, SearchOptions(top=1), ToyEmbedder({"rain harbour": x[2]})
        )
        assert hits and hits[0].video_id == b
        for home in (one.home, two.home):  # scoping metadata only: no term anywhere on disk
            for path in (home / "lexical").glob("*.npz"):
                assert path.name.endswith("-scope.npz")
                with np.load(path) as data:
                    assert len(data["vocab"]) == 0 and len(data["docs"]) == 0

        with one.engine.begin() as c:
            c.execute(text("DELETE FROM videos WHERE id = :v"), {"v": a})
        assert _held(one) == set(ids_b)  # cascaded with the rows
        rows = _rows(two, lib)
        assert bm25_top([(rows, np.ones(len(rows), bool))], ["onions", "goal"], 1.2, 0.75, 5) == []
    finally:
        one.close()
        two.close()


def test_it_holds_the_retained_text_rows(pg_store: Store) -> None:
    """Rows the memory lets go leave on `rebuild` (what a regate calls), a crash's missing lexemes
    come back on the next load, and `reindex` refills an emptied table."""
    texts = [f"step {i} moves the slider" for i in range(6)]
    x = unit(np.random.default_rng(3).standard_normal((6, DIM)))
    lib, _, ids = add_video(pg_store, "keep", "a", texts, x)
    assert _held(pg_store) == set(ids)
    with pg_store.engine.begin() as c:
        c.execute(text("UPDATE embeddings SET retained = false WHERE id = ANY(:ids)"), {"ids": ids[:2]})
    pg_store.lexical.rebuild(lib)
    assert _held(pg_store) == set(ids[2:])
    rows = _rows(pg_store, lib)
    assert {i for i, _ in bm25_top([(rows, np.ones(len(rows), bool))], ["slider"], 1.2, 0.75, 10)} == set(
        ids[2:]
    )

    with pg_store.engine.begin() as c:  # lexemes lost (a crash before the insert), then a row is added
        c.execute(text(f"DELETE FROM {TABLE} WHERE id = :i"), {"i": ids[2]})
    _, _, more = add_video(pg_store, "keep", "b", ["the slider again"], x[:1])
    assert _held(pg_store) == set(ids[2:] + more)

    pg_store.lexical.clear()
    assert _held(pg_store) == set()
    pg_store.reindex()
    assert _held(pg_store) == set(ids[2:] + more)


def test_it_needs_postgresql(sqlite_store: Store) -> None:
    with pytest.raises(ValueError, match="PostgreSQL database_url"):
        FullTextPostings(sqlite_store.engine, sqlite_store._sessions)
