"""`ingest(path)`: probe, hash, then the stages, each checkpointed in the catalog.

`path` may be a URL (`file://`, `s3://`, `https://`, `http://`; indexers/source.py): the stages read
it by byte ranges, and the video is known by what the store says of the object (its ETag and size)
instead of a hash of every byte (`IngestResult.identity` says which).

Every stage writes its rows and marks itself done in one transaction, so a killed ingestion leaves
whole stages or nothing; run again, it resumes at the first unfinished stage. Input that cannot be
ingested raises `MediaError` before anything is written, and a failure later removes what this
ingestion created, so the library is left as it was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from indexers.captions import CaptionOptions, Captions, SpanFacts, make_captioner
from indexers.decode import DecodeOptions, MediaError, MediaInfo, probe, sample_frames
from indexers.embed import chunks, cue_units, shot_units, span_units, transcript_windows
from indexers.heap import release_heap, steady_heap
from indexers.record import (
    CaptionInputs,
    EmbeddingInputs,
    MemoryInputs,
    StructureInputs,
    TextEmbeddings,
    VideoRecord,
)
from indexers.shots import Shot, ShotOptions, ShotResult
from indexers.source import Fingerprint, MediaSource, StorageOptions, media_source
from indexers.structure import Structure, StructureOptions, atoms_from, build
from indexers.transcript import (
    SUBTITLE_SUFFIXES,
    HearElsewhere,
    TranscribeOptions,
    Transcript,
    WhisperTranscriber,
    read_subtitles,
    sidecar_subtitles,
    transcript_elsewhere,
)
from indexers.visual import (
    LookOptions,
    ShotLook,
    VisualJob,
    VisualWorker,
    WindowsElsewhere,
    run_job,
)
from kernels.timecode import hms
from memory import STAGES, EmbeddingRow, IngestJob, Library, Store, Video
from memory.gate import Decision, GateWeights, MemoryOptions
from memory.runtime.text import SentenceEmbedder

Progress = Callable[[str, float], None]
"""Called with (stage name, fraction done in [0, 1])."""


@dataclass
class IngestOptions:
    library: str = "default"
    """Library (collection) the item joins; created when missing."""
    subtitles: Path | str | None = None
    """A .srt/.vtt used as the transcript instead of speech recognition (a path, or a URL)."""
    decoder: str = "pyav"
    """Video decoder: `pyav` or `decord` (the other is the fallback)."""
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    shots: ShotOptions = field(default_factory=ShotOptions)
    transcribe: TranscribeOptions = field(default_factory=TranscribeOptions)
    text_model: str = "all-MiniLM-L6-v2"
    """Sentence-transformers model for text embeddings (packaged name or local folder)."""
    window_seconds: float = 20.0
    """Length of the transcript windows that are embedded and searched."""
    structure: StructureOptions = field(default_factory=StructureOptions)
    """Scene and chapter granularity (indexers.structure)."""
    workers: bool = True
    """Decode video in a worker process, alongside speech recognition (False: one after the other,
    in this process)."""
    captions: CaptionOptions = field(default_factory=CaptionOptions)
    """Which captioner writes the captions of shots, scenes, chapters and the video summary."""
    look: LookOptions | None = field(default_factory=LookOptions)
    """How the vision stage samples, reads and encodes the frames of each shot; None skips it (no
    on-screen text, tags or visual vectors)."""
    hear_elsewhere: HearElsewhere | None = None
    """Where the speech of a long recording is recognised (`indexers.distributed.SpeechChunks`: Ray
    tasks, one per audio chunk, while this process reads the audio); None, or a recording it does
    not want: here, chunk after chunk."""
    windows_elsewhere: WindowsElsewhere | None = None
    """Where the visual pass of a long video runs, window by window (`indexers.distributed.
    RemoteWindows`: a Ray task per window decodes it, finds its shots and looks inside them); None,
    or a video it does not want: here, in one decoding pass. When the shots are stored already (a
    resumed ingestion), each window's task looks inside those that begin in it."""
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    """What the library's memory keeps of this video's shots, windows and cues (memory.gate)."""
    storage: StorageOptions = field(default_factory=StorageOptions)
    """How media named by URL is reached: the S3 endpoint, range sizes, timeouts (indexers.source)."""


@dataclass
class IngestResult:
    video_id: str
    library: str
    duration: float
    resumed: bool = False
    existed: bool = False
    identity: str = "sha256"
    """How the content hash was made (indexers.source.IDENTITIES): `sha256` of the bytes, or for a
    remote object `s3-etag`, `http-etag`, `http-modified`."""


@dataclass
class _Item:
    """What was learnt about the input before anything is written."""

    source: MediaSource
    kind: str  # video | audio | transcript
    duration: float
    info: MediaInfo | None
    subtitles: Transcript | None
    fingerprint: Fingerprint


def _inspect(
    where: Path | str | MediaSource, subtitles: Path | str | None, storage: StorageOptions | None
) -> _Item:
    source = media_source(where, storage)
    fingerprint = source.stat()  # MediaError: no such file or object, unreachable, a folder
    if source.suffix in SUBTITLE_SUFFIXES:
        if subtitles is not None:
            raise MediaError(f"{source}: a subtitle file cannot take --subtitles")
        subs = read_subtitles(source)
        return _Item(source, "transcript", max(c.end for c in subs.cues), None, subs, fingerprint)
    info = probe(source)
    if subtitles is not None:
        sub_path: Path | MediaSource | None = media_source(subtitles, source.storage)
    else:  # a local file's sidecar by the path as given (messages repeat it), an object's by URL
        sub_path = sidecar_subtitles(Path(str(source)) if source.local else source)
    media_subs = read_subtitles(sub_path) if sub_path else None
    kind = "video" if info.has_video else "audio"
    return _Item(source, kind, info.duration, info, media_subs, fingerprint)


def inspect_media(path: Path | str | MediaSource, storage: StorageOptions | None = None) -> str:
    """What `path` (or URL) would be ingested as (`video`, `audio` or `transcript`); `MediaError`
    when it cannot be (not media, no stream, a container cut short, unreadable subtitles, an object
    that is not there or a host that cannot be reached). Writes nothing."""
    return _inspect(path, None, storage).kind


def ingest(
    store: Store,
    path: Path | str | MediaSource,
    options: IngestOptions | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest one media or subtitle file, by path or URL; the same bytes twice in a library are one
    video (for a remote object: the same ETag and size)."""
    steady_heap()
    opts = options or IngestOptions()
    cache = Path(cache_dir or store.home / "models")
    report: Progress = progress or (lambda stage, frac: None)
    item = _inspect(path, opts.subtitles, opts.storage)
    digest, identity = item.source.identity(item.fingerprint, lambda f: report("hash", f))

    created = False
    with store.session() as s:
        new_library = s.scalar(select(Library.id).where(Library.name == opts.library)) is None
        library = store.library(s, opts.library)
        video = s.scalar(select(Video).where(Video.library_id == library.id, Video.content_hash == digest))
        if video is not None and video.status == "ready":
            return IngestResult(video.id, library.name, video.duration, existed=True, identity=identity)
        if video is None:
            info = item.info
            video = Video(
                library_id=library.id,
                uri=item.source.uri,
                title=item.source.name,
                content_hash=digest,
                identity=identity,
                kind=item.kind,
                duration=item.duration,
                fps=info.fps if info else None,
                width=info.width if info else None,
                height=info.height if info else None,
                size_bytes=item.fingerprint.size,
                status="ingesting",
            )
            s.add(video)
            try:
                s.flush()
            except IntegrityError:
                raise MediaError(f"{item.source}: already being ingested by another process") from None
            s.add(IngestJob(video_id=video.id, status="running", stages_done=[]))
            created = True
        video_id, library_id, library_name = video.id, library.id, library.name

    try:
        record = VideoRecord(store, video_id)
        _run_stages(record, library_id, item, opts, cache, report)
        if not item.source.local and not item.source.stat().same_content(item.fingerprint):
            raise MediaError("the object was replaced while it was being ingested; ingest it again")
        record.finish()
    except Exception as e:
        store.delete_video(video_id)  # leave the library as it was before this ingestion
        if new_library:
            store.drop_library_if_empty(library_id)
        if isinstance(e, MediaError):
            prefix = f"{item.source}: "
            raise e if str(e).startswith(prefix) else MediaError(prefix + str(e)) from e
        raise MediaError(f"{item.source}: ingestion failed ({type(e).__name__}: {e})") from e
    return IngestResult(video_id, library_name, item.duration, resumed=not created, identity=identity)


def regate(
    store: Store,
    library: str,
    options: MemoryOptions,
    progress: Progress | None = None,
    weights: GateWeights | None = None,
) -> int:
    """Forget the library's memory and run its memory stage again over every ready video, in the
    order they were ingested, with `options` (and `weights`, the shipped ones by default); returns
    the videos gated. Decided from reads alone, then written in one short transaction: searches see
    the old memory until the new one is whole, and nothing waits on a long write lock."""
    from memory.bank import forget, store_decisions, video_units
    from memory.gate import MemoryGate, budget_for

    with store.session() as s:
        lib = store.library(s, library, create=False)
        library_id = lib.id
        ready = (Video.library_id == library_id, Video.status == "ready")
        videos = list(s.scalars(select(Video.id).where(*ready).order_by(Video.created_at)))
        hours = (
            float(s.scalar(select(func.coalesce(func.sum(Video.duration), 0.0)).where(*ready)) or 0.0) / 3600
        )
    with store.memory_lock(library_id):
        gate = MemoryGate(options, weights)  # an empty bank: the memory is forgotten
        decisions: list[Decision] = []
        seen = 0
        for n, video_id in enumerate(videos):
            with store.session() as s:  # read, then decide, with no write transaction open
                units = video_units(s, video_id)
            seen += len(units)
            for d in gate.gate(units, budget_for(options, seen, hours)):
                d.unit.vector, d.unit.text_vector = _DECIDED, None  # the bank keeps its own copies
                decisions.append(d)
            if progress:
                progress("memory", 0.9 * (n + 1) / max(1, len(videos)))
        with store.session() as s:  # then one short write: searches see the old memory until it commits
            forget(s, library_id)
            s.execute(
                update(EmbeddingRow).where(EmbeddingRow.library_id == library_id).values(retained=False)
            )
            store_decisions(s, library_id, videos, gate, decisions)
    for space in _spaces(store, library_id):
        store.vectors.rebuild(library_id, space)
    store.lexical.rebuild(library_id)
    if progress:
        progress("memory", 1.0)
    return len(videos)


def _spaces(store: Store, library_id: int) -> set[str]:
    with store.session() as s:
        return set(
            s.scalars(select(EmbeddingRow.space).where(EmbeddingRow.library_id == library_id).distinct())
        )


class OncePerText:
    """A text embedder that embeds each distinct text once per ingestion: the structure, captions and
    embeddings stages all embed the transcript's sentences (as atoms, as summary candidates, as cue
    units), so the later stages find most of their vectors already made. Holds the vectors of one
    video (~1.5 KB a text: a few MB for 2 hours)."""

    def __init__(self, embedder: SentenceEmbedder) -> None:
        self.embedder = embedder
        self.name, self.modality, self.space = embedder.name, embedder.modality, embedder.space
        self._known: dict[str, np.ndarray] = {}

    def load(self) -> None:
        self.embedder.load()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return self.embedder.embed([])
        new = [t for t in dict.fromkeys(texts) if t not in self._known]
        if new:
            self._known.update(zip(new, self.embedder.embed(new), strict=True))
        return np.stack([self._known[t] for t in texts])


def _run_stages(
    record: VideoRecord, library_id: int, item: _Item, opts: IngestOptions, cache: Path, report: Progress
) -> None:
    """The unfinished stages, each computing its typed result for `record` to store. Shots and
    vision (one decoding pass, in a worker process) run while the audio is transcribed; each stores
    its result the moment it has it. Structure, captions and embeddings follow once both are in."""
    pending = [stage for stage in STAGES if stage not in record.stages_done()]
    progress = _JobProgress(record, report)
    text = OncePerText(SentenceEmbedder(opts.text_model))
    if "structure" in pending or "embeddings" in pending:
        # the text model takes seconds to import and load: do it while the audio is transcribed
        threading.Thread(target=_quietly, args=(text.load,), name="vidmem-warm-text", daemon=True).start()
    info = item.info if item.kind == "video" else None
    look = opts.look if info is not None and "vision" in pending else None
    job = None
    if info is not None and ("shots" in pending or look is not None):
        job = VisualJob(
            info,
            opts.decode,
            opts.shots,
            opts.decoder,
            look=look,
            known_shots=None if "shots" in pending else record.shot_spans(),
        )
    stage_progress = _StageCallbacks(progress)
    if job is not None:  # the one decoding pass starts now for both
        record.start("shots")
        record.start("vision")
    windows = None
    if job is not None and job.look is not None:
        split = opts.windows_elsewhere
        if split is not None and split.wanted(item.duration):  # a long video's pass, per window
            windows, job = split.start(job), None

    def store_shots(found: ShotResult) -> None:  # in a worker: on its reader thread, once found
        record.write_shots(whole_shots(found, item, opts), item.duration)
        progress.finished("shots")

    def store_looks(looks: list[ShotLook]) -> None:
        record.write_vision(looks)
        progress.finished("vision")

    visual: VisualWorker | None = None
    if job is not None and opts.workers:
        visual = VisualWorker(job, stage_progress, store_shots, store_looks)
    try:
        if "transcript" in pending:
            on_transcript = progress.callback("transcript")

            def transcript_progress(fraction: float) -> None:
                if visual is not None and visual.error is not None:
                    raise visual.error  # the video is refused: stop transcribing it
                on_transcript(fraction)

            record.write_transcript(transcribe(item, opts, cache, transcript_progress))
            progress.finished("transcript")
        if visual is not None:
            visual.result()
        elif job is not None:  # in this process, after the transcript
            run_job(job, stage_progress, store_shots, store_looks)
        elif windows is not None:
            found, seen = windows.result(progress.callback("shots" if "shots" in pending else "vision"))
            if found is not None:
                store_shots(found)
            store_looks(seen)
        if "shots" in pending and job is None and windows is None:  # no video: the root segment alone
            record.write_shots([], item.duration)
        if "vision" in pending and windows is None and (job is None or job.look is None):
            record.write_vision([])
    finally:
        if visual is not None:
            visual.close()
    release_heap()
    if "structure" in pending:
        record.start("structure")
        record.write_structure(structure(record.structure_inputs(), item, opts, text), item.duration)
        progress.finished("structure")
    if "captions" in pending:
        on_captions = progress.callback("captions")
        record.write_captions(caption(record.caption_inputs(), item, opts, cache, on_captions, text))
        progress.finished("captions")
    if "embeddings" in pending:
        on_embeddings = progress.callback("embeddings")
        record.write_embeddings(embed(record.embedding_inputs(), opts, on_embeddings, text), library_id)
        progress.finished("embeddings")
    if "memory" in pending:
        progress.callback("memory")
        with record.store.memory_lock(library_id):  # one gate per library at a time
            inputs = record.memory_inputs(opts.memory)
            record.write_memory(inputs, remember(inputs))
        progress.finished("memory")


# -- the stages' computations: typed inputs in, a typed result out, nothing written --------------


_DECIDED = np.zeros(0, np.float32)
"""What a decided unit's vector becomes while a regate holds every decision until its one write."""


def remember(inputs: MemoryInputs) -> list[Decision]:
    """The gate's decision on each of the video's units, in time order (memory.gate); the bank in
    `inputs.gate` changes with them (merges and evictions are in its `events`)."""
    return list(inputs.gate.gate(inputs.units, inputs.budget))


def whole_shots(found: ShotResult, item: _Item, opts: IngestOptions) -> list[Shot]:
    """The shots found, refused when the frames stop well short of the stream's duration (a file
    cut short) unless damaged input is allowed."""
    if item.info is not None:
        expected = item.info.video_duration or item.duration
        if expected - found.last_frame > max(1.0, 0.02 * expected) and not opts.shots.allow_damaged:
            raise MediaError(
                f"truncated video: frames stop at {hms(found.last_frame, millis=True)} of "
                f"{hms(expected, millis=True)}; pass --allow-damaged to ingest what is there"
            )
    return found.shots


def transcribe(item: _Item, opts: IngestOptions, cache: Path, report: Callable[[float], None]) -> Transcript:
    """The subtitles when there are some, else speech recognition of the audio, else nothing.
    The cues are heard before the catalog is touched: a write transaction held through minutes of
    recognition would lock SQLite against the progress reported meanwhile."""
    if item.subtitles is not None:
        return item.subtitles
    if item.info is not None and item.info.has_audio:
        media = item.source.path if item.source.local else item.source
        elsewhere = opts.hear_elsewhere
        if elsewhere is not None and elsewhere.wanted(item.duration):
            return transcript_elsewhere(media, item.duration, opts.transcribe, cache, elsewhere, report)
        return WhisperTranscriber(opts.transcribe, cache).transcript(media, item.duration, report)
    return Transcript([], None, "asr")


def structure(inputs: StructureInputs, item: _Item, opts: IngestOptions, embedder: OncePerText) -> Structure:
    """Scenes and chapters over the shots (or the cues), each tiling its parent."""
    atoms = atoms_from(inputs.shots, inputs.cues, inputs.visuals)
    return build(atoms, item.duration, embedder.embed, opts.structure, inputs.cues if inputs.shots else ())


def caption(
    inputs: CaptionInputs,
    item: _Item,
    opts: IngestOptions,
    cache: Path,
    report: Callable[[float], None],
    embedder: OncePerText,
) -> Captions:
    """Captions of every level, bottom-up, from what the other stages found (indexers.captions)."""
    captioner = make_captioner(opts.captions, cache)
    if captioner.wants_keyframes and inputs.shots and item.info is not None:
        _add_keyframes(item.info, inputs.shots, opts.captions.keyframes_per_shot)
    return captioner.caption(
        inputs.shots,
        inputs.scenes,
        inputs.chapters,
        item.duration,
        report,
        sentences=inputs.sentences,
        embed=embedder.embed,
    )


def embed(
    inputs: EmbeddingInputs, opts: IngestOptions, report: Callable[[float], None], embedder: OncePerText
) -> TextEmbeddings:
    """The searchable units (cues, transcript windows, shots, scenes, chapters) and their vectors."""
    cues = inputs.cues
    units = cue_units(cues) + transcript_windows(cues, opts.window_seconds)
    units += shot_units(inputs.shots, cues, inputs.seen)
    units += span_units("scene", inputs.scenes, cues, inputs.captions)
    units += span_units("chapter", inputs.chapters, cues, inputs.captions)
    vectors = _embed_units(embedder, [u.text for u in units], report)
    return TextEmbeddings(units, vectors, embedder.name, embedder.modality, embedder.space)


def _quietly(fn: Callable[[], None]) -> None:
    """Run fn, ignoring failure: the stage that needs the model loads it again and reports why."""
    import contextlib

    with contextlib.suppress(Exception):
        fn()


class _JobProgress:
    """Reports each running stage's progress to the caller, and to the job row at most every 2 s
    (for pollers): `stage` lists the running stages, `progress` is their mean."""

    def __init__(self, record: VideoRecord, report: Progress) -> None:
        self.record, self.report = record, report
        self.running: dict[str, float] = {}
        self.lock = threading.Lock()
        self.saved = 0.0

    def callback(self, stage: str) -> Callable[[float], None]:
        self.record.start(stage)
        with self.lock:
            self.running[stage] = 0.0
        self._save(force=True)
        return lambda fraction: self._update(stage, fraction)

    def finished(self, stage: str) -> None:
        self.report(stage, 1.0)
        with self.lock:
            self.running.pop(stage, None)

    def _update(self, stage: str, fraction: float) -> None:
        self.report(stage, fraction)
        with self.lock:
            self.running[stage] = fraction
        self._save()

    def _save(self, force: bool = False) -> None:
        with self.lock:
            if not force and time.monotonic() - self.saved < 2.0:
                return
            self.saved = time.monotonic()
            stages, fractions = list(self.running), list(self.running.values())
        self.record.report(stages, sum(fractions) / len(fractions) if fractions else None)


class _StageCallbacks:
    """(stage, fraction) from the visual pass -> that stage's progress callback, made on first use."""

    def __init__(self, progress: _JobProgress) -> None:
        self.progress = progress
        self.made: dict[str, Callable[[float], None]] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        if stage not in self.made:
            self.made[stage] = self.progress.callback(stage)
        self.made[stage](fraction)


def _embed_units(embedder: OncePerText, texts: list[str], report: Callable[[float], None]) -> np.ndarray:
    """One unit vector per text; a long text (a chapter) is the normalised mean of its pieces."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    pieces = [chunks(t) for t in texts]
    flat = [p for ps in pieces for p in ps]
    parts = []
    for i in range(0, len(flat), 256):
        parts.append(embedder.embed(flat[i : i + 256]))
        report(min(1.0, (i + 256) / len(flat)))
    vecs = np.concatenate(parts)
    out = np.zeros((len(texts), vecs.shape[1]), np.float32)
    at = 0
    for k, ps in enumerate(pieces):
        mean = vecs[at : at + len(ps)].mean(0)
        out[k] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        at += len(ps)
    return out


def _add_keyframes(info: MediaInfo, facts: list[SpanFacts], per_shot: int) -> None:
    """JPEG keyframes (at most 512 px) evenly spaced inside each shot, for captioners that look."""
    import cv2

    times, owner = [], []
    for i, f in enumerate(facts):
        for k in range(per_shot):
            times.append(f.start + (f.end - f.start) * (k + 0.5) / per_shot)
            owner.append(i)
    for at, _, frame in sample_frames(info, times, max_side=512):
        ok, jpeg = cv2.imencode(
            ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
        )
        if ok:
            facts[owner[at]].keyframes.append(jpeg.tobytes())
