"""Open the catalog (SQLite by default, PostgreSQL by URL), migrate it, and hand out sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, sessionmaker

from memory.bank import forget, hand_over
from memory.catalog import EmbeddingRow, Library, Segment, Tag, Video
from memory.derived import file_lock
from memory.fulltext import FullTextPostings
from memory.lexical import LexicalIndex
from memory.pgvector import PgVectorIndex
from memory.tags import SPAN_TAG_LIMIT, aggregate_tags, tag_json
from memory.vectors import VectorIndex

MIGRATIONS = Path(__file__).parent / "migrations"
_MEMORY_LOCK = 0x76696D00_00000000 >> 1
"""Advisory lock keys of the libraries' memories: this plus the library id (a range of its own)."""


class StoreError(Exception):
    """A catalog operation that cannot be done as asked (unknown library, unknown video...)."""


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'vidmem.db'}"


if TYPE_CHECKING:
    from alembic.config import Config


_MIGRATE_LOCK = 0x76696D6D
"""PostgreSQL advisory lock held while the schema is brought up to date: the others wait, then find
it current (two `CREATE TABLE`s at once collide in PostgreSQL's catalog)."""


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    url = engine.url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # an escaped password or socket path
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    from alembic import command

    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # hosts and Ray workers starting on a new database at once:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK})  # one migrates
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """The catalog plus the indexes derived from it: FAISS per (library, space), lexical per library.

    `home` holds the SQLite file (when no URL is given) and the `vectors/` and `lexical/` folders.
    `index="postgres"` keeps the vectors (memory.pgvector) and the lexical postings (memory.fulltext)
    in the catalog's PostgreSQL instead, so that several hosts search one index; each host's
    `lexical/` files then hold the rows' scoping metadata only.
    """

    def __init__(self, home: Path, url: str | None = None, index: str = "files") -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.url = url or sqlite_url(self.home)
        self.engine = create_engine(self.url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.vectors: VectorIndex | PgVectorIndex
        if index == "postgres":  # vectors in the catalog's PostgreSQL (pgvector): one index for every host
            self.vectors = PgVectorIndex(self.engine, self._sessions)
        elif index == "files":
            self.vectors = VectorIndex(self.home / "vectors", self._sessions)
        else:
            raise StoreError(f"unknown index backend {index!r}: files or postgres")
        self.index = index  # "files" or "postgres": where the search indexes live
        shared = FullTextPostings(self.engine, self._sessions) if index == "postgres" else None
        self.lexical = LexicalIndex(self.home / "lexical", self._sessions, shared)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    def library(self, session: Session, name: str, create: bool = True) -> Library:
        """The library called `name`, made when missing (`create`). Two processes making the same
        new library at once (two workers, two Ray tasks) both get the one that won: the insert runs
        in a savepoint, and the loser reads the winner's row."""
        lib = session.scalar(select(Library).where(Library.name == name))
        if lib is None:
            if not create:
                raise StoreError(f"no library named {name!r}; `vidmem libraries` lists them")
            try:
                with session.begin_nested():
                    lib = Library(name=name)
                    session.add(lib)
            except IntegrityError:
                lib = session.scalar(select(Library).where(Library.name == name))
                if lib is None:
                    raise
        return lib

    def get_video(self, session: Session, video_id: str) -> Video:
        video = session.get(Video, video_id)
        if video is None:
            raise StoreError(f"no video with id {video_id!r}; `vidmem list` shows the ids")
        return video

    def video_in(self, session: Session, video_id: str, library: str | None) -> Video | None:
        """The video, if it exists and (given `library`) belongs to it: a video of another library
        is as absent as one that does not exist."""
        video = session.get(Video, video_id)
        if video is None or (library is not None and video.library.name != library):
            return None
        return video

    @contextmanager
    def memory_lock(self, library_id: int) -> Iterator[None]:
        """One writer of a library's memory at a time: a file lock for the processes of this host,
        and on PostgreSQL an advisory lock for those of every host sharing the catalog."""
        with file_lock(self.home / f"memory-lib{library_id}"):
            if self.engine.dialect.name != "postgresql":
                yield
                return
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MEMORY_LOCK + library_id})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MEMORY_LOCK + library_id})
                    conn.commit()

    def segment_tags(
        self, session: Session, video_id: str, limit: int = SPAN_TAG_LIMIT
    ) -> dict[int, list[dict[str, Any]]]:
        """The tags of a video's segments by segment id: a shot's own, strongest first; a scene's,
        chapter's or the root's those of the shots under it (by the segments' parent links),
        merged by `aggregate_tags` and cut to `limit`. A segment with no tag has no entry."""
        parents = dict(
            session.execute(select(Segment.id, Segment.parent_id).where(Segment.video_id == video_id)).all()
        )
        rows = session.scalars(
            select(Tag).where(Tag.video_id == video_id).order_by(Tag.score.desc(), Tag.kind, Tag.name)
        )
        own: dict[int, list[dict[str, Any]]] = {}
        for tag in rows:
            if tag.segment_id is not None:
                own.setdefault(tag.segment_id, []).append(tag_json(tag))
        under: dict[int, list[dict[str, Any]]] = {}  # span id -> the tags of every shot below it
        for shot, tags in own.items():
            span, seen = parents.get(shot), {shot}
            while span is not None and span not in seen:  # `seen`: a cycle cannot hang a request
                under.setdefault(span, []).extend(tags)
                seen.add(span)
                span = parents.get(span)
        return {**own, **{span: aggregate_tags(tags, limit) for span, tags in under.items()}}

    # --- catalog queries the CLI and the API share (each its own unit of work; rows come back
    # detached, a video with its `library` loaded so that `Video.to_json()` works on it)

    def libraries(self) -> list[tuple[Library, int]]:
        """Every library with the number of videos it holds, by name."""
        with self.session() as s:
            rows = s.execute(
                select(Library, func.count(Video.id))
                .outerjoin(Video, Video.library_id == Library.id)
                .group_by(Library.id)
                .order_by(Library.name)
            ).all()
        return [(lib, n) for lib, n in rows]

    def find_library(self, name: str) -> Library | None:
        with self.session() as s:
            return s.scalar(select(Library).where(Library.name == name))

    def create_library(self, name: str) -> Library:
        """A new, empty library; `StoreError` when one of that name exists."""
        with self.session() as s:
            if s.scalar(select(Library.id).where(Library.name == name)) is not None:
                raise StoreError(f"a library named {name!r} exists")
            return self.library(s, name)

    def videos(self, library: str) -> list[Video]:
        """The videos of a library, oldest first; `StoreError` for an unknown library."""
        with self.session() as s:
            lib = self.library(s, library, create=False)
            query = select(Video).options(joinedload(Video.library)).where(Video.library_id == lib.id)
            return list(s.scalars(query.order_by(Video.created_at)))

    def find_video(self, video_id: str) -> Video | None:
        with self.session() as s:
            return s.scalar(select(Video).options(joinedload(Video.library)).where(Video.id == video_id))

    def ping(self) -> None:
        """Raise unless the catalog answers (readiness)."""
        with self.session() as s:
            s.execute(text("SELECT 1"))

    def delete_video(self, video_id: str) -> None:
        """Remove a video, all rows it owns and its vectors; nothing else changes."""
        with self.session() as s:
            video = self.get_video(s, video_id)
            library_id = video.library_id
            spaces = set(s.scalars(select(EmbeddingRow.space).where(EmbeddingRow.video_id == video_id)))
            handed = hand_over(s, video_id)  # its exemplars of repeats seen elsewhere pass to those
            s.flush()
            s.delete(video)
        if handed:
            with self.session() as s:
                spaces |= set(
                    s.scalars(select(EmbeddingRow.space).where(EmbeddingRow.library_id == library_id))
                )
        for space in spaces:
            self.vectors.rebuild(library_id, space)
        if handed:
            self.lexical.rebuild(library_id)
        elif spaces:
            self.lexical.remove_video(library_id, video_id)

    def drop_library_if_empty(self, library_id: int) -> None:
        """Remove a library that holds no video (undoing a failed first ingestion into it)."""
        with self.session() as s:
            lib = s.get(Library, library_id)
            if (
                lib is not None
                and s.scalar(select(func.count(Video.id)).where(Video.library_id == library_id)) == 0
            ):
                s.delete(lib)

    def reindex(self, forget_memory: bool = False) -> dict[str, int]:
        """Rebuild every FAISS index and lexical file from the SQL rows; returns vectors per FAISS file.

        `forget_memory`: first empty every library's memory, so the indexes hold every row again
        (what the memory folded, skipped or evicted included)."""
        with self.session() as s:
            if forget_memory:
                for lib in s.scalars(select(Library.id)):
                    forget(s, lib)
        with self.session() as s:
            pairs = s.execute(
                select(EmbeddingRow.library_id, EmbeddingRow.space, func.count()).group_by(
                    EmbeddingRow.library_id, EmbeddingRow.space
                )
            ).all()
        self.vectors.clear()
        self.lexical.clear()
        for lib in sorted({lib for lib, _, _ in pairs}):
            self.lexical.rebuild(lib)
        return {
            self.vectors.path(lib, space).name: self.vectors.rebuild(lib, space) for lib, space, _ in pairs
        }

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
