"""The catalog (SQLite and PostgreSQL, migrated by Alembic) and the FAISS indexes derived from it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from memory import EmbeddingRow, IngestJob, Library, Segment, Store, Tag, TranscriptCue, Video
from memory.catalog import Base
from memory.runtime.text import SentenceEmbedder
from memory.vectors import vector_bytes
from tests.helpers import FAISS_FILES

SPACE = "text:all-MiniLM-L6-v2"

# Two videos' transcript windows, and for each a paraphrase that shares no key word with it.
VIDEO_A = [
    "a cat sleeps curled up on the sofa all afternoon",
    "the stock market fell sharply after the bank report",
    "heavy rain flooded the streets of the old town",
]
VIDEO_B = [
    "the chef slices onions and fries them in butter",
    "a rocket lifts off the launch pad and climbs into orbit",
    "children build a sandcastle at the beach",
]
PARAPHRASES = {
    "a kitten naps on the couch": VIDEO_A[0],
    "share prices dropped on wall street": VIDEO_A[1],
    "a spacecraft blasted into space": VIDEO_B[1],
    "cooking a meal in a frying pan": VIDEO_B[0],
}


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder()


@pytest.fixture(scope="module")
def vectors(embedder: SentenceEmbedder) -> dict[str, np.ndarray]:
    texts = VIDEO_A + VIDEO_B + list(PARAPHRASES)
    return dict(zip(texts, embedder.embed(texts), strict=True))


def add_video(s, library: Library, name: str) -> Video:  # type: ignore[no-untyped-def]
    video = Video(library_id=library.id, uri=f"/media/{name}.mp4", title=name, content_hash=f"sha-{name}")
    s.add(video)
    s.flush()
    return video


def add_windows(
    store: Store, library_name: str, video_name: str, texts: list[str], vectors
) -> tuple[int, str, dict[str, int]]:  # type: ignore[no-untyped-def]
    """One video with a root segment, shots, cues, a job and one embedding per text; vectors added."""
    with store.session() as s:
        lib = store.library(s, library_name)
        video = add_video(s, lib, video_name)
        root = Segment(video_id=video.id, level="video", ordinal=0, start=0.0, end=10.0 * len(texts))
        s.add(root)
        s.flush()
        rows: dict[str, EmbeddingRow] = {}
        for i, t in enumerate(texts):
            shot = Segment(
                video_id=video.id,
                level="shot",
                ordinal=i,
                start=10.0 * i,
                end=10.0 * (i + 1),
                parent_id=root.id,
            )
            s.add(shot)
            s.flush()
            s.add(
                TranscriptCue(video_id=video.id, start=10.0 * i + 1, end=10.0 * i + 4, text=t, source="asr")
            )
            rows[t] = EmbeddingRow(
                library_id=lib.id,
                video_id=video.id,
                segment_id=shot.id,
                kind="window",
                start=10.0 * i,
                end=10.0 * (i + 1),
                text=t,
                modality="text",
                model="all-MiniLM-L6-v2",
                space=SPACE,
                vector=vector_bytes(vectors[t]),
            )
            s.add(rows[t])
        s.add(IngestJob(video_id=video.id, status="done", stages_done=["shots", "transcript", "embeddings"]))
        s.flush()
        ids = {t: r.id for t, r in rows.items()}
        lib_id, video_id = lib.id, video.id
    store.vectors.add(lib_id, SPACE, list(ids.values()), np.stack([vectors[t] for t in ids]))
    return lib_id, video_id, ids


@pytest.fixture
def two_videos(store: Store, vectors: dict[str, np.ndarray]) -> tuple[int, str, str, dict[str, int]]:
    lib, a, ids_a = add_windows(store, "main", "a", VIDEO_A, vectors)
    lib_b, b, ids_b = add_windows(store, "main", "b", VIDEO_B, vectors)
    assert lib_b == lib
    return lib, a, b, {**ids_a, **ids_b}


def count(store: Store, model, **where) -> int:  # type: ignore[no-untyped-def]
    with store.session() as s:
        q = select(func.count()).select_from(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return int(s.scalar(q) or 0)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# --------------------------------------------------------------------------- schema


def test_migrations_create_every_table_and_column(store: Store) -> None:
    insp = inspect(store.engine)
    tables = set(insp.get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    for name, table in Base.metadata.tables.items():
        columns = {c["name"] for c in insp.get_columns(name)}
        assert columns == {c.name for c in table.columns}, f"{name}: migration and model disagree"
    assert store.engine.dialect.name in ("sqlite", "postgresql")


def test_opening_the_store_again_is_idempotent(store: Store) -> None:
    with store.session() as s:
        lib = store.library(s, "kept")
        add_video(s, lib, "v")
    with store.engine.connect() as c:
        before = c.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    again = Store(store.home, store.url)
    try:
        with again.engine.connect() as c:
            assert c.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == before
        assert len(before) == 1
        with again.session() as s:
            assert [v.title for v in again.library(s, "kept", create=False).videos] == ["v"]
    finally:
        again.close()


def test_library_lookup(store: Store) -> None:
    from memory import StoreError

    with store.session() as s:
        first = store.library(s, "talks")
        assert store.library(s, "talks").id == first.id  # found, not created twice
        with pytest.raises(StoreError, match="no library"):
            store.library(s, "absent", create=False)
    assert count(store, Library) == 1


def test_two_processes_making_one_new_library_get_the_same_one(store: Store) -> None:
    """The first maker holds its new row uncommitted; the second, blocked on the unique name until
    the first commits, loses the race and reads the winner's row instead of failing (two workers or
    two Ray tasks ingesting into a new library at once)."""
    import threading

    got: list[object] = []
    with store.session() as first:
        mine = store.library(first, "race").id

        def second() -> None:
            try:
                with store.session() as s:
                    got.append(store.library(s, "race").id)
            except Exception as e:  # noqa: BLE001 (asserted below)
                got.append(e)

        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.5)  # the second has looked (nothing committed yet) and waits on its insert
    other.join(timeout=30)
    assert got == [mine] and count(store, Library) == 1


def test_hosts_opening_a_new_postgres_database_at_once_migrate_it_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Several hosts (or Ray workers) opening one empty database together: one brings the schema up
    to date while the others wait for it, instead of two `CREATE TABLE`s colliding in PostgreSQL's
    catalog (which failed a Ray batch's first tasks)."""
    import threading

    errors: list[BaseException] = []
    stores: list[Store] = []
    start = threading.Barrier(4)

    def open_store(i: int) -> None:
        try:
            start.wait()
            stores.append(Store(tmp_path / f"host{i}", postgres_url))
        except BaseException as e:  # noqa: BLE001 (asserted below)
            errors.append(e)

    threads = [threading.Thread(target=open_store, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == [] and len(stores) == 4
        with stores[0].engine.connect() as c:
            assert len(c.execute(text("SELECT version_num FROM alembic_version")).all()) == 1
    finally:
        for s in stores:
            s.close()


def test_video_is_unique_per_library_and_content(store: Store) -> None:
    with store.session() as s:
        a, b = store.library(s, "a"), store.library(s, "b")
        add_video(s, a, "same")
        add_video(s, b, "same")  # the same bytes in another library are fine
    with pytest.raises(IntegrityError), store.session() as s:
        add_video(s, store.library(s, "a"), "same")
    assert count(store, Video) == 2  # the failed unit of work left nothing behind


# --------------------------------------------------------------------------- tags of spans


def add_span(s, video: Video, level: str, start: float, end: float, parent: Segment | None) -> Segment:  # type: ignore[no-untyped-def]
    seg = Segment(
        video_id=video.id,
        level=level,
        ordinal=0,
        start=start,
        end=end,
        parent_id=parent.id if parent else None,
    )
    s.add(seg)
    s.flush()
    return seg


def add_tags(s, shot: Segment, *tags: tuple[str, str, float, int]) -> None:  # type: ignore[no-untyped-def]
    for kind, name, score, n in tags:
        s.add(
            Tag(
                video_id=shot.video_id,
                segment_id=shot.id,
                start=shot.start,
                end=shot.end,
                kind=kind,
                name=name,
                score=score,
                count=n,
            )
        )


def test_scenes_and_chapters_carry_their_shots_tags_merged(store: Store) -> None:
    """root > chapters c1 [0, 30), c2 [30, 50) > scenes s1, s2 (in c1), s3 (in c2) > shots 1-5."""
    with store.session() as s:
        lib = store.library(s, "main")
        video = add_video(s, lib, "cat")
        root = add_span(s, video, "video", 0, 50, None)
        c1, c2 = add_span(s, video, "chapter", 0, 30, root), add_span(s, video, "chapter", 30, 50, root)
        s1, s2 = add_span(s, video, "scene", 0, 20, c1), add_span(s, video, "scene", 20, 30, c1)
        s3 = add_span(s, video, "scene", 30, 50, c2)
        shots = [
            add_span(s, video, "shot", 10 * i, 10 * (i + 1), p) for i, p in enumerate([s1, s1, s2, s3, s3])
        ]
        add_tags(s, shots[0], ("label", "tabby", 0.4, 1), ("person", "person", 0.9, 1))
        add_tags(
            s, shots[1], ("label", "tabby", 0.6, 1), ("label", "sofa", 0.35, 1), ("person", "person", 1.5, 3)
        )
        add_tags(s, shots[2], ("label", "tabby", 0.3, 1), ("face", "face", 0.7, 2))
        add_tags(s, shots[3], *[("label", f"l{i}", 0.31 + 0.01 * i, 1) for i in range(10)])  # over the cap
        other = add_span(s, add_video(s, lib, "dog"), "shot", 0, 10, None)
        add_tags(s, other, ("label", "tabby", 0.99, 1))  # another video's: never counted
        ids = {"root": root.id, "c1": c1.id, "c2": c2.id, "s1": s1.id, "s2": s2.id, "s3": s3.id}
        ids |= {f"shot{i + 1}": sh.id for i, sh in enumerate(shots)}
        vid = video.id

    with store.session() as s:
        got = store.segment_tags(s, vid)
        two = store.segment_tags(s, vid, limit=2)

    def brief(span: str, tags: dict[int, list[dict]] = got) -> list[tuple]:  # type: ignore[type-arg]
        return [(t["kind"], t["name"], t["score"], t["count"], t["shots"]) for t in tags[ids[span]]]

    # a shot: its own, strongest first, each in one shot
    assert brief("shot2") == [
        ("person", "person", 1.5, 3, 1),
        ("label", "tabby", 0.6, 1, 1),
        ("label", "sofa", 0.35, 1, 1),
    ]
    # a scene: one per (kind, name), the highest score and count any shot gave, shots counted
    assert brief("s1") == [
        ("person", "person", 1.5, 3, 2),
        ("label", "tabby", 0.6, 1, 2),
        ("label", "sofa", 0.35, 1, 1),
    ]
    assert brief("s2") == [("face", "face", 0.7, 2, 1), ("label", "tabby", 0.3, 1, 1)]
    # a chapter: its scenes' shots, through the parent links
    assert brief("c1") == [
        ("person", "person", 1.5, 3, 2),
        ("face", "face", 0.7, 2, 1),
        ("label", "tabby", 0.6, 1, 3),
        ("label", "sofa", 0.35, 1, 1),
    ]
    # capped at SPAN_TAG_LIMIT (8), keeping the strongest; a shot keeps all of its own
    assert [t["name"] for t in got[ids["s3"]]] == [f"l{i}" for i in range(9, 1, -1)]
    assert got[ids["c2"]] == got[ids["s3"]] and len(got[ids["shot4"]]) == 10
    assert [t["name"] for t in got[ids["root"]]] == ["person", "face", "tabby", "l9", "l8", "l7", "l6", "l5"]
    assert ids["shot5"] not in got  # no tags, no entry
    assert brief("c1", two) == [("person", "person", 1.5, 3, 2), ("face", "face", 0.7, 2, 1)]
    assert len(two[ids["shot4"]]) == 10  # the limit is for spans; a shot's own list is whole


# --------------------------------------------------------------------------- delete cascades


def test_deleting_a_video_removes_what_it_owns_and_nothing_else(
    store: Store, two_videos: tuple[int, str, str, dict[str, int]], vectors: dict[str, np.ndarray]
) -> None:
    lib, a, b, ids = two_videos
    owned = {Segment: 1 + len(VIDEO_A), TranscriptCue: len(VIDEO_A), EmbeddingRow: len(VIDEO_A), IngestJob: 1}
    for model, n in owned.items():
        assert count(store, model, video_id=a) == n
        assert count(store, model, video_id=b) == n

    store.delete_video(a)

    for model, n in owned.items():
        assert count(store, model, video_id=a) == 0, model.__tablename__
        assert count(store, model, video_id=b) == n, model.__tablename__
    assert count(store, Video) == 1 and count(store, Library) == 1
    # the vectors went with the rows: a's sentence now finds only b's windows
    hits = store.vectors.search(lib, SPACE, vectors[VIDEO_A[0]], k=10)
    assert {i for i, _ in hits} == {ids[t] for t in VIDEO_B}


def test_deleting_an_unknown_video(store: Store) -> None:
    from memory import StoreError

    with pytest.raises(StoreError, match="no video"):
        store.delete_video("nope")


# --------------------------------------------------------------------------- vectors


def test_search_returns_the_matching_window_first(
    store: Store, two_videos: tuple[int, str, str, dict[str, int]], vectors: dict[str, np.ndarray]
) -> None:
    lib, _, _, ids = two_videos
    for query, source in PARAPHRASES.items():
        hits = store.vectors.search(lib, SPACE, vectors[query], k=3)
        assert hits[0][0] == ids[source], f"{query!r} found {hits}, expected the row of {source!r}"
        assert [sc for _, sc in hits] == sorted((sc for _, sc in hits), reverse=True)
    # a stored vector finds itself with cosine 1
    hits = store.vectors.search(lib, SPACE, vectors[VIDEO_B[2]], k=1)
    assert hits[0][0] == ids[VIDEO_B[2]]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    # the scores are the cosines of the stored vectors
    hits = store.vectors.search(lib, SPACE, vectors["a kitten naps on the couch"], k=6)
    by_id = {ids[t]: float(vectors[t] @ vectors["a kitten naps on the couch"]) for t in VIDEO_A + VIDEO_B}
    for i, score in hits:
        assert score == pytest.approx(by_id[i], abs=1e-5)


def test_search_restricted_to_allowed_ids(
    store: Store, two_videos: tuple[int, str, str, dict[str, int]], vectors: dict[str, np.ndarray]
) -> None:
    lib, _, b, ids = two_videos
    with store.session() as s:
        only_b = list(s.scalars(select(EmbeddingRow.id).where(EmbeddingRow.video_id == b)))
    assert sorted(only_b) == sorted(ids[t] for t in VIDEO_B)
    query = vectors["a kitten naps on the couch"]  # best match lives in video a
    hits = store.vectors.search(lib, SPACE, query, k=10, allowed=only_b)
    assert {i for i, _ in hits} == set(only_b)
    best_b = max(VIDEO_B, key=lambda t: float(vectors[t] @ query))
    assert hits[0][0] == ids[best_b]
    assert store.vectors.search(lib, SPACE, query, k=10, allowed=[]) == []
    # other libraries and spaces are separate indexes
    assert store.vectors.search(lib + 1000, SPACE, query, k=10) == []
    assert store.vectors.search(lib, "text:another-model", query, k=10) == []


def _ids(hits: list[list[tuple[int, float]]]) -> list[list[int]]:
    return [[i for i, _ in h] for h in hits]


def _scores(hits: list[list[tuple[int, float]]]) -> list[list[float]]:
    return [[sc for _, sc in h] for h in hits]


def _all_hits(store: Store, lib: int, vectors: dict[str, np.ndarray]) -> list[list[tuple[int, float]]]:
    return [store.vectors.search(lib, SPACE, vectors[q], k=6) for q in PARAPHRASES]


@FAISS_FILES
def test_deleted_index_files_are_rebuilt_from_sql(
    store: Store, two_videos: tuple[int, str, str, dict[str, int]], vectors: dict[str, np.ndarray]
) -> None:
    lib = two_videos[0]
    before = _all_hits(store, lib, vectors)
    path = store.vectors.path(lib, SPACE)
    assert path.is_file() and path.with_name(path.name + ".json").is_file()
    for p in store.vectors.folder.glob("*.faiss*"):
        p.unlink()
    after = _all_hits(store, lib, vectors)
    assert _ids(after) == _ids(before)
    np.testing.assert_allclose(_scores(after), _scores(before), atol=1e-6)
    assert path.is_file()
    # a fresh process (new Store, empty cache) sees the same
    other = Store(store.home, store.url)
    try:
        assert _ids(_all_hits(other, lib, vectors)) == _ids(before)
    finally:
        other.close()


@FAISS_FILES
def test_stale_manifest_triggers_a_rebuild(
    store: Store, two_videos: tuple[int, str, str, dict[str, int]], vectors: dict[str, np.ndarray]
) -> None:
    lib = two_videos[0]
    before = _all_hits(store, lib, vectors)
    path = store.vectors.path(lib, SPACE)
    manifest = path.with_name(path.name + ".json")
    truth = json.loads(manifest.read_text())
    assert truth == {"count": len(VIDEO_A) + len(VIDEO_B), "max_id": max(two_videos[3].values())}
    manifest.write_text(json.dumps({"count": truth["count"] - 1, "max_id": truth["max_id"]}))
    after = _all_hits(store, lib, vectors)
    assert _ids(after) == _ids(before)
    assert json.loads(manifest.read_text()) == truth


def test_rows_committed_without_their_vectors_are_picked_up(
    store: Store, two_videos: tuple[int, str, str, dict[str, int]], vectors: dict[str, np.ndarray], embedder
) -> None:
    """A crash between the SQL commit and the FAISS write: SQL wins on the next search."""
    lib, a, _, _ = two_videos
    sentence = "an orchestra plays a symphony in the concert hall"
    with store.session() as s:
        row = EmbeddingRow(
            library_id=lib,
            video_id=a,
            kind="window",
            start=40.0,
            end=50.0,
            text=sentence,
            modality="text",
            model="all-MiniLM-L6-v2",
            space=SPACE,
            vector=vector_bytes(embedder.embed([sentence])[0]),
        )
        s.add(row)
        s.flush()
        new_id = row.id
    hits = store.vectors.search(lib, SPACE, embedder.embed(["musicians performing classical music"])[0], k=1)
    assert hits[0][0] == new_id


@FAISS_FILES
def test_corrupt_index_file_is_rebuilt_from_sql(
    store: Store, two_videos: tuple[int, str, str, dict[str, int]], vectors: dict[str, np.ndarray]
) -> None:
    """SQL is the source of truth: an unreadable index file (torn copy, bad disk) is rebuilt, not fatal."""
    lib = two_videos[0]
    before = _all_hits(store, lib, vectors)
    path = store.vectors.path(lib, SPACE)
    path.write_bytes(path.read_bytes()[:100])  # the manifest still says all is well
    other = Store(store.home, store.url)  # a new process: nothing cached
    try:
        after = _all_hits(other, lib, vectors)
    finally:
        other.close()
    assert _ids(after) == _ids(before)


@FAISS_FILES
def test_reindex_counts_equal_sql_rows(store: Store, vectors: dict[str, np.ndarray]) -> None:
    add_windows(store, "main", "a", VIDEO_A, vectors)
    add_windows(store, "main", "b", VIDEO_B, vectors)
    add_windows(store, "other", "c", VIDEO_B[:2], vectors)
    rng = np.random.default_rng(0)
    with store.session() as s:  # a second space (another model) in the first library
        lib = store.library(s, "main", create=False)
        video = s.scalars(select(Video).where(Video.library_id == lib.id)).first()
        assert video is not None
        for i in range(4):
            v = rng.standard_normal(8).astype(np.float32)
            s.add(
                EmbeddingRow(
                    library_id=lib.id,
                    video_id=video.id,
                    kind="shot",
                    start=float(i),
                    end=float(i + 1),
                    text="",
                    modality="visual",
                    model="tiny",
                    space="visual:tiny",
                    vector=vector_bytes(v / np.linalg.norm(v)),
                )
            )
    stray = store.vectors.folder / "lib999-text_gone.faiss"
    stray.write_bytes(b"left over from a deleted library")

    counts = store.reindex()

    with store.session() as s:
        truth = s.execute(
            select(EmbeddingRow.library_id, EmbeddingRow.space, func.count()).group_by(
                EmbeddingRow.library_id, EmbeddingRow.space
            )
        ).all()
    assert len(truth) == 3
    assert counts == {store.vectors.path(lib_id, space).name: n for lib_id, space, n in truth}
    for lib_id, space, n in truth:
        path = store.vectors.path(lib_id, space)
        assert json.loads(path.with_name(path.name + ".json").read_text())["count"] == n
    assert not stray.exists()  # indexes are rebuilt from SQL alone
    assert leftovers(store.vectors.folder) == []


@FAISS_FILES
def test_index_writes_leave_no_temporary_files(
    store: Store, two_videos: tuple[int, str, str, dict[str, int]], vectors: dict[str, np.ndarray]
) -> None:
    lib, a, _, _ = two_videos
    folder = store.vectors.folder
    assert leftovers(folder) == []  # after two appends
    assert store.vectors.rebuild(lib, SPACE) == len(VIDEO_A) + len(VIDEO_B)
    assert leftovers(folder) == []
    store.delete_video(a)
    assert leftovers(folder) == []
    names = {p.name for p in folder.iterdir()}
    path = store.vectors.path(lib, SPACE)
    assert {path.name, path.name + ".json"} <= names
    assert names <= {path.name, path.name + ".json", path.with_suffix(".lock").name}
