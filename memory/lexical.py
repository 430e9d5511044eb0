"""The lexical index derived from the `embeddings` table: BM25 postings and the rows' scoping
metadata, one file per library.

A query must not read every row of a library from SQL: at a million rows that alone takes seconds.
So, like the FAISS files, each library gets a derived file (`lib{id}.npz` in `home/lexical/`, numpy
arrays only) holding, per embedding row in id order, what scoping needs (row id, video, kind,
modality, space, start and end in seconds, token count), and an inverted index of the text rows
(term -> rows and term frequencies, sorted by term then row). Only the texts of the hits a query
returns are read from SQL.

The file is written atomically beside a manifest (row count, largest id) by `memory.derived`, and
is rebuilt from SQL, the source of truth, whenever the two disagree; rows added with larger ids
are appended instead (a merge of the postings, linear in their size).

BM25 statistics (rows, mean length, document frequencies) are computed at query time over the rows
in scope, so the scores are those of the plain reference (`reasoning.search.bm25`) over the same
rows: a search inside one video ranks as if that video were the whole collection.

With the `postgres` index backend the postings live in the catalog's PostgreSQL instead
(`memory.fulltext`), one index every host shares: the file (`lib{id}-scope.npz`) then holds the
scoping metadata alone, and the loaded rows look their postings up in PostgreSQL (`LexicalRows.lookup`).
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from memory.catalog import EmbeddingRow
from memory.derived import Derived, DerivedFiles, file_lock, table_top

if TYPE_CHECKING:
    from memory.fulltext import FullTextPostings

_TOKEN = re.compile(r"\w+", re.UNICODE)
STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "she",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)
"""English function words left out of the lexical index and of queries."""


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens of `text` without stop words: what BM25 indexes and queries."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOP]


_CATEGORIES = {"video": "videos", "kind": "kinds", "space": "spaces", "modality": "modalities"}
"""Text columns stored as small integer codes into a names array (e.g. `kind` codes into `kinds`)."""

_CHUNK = 50_000
"""Rows read from SQL and tokenised at a time while building (bounds the Python lists' memory)."""

Postings = tuple[np.ndarray, np.ndarray]
"""A term's postings in one library's rows: the positions of the rows holding it and its count in each."""


@dataclass
class LexicalRows:
    """One library's rows (in id order) and the postings of its text rows, as loaded from the file.

    Positions index every per-row array; `docs` holds positions, `indptr[t]:indptr[t + 1]` the
    postings of term `t` (`vocab[t]`), with `tf` the term's count in each. Rows whose postings live
    in PostgreSQL (the `postgres` backend) have no vocabulary and a `source` that looks them up.
    """

    ids: np.ndarray  # (N,) int64, ascending
    video: np.ndarray  # (N,) int32 codes into videos
    videos: np.ndarray  # (V,) str
    kind: np.ndarray  # (N,) int32 codes into kinds
    kinds: np.ndarray
    space: np.ndarray  # (N,) int32 codes into spaces
    spaces: np.ndarray
    modality: np.ndarray  # (N,) int32 codes into modalities
    modalities: np.ndarray
    start: np.ndarray  # (N,) float64 seconds
    end: np.ndarray  # (N,) float64 seconds
    length: np.ndarray  # (N,) int32 tokens of the row's text (0 unless a text row)
    vocab: np.ndarray  # (T,) str
    indptr: np.ndarray  # (T + 1,) int64
    docs: np.ndarray  # (P,) int32 positions
    tf: np.ndarray  # (P,) int32
    _terms: dict[str, int] | None = field(default=None, init=False, repr=False)
    source: Callable[[LexicalRows, Collection[str]], dict[str, Postings]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """Where the postings are when not in these arrays (`FullTextPostings.postings`, bound to the
    library): set on loading, never saved."""
    _memo: dict[Hashable, Any] = field(default_factory=dict, init=False, repr=False)

    MEMO_SIZE = 64
    """Derived values (scope masks, their statistics) kept per loaded file; the oldest goes first."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def terms(self) -> dict[str, int]:
        """Term -> its index in `vocab` (built on first use, once per loaded file)."""
        if self._terms is None:
            self._terms = {t: i for i, t in enumerate(self.vocab.tolist())}
        return self._terms

    def lookup(self, terms: Collection[str]) -> dict[str, Postings]:
        """The postings of each of `terms`: from `source` when these rows have one (one round trip
        for all the terms), else from the arrays."""
        if self.source is not None:
            return self.source(self, terms)
        return {t: self.postings(t) for t in terms}

    def postings(self, term: str) -> Postings:
        """Positions of the text rows holding `term`, ascending, and its count in each (from the
        arrays: none when the postings live in PostgreSQL)."""
        t = self.terms.get(term)
        if t is None:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        lo, hi = int(self.indptr[t]), int(self.indptr[t + 1])
        return self.docs[lo:hi], self.tf[lo:hi]

    def memo(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """`make()`, computed once per `key` for these rows. A loaded file never changes (a change is
        a new file, loaded as new rows), so what is derived from it stays true: a query reuses the
        masks of the previous one instead of scanning a million rows again. Arrays in the value are
        made read-only, so a caller cannot change what the next one gets."""
        try:
            return self._memo[key]
        except KeyError:
            pass
        value = make()
        for a in value if isinstance(value, tuple) else (value,):
            if isinstance(a, np.ndarray):
                a.setflags(write=False)
        if len(self._memo) >= self.MEMO_SIZE:
            self._memo.pop(next(iter(self._memo)), None)
        self._memo[key] = value
        return value

    def is_(self, column: str, names: Iterable[str]) -> np.ndarray:
        """Mask (N,) of the rows whose `column` (video, kind, space or modality) is one of `names`
        (read-only, memoised)."""
        wanted = frozenset(names)

        def make() -> np.ndarray:
            table = getattr(self, _CATEGORIES[column])
            return np.isin(table, list(wanted))[getattr(self, column)]

        return self.memo(("is", column, wanted), make)

    def derived(self, name: str, mask: np.ndarray, make: Callable[[], Any]) -> Any:
        """`make()` memoised for one memoised `mask` (e.g. a scope's statistics): keyed by the mask's
        identity, which is safe because the memo holds the mask; a writable mask, which a caller
        may change, gets no memo."""
        if mask.flags.writeable:
            return make()
        held, value = self.memo((name, id(mask)), lambda: (mask, make()))
        return value if held is mask else make()

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of `ids` (-1 for an id this file does not hold)."""
        pos = np.searchsorted(self.ids, ids)
        known = pos < len(self.ids)
        known[known] = self.ids[pos[known]] == ids[known]
        return np.where(known, pos, -1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = [f for f in LexicalRows.__dataclass_fields__ if not f.startswith("_") and f != "source"]


def _empty() -> LexicalRows:
    z_i = np.zeros(0, np.int32)
    z_s = np.zeros(0, "U1")
    z_f = np.zeros(0, np.float64)
    return LexicalRows(
        np.zeros(0, np.int64), z_i, z_s, z_i, z_s, z_i, z_s, z_i, z_s, z_f, z_f, z_i, z_s,
        np.zeros(1, np.int64), z_i, z_i,
    )  # fmt: skip


_COLUMNS = (
    EmbeddingRow.id,
    EmbeddingRow.video_id,
    EmbeddingRow.kind,
    EmbeddingRow.space,
    EmbeddingRow.modality,
    EmbeddingRow.start,
    EmbeddingRow.end,
    EmbeddingRow.text,
)


def _append(base: LexicalRows, chunks: Iterable[Sequence[Any]], postings: bool = True) -> LexicalRows:
    """`base` with SQL rows (id, video_id, kind, space, modality, start, end, text) appended, read
    chunk by chunk; their ids must be larger than base's and ascending. Each chunk is tokenised into
    (term, row) pairs with counts; all pairs are merged with base's postings by one stable sort on
    the term, which keeps each term's rows ascending because new positions come after the old.
    `postings=False` (they live in PostgreSQL): the rows' token counts only, no postings."""
    codes = {c: {n: i for i, n in enumerate(getattr(base, _CATEGORIES[c]).tolist())} for c in _CATEGORIES}
    vocab = dict(base.terms)
    cols: dict[str, list[np.ndarray]] = {c: [getattr(base, c)] for c in ("ids", "start", "end", "length")}
    for c in _CATEGORIES:
        cols[c] = [getattr(base, c)]
    terms = [np.repeat(np.arange(len(base.vocab), dtype=np.int64), np.diff(base.indptr))]
    docs, tfs = [base.docs.astype(np.int64)], [base.tf]
    at = len(base)
    for rows in chunks:
        if not rows:
            continue
        m = len(rows)
        cols["ids"].append(np.array([r[0] for r in rows], np.int64))
        for i, c in enumerate(_CATEGORIES, start=1):
            code = codes[c]
            cols[c].append(np.fromiter((code.setdefault(r[i], len(code)) for r in rows), np.int32, m))
        cols["start"].append(np.array([r[5] for r in rows], np.float64))
        cols["end"].append(np.array([r[6] for r in rows], np.float64))
        lengths = np.zeros(m, np.int32)
        term_ids: list[int] = []
        doc_ids: list[int] = []
        for j, r in enumerate(rows):
            if r[4] != "text":  # BM25 ranks the text rows only, as the reference does
                continue
            toks = tokens(r[7] or "")
            lengths[j] = len(toks)
            if not postings:
                continue
            term_ids += [vocab.setdefault(t, len(vocab)) for t in toks]
            doc_ids += [j] * len(toks)
        cols["length"].append(lengths)
        if term_ids:
            # one (term, row) pair per token -> unique pairs with counts, sorted by term then row
            pairs, counts = np.unique(
                np.array(term_ids, np.int64) * m + np.array(doc_ids), return_counts=True
            )
            terms.append(pairs // m)
            docs.append(pairs % m + at)
            tfs.append(counts.astype(np.int32))
        at += m
    if at == len(base):
        return base
    all_terms = np.concatenate(terms)
    order = np.argsort(all_terms, kind="stable")
    out = {c: np.concatenate(v) for c, v in cols.items()}
    for c in _CATEGORIES:
        out[_CATEGORIES[c]] = np.array(list(codes[c]), dtype=str) if codes[c] else np.zeros(0, "U1")
    out["vocab"] = np.array(list(vocab), dtype=str) if vocab else np.zeros(0, "U1")
    out["docs"] = np.concatenate(docs)[order].astype(np.int32)
    out["tf"] = np.concatenate(tfs)[order].astype(np.int32)
    counts_per_term = np.bincount(all_terms, minlength=len(vocab))
    out["indptr"] = np.concatenate([[0], np.cumsum(counts_per_term)]).astype(np.int64)
    return LexicalRows(**out)


def _without(base: LexicalRows, keep: np.ndarray) -> LexicalRows:
    """`base` with only the rows where `keep` (N,) is set; postings filtered and renumbered (the
    vocabulary and the names arrays stay, unused entries are harmless)."""
    renumber = np.cumsum(keep) - 1
    kept = keep[base.docs]
    terms = np.repeat(np.arange(len(base.vocab), dtype=np.int64), np.diff(base.indptr))[kept]
    out = {c: getattr(base, c)[keep] for c in ("ids", "start", "end", "length", *_CATEGORIES)}
    out.update({names: getattr(base, names) for names in _CATEGORIES.values()})
    out["vocab"] = base.vocab
    out["docs"] = renumber[base.docs[kept]].astype(np.int32)
    out["tf"] = base.tf[kept]
    counts_per_term = np.bincount(terms, minlength=len(base.vocab))
    out["indptr"] = np.concatenate([[0], np.cumsum(counts_per_term)]).astype(np.int64)
    return LexicalRows(**out)


def _manifest(rows: LexicalRows) -> dict[str, int]:
    return {"count": len(rows), "max_id": int(rows.ids[-1]) if len(rows) else 0}


def _load_rows(path: Path, manifest: dict[str, Any]) -> LexicalRows | None:
    """A lexical file as written, or None when it is torn, foreign or not what `manifest` says."""
    try:
        with np.load(path, allow_pickle=False) as data:
            rows = LexicalRows(**{name: data[name] for name in _FIELDS})
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):  # torn or foreign
        return None
    return rows if manifest == _manifest(rows) else None


def _save_rows(rows: LexicalRows, tmp: Path) -> None:
    with open(tmp, "wb") as fh:
        np.savez(fh, allow_pickle=False, **rows.arrays())


class LexicalIndex:
    """The per-library lexical files under `folder`, kept in step with SQL.

    `shared`: the postings live in PostgreSQL (the `postgres` backend), written and levelled here
    alongside the files, which then hold the scoping metadata only."""

    def __init__(
        self, folder: Path, sessions: sessionmaker[Session], shared: FullTextPostings | None = None
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sessions = sessions
        self.shared = shared
        self._files: DerivedFiles[LexicalRows] = DerivedFiles(_load_rows, _save_rows)

    def path(self, library_id: int) -> Path:
        """The library's file; a scoping-only one has a name of its own, so that a home used with
        both backends never reads one kind as the other."""
        return self.folder / (f"lib{library_id}.npz" if self.shared is None else f"lib{library_id}-scope.npz")

    @property
    def _postings(self) -> bool:
        """Whether the files hold the postings (they do unless PostgreSQL holds them)."""
        return self.shared is None

    def _sql_state(self, library_id: int) -> dict[str, int]:
        with self._sessions() as s:
            count, top = s.execute(
                select(func.count(), func.coalesce(func.max(EmbeddingRow.id), 0)).where(
                    EmbeddingRow.library_id == library_id, EmbeddingRow.retained
                )
            ).one()
        return {"count": int(count), "max_id": int(top)}

    def _rows_after(self, library_id: int, after: int) -> Iterator[Sequence[Any]]:
        """The library's rows with id > `after`, in id order, in chunks."""
        with self._sessions() as s:
            result = s.execute(
                select(*_COLUMNS)
                .where(EmbeddingRow.library_id == library_id, EmbeddingRow.id > after, EmbeddingRow.retained)
                .order_by(EmbeddingRow.id)
                .execution_options(yield_per=_CHUNK)
            )
            yield from result.partitions(_CHUNK)

    def _write(self, path: Path, rows: LexicalRows) -> None:
        self._files.write(path, rows, _manifest(rows))

    def rebuild(self, library_id: int) -> int:
        """Write the library's file from SQL (and level its PostgreSQL postings); returns the number
        of rows (0: the file is removed)."""
        if self.shared is not None:
            self.shared.rebuild(library_id)
        return self._rebuild_file(library_id)

    def _rebuild_file(self, library_id: int) -> int:
        path = self.path(library_id)
        rows = _append(_empty(), self._rows_after(library_id, 0), self._postings)
        if not len(rows):
            self._files.remove(path)
            return 0
        self._write(path, rows)
        return len(rows)

    def add(self, library_id: int, ids: Sequence[int] = ()) -> None:
        """Bring the file in step after rows were committed (`ids`: the ones just written, if known).

        Appends the rows with larger ids than the file's when that accounts for every row SQL has
        (and none of `ids` is at or below the file's largest id); otherwise rebuilds from SQL.
        PostgreSQL's postings, shared by every host, are written first.
        """
        if self.shared is not None:
            self.shared.add(library_id, ids)
        path = self.path(library_id)
        with file_lock(path):
            self._sync(library_id, path, self._sql_state(library_id), min(ids, default=None))

    def remove_video(self, library_id: int, video_id: str) -> None:
        """Drop a deleted video's rows from the file (its SQL rows must be gone already): a filter
        of the arrays, not a rebuild; rebuilds when the result still disagrees with SQL. (Its
        PostgreSQL postings went with its rows: `ON DELETE CASCADE`.)"""
        path = self.path(library_id)
        with file_lock(path):
            truth = self._sql_state(library_id)
            found = self._files.read(path)
            if found is None or truth["count"] == 0:
                self._rebuild_file(library_id)
                return
            rows = _without(found.value, ~found.value.is_("video", [video_id]))
            if _manifest(rows) == truth:
                self._write(path, rows)
            else:
                self._rebuild_file(library_id)

    def _sync(self, library_id: int, path: Path, truth: dict[str, int], lowest_new: int | None) -> None:
        found = self._files.read(path)
        if found is not None and found.manifest == truth and lowest_new is None:
            return
        if found is not None and (lowest_new is None or lowest_new > found.manifest["max_id"]):
            grown = _append(
                found.value, self._rows_after(library_id, found.manifest["max_id"]), self._postings
            )
            if len(grown) == truth["count"]:
                self._write(path, grown)
                return
        self._rebuild_file(library_id)

    def load(self, library_id: int) -> LexicalRows | None:
        """The library's rows, brought in step with SQL first; None when it has none."""
        path = self.path(library_id)
        top_all = table_top(self._sessions)
        cached = self._files.verified(path, top_all)
        if cached:
            return cached.value
        if self.shared is not None:
            self.shared.level(library_id, top_all)
        truth = self._sql_state(library_id)
        if truth["count"] == 0:
            return None
        found: Derived[LexicalRows] | None = self._files.read(path)
        if found is None or found.manifest != truth:
            with file_lock(path):
                self._sync(library_id, path, truth, None)
            found = self._files.read(path)
        if found is None:
            return None
        found.verified_top = top_all
        if self.shared is not None and found.value.source is None:
            shared = self.shared
            found.value.source = lambda rows, terms: shared.postings(library_id, rows, terms)
        return found.value

    def recheck(self) -> None:
        """Compare every cached file (and PostgreSQL's postings) with SQL again on its next use (a
        caller saw a row vanish)."""
        self._files.recheck()
        if self.shared is not None:
            self.shared.recheck()

    def clear(self) -> None:
        """Remove every file (and empty PostgreSQL's postings); `rebuild` makes them again."""
        for p in self.folder.glob("lib*.npz*"):
            p.unlink()
        self._files.loaded.clear()
        if self.shared is not None:
            self.shared.clear()


def bm25_top(
    parts: Sequence[tuple[LexicalRows, np.ndarray]], query: Sequence[str], k1: float, b: float, top: int
) -> list[tuple[int, float]]:
    """The `top` best (row id, BM25 score > 0) for the tokenised `query`, best first (ties: lower id).

    `parts` pairs each library's rows with a mask (N,) of the rows in scope; the text rows in scope
    are the collection, pooled over the parts. Each row's score is built term by term in query order
    with the reference's arithmetic, so it equals `reasoning.search.bm25` over the same rows.
    """
    if not query or top < 1:
        return []

    def text_scope(rows: LexicalRows, mask: np.ndarray) -> tuple[np.ndarray, int, int]:
        m = mask & rows.is_("modality", ["text"])
        return m, int(np.count_nonzero(m)), int(rows.length.sum(where=m))

    stats = [rows.derived("bm25", mask, lambda: text_scope(rows, mask)) for rows, mask in parts]  # noqa: B023
    in_scope = [m for m, _, _ in stats]
    n = sum(c for _, c, _ in stats)
    if n == 0:
        return []
    avg = sum(length for _, _, length in stats) / n or 1.0

    terms = sorted(set(query))
    looked_up = [rows.lookup(terms) for rows, _ in parts]  # from the arrays or PostgreSQL, per part
    hits: dict[str, list[Postings]] = {}  # term -> per part (positions, tf)
    idf: dict[str, float] = {}
    for term in terms:
        hits[term] = []
        for found, m in zip(looked_up, in_scope, strict=True):
            docs, tf = found[term]
            keep = m[docs]
            hits[term].append((docs[keep], tf[keep]))
        df = sum(len(d) for d, _ in hits[term])
        idf[term] = math.log(1 + (n - df + 0.5) / (df + 0.5))

    found_ids, found_scores = [], []
    for p, (rows, _) in enumerate(parts):
        # dense accumulators, as long postings make sorting them dearer; only the pages a posting
        # touches are ever written (np.zeros maps zero pages lazily), and the byte mask of the rows
        # hit is what is scanned, not the 8-byte scores
        scores = np.zeros(len(rows), np.float64)
        hit = np.zeros(len(rows), bool)
        for term in query:  # in query order, repeats included, as the reference sums
            docs, tf = hits[term][p]
            norm = k1 * (1 - b + b * rows.length[docs] / avg)
            scores[docs] += idf[term] * tf * (k1 + 1) / (tf + norm)
            hit[docs] = True
        pos = np.flatnonzero(hit)
        pos = pos[scores[pos] > 0]
        found_ids.append(rows.ids[pos])
        found_scores.append(scores[pos])
    if not found_ids:
        return []
    ids, scores = np.concatenate(found_ids), np.concatenate(found_scores)
    if len(scores) > top:
        floor = np.partition(scores, len(scores) - top)[len(scores) - top]
        keep = scores >= floor  # ties at the floor stay, so the id tie-break below is exact
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:top]
    return [(int(ids[j]), float(scores[j])) for j in order]
