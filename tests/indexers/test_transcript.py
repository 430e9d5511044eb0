"""Transcripts: faster-whisper on real decoded audio, subtitle files, streamed audio chunks.

Expectations come from what espeak-ng was asked to say and when (tests/media.py), from the words of
the real megamind.avi dialogue, and from a plain ffmpeg decode of the same audio.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from indexers.decode import MediaError, probe
from indexers.transcript import (
    SAMPLE_RATE,
    TranscribeOptions,
    Transcript,
    WhisperTranscriber,
    audio_chunks,
    read_subtitles,
    sidecar_subtitles,
)
from tests import media
from tests.conftest import shared

FIRST_WORD_TOLERANCE = 0.7  # seconds between a phrase's start and its first recognised word


def words_of(text: str) -> list[str]:
    """Lower-case words with punctuation (and ASR hyphenation such as "mid-night") removed."""
    return [w for w in (re.sub(r"[^a-z]", "", t) for t in text.lower().split()) if w]


@pytest.fixture(scope="module")
def narrated_transcript(narrated_clip: media.NarratedClip, model_cache: Path) -> Transcript:
    transcriber = WhisperTranscriber(TranscribeOptions(model="base"), model_cache)
    return transcriber.transcript(narrated_clip.path, narrated_clip.duration)


def _cues_near(transcript: Transcript, phrase: media.Phrase, slack: float = 1.5) -> list:
    return [c for c in transcript.cues if c.end > phrase.start - slack and c.start < phrase.end + slack]


# --------------------------------------------------------------------------- whisper


def test_narration_is_detected_as_english(narrated_transcript: Transcript) -> None:
    assert narrated_transcript.language == "en"
    assert narrated_transcript.source == "asr"
    assert narrated_transcript.cues


def test_each_phrase_is_heard_in_its_own_time(
    narrated_transcript: Transcript, narrated_clip: media.NarratedClip
) -> None:
    for phrase in narrated_clip.phrases:
        heard = set(words_of(" ".join(c.text for c in _cues_near(narrated_transcript, phrase))))
        # distinctive words: the long ones, not "the", "at", "a"
        distinctive = [w for w in words_of(phrase.text) if len(w) >= 5]
        found = [w for w in distinctive if w in heard]
        # small models mishear the odd word of synthetic speech; most must come through
        assert len(found) >= 0.75 * len(distinctive), (
            f"phrase {phrase.text!r} at {phrase.start:.2f}s: heard {sorted(heard)}, found only {found}"
        )
        # and none of the other phrases' distinctive words is put here
        others = {
            w
            for p in narrated_clip.phrases
            if p is not phrase
            for w in words_of(p.text)
            if len(w) >= 5 and w not in distinctive
        }
        assert not (others & heard), f"words of other phrases placed at {phrase.start:.2f}s: {others & heard}"


def test_nothing_is_heard_in_the_silences(
    narrated_transcript: Transcript, narrated_clip: media.NarratedClip
) -> None:
    for cue in narrated_transcript.cues:
        assert any(cue.end > p.start - 1.0 and cue.start < p.end + 1.0 for p in narrated_clip.phrases), (
            f"cue {cue.text!r} at {cue.start:.2f}-{cue.end:.2f}s lies in silence"
        )


def test_word_times_follow_the_speech(
    narrated_transcript: Transcript, narrated_clip: media.NarratedClip
) -> None:
    for phrase in narrated_clip.phrases:
        words = [w for c in _cues_near(narrated_transcript, phrase) for w in c.words]
        assert words, f"no word timed near {phrase.start:.2f}s"
        first = words[0]
        assert abs(first.start - phrase.start) <= FIRST_WORD_TOLERANCE, (
            f"first word {first.text!r} of {phrase.text!r} at {first.start:.2f}s, spoken from {phrase.start:.2f}s"
        )
        # every word sits inside the phrase (with the same slack) and words run forward in time
        for w in words:
            assert (
                phrase.start - FIRST_WORD_TOLERANCE <= w.start <= w.end <= phrase.end + FIRST_WORD_TOLERANCE
            )
        assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    for cue in narrated_transcript.cues:
        assert cue.words, f"cue {cue.text!r} has no word times"
        assert cue.start <= cue.words[0].start + 0.05 and cue.words[-1].end <= cue.end + 0.05


def test_times_stay_right_across_chunks(narrated_clip: media.NarratedClip, model_cache: Path) -> None:
    """13 s chunks are cut in the silences near 10 s and 20 s, one phrase per chunk: each chunk's
    offset must be added back to its cue and word times, and progress must reach the end."""
    seen: list[float] = []
    transcriber = WhisperTranscriber(TranscribeOptions(model="tiny.en", chunk=13.0), model_cache)
    transcript = transcriber.transcript(narrated_clip.path, narrated_clip.duration, progress=seen.append)
    for phrase in narrated_clip.phrases:
        words = [w for c in _cues_near(transcript, phrase) for w in c.words]
        assert words, (
            f"nothing heard near {phrase.start:.2f}s: {[(c.start, c.text) for c in transcript.cues]}"
        )
        assert abs(words[0].start - phrase.start) <= FIRST_WORD_TOLERANCE, (phrase, words[0])
    assert seen and seen[-1] == pytest.approx(1.0, abs=0.01)
    assert all(a <= b + 1e-9 for a, b in zip(seen, seen[1:], strict=False))


def test_cues_come_as_they_are_heard(narrated_clip: media.NarratedClip, model_cache: Path) -> None:
    """`transcribe` is lazy like faster-whisper's: nothing is read before the first `next`, the first
    cue arrives while most of the audio is still unread, and the language is known from then on."""
    seen: list[float] = []
    transcriber = WhisperTranscriber(TranscribeOptions(model="tiny.en", chunk=13.0), model_cache)
    cues, info = transcriber.transcribe(narrated_clip.path, narrated_clip.duration, progress=seen.append)
    assert seen == [] and info.language is None and info.source == "asr"
    first = next(cues)
    assert first.start < 13.0 and first.words
    assert info.language == "en"
    assert max(seen, default=0.0) < 0.6, seen  # the rest of the audio is not read yet
    rest = list(cues)
    assert rest and all(a.start <= b.start for a, b in zip([first, *rest], rest, strict=False))
    assert seen[-1] == pytest.approx(1.0, abs=0.01)


@pytest.mark.slow
def test_megamind_dialogue_despite_a_corrupt_audio_packet(model_cache: Path) -> None:
    path = shared("megamind.avi")
    info = probe(path)
    assert info.has_audio and info.audio_codec == "ac3"
    transcript = WhisperTranscriber(TranscribeOptions(model="base"), model_cache).transcript(
        path, info.duration
    )
    heard = set(words_of(" ".join(c.text for c in transcript.cues)))
    # "You don't judge a book by its cover ..."
    assert {"judge", "cover"} <= heard, heard
    assert transcript.language == "en"
    assert all(0.0 <= c.start < c.end <= info.duration + 0.5 for c in transcript.cues)


# --------------------------------------------------------------------------- audio chunks


def _full_decode(path: Path) -> np.ndarray:
    """The first audio stream as 16 kHz mono float32, decoded in one go by the ffmpeg CLI."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
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
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0


def test_audio_chunks_lose_and_repeat_no_sample(narrated_clip: media.NarratedClip) -> None:
    full = _full_decode(narrated_clip.path)
    assert len(full) == pytest.approx(narrated_clip.duration * SAMPLE_RATE, abs=SAMPLE_RATE * 0.1)
    chunks = list(audio_chunks(narrated_clip.path, 7.0, search=2.0))
    assert len(chunks) >= 4  # 30 s in chunks of at most 7 s
    assert sum(len(s) for _, s in chunks) == len(full)
    np.testing.assert_array_equal(np.concatenate([s for _, s in chunks]), full)
    # each offset is where the previous chunk ended
    position = 0
    for offset, samples in chunks:
        assert samples.dtype == np.float32
        assert offset == pytest.approx(position / SAMPLE_RATE, abs=1e-9)
        assert len(samples) <= 7.0 * SAMPLE_RATE
        position += len(samples)


def test_audio_chunks_cut_in_silence_not_inside_speech(narrated_clip: media.NarratedClip) -> None:
    # Nominal chunk ends at 13 s and 23 s fall inside the 2nd and 3rd phrases (from 12 s and 22 s);
    # the 3 s search reaches back into the silence before each.
    chunk, search = 13.0, 3.0
    chunks = list(audio_chunks(narrated_clip.path, chunk, search=search))
    cuts = [offset for offset, _ in chunks[1:]]
    assert len(cuts) == 2
    for cut in cuts:
        for p in narrated_clip.phrases:
            assert not (p.start <= cut <= p.end), (
                f"chunk boundary {cut:.2f}s splits {p.text!r} [{p.start}, {p.end}]"
            )
    full = _full_decode(narrated_clip.path)
    assert sum(len(s) for _, s in chunks) == len(full)


def test_audio_chunks_of_a_file_without_audio(cut_clip: media.CutClip) -> None:
    assert list(audio_chunks(cut_clip.path, 5.0)) == []


# --------------------------------------------------------------------------- subtitles


CUES = [
    (1.0, 2.5, "<i>Hello</i> &amp; welcome"),
    (3.25, 5.0, 'a <b>first</b> line\n<font color="red">and a second</font> line'),
    (3725.125, 3727.0, "one hour {\\an8}later"),
]
EXPECTED_TEXT = ["Hello & welcome", "a first line and a second line", "one hour later"]


@pytest.mark.parametrize("writer", [media.write_srt, media.write_vtt], ids=["srt", "vtt"])
def test_subtitles_are_parsed(tmp_path: Path, writer) -> None:  # type: ignore[no-untyped-def]
    suffix = ".srt" if writer is media.write_srt else ".vtt"
    path = writer(tmp_path / f"subs{suffix}", CUES)
    transcript = read_subtitles(path)
    assert transcript.source == "subtitles"
    assert [c.text for c in transcript.cues] == EXPECTED_TEXT
    for cue, (start, end, _) in zip(transcript.cues, CUES, strict=True):
        assert cue.start == pytest.approx(start, abs=1e-3)
        assert cue.end == pytest.approx(end, abs=1e-3)


def test_vtt_with_identifiers_settings_short_times_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "styled.vtt"
    path.write_bytes(
        (
            "\ufeffWEBVTT - a title\r\n\r\n"
            "NOTE written by hand\r\n\r\n"
            "intro\r\n00:05.500 --> 00:07.000 align:start position:10%\r\n<v Roger>Second cue</v>\r\n\r\n"
            "00:00:01.000 --> 00:00:02.000\r\nFirst cue\r\n"
        ).encode()
    )
    transcript = read_subtitles(path)
    assert [(c.start, c.end, c.text) for c in transcript.cues] == [
        (pytest.approx(1.0), pytest.approx(2.0), "First cue"),  # sorted by start
        (pytest.approx(5.5), pytest.approx(7.0), "Second cue"),
    ]


def test_empty_subtitle_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.srt"
    path.write_text("")
    with pytest.raises(MediaError, match="no subtitle cues"):
        read_subtitles(path)


@pytest.mark.parametrize(
    "content",
    [
        "WEBVTT\n\nNOTE only a comment\n",
        "1\n00:00:01,000 --> 00:00:02,000\n\n",  # a timing with no text
        "1\n00:00:05,000 --> 00:00:04,000\nends before it starts\n",
        "just some prose\nwith no timings at all\n",
    ],
)
def test_subtitle_file_without_a_valid_cue_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.srt"
    path.write_text(content)
    with pytest.raises(MediaError):
        read_subtitles(path)


def test_bad_cue_timing_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "garbled.srt"
    path.write_text("1\n00:00:01,000 --> soon\nhello\n")
    with pytest.raises(MediaError, match="bad cue timing"):
        read_subtitles(path)


def test_missing_subtitle_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no such"):
        read_subtitles(tmp_path / "absent.srt")


def test_sidecar_subtitles(tmp_path: Path, narrated_clip: media.NarratedClip) -> None:
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"")  # the lookup is by name only
    assert sidecar_subtitles(video) is None
    vtt = media.write_vtt(tmp_path / "talk.vtt", narrated_clip.cues)
    assert sidecar_subtitles(video) == vtt
    srt = media.write_srt(tmp_path / "talk.srt", narrated_clip.cues)
    assert sidecar_subtitles(video) == srt  # .srt is preferred when both exist
    media.write_srt(tmp_path / "other.srt", narrated_clip.cues)  # another stem is not a sidecar
    vtt.unlink()
    srt.unlink()
    assert sidecar_subtitles(video) is None
    # what the sidecar holds round-trips to the narration
    srt = media.write_srt(tmp_path / "talk.srt", narrated_clip.cues)
    found = sidecar_subtitles(video)
    assert found == srt
    cues = read_subtitles(found).cues
    assert [c.text for c in cues] == [p.text for p in narrated_clip.phrases]
    assert [c.start for c in cues] == pytest.approx([p.start for p in narrated_clip.phrases], abs=1e-3)
