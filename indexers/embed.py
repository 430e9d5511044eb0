"""The units that are embedded and searched: transcript cues and windows, shots with speech, scenes
and chapters (the words spoken in them).

The encoders themselves live in memory.runtime.text, shared with the query side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from indexers.transcript import Cue


@dataclass
class Unit:
    """A searchable span: what it is (`window` | `shot` | `scene` | `chapter`), where, and the text
    that describes it."""

    kind: str
    start: float
    end: float
    text: str
    segment_ordinal: int | None = None  # the shot it belongs to, for kind == "shot"
    segment_id: int | None = None  # the scene or chapter it is, for those kinds


def transcript_windows(cues: Sequence[Cue], seconds: float = 20.0, max_words: int = 80) -> list[Unit]:
    """Consecutive cues grouped into windows of about `seconds` (never splitting a cue)."""
    units: list[Unit] = []
    group: list[Cue] = []
    words = 0
    for cue in cues:
        n = len(cue.text.split())
        if group and (cue.end - group[0].start > seconds or words + n > max_words):
            units.append(_window(group))
            group, words = [], 0
        group.append(cue)
        words += n
    if group:
        units.append(_window(group))
    return units


def cue_units(cues: Sequence[Cue]) -> list[Unit]:
    """One unit per transcript cue: the finest level, where answer spans are cut to the sentence
    (reasoning.refine reads their vectors to find where an answer starts and ends)."""
    return [Unit("cue", c.start, c.end, c.text) for c in cues if c.text.strip()]


def _window(group: list[Cue]) -> Unit:
    return Unit("window", group[0].start, max(c.end for c in group), " ".join(c.text for c in group))


def shot_units(
    shots: Sequence[tuple[float, float]], cues: Sequence[Cue], seen: Mapping[int, str] | None = None
) -> list[Unit]:
    """One unit per shot with speech or something seen: the words spoken inside it (word times when
    known), then what the vision stage read and recognised (`seen`, by shot ordinal)."""
    units = []
    for i, (start, end) in enumerate(shots):
        parts: list[str] = []
        for cue in cues:
            if cue.end <= start or cue.start >= end:
                continue
            if cue.words:
                parts.extend(w.text for w in cue.words if start <= (w.start + w.end) / 2 < end)
            else:
                parts.append(cue.text)
        text = " ".join(parts).strip()
        if seen and seen.get(i):
            text = f"{text} ({seen[i]})" if text else seen[i]
        if text:
            units.append(Unit("shot", start, end, text, i))
    return units


def span_units(
    kind: str,
    spans: Sequence[tuple[int, float, float]],
    cues: Sequence[Cue],
    captions: Mapping[int, str] | None = None,
) -> list[Unit]:
    """One unit per (segment id, start, end) with a caption or speech: its caption (by segment id),
    then the cues mostly inside it, in order."""
    units = []
    for seg_id, start, end in spans:
        text = " ".join(
            c.text for c in cues if min(c.end, end) - max(c.start, start) > 0.5 * max(c.end - c.start, 1e-6)
        ).strip()
        caption = (captions or {}).get(seg_id, "").strip()
        if caption:
            text = f"{caption} {text}".strip()
        if text:
            units.append(Unit(kind, start, end, text, segment_id=seg_id))
    return units


def chunks(text: str, max_words: int = 100) -> list[str]:
    """A long text cut into pieces the text encoder reads whole (MiniLM stops at 256 tokens)."""
    words = text.split()
    return [" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words)] or [""]
