"""`ingest(path)`: probe, hash, then the stages, each checkpointed in the catalog.

Every stage writes its rows and marks itself done in one transaction, so a killed ingestion leaves
whole stages or nothing; run again, it resumes at the first unfinished stage. Input that cannot be
ingested raises `MediaError` before anything is written, and a failure later removes what this
ingestion created, so the library is left as it was.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from indexers.captions import CaptionOptions, Sentence, SpanFacts, make_captioner, split_sentences
from indexers.decode import DecodeOptions, MediaError, MediaInfo, probe, sample_frames
from indexers.embed import chunks, cue_units, shot_units, span_units, transcript_windows
from indexers.heap import release_heap, steady_heap
from indexers.shots import ShotOptions, ShotResult
from indexers.structure import StructureOptions, atoms_from, build
from indexers.transcript import (
    SUBTITLE_SUFFIXES,
    Cue,
    TranscribeOptions,
    Transcript,
    TranscriptInfo,
    WhisperTranscriber,
    Word,
    read_subtitles,
    sidecar_subtitles,
)
from indexers.visual import LookOptions, ShotLook, VisualJob, VisualWorker, run_job
from kernels.timecode import hms
from memory import (
    STAGES,
    EmbeddingRow,
    IngestJob,
    Library,
    ScreenText,
    Segment,
    Store,
    Tag,
    TranscriptCue,
    Video,
)
from memory.runtime.text import SentenceEmbedder
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


def inspect_media(path: Path) -> str:
    """What `path` would be ingested as (`video`, `audio` or `transcript`); `MediaError` when it
    cannot be (not media, no stream, a container cut short, unreadable subtitles). Writes nothing."""
    return _inspect(Path(path), None).kind


def ingest(
    store: Store,
    path: Path,
    options: IngestOptions | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest one media or subtitle file; the same bytes twice in a library are one video."""
    steady_heap()
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
        _run_stages(store, video_id, library_id, item, opts, cache, report)
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
    store, video_id, library_id, item: _Item, opts: IngestOptions, cache, report: Progress
) -> None:  # type: ignore[no-untyped-def]
    """The unfinished stages. Shots (in a worker process) and transcript run at the same time;
    each commits on its own when done, embeddings follow once both are in."""
    with store.session() as s:
        done = set(_job(s, video_id).stages_done)
    pending = [stage for stage in STAGES if stage not in done]
    progress = _JobProgress(store, video_id, report)
    text = OncePerText(SentenceEmbedder(opts.text_model))
    if "structure" in pending or "embeddings" in pending:
        # the text model takes seconds to import and load: do it while the audio is transcribed
        threading.Thread(target=_quietly, args=(text.load,), name="vidmem-warm-text", daemon=True).start()
    job = None
    if item.kind == "video" and item.info is not None and ("shots" in pending or "vision" in pending):
        job = VisualJob(
            item.info,
            opts.decode,
            opts.shots,
            opts.decoder,
            look=opts.look if "vision" in pending else None,
            known_shots=None if "shots" in pending else _shot_spans(store, video_id),
        )
    stage_progress = _StageCallbacks(progress)

    def commit_shots(result: ShotResult) -> None:  # in a worker: on its reader thread, once found
        _stage_shots(store, video_id, item, opts, result)
        progress.finished("shots")

    def commit_looks(looks: list[ShotLook]) -> None:
        _stage_vision(store, video_id, looks)
        progress.finished("vision")

    visual: VisualWorker | None = None
    if job is not None and opts.workers:
        visual = VisualWorker(job, stage_progress, commit_shots, commit_looks)
    try:
        if "transcript" in pending:
            on_transcript = progress.callback("transcript")

            def transcript_progress(fraction: float) -> None:
                if visual is not None and visual.error is not None:
                    raise visual.error  # the video is refused: stop transcribing it
                on_transcript(fraction)

            _stage_transcript(store, video_id, item, opts, cache, transcript_progress)
            progress.finished("transcript")
        if visual is not None:
            visual.result()
        elif job is not None:  # in this process, after the transcript
            run_job(job, stage_progress, commit_shots, commit_looks)
        if "shots" in pending and job is None:  # no video: the root segment alone
            _stage_shots(store, video_id, item, opts, None)
        if "vision" in pending and (job is None or job.look is None):
            _stage_vision(store, video_id, [])
    finally:
        if visual is not None:
            visual.close()
    release_heap()
    if "structure" in pending:
        _stage_structure(store, video_id, item, opts, text)
        progress.finished("structure")
    if "captions" in pending:
        _stage_captions(store, video_id, item, opts, cache, progress.callback("captions"), text)
        progress.finished("captions")
    if "embeddings" in pending:
        _stage_embeddings(store, video_id, library_id, opts, progress.callback("embeddings"), text)
        progress.finished("embeddings")


def _quietly(fn: Callable[[], None]) -> None:
    """Run fn, ignoring failure: the stage that needs the model loads it again and reports why."""
    import contextlib

    with contextlib.suppress(Exception):
        fn()


class _JobProgress:
    """Reports each running stage's progress to the caller, and to the job row at most every 2 s
    (for pollers): `stage` lists the running stages, `progress` is their mean."""

    def __init__(self, store: Store, video_id: str, report: Progress) -> None:
        self.store, self.video_id, self.report = store, video_id, report
        self.running: dict[str, float] = {}
        self.lock = threading.Lock()
        self.saved = 0.0

    def callback(self, stage: str) -> Callable[[float], None]:
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
            with self.store.session() as s:
                job = _job(s, self.video_id)
                job.stage, job.status = "+".join(stages) or None, "running"
                job.progress = sum(fractions) / len(fractions) if fractions else job.progress


class _StageCallbacks:
    """(stage, fraction) from the visual pass -> that stage's progress callback, made on first use."""

    def __init__(self, progress: _JobProgress) -> None:
        self.progress = progress
        self.made: dict[str, Callable[[float], None]] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        if stage not in self.made:
            self.made[stage] = self.progress.callback(stage)
        self.made[stage](fraction)


def _shot_spans(store: Store, video_id: str) -> list[tuple[float, float]]:
    with store.session() as s:
        return [(sh.start, sh.end) for sh in _level(s, video_id, "shot")]


def _level(s, video_id: str, level: str):  # type: ignore[no-untyped-def]
    """The video's segments of one level, in order."""
    return s.scalars(
        select(Segment).where(Segment.video_id == video_id, Segment.level == level).order_by(Segment.ordinal)
    )


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
    done = {*job.stages_done, stage}
    job.stages_done = [st for st in STAGES if st in done]  # in stage order, whichever finished first
    job.progress = 1.0


def _stage_shots(store, video_id, item: _Item, opts: IngestOptions, result: ShotResult | None) -> None:  # type: ignore[no-untyped-def]
    shots: list[tuple[float, float, np.ndarray | None]] = []
    if result is not None and item.info is not None:
        expected = item.info.video_duration or item.duration
        if expected - result.last_frame > max(1.0, 0.02 * expected) and not opts.shots.allow_damaged:
            raise MediaError(
                f"truncated video: frames stop at {hms(result.last_frame, millis=True)} of "
                f"{hms(expected, millis=True)}; pass --allow-damaged to ingest what is there"
            )
        shots = [(sh.start, sh.end, sh.signature) for sh in result.shots]
    with store.session() as s:
        s.execute(delete(Segment).where(Segment.video_id == video_id))
        root = Segment(video_id=video_id, level="video", ordinal=0, start=0.0, end=item.duration)
        s.add(root)
        s.flush()
        for i, (start, end, signature) in enumerate(shots):
            s.add(
                Segment(
                    video_id=video_id,
                    level="shot",
                    ordinal=i,
                    start=start,
                    end=end,
                    parent_id=root.id,
                    keyframe_time=(start + end) / 2,
                    signature=vector_bytes(signature) if signature is not None else None,
                )
            )
        _finish(s, video_id, "shots")


def _stage_vision(store, video_id, looks: list[ShotLook]) -> None:  # type: ignore[no-untyped-def]
    """On-screen text, tags and the token-reduced visual vectors of every shot. The vectors join
    FAISS in the embeddings stage, with the text ones (SQL first, FAISS derived)."""
    with store.session() as s:
        library_id = store.get_video(s, video_id).library_id
        shot_rows = _level(s, video_id, "shot").all()
        s.execute(delete(ScreenText).where(ScreenText.video_id == video_id))
        s.execute(delete(Tag).where(Tag.video_id == video_id))
        s.execute(
            delete(EmbeddingRow).where(EmbeddingRow.video_id == video_id, EmbeddingRow.modality == "visual")
        )
        for look in looks:
            shot = shot_rows[look.index]
            for t in look.texts:
                s.add(
                    ScreenText(
                        video_id=video_id,
                        segment_id=shot.id,
                        start=t.start,
                        end=t.end,
                        text=t.text,
                        box=[round(v, 4) for v in t.box],
                        score=t.score,
                    )
                )
            tags = [("label", name, score, 1) for name, score in look.labels]
            if look.faces:
                tags.append(("face", "face", look.face_score, look.faces))
            if look.people:
                tags.append(("person", "person", look.person_score, look.people))
            for kind, name, score, count in tags:
                s.add(
                    Tag(
                        video_id=video_id,
                        segment_id=shot.id,
                        start=shot.start,
                        end=shot.end,
                        kind=kind,
                        name=name,
                        score=float(score),
                        count=int(count),
                    )
                )
            if len(look.vectors):
                model = look.model
                for vec, (t0, t1) in zip(look.vectors, look.spans, strict=True):
                    s.add(
                        EmbeddingRow(
                            library_id=library_id,
                            video_id=video_id,
                            segment_id=shot.id,
                            kind="shot",
                            start=shot.start,
                            end=shot.end,
                            text=f"frames {t0:.2f}-{t1:.2f}",
                            modality="visual",
                            model=model,
                            space=f"visual:{model}",
                            vector=vector_bytes(vec),
                        )
                    )
        _finish(s, video_id, "vision")


def _stage_transcript(store, video_id, item: _Item, opts: IngestOptions, cache, report) -> None:  # type: ignore[no-untyped-def]
    heard: Iterable[Cue]
    if item.subtitles is not None:
        heard, info = item.subtitles.cues, TranscriptInfo("subtitles", item.subtitles.language)
    elif item.info is not None and item.info.has_audio:
        heard, info = WhisperTranscriber(opts.transcribe, cache).transcribe(item.path, item.duration, report)
    else:
        heard, info = [], TranscriptInfo("asr")
    # heard before the transaction opens: a write transaction held through minutes of recognition
    # would lock SQLite against the progress this stage reports meanwhile
    cues = list(heard)
    with store.session() as s:  # the stage commits once, whole
        s.execute(delete(TranscriptCue).where(TranscriptCue.video_id == video_id))
        for cue in cues:
            s.add(
                TranscriptCue(
                    video_id=video_id,
                    start=cue.start,
                    end=cue.end,
                    text=cue.text,
                    source=info.source,
                    words=[[round(w.start, 3), round(w.end, 3), w.text] for w in cue.words] or None,
                )
            )
        store.get_video(s, video_id).language = info.language
        _finish(s, video_id, "transcript")


def _stage_structure(store, video_id, item: _Item, opts: IngestOptions, embedder: OncePerText) -> None:  # type: ignore[no-untyped-def]
    """Scenes and chapters over the shots (or the cues), each tiling its parent."""
    with store.session() as s:
        root = s.scalar(select(Segment).where(Segment.video_id == video_id, Segment.level == "video"))
        shot_rows = _level(s, video_id, "shot").all()
        cues = [
            (c.start, c.end, c.text)
            for c in s.scalars(
                select(TranscriptCue).where(TranscriptCue.video_id == video_id).order_by(TranscriptCue.start)
            )
        ]
        shots = [(sh.start, sh.end) for sh in shot_rows]
        visuals = [np.frombuffer(sh.signature, np.float32) if sh.signature else None for sh in shot_rows]
    atoms = atoms_from(shots, cues, visuals)
    structure = build(atoms, item.duration, embedder.embed, opts.structure, cues if shots else ())
    with store.session() as s:
        s.execute(
            delete(Segment).where(Segment.video_id == video_id, Segment.level.in_(("scene", "chapter")))
        )
        if root is None:
            root = Segment(video_id=video_id, level="video", ordinal=0, start=0.0, end=item.duration)
            s.add(root)
            s.flush()
        chapters = []
        for i, (start, end) in enumerate(structure.chapters):
            chapters.append(
                Segment(
                    video_id=video_id, level="chapter", ordinal=i, start=start, end=end, parent_id=root.id
                )
            )
        s.add_all(chapters)
        s.flush()
        scenes = []
        for i, (start, end) in enumerate(structure.scenes):
            parent = _containing(chapters, start)
            scenes.append(
                Segment(
                    video_id=video_id, level="scene", ordinal=i, start=start, end=end, parent_id=parent.id
                )
            )
        s.add_all(scenes)
        s.flush()
        for sh in s.scalars(select(Segment).where(Segment.video_id == video_id, Segment.level == "shot")):
            sh.parent_id = _containing(scenes, sh.start).id
        _finish(s, video_id, "structure")


@dataclass
class CaptionInputs:
    """What the captions of one ingested video are written from (`Captioner.caption`'s arguments)."""

    shots: list[SpanFacts]
    scenes: list[SpanFacts | tuple[float, float]]
    chapters: list[SpanFacts | tuple[float, float]]
    sentences: list[Sentence]
    """Transcript sentences (split on the word times, so one spoken across a cut stays whole) and
    on-screen lines, with their times: what extractive summaries quote."""


def caption_inputs(store: Store, video_id: str) -> CaptionInputs:
    """The facts of every shot (speech, on-screen text, tags), the scene and chapter spans and the
    sentences of a video whose structure stage is done, read from the catalog."""
    with store.session() as s:
        segs = {level: _level(s, video_id, level).all() for level in ("shot", "scene", "chapter")}
        cues = s.scalars(
            select(TranscriptCue).where(TranscriptCue.video_id == video_id).order_by(TranscriptCue.start)
        ).all()
        words = [(w[0], w[1], w[2]) for c in cues for w in (c.words or [])] or [
            ((c.start + c.end) / 2, (c.start + c.end) / 2, c.text) for c in cues
        ]
        timed = [(w[0], w[1], w[2]) for c in cues for w in (c.words or [])] or [
            (c.start, c.end, c.text) for c in cues
        ]
        ordinal = {sh.id: sh.ordinal for sh in segs["shot"]}
        facts = [SpanFacts(sh.start, sh.end) for sh in segs["shot"]]
        sentences = split_sentences(timed)
        for t in s.scalars(
            select(ScreenText).where(ScreenText.video_id == video_id).order_by(ScreenText.start)
        ):
            sentences.append(Sentence(t.start, t.end, t.text, "screen"))
            if t.segment_id in ordinal:
                facts[ordinal[t.segment_id]].screen_text.append(t.text)
        for g in s.scalars(select(Tag).where(Tag.video_id == video_id).order_by(Tag.score.desc())):
            if g.segment_id not in ordinal:
                continue
            f = facts[ordinal[g.segment_id]]
            if g.kind == "label":
                f.labels.append((g.name, g.score))
            elif g.kind == "face":
                f.faces = g.count
            elif g.kind == "person":
                f.people = g.count
        spans = {lv: [(g.start, g.end) for g in segs[lv]] for lv in ("scene", "chapter")}
    for f in facts:
        f.speech = _spoken(words, f.start, f.end)
    scenes: list[SpanFacts | tuple[float, float]] = list(spans["scene"])
    chapters: list[SpanFacts | tuple[float, float]] = list(spans["chapter"])
    if not facts:  # no shots (audio, transcript): scenes and chapters speak for themselves
        scenes = [SpanFacts(a, b, _spoken(words, a, b)) for a, b in spans["scene"]]
        chapters = [SpanFacts(a, b) for a, b in spans["chapter"]]
    return CaptionInputs(facts, scenes, chapters, sentences)


def _stage_captions(
    store: Store,
    video_id: str,
    item: _Item,
    opts: IngestOptions,
    cache: Path,
    report: Callable[[float], None],
    embedder: OncePerText,
) -> None:
    """Captions of every level, bottom-up, from what the other stages found (indexers.captions)."""
    inputs = caption_inputs(store, video_id)
    captioner = make_captioner(opts.captions, cache)
    if captioner.wants_keyframes and inputs.shots and item.info is not None:
        _add_keyframes(item.info, inputs.shots, opts.captions.keyframes_per_shot)
    done = captioner.caption(
        inputs.shots,
        inputs.scenes,
        inputs.chapters,
        item.duration,
        report,
        sentences=inputs.sentences,
        embed=embedder.embed,
    )
    with store.session() as s:
        for level, caps in (("shot", done.shots), ("scene", done.scenes), ("chapter", done.chapters)):
            rows = _level(s, video_id, level).all()
            for row, cap in zip(rows, caps, strict=True):
                row.caption = cap
        root = s.scalar(select(Segment).where(Segment.video_id == video_id, Segment.level == "video"))
        if root is not None:
            root.caption = done.summary
        _finish(s, video_id, "captions")


def _spoken(words: list[tuple[float, float, str]], start: float, end: float) -> str:
    """The words (or cues, when there are no word times) whose middle falls inside [start, end)."""
    return " ".join(w for a, b, w in words if start <= (a + b) / 2 < end).strip()


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


def _containing(parents: list[Segment], t: float) -> Segment:
    """The parent whose span holds time t (parents tile the timeline in order)."""
    for p in parents:
        if p.start <= t + 1e-6 < p.end or p is parents[-1]:
            return p
    return parents[-1]


def _embed_units(embedder: OncePerText, texts: list[str], report) -> np.ndarray:  # type: ignore[no-untyped-def]
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


def _stage_embeddings(
    store: Store,
    video_id: str,
    library_id: int,
    opts: IngestOptions,
    report: Callable[[float], None],
    embedder: OncePerText,
) -> None:
    with store.session() as s:
        rows = s.scalars(
            select(TranscriptCue).where(TranscriptCue.video_id == video_id).order_by(TranscriptCue.start)
        ).all()
        cues = [Cue(c.start, c.end, c.text, [Word(*w) for w in (c.words or [])]) for c in rows]
        shot_rows = _level(s, video_id, "shot").all()
        shots = [(sh.start, sh.end) for sh in shot_rows]
        shot_ids = [sh.id for sh in shot_rows]
        seen = _seen_text(s, video_id, shot_rows)
        captions = {
            g.id: g.caption or ""
            for g in s.scalars(
                select(Segment).where(Segment.video_id == video_id, Segment.caption.is_not(None))
            )
        }
        spans = {
            level: [(g.id, g.start, g.end) for g in _level(s, video_id, level)]
            for level in ("scene", "chapter")
        }
    units = cue_units(cues) + transcript_windows(cues, opts.window_seconds) + shot_units(shots, cues, seen)
    units += span_units("scene", spans["scene"], cues, captions)
    units += span_units("chapter", spans["chapter"], cues, captions)
    vectors = _embed_units(embedder, [u.text for u in units], report)
    shot_text = {shot_ids[u.segment_ordinal]: u.text for u in units if u.segment_ordinal is not None}
    with store.session() as s:
        s.execute(
            delete(EmbeddingRow).where(EmbeddingRow.video_id == video_id, EmbeddingRow.modality == "text")
        )
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
                segment_id=shot_ids[unit.segment_ordinal]
                if unit.segment_ordinal is not None
                else unit.segment_id,
            )
            s.add(row)
            added.append(row)
        visual = s.scalars(
            select(EmbeddingRow)
            .where(EmbeddingRow.video_id == video_id, EmbeddingRow.modality == "visual")
            .order_by(EmbeddingRow.id)
        ).all()
        for row in visual:  # a visual hit shows what is known of its shot
            row.text = shot_text.get(row.segment_id or -1) or captions.get(row.segment_id or -1) or row.text
        s.flush()
        ids = [r.id for r in added]
        by_space: dict[str, tuple[list[int], list[np.ndarray]]] = {}
        for row in visual:
            ids_, vecs_ = by_space.setdefault(row.space, ([], []))
            ids_.append(row.id)
            vecs_.append(np.frombuffer(row.vector, np.float32))
        _finish(s, video_id, "embeddings")
    store.vectors.add(library_id, embedder.space, ids, vectors)  # SQL committed first: FAISS is derived
    for space, (ids_, vecs_) in by_space.items():
        store.vectors.add(library_id, space, ids_, np.stack(vecs_))
    store.lexical.add(library_id, ids)  # the BM25 postings and scoping metadata, in step with FAISS


def _seen_text(s, video_id: str, shot_rows) -> dict[int, str]:  # type: ignore[no-untyped-def]
    """Per shot ordinal: what the vision stage read (`on screen: …`) and its tags (`tags: …`: labels,
    faces and people are candidates, not facts; see indexers.captions), as searchable words."""
    ordinal = {sh.id: sh.ordinal for sh in shot_rows}
    texts: dict[int, list[str]] = {}
    for t in s.scalars(select(ScreenText).where(ScreenText.video_id == video_id).order_by(ScreenText.start)):
        texts.setdefault(ordinal.get(t.segment_id, -1), []).append(t.text)
    tags: dict[int, list[str]] = {}
    for g in s.scalars(select(Tag).where(Tag.video_id == video_id).order_by(Tag.score.desc())):
        name = g.name if g.kind == "label" else (f"{g.count} {g.name}s" if g.count > 1 else f"a {g.name}")
        tags.setdefault(ordinal.get(g.segment_id, -1), []).append(name)
    out = {}
    for i in set(texts) | set(tags):
        parts = []
        if i in texts:
            parts.append("on screen: " + " / ".join(texts[i]))
        if i in tags:
            parts.append("tags: " + ", ".join(tags[i]))
        out[i] = "; ".join(parts)
    return out
