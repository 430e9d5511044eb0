"""`ingest(path)`: probe, hash, then the stages, each checkpointed in the catalog.

Every stage writes its rows and marks itself done in one transaction, so a killed ingestion leaves
whole stages or nothing; run again, it resumes at the first unfinished stage. Input that cannot be
ingested raises `MediaError` before anything is written, and a failure later removes what this
ingestion created, so the library is left as it was.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from indexers.decode import DecodeOptions, MediaError, MediaInfo, probe, stream_frames
from indexers.embed import shot_units, transcript_windows
from indexers.shots import ContentShotDetector, ShotOptions
from indexers.transcript import (
    SUBTITLE_SUFFIXES,
    Cue,
    TranscribeOptions,
    Transcript,
    WhisperTranscriber,
    Word,
    read_subtitles,
    sidecar_subtitles,
)
from kernels.timecode import hms
from memory import STAGES, EmbeddingRow, IngestJob, Library, Segment, Store, TranscriptCue, Video
from memory.encoders import SentenceEmbedder
from memory.vectors import vector_bytes

Progress = Callable[[str, float], None]
"""Called with (stage name, fraction done in [0, 1])."""


@dataclass
class IngestOptions:
    library: str = "default"
    """Library (collection) the item joins; created when missing."""
    subtitles: Path | None = None
    """A .srt/.vtt used as the transcript instead of speech recognition."""
    decoder: str = "pyav"
    """Video decoder: `pyav` or `decord` (the other is the fallback)."""
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    shots: ShotOptions = field(default_factory=ShotOptions)
    transcribe: TranscribeOptions = field(default_factory=TranscribeOptions)
    text_model: str = "all-MiniLM-L6-v2"
    """Sentence-transformers model for text embeddings (packaged name or local folder)."""
    window_seconds: float = 20.0
    """Length of the transcript windows that are embedded and searched."""


@dataclass
class IngestResult:
    video_id: str
    library: str
    duration: float
    resumed: bool = False
    existed: bool = False


def sha256_file(path: Path, progress: Callable[[float], None] | None = None) -> str:
    h = hashlib.sha256()
    size = max(1, path.stat().st_size)
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done / size)
    return h.hexdigest()


@dataclass
class _Item:
    """What was learnt about the input before anything is written."""

    path: Path
    kind: str  # video | audio | transcript
    duration: float
    info: MediaInfo | None
    subtitles: Transcript | None


def _inspect(path: Path, subtitles: Path | None) -> _Item:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.suffix.lower() in SUBTITLE_SUFFIXES:
        if subtitles is not None:
            raise MediaError(f"{path}: a subtitle file cannot take --subtitles")
        subs = read_subtitles(path)
        return _Item(path, "transcript", max(c.end for c in subs.cues), None, subs)
    info = probe(path)
    sub_path = subtitles or sidecar_subtitles(path)
    media_subs = read_subtitles(sub_path) if sub_path else None
    return _Item(path, "video" if info.has_video else "audio", info.duration, info, media_subs)


def ingest(
    store: Store,
    path: Path,
    options: IngestOptions | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest one media or subtitle file; the same bytes twice in a library are one video."""
    _steady_heap()
    opts = options or IngestOptions()
    cache = Path(cache_dir or store.home / "models")
    report: Progress = progress or (lambda stage, frac: None)
    item = _inspect(Path(path), opts.subtitles)
    digest = sha256_file(item.path, lambda f: report("hash", f))

    created = False
    with store.session() as s:
        new_library = s.scalar(select(Library.id).where(Library.name == opts.library)) is None
        library = store.library(s, opts.library)
        video = s.scalar(select(Video).where(Video.library_id == library.id, Video.content_hash == digest))
        if video is not None and video.status == "ready":
            return IngestResult(video.id, library.name, video.duration, existed=True)
        if video is None:
            info = item.info
            video = Video(
                library_id=library.id,
                uri=str(item.path.resolve()),
                title=item.path.name,
                content_hash=digest,
                kind=item.kind,
                duration=item.duration,
                fps=info.fps if info else None,
                width=info.width if info else None,
                height=info.height if info else None,
                size_bytes=item.path.stat().st_size,
                status="ingesting",
            )
            s.add(video)
            try:
                s.flush()
            except IntegrityError:
                raise MediaError(f"{item.path}: already being ingested by another process") from None
            s.add(IngestJob(video_id=video.id, status="running", stages_done=[]))
            created = True
        video_id, library_id, library_name = video.id, library.id, library.name

    try:
        for stage in STAGES:
            with store.session() as s:
                job = _job(s, video_id)
                if stage in job.stages_done:
                    continue
                job.stage, job.status, job.progress = stage, "running", 0.0
            runner = {"shots": _stage_shots, "transcript": _stage_transcript, "embeddings": _stage_embeddings}
            runner[stage](
                store, video_id, library_id, item, opts, cache, _JobProgress(store, video_id, stage, report)
            )
            _release_heap()
        with store.session() as s:
            video = store.get_video(s, video_id)
            video.status = "ready"
            job = _job(s, video_id)
            job.status, job.stage, job.progress = "done", None, 1.0
    except Exception as e:
        store.delete_video(video_id)  # leave the library as it was before this ingestion
        if new_library:
            store.drop_library_if_empty(library_id)
        if isinstance(e, MediaError):
            prefix = f"{item.path}: "
            raise e if str(e).startswith(prefix) else MediaError(prefix + str(e)) from e
        raise MediaError(f"{item.path}: ingestion failed ({type(e).__name__}: {e})") from e
    return IngestResult(video_id, library_name, item.duration, resumed=not created)


def _steady_heap() -> None:
    """Serve allocations of 1 MB and more (audio chunks, feature maps) with mmap, always.

    glibc's default raises this threshold after each large free, so later large buffers come from
    the heap, which fragments and grows with every chunk: measured +18% peak RSS for 3x the duration
    without this, +12% with it (docs/benchmarks/ingest.md). A no-op off glibc."""
    import contextlib
    import ctypes

    m_mmap_threshold = -3
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, 1 << 20)


def _release_heap() -> None:
    """Hand memory freed by a finished stage back to the OS (glibc keeps it otherwise), so the next
    stage's peak does not stack on the last one's leftovers. A no-op off glibc."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _JobProgress:
    """Reports a stage's progress to the caller, and to the job row at most every 2 s (for pollers)."""

    def __init__(self, store: Store, video_id: str, stage: str, report: Progress) -> None:
        self.store, self.video_id, self.stage, self.report = store, video_id, stage, report
        self.saved = time.monotonic()

    def __call__(self, fraction: float) -> None:
        self.report(self.stage, fraction)
        if time.monotonic() - self.saved >= 2.0:
            self.saved = time.monotonic()
            with self.store.session() as s:
                _job(s, self.video_id).progress = fraction


def _job(s, video_id: str) -> IngestJob:  # type: ignore[no-untyped-def]
    job = s.scalar(
        select(IngestJob).where(IngestJob.video_id == video_id).order_by(IngestJob.created_at.desc())
    )
    if job is None:
        job = IngestJob(video_id=video_id, status="running", stages_done=[])
        s.add(job)
        s.flush()
    return job


def _finish(s, video_id: str, stage: str) -> None:  # type: ignore[no-untyped-def]
    job = _job(s, video_id)
    job.stages_done = [*job.stages_done, stage]
    job.progress = 1.0


def _stage_shots(store, video_id, library_id, item: _Item, opts: IngestOptions, cache, report) -> None:  # type: ignore[no-untyped-def]
    shots: list[tuple[float, float, str]] = []
    if item.kind == "video" and item.info is not None:
        result = ContentShotDetector(opts.shots).detect(
            stream_frames(item.info, opts.decode, opts.decoder), item.duration, report
        )
        expected = item.info.video_duration or item.duration
        if expected - result.last_frame > max(1.0, 0.02 * expected) and not opts.shots.allow_damaged:
            raise MediaError(
                f"truncated video: frames stop at {hms(result.last_frame, millis=True)} of "
                f"{hms(expected, millis=True)}; pass --allow-damaged to ingest what is there"
            )
        shots = [(sh.start, sh.end, sh.transition) for sh in result.shots]
    with store.session() as s:
        s.execute(delete(Segment).where(Segment.video_id == video_id))
        root = Segment(video_id=video_id, level="video", ordinal=0, start=0.0, end=item.duration)
        s.add(root)
        s.flush()
        for i, (start, end, _kind) in enumerate(shots):
            s.add(
                Segment(
                    video_id=video_id,
                    level="shot",
                    ordinal=i,
                    start=start,
                    end=end,
                    parent_id=root.id,
                    keyframe_time=(start + end) / 2,
                )
            )
        _finish(s, video_id, "shots")


def _stage_transcript(store, video_id, library_id, item: _Item, opts: IngestOptions, cache, report) -> None:  # type: ignore[no-untyped-def]
    if item.subtitles is not None:
        transcript = item.subtitles
    elif item.info is not None and item.info.has_audio:
        transcript = WhisperTranscriber(opts.transcribe, cache).transcribe(item.path, item.duration, report)
    else:
        transcript = Transcript([], None, "asr")
    with store.session() as s:
        s.execute(delete(TranscriptCue).where(TranscriptCue.video_id == video_id))
        for cue in transcript.cues:
            s.add(
                TranscriptCue(
                    video_id=video_id,
                    start=cue.start,
                    end=cue.end,
                    text=cue.text,
                    source=transcript.source,
                    words=[[round(w.start, 3), round(w.end, 3), w.text] for w in cue.words] or None,
                )
            )
        store.get_video(s, video_id).language = transcript.language
        _finish(s, video_id, "transcript")


def _stage_embeddings(store, video_id, library_id, item: _Item, opts: IngestOptions, cache, report) -> None:  # type: ignore[no-untyped-def]
    with store.session() as s:
        rows = s.scalars(
            select(TranscriptCue).where(TranscriptCue.video_id == video_id).order_by(TranscriptCue.start)
        ).all()
        cues = [Cue(c.start, c.end, c.text, [Word(*w) for w in (c.words or [])]) for c in rows]
        shot_rows = s.scalars(
            select(Segment)
            .where(Segment.video_id == video_id, Segment.level == "shot")
            .order_by(Segment.ordinal)
        ).all()
        shots = [(sh.start, sh.end) for sh in shot_rows]
        shot_ids = [sh.id for sh in shot_rows]
    units = transcript_windows(cues, opts.window_seconds) + shot_units(shots, cues)
    embedder = SentenceEmbedder(opts.text_model)
    vectors = np.zeros((0, 0), dtype=np.float32)
    if units:
        parts = []
        for i in range(0, len(units), 256):
            parts.append(embedder.embed([u.text for u in units[i : i + 256]]))
            report(min(1.0, (i + 256) / len(units)))
        vectors = np.concatenate(parts)
    with store.session() as s:
        s.execute(delete(EmbeddingRow).where(EmbeddingRow.video_id == video_id))
        added = []
        for unit, vec in zip(units, vectors, strict=True):
            row = EmbeddingRow(
                library_id=library_id,
                video_id=video_id,
                kind=unit.kind,
                start=unit.start,
                end=unit.end,
                text=unit.text,
                modality=embedder.modality,
                model=embedder.name,
                space=embedder.space,
                vector=vector_bytes(vec),
                segment_id=shot_ids[unit.segment_ordinal] if unit.segment_ordinal is not None else None,
            )
            s.add(row)
            added.append(row)
        s.flush()
        ids = [r.id for r in added]
        _finish(s, video_id, "embeddings")
    store.vectors.add(library_id, embedder.space, ids, vectors)  # SQL committed first: FAISS is derived
