"""What the service does with media named by URL: stream an upload into the object store, serve a
remote video to the player by byte ranges, and remove the objects it uploaded.

An upload to the object store (`upload_url = "s3://bucket/prefix"`) is one multipart upload of
`PART_BYTES` parts, each sent as it fills, off the event loop: the service holds a few parts of it
in memory whatever the file's size, and a refused, cut off or abandoned upload is aborted, so no
part of it stays in the bucket. The player's range requests are answered by ranged reads of the
object, relayed as they arrive: the service never holds or copies the whole object.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from service.api.errors import ApiError
from service.settings import Settings

if TYPE_CHECKING:
    from indexers.source import MediaSource

log = logging.getLogger("vidmem.service")

PART_BYTES = 8 << 20
"""Bytes of each part of an upload into the object store (S3 allows 5 MiB to 5 GiB, at most 10,000
parts: 8 MiB parts take files up to ~78 GiB, above `upload_max_bytes`' default)."""
RELAY_BYTES = 1 << 20
"""Bytes read from the object store per ranged request when the player streams a remote video."""


def upload_target(cfg: Settings, name: str) -> MediaSource:
    """Where an upload named `name` goes in the object store: `upload_url/<fresh id>/<name>`."""
    from indexers.source import media_source

    assert cfg.upload_url is not None
    base = cfg.upload_url.rstrip("/")
    return media_source(f"{base}/{uuid.uuid4().hex}/{quote(name)}", cfg.storage_options())


class ObjectUpload:
    """An upload written into the object store as it streams in. `write` only buffers (it may be
    called on the event loop, e.g. by the multipart parser); `drain` sends each full part from a
    worker thread; `commit` completes the upload, `discard` aborts it (or removes the object)."""

    def __init__(self, target: MediaSource) -> None:
        self.target = target
        self.pending = bytearray()
        self._fh: object | None = None
        self.committed = False

    def write(self, data: bytes) -> None:
        self.pending += data

    async def drain(self, final: bool = False) -> None:
        if len(self.pending) >= PART_BYTES or (final and self.pending):
            data, self.pending = bytes(self.pending), bytearray()
            await run_in_threadpool(self._send, data)

    def _send(self, data: bytes) -> None:
        if self._fh is None:
            self._fh = self.target.create(PART_BYTES)
        self._fh.write(data)  # type: ignore[attr-defined]  # a part goes out once one has filled

    async def commit(self) -> str:
        """The object's URL, once the store has it whole."""
        await self.drain(final=True)
        if self._fh is None:
            self._fh = await run_in_threadpool(self.target.create, PART_BYTES)
        try:
            await run_in_threadpool(self._fh.close)  # type: ignore[attr-defined]
        except Exception as e:
            raise ApiError(503, "unavailable", f"the object store did not take the upload ({e})") from None
        self.committed = True
        return self.target.uri

    def discard_now(self) -> None:
        """Abort the multipart upload, or delete the object once committed; blocks on the store,
        never raises."""
        self.pending = bytearray()
        try:
            if self.committed:
                self.target.remove()
            elif self._fh is not None:
                self._fh.discard()  # type: ignore[attr-defined]  # aborts the multipart upload
                self._fh.closed = True  # type: ignore[attr-defined]  # never completed when collected
        except Exception as e:  # the store is down: the upload is an orphan it may hold
            log.warning("could not remove the aborted upload %s: %s", self.target, e)


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def serve(source: MediaSource, range_header: str | None, media_type: str, filename: str) -> Response:
    """The object, or the one byte range asked for (206), relayed from the store by ranged reads.
    A header with several ranges, or one that does not parse, gets the whole object (RFC 9110 lets
    a server ignore `Range`); a range past the end gets 416."""
    from indexers.source import MediaError

    try:
        fp = source.stat()
    except MediaError as e:
        raise ApiError(404, "not_found", f"the media can no longer be read from the store ({e})") from None
    size = fp.size
    start, end, status = 0, size - 1, 200
    m = _RANGE.match(range_header or "")
    if m and (m.group(1) or m.group(2)):
        first, last = m.group(1), m.group(2)
        if first:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        else:
            start, end = max(0, size - int(last)), size - 1
        if start >= size or start > end or (not first and int(last) == 0):
            raise ApiError(
                416, "range_not_satisfiable", f"the range {range_header!r} is past the end of the media "
                f"({size} bytes)", headers={"Content-Range": f"bytes */{size}"},
            )  # fmt: skip
        status = 206
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start + 1),
        "Content-Disposition": _inline(filename),
    }
    if fp.etag:
        headers["ETag"] = fp.etag
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(_relay(source, start, end + 1), status, headers, media_type=media_type)


def _relay(source: MediaSource, start: int, stop: int) -> Iterator[bytes]:
    """Bytes [start, stop) of the object, one ranged read of `RELAY_BYTES` at a time."""
    from indexers.source import MediaError

    if stop <= start:
        return
    try:
        with source.open(block_size=RELAY_BYTES, cache="none") as fh:
            fh.seek(start)
            at = start
            while at < stop:
                chunk = fh.read(min(RELAY_BYTES, stop - at))
                if not chunk:
                    break
                at += len(chunk)
                yield chunk
    except MediaError as e:  # the status is sent already: the client sees the body cut short
        log.warning("relaying %s stopped: %s", source, e)


def _inline(filename: str) -> str:
    quoted = quote(filename)
    if quoted != filename:
        return f"inline; filename*=utf-8''{quoted}"
    return f'inline; filename="{filename}"'
