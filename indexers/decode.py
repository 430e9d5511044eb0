"""Probe media and stream small frames from it in windows, so memory does not grow with duration.

Two decoders sit behind one base class, chosen by name (`DECODERS`):
- `pyav` (default): libavcodec with frame threading and the loop filter skipped (invisible at
  thumbnail size), reading the decoded YUV planes directly and subsampling them; it also reports
  frame times from the stream, which the shot times use;
- `decord`: decord's VideoReader with in-decoder scaling; the fallback when PyAV cannot open a file.
Both run shot detection at ~520 frames/s on 720p h264 on two cores (docs/benchmarks/shots.md).
Audio is decoded by the ffmpeg CLI (see indexers/transcript.py), which tolerates corrupt packets.

Media named by URL (indexers/source.py) is read the same way: ffprobe and ffmpeg open its URL (a
pre-signed one for `s3://`), PyAV reads a seekable range reader; decord reads local files only, so
PyAV decodes remote media whatever the decoder setting.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexers.source import MediaError as MediaError  # raised here, defined beside the sources
from indexers.source import MediaSource, StorageOptions, media_source
from memory.runtime import Registry

if TYPE_CHECKING:
    import av
    import av.container

PLAYLISTS = ("hls", "dash", "concat", "ffconcat", "sdp", "rtsp", "rtp")
"""Containers that name other resources: refused for remote media (they would make the decoders
fetch what they name, and a range reader cannot follow them)."""


@dataclass
class MediaInfo:
    source: MediaSource
    """Where the bytes are read (a local file, or an object by URL)."""
    duration: float  # seconds
    size_bytes: int
    container: str
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    video_duration: float | None = None  # the video stream's own, when the container says

    @property
    def path(self) -> Path:
        """The local file (ValueError for remote media: use `source`)."""
        return self.source.path

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


@dataclass
class FrameBatch:
    """Consecutive analysed frames: `times` (T,) seconds from the start, `rgb` (T, H, W, 3) uint8."""

    times: np.ndarray
    rgb: np.ndarray


@dataclass
class DecodeOptions:
    thumb_size: tuple[int, int] = (64, 36)
    """Width and height (pixels) of the frames handed to shot detection."""
    max_fps: float = 30.0
    """Analyse at most this many frames per second (every n-th frame above it)."""
    window: int = 256
    """Frames per batch: bounds memory whatever the duration."""
    reference_only: bool = True
    """Decode only the frames other frames refer to (PyAV): skips non-reference B-frames, about 40%
    less decoding on typical h264. Encoders put a reference frame at a hard cut, so cuts still land
    on their frame; elsewhere a boundary is placed at most one skipped run late."""
    start: float = 0.0
    """Seconds: decode from the keyframe at or before this time (PyAV; one window of a long video,
    `indexers.visual.run_along`). The frames from that keyframe on are those a pass from the
    beginning decodes."""


def require_ffmpeg() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise MediaError(
                f"{tool} is not on PATH; install it (`apt-get install ffmpeg`) or run `make setup`"
            )


def probe(where: Path | str | MediaSource, storage: StorageOptions | None = None) -> MediaInfo:
    """Read container and stream facts with ffprobe; MediaError for anything that is not media.
    `where` is a path, a URL (`file://`, `s3://`, `https://`, `http://`) or a `MediaSource`."""
    require_ffmpeg()
    source = media_source(where, storage)
    size = source.stat().size  # MediaError: no such file or object, a folder, unreachable
    if size == 0:
        raise MediaError(f"{source}: empty file")
    # absolute path (or URL) after -i: a name like `-rf.mp4` or `x:y.mp4` is never read as an option or protocol
    target = source.ffmpeg_input()
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    cmd += [*source.ffmpeg_options(), "-i", target]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60 if source.local else 180)
    except subprocess.TimeoutExpired:
        raise MediaError(f"{source}: reading the media's header took too long; is the server slow?") from None
    if res.returncode != 0:
        reason = (res.stderr.strip().splitlines() or ["unreadable"])[-1]
        reason = source.redact(reason.replace(target + ": ", "")).replace(f"{source}: ", "")
        raise MediaError(f"{source}: not readable as media ({reason}); is it truncated or not a video?")
    data = json.loads(res.stdout or "{}")
    fmt = data.get("format", {})
    video = next(
        (
            s
            for s in data.get("streams", [])
            if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
        ),
        None,
    )
    audio = next((s for s in data.get("streams", []) if s.get("codec_type") == "audio"), None)
    if video is None and audio is None:
        raise MediaError(f"{source}: no video or audio stream ({fmt.get('format_name', 'unknown format')})")
    if not source.local and set(str(fmt.get("format_name", "")).split(",")) & set(PLAYLISTS):
        raise MediaError(
            f"{source}: a {fmt.get('format_name')} playlist, not a media file; name one of its media files"
        )
    duration = _float(fmt.get("duration")) or _float((video or audio or {}).get("duration"))
    if not duration or duration <= 0:
        raise MediaError(f"{source}: duration unknown or zero; the file may be truncated")
    fps = None
    if video is not None:
        fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    return MediaInfo(
        video_duration=_float(video.get("duration")) if video else None,
        source=source,
        duration=duration,
        size_bytes=size,
        container=fmt.get("format_name", ""),
        fps=fps,
        width=video.get("width") if video else None,
        height=video.get("height") if video else None,
        video_codec=video.get("codec_name") if video else None,
        audio_codec=audio.get("codec_name") if audio else None,
    )


def _float(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _rate(v: str | None) -> float | None:
    if not v or "/" not in v:
        return None
    num, den = v.split("/")
    return float(num) / float(den) if float(den) else None


@contextmanager
def open_container(source: MediaSource) -> Iterator[av.container.InputContainer]:
    """PyAV's input container of `source`: a local file by its path, a remote object through a
    range reader (only the blocks the demuxer asks for are fetched). MediaError when it cannot open."""
    import av

    reader = source.open() if not source.local else None
    try:
        try:
            container = av.open(reader if reader is not None else str(source.path), "r")
        except av.FFmpegError as e:
            raise MediaError(f"{source}: cannot open video ({e})") from e
        with container:
            yield container
    finally:
        if reader is not None:
            reader.close()


FrameTap = Callable[[float, "av.VideoFrame"], None]
"""Handed every decoded frame with its time (seconds from the start), before the thumbnails are made:
how the vision stage takes the frames it looks at from the shot detector's decoding pass."""


class VideoSource:
    """Base of the decoders: one required method, `frames`. `taps` says whether it can hand its
    decoded frames to a `FrameTap`."""

    name = "base"
    taps = False

    def frames(
        self, info: MediaInfo, opts: DecodeOptions, tap: FrameTap | None = None
    ) -> Iterator[FrameBatch]:
        raise NotImplementedError


class PyAVSource(VideoSource):
    name = "pyav"
    taps = True

    def frames(
        self, info: MediaInfo, opts: DecodeOptions, tap: FrameTap | None = None
    ) -> Iterator[FrameBatch]:
        import av

        tw, th = opts.thumb_size
        with open_container(info.source) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.options = {"skip_loop_filter": "all"}  # invisible at thumbnail size
            skipping = opts.reference_only
            if skipping:
                stream.codec_context.skip_frame = "NONREF"
            step = max(1, math.ceil((info.fps or opts.max_fps) / opts.max_fps))
            base = stream.time_base
            start = float(stream.start_time * base) if stream.start_time is not None and base else 0.0
            if opts.start > 0 and base:
                container.seek(int((opts.start + start) / base), stream=stream, backward=True)
            times: list[float] = []
            grid = np.empty((opts.window, 2 * th, 2 * tw, 3), np.uint8)  # filled in place, frame by frame
            errors = n = packets = 0
            for packet in container.demux(stream):
                packets += 1
                if skipping and n == 0 and packets > 64:  # a stream that marks no frame as reference
                    stream.codec_context.skip_frame = "DEFAULT"
                    skipping = False
                try:
                    decoded = packet.decode()
                except av.FFmpegError:
                    errors += 1
                    if errors > 50 and errors > n // 10:
                        raise MediaError(f"{info.source}: too many undecodable video packets") from None
                    continue
                for frame in decoded:
                    n += 1
                    t = float(frame.time if frame.time is not None else (n - 1) / (info.fps or 25.0)) - start
                    if tap is not None:
                        tap(t, frame)
                    if (n - 1) % step:
                        continue
                    _yuv_thumb(frame, grid[len(times)])
                    times.append(t)
                    if len(times) == opts.window:
                        yield _batch(times, grid)
                        times = []
            if times:
                yield _batch(times, grid[: len(times)])


def _batch(times: list[float], thumbs: np.ndarray) -> FrameBatch:
    """Average each frame's 2x2-subsampled grid to the thumbnail (vectorised over the batch)."""
    grid = thumbs.astype(np.uint16)  # (T, 2H, 2W, 3) YUV; a copy, so the caller may refill thumbs
    # four strided adds: ~20x faster than ndarray.mean over the reshaped 2x2 axes
    total = grid[:, 0::2, 0::2] + grid[:, 0::2, 1::2] + grid[:, 1::2, 0::2] + grid[:, 1::2, 1::2]
    yuv = total.astype(np.float32) * 0.25
    # Frames come out in display order, but some containers (AVI with B-frames) stamp them with
    # decode-order times: the sorted times are the display times.
    return FrameBatch(np.clip(np.sort(np.asarray(times)), 0.0, None), yuv_to_rgb(yuv))


def _plane(frame: av.VideoFrame, i: int, out: np.ndarray) -> None:
    """Plane i of a frame, subsampled by striding into `out` (rows, cols) uint8."""
    rows, cols = out.shape
    plane = frame.planes[i]
    arr = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]  # type: ignore[call-overload]  # a Plane is a buffer; its stubs do not say so
    sy, sx = max(1, plane.height // rows), max(1, plane.width // cols)
    sub = arr[: sy * rows : sy, : sx * cols : sx]
    if sub.shape != (rows, cols):  # tiny planes: pad by edge replication
        sub = np.pad(sub, ((0, rows - sub.shape[0]), (0, cols - sub.shape[1])), mode="edge")
    out[...] = sub


def _yuv_thumb(frame: av.VideoFrame, out: np.ndarray) -> None:
    """Fill `out` (2h, 2w, 3) uint8 with the frame's YUV grid; _batch averages it down to (h, w)."""
    if frame.format.name not in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"):
        frame = frame.reformat(format="yuv420p")
    for k in range(3):
        _plane(frame, k, out[..., k])


def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV (..., 3) float -> RGB uint8."""
    y = (yuv[..., 0] - 16.0) * 1.164
    u, v = yuv[..., 1] - 128.0, yuv[..., 2] - 128.0
    rgb = np.stack([y + 1.596 * v, y - 0.392 * u - 0.813 * v, y + 2.017 * u], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


class DecordSource(VideoSource):
    name = "decord"

    def frames(
        self, info: MediaInfo, opts: DecodeOptions, tap: FrameTap | None = None
    ) -> Iterator[FrameBatch]:
        import decord

        tw, th = opts.thumb_size
        if not info.source.local:  # it would read the whole object into memory first
            raise MediaError(f"{info.source}: decord reads local files only (PyAV reads URLs)")
        try:
            reader = decord.VideoReader(str(info.path), width=tw, height=th, num_threads=0)
        except Exception as e:  # decord raises its own DECORDError without a public base
            raise MediaError(f"{info.source}: cannot open video ({e})") from e
        n = len(reader)
        fps = info.fps or reader.get_avg_fps() or 25.0
        step = max(1, math.ceil(fps / opts.max_fps))
        indices = list(range(0, n, step))
        stamps = np.asarray(reader.get_frame_timestamp(indices)[:, 0], dtype=np.float64) if n else np.zeros(0)
        if not (np.isfinite(stamps).all() and (stamps >= 0).all() and (np.diff(stamps) > 0).all()):
            stamps = np.asarray(indices, dtype=np.float64) / fps  # decord misreads some AVI timestamps
        first = int(np.searchsorted(stamps, opts.start)) if opts.start > 0 else 0
        for i in range(first, len(indices), opts.window):
            chunk = indices[i : i + opts.window]
            yield FrameBatch(stamps[i : i + len(chunk)], reader.get_batch(chunk).asnumpy())


DECODERS: Registry[type[VideoSource]] = Registry(
    "decoder", {"pyav": "indexers.decode:PyAVSource", "decord": "indexers.decode:DecordSource"}
)


def get_decoder(name: str) -> VideoSource:
    """A decoder by name; its backend is imported only now."""
    if name not in DECODERS:
        raise DECODERS.unknown(name)
    try:
        return DECODERS.get(name)()
    except ImportError as e:
        raise MediaError(f"decoder {name!r} needs a package that is missing ({e}); run `make setup`") from e


def stream_frames(
    info: MediaInfo, opts: DecodeOptions, decoder: str = "pyav", tap: FrameTap | None = None
) -> Iterator[FrameBatch]:
    """Frames from the named decoder, falling back to the other when it cannot open the file. A
    `tap` is fed by a decoder that can (`VideoSource.taps`, PyAV); another one reads without it, and
    the caller sees that the tap was never fed."""
    order = [decoder] + [d for d in DECODERS if d != decoder]
    last: Exception | None = None
    for name in order:
        produced = False
        try:
            source = get_decoder(name)
            for batch in source.frames(info, opts, tap if source.taps else None):
                produced = True
                yield batch
            return
        except MediaError as e:
            if produced:
                raise
            last = e
    raise MediaError(str(last) if last else f"{info.source}: no decoder could read the video")


def look_size(info: MediaInfo, max_side: int) -> tuple[int, int] | None:
    """(width, height) of frames scaled to at most `max_side` pixels on the longer side, even; None
    when the stream does not say its size (frames are then converted as they are)."""
    w, h = info.width or 0, info.height or 0
    if not (w and h):
        return None
    scale = min(1.0, max_side / max(w, h))
    return max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)


def sample_frames(
    info: MediaInfo,
    times: list[float],
    max_side: int = 1280,
    reference_only: bool = True,
    seek_beyond: float = 0.0,
) -> Iterator[tuple[int, float, np.ndarray]]:
    """RGB frames (H, W, 3) uint8 at the given times (seconds, ascending), each scaled to at most
    `max_side` pixels on its longer side: yields (index into times, frame time, frame).

    One sequential pass (PyAV, reference frames only by default): each time takes the first decoded
    frame at or after it, within half a second; only those frames are converted to RGB. A time with
    no frame near it (a damaged stretch, a time past the last frame) is skipped. `seek_beyond` > 0:
    when the next time lies more than this many seconds past the last frame decoded, jump to the
    keyframe before it instead of decoding the stretch between (a few times spread over hours)."""
    import av

    if not times:
        return
    if any(b < a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError("sample times must be ascending")
    size = look_size(info, max_side)
    with open_container(info.source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        skipping = reference_only
        if skipping:
            stream.codec_context.skip_frame = "NONREF"
        base = stream.time_base
        start = float(stream.start_time * base) if stream.start_time is not None and base else 0.0
        at, n, packets = 0, 0, 0
        last, sought, stamped = 0.0, -1, True
        while at < len(times):
            if seek_beyond > 0 and base and stamped and sought < at and times[at] - last > seek_beyond:
                sought = at  # once per time: a keyframe far before it must not make this loop
                container.seek(int((times[at] + start) / base), stream=stream, backward=True)
            jumped = False
            for packet in container.demux(stream):
                packets += 1
                if skipping and n == 0 and packets > 64:
                    stream.codec_context.skip_frame = "DEFAULT"
                    skipping = False
                try:
                    decoded = packet.decode()
                except av.FFmpegError:
                    continue
                for frame in decoded:
                    n += 1
                    stamped = stamped and frame.time is not None
                    t = (
                        float(frame.time) if frame.time is not None else (n - 1) / (info.fps or 25.0)
                    ) - start
                    last = t
                    while at < len(times) and t > times[at] + 0.5:
                        at += 1  # nothing decoded near this time
                    if at < len(times) and t >= times[at] - 0.02:
                        rgb = (
                            frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                            if size
                            else (frame.to_ndarray(format="rgb24"))
                        )
                        while at < len(times) and t >= times[at] - 0.02 and t <= times[at] + 0.5:
                            yield at, t, rgb
                            at += 1
                    if at == len(times):
                        return
                    jumped = seek_beyond > 0 and stamped and sought < at and times[at] - t > seek_beyond
                    if jumped:
                        break
                if jumped:
                    break
            if not jumped:
                return  # the end of the stream
