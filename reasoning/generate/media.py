"""ffmpeg as the generation bridge uses it: one encoding for every file it writes (so pieces join
frame-exactly), frame grabs, and a runner that reports progress and can be stopped.

Every file is H.264 (CRF 18, yuv420p) with AAC at 48 kHz stereo, at the source's size and frame rate.
Times come in as frame indices; a frame is found by seeking to half a frame before it (the first frame
at or after that time is the one wanted) and restarting the timestamps there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from reasoning.generate.backends import BackendError, Cancelled

RATE = 48000
"""Audio sample rate of every file written."""

COLOUR = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
"""Every file is BT.709, limited range, and says so: pieces made from stills (RGB) and pieces cut from
the source then decode to the same colours, and a player does not shift them at a join."""
TO_709 = "out_color_matrix=bt709:out_range=tv"
"""The `scale` options that convert into `COLOUR` (the input's own matrix read from its tags)."""

VIDEO_CODEC = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", *COLOUR]
PREVIEW_CODEC = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "8", "-pix_fmt", "yuv420p", *COLOUR]
"""The preview re-encodes the insert: near-lossless (about 48 dB against it), so an editor can
compare the two frame by frame."""
AUDIO_CODEC = ["-c:a", "aac", "-b:a", "128k", "-ar", str(RATE), "-ac", "2"]


def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise BackendError("ffmpeg is not on PATH; install it (`apt-get install ffmpeg`) or run `make setup`")
    return path


def seek(frame: int, fps: float) -> list[str]:
    """Input options that start reading at `frame` (put before its `-i`)."""
    return ["-ss", f"{max(0.0, (frame - 0.5) / fps):.6f}"] if frame > 0 else []


def has_audio(path: Path) -> bool:
    res = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "a",
            "-show_entries",
            "stream=index",
            "-of",
            "json",
            "-i",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return bool(json.loads(res.stdout or "{}").get("streams"))


def count_frames(path: Path) -> int:
    """Video frames in `path`, counted by decoding (not the container's claim)."""
    res = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "json",
            "-i",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    streams = json.loads(res.stdout or "{}").get("streams") or [{}]
    return int(streams[0].get("nb_read_frames", 0))


def grab(
    path: Path, frame: int, fps: float, width: int | None = None, height: int | None = None
) -> np.ndarray:
    """Frame `frame` of `path` as an (H, W, 3) uint8 RGB array (scaled to width x height if given)."""
    scale = f",scale={width}:{height}:flags=bicubic" if width and height else ""
    cmd = [ffmpeg_path(), "-v", "error", "-nostdin", *seek(frame, fps), "-i", str(path)]
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
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "json",
            "-i",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    info = (json.loads(probe.stdout or "{}").get("streams") or [{}])[0]
    w, h = width or info.get("width"), height or info.get("height")
    res = subprocess.run(cmd, capture_output=True, timeout=120)
    if res.returncode != 0 or not w or not h or len(res.stdout) < w * h * 3:
        reason = res.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no frame"]
        raise BackendError(f"could not read frame {frame} of {path.name}: {reason[0]}")
    return np.frombuffer(res.stdout[: w * h * 3], np.uint8).reshape(h, w, 3)


def still(path: Path, frame: int, fps: float, out: Path) -> Path:
    """Frame `frame` of `path` written losslessly to the PNG `out`."""
    cmd = [ffmpeg_path(), "-y", "-v", "error", "-nostdin", *seek(frame, fps), "-i", str(path)]
    cmd += ["-vf", "setpts=PTS-STARTPTS", "-frames:v", "1", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0 or not out.is_file():
        raise BackendError(f"could not read frame {frame} of {path.name}: {res.stderr.strip()[-300:]}")
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
    err = proc.stderr.read()
    if proc.wait() != 0:
        last = err.strip().splitlines()[-3:] or ["no message"]
        raise BackendError(f"ffmpeg failed while {what}: {' / '.join(last)[-600:]}")
    progress(1.0)


def conform(
    video: Path,
    out: Path,
    frames: int,
    fps: float,
    width: int,
    height: int,
    sound: tuple[Path, int, float] | None,
    progress: Callable[[float], None],
) -> Path:
    """A backend's raw video made into a piece: exactly `frames` frames at `fps`, `width` x `height`
    (scaled to fit and padded, never stretched), BT.709, with a sound track: the source's from frame
    `sound[1]` at rate `sound[2]` of file `sound[0]` when given, else silence."""
    n = frames
    inputs = ["-i", str(video)]
    if sound is not None:
        path, first, rate = sound
        inputs += [*seek(first, rate), "-t", f"{(n + 2) / fps:.6f}", "-i", str(path)]
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
