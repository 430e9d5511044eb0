"""`vidmem eval tutorialvqa`: moment retrieval on TutorialVQA, run the way the benchmark prescribes.

The data folder holds `helpx_photoshop_tutorials.events.json` (each video's sentences), `videos.json`
(the answer key: segments and their times) and one `NAME.json` per split (questions with the
sentence range of their answer). What the system sees is only each sentence's `sent`, `begin` and
`end`: every video becomes a subtitle track (one cue per sentence, null times skipped) and is
ingested as a transcript-only item through the normal ingestion path. The answer key is read only
to score. For each question the project's normal retrieval (`reasoning.retrieve`) returns its top
moment, inside the question's video (`single`) or across all items (`library`); a hit is an IoU with
the gold span of at least 0.3 / 0.5 / 0.7, in the right video. Figures are percentages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kernels.timecode import hms

if TYPE_CHECKING:
    from indexers import IngestOptions
    from memory import Store
    from memory.runtime.text import SentenceEmbedder
    from reasoning.refine import SpanScorer

EVENTS = "helpx_photoshop_tutorials.events.json"
KEY = "videos.json"
LIBRARY = "tutorialvqa"


@dataclass
class Question:
    video: str  # the dataset's video id
    text: str
    start: float  # gold span, seconds
    end: float


def read_tracks(data: Path) -> dict[str, list[tuple[float, float, str]]]:
    """Per dataset video id, its sentences as (begin, end, text) in sentence order; nothing else."""
    events = json.loads((data / EVENTS).read_text())
    tracks = {}
    for video in events:
        sentences = [s for seg in video["segments"] for s in seg["sentences"]]
        sentences.sort(key=lambda s: int(s["sent_id"]))
        tracks[str(video["video_id"])] = [
            (float(s["begin"]), float(s["end"]), str(s["sent"]).strip())
            for s in sentences
            if s.get("begin") is not None and s.get("end") is not None
        ]
    return tracks


def read_questions(data: Path, split: str) -> list[Question]:
    """The split's questions with their gold spans, from the answer key."""
    path = data / f"{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such split (--split NAME reads NAME.json from --data)")
    key = {str(v["video_id"]): v for v in json.loads((data / KEY).read_text())}
    out = []
    for q in json.loads(path.read_text()):
        vid = str(q["video_id"])
        seg = next(
            s
            for s in key[vid]["segments"]
            if (s["sentence_indexes"]["start"], s["sentence_indexes"]["end"])
            == (q["answer_start"], q["answer_end"])
        )
        out.append(
            Question(
                vid, str(q["question"]), float(seg["timestamps"]["start"]), float(seg["timestamps"]["end"])
            )
        )
    return out


def srt(sentences: list[tuple[float, float, str]]) -> str:
    """One SRT cue per sentence, in order (a zero-length sentence gets 10 ms)."""
    return "\n".join(
        f"{i}\n{_ts(b)} --> {_ts(max(e, b + 0.01))}\n{t}\n" for i, (b, e, t) in enumerate(sentences, 1)
    )


def _ts(seconds: float) -> str:
    return hms(seconds, millis=True).replace(".", ",")


def ingest_tracks(
    store: Store,
    data: Path,
    workdir: Path,
    options: IngestOptions,
    cache_dir: Path,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, str]:
    """Ingest every track (once: the content hash finds it again); dataset id -> vidmem video id."""
    from indexers import ingest

    tracks = read_tracks(data)
    workdir.mkdir(parents=True, exist_ok=True)
    ids = {}
    for n, (vid, sentences) in enumerate(sorted(tracks.items()), 1):
        path = workdir / f"tutorialvqa-{vid}.srt"
        text = srt(sentences)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        ids[vid] = ingest(store, path, options, cache_dir).video_id
        if progress:
            progress("ingest", n / len(tracks))
    return ids


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def evaluate(
    store: Store,
    questions: list[Question],
    ids: dict[str, str],
    mode: str = "single",
    embedder: SentenceEmbedder | None = None,
    progress: Callable[[str, float], None] | None = None,
    refine: bool = True,
    scorer: SpanScorer | None = None,
    top: int = 1,
) -> dict[str, float]:
    """R1@0.3/0.5/0.7 and mean IoU (percent) of the top moment per question, and n; with `top` 5,
    also R5@0.3/0.5 (a hit among the first five moments).

    `scorer`: a `reasoning.refine.SpanScorer` to cut spans with instead of the shipped
    `span_model.json` (the video-split folds of tests/fit/span_folds.py); None keeps the default.
    """
    from memory.runtime.text import SentenceEmbedder  # noqa: F811 (imported when first needed)
    from reasoning.retrieve import RetrieveOptions, retrieve

    if mode not in ("single", "library"):
        raise ValueError(f"mode must be single or library, got {mode!r}")
    enc = embedder or SentenceEmbedder()
    opts = RetrieveOptions(top=top, refine=refine)
    ious = []
    best_of: list[float] = []  # the best IoU among the first `top` moments
    started = time.perf_counter()
    for n, q in enumerate(questions, 1):
        video = ids[q.video]
        scope = video if mode == "single" else None
        # a blank question (train has one) finds nothing: a miss, where search would refuse it
        hits = retrieve(store, q.text, LIBRARY, scope, opts, enc, scorer=scorer) if q.text.strip() else []
        each = [iou((h.start, h.end), (q.start, q.end)) if h.video_id == video else 0.0 for h in hits[:top]]
        ious.append(each[0] if each else 0.0)
        best_of.append(max(each, default=0.0))
        if progress:
            progress("questions", n / len(questions))
    n = len(ious)
    result = {f"R1@{t}": round(100.0 * sum(x >= t for x in ious) / max(n, 1), 2) for t in (0.3, 0.5, 0.7)}
    if top >= 5:
        result |= {f"R5@{t}": round(100.0 * sum(x >= t for x in best_of) / max(n, 1), 2) for t in (0.3, 0.5)}
    result["mIoU"] = round(100.0 * sum(ious) / max(n, 1), 2)
    result["n"] = n
    result["seconds_per_question"] = round((time.perf_counter() - started) / max(n, 1), 4)
    return result
