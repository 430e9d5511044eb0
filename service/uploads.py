"""What comes into the service as media: uploads streamed to disk, server-side paths confined to the
media roots, and the probe that refuses what is not media before a job is queued.

An upload is the request body itself (`?filename=NAME`) or a `multipart/form-data` form with one
file part, streamed to a fresh folder under `uploads_dir` (or, with `upload_url`, into the object
store: service/remote.py) and cut off at `upload_max_bytes`; nothing of a refused or broken upload
stays on disk or in the bucket.

Media by URL (`s3://`, `https://`, `http://`) is imported only from inside `media_url_roots`, by an
admin key; a `file://` URL is a server-side path like any other, confined to the media roots.
"""

from __future__ import annotations

import re
import shutil
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service.api.errors import ApiError
from service.settings import Settings

if TYPE_CHECKING:
    from indexers.source import StorageOptions
    from service.remote import ObjectUpload

UPLOAD_TYPES = (
    "video/",
    "audio/",
    "application/octet-stream",
    "application/mp4",
    "application/x-subrip",
    "text/vtt",
)
"""Content types an upload may declare; the bytes are then probed, whatever was declared."""
FORM_OVERHEAD = 64 * 1024
"""Bytes a multipart upload may carry besides its file: boundaries, part headers, other fields."""

T = TypeVar("T")


def safe_name(filename: str) -> str:
    """A file name with no directory part and only harmless characters (`../../etc/passwd` -> `passwd`)."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._ \-]", "_", base).strip(" .")
    return base[:200] or "upload"


class FormUpload:
    """The file part of a `multipart/form-data` body (what `curl -F file=@talk.mp4` and HTML forms
    send), written into `folder` as the body streams in: python-multipart's push parser sees each
    chunk once, so memory stays flat whatever the file's size (Starlette's `request.form()` would
    spool the whole file first, unbounded). The file may have `limit` bytes; everything else
    (boundaries, headers, other fields, which are ignored) `FORM_OVERHEAD` bytes. One file per body."""

    def __init__(
        self,
        content_type: str,
        folder: Path | None,
        limit: int,
        filename: str | None,
        to_object: Callable[[str], ObjectUpload] | None = None,
    ) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError(
                400, "bad_request", "a multipart/form-data body needs a boundary in its Content-Type"
            )
        self.folder, self.limit, self.given_name, self.to_object = folder, limit, filename, to_object
        self.path: Path | None = None
        self.name: str | None = None
        self.object: ObjectUpload | None = None  # where the file goes with `to_object` (no folder)
        self.size = 0  # bytes of the file
        self.other = 0  # bytes of everything else
        self.ended = False
        self._fh: IO[bytes] | None = None
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        self._parse_options = parse_options_header
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        from python_multipart.exceptions import FormParserError

        self.other += len(chunk)  # the file's bytes are taken back out as the parser hands them on
        try:
            self._parser.write(chunk)
        except FormParserError as e:
            raise ApiError(400, "bad_request", f"malformed multipart/form-data body: {e}") from None
        if self.other > FORM_OVERHEAD:
            raise ApiError(
                413, "too_large", f"a multipart upload may carry {FORM_OVERHEAD} bytes besides its file"
            )

    def finish(self) -> tuple[Path | None, str]:
        """The file written (None when it went to `to_object`) and its (safe) name."""
        self.close()
        if not self.ended:
            raise ApiError(
                400, "bad_request", "the multipart/form-data body ended before its closing boundary"
            )
        if self.name is None:
            raise ApiError(
                422, "invalid_request", "the multipart/form-data body has no file part; send the file as "
                "a part with a filename, e.g. `curl -F file=@talk.mp4`"
            )  # fmt: skip
        return self.path, self.name

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, params = self._parse_options(self._headers.get(b"content-disposition"))
        filename = params.get(b"filename")
        if not filename:  # a plain field (or a form's file input left empty): ignored
            return
        if self.name is not None:
            raise ApiError(422, "invalid_request", "one file per upload: the body holds a second file part")
        kind = self._headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
        kind = kind.split(";")[0].strip().lower()
        if not kind.startswith(UPLOAD_TYPES):
            raise ApiError(415, "unsupported_media_type", f"the file part is {kind}, not a media type")
        self.name = safe_name(self.given_name or filename.decode("utf-8", "replace"))
        if self.to_object is not None:
            self.object = self.to_object(self.name)
            return
        assert self.folder is not None
        self.path = self.folder / self.name
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed at the part's end or by close()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        out = self._fh or self.object
        if out is None:
            return
        self.size += end - start
        self.other -= end - start
        if self.size > self.limit:
            raise ApiError(413, "too_large", f"uploads are limited to {self.limit} bytes")
        out.write(data[start:end])

    def _part_end(self) -> None:
        self.close()

    def _end(self) -> None:
        self.ended = True


def confine(path: str, roots: list[Path]) -> Path:
    """`path` as a regular file inside one of `roots` (symlinks resolved first, so none can lead
    out); ApiError otherwise. A relative path is taken inside the first root."""
    if not roots:
        raise ApiError(
            403, "forbidden", "server-side paths are disabled; set VIDMEM_MEDIA_ROOTS, or upload the file"
        )
    if "\x00" in path or ".." in Path(path).parts:
        raise ApiError(403, "forbidden", "a path may not contain `..`")
    candidate = Path(path) if Path(path).is_absolute() else roots[0] / path
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ApiError(404, "not_found", f"no such file: {path}") from None
    if not any(real.is_relative_to(r.resolve()) for r in roots):
        raise ApiError(403, "forbidden", f"{path} is outside the allowed media roots")
    if not real.is_file():
        raise ApiError(404, "not_found", f"not a file: {path}")
    return real


def local_import(value: str) -> str:
    """A `file://` URL as the path it names (then confined like any path); other values unchanged."""
    if not value.lower().startswith("file://"):
        return value
    parts = urllib.parse.urlsplit(value)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise ApiError(403, "forbidden", "a file:// URL names a file on this server: file:///path")
    return urllib.parse.unquote(parts.path)


def confine_url(url: str, roots: list[str]) -> str:
    """`url` (s3://, https://, http://) when it lies inside one of `roots` (URL prefixes, matched
    by scheme, host and whole path segments; `.`/`..` segments are inside nothing); ApiError otherwise."""
    from indexers.source import MediaError, source_uri, under

    if not roots:
        raise ApiError(
            403, "forbidden", "imports by URL are disabled; set VIDMEM_MEDIA_URL_ROOTS, or upload the file"
        )
    try:
        uri = source_uri(url)
    except MediaError as e:
        raise ApiError(422, "invalid_request", str(e)) from None
    if not any(under(uri, root) for root in roots):
        raise ApiError(403, "forbidden", f"{url.split('?', 1)[0]} is outside the allowed media URL roots")
    return uri


def probe(path: Path | str, name: str, storage: StorageOptions | None = None) -> None:
    """Refuse what the pipeline could not read (not media, no stream, truncated container, no such
    object, an unreachable host) now, before a job is queued; the message names the upload, not the
    server's path or the object's URL."""
    from indexers.decode import MediaError
    from indexers.pipeline import inspect_media
    from indexers.source import media_source

    try:
        source = media_source(path, storage)
        inspect_media(source)
    except MediaError as e:
        shown = str(e).replace(str(path), name)
        if isinstance(path, str) and "://" in path:
            shown = shown.replace(str(media_source(path)), name)
        raise ApiError(422, "bad_media", shown) from None


async def receive(
    request: Request, cfg: Settings, filename: str | None, then: Callable[[Path | str, str], T]
) -> T:
    """Stream the request's upload to a fresh folder under `cfg.uploads_dir` (or into the object
    store at `cfg.upload_url`), probe it, and hand the file (or the object's URL) and its safe name
    to `then` (run off the event loop; it queues the job). A refused, cut off or abandoned upload (or
    a `then` that fails) leaves nothing behind."""
    content_type = request.headers.get("content-type", "application/octet-stream")
    kind = content_type.split(";")[0].strip().lower()
    form = kind == "multipart/form-data"
    if not form and not kind.startswith(UPLOAD_TYPES):
        raise ApiError(
            415, "unsupported_media_type",
            f"{kind} is not a media type; send the file's bytes, or a multipart/form-data form",
        )  # fmt: skip
    if not form and filename is None:
        raise ApiError(422, "invalid_request", "a raw upload needs `?filename=NAME`")
    limit = cfg.upload_max_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + (FORM_OVERHEAD if form else 0):
        raise ApiError(413, "too_large", f"uploads are limited to {limit} bytes")
    folder: Path | None = None
    sink: ObjectUpload | None = None

    def to_object(name: str) -> ObjectUpload:
        from service.remote import ObjectUpload, upload_target

        nonlocal sink
        sink = ObjectUpload(upload_target(cfg, name))
        return sink

    if cfg.upload_url is None:
        folder = cfg.uploads_dir / uuid.uuid4().hex
        folder.mkdir(parents=True)
    try:
        target: Path | str | None
        if form:
            parts = FormUpload(content_type, folder, limit, filename, to_object if folder is None else None)
            try:
                async for chunk in request.stream():
                    parts.feed(chunk)
                    if sink is not None:
                        await sink.drain()
                target, name = parts.finish()
            finally:
                parts.close()
            size = parts.size
        else:
            name = safe_name(filename or "")
            size = 0
            if folder is None:
                out = to_object(name)
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise ApiError(413, "too_large", f"uploads are limited to {limit} bytes")
                    out.write(chunk)
                    await out.drain()
            else:
                target = folder / name
                with open(target, "wb") as fh:
                    async for chunk in request.stream():
                        size += len(chunk)
                        if size > limit:
                            raise ApiError(413, "too_large", f"uploads are limited to {limit} bytes")
                        fh.write(chunk)
        if size == 0:
            raise ApiError(422, "bad_media", "the upload is empty")
        if sink is not None:
            target = await sink.commit()
        assert target is not None
        await run_in_threadpool(probe, target, name, cfg.storage_options())
        return await run_in_threadpool(then, target, name)
    except Exception:  # refused or broken: nothing stays
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if sink is not None:
            await run_in_threadpool(sink.discard_now)
        raise
    except BaseException:  # the client went away (cancelled): nothing stays, and nothing is awaited
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if sink is not None:
            threading.Thread(target=sink.discard_now, name="vidmem-upload-abort", daemon=True).start()
        raise
