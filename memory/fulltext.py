"""BM25 postings in the catalog's PostgreSQL full-text search: the lexical index every host shares.

With `index="postgres"` the vectors live in pgvector tables (`memory.pgvector`); this keeps the
lexical postings beside them, so no host holds a postings file of its own and every host ranks from
one index, as current as the catalog:

- one table, `vidmem_lexemes`: `id` (the embedding row's, `ON DELETE CASCADE`, so deleting a video
  deletes its lexemes with no rebuild), `library_id`, and `doc tsvector`; a GIN index over `doc`
  (which rows hold a term) and a b-tree on the library;
- the documents are built from vidmem's own tokens (`memory.lexical.tokens`), not by PostgreSQL's
  parsers and dictionaries (`to_tsvector`), so that a term is the same string in the index, in a
  query and in the reference `reasoning.search.bm25`, and the scores are identical to it;
- a document is a bag of words: each lexeme carries one position, and that position is the term's
  count in the row (`'onion':3` = three times), because BM25 needs counts, not places, and
  PostgreSQL's limits would cap real positions: it keeps at most 256 positions per lexeme and
  none past 16,383, so the counts in a long chapter's text would come back short. A count is exact
  up to 16,383 and clamped there (a term said more often in one row scores as if said 16,383 times).
  Phrase queries (`<->`) mean nothing on these documents; nothing here asks them;
- a token longer than PostgreSQL's 2,046 bytes per lexeme is stored as a digest of itself
  (`lexeme`), on both the index and the query side, so it still matches and counts exactly; a
  document past PostgreSQL's 1 MB per tsvector (some 100,000 distinct words in one row, far more
  than a chapter holds) fails its insert;
- a query selects the library's rows whose `doc @@ 'a' | 'b'` (through the GIN index) and reads each
  match's counts of the query's terms (`unnest(doc)`); `memory.lexical.bm25_top` scores them in numpy
  with the statistics of the rows in scope (row lengths, kinds, videos, times), which each host reads
  from its scoping file (`LexicalRows` without postings), as it does with the files backend.

It holds the retained text rows, like the vector tables: ingestion inserts what it committed;
`rebuild` (after the memory regates, or a handover on delete) levels the table with SQL
incrementally, the rows no longer retained out, the retained ones missing in; rows committed without
their lexemes (a crash between the catalog's commit and the insert) are found, as the vector tables
find theirs, when `table_top` has moved and the library's counts differ.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from memory.derived import Top, table_top
from memory.lexical import LexicalRows, Postings, tokens

TABLE = "vidmem_lexemes"
MAX_COUNT = 16383
"""The largest tsvector position, where a term's count in one row is clamped."""
MAX_LEXEME_BYTES = 2046
"""The longest lexeme PostgreSQL accepts (UTF-8 bytes); a longer token is stored as its digest."""
_CHUNK = 20_000
"""Rows whose texts are read, tokenised and copied in at a time."""
_DDL_LOCK = 0x76696D6C  # advisory lock: one host creates the table at a time
_TEXT_ROWS = "e.library_id = :lib AND e.modality = 'text' AND e.retained"
"""The rows the table holds: a library's retained text rows (BM25 ranks text rows only)."""
POSTINGS = (
    "SELECT t.lexeme, array_agg(x.id), array_agg(t.positions[1]) "
    f"FROM {TABLE} x, unnest(x.doc) AS t(lexeme, positions, weights) "
    "WHERE x.library_id = :lib AND x.doc @@ CAST(:q AS tsquery) AND t.lexeme = ANY(:lexemes) "
    "GROUP BY t.lexeme"
)
"""Per query term (`:lexemes`), the library's rows holding it and its count in each: the GIN index
finds the rows matching any term (`:q`, `any_of`), `unnest` reads their counts. One row per term,
the ids and counts as arrays (a common term's matches come back as two arrays, not a row each)."""


def lexeme(token: str) -> str:
    """The lexeme stored and queried for a token: the token itself, or for one longer than
    `MAX_LEXEME_BYTES` `#` and its SHA-1 (`#` is never part of a `\\w+` token, so a digest cannot
    meet a real token)."""
    if len(token.encode()) <= MAX_LEXEME_BYTES:
        return token
    return "#" + hashlib.sha1(token.encode()).hexdigest()


def quoted(lex: str) -> str:
    """A lexeme quoted for tsvector and tsquery input: inside quotes, a quote and a backslash are
    doubled; nothing else is special. (Our `\\w+` tokens hold neither, but a lexeme that did would
    still round-trip.)"""
    return "'" + lex.replace("\\", "\\\\").replace("'", "''") + "'"


def document(words: Sequence[str]) -> str:
    """The tsvector input of a row's tokens: `'term':count ...`, counts clamped at `MAX_COUNT`
    (the empty string, an empty tsvector, for a row without tokens)."""
    counts = Counter(lexeme(w) for w in words)
    return " ".join(f"{quoted(lex)}:{min(n, MAX_COUNT)}" for lex, n in counts.items())


def any_of(terms: Iterable[str]) -> str:
    """The tsquery input matching a row that holds any of `terms` (`'a' | 'b'`)."""
    return " | ".join(quoted(lexeme(t)) for t in sorted(set(terms)))


class FullTextPostings:
    """The BM25 postings of the catalog's libraries in one PostgreSQL table (see the module)."""

    def __init__(self, engine: Engine, sessions: sessionmaker[Session]) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(
                "the postgres index backend keeps the lexical index in the catalog: it needs a "
                f"PostgreSQL database_url, not {engine.dialect.name}"
            )
        self.engine = engine
        self._sessions = sessions
        self._verified: dict[int, Top] = {}
        """Library -> the catalog's `table_top` when the table last agreed with SQL for it."""
        with engine.begin() as c:
            c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _DDL_LOCK})
            c.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                    "id integer PRIMARY KEY REFERENCES embeddings(id) ON DELETE CASCADE, "
                    "library_id integer NOT NULL, doc tsvector NOT NULL)"
                )
            )
            c.execute(text(f"CREATE INDEX IF NOT EXISTS {TABLE}_doc ON {TABLE} USING gin (doc)"))
            c.execute(text(f"CREATE INDEX IF NOT EXISTS {TABLE}_lib ON {TABLE} (library_id)"))

    # --- writing -----------------------------------------------------------------------------------

    def add(self, library_id: int, ids: Sequence[int]) -> None:
        """Insert the lexemes of rows just committed (the retained text rows among `ids`; ids
        already in are kept), then level the library if SQL holds more or fewer than that (rows of
        earlier videos the memory let go)."""
        wanted = sorted({int(i) for i in ids})
        for lo in range(0, len(wanted), _CHUNK):
            self._insert(library_id, wanted[lo : lo + _CHUNK])
        self._level(library_id)

    def _insert(self, library_id: int, ids: list[int]) -> int:
        """Tokenise the texts of `ids` (those the table should hold) and copy their documents in:
        COPY into a staging table, then in, skipping ids already there and rows deleted meanwhile."""
        with self.engine.connect() as c:
            texts = c.execute(
                text(f"SELECT e.id, e.text FROM embeddings e WHERE {_TEXT_ROWS} AND e.id = ANY(:ids)"),
                {"lib": library_id, "ids": ids},
            ).all()
        if not texts:
            return 0
        with self.engine.begin() as c:
            raw: Any = c.connection.dbapi_connection
            cur = raw.cursor()
            cur.execute(f"CREATE TEMP TABLE vidmem_lexeme_stage (LIKE {TABLE}) ON COMMIT DROP")
            with cur.copy("COPY vidmem_lexeme_stage (id, library_id, doc) FROM STDIN") as cp:
                for i, body in texts:
                    cp.write_row((int(i), library_id, document(tokens(body or ""))))
            cur.execute(
                f"INSERT INTO {TABLE} SELECT s.* FROM vidmem_lexeme_stage s "
                "JOIN embeddings e ON e.id = s.id ON CONFLICT (id) DO NOTHING"
            )
        return len(texts)

    def rebuild(self, library_id: int) -> int:
        """Bring the library's lexemes level with SQL: rows no longer retained out, retained text
        rows missing in. Returns the rows it holds for the library."""
        with self.engine.begin() as c:
            c.execute(
                text(
                    f"DELETE FROM {TABLE} x USING embeddings e "
                    "WHERE x.id = e.id AND x.library_id = :lib AND NOT e.retained"
                ),
                {"lib": library_id},
            )
            missing = list(
                c.scalars(
                    text(
                        f"SELECT e.id FROM embeddings e WHERE {_TEXT_ROWS} "
                        f"AND NOT EXISTS (SELECT 1 FROM {TABLE} x WHERE x.id = e.id) ORDER BY e.id"
                    ),
                    {"lib": library_id},
                )
            )
        for lo in range(0, len(missing), _CHUNK):
            self._insert(library_id, missing[lo : lo + _CHUNK])
        if len(missing) >= _CHUNK:  # a big load: fresh planner statistics (GIN or not is the planner's call)
            with self.engine.begin() as c:
                c.execute(text(f"ANALYZE {TABLE}"))
        return self.held(library_id)

    def held(self, library_id: int) -> int:
        """Rows the table holds for a library."""
        with self.engine.connect() as c:
            return int(
                c.scalar(text(f"SELECT count(*) FROM {TABLE} WHERE library_id = :l"), {"l": library_id}) or 0
            )

    def clear(self) -> None:
        """Empty the table (`Store.reindex` fills it again)."""
        with self.engine.begin() as c:
            c.execute(text(f"TRUNCATE {TABLE}"))
        self._verified.clear()

    def recheck(self) -> None:
        """Compare every library with SQL again on its next use (a caller saw a row vanish)."""
        self._verified.clear()

    def level(self, library_id: int, top: Top | None = None) -> None:
        """Sync the library's lexemes when SQL moved since they last agreed and the counts now differ
        (what a crash between the catalog's commit and the insert leaves). `top`: the catalog's
        `table_top`, when the caller has just read it."""
        top = top or table_top(self._sessions)
        if self._verified.get(library_id) != top:
            self._level(library_id, top)

    def _level(self, library_id: int, top: Top | None = None) -> None:
        top = top or table_top(self._sessions)  # read before the counts: a later move is seen next time
        with self.engine.connect() as c:
            want = c.scalar(
                text(f"SELECT count(*) FROM embeddings e WHERE {_TEXT_ROWS}"), {"lib": library_id}
            )
        if want != self.held(library_id):
            self.rebuild(library_id)
        self._verified[library_id] = top

    # --- searching ---------------------------------------------------------------------------------

    def postings(self, library_id: int, rows: LexicalRows, terms: Collection[str]) -> dict[str, Postings]:
        """Each term's postings among the library's `rows`: the positions (in `rows`) of the rows
        holding it and its count in each. Rows the scoping file does not hold yet (committed after
        it was read) are left out, as they would be from a postings file."""
        by_lexeme = {lexeme(t): t for t in terms}
        out: dict[str, Postings] = {t: (np.zeros(0, np.intp), np.zeros(0, np.int32)) for t in terms}
        if not by_lexeme:
            return out
        with self.engine.connect() as c:
            found = c.execute(
                text(POSTINGS),
                {"lib": library_id, "q": any_of(terms), "lexemes": list(by_lexeme)},
            ).all()
        for lex, ids, counts in found:
            pos = rows.positions(np.asarray(ids, np.int64))
            known = pos >= 0
            out[by_lexeme[lex]] = (pos[known], np.asarray(counts, np.int32)[known])
        return out
