"""Captions for every level of a video, composed bottom-up: shot -> scene -> chapter -> video
(TimeChat-Captioner style). A scene is captioned from its own shots, a chapter from its own scenes and
the summary from the chapters, so a caption only ever speaks about its own span.

Two captioners, chosen by name (`CAPTIONERS`):

- `composed` (embedded default): shot captions are written deterministically from what the embedded
  models really saw and heard in the shot (transcript words, on-screen text, ImageNet labels, face and
  people counts) -- no model call per shot, because a 2-hour video has ~1500 shots. Scenes, chapters and
  the summary are condensed by the embedded LLM (`memory.llm`) in batches. SmolLM2-135M invents things,
  so every generated caption passes a grounding guard: a sentence with a content word that is not in
  the text the LLM was given is dropped, and when nothing survives an extractive caption (the most
  informative facts, truncated) is used instead. With `llm=None` every level is extractive.
- `openai-vlm`: shot captions from the shot's keyframes, sent as images to a vision-language model
  behind an OpenAI-compatible endpoint (e.g. vLLM serving Qwen2.5-VL); the higher levels are condensed
  by the same endpoint as text, through the same grounding guard.
"""

from __future__ import annotations

import base64
import importlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memory.llm import LLM, Message, make_llm

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
"""Called with the fraction of the captioning work done, 0.0 .. 1.0."""


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
    per second of one at a time on 2 cores, see `memory.llm.LocalLLM`), and requests per progress
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
    min_label_score: float = 0.3
    """ImageNet labels below this score (0..1) are not mentioned: low scores are mostly wrong."""
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


NOTHING = "No speech, on-screen text or recognised objects."


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


def ground(generated: str, source: str, cut: bool = False) -> tuple[str, int]:
    """The sentences of `generated` whose content words all occur in `source` (after lower-casing and
    suffix stripping), and how many sentences were dropped. Framing words ("shows", "speaker") and
    stop words need no support; numbers must match exactly. A repeated sentence or clause is dropped
    silently: small LLMs loop. With `cut` (the reply ran into its token limit) an unfinished last
    sentence is dropped too: a fragment such as "The Great American West is a style" is a half-claim.
    Word support cannot catch true words recombined into a false statement; the prompt's "only the
    facts given" and short limits are what keep that rare."""
    support = _support(source)
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
        if content and all(_supported(w, support) for w in content):
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

    # -- the driver -------------------------------------------------------------------------------

    def caption(
        self,
        shots: Sequence[SpanFacts],
        scenes: Sequence[SpanFacts | tuple[float, float]],
        chapters: Sequence[SpanFacts | tuple[float, float]],
        duration: float,
        progress: Progress | None = None,
    ) -> Captions:
        """Captions of every level, bottom-up. `scenes` tile the video and hold whole shots; `chapters`
        hold whole scenes. They may be bare (start, end) spans, or `SpanFacts` carrying their own facts
        -- needed when there are no shots (a transcript-only item or an audio file), where a scene's
        speech is all there is. `duration` is in seconds."""
        opts = self.options
        scene_spans = [_span(s) for s in scenes]
        chapter_spans = [_span(c) for c in chapters]
        bs = opts.batch_size
        total = max(1, len(shots) + len(scene_spans) + len(chapter_spans) + 1)
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(1.0, done / total))

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
        shot_ev = [Evidence.of(s) for s in shots]

        guard = GuardStats()
        scene_caps, scene_ev, g = self._level(
            "scene", scene_spans, list(shots), shot_caps, shot_ev, opts.scene_words, step
        )
        guard.add(g)
        chapter_caps, chapter_ev, g = self._level(
            "chapter", chapter_spans, scene_spans, scene_caps, scene_ev, opts.chapter_words, step
        )
        guard.add(g)

        # The summary is made from the highest level that exists.
        if chapter_spans:
            tops, top_caps, top_ev = chapter_spans, chapter_caps, chapter_ev
        elif scene_spans:
            tops, top_caps, top_ev = scene_spans, scene_caps, scene_ev
        else:
            tops, top_caps, top_ev = list(shots), shot_caps, shot_ev
        ends = [t.end for t in tops]
        video = SpanFacts(min([0.0] + [t.start for t in tops]), max([float(duration)] + ends))
        summaries, _, g = self._level("video", [video], tops, top_caps, top_ev, opts.summary_words, step)
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
        child_ev: list[Evidence],
        words: int,
        step: Callable[[int], None],
    ) -> tuple[list[str], list[Evidence], GuardStats]:
        """Captions and merged evidence of `spans`, each from its own children only."""
        opts = self.options
        caps: list[str] = [""] * len(spans)
        evs: list[Evidence] = []
        pending: list[tuple[int, CondenseRequest]] = []
        for k, span in enumerate(spans):
            idx = _members(children, span, last=k == len(spans) - 1)
            ev = Evidence()
            for i in idx:
                ev.merge(child_ev[i])
            own = Evidence.of(span)
            if idx and ev.speech:
                own.speech = []  # the children already quote this speech
            ev.merge(own)
            evs.append(ev)
            parts = list(
                dict.fromkeys(child_caps[i] for i in idx if child_caps[i] and child_caps[i] != NOTHING)
            )
            if own.speech or own.screen_text or own.labels or own.faces or own.people:
                # Facts given for the span itself (its speech when there are no shots): one more part.
                parts.append(extractive_caption(own, opts.max_input_words, opts.min_label_score))
            fallback = extractive_caption(ev, words, opts.min_label_score, per_part=len(idx) > 1)
            joined = _join(parts)
            if not parts:
                caps[k] = fallback
            elif len(_words(joined)) <= words:
                caps[k] = joined  # nothing to condense: the parts already fit
            else:
                pending.append(
                    (
                        k,
                        CondenseRequest(
                            level, span.start, span.end, _fit(parts, opts.max_input_words), words, fallback
                        ),
                    )
                )
        if not pending:
            step(len(spans))
            return caps, evs, GuardStats()
        step(len(spans) - len(pending))
        guard = GuardStats()
        for i in range(0, len(pending), opts.batch_size):
            chunk = pending[i : i + opts.batch_size]
            texts, g = self.condense([r for _, r in chunk])
            guard.add(g)
            for (k, r), text in zip(chunk, texts, strict=True):
                caps[k] = _truncate(text, r.words) if text.strip() else r.fallback
            step(len(chunk))
        return caps, evs, guard


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

    def _llm(self) -> LLM | None:
        o = self.options
        if o.llm is None and not o.url:
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


CAPTIONERS = {
    "composed": "indexers.captions:ComposedCaptioner",
    "openai-vlm": "indexers.captions:OpenAIVLMCaptioner",
}
"""Captioners by name; a backend's module is imported only when it is chosen."""


def make_captioner(options: CaptionOptions | None = None, cache_dir: Path | None = None) -> Captioner:
    """The captioner `options.captioner` names. `cache_dir` holds converted embedded models."""
    options = options or CaptionOptions()
    if options.captioner not in CAPTIONERS:
        raise ValueError(f"unknown captioner {options.captioner!r}; choose one of {sorted(CAPTIONERS)}")
    module, cls = CAPTIONERS[options.captioner].split(":")
    captioner: Captioner = getattr(importlib.import_module(module), cls)(options, cache_dir)
    return captioner
