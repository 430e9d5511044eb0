"""One video's rows in the catalog, as the ingestion stages see them: `VideoRecord` reads what the
earlier stages stored (typed: `StructureInputs`, `CaptionInputs`, `EmbeddingInputs`) and is the one
writer of each stage's typed result. Every write is one transaction that also marks its stage done,
so a killed ingestion leaves whole stages or nothing; derived indexes (FAISS, BM25) are written
after the SQL they derive from has committed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from indexers.captions import Captions, Sentence, SpanFacts, split_sentences
from indexers.embed import Unit
from indexers.shots import Shot
from indexers.structure import Structure
from indexers.transcript import Cue, Transcript, Word
from indexers.visual import ShotLook
from memory import STAGES, EmbeddingRow, IngestJob, ScreenText, Segment, Store, Tag, TranscriptCue
from memory.bank import budget, load_gate, store_decisions, video_units
from memory.gate import Decision, GateUnit, MemoryGate, MemoryOptions
from memory.vectors import vector_bytes

TimedText = tuple[float, float, str]
"""(start seconds, end seconds, text): a cue or a word."""


@dataclass
class StructureInputs:
    """What scenes and chapters are cut from: the shots, the cues, and each shot's colour signature
    (None for a shot without one)."""

    shots: list[tuple[float, float]]
    cues: list[TimedText]
    visuals: list[np.ndarray | None]


@dataclass
class CaptionInputs:
    """What the captions of one ingested video are written from (`Captioner.caption`'s arguments)."""

    shots: list[SpanFacts]
    scenes: list[SpanFacts | tuple[float, float]]
    chapters: list[SpanFacts | tuple[float, float]]
    sentences: list[Sentence]
    """Transcript sentences (split on the word times, so one spoken across a cut stays whole) and
    on-screen lines, with their times: what extractive summaries quote."""


@dataclass
class EmbeddingInputs:
    """What the searchable text units are made of."""

    cues: list[Cue]
    shots: list[tuple[float, float]]
    seen: dict[int, str]
    """Per shot ordinal: what was read on screen and the shot's tags, as searchable words."""
    captions: dict[int, str]
    """Per segment id: its caption."""
    scenes: list[tuple[int, float, float]]
    """(segment id, start, end) of each scene."""
    chapters: list[tuple[int, float, float]]


@dataclass
class TextEmbeddings:
    """The embeddings stage's result: one unit vector per searchable unit, from one text model."""

    units: list[Unit]
    vectors: np.ndarray  # (len(units), D) float32, unit norm
    model: str
    modality: str
    space: str


@dataclass
class MemoryInputs:
    """What the memory stage decides from: the library's gate, the video's units, the bank's size."""

    library_id: int
    gate: MemoryGate
    units: list[GateUnit]
    budget: int


class VideoRecord:
    """The catalog rows of one video, for its ingestion."""

    def __init__(self, store: Store, video_id: str) -> None:
        self.store, self.video_id = store, video_id
        self.started: dict[str, float] = {}
        """When each stage of this run started (time.monotonic), for `IngestJob.stage_seconds`."""

    # -- the job -------------------------------------------------------------------------------

    def start(self, stage: str) -> None:
        """`stage` starts now: the write that finishes it stores how long it took."""
        self.started.setdefault(stage, time.monotonic())

    def stages_done(self) -> set[str]:
        with self.store.session() as s:
            return set(self._job(s).stages_done)

    def report(self, stages: Sequence[str], fraction: float | None) -> None:
        """The running stages and their mean progress, for those who poll the job."""
        with self.store.session() as s:
            job = self._job(s)
            job.stage, job.status = "+".join(stages) or None, "running"
            if fraction is not None:
                job.progress = fraction

    def finish(self) -> None:
        """All stages are in: the video is ready."""
        with self.store.session() as s:
            self.store.get_video(s, self.video_id).status = "ready"
            job = self._job(s)
            job.status, job.stage, job.progress = "done", None, 1.0

    # -- reads ---------------------------------------------------------------------------------

    def shot_spans(self) -> list[tuple[float, float]]:
        with self.store.session() as s:
            return [(sh.start, sh.end) for sh in self._level(s, "shot")]

    def structure_inputs(self) -> StructureInputs:
        with self.store.session() as s:
            shot_rows = self._level(s, "shot")
            return StructureInputs(
                shots=[(sh.start, sh.end) for sh in shot_rows],
                cues=[(c.start, c.end, c.text) for c in self._cues(s)],
                visuals=[
                    np.frombuffer(sh.signature, np.float32) if sh.signature else None for sh in shot_rows
                ],
            )

    def caption_inputs(self) -> CaptionInputs:
        """The facts of every shot (speech, on-screen text, tags), the scene and chapter spans and
        the sentences of a video whose structure stage is done."""
        with self.store.session() as s:
            segs = {level: self._level(s, level) for level in ("shot", "scene", "chapter")}
            cues = self._cues(s)
            words: list[TimedText] = [(w[0], w[1], w[2]) for c in cues for w in (c.words or [])] or [
                ((c.start + c.end) / 2, (c.start + c.end) / 2, c.text) for c in cues
            ]
            timed: list[TimedText] = [(w[0], w[1], w[2]) for c in cues for w in (c.words or [])] or [
                (c.start, c.end, c.text) for c in cues
            ]
            ordinal = {sh.id: sh.ordinal for sh in segs["shot"]}
            facts = [SpanFacts(sh.start, sh.end) for sh in segs["shot"]]
            sentences = split_sentences(timed)
            for t in self._screen_text(s):
                sentences.append(Sentence(t.start, t.end, t.text, "screen"))
                if t.segment_id in ordinal:
                    facts[ordinal[t.segment_id]].screen_text.append(t.text)
            for g in self._tags(s):
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

    def embedding_inputs(self) -> EmbeddingInputs:
        with self.store.session() as s:
            cues = [Cue(c.start, c.end, c.text, [Word(*w) for w in (c.words or [])]) for c in self._cues(s)]
            shot_rows = self._level(s, "shot")
            captioned = self._segments(s, Segment.caption.is_not(None))
            return EmbeddingInputs(
                cues=cues,
                shots=[(sh.start, sh.end) for sh in shot_rows],
                seen=self._seen_text(s, shot_rows),
                captions={g.id: g.caption or "" for g in captioned},
                scenes=[(g.id, g.start, g.end) for g in self._level(s, "scene")],
                chapters=[(g.id, g.start, g.end) for g in self._level(s, "chapter")],
            )

    # -- writes: one per stage, each one transaction that marks its stage done -----------------

    def write_shots(self, shots: Sequence[Shot], duration: float) -> None:
        """The root segment and the shots under it (none for audio and transcripts)."""
        with self.store.session() as s:
            s.execute(delete(Segment).where(Segment.video_id == self.video_id))
            root = Segment(video_id=self.video_id, level="video", ordinal=0, start=0.0, end=duration)
            s.add(root)
            s.flush()
            for i, sh in enumerate(shots):
                s.add(
                    Segment(
                        video_id=self.video_id,
                        level="shot",
                        ordinal=i,
                        start=sh.start,
                        end=sh.end,
                        parent_id=root.id,
                        keyframe_time=(sh.start + sh.end) / 2,
                        signature=vector_bytes(sh.signature) if sh.signature is not None else None,
                    )
                )
            self._done(s, "shots")

    def write_vision(self, looks: Sequence[ShotLook]) -> None:
        """On-screen text, tags and the token-reduced visual vectors of every shot. The vectors join
        FAISS with the text ones, in `write_embeddings` (SQL first, FAISS derived)."""
        with self.store.session() as s:
            library_id = self.store.get_video(s, self.video_id).library_id
            shot_rows = self._level(s, "shot")
            for table in (ScreenText, Tag):
                s.execute(delete(table).where(table.video_id == self.video_id))
            s.execute(
                delete(EmbeddingRow).where(
                    EmbeddingRow.video_id == self.video_id, EmbeddingRow.modality == "visual"
                )
            )
            for look in looks:
                shot = shot_rows[look.index]
                s.add_all(
                    ScreenText(
                        video_id=self.video_id,
                        segment_id=shot.id,
                        start=t.start,
                        end=t.end,
                        text=t.text,
                        box=[round(v, 4) for v in t.box],
                        score=t.score,
                    )
                    for t in look.texts
                )
                tags = [("label", name, score, 1) for name, score in look.labels]
                if look.faces:
                    tags.append(("face", "face", look.face_score, look.faces))
                if look.people:
                    tags.append(("person", "person", look.person_score, look.people))
                s.add_all(
                    Tag(
                        video_id=self.video_id,
                        segment_id=shot.id,
                        start=shot.start,
                        end=shot.end,
                        kind=kind,
                        name=name,
                        score=float(score),
                        count=int(count),
                    )
                    for kind, name, score, count in tags
                )
                s.add_all(
                    EmbeddingRow(
                        library_id=library_id,
                        video_id=self.video_id,
                        segment_id=shot.id,
                        kind="shot",
                        start=shot.start,
                        end=shot.end,
                        text=f"frames {t0:.2f}-{t1:.2f}",
                        modality="visual",
                        model=look.model,
                        space=f"visual:{look.model}",
                        vector=vector_bytes(vec),
                        retained=False,  # the memory stage decides
                    )
                    for vec, (t0, t1) in zip(look.vectors, look.spans, strict=True)
                )
            self._done(s, "vision")

    def write_transcript(self, transcript: Transcript) -> None:
        with self.store.session() as s:
            s.execute(delete(TranscriptCue).where(TranscriptCue.video_id == self.video_id))
            s.add_all(
                TranscriptCue(
                    video_id=self.video_id,
                    start=cue.start,
                    end=cue.end,
                    text=cue.text,
                    source=transcript.source,
                    words=[[round(w.start, 3), round(w.end, 3), w.text] for w in cue.words] or None,
                )
                for cue in transcript.cues
            )
            self.store.get_video(s, self.video_id).language = transcript.language
            self._done(s, "transcript")

    def write_structure(self, structure: Structure, duration: float) -> None:
        """Chapters under the root, scenes under their chapter, shots under their scene."""
        with self.store.session() as s:
            s.execute(
                delete(Segment).where(
                    Segment.video_id == self.video_id, Segment.level.in_(("scene", "chapter"))
                )
            )
            root = s.scalar(
                select(Segment).where(Segment.video_id == self.video_id, Segment.level == "video")
            )
            if root is None:
                root = Segment(video_id=self.video_id, level="video", ordinal=0, start=0.0, end=duration)
                s.add(root)
                s.flush()
            chapters = [
                Segment(video_id=self.video_id, level="chapter", ordinal=i, start=a, end=b, parent_id=root.id)
                for i, (a, b) in enumerate(structure.chapters)
            ]
            s.add_all(chapters)
            s.flush()
            scenes = [
                Segment(
                    video_id=self.video_id,
                    level="scene",
                    ordinal=i,
                    start=a,
                    end=b,
                    parent_id=_containing(chapters, a).id,
                )
                for i, (a, b) in enumerate(structure.scenes)
            ]
            s.add_all(scenes)
            s.flush()
            for sh in self._level(s, "shot"):
                sh.parent_id = _containing(scenes, sh.start).id
            self._done(s, "structure")

    def write_captions(self, captions: Captions) -> None:
        with self.store.session() as s:
            for level, caps in (
                ("shot", captions.shots),
                ("scene", captions.scenes),
                ("chapter", captions.chapters),
            ):
                for row, cap in zip(self._level(s, level), caps, strict=True):
                    row.caption = cap
            for root in self._level(s, "video"):
                root.caption = captions.summary
            self._done(s, "captions")

    def write_embeddings(self, made: TextEmbeddings, library_id: int) -> None:
        """The text units and their vectors, not yet in the search indexes (the memory stage
        decides what joins them)."""
        with self.store.session() as s:
            s.execute(
                delete(EmbeddingRow).where(
                    EmbeddingRow.video_id == self.video_id, EmbeddingRow.modality == "text"
                )
            )
            shot_ids = [sh.id for sh in self._level(s, "shot")]
            added = [
                EmbeddingRow(
                    library_id=library_id,
                    video_id=self.video_id,
                    kind=unit.kind,
                    start=unit.start,
                    end=unit.end,
                    text=unit.text,
                    modality=made.modality,
                    model=made.model,
                    space=made.space,
                    vector=vector_bytes(vec),
                    retained=False,  # the memory stage decides
                    segment_id=shot_ids[unit.segment_ordinal]
                    if unit.segment_ordinal is not None
                    else unit.segment_id,
                )
                for unit, vec in zip(made.units, made.vectors, strict=True)
            ]
            s.add_all(added)
            shot_text = {
                shot_ids[u.segment_ordinal]: u.text for u in made.units if u.segment_ordinal is not None
            }
            captions = {g.id: g.caption or "" for g in self._segments(s, Segment.caption.is_not(None))}
            visual = s.scalars(
                select(EmbeddingRow)
                .where(EmbeddingRow.video_id == self.video_id, EmbeddingRow.modality == "visual")
                .order_by(EmbeddingRow.id)
            ).all()
            for row in visual:  # a visual hit shows what is known of its shot
                sid = row.segment_id or -1
                row.text = shot_text.get(sid) or captions.get(sid) or row.text
            self._done(s, "embeddings")

    def memory_inputs(self, options: MemoryOptions) -> MemoryInputs:
        """The library's gate (its bank as kept so far), this video's units and the bank's size."""
        with self.store.session() as s:
            library_id = self.store.get_video(s, self.video_id).library_id
            units = video_units(s, self.video_id)
            return MemoryInputs(
                library_id,
                load_gate(s, library_id, options),
                units,
                budget(s, library_id, options, len(units)),
            )

    def write_memory(self, inputs: MemoryInputs, decisions: Sequence[Decision]) -> None:
        """What the gate kept, and then the search indexes: the video's retained rows join them
        (appended), and a space that lost rows of earlier videos (merged or evicted) is rebuilt."""
        with self.store.session() as s:
            stored = store_decisions(s, inputs.library_id, [self.video_id], inputs.gate, decisions)
            spaces: dict[str, list[int]] = {}
            if stored.added:
                for rid, space in s.execute(
                    select(EmbeddingRow.id, EmbeddingRow.space).where(EmbeddingRow.id.in_(stored.added))
                ):
                    spaces.setdefault(space, []).append(rid)
            self._done(s, "memory")
        lib = inputs.library_id
        for space, ids in spaces.items():
            with self.store.session() as s:
                vecs = dict(
                    s.execute(
                        select(EmbeddingRow.id, EmbeddingRow.vector).where(EmbeddingRow.id.in_(ids))
                    ).all()
                )
            ids.sort()
            self.store.vectors.add(
                lib, space, ids, np.stack([np.frombuffer(vecs[i], np.float32) for i in ids])
            )
        if stored.dropped:
            with self.store.session() as s:
                every = set(
                    s.scalars(select(EmbeddingRow.space).where(EmbeddingRow.library_id == lib).distinct())
                )
            for space in every:
                self.store.vectors.rebuild(lib, space)
        self.store.lexical.add(
            lib, stored.added
        )  # the BM25 postings and scoping metadata, in step with FAISS

    # -- helpers ---------------------------------------------------------------------------------

    def _job(self, s: Session) -> IngestJob:
        job = s.scalar(
            select(IngestJob).where(IngestJob.video_id == self.video_id).order_by(IngestJob.created_at.desc())
        )
        if job is None:
            job = IngestJob(video_id=self.video_id, status="running", stages_done=[])
            s.add(job)
            s.flush()
        return job

    def _done(self, s: Session, stage: str) -> None:
        job = self._job(s)
        done = {*job.stages_done, stage}
        job.stages_done = [st for st in STAGES if st in done]  # in stage order, whichever finished first
        job.progress = 1.0
        if stage in self.started:
            took = round(time.monotonic() - self.started[stage], 3)
            job.stage_seconds = {**(job.stage_seconds or {}), stage: took}

    def _segments(self, s: Session, *where: ColumnElement[bool]) -> list[Segment]:
        return list(
            s.scalars(
                select(Segment).where(Segment.video_id == self.video_id, *where).order_by(Segment.ordinal)
            )
        )

    def _level(self, s: Session, level: str) -> list[Segment]:
        """The video's segments of one level, in order."""
        return self._segments(s, Segment.level == level)

    def _cues(self, s: Session) -> list[TranscriptCue]:
        return list(
            s.scalars(
                select(TranscriptCue)
                .where(TranscriptCue.video_id == self.video_id)
                .order_by(TranscriptCue.start)
            )
        )

    def _screen_text(self, s: Session) -> list[ScreenText]:
        return list(
            s.scalars(
                select(ScreenText).where(ScreenText.video_id == self.video_id).order_by(ScreenText.start)
            )
        )

    def _tags(self, s: Session) -> list[Tag]:
        return list(s.scalars(select(Tag).where(Tag.video_id == self.video_id).order_by(Tag.score.desc())))

    def _seen_text(self, s: Session, shot_rows: Sequence[Segment]) -> dict[int, str]:
        """Per shot ordinal: what the vision stage read (`on screen: …`) and its tags (`tags: …`:
        labels, faces and people are candidates, not facts; see indexers.captions), as searchable
        words."""
        ordinal = {sh.id: sh.ordinal for sh in shot_rows}
        texts: dict[int, list[str]] = {}
        for t in self._screen_text(s):
            texts.setdefault(ordinal.get(t.segment_id or -1, -1), []).append(t.text)
        tags: dict[int, list[str]] = {}
        for g in self._tags(s):
            name = g.name if g.kind == "label" else (f"{g.count} {g.name}s" if g.count > 1 else f"a {g.name}")
            tags.setdefault(ordinal.get(g.segment_id or -1, -1), []).append(name)
        out = {}
        for i in set(texts) | set(tags):
            parts = []
            if i in texts:
                parts.append("on screen: " + " / ".join(texts[i]))
            if i in tags:
                parts.append("tags: " + ", ".join(tags[i]))
            out[i] = "; ".join(parts)
        return out


def _spoken(words: Sequence[TimedText], start: float, end: float) -> str:
    """The words (or cues, when there are no word times) whose middle falls inside [start, end)."""
    return " ".join(w for a, b, w in words if start <= (a + b) / 2 < end).strip()


def _containing(parents: Sequence[Segment], t: float) -> Segment:
    """The parent whose span holds time t (parents tile the timeline in order)."""
    for p in parents:
        if p.start <= t + 1e-6 < p.end or p is parents[-1]:
            return p
    return parents[-1]
