"""Synthetic test media, generated at test time with ffmpeg (lavfi) and espeak-ng.

Nothing here downloads anything. Every builder takes an output directory and
returns a frozen dataclass describing the ground truth of what it wrote:
frame indices (0-based, counted at the clip's ``fps``) and times (seconds from
the start of the file).

Builders:

* :func:`make_cut_clip`      - video with hard cuts at exact frame indices.
* :func:`make_fade_clip`     - 3 shots joined by ``xfade`` dissolves of known length.
* :func:`make_narrated_clip` - espeak-ng phrases at known times + video with hard cuts.
* :func:`make_long_clip`     - N copies of a real file, stream-copied (benchmarks).
* :func:`truncate_copy`      - first fraction of a file's bytes (a broken mp4).

Helpers: :func:`write_srt`, :func:`write_vtt`, :func:`probe_duration`,
:func:`count_frames`, :func:`has_audio`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

__all__ = [
    "CutClip",
    "FadeClip",
    "NarratedClip",
    "Phrase",
    "Transition",
    "count_frames",
    "ffmpeg_available",
    "has_audio",
    "make_cut_clip",
    "make_fade_clip",
    "make_long_clip",
    "make_narrated_clip",
    "probe_duration",
    "truncate_copy",
    "write_srt",
    "write_vtt",
]

DEFAULT_PHRASES: tuple[str, ...] = (
    "the purple giraffe eats bright oranges",
    "seven silver submarines dive at midnight",
    "a quiet library keeps ancient maps",
)
"""Default narration: three distinct phrases with distinctive words."""

DEFAULT_PHRASE_STARTS: tuple[float, ...] = (2.0, 12.0, 22.0)
"""Default phrase start times, seconds."""

# Shot sources, cycled so consecutive shots differ in colour and texture.
# ``{w}``, ``{h}`` are the frame size in pixels and ``{r}`` the frame rate.
# All are seeded (or have no randomness) so output is reproducible.
_SHOT_SOURCES: tuple[str, ...] = (
    "testsrc2=size={w}x{h}:rate={r}",
    "mandelbrot=size={w}x{h}:rate={r}",
    "smptebars=size={w}x{h}:rate={r}",
    "color=c=0x1e3a8a:size={w}x{h}:rate={r},"
    "drawbox=x='mod(t*160,iw)':y=ih/4:w=iw/5:h=ih/3:color=orange:t=fill,"
    "noise=alls=25:allf=t:all_seed=7",
    "life=size={w}x{h}:rate={r}:seed=5:ratio=0.2:mold=10:life_color=#ffcc00:death_color=#400040",
    # not `gradients`: its output differs from run to run whatever the seed (jumps appear mid-shot)
    "rgbtestsrc=size={w}x{h}:rate={r},drawbox=x='mod(t*90,iw)':y=ih/2:w=iw/6:h=ih/4:color=white:t=fill",
    "cellauto=size={w}x{h}:rate={r}:rule=110:seed=1",
    "sierpinski=size={w}x{h}:rate={r}:seed=2",
)

_X264_ARGS: tuple[str, ...] = (
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-crf",
    "20",
    "-pix_fmt",
    "yuv420p",
    "-g",
    "48",
)


# --------------------------------------------------------------------------
# dataclasses
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CutClip:
    """A video with hard cuts.

    Attributes:
        path: the mp4 file (h264, yuv420p, no audio).
        fps: frame rate, frames per second.
        total_frames: number of video frames in the file.
        cut_frames: 0-based index of the first frame of each new shot
            (so shot ``k`` spans ``[cut_frames[k-1], cut_frames[k])``).
        cut_times: the same cuts in seconds (``frame / fps``).
        duration: clip length in seconds (``total_frames / fps``).
        size: (width, height) in pixels.
    """

    path: Path
    fps: int
    total_frames: int
    cut_frames: tuple[int, ...]
    cut_times: tuple[float, ...]
    duration: float
    size: tuple[int, int]


@dataclass(frozen=True)
class Transition:
    """One gradual ``xfade`` transition between two shots.

    Attributes:
        kind: the xfade transition name (``"fade"``, ``"fadeblack"``, ...).
        start: time the transition begins, seconds (the xfade offset).
        end: time the transition ends, seconds (``start + length``).
        midpoint: ``(start + end) / 2``, seconds - the natural "boundary".
        length: transition length, seconds.
    """

    kind: str
    start: float
    end: float
    midpoint: float
    length: float


@dataclass(frozen=True)
class FadeClip:
    """Three shots joined by gradual transitions.

    Attributes:
        path: the mp4 file (h264, yuv420p, no audio).
        fps: frame rate, frames per second.
        total_frames: number of video frames in the file.
        duration: clip length in seconds (verified with ffprobe).
        shot_lengths: length of each source shot before overlapping, seconds.
        transitions: the transitions in time order.
        size: (width, height) in pixels.
    """

    path: Path
    fps: int
    total_frames: int
    duration: float
    shot_lengths: tuple[float, ...]
    transitions: tuple[Transition, ...]
    size: tuple[int, int]


@dataclass(frozen=True)
class Phrase:
    """One spoken phrase.

    Attributes:
        text: what espeak-ng was asked to say.
        start: time the phrase's wav starts in the clip, seconds.
        end: ``start`` + wav duration, seconds (includes espeak's own short
            leading/trailing silence).
    """

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class NarratedClip:
    """A video with hard cuts and an AAC speech track.

    Attributes:
        path: the mp4 file (h264 video + mono AAC audio).
        fps: frame rate, frames per second.
        total_frames: number of video frames in the file.
        cut_frames: 0-based first frame index of each new shot.
        cut_times: the cuts in seconds.
        duration: intended clip length in seconds (``total_frames / fps``).
        phrases: the spoken phrases, in time order.
        sample_rate: audio sample rate, Hz.
        size: (width, height) in pixels.
    """

    path: Path
    fps: int
    total_frames: int
    cut_frames: tuple[int, ...]
    cut_times: tuple[float, ...]
    duration: float
    phrases: tuple[Phrase, ...]
    sample_rate: int
    size: tuple[int, int]

    @property
    def cues(self) -> list[tuple[float, float, str]]:
        """``(start_s, end_s, text)`` per phrase, ready for :func:`write_srt`."""
        return [(p.start, p.end, p.text) for p in self.phrases]


# --------------------------------------------------------------------------
# process helpers
# --------------------------------------------------------------------------


def ffmpeg_available() -> bool:
    """True if ffmpeg, ffprobe and espeak-ng are all on PATH."""
    return all(shutil.which(t) for t in ("ffmpeg", "ffprobe", "espeak-ng"))


def _run(cmd: Sequence[str | Path]) -> subprocess.CompletedProcess[bytes]:
    """Run a command; raise RuntimeError with the stderr tail on failure."""
    args = [str(c) for c in cmd]
    try:
        return subprocess.run(args, check=True, capture_output=True)
    except FileNotFoundError as exc:
        raise RuntimeError(f"{args[0]} not found on PATH") from exc
    except subprocess.CalledProcessError as exc:
        tail = exc.stderr.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"command failed (rc={exc.returncode}): {' '.join(args)}\n{tail}") from exc


def _ffmpeg(*args: str | Path) -> None:
    """Run ``ffmpeg -v error -y <args>``."""
    _run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", *args])


def _ffprobe_json(path: Path, *args: str) -> dict:
    """Run ffprobe with JSON output and return the parsed object."""
    proc = _run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)])
    return json.loads(proc.stdout)


def probe_duration(path: Path, stream: str | None = None) -> float:
    """Duration in seconds.

    Args:
        path: media file.
        stream: ``None`` for the container duration, or an ffprobe stream
            specifier such as ``"v:0"`` / ``"a:0"`` for that stream's duration.
    """
    if stream is None:
        data = _ffprobe_json(path, "-show_entries", "format=duration")
        return float(data["format"]["duration"])
    data = _ffprobe_json(path, "-select_streams", stream, "-show_entries", "stream=duration")
    streams = data.get("streams") or []
    if not streams or "duration" not in streams[0]:
        raise RuntimeError(f"no duration for stream {stream!r} in {path}")
    return float(streams[0]["duration"])


def count_frames(path: Path) -> int:
    """Number of decoded video frames in the first video stream (decodes it all)."""
    data = _ffprobe_json(
        path,
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=nb_read_frames",
    )
    return int(data["streams"][0]["nb_read_frames"])


def has_audio(path: Path) -> bool:
    """True if the file has at least one audio stream."""
    data = _ffprobe_json(path, "-select_streams", "a", "-show_entries", "stream=index")
    return bool(data.get("streams"))


# --------------------------------------------------------------------------
# video graph building
# --------------------------------------------------------------------------


def _validate_cuts(cut_frames: Sequence[int], total_frames: int) -> tuple[int, ...]:
    """Check cuts are strictly increasing inside ``(0, total_frames)``."""
    cuts = tuple(int(c) for c in cut_frames)
    bounds = (0, *cuts, total_frames)
    if any(b <= a for a, b in pairwise(bounds)):
        raise ValueError(f"cut_frames must be strictly increasing within (0, {total_frames}): {cuts}")
    return cuts


def _shot_chain(index: int, n_frames: int, fps: int, size: tuple[int, int], label: str) -> str:
    """A filtergraph chain producing exactly ``n_frames`` frames of shot ``index``."""
    w, h = size
    src = _SHOT_SOURCES[index % len(_SHOT_SOURCES)].format(w=w, h=h, r=fps)
    return f"{src},trim=end_frame={n_frames},setpts=PTS-STARTPTS,format=yuv420p,setsar=1[{label}]"


def _cuts_graph(
    cut_frames: Sequence[int], total_frames: int, fps: int, size: tuple[int, int], out_label: str = "v"
) -> str:
    """Filtergraph: one lavfi source per shot, trimmed exactly, then concatenated."""
    bounds = (0, *cut_frames, total_frames)
    lengths = [b - a for a, b in pairwise(bounds)]
    chains = [_shot_chain(i, n, fps, size, f"s{i}") for i, n in enumerate(lengths)]
    inputs = "".join(f"[s{i}]" for i in range(len(lengths)))
    chains.append(f"{inputs}concat=n={len(lengths)}:v=1:a=0[{out_label}]")
    return ";".join(chains)


# --------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------


def make_cut_clip(
    out_dir: Path,
    cut_frames: Sequence[int] = (48, 120),
    total_frames: int = 180,
    fps: int = 24,
    size: tuple[int, int] = (320, 180),
    name: str = "cuts.mp4",
) -> CutClip:
    """Write a video with hard cuts at exactly ``cut_frames``.

    Each shot comes from a different lavfi source (test pattern, fractal, bars,
    noisy moving box, game of life, ...), so consecutive shots differ clearly
    in colour and texture. Frame ``cut_frames[k]`` is the first frame of shot
    ``k + 1``.

    Args:
        out_dir: directory to write into (created if missing).
        cut_frames: 0-based frame indices where new shots start.
        total_frames: total number of frames.
        fps: frames per second (integer).
        size: (width, height) in pixels; even numbers.
        name: output file name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cuts = _validate_cuts(cut_frames, total_frames)
    path = out_dir / name
    graph = _cuts_graph(cuts, total_frames, fps, size)
    _ffmpeg(
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-frames:v",
        str(total_frames),
        "-r",
        str(fps),
        *_X264_ARGS,
        "-an",
        "-movflags",
        "+faststart",
        path,
    )
    return CutClip(
        path=path,
        fps=fps,
        total_frames=total_frames,
        cut_frames=cuts,
        cut_times=tuple(c / fps for c in cuts),
        duration=total_frames / fps,
        size=size,
    )


def make_fade_clip(
    out_dir: Path,
    fps: int = 24,
    size: tuple[int, int] = (320, 180),
    shot_lengths: tuple[float, float, float] = (4.0, 4.0, 4.0),
    transitions: tuple[tuple[str, float], tuple[str, float]] = (
        ("fade", 1.0),
        ("fadeblack", 1.0),
    ),
    name: str = "fades.mp4",
) -> FadeClip:
    """Write 3 shots joined by two ``xfade`` transitions of known length.

    With shot lengths ``L0, L1, L2`` and transition lengths ``T1, T2``
    (seconds), the xfade offsets are ``o1 = L0 - T1`` and
    ``o2 = (L0 + L1 - T1) - T2``; the output lasts
    ``L0 + L1 + L2 - T1 - T2``. Transition ``k`` spans ``[o_k, o_k + T_k]``.
    The duration is verified with ffprobe. All lengths should be whole
    multiples of ``1 / fps`` so frame counts are exact.

    Args:
        out_dir: directory to write into (created if missing).
        fps: frames per second (integer).
        size: (width, height) in pixels.
        shot_lengths: length of each of the 3 shots, seconds.
        transitions: ``(xfade transition name, length in seconds)`` x 2.
        name: output file name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(shot_lengths) != 3 or len(transitions) != 2:
        raise ValueError("need exactly 3 shot_lengths and 2 transitions")
    for (_, t_len), (a, b) in zip(transitions, pairwise(shot_lengths), strict=True):
        if not 0 < t_len < min(a, b):
            raise ValueError(f"transition length {t_len} must be shorter than both shots")

    path = out_dir / name
    chains = []
    for i, length in enumerate(shot_lengths):
        chains.append(_shot_chain(i, round(length * fps), fps, size, f"s{i}"))

    result: list[Transition] = []
    acc = shot_lengths[0]  # running length of the joined stream, seconds
    prev = "s0"
    for k, ((kind, t_len), nxt) in enumerate(zip(transitions, shot_lengths[1:], strict=True), 1):
        offset = acc - t_len
        label = "v" if k == len(transitions) else f"x{k}"
        chains.append(f"[{prev}][s{k}]xfade=transition={kind}:duration={t_len}:offset={offset}[{label}]")
        result.append(
            Transition(kind=kind, start=offset, end=offset + t_len, midpoint=offset + t_len / 2, length=t_len)
        )
        acc = acc + nxt - t_len
        prev = label

    total_frames = round(acc * fps)
    _ffmpeg(
        "-filter_complex",
        ";".join(chains),
        "-map",
        "[v]",
        "-frames:v",
        str(total_frames),
        "-r",
        str(fps),
        *_X264_ARGS,
        "-an",
        "-movflags",
        "+faststart",
        path,
    )
    measured = probe_duration(path)
    if abs(measured - acc) > 1.5 / fps:
        raise RuntimeError(f"fade clip duration {measured:.3f}s != expected {acc:.3f}s ({path})")
    return FadeClip(
        path=path,
        fps=fps,
        total_frames=total_frames,
        duration=acc,
        shot_lengths=tuple(shot_lengths),
        transitions=tuple(result),
        size=size,
    )


def _wav_duration(path: Path) -> float:
    """Length of a PCM wav file, seconds."""
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def make_narrated_clip(
    out_dir: Path,
    phrases: Sequence[str] = DEFAULT_PHRASES,
    size: tuple[int, int] = (320, 180),
    fps: int = 24,
    total_seconds: float = 30.0,
    starts: Sequence[float] = DEFAULT_PHRASE_STARTS,
    cut_frames: Sequence[int] | None = None,
    sample_rate: int = 16000,
    words_per_minute: int = 150,
    name: str = "narrated.mp4",
) -> NarratedClip:
    """Write a video with hard cuts plus espeak-ng speech at known times.

    Each phrase is synthesised to a wav with ``espeak-ng -s <wpm> -w``, delayed
    to its start time (sample-exact) and mixed onto silence with
    ``amix=normalize=0``. The video is built like :func:`make_cut_clip`;
    by default it cuts at 10 s and 20 s so each default phrase sits inside
    its own shot.

    Args:
        out_dir: directory to write into (created if missing).
        phrases: texts to speak, one per start time.
        size: (width, height) in pixels.
        fps: frames per second (integer).
        total_seconds: clip length, seconds.
        starts: start time of each phrase, seconds.
        cut_frames: 0-based first frame of each new shot; ``None`` means every
            10 s (frames ``10*fps, 20*fps, ...``) strictly inside the clip.
        sample_rate: output audio sample rate, Hz.
        words_per_minute: espeak-ng speaking rate.
        name: output file name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(phrases) != len(starts):
        raise ValueError("phrases and starts must have the same length")
    total_frames = round(total_seconds * fps)
    if cut_frames is None:
        cut_frames = tuple(range(10 * fps, total_frames, 10 * fps))
    cuts = _validate_cuts(cut_frames, total_frames)

    wavs: list[Path] = []
    out_phrases: list[Phrase] = []
    delays: list[int] = []  # samples at sample_rate
    for i, (text, start) in enumerate(zip(phrases, starts, strict=True)):
        wav = out_dir / f"{Path(name).stem}_phrase{i}.wav"
        _run(["espeak-ng", "-s", str(words_per_minute), "-w", str(wav), text])
        delay = round(start * sample_rate)
        exact_start = delay / sample_rate
        end = exact_start + _wav_duration(wav)
        if end > total_seconds:
            raise ValueError(f"phrase {i} ends at {end:.2f}s, after total_seconds={total_seconds}")
        wavs.append(wav)
        delays.append(delay)
        out_phrases.append(Phrase(text=text, start=exact_start, end=end))

    chains = [_cuts_graph(cuts, total_frames, fps, size)]
    chains.append(
        f"anullsrc=r={sample_rate}:cl=mono,atrim=end_sample={round(total_seconds * sample_rate)}[base]"
    )
    for i, delay in enumerate(delays):
        chains.append(
            f"[{i}:a]aresample={sample_rate},aformat=channel_layouts=mono,adelay=delays={delay}S:all=1[a{i}]"
        )
    mix_inputs = "[base]" + "".join(f"[a{i}]" for i in range(len(delays)))
    chains.append(
        f"{mix_inputs}amix=inputs={len(delays) + 1}:duration=first:dropout_transition=0:normalize=0[a]"
    )

    path = out_dir / name
    inputs: list[str | Path] = []
    for wav in wavs:
        inputs += ["-i", wav]
    _ffmpeg(
        *inputs,
        "-filter_complex",
        ";".join(chains),
        "-map",
        "[v]",
        "-map",
        "[a]",
        "-frames:v",
        str(total_frames),
        "-r",
        str(fps),
        *_X264_ARGS,
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-ar",
        str(sample_rate),
        "-ac",
        "1",
        "-movflags",
        "+faststart",
        path,
    )
    return NarratedClip(
        path=path,
        fps=fps,
        total_frames=total_frames,
        cut_frames=cuts,
        cut_times=tuple(c / fps for c in cuts),
        duration=total_frames / fps,
        phrases=tuple(out_phrases),
        sample_rate=sample_rate,
        size=size,
    )


def make_long_clip(out_dir: Path, source: Path, copies: int) -> Path:
    """Concatenate ``copies`` copies of ``source`` with the concat demuxer and ``-c copy``.

    No re-encoding, so it is fast even for hours of output (e.g. 12 copies of
    a 10-minute file -> ~2 h). Returns ``out_dir / "<stem>_x<copies><suffix>"``.
    """
    if copies < 1:
        raise ValueError("copies must be >= 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    source = Path(source).resolve()
    if not source.is_file():
        raise FileNotFoundError(source)
    quoted = str(source).replace("'", r"'\''")
    listing = out_dir / f"{source.stem}_x{copies}.txt"
    listing.write_text(f"file '{quoted}'\n" * copies, encoding="utf-8")
    path = out_dir / f"{source.stem}_x{copies}{source.suffix}"
    _ffmpeg(
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        listing,
        "-map",
        "0",
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        path,
    )
    return path


def filtered_copy(src: Path, dst: Path, video_filter: str) -> Path:
    """Re-encode ``src`` to ``dst`` through an ffmpeg video filter (``hue=h=90``: the same shots,
    each a little unlike itself). Returns ``dst``."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-i", src, "-vf", video_filter, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-an", dst)
    return Path(dst)


def truncate_copy(src: Path, dst: Path, keep_fraction: float = 0.5) -> Path:
    """Copy the first ``keep_fraction`` (0..1) of ``src``'s bytes to ``dst``.

    Useful for producing a damaged mp4 (e.g. one whose moov atom or tail of
    the mdat is missing). Returns ``dst``.
    """
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError("keep_fraction must be within [0, 1]")
    remaining = int(Path(src).stat().st_size * keep_fraction)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while remaining > 0:
            chunk = fin.read(min(remaining, 1 << 20))
            if not chunk:
                break
            fout.write(chunk)
            remaining -= len(chunk)
    return Path(dst)


# --------------------------------------------------------------------------
# subtitles
# --------------------------------------------------------------------------


def _timestamp(seconds: float, sep: str) -> str:
    """``HH:MM:SS<sep>mmm`` for a non-negative time in seconds."""
    ms = max(0, round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def write_srt(path: Path, cues: Iterable[tuple[float, float, str]]) -> Path:
    """Write an SRT file from ``(start_s, end_s, text)`` cues (``HH:MM:SS,mmm``)."""
    blocks = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(cues, 1)
    ]
    Path(path).write_text("\n".join(blocks), encoding="utf-8")
    return Path(path)


def write_vtt(path: Path, cues: Iterable[tuple[float, float, str]]) -> Path:
    """Write a WebVTT file from ``(start_s, end_s, text)`` cues (``HH:MM:SS.mmm``)."""
    blocks = [f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n" for start, end, text in cues]
    Path(path).write_text("WEBVTT\n\n" + "\n".join(blocks), encoding="utf-8")
    return Path(path)


@dataclass(frozen=True)
class SlideClip:
    """Shots of known content: rendered slides (text at known boxes) around a stretch of real
    footage. `shots` lists (start, end, text or None for the footage), seconds."""

    path: Path
    shots: tuple[tuple[float, float, str | None], ...]


def render_slide(path: Path, lines: Sequence[str], size: tuple[int, int] = (1280, 720)) -> Path:
    """A slide: light lines of text on a dark background, PIL's scalable default font."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, (16, 24, 48))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        font = ImageFont.load_default(size=56 if i == 0 else 36)
        draw.text((90, 110 + 150 * i), line, font=font, fill=(250, 250, 250))
    img.save(path)
    return path


def make_slide_clip(
    out_dir: Path,
    footage: Path,
    slides: Sequence[Sequence[str]] = (
        ("Quarterly results 2026", "Revenue grew by 14 percent"),
        ("Questions and answers",),
    ),
    slide_seconds: float = 3.0,
    footage_start: float = 52.0,
    footage_seconds: float = 4.0,
    name: str = "slides.mp4",
) -> SlideClip:
    """slide 1, footage (a stretch of a real recording), slide 2, ...: 1280x720, 24 fps, h264, silent."""
    out = out_dir / name
    inputs: list[str | Path] = []
    filters = []
    shots: list[tuple[float, float, str | None]] = []
    t = 0.0
    parts: list[tuple[str, str | None]] = []
    for i, lines in enumerate(slides):
        png = render_slide(out_dir / f"{out.stem}-slide{i}.png", lines)
        inputs += ["-loop", "1", "-t", f"{slide_seconds}", "-i", png]
        parts.append(("slide", " / ".join(lines)))
        if i == 0:
            inputs += ["-ss", f"{footage_start}", "-t", f"{footage_seconds}", "-i", footage]
            parts.append(("footage", None))
    for k, (kind, text) in enumerate(parts):
        fit = "scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2"
        filters.append(f"[{k}:v]{fit},fps=24,format=yuv420p,setsar=1[v{k}]")
        length = slide_seconds if kind == "slide" else footage_seconds
        shots.append((t, t + length, text))
        t += length
    graph = ";".join(filters) + ";" + "".join(f"[v{k}]" for k in range(len(parts)))
    graph += f"concat=n={len(parts)}:v=1:a=0[out]"
    _ffmpeg(
        *inputs,
        "-filter_complex",
        graph,
        "-map",
        "[out]",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "20",
        out,
    )
    return SlideClip(out, tuple(shots))


def bbb_excerpt(out: Path, seconds: float, width: int, height: int) -> Path:
    """The first `seconds` of the shared `bbb_10min.mp4` (real footage with hard cuts and sound) at
    width x height, H.264 CRF 18 with AAC: real media for the generation bridge's tests."""
    from tests.conftest import shared

    _ffmpeg("-t", f"{seconds:g}", "-i", shared("bbb_10min.mp4"), "-vf", f"scale={width}:{height}",
            "-c:v", "libx264", "-crf", "18", "-preset", "veryfast", "-c:a", "aac", out)  # fmt: skip
    return out
