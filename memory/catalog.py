"""The catalog: SQLAlchemy 2 typed models. SQL is the source of truth; FAISS is derived from it.

Times are float seconds from the start of the media. Every table that belongs to a video cascades
on delete, so removing a video removes everything it owns and nothing else.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from kernels.timecode import iso

LEVELS = ("shot", "scene", "chapter", "video")
"""Segment levels, finest first. Every level tiles its parent."""

STAGES = ("shots", "vision", "transcript", "structure", "captions", "embeddings", "memory")
"""Ingestion stages in order; a job records which are done and resumes at the first that is not."""


def _now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """Short random id users can type (12 hex digits)."""
    return uuid.uuid4().hex[:12]


class Base(DeclarativeBase):
    pass


class Library(Base):
    __tablename__ = "libraries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)

    videos: Mapped[list[Video]] = relationship(back_populates="library", cascade="all, delete-orphan")

    def to_json(self, videos: int) -> dict[str, object]:
        """The one JSON shape of a library (`vidmem libraries --json`, the API), with its video count."""
        return {"name": self.name, "videos": videos, "created_at": iso(self.created_at)}


class Video(Base):
    """A media file or a transcript-only item. `content_hash` is the ingest key; `identity` says how
    it was made (`indexers.source.IDENTITIES`): `sha256` of the bytes, or for an object in a store,
    a sha256 of its ETag (or Last-Modified) and size — so the same bytes as a local file and as an
    object are two videos."""

    __tablename__ = "videos"
    __table_args__ = (UniqueConstraint("library_id", "content_hash"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"), index=True)
    uri: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(String(512))
    content_hash: Mapped[str] = mapped_column(String(64))
    identity: Mapped[str] = mapped_column(String(16), default="sha256", server_default="sha256")
    kind: Mapped[str] = mapped_column(String(16), default="video")  # video | audio | transcript
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    fps: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    language: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|ingesting|ready|failed
    created_at: Mapped[datetime] = mapped_column(default=_now)

    library: Mapped[Library] = relationship(back_populates="videos")
    segments: Mapped[list[Segment]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    cues: Mapped[list[TranscriptCue]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    embeddings: Mapped[list[EmbeddingRow]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    jobs: Mapped[list[IngestJob]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    screen_texts: Mapped[list[ScreenText]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    tags: Mapped[list[Tag]] = relationship(cascade="all, delete-orphan", passive_deletes=True)

    def to_json(self, library: str | None = None) -> dict[str, object]:
        """The one JSON shape of a video, wherever it is shown (`vidmem list --json`, `show --json`,
        the API, which adds its `media` and `page` links). `library`: its name, when the row's
        `library` relationship is not loaded (a row read outside a session)."""
        return {
            "id": self.id,
            "library": library if library is not None else self.library.name,
            "title": self.title,
            "kind": self.kind,
            "status": self.status,
            "duration": round(self.duration, 3),
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "language": self.language,
            "size_bytes": self.size_bytes,
            "identity": self.identity,
            "created_at": iso(self.created_at),
        }


class Segment(Base):
    """A span at one level of the hierarchy (shot, scene, chapter, video)."""

    __tablename__ = "segments"
    __table_args__ = (Index("ix_segments_video_level_start", "video_id", "level", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(16))
    ordinal: Mapped[int] = mapped_column(Integer)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    caption: Mapped[str | None] = mapped_column(Text)
    salience: Mapped[float | None] = mapped_column(Float)
    retained: Mapped[bool | None] = mapped_column()
    keyframe_time: Mapped[float | None] = mapped_column(Float)
    signature: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Shots: the mean colour signature (float32 bytes) the scene grouping compares."""


class TranscriptCue(Base):
    """One transcript line; `words` holds `[[start, end, word], ...]` when the ASR gives word times."""

    __tablename__ = "transcript_cues"
    __table_args__ = (Index("ix_cues_video_start", "video_id", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    words: Mapped[list | None] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16))  # asr | subtitles
    speaker: Mapped[str | None] = mapped_column(String(64))


class ScreenText(Base):
    """A line of on-screen text read in a shot: first and last time seen (seconds), its box as
    `[x0, y0, x1, y1]` in fractions of the frame, and the reader's confidence."""

    __tablename__ = "screen_texts"
    __table_args__ = (Index("ix_screen_texts_video_start", "video_id", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    box: Mapped[list | None] = mapped_column(JSON)
    score: Mapped[float] = mapped_column(Float)


class Tag(Base):
    """What a shot shows, as a searchable tag: `kind` is `label` (an ImageNet class), `face` or
    `person`. `score` is the model's own confidence: a label's mean softmax probability (0-1), a
    face's Haar level weight or a person's HOG margin (unbounded; thresholds in indexers.vision).
    `count` is the most seen on one frame."""

    __tablename__ = "tags"
    __table_args__ = (Index("ix_tags_video_kind_name", "video_id", "kind", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    score: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer, default=1)


class EmbeddingRow(Base):
    """A searchable unit with its vector. `id` is the FAISS vector id; the vector itself is kept here
    (float32 bytes) so every FAISS index can be rebuilt from SQL alone."""

    __tablename__ = "embeddings"
    __table_args__ = (Index("ix_embeddings_library_space", "library_id", "space"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"))
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # shot | window (transcript window) | ...
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    modality: Mapped[str] = mapped_column(String(16))  # text | visual
    model: Mapped[str] = mapped_column(String(128))
    space: Mapped[str] = mapped_column(String(160))  # "{modality}:{model}": one FAISS index per space
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    retained: Mapped[bool] = mapped_column(default=True, server_default=true())
    """Whether the search indexes hold it: gists (scenes, chapters) always; a shot, window or cue
    while it is the exemplar of a live memory slot (memory.gate). Rows not retained stay here."""
    slot_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """The memory slot whose exemplar this row is (None: a gist, a unit never written, an old row)."""


class IngestJob(Base):
    """An ingestion with per-stage checkpoints. `stages_done` lists finished stages in order."""

    __tablename__ = "ingest_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|done|failed
    stage: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stages_done: Mapped[list] = mapped_column(JSON, default=list)
    stage_seconds: Mapped[dict | None] = mapped_column(JSON)
    """Wall seconds from each stage's start to its result being stored (stages overlap: shots and
    vision run while the audio is transcribed), from the run that finished it."""
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class Job(Base):
    """A queued ingestion of the service (`service.jobs`): it outlives its video's failure (the
    error stays readable) and a crashed server, whose running jobs the next one takes over.

    `source` is the file to ingest (an upload kept under `home/uploads/`, or a server-side path);
    `stage`/`progress` mirror the pipeline's; `owner` is the worker running it and `heartbeat` when
    it last said so, which is how a job left behind by a killed worker is recognised.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="ingest")  # ingest | regate | generate
    source: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(String(512))
    upload: Mapped[bool] = mapped_column(default=False)
    """Whether `source` is the service's own copy (removed with the video or when the job fails)."""
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|done|failed|cancelled
    stage: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    video_id: Mapped[str | None] = mapped_column(ForeignKey("videos.id", ondelete="SET NULL"))
    request: Mapped[dict | None] = mapped_column(JSON)
    """A generation job's edit request (`reasoning.generate.EditRequest`), as the caller sent it."""
    result: Mapped[dict | None] = mapped_column(JSON)
    """A generation job's output (plan, artifact, timeline, files), or while it runs what its
    backend must not lose (`{"saved": {...}}`: a remote job's id)."""
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(128))
    heartbeat: Mapped[float | None] = mapped_column(Float)
    """Unix time of the worker's last report."""
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)

    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)


class ApiKey(Base):
    """An API key of the service, stored as the SHA-256 of its secret (a random 32-byte token, so a
    plain hash is enough: nothing to guess). `library_id` None: an admin key (every library)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    """The key's first characters, shown in listings so a user can tell keys apart."""
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    library_id: Mapped[int | None] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(8), default="write")
    """`admin` (no library), or `read` / `write` for a key of one library."""
    source: Mapped[str | None] = mapped_column(String(16))
    """Who made it: `configured` (the `api_key` setting, revoked when the setting changes),
    `first-start` (the admin key written to `home/admin.key`), or None (`vidmem keys`, the API)."""
    created_at: Mapped[datetime] = mapped_column(default=_now)
    revoked: Mapped[bool] = mapped_column(default=False)


class WebSession(Base):
    """A login of the editor's page: the cookie holds a random token, the catalog its SHA-256.
    It ends at `expires` (Unix seconds), at logout, or when its key is revoked."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires: Mapped[float] = mapped_column(Float)
    revoked: Mapped[bool] = mapped_column(default=False)


class MemorySlot(Base):
    """A slot of a library's memory bank (memory.gate): one exemplar unit standing for every unit
    folded or merged into it (`MemoryUnit.slot_id`). `state` is live, merged (into `into_id`), nested
    (a cue slot let go while the window slot `into_id` holds its words) or evicted; only a live
    slot's exemplar rows are retained in the search indexes."""

    __tablename__ = "memory_slots"
    __table_args__ = (Index("ix_memory_slots_library_state", "library_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # shot | window | cue
    exemplar_id: Mapped[int] = mapped_column(ForeignKey("embeddings.id", ondelete="CASCADE"))
    """The exemplar unit's first embedding row (a shot's rows share its segment)."""
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    salience: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(8), default="live")
    into_id: Mapped[int | None] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    """What folding compares (float32 bytes): a shot's mean visual vector, else its text vector."""


class MemoryUnit(Base):
    """The gate's decision on one unit (a shot, window or cue) and the slot it now belongs to: the
    occurrences of a slot are its units. `action` is write, fold or skip; `similarity` the cosine
    with the nearest slot when it arrived, `salience` the write head's score."""

    __tablename__ = "memory_units"
    __table_args__ = (Index("ix_memory_units_slot", "slot_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"))
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    row_id: Mapped[int] = mapped_column(ForeignKey("embeddings.id", ondelete="CASCADE"))
    segment_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(8))
    slot_id: Mapped[int | None] = mapped_column(Integer)
    similarity: Mapped[float] = mapped_column(Float)
    salience: Mapped[float] = mapped_column(Float)


class IndexEpoch(Base):
    """One row per change to which rows the search indexes hold without new rows being added (a
    memory stage, a re-gating): the derived files compare themselves with SQL again when the
    largest id here moves, as they do when the largest embedding id does."""

    __tablename__ = "index_epochs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    library_id: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=_now)
