"""ffmpeg as the generation bridge uses it: one encoding for every file it writes (so pieces join
frame-exactly), frame grabs, and a runner that reports progress and can be stopped.

Every file is H.264 (CRF 18, yuv420p) with AAC at 48 kHz stereo, at the source's size and frame rate.
Times come in as frame indices; a frame is found by seeking to half a frame before it (the first frame
at or after that time is the one wanted) and restarting the timestamps there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reasoning.generate.backends import BackendError, Cancelled

if TYPE_CHECKING:
    from reasoning.generate.request import Plan, Source

    Media = Path | Source
    """What the helpers read: a file this process wrote (a still, an insert), or the edited video
    (`Source`, which may be a URL ffmpeg reads by ranges)."""

RATE = 48000
"""Audio sample rate of every file written."""

COLOUR = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
"""Every file is BT.709, limited range, and says so: pieces made from stills (RGB) and pieces cut from
the source then decode to the same colours, and a player does not shift them at a join."""
TO_709 = "out_color_matrix=bt709:out_range=tv"
"""The `scale` options that convert into `COLOUR` (the input's own matrix read from its tags)."""

VIDEO_CODEC = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", *COLOUR]
PREVIEW_CODEC = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "8", "-pix_fmt", "yuv420p", *COLOUR]
"""The preview re-encodes the insert near-lossless, so an editor can compare the two frame by frame
(tests/reasoning/test_generate.py holds the in-point at >= 45 dB against the insert)."""
AUDIO_CODEC = ["-c:a", "aac", "-b:a", "128k", "-ar", str(RATE), "-ac", "2"]


def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise BackendError("ffmpeg is not on PATH; install it (`apt-get install ffmpeg`) or run `make setup`")
    return path


def opened(media: Media) -> list[str]:
    """ffmpeg's arguments that open `media` (its input options, then `-i`)."""
    return ["-i", str(media)] if isinstance(media, Path) else media.inputs()


def redact(text: str) -> str:
    """ffmpeg's words with every URL's query (a pre-signed URL's signature) cut off."""
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s?'\"]*)\?[^\s'\"]*", r"\1", text)


def seek(frame: int, fps: float) -> list[str]:
    """Input options that start reading at `frame` (put before its `-i`)."""
    return ["-ss", f"{max(0.0, (frame - 0.5) / fps):.6f}"] if frame > 0 else []


def _streams(media: Media, select: str, entries: str, *extra: str, timeout: float = 60) -> list[dict]:
    """ffprobe's `entries` of the streams `select` of `media` (empty when it has none)."""
    cmd = ["ffprobe", "-v", "error", *extra, "-select_streams", select, "-show_entries", f"stream={entries}"]
    res = subprocess.run(
        [*cmd, "-of", "json", *opened(media)], capture_output=True, text=True, timeout=timeout
    )
    return list(json.loads(res.stdout or "{}").get("streams") or [])


def has_audio(media: Media) -> bool:
    return bool(_streams(media, "a", "index"))


def count_frames(path: Path) -> int:
    """Video frames in `path`, counted by decoding (not the container's claim)."""
    streams = _streams(path, "v:0", "nb_read_frames", "-count_frames", timeout=600) or [{}]
    return int(streams[0].get("nb_read_frames", 0))


def grab(
    media: Media, frame: int, fps: float, width: int | None = None, height: int | None = None
) -> np.ndarray:
    """Frame `frame` of `media` as an (H, W, 3) uint8 RGB array (scaled to width x height if given)."""
    scale = f",scale={width}:{height}:flags=bicubic" if width and height else ""
    cmd = [ffmpeg_path(), "-v", "error", "-nostdin", *seek(frame, fps), *opened(media)]
    cmd += [
        "-vf",
        f"setpts=PTS-STARTPTS{scale}",
        "-frames:v",
        "1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    if not (width and height):  # the frame's own size
        info = (_streams(media, "v:0", "width,height") or [{}])[0]
        width, height = info.get("width"), info.get("height")
    w, h = width, height
    res = subprocess.run(cmd, capture_output=True, timeout=120)
    if res.returncode != 0 or not w or not h or len(res.stdout) < w * h * 3:
        reason = redact(res.stderr.decode(errors="replace")).strip().splitlines()[-1:] or ["no frame"]
        raise BackendError(f"could not read frame {frame} of {media.name}: {reason[0]}")
    return np.frombuffer(res.stdout[: w * h * 3], np.uint8).reshape(h, w, 3)


def still(media: Media, frame: int, fps: float, out: Path) -> Path:
    """Frame `frame` of `media` written losslessly to the PNG `out`."""
    cmd = [ffmpeg_path(), "-y", "-v", "error", "-nostdin", *seek(frame, fps), *opened(media)]
    cmd += ["-vf", "setpts=PTS-STARTPTS", "-frames:v", "1", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0 or not out.is_file():
        reason = redact(res.stderr).strip()[-300:]
        raise BackendError(f"could not read frame {frame} of {media.name}: {reason}")
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images of one shape, dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def run_ffmpeg(args: list[str], frames: int, progress: Callable[[float], None], what: str) -> None:
    """ffmpeg with `args`, reporting the share of `frames` written; `BackendError` with ffmpeg's own
    last words when it fails. `progress` may raise `Cancelled`: ffmpeg is stopped and it propagates."""
    cmd = [ffmpeg_path(), "-y", "-v", "error", "-nostdin", "-progress", "pipe:1", "-nostats", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        for line in proc.stdout:
            if line.startswith("frame=") and frames > 0:
                progress(min(1.0, int(line.split("=", 1)[1] or 0) / frames))
    except Cancelled:
        proc.kill()
        proc.wait()
        raise
    err = redact(proc.stderr.read())
    if proc.wait() != 0:
        last = err.strip().splitlines()[-3:] or ["no message"]
        raise BackendError(f"ffmpeg failed while {what}: {' / '.join(last)[-600:]}")
    progress(1.0)


def conform(
    video: Path, plan: Plan, out: Path, progress: Callable[[float], None], sound: Path | None = None
) -> Path:
    """A model's raw video made into the plan's piece at `out`: exactly `plan.timeline_frames`
    frames at the source's rate and size (scaled to fit and padded, never stretched), BT.709, with a
    sound track: the model's own `sound` when it made one, the source's from the edit's start when the
    audio is kept, else silence (each padded or cut to the piece's length)."""
    n, fps = plan.timeline_frames, plan.source.fps
    width, height = plan.source.width, plan.source.height
    src = plan.source
    inputs = ["-i", str(video)]
    if sound is not None:
        inputs += ["-i", str(sound)]
    elif plan.request.audio == "keep" and has_audio(src):
        inputs += [*seek(plan.start, fps), "-t", f"{(n + 2) / fps:.6f}", *opened(src)]
    else:
        inputs += ["-f", "lavfi", "-t", f"{n / fps + 1:.6f}", "-i", f"anullsrc=r={RATE}:cl=stereo"]
    graph = (
        f"[0:v]setpts=PTS-STARTPTS,scale={width}:{height}:force_original_aspect_ratio=decrease:flags=bicubic:{TO_709},"
        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fps},format=yuv420p,"
        f"tpad=stop_mode=clone:stop={n},trim=end_frame={n},setpts=PTS-STARTPTS[vo];"
        f"[1:a]asetpts=PTS-STARTPTS,aresample={RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,apad,"
        f"atrim=end_sample={round(n / fps * RATE)},asetpts=PTS-STARTPTS[ao]"
    )
    args = [*inputs, "-filter_complex", graph, "-map", "[vo]", "-map", "[ao]", *VIDEO_CODEC, *AUDIO_CODEC]
    run_ffmpeg([*args, "-r", f"{fps}", str(out)], n, progress, "conforming the backend's video")
    return out
