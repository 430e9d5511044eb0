"""Transcripts: faster-whisper on streamed audio, or subtitle files (.srt / .vtt).

Audio is decoded by the ffmpeg CLI to 16 kHz mono PCM and read in chunks (five minutes by
default) cut at the quietest moment near the chunk's end, so memory stays flat over hours and no
word is split between chunks. ffmpeg runs with `-err_detect ignore_err`, so a stream with corrupt
packets (megamind.avi's AC3 track) still yields its good audio.
"""

from __future__ import annotations

import html
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexers.decode import MediaError
from indexers.source import MediaSource, has_scheme, media_source
from kernels.timecode import parse_hms
from memory.runtime.whisper import load_whisper

SAMPLE_RATE = 16_000


@dataclass
class Word:
    start: float
    end: float
    text: str


@dataclass
class Cue:
    """A transcript line; times in seconds from the start of the media."""

    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    """A whole transcript: what `read_subtitles` returns and `Transcriber.transcript` collects."""

    cues: list[Cue]
    language: str | None
    source: str  # asr | subtitles


@dataclass
class TranscriptInfo:
    """What `Transcriber.transcribe` knows besides the cues, filled in as they are read (as
    faster-whisper's `TranscriptionInfo` beside its lazy segments)."""

    source: str  # asr | subtitles
    language: str | None = None
    """The forced language, or the one detected from the first audio chunk with speech: None until
    that chunk has been read (and after, when nothing was said)."""


@dataclass
class TranscribeOptions:
    model: str = "base"
    """Packaged model: `base` (multilingual, detects the language) or `tiny.en` (English, ~3x faster);
    or a path to a CTranslate2 whisper folder."""
    language: str | None = None
    """Force a language code (e.g. `en`); detected from the first speech when None."""
    chunk: float = 300.0
    """Seconds of audio transcribed at a time (memory bound)."""
    beam_size: int = 1
    """1 is greedy decoding: several times faster on CPU for a small loss."""
    vad: bool = True
    """Skip non-speech with faster-whisper's bundled Silero VAD."""
    threads: int = 0
    """CPU threads for CTranslate2 (0: all cores)."""


class Transcriber:
    """Base of transcribers: one required method, `transcribe`, which yields cues as they are heard
    (so that a caller can store or show them while the rest of the audio is decoded)."""

    name = "base"

    def transcribe(
        self, path: Path | MediaSource, duration: float, progress: Callable[[float], None] | None = None
    ) -> tuple[Iterator[Cue], TranscriptInfo]:
        """Cues in time order, lazily (nothing is decoded before the first `next`), and the info
        that fills in as they come. `progress(fraction)` follows the audio read."""
        raise NotImplementedError

    def transcript(
        self, path: Path | MediaSource, duration: float, progress: Callable[[float], None] | None = None
    ) -> Transcript:
        """The whole transcript at once."""
        cues, info = self.transcribe(path, duration, progress)
        collected = list(cues)
        return Transcript(collected, info.language, info.source)


def audio_chunks(
    path: Path | MediaSource, chunk: float, search: float = 5.0
) -> Iterator[tuple[float, np.ndarray]]:
    """(offset seconds, float32 mono samples) of the media's first audio stream, streamed.

    Each chunk ends at the quietest 50 ms within `search` seconds of its nominal end. Remote media
    is read by ffmpeg from its URL in one pass; a read that fails there (the connection lost, the
    object replaced) is a MediaError, not a transcript that silently stops short.
    """
    source = path if isinstance(path, MediaSource) else None
    target = source.ffmpeg_input() if source is not None else str(path)
    remote = source is not None and not source.local
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-err_detect",
        "ignore_err",
        *(source.ffmpeg_options() if source is not None else []),
        "-i",
        target,
        "-vn",
        "-map",
        "0:a:0",
        "-ac",
        "1",
        "-ar",
        str(SAMPLE_RATE),
        "-f",
        "s16le",
        "-",
    ]
    errors = tempfile.TemporaryFile() if remote else None  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors or subprocess.DEVNULL)
    assert proc.stdout is not None
    want = int(chunk * SAMPLE_RATE)
    pending = np.zeros(0, dtype=np.float32)
    offset = 0
    try:
        while True:
            raw = proc.stdout.read((want - len(pending)) * 2)
            eof = len(raw) < (want - len(pending)) * 2
            if raw:
                pending = np.concatenate([pending, np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0])
            if eof:
                if source is not None and remote and proc.wait() != 0 and errors is not None:
                    errors.seek(0)
                    last = (errors.read().decode(errors="replace").strip().splitlines() or ["no message"])[-1]
                    raise MediaError(f"{source}: reading the audio failed ({source.redact(last)[-300:]})")
                if len(pending):
                    yield offset / SAMPLE_RATE, pending
                break
            cut = _quiet_cut(pending, int(search * SAMPLE_RATE))
            yield offset / SAMPLE_RATE, pending[:cut]
            offset += cut
            pending = pending[cut:]
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
        if errors is not None:
            errors.close()


def _quiet_cut(samples: np.ndarray, search: int) -> int:
    hop = SAMPLE_RATE // 20
    tail = samples[max(0, len(samples) - search) :]
    n = len(tail) // hop
    if n < 2:
        return len(samples)
    energy = (tail[: n * hop].reshape(n, hop) ** 2).mean(1)
    return len(samples) - len(tail) + int(np.argmin(energy)) * hop + hop // 2


class WhisperTranscriber(Transcriber):
    """faster-whisper (CTranslate2, int8 on CPU) with word timestamps and language detection."""

    name = "faster-whisper"

    def __init__(self, options: TranscribeOptions, cache_dir: Path) -> None:
        self.opts = options
        self.cache_dir = cache_dir

    def transcribe(
        self, path: Path | MediaSource, duration: float, progress: Callable[[float], None] | None = None
    ) -> tuple[Iterator[Cue], TranscriptInfo]:
        info = TranscriptInfo("asr", self.opts.language)
        return self._cues(path, duration, info, progress), info

    def _cues(
        self,
        path: Path | MediaSource,
        duration: float,
        info: TranscriptInfo,
        progress: Callable[[float], None] | None,
    ) -> Iterator[Cue]:
        opts = self.opts
        model = load_whisper(opts.model, self.cache_dir, opts.threads)
        for offset, samples in audio_chunks(path, opts.chunk):
            for cue, language in chunk_cues(model, offset, samples, info.language, opts):
                if info.language is None:
                    info.language = language  # detected once, from the first chunk with speech
                yield cue
                if progress:
                    progress(min(1.0, cue.end / duration))
            if progress:
                progress(min(1.0, (offset + len(samples) / SAMPLE_RATE) / duration))


class HearElsewhere(Protocol):
    """Hears chunks of a long recording's audio somewhere else while the ingesting process reads on
    (`indexers.distributed.SpeechChunks`: one Ray task per chunk)."""

    def wanted(self, duration: float) -> bool:
        """Whether audio this long is heard elsewhere (else here, chunk after chunk)."""
        ...

    def submit(
        self, offset: float, samples: np.ndarray, language: str, opts: TranscribeOptions, cache_dir: Path
    ) -> Callable[[], list[tuple[Cue, str]]]:
        """Start hearing one chunk (`chunk_cues` with the language known); the function returned
        waits for its cues."""
        ...


def transcript_elsewhere(
    media: Path | MediaSource,
    duration: float,
    opts: TranscribeOptions,
    cache_dir: Path,
    elsewhere: HearElsewhere,
    progress: Callable[[float], None] | None = None,
) -> Transcript:
    """The transcript `WhisperTranscriber` makes, with its chunks heard elsewhere: the audio is read
    here once, cut where it always is; the chunks up to the first speech are heard here (it decides
    the language, unless forced), every later one goes out as it is read. The same chunks, the same
    language, no conditioning between chunks: the same cues."""
    language = opts.language
    model = None
    heard: list[Callable[[], list[tuple[Cue, str]]]] = []
    for offset, samples in audio_chunks(media, opts.chunk):
        if language is None:
            model = model or load_whisper(opts.model, cache_dir, opts.threads)
            here = list(chunk_cues(model, offset, samples, None, opts))
            language = here[0][1] if here else None
            heard.append(lambda here=here: here)  # type: ignore[misc]
        else:
            heard.append(elsewhere.submit(offset, samples, language, opts, cache_dir))
        if progress:
            progress(0.5 * min(1.0, (offset + len(samples) / SAMPLE_RATE) / max(duration, 1e-6)))
    cues: list[Cue] = []
    for n, wait in enumerate(heard, 1):
        cues += [cue for cue, _ in wait()]
        if progress:
            progress(0.5 + 0.5 * n / len(heard))
    return Transcript(cues, language, "asr")


def chunk_cues(
    model: Any, offset: float, samples: np.ndarray, language: str | None, opts: TranscribeOptions
) -> Iterator[tuple[Cue, str]]:
    """The cues heard in one chunk of audio (`audio_chunks`) starting `offset` seconds in, each with
    the language the model heard (`language` when forced or already known). Chunks are independent
    (no conditioning on the previous one's text), so they can be heard anywhere, in any order."""
    if float(np.abs(samples).max(initial=0.0)) < 1e-3:  # digital silence: nothing to hear
        return
    segments, chunk_info = model.transcribe(
        samples,
        language=language,
        beam_size=opts.beam_size,
        word_timestamps=True,
        vad_filter=opts.vad,
        condition_on_previous_text=False,
    )
    for seg in segments:
        text = seg.text.strip()
        if not text:
            continue
        words = [Word(offset + w.start, offset + w.end, w.word.strip()) for w in (seg.words or [])]
        # segment bounds can swallow silence that the VAD removed; word times are tighter
        start = words[0].start if words else offset + seg.start
        end = words[-1].end if words else offset + seg.end
        yield Cue(start, max(end, start + 0.01), text, words), chunk_info.language


# --- subtitles -------------------------------------------------------------------------------------

SUBTITLE_SUFFIXES = (".srt", ".vtt")
_TIMING = re.compile(r"^\s*(\S+)\s*-->\s*(\S+)")
_TAGS = re.compile(r"<[^>]+>|\{\\[^}]*\}")


SUBTITLE_MAX_BYTES = 64 << 20
"""Largest remote subtitle file read (a local one is read whatever its size)."""


def read_subtitles(path: Path | str | MediaSource) -> Transcript:
    """Parse an .srt or .vtt file (a path, or a URL as media sources take them); MediaError when it
    is unreadable or holds no cue."""
    if isinstance(path, str) and has_scheme(path):
        path = media_source(path)
    if isinstance(path, MediaSource) and path.local:
        path = Path(str(path))  # its label: the path as the caller wrote it, which messages repeat
    if isinstance(path, MediaSource):
        raw = path.read_bytes(SUBTITLE_MAX_BYTES)
    else:
        path = Path(path)
        if not path.is_file():
            raise MediaError(f"{path}: no such subtitle file")
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    cues: list[Cue] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [ln for ln in block.strip().split("\n") if ln.strip()]
        for i, line in enumerate(lines):
            m = _TIMING.match(line)
            if not m:
                continue
            try:
                start, end = parse_hms(m.group(1)), parse_hms(m.group(2))
            except ValueError as e:
                raise MediaError(f"{path}: bad cue timing {line.strip()!r} ({e})") from None
            body = " ".join(html.unescape(_TAGS.sub("", ln)).strip() for ln in lines[i + 1 :]).strip()
            if body and end > start:
                cues.append(Cue(start, end, body))
            break
    if not cues:
        raise MediaError(f"{path}: no subtitle cues found (an empty or malformed .srt/.vtt file)")
    cues.sort(key=lambda c: c.start)
    return Transcript(cues, None, "subtitles")


def sidecar_subtitles(media: Path | MediaSource) -> Path | MediaSource | None:
    """A `.srt`/`.vtt` beside the media with the same stem, if any (for a remote object, an object
    beside it: one HEAD request per suffix)."""
    if isinstance(media, MediaSource) and media.local:
        media = media.path
    for suffix in SUBTITLE_SUFFIXES:
        if isinstance(media, MediaSource):
            remote = media.with_suffix(suffix)
            if remote.exists():
                return remote
            continue
        candidate = media.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None
