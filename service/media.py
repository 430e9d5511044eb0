"""What the service reads back from a media file: the type to serve it as, and keyframe thumbnails
(decoded with PyAV, cached as JPEG under `home/thumbs/<video>/`; media named by URL is read by byte
ranges around the keyframe, not fetched whole)."""

from __future__ import annotations

import threading
from pathlib import Path

from kernels.timecode import hms
from memory import Video
from service.api.errors import ApiError
from service.settings import Settings

_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
          ".mkv": "video/x-matroska", ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".wav": "audio/wav",
          ".ogg": "audio/ogg", ".srt": "application/x-subrip", ".vtt": "text/vtt"}  # fmt: skip


def media_type(path: Path) -> str:
    return _TYPES.get(path.suffix.lower(), "application/octet-stream")


_thumb_lock = threading.Lock()


def keyframe_jpeg(cfg: Settings, video: Video, t: float, width: int) -> bytes:
    """JPEG bytes of the keyframe at or before `t` (cached under `home/thumbs/VIDEO/`)."""
    import io

    import av
    from PIL import Image

    t = min(t, max(0.0, video.duration - 0.05))
    cache = cfg.home / "thumbs" / video.id / f"{round(t * 10)}-{width}.jpg"
    if cache.is_file():
        return cache.read_bytes()
    from indexers.decode import MediaError, open_container
    from indexers.source import media_source

    try:
        with open_container(media_source(video.uri, cfg.storage_options())) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            base = stream.time_base or 1
            container.seek(int(t / float(base)), stream=stream, backward=True, any_frame=False)
            frame = next(container.decode(stream), None)
            if frame is None:
                raise ApiError(404, "not_found", f"no picture at {hms(t)}")
            image = frame.to_image()
    except (av.FFmpegError, MediaError, OSError, IndexError, StopIteration) as e:
        raise ApiError(404, "not_found", f"no picture at {hms(t)} ({type(e).__name__})") from None
    height = max(1, round(image.height * width / image.width))
    buf = io.BytesIO()
    image.resize((width, height), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=80)
    data = buf.getvalue()
    with _thumb_lock:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_bytes(data)
        tmp.replace(cache)
    return data
