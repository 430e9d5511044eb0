"""Captions for every level of a video, composed bottom-up: shot -> scene -> chapter -> video
(TimeChat-Captioner style). A scene is captioned from its own shots, a chapter from its own scenes and
the summary from the chapters, so a caption only ever speaks about its own span.

What a caption may state as a fact: what was said (the transcript) and what was read (on-screen
text). A visual finding -- an ImageNet label, a face or people count -- enters caption prose (and
the LLM's prompt) only when the calibration measured its precision at `CaptionOptions.prose_precision`
or more (`VISUAL_PRECISION`). Today none does: EfficientNet-Lite0's labels that pass the threshold
were right 4 times in 21 on the judged real frames (docs/benchmarks/labels.md), and no precision of
the face and people detectors was measured on frames held out from setting their thresholds. So
they stay *tags*: stored, searchable, shown as tags beside the caption, never claimed in it.

Two captioners, chosen by name (`CAPTIONERS`):

- `composed` (embedded default): shot captions are written deterministically from the shot's facts
  (on-screen text, then the words spoken) -- no model call per shot, because a 2-hour video has ~1500
  shots. Scenes, chapters and the summary are condensed by the embedded LLM (`memory.runtime.llm`) in
  batches. SmolLM2-135M invents things, so every generated caption passes a grounding guard: a
  sentence with a content word that is not in the text the LLM was given is dropped, and so is one
  that joins words no sentence of that text joins ("the rabbit is a bird" from "a big rabbit" and
  "a small bird sits on a branch"); when nothing survives, the extractive summary of the span is
  used instead. With `llm=None` every higher level is
  that extractive summary.
- `openai-vlm`: shot captions from the shot's keyframes, sent as images to a vision-language model
  behind an OpenAI-compatible endpoint (e.g. vLLM serving Qwen2.5-VL); the higher levels are condensed
  by the same endpoint as text, through the same grounding guard.

The extractive summary of a scene, chapter or video (`central_summary`): its transcript sentences and
on-screen lines, each embedded once per video with the project's text embedder (MiniLM), ranked by
centrality -- the mean cosine similarity to the span's other sentences, so a remark off the span's
topic ranks last -- taken greedily while they fit the word budget (skipping near-repeats), and
quoted in time order. The video summary is computed the same way over the whole video's sentences,
not by joining the chapter captions.
"""

from __future__ import annotations

import base64
import bisect
import dataclasses
import itertools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexers.vision import FACE_PRECISION, LABEL_PRECISION, PEOPLE_PRECISION
from memory.runtime import Registry
from memory.runtime.llm import LLM, Message, make_llm

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
"""Called with the fraction of the captioning work done, 0.0 .. 1.0."""

Embed = Callable[[Sequence[str]], np.ndarray]
"""Texts -> unit vectors (n, d), e.g. `memory.runtime.text.SentenceEmbedder().embed`."""

VISUAL_PRECISION: dict[str, float | None] = {
    "label": LABEL_PRECISION,
    "face": FACE_PRECISION,
    "person": PEOPLE_PRECISION,
}
"""Measured precision of each kind of visual finding that passes its threshold (None: not measured),
from tests/fit/calibrate_labels.py via indexers.vision. A kind is stated in caption prose only when
its precision reaches `CaptionOptions.prose_precision`; otherwise it is a tag only."""


@dataclass
class SpanFacts:
    """What the embedded models really saw and heard in one span (a shot; or a scene or chapter when
    there are no shots, e.g. a transcript-only item or an audio file). Captions may say nothing else."""

    start: float
    """Seconds from the start of the video."""
    end: float
    """Seconds from the start of the video (exclusive)."""
    speech: str = ""
    """Transcript words spoken inside the span."""
    screen_text: list[str] = field(default_factory=list)
    """On-screen text (OCR) lines, de-duplicated."""
    labels: list[tuple[str, float]] = field(default_factory=list)
    """(ImageNet class name, score 0..1) of what the visual classifier saw."""
    faces: int = 0
    """Most faces seen on one sampled frame."""
    people: int = 0
    """Most people (HOG detector) seen on one sampled frame."""
    keyframes: list[bytes] = field(default_factory=list)
    """JPEG bytes of the span's keyframes, for captioners that look at images."""


@dataclass
class GuardStats:
    """How the grounding guard treated the LLM's captions: the share it had to cut or replace says how
    much the LLM invents on this material."""

    generated: int = 0
    """Captions the LLM wrote."""
    kept: int = 0
    """Used as written (after trimming to the word limit)."""
    trimmed: int = 0
    """Used after dropping sentences with unsupported words."""
    rejected: int = 0
    """Replaced by the extractive caption: nothing the LLM wrote was supported."""

    def add(self, other: GuardStats) -> None:
        self.generated += other.generated
        self.kept += other.kept
        self.trimmed += other.trimmed
        self.rejected += other.rejected


@dataclass
class Captions:
    """One caption per shot, scene and chapter (in input order) and one summary of the video."""

    shots: list[str]
    scenes: list[str]
    chapters: list[str]
    summary: str
    guard: GuardStats = field(default_factory=GuardStats)
    """What the grounding guard did to the LLM's output (all zero without an LLM)."""


@dataclass
class CaptionOptions:
    captioner: str = "composed"
    """`composed` (captions from the embedded models' facts, condensed by an LLM) or `openai-vlm`
    (a vision-language model at `url` looks at the keyframes)."""
    llm: str | None = "smollm2"
    """LLM that condenses scene, chapter and video captions for `composed`: an embedded model name
    (`smollm2`), a local transformers folder, or None / "none" for purely extractive captions (no LLM:
    fast, and nothing can be invented). With `url` set, the model served there is used instead."""
    url: str | None = None
    """Base URL of an OpenAI-compatible server, e.g. `http://127.0.0.1:8000/v1` (vLLM). Required by
    `openai-vlm`; with `composed` it replaces the embedded LLM."""
    model: str | None = None
    """Model name to request from the server at `url` (what vLLM was started with)."""
    api_key: str | None = None
    """API key for the server at `url`; None for a local vLLM started without `--api-key`."""
    batch_size: int = 16
    """Captions generated per LLM call by the embedded model (a CPU batch: 16 gives ~3x the captions
    per second of one at a time on 2 cores, see `memory.runtime.llm.LocalLLM`), and requests per progress
    step for a server."""
    max_concurrency: int = 4
    """Requests in flight at once to the server at `url` (vLLM batches them on the GPU)."""
    timeout: float = 120.0
    """Seconds one server request may take before it fails with `LLMError`."""
    max_retries: int = 2
    """Retries of a failed server request (connection errors, HTTP 429/5xx), with backoff, before
    `LLMError`."""
    keyframes_per_shot: int = 3
    """Most keyframes sent to the VLM for one shot (evenly chosen); more cost tokens, not accuracy."""
    prose_precision: float = 0.9
    """Measured precision (share right, 0..1) a kind of visual finding -- ImageNet labels, faces,
    people -- needs before a caption states it as a fact or the LLM is given it as one; below it, or
    unmeasured, the finding stays a tag (stored, searchable, shown beside the caption). No kind
    reaches 0.9 today (labels measured 0.19, faces and people unmeasured: `VISUAL_PRECISION`), so
    captions state only speech and on-screen text."""
    min_label_score: float = 0.3
    """ImageNet labels below this score (0..1) are not mentioned even when labels are stated in
    prose (see `prose_precision`)."""
    shot_words: int = 25
    """Most words in a shot caption."""
    scene_words: int = 25
    """Most words in a scene caption."""
    chapter_words: int = 40
    """Most words in a chapter caption."""
    summary_words: int = 60
    """Most words in the video summary."""
    max_input_words: int = 400
    """Most words of child captions given to the LLM for one caption; a chapter with many scenes is
    represented by evenly spaced ones (keeps CPU prompts short: SmolLM2 reads ~1 k tokens/s)."""
    grounding: bool = True
    """Drop LLM sentences with words absent from the LLM's input (see module docstring). Turn off
    only for a strong model whose paraphrases you trust."""

    def __post_init__(self) -> None:
        if isinstance(self.llm, str) and self.llm.strip().lower() in ("", "none"):
            self.llm = None
        for name in ("batch_size", "max_concurrency", "keyframes_per_shot", "max_input_words"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("shot_words", "scene_words", "chapter_words", "summary_words"):
            if getattr(self, name) < 5:
                raise ValueError(f"{name} must be >= 5 words, got {getattr(self, name)}")
        if not 0.0 <= self.min_label_score <= 1.0:
            raise ValueError(f"min_label_score is a probability in [0, 1], got {self.min_label_score}")
        if not 0.0 <= self.prose_precision <= 1.0:
            raise ValueError(f"prose_precision is a share in [0, 1], got {self.prose_precision}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.url and not self.model:
            raise ValueError(
                f"url={self.url!r} needs model: the name the server serves (what vLLM was started with)"
            )
        if self.timeout <= 0:
            raise ValueError(f"timeout is in seconds and must be > 0, got {self.timeout}")


# ---------------------------------------------------------------------------------------------------
# Facts -> extractive text


@dataclass
class Evidence:
    """The facts of a span merged from its parts: what an extractive caption may draw on."""

    screen_text: dict[str, int] = field(default_factory=dict)
    """OCR line -> in how many parts it was seen (titles recur, so they rank first)."""
    labels: dict[str, float] = field(default_factory=dict)
    """Label -> summed score over the parts (recurring, confident labels rank first)."""
    faces: int = 0
    people: int = 0
    speech: list[str] = field(default_factory=list)
    """Speech of each part, in time order."""

    @classmethod
    def of(cls, facts: SpanFacts) -> Evidence:
        ev = cls(faces=facts.faces, people=facts.people)
        for line in facts.screen_text:
            line = " ".join(line.split())
            if line:
                ev.screen_text[line] = 1
        for name, score in facts.labels:
            ev.labels[name] = max(ev.labels.get(name, 0.0), float(score))
        if facts.speech.strip():
            ev.speech.append(" ".join(facts.speech.split()))
        return ev

    def merge(self, other: Evidence) -> None:
        for line, n in other.screen_text.items():
            self.screen_text[line] = self.screen_text.get(line, 0) + n
        for name, score in other.labels.items():
            self.labels[name] = self.labels.get(name, 0.0) + score
        self.faces = max(self.faces, other.faces)
        self.people = max(self.people, other.people)
        self.speech += other.speech


def _short_label(name: str) -> str:
    """`lab coat, laboratory coat` -> `lab coat`: ImageNet names list synonyms after commas."""
    return name.split(",")[0].strip().replace("_", " ")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _words(text: str) -> list[str]:
    return text.split()


def _truncate(text: str, words: int) -> str:
    w = _words(text)
    if len(w) <= words:
        return text.strip()
    return " ".join(w[:words]).rstrip(",;:") + "…"


NOTHING = "No speech or on-screen text."
"""The caption of a span with nothing a caption may state (its tags may still name what was seen)."""


def stated_kinds(options: CaptionOptions) -> frozenset[str]:
    """The kinds of visual finding (`label`, `face`, `person`) captions may state as facts: those whose
    measured precision reaches `options.prose_precision` (see `VISUAL_PRECISION`)."""
    return frozenset(
        kind for kind, p in VISUAL_PRECISION.items() if p is not None and p >= options.prose_precision
    )


def for_prose(facts: SpanFacts, kinds: frozenset[str]) -> SpanFacts:
    """The facts a caption may state: visual findings of the other kinds removed (they stay tags)."""
    return dataclasses.replace(
        facts,
        labels=facts.labels if "label" in kinds else [],
        faces=facts.faces if "face" in kinds else 0,
        people=facts.people if "person" in kinds else 0,
    )


def extractive_caption(ev: Evidence, words: int, min_label_score: float = 0.3, per_part: bool = False) -> str:
    """A caption made only of facts: on-screen text, labels, people, then as much speech as fits in
    `words`. Titles seen in more parts and labels seen more confidently come first. With `per_part`
    the speech budget is shared by the parts (a chapter quotes each scene a little), otherwise the
    speech is quoted from its start."""
    parts: list[str] = []
    used = 0
    if ev.screen_text:
        lines = sorted(ev.screen_text, key=lambda s: -ev.screen_text[s])  # stable: ties keep time order
        shown: list[str] = []
        room = max(4, int(words * 0.4))  # leave most of the caption to labels, people and speech
        for line in lines:
            if shown and room < 3:
                break
            shown.append(_truncate(line, max(3, room)))
            room -= len(_words(shown[-1]))
        parts.append("On screen: " + ", ".join(f'"{s}"' for s in shown) + ".")
    seen = [
        _short_label(n)
        for n, s in sorted(ev.labels.items(), key=lambda kv: -kv[1])
        if s >= min_label_score and _short_label(n)
    ]
    seen = list(dict.fromkeys(seen))[: 2 if words <= 30 else 4]
    if seen:
        parts.append("Seen: " + ", ".join(seen) + ".")
    who = []
    if ev.faces:
        who.append(_count(ev.faces, "face", "faces"))
    if ev.people:
        who.append(_count(ev.people, "person", "people"))
    if who:
        parts.append(", ".join(who) + ".")
    used = sum(len(_words(p)) for p in parts)
    left = words - used - 1
    if ev.speech and left >= 3:
        if per_part and len(ev.speech) > 1:
            each = max(3, left // len(ev.speech))
            pieces: list[str] = []
            room = left
            for said in ev.speech:
                if room < min(each, len(_words(said))):
                    break
                pieces.append(_truncate(said, each))
                room -= len(_words(pieces[-1]))
            quote = " ".join(pieces)
        else:
            quote = _truncate(" ".join(ev.speech), left)
        parts.append(f'Says: "{quote}"')
    if not parts:
        return NOTHING
    return _truncate(" ".join(parts), words)


# ---------------------------------------------------------------------------------------------------
# Extractive summaries: the most central sentences


@dataclass(frozen=True)
class Sentence:
    """One unit an extractive summary may quote: a transcript sentence or a line read on screen."""

    start: float
    """Seconds from the start of the video."""
    end: float
    """Seconds from the start of the video."""
    text: str
    kind: str = "speech"
    """`speech` (transcript) or `screen` (on-screen text)."""

    @property
    def mid(self) -> float:
        return (self.start + self.end) / 2


_SENTENCE_END = re.compile(r"[.!?…][\"”')\]]*$")


def split_sentences(
    words: Sequence[tuple[float, float, str]], max_words: int = 40, max_gap: float = 1.5
) -> list[Sentence]:
    """Transcript sentences from timed words `(start, end, text)` in seconds. An item may hold several
    words (a subtitle cue without word times): its words then share its span evenly. A sentence ends
    at closing punctuation, at a pause longer than `max_gap` seconds (unpunctuated transcripts), or
    after `max_words` words (a run-on sentence is quoted in pieces, not truncated)."""
    tokens: list[tuple[float, float, str]] = []
    for a, b, text in words:
        parts = text.split()
        step = (b - a) / max(1, len(parts))
        tokens += [(a + k * step, a + (k + 1) * step, w) for k, w in enumerate(parts)]
    out: list[Sentence] = []
    current: list[tuple[float, float, str]] = []

    def close() -> None:
        if current:
            out.append(Sentence(current[0][0], current[-1][1], " ".join(w for _, _, w in current)))
            current.clear()

    for token in tokens:
        if current and token[0] - current[-1][1] > max_gap:
            close()
        current.append(token)
        if _SENTENCE_END.search(token[2]) or len(current) >= max_words:
            close()
    close()
    return out


def sentences_of(facts: Sequence[SpanFacts]) -> list[Sentence]:
    """The sentences of spans that carry their own facts (shots; or scenes without shots): each span's
    speech split into sentences spread over the span, and its on-screen lines, in time order."""
    out: list[Sentence] = []
    for f in facts:
        if f.speech.strip():
            out += split_sentences([(f.start, f.end, f.speech)])
        out += [Sentence(f.start, f.end, " ".join(line.split()), "screen") for line in f.screen_text]
    return sorted((s for s in out if s.text), key=lambda s: s.start)


def centrality(vectors: np.ndarray) -> np.ndarray:
    """Mean cosine similarity of each unit vector (n, d) to the n - 1 others (n,); 1 alone."""
    n = len(vectors)
    if n < 2:
        return np.ones(n, np.float32)
    sims = vectors @ vectors.T  # (n, n)
    return (sims.sum(1) - np.diag(sims)) / (n - 1)


def central_summary(
    sentences: Sequence[Sentence], vectors: np.ndarray, words: int, redundancy: float = 0.9
) -> str:
    """An extractive summary in at most `words` words: the sentences most central to the others
    (`centrality`; `vectors` are their unit embeddings, (n, d)), taken in that order while they fit,
    a sentence `redundancy`-similar (cosine) to one already taken skipped, then quoted in time order:
    `On screen: "…". Says: "…"`. The most central sentence is cut to fit when nothing else would; an
    empty input gives ''."""
    if not sentences:
        return ""
    first: dict[str, int] = {}
    for i, s in enumerate(sentences):  # a line seen again (a title on every slide) counts once
        first.setdefault(" ".join(s.text.lower().split()), i)
    keep = sorted(first.values())
    sents = [sentences[i] for i in keep]
    vecs = vectors[keep]
    score = centrality(vecs)
    budget = words - 3  # the framing words "On screen:" and "Says:"
    picked: list[int] = []
    for i in sorted(range(len(sents)), key=lambda i: (-score[i], sents[i].start)):
        size = len(_words(sents[i].text))
        if picked and float(np.max(vecs[picked] @ vecs[i])) > redundancy:
            continue
        if size <= budget:
            picked.append(i)
            budget -= size
        elif not picked:  # the most central sentence alone is too long: quote its start
            picked.append(i)
            budget = 0
        if budget < 3:
            break
    chosen = sorted(picked, key=lambda i: sents[i].start)
    screen = [sents[i].text for i in chosen if sents[i].kind == "screen"]
    speech = [sents[i].text for i in chosen if sents[i].kind != "screen"]
    parts = []
    if screen:
        parts.append("On screen: " + ", ".join(f'"{t}"' for t in screen) + ".")
    if speech:
        parts.append(f'Says: "{" ".join(speech)}"')
    return _truncate(" ".join(parts), words)


def first_words_caption(sentences: Sequence[Sentence], words: int) -> str:
    """The baseline a central summary replaced: on-screen lines, then the speech from its start, cut
    at `words` (what extractive captions were before). Kept for the benchmark's comparison."""
    ev = Evidence()
    for s in sentences:
        if s.kind == "screen":
            ev.screen_text[s.text] = ev.screen_text.get(s.text, 0) + 1
    ev.speech = [s.text for s in sentences if s.kind != "screen"]
    return extractive_caption(ev, words)


# ---------------------------------------------------------------------------------------------------
# The grounding guard

_STOPWORD_LIST = """a an the and or but nor so yet if then than that this these those there here it its it's is are
    was were be been being am do does did doing have has had having of in on at to from by for with
    without about into onto over under up down out off as while when where who whom whose which what
    how why all any both each few more most other some such no not only own same too very can will
    just should would could may might must shall i me my we our us you your he him his she her they
    them their one also again further once s t don now"""
_STOPWORDS = frozenset(_STOPWORD_LIST.split())

_GENERIC_LIST = """video clip scene shot chapter part section summary caption screen text says say said saying
    speaker speaks speaking talks talking discusses discussing explains explaining describes
    describing mentions mentioning shows showing shown displays displaying displayed appears
    appearing visible seen see sees presents presenting introduces introducing begins beginning
    starts ends continues continuing followed following then next first later finally someone
    something"""
_GENERIC = frozenset(_GENERIC_LIST.split())
"""Framing words a caption may use without a fact behind them: they claim nothing about the content
("someone" only implies a speaker or an actor). Person and face words are not here: they need a face
or people count behind them."""

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _stem(word: str) -> str:
    """A crude suffix stripper: enough to match `pours`/`pouring`/`poured` and `slides`/`slide`."""
    word = word.removesuffix("'s")
    for suffix in ("ingly", "ing", "edly", "ed", "ies", "es", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word.rstrip("e")


def _content_words(text: str) -> list[str]:
    text = text.lower().replace("’", "'")
    return [w for w in _TOKEN.findall(text) if w not in _STOPWORDS and w not in _GENERIC]


def _support(text: str) -> set[str]:
    words = _TOKEN.findall(text.lower().replace("’", "'"))
    return {w for w in words} | {_stem(w) for w in words}


def _supported(word: str, support: set[str]) -> bool:
    if word.isdigit():  # numbers must match exactly: "step 4" is not "step 3"
        return word in support
    return word in support or _stem(word) in support


_SENTENCE = re.compile(r"(?:(?<=[.!?…])|(?<=[.!?…][\"”')]))\s+|\n+")  # a closing quote may follow
_CLAUSE = re.compile(r"[;:]|\b(?:and|but|while|then|also|or)\b", re.IGNORECASE)
"""Where a generated sentence may join facts from different sentences of its source."""
_PREAMBLE = re.compile(r"^\s*(?:[-*•]|\d+[.)]|caption\s*:|summary\s*:|here is[^:]*:)\s*", re.IGNORECASE)


def _unrepeat(sentence: str) -> str:
    """The sentence without repeated comma-separated clauses: small LLMs list the same item again and
    again until the token limit, which a word-support check alone lets through."""
    body = sentence.rstrip(".!?…; ")
    end = sentence[len(body) :].strip()
    clauses: dict[str, str] = {}
    for clause in body.split(","):
        clause = clause.strip()
        if clause:
            clauses.setdefault(clause.lower(), clause)
    return ", ".join(clauses.values()) + end


def _joined(sentence: str, units: list[set[str]]) -> bool:
    """Whether every two content words next to each other in a clause of `sentence` are supported by
    one sentence of the source (`units`: the support of each): a clause may restate a fact, not weld
    two facts into a third. Clauses split at "and", "but", ";", ":"... where joining is said."""
    for clause in _CLAUSE.split(sentence):
        words = _content_words(clause)
        for a, b in itertools.pairwise(words):
            if a != b and not any(_supported(a, u) and _supported(b, u) for u in units):
                return False
    return True


def ground(generated: str, source: str, cut: bool = False, pairs: bool = True) -> tuple[str, int]:
    """The sentences of `generated` whose content words all occur in `source` (after lower-casing and
    suffix stripping), and how many sentences were dropped. Framing words ("shows", "speaker") and
    stop words need no support; numbers must match exactly. Within a clause, two content words next
    to each other must also occur in one sentence of `source` (`_joined`): true words recombined into
    a false statement ("the rabbit is a bird") are dropped. A repeated sentence or clause is dropped
    silently: small LLMs loop. With `cut` (the reply ran into its token limit) an unfinished last
    sentence is dropped too: a fragment such as "The Great American West is a style" is a half-claim.
    Two facts joined by "and" pass, true or not together; the prompt's "only the facts given" and
    short limits are what keep that rare. `pairs=False`: words alone (the guard before the pair rule,
    for bench_captions)."""
    support = _support(source)
    units = [_support(unit) for unit in _SENTENCE.split(source) if unit.strip()]
    kept: list[str] = []
    dropped = 0
    seen: set[str] = set()
    pieces = [p for p in _SENTENCE.split(generated.strip()) if p.strip()]
    for n, raw in enumerate(pieces):
        sentence = _unrepeat(_PREAMBLE.sub("", raw).strip())
        if not sentence:
            continue
        if cut and n == len(pieces) - 1 and not sentence.rstrip("\"'”)").endswith((".", "!", "?", "…")):
            dropped += 1
            continue
        content = _content_words(sentence)
        if len(content) >= 6 and len(set(content)) < len(content) / 2:
            dropped += 1  # a degenerate loop ("Photoshop, Photoshop, ...") says nothing, true or not
            continue
        key = " ".join(content)
        if key in seen:
            continue
        seen.add(key)
        if (
            content
            and all(_supported(w, support) for w in content)
            and (not pairs or _joined(sentence, units))
        ):
            kept.append(sentence)
        else:
            dropped += 1
    return " ".join(kept), dropped


# ---------------------------------------------------------------------------------------------------
# Captioners


@dataclass
class CondenseRequest:
    """One caption to write from the captions of a span's parts (a scene from its shots, ...)."""

    level: str
    """`scene`, `chapter` or `video`."""
    start: float
    """Seconds."""
    end: float
    """Seconds."""
    parts: list[str]
    """Captions of the parts, in time order: the only text the caption may draw on."""
    words: int
    """Most words in the caption."""
    fallback: str
    """Extractive caption of the same span, used when nothing generated is supported."""


def _span(item: SpanFacts | tuple[float, float]) -> SpanFacts:
    return item if isinstance(item, SpanFacts) else SpanFacts(float(item[0]), float(item[1]))


def _members(children: Sequence[SpanFacts], parent: SpanFacts, last: bool) -> list[int]:
    """Indexes of the children whose midpoint lies in the parent span (the last span keeps its end)."""
    out = []
    for i, c in enumerate(children):
        mid = (c.start + c.end) / 2
        if parent.start <= mid < parent.end or (last and mid == parent.end):
            out.append(i)
    return out


class Captioner:
    """Base of captioners: one required method, `caption_shots`; `caption` drives the bottom-up
    composition and `condense` writes the higher levels (extractive unless a subclass has an LLM)."""

    name = "base"
    wants_keyframes = False
    """Whether `caption_shots` looks at `SpanFacts.keyframes` (the pipeline decodes them only then)."""

    def __init__(self, options: CaptionOptions | None = None, cache_dir: Path | None = None) -> None:
        self.options = options or CaptionOptions()
        self.cache_dir = cache_dir

    def caption_shots(self, shots: Sequence[SpanFacts]) -> list[str]:
        """One caption per shot, in order, each at most `options.shot_words` words."""
        raise NotImplementedError

    def condense(self, requests: Sequence[CondenseRequest]) -> tuple[list[str], GuardStats]:
        """One caption per request, in order, and what the grounding guard did. The base is extractive."""
        return [r.fallback for r in requests], GuardStats()

    def writes(self) -> bool:
        """Whether `condense` has a model to write with (else the higher levels are extractive)."""
        return False

    # -- the driver -------------------------------------------------------------------------------

    def caption(
        self,
        shots: Sequence[SpanFacts],
        scenes: Sequence[SpanFacts | tuple[float, float]],
        chapters: Sequence[SpanFacts | tuple[float, float]],
        duration: float,
        progress: Progress | None = None,
        sentences: Sequence[Sentence] | None = None,
        embed: Embed | None = None,
    ) -> Captions:
        """Captions of every level, bottom-up. `scenes` tile the video and hold whole shots; `chapters`
        hold whole scenes. They may be bare (start, end) spans, or `SpanFacts` carrying their own facts
        -- needed when there are no shots (a transcript-only item or an audio file), where a scene's
        speech is all there is. `duration` is in seconds.

        `sentences` are what the extractive summaries quote: the transcript's sentences and the
        on-screen lines with their times (the pipeline passes them whole, so a sentence spoken across
        a cut stays one); by default they are made from the facts (`sentences_of`). `embed` gives
        their vectors, each embedded once (default: MiniLM, `memory.runtime.text.SentenceEmbedder`)."""
        opts = self.options
        kinds = stated_kinds(opts)
        shots = [for_prose(s, kinds) for s in shots]
        scene_spans = [for_prose(_span(s), kinds) for s in scenes]
        chapter_spans = [for_prose(_span(c), kinds) for c in chapters]
        if sentences is None:
            with_facts = shots or [s for s in scene_spans if s.speech or s.screen_text] or chapter_spans
            sentences = sentences_of(with_facts)
        sentences = sorted(sentences, key=lambda s: s.mid)  # spans find theirs by midpoint
        bs = opts.batch_size
        total = max(1, len(shots) + len(scene_spans) + len(chapter_spans) + 1)
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(1.0, done / total))

        summarise = _Summariser(sentences, embed or _default_embed)

        shot_caps: list[str] = []
        for i in range(0, len(shots), bs):
            chunk = list(shots[i : i + bs])
            caps = self.caption_shots(chunk)
            if len(caps) != len(chunk):
                raise RuntimeError(f"{self.name}: {len(caps)} captions for {len(chunk)} shots")
            shot_caps += [
                _truncate(c, opts.shot_words)
                or extractive_caption(Evidence.of(s), opts.shot_words, opts.min_label_score)
                for c, s in zip(caps, chunk, strict=True)
            ]
            step(len(chunk))

        guard = GuardStats()
        scene_caps, g = self._level(
            "scene", scene_spans, list(shots), shot_caps, opts.scene_words, step, summarise
        )
        guard.add(g)
        chapter_caps, g = self._level(
            "chapter", chapter_spans, scene_spans, scene_caps, opts.chapter_words, step, summarise
        )
        guard.add(g)

        # The summary is condensed from the highest level that exists (with an LLM), or is the most
        # central sentences of the whole video (without one).
        if chapter_spans:
            tops, top_caps = chapter_spans, chapter_caps
        elif scene_spans:
            tops, top_caps = scene_spans, scene_caps
        else:
            tops, top_caps = list(shots), shot_caps
        ends = [t.end for t in tops]
        video = SpanFacts(min([0.0] + [t.start for t in tops]), max([float(duration)] + ends))
        summaries, g = self._level("video", [video], tops, top_caps, opts.summary_words, step, summarise)
        guard.add(g)
        summary = summaries[0] if tops else ""
        if progress is not None:
            progress(1.0)
        if guard.generated:
            log.info(
                "captions: the LLM wrote %d, kept %d, trimmed %d, replaced by facts %d (grounding guard)",
                guard.generated,
                guard.kept,
                guard.trimmed,
                guard.rejected,
            )
        return Captions(shot_caps, scene_caps, chapter_caps, summary, guard)

    def _level(
        self,
        level: str,
        spans: list[SpanFacts],
        children: Sequence[SpanFacts],
        child_caps: list[str],
        words: int,
        step: Callable[[int], None],
        summarise: _Summariser,
    ) -> tuple[list[str], GuardStats]:
        """Captions of `spans`, each from its own children and sentences only. Without a model: the
        span's extractive summary. With one: the children's captions when they fit (the extractive
        summary for the video), else the model's condensation of them, with the extractive summary
        as the guard's fallback."""
        opts = self.options
        caps: list[str] = [""] * len(spans)
        pending: list[tuple[int, CondenseRequest]] = []
        writes = self.writes()
        for k, span in enumerate(spans):
            last = k == len(spans) - 1
            extract = summarise(span.start, span.end, words, last) or NOTHING
            if not writes:
                caps[k] = extract
                continue
            idx = _members(children, span, last=last)
            own = Evidence.of(span)
            if idx and any(children[i].speech for i in idx):
                own.speech = []  # the children already quote this speech
            parts = list(
                dict.fromkeys(child_caps[i] for i in idx if child_caps[i] and child_caps[i] != NOTHING)
            )
            if own.speech or own.screen_text or own.labels or own.faces or own.people:
                # Facts given for the span itself (its speech when there are no shots): one more part.
                parts.append(extractive_caption(own, opts.max_input_words, opts.min_label_score))
            joined = _join(parts)
            if not parts:
                caps[k] = extract
            elif len(_words(joined)) <= words:
                # nothing to condense: the parts already fit (the video's own central sentences for
                # the summary, which is never the chapter captions joined)
                caps[k] = extract if level == "video" else joined
            else:
                pending.append(
                    (
                        k,
                        CondenseRequest(
                            level, span.start, span.end, _fit(parts, opts.max_input_words), words, extract
                        ),
                    )
                )
        if not pending:
            step(len(spans))
            return caps, GuardStats()
        step(len(spans) - len(pending))
        guard = GuardStats()
        for i in range(0, len(pending), opts.batch_size):
            chunk = pending[i : i + opts.batch_size]
            texts, g = self.condense([r for _, r in chunk])
            guard.add(g)
            for (k, r), text in zip(chunk, texts, strict=True):
                caps[k] = _truncate(text, r.words) if text.strip() else r.fallback
            step(len(chunk))
        return caps, guard


def _default_embed(texts: Sequence[str]) -> np.ndarray:
    from memory.runtime.text import SentenceEmbedder

    return SentenceEmbedder().embed(texts)


class _Summariser:
    """Extractive summaries of any span of one video: its sentences are embedded once (lazily, on
    the first span that needs more than one), then each span ranks its own."""

    def __init__(self, sentences: Sequence[Sentence], embed: Embed) -> None:
        self.sentences = list(sentences)  # sorted by midpoint
        self.mids = [s.mid for s in self.sentences]
        self.embed = embed
        self._vectors: np.ndarray | None = None

    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            texts = list(dict.fromkeys(s.text for s in self.sentences))
            at = {t: i for i, t in enumerate(texts)}
            unique = (
                np.asarray(self.embed(texts), dtype=np.float32) if texts else np.zeros((0, 1), np.float32)
            )
            self._vectors = unique[[at[s.text] for s in self.sentences]]
        return self._vectors

    def __call__(self, start: float, end: float, words: int, last: bool = False) -> str:
        """The summary of the sentences whose midpoint lies in [start, end) ([start, end] for the last
        span of a level), in at most `words` words; '' when there are none."""
        lo = bisect.bisect_left(self.mids, start)
        hi = bisect.bisect_right(self.mids, end) if last else bisect.bisect_left(self.mids, end)
        if hi <= lo:
            return ""
        return central_summary(self.sentences[lo:hi], self.vectors()[lo:hi], words)


_SAYS = re.compile(r'^Says: "(.*)"$', re.DOTALL)


def _join(parts: list[str]) -> str:
    """Parts joined into one caption; consecutive pure quotes share one `Says: "…"` for readability."""
    out: list[str] = []
    for part in parts:
        quote, previous = _SAYS.match(part), _SAYS.match(out[-1]) if out else None
        if quote and previous:
            out[-1] = f'Says: "{previous.group(1)} {quote.group(1)}"'
        else:
            out.append(part)
    return " ".join(out)


def _fit(parts: list[str], max_words: int) -> list[str]:
    """Evenly spaced parts whose words fit in `max_words` (at least one, truncated)."""
    total = sum(len(_words(p)) for p in parts)
    if total <= max_words:
        return parts
    keep = max(1, int(len(parts) * max_words / total))
    chosen = (
        [parts[round(j * (len(parts) - 1) / max(1, keep - 1))] for j in range(keep)]
        if keep > 1
        else [parts[0]]
    )
    return [_truncate(p, max_words) for p in dict.fromkeys(chosen)]


def _condense_prompt(r: CondenseRequest) -> list[Message]:
    what = {"scene": "a scene of a video", "chapter": "a chapter of a video", "video": "a whole video"}[
        r.level
    ]
    return [
        {
            "role": "system",
            "content": (
                f"You write one caption of {what} for a search index, at most {r.words} words. "
                "Use only the facts given; never add people, names, places, objects, actions or numbers "
                "that the facts do not state. No preamble."
            ),
        },
        {"role": "user", "content": "Facts:\n" + "\n".join(f"- {p}" for p in r.parts) + "\nCaption:"},
    ]


class _LLMCondenser(Captioner):
    """Condenses scene/chapter/video captions with an LLM behind the grounding guard."""

    def _llm(self) -> LLM | None:
        raise NotImplementedError

    def writes(self) -> bool:
        return True

    def condense(self, requests: Sequence[CondenseRequest]) -> tuple[list[str], GuardStats]:
        llm = self._llm()
        if llm is None:
            return super().condense(requests)
        replies = llm.chat_batch([_condense_prompt(r) for r in requests], max_tokens=_max_tokens(requests))
        stats = GuardStats(generated=len(replies))
        out: list[str] = []
        for r, reply in zip(requests, replies, strict=True):
            if not self.options.grounding:
                text, dropped = _PREAMBLE.sub("", reply).strip(), 0
            else:
                # a reply as long as the caption may be was most likely stopped by the token limit
                cut = len(_words(reply)) >= r.words
                text, dropped = ground(reply, "\n".join(r.parts), cut=cut)
            if len(_words(text)) < 3:  # nothing (or a scrap) survived: say only what is known
                log.debug("grounding guard replaced %r (for %s %.1f-%.1f s)", reply, r.level, r.start, r.end)
                stats.rejected += 1
                out.append(r.fallback)
            else:
                if dropped:
                    log.debug("grounding guard trimmed %r to %r", reply, text)
                    stats.trimmed += 1
                else:
                    stats.kept += 1
                out.append(_truncate(text, r.words))
        return out, stats


def _max_tokens(requests: Sequence[CondenseRequest]) -> int:
    """~1.5 tokens per English word, plus room for the sentence to end (cut captions are trimmed)."""
    return int(max(r.words for r in requests) * 1.5) + 8


class ComposedCaptioner(_LLMCondenser):
    """Shot captions composed from the facts; higher levels condensed by the embedded LLM (or a
    server's, with `url`), or extractive with `llm=None`."""

    name = "composed"

    def __init__(self, options: CaptionOptions | None = None, cache_dir: Path | None = None) -> None:
        super().__init__(options, cache_dir)
        self._engine: LLM | None = None

    def writes(self) -> bool:
        return self.options.llm is not None or bool(self.options.url)

    def _llm(self) -> LLM | None:
        o = self.options
        if not self.writes():
            return None
        if self._engine is None:
            self._engine = make_llm(
                (o.model if o.url else o.llm) or "",
                self.cache_dir,
                url=o.url,
                api_key=o.api_key,
                batch_size=o.batch_size,
                max_concurrency=o.max_concurrency,
                timeout=o.timeout,
                max_retries=o.max_retries,
            )
        return self._engine

    def caption_shots(self, shots: Sequence[SpanFacts]) -> list[str]:
        o = self.options
        return [extractive_caption(Evidence.of(s), o.shot_words, o.min_label_score) for s in shots]


def _jpeg_part(jpeg: bytes) -> dict[str, object]:
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    return {"type": "image_url", "image_url": {"url": url}}


class OpenAIVLMCaptioner(_LLMCondenser):
    """Shot captions by a vision-language model that looks at the keyframes, served by an
    OpenAI-compatible endpoint (vLLM + Qwen2.5-VL, ...). Shots without keyframes get the composed
    caption: there is nothing to look at. Requests run `max_concurrency` at a time."""

    name = "openai-vlm"
    wants_keyframes = True

    def __init__(self, options: CaptionOptions | None = None, cache_dir: Path | None = None) -> None:
        super().__init__(options, cache_dir)
        o = self.options
        if not o.url or not o.model:
            raise ValueError(
                "captioner 'openai-vlm' needs url and model, e.g. url='http://127.0.0.1:8000/v1', "
                "model='Qwen/Qwen2.5-VL-7B-Instruct' (the name vLLM serves)"
            )
        self._engine = make_llm(
            o.model,
            cache_dir,
            url=o.url,
            api_key=o.api_key,
            max_concurrency=o.max_concurrency,
            timeout=o.timeout,
            max_retries=o.max_retries,
        )

    def _llm(self) -> LLM:
        return self._engine

    def _prompt(self, shot: SpanFacts) -> list[Message]:
        o = self.options
        frames = shot.keyframes
        if len(frames) > o.keyframes_per_shot:  # evenly spaced, first and last included
            n = o.keyframes_per_shot
            frames = (
                [frames[round(j * (len(frames) - 1) / max(1, n - 1))] for j in range(n)]
                if n > 1
                else frames[:1]
            )
        context = []
        if shot.screen_text:
            context.append("On-screen text (OCR): " + " | ".join(shot.screen_text))
        if shot.speech.strip():
            context.append(f'Speech: "{_truncate(shot.speech, 60)}"')
        text = (
            f"These are {len(frames)} frames of one shot ({shot.end - shot.start:.1f} s) of a video. "
            f"Caption the shot in at most {o.shot_words} words: who or what is visible and what happens. "
            "Say only what you can see or what the context states."
        )
        if context:
            text += "\nContext:\n" + "\n".join(context)
        content: list[dict[str, object]] = [{"type": "text", "text": text}]
        content += [_jpeg_part(f) for f in frames]
        return [{"role": "user", "content": content}]

    def caption_shots(self, shots: Sequence[SpanFacts]) -> list[str]:
        o = self.options
        with_frames = [i for i, s in enumerate(shots) if s.keyframes]
        caps = [extractive_caption(Evidence.of(s), o.shot_words, o.min_label_score) for s in shots]
        if with_frames:
            replies = self._engine.chat_batch(
                [self._prompt(shots[i]) for i in with_frames], max_tokens=int(o.shot_words * 1.5) + 8
            )
            for i, reply in zip(with_frames, replies, strict=True):
                reply = _PREAMBLE.sub("", reply).strip()
                if reply:
                    caps[i] = _truncate(reply, o.shot_words)
        return caps


CAPTIONERS: Registry[type[Captioner]] = Registry(
    "captioner",
    {"composed": "indexers.captions:ComposedCaptioner", "openai-vlm": "indexers.captions:OpenAIVLMCaptioner"},
)
"""Captioners by name; a backend's module is imported only when it is chosen."""


def make_captioner(options: CaptionOptions | None = None, cache_dir: Path | None = None) -> Captioner:
    """The captioner `options.captioner` names. `cache_dir` holds converted embedded models."""
    options = options or CaptionOptions()
    return CAPTIONERS.get(options.captioner)(options, cache_dir)
