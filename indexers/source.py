"""Where media is read from: a file on this machine, or an object named by URL (`file://`, `s3://`,
`https://`, `http://`), read by byte ranges through fsspec, never copied whole.

`media_source(where)` names the media; the stages ask it what they need:
- the decoders (PyAV) read `open()`, a seekable file that fetches what the demuxer asks for in
  blocks of `StorageOptions.block_size` (HTTP `Range` requests; S3 ranged GETs pinned to the ETag
  seen first, so an object replaced mid-read fails instead of mixing two versions);
- ffprobe and the ffmpeg CLI (audio) read `ffmpeg_input()`: the path, the http(s) URL itself, or for
  `s3://` a pre-signed https URL of the object; both seek with `Range` too;
- the content identity (`identity()`), which is the ingest key: the sha256 of the bytes for a local
  file; for a remote object, a sha256 of what the store says about its content (ETag and size) —
  hashing every byte would read the whole object once more before decoding even starts.

fsspec, s3fs and aiohttp are imported only when a remote source is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


class MediaError(Exception):
    """Input that cannot be ingested: missing, unreadable, not media, truncated or damaged; or a
    URL that names nothing vidmem can read (unknown scheme, no such object, unreachable host)."""


SCHEMES = ("file", "s3", "http", "https")
"""URL schemes a media source may have; a plain path is a local file."""

IDENTITIES = ("sha256", "s3-etag", "http-etag", "http-modified")
"""How a video's content hash was made (`MediaSource.identity`): `sha256` of the bytes; `s3-etag`,
sha256 of the object's ETag and size (an S3 ETag is the MD5 of the bytes, or of its parts' MD5s for a
multipart upload, so the same bytes uploaded the same way are the same video wherever they sit);
`http-etag` / `http-modified`, sha256 of the URL with the server's ETag (or Last-Modified) and size
(an HTTP ETag only tells versions of one URL apart)."""


@dataclass(frozen=True)
class StorageOptions:
    """How remote media is reached (the service fills these from its settings)."""

    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible store (MinIO, Ceph, a local test server); AWS when None.
    Credentials and region come from the standard AWS chain: `AWS_ACCESS_KEY_ID` /
    `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, `AWS_PROFILE`, `AWS_DEFAULT_REGION`, an instance
    role."""
    block_size: int = 2 << 20
    """Bytes fetched per range request when the decoders read a remote object."""
    cache_blocks: int = 8
    """Blocks a remote reader keeps (most recently used): the demuxer's jumps between an MP4's index
    and its data stay in them. Memory per open reader: `block_size * cache_blocks`."""
    timeout: float = 30.0
    """Seconds to wait to connect, or for the next bytes, before a read fails with `MediaError`."""
    presign_seconds: int = 12 * 3600
    """Lifetime of the pre-signed URL through which ffprobe and ffmpeg read an `s3://` object (the
    audio is read in one pass that must start within it)."""

    def __post_init__(self) -> None:
        if self.block_size < 64 * 1024:
            raise ValueError(f"block_size must be at least 65536 bytes, got {self.block_size}")
        if self.cache_blocks < 1:
            raise ValueError(f"cache_blocks must be at least 1, got {self.cache_blocks}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout}")


@dataclass(frozen=True)
class Fingerprint:
    """What the store says about an object: enough to know it again, and to notice it changed."""

    size: int
    etag: str | None = None
    modified: str | None = None
    version: str | None = None

    def same_content(self, other: Fingerprint) -> bool:
        return (self.size, self.etag, self.version) == (other.size, other.etag, other.version)


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def has_scheme(where: str | Path) -> bool:
    """Whether `where` is a URL (`scheme://...`) rather than a path."""
    return isinstance(where, str) and _SCHEME.match(where) is not None


def _local_path(where: str | Path) -> Path:
    if isinstance(where, str) and where.lower().startswith("file://"):
        parts = urllib.parse.urlsplit(where)
        if parts.netloc not in ("", "localhost"):
            raise MediaError(f"{where}: a file:// URL names a file on this machine (file:///path)")
        return Path(urllib.parse.unquote(parts.path))
    return Path(where)


def source_uri(where: str | Path) -> str:
    """The URI a video from `where` records (`Video.uri`): the absolute path of a local file (a
    `file://` URL becomes its path), the URL of a remote object. MediaError for a scheme vidmem does
    not read. Reads nothing."""
    if not has_scheme(where) or str(where).lower().startswith("file://"):
        return str(_local_path(where).resolve())
    url = str(where)
    if any(ord(c) < 33 or c in '\\"<>' for c in url):
        raise MediaError(f'{_strip(url)}: a URL may not contain spaces, control characters or \\ " < >')
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise MediaError(
            f"{_strip(url)}: unsupported scheme {scheme!r}; media is a path, or a file://, s3://, "
            "https:// or http:// URL"
        )
    try:
        parts = urllib.parse.urlsplit(f"{scheme}://{rest}")
    except ValueError as e:  # e.g. an unclosed IPv6 bracket
        raise MediaError(f"{_strip(url)}: not a URL ({e})") from None
    if not parts.netloc or not parts.path.strip("/"):
        what = "s3://BUCKET/KEY" if scheme == "s3" else f"{scheme}://HOST/PATH"
        raise MediaError(f"{_strip(url)}: not a media URL; expected {what}")
    if scheme == "s3" and (parts.query or parts.fragment or "@" in parts.netloc):
        raise MediaError(f"{_strip(url)}: an s3:// URL is s3://BUCKET/KEY, without credentials or a query")
    return f"{scheme}://{rest}"


def _strip(url: str) -> str:
    """A URL fit for messages and logs: no user:password, query or fragment (they may hold secrets)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0]
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class MediaSource:
    """One media file or object. `uri` is what the catalog records; `label` names it in messages."""

    uri: str
    storage: StorageOptions = field(default_factory=StorageOptions)
    label: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.label or (self.uri if self.local else _strip(self.uri))

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0] if has_scheme(self.uri) else "file"

    @property
    def local(self) -> bool:
        return self.scheme == "file"

    @property
    def path(self) -> Path:
        """The local file (ValueError for a remote object: read it with `open` or `ffmpeg_input`)."""
        if not self.local:
            raise ValueError(f"{self} is not a local file")
        return Path(self.uri)

    @property
    def name(self) -> str:
        """The last part of the path (percent-decoding undone): the video's title."""
        if self.local:
            return self.path.name
        path = urllib.parse.urlsplit(self.uri).path
        return urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1]) or self.uri

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix.lower()

    def with_suffix(self, suffix: str) -> MediaSource:
        """The source beside this one with the same stem and `suffix` (a sidecar subtitle file)."""
        if self.local:
            return MediaSource(str(self.path.with_suffix(suffix)), self.storage)
        parts = urllib.parse.urlsplit(self.uri)
        head, _, last = parts.path.rpartition("/")
        stem = last.rsplit(".", 1)[0] if "." in last.lstrip(".") else last
        sibling = parts._replace(path=f"{head}/{stem}{suffix}", query="", fragment="")
        return MediaSource(urllib.parse.urlunsplit(sibling), self.storage)

    # -- remote reads ----------------------------------------------------------------------------

    def _fs(self) -> Any:
        return _filesystem(self.scheme, self.storage)

    @property
    def _key(self) -> str:
        """The path fsspec takes: `bucket/key` for s3 (percent-decoded, as any URL's path), the URL
        for http(s)."""
        return urllib.parse.unquote(self.uri.split("://", 1)[1]) if self.scheme == "s3" else self.uri

    def stat(self) -> Fingerprint:
        """Size and version facts, asked of the store now; MediaError when it cannot say (no such
        object, access denied, unreachable host, a directory)."""
        if self.local:
            path = self.path
            if not path.exists():
                raise MediaError(f"{self}: no such file")
            if not path.is_file():
                raise MediaError(f"{self}: not a regular file")
            st = path.stat()
            return Fingerprint(st.st_size, None, str(st.st_mtime_ns))
        fs = self._fs()
        with _explained(self):
            fs.invalidate_cache(self._key)
            info = fs.info(self._key)
        if info.get("type") == "directory":
            raise MediaError(f"{self}: a folder, not a media object")
        size = info.get("size")
        if size is None:
            raise MediaError(
                f"{self}: the server does not say the object's size, so it cannot be read by ranges"
            )
        etag = info.get("ETag") or info.get("etag")
        modified = info.get("LastModified") or info.get("Last-Modified")
        version = info.get("VersionId")
        return Fingerprint(int(size), str(etag) if etag else None, str(modified) if modified else None,
                           str(version) if version else None)  # fmt: skip

    def exists(self) -> bool:
        try:
            self.stat()
        except MediaError:
            return False
        return True

    def open(self, block_size: int | None = None, cache: str = "blockcache") -> IO[bytes]:
        """A seekable binary reader; a remote one fetches blocks by range as they are read, and
        raises MediaError (naming this source) when a read fails."""
        if self.local:
            return open(self.path, "rb")  # noqa: SIM115 - the caller closes it
        size = block_size or self.storage.block_size
        options = {"maxblocks": self.storage.cache_blocks} if cache == "blockcache" else None
        with _explained(self):
            raw = self._fs().open(self._key, "rb", block_size=size, cache_type=cache, cache_options=options)
        return io.BufferedReader(_Reader(raw, str(self)), buffer_size=64 * 1024)  # type: ignore[arg-type]

    def read_bytes(self, limit: int) -> bytes:
        """The whole object, refused when it is over `limit` bytes (subtitle files)."""
        size = self.stat().size
        if size > limit:
            raise MediaError(f"{self}: {size} bytes; a subtitle file may have at most {limit}")
        if self.local:
            return self.path.read_bytes()
        with _explained(self):
            return bytes(self._fs().cat_file(self._key))  # one GET

    def ffmpeg_input(self) -> str:
        """What ffprobe/ffmpeg open after `-i`: the absolute path, the http(s) URL, or a pre-signed
        https URL of an s3 object (valid `presign_seconds`). Never shown to users: it may carry a
        signature."""
        if self.local:
            return str(self.path.resolve())
        if self.scheme == "s3":
            with _explained(self):
                return str(self._fs().url(self._key, expires=self.storage.presign_seconds))
        return self.uri

    def ffmpeg_options(self) -> list[str]:
        """Input options for ffprobe/ffmpeg before `-i`: a remote input may use network protocols
        only (a playlist cannot make ffmpeg open local files), and gives up on a silent server."""
        if self.local:
            return []
        return ["-protocol_whitelist", "http,https,tcp,tls,httpproxy",
                "-rw_timeout", str(int(self.storage.timeout * 1e6))]  # fmt: skip

    def redact(self, text: str) -> str:
        """`text` (an ffmpeg message) with every URL in it (the pre-signed one it was given) replaced
        by this source's name."""
        if self.local:
            return text
        return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*?(?=:?(\s|$))", str(self), text)

    def identity(self, fingerprint: Fingerprint | None = None,
                 progress: Callable[[float], None] | None = None) -> tuple[str, str]:  # fmt: skip
        """(content hash, how it was made: one of `IDENTITIES`). A local file's bytes are hashed;
        a remote object is known by its ETag (or Last-Modified) and size, and hashed by streaming
        its bytes only when the server gives neither."""
        if self.local:
            return sha256_file(self.path, progress), "sha256"
        fp = fingerprint or self.stat()
        if self.scheme == "s3" and fp.etag:
            key, how = f"s3-etag\n{fp.etag}\n{fp.size}", "s3-etag"
        elif fp.etag:
            key, how = f"http-etag\n{self.uri}\n{fp.etag}\n{fp.size}", "http-etag"
        elif fp.modified:
            key, how = f"http-modified\n{self.uri}\n{fp.modified}\n{fp.size}", "http-modified"
        else:
            h = hashlib.sha256()
            done = 0
            with self.open(block_size=8 << 20, cache="readahead") as fh:
                while chunk := fh.read(8 << 20):
                    h.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done / max(1, fp.size))
            return h.hexdigest(), "sha256"
        if progress:
            progress(1.0)
        return hashlib.sha256(key.encode()).hexdigest(), how

    # -- writes (the service's uploads into the object store) ------------------------------------

    def create(self, part_size: int) -> IO[bytes]:
        """A writer of a new s3 object: a multipart upload of `part_size`-byte parts (at least
        5 MiB), sent as each fills; `discard()` on it aborts the upload, `close()` completes it."""
        if self.scheme != "s3":
            raise MediaError(f"{self}: only s3:// objects can be written")
        with _explained(self):
            return self._fs().open(self._key, "wb", block_size=max(part_size, 5 << 20))  # type: ignore[no-any-return]

    def remove(self) -> None:
        """Delete the file or object; one already gone is not an error."""
        if self.local:
            self.path.unlink(missing_ok=True)
            return
        if self.scheme != "s3":
            raise MediaError(f"{self}: vidmem removes only s3:// objects it uploaded")
        fs = self._fs()
        try:
            with _explained(self):
                fs.rm_file(self._key)
        except MediaError as e:
            if "no such object" not in str(e):
                raise
        fs.invalidate_cache(self._key)


def media_source(where: str | Path | MediaSource, storage: StorageOptions | None = None) -> MediaSource:
    """The source named by a path or URL (MediaError for a scheme vidmem does not read). Reads nothing."""
    if isinstance(where, MediaSource):
        return (
            where
            if storage is None or storage == where.storage
            else MediaSource(where.uri, storage, where.label)
        )
    uri = source_uri(where)
    label = str(where) if not has_scheme(where) else (uri if uri.startswith("/") else _strip(uri))
    return MediaSource(uri, storage or StorageOptions(), label)


def sha256_file(path: Path, progress: Callable[[float], None] | None = None) -> str:
    """sha256 of a local file's bytes, read in 8 MiB chunks; `progress(fraction)` as it goes."""
    h = hashlib.sha256()
    size = max(1, path.stat().st_size)
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done / size)
    return h.hexdigest()


def under(uri: str, root: str) -> bool:
    """Whether the URL `uri` lies inside `root` (a URL prefix): same scheme and host, and the
    root's path segments begin the URI's path. A URI whose path holds `.` or `..` segments (plain or
    percent-encoded), or a backslash, is inside nothing: a server could resolve it elsewhere."""
    try:
        a, b = urllib.parse.urlsplit(uri), urllib.parse.urlsplit(root)
    except ValueError:
        return False
    if (a.scheme.lower(), a.netloc.lower()) != (b.scheme.lower(), b.netloc.lower()) or not a.netloc:
        return False
    segments = a.path.split("/")
    if "\\" in a.path or any(urllib.parse.unquote(s) in (".", "..") for s in segments):
        return False
    want = [s for s in b.path.split("/") if s]
    have = [s for s in segments if s]
    return have[: len(want)] == want and len(have) > len(want)


# -- fsspec, lazily -------------------------------------------------------------------------------

_fs_lock = threading.Lock()
_filesystems: dict[tuple[str, StorageOptions], Any] = {}


def _filesystem(scheme: str, storage: StorageOptions) -> Any:
    """One fsspec filesystem per (scheme, options) in this process."""
    key = ("http" if scheme == "https" else scheme, storage)
    with _fs_lock:
        fs = _filesystems.get(key)
        if fs is None:
            fs = _filesystems[key] = _make_filesystem(key[0], storage)
        return fs


def _make_filesystem(scheme: str, storage: StorageOptions) -> Any:
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - a dependency
        raise MediaError(f"reading {scheme}:// media needs fsspec (`pip install fsspec`): {e}") from e
    t = storage.timeout
    if scheme == "s3":
        try:
            import s3fs  # noqa: F401 - fsspec finds it; imported here for the message below
        except ImportError as e:  # pragma: no cover - a dependency
            raise MediaError(f"reading s3:// media needs s3fs (`pip install s3fs`): {e}") from e
        kwargs: dict[str, Any] = {
            "config_kwargs": {
                "connect_timeout": t,
                "read_timeout": t,
                "retries": {"max_attempts": 3},
                "signature_version": "s3v4",  # what every region and S3-compatible store accepts
            },
        }
        if storage.s3_endpoint_url:
            kwargs["endpoint_url"] = storage.s3_endpoint_url
        return fsspec.filesystem("s3", skip_instance_cache=True, **kwargs)
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=t, sock_read=t)
    return fsspec.filesystem("http", skip_instance_cache=True, client_kwargs={"timeout": timeout})


@contextlib.contextmanager
def _explained(source: MediaSource | str) -> Iterator[None]:
    """Turns what fsspec, botocore or aiohttp raise into a MediaError that says what went wrong."""
    try:
        yield
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(f"{source}: {explain(e)}") from e


def explain(e: BaseException) -> str:
    """A short reason for a failed remote read, from the exception and its causes."""
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and len(chain) < 6:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    names = " ".join(type(x).__name__ for x in chain)
    text = " ".join(str(x) for x in chain)
    statuses = [getattr(x, "status", None) for x in chain]
    status = next((s for s in statuses if isinstance(s, int)), None)
    if any(n in names for n in ("ClientConnectorError", "EndpointConnectionError", "ConnectionRefused",
                                "ConnectTimeout", "ServerDisconnected", "ConnectionError")):  # fmt: skip
        return "cannot reach the server (connection failed); is the host right and up?"
    if any(isinstance(x, TimeoutError) for x in chain) or "Timeout" in names:
        return "the server did not answer in time"
    if "NoCredentialsError" in names or "Unable to locate credentials" in text:
        return "no credentials for the object store (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
    if "PreconditionFailed" in text or status == 412:
        return "the object changed while it was being read"
    if status in (401, 403) or any(isinstance(x, PermissionError) for x in chain) or "AccessDenied" in text:
        return "access denied (403)"
    if status in (404, 410) or "NoSuchKey" in text or "NoSuchBucket" in text:
        return "no such object (404)"
    if status is not None and status >= 400:
        return f"the server answered HTTP {status}"
    if any(isinstance(x, FileNotFoundError) for x in chain):
        return "no such object (404)"
    if "range requests" in text:
        return "the server does not answer byte-range requests, so the media cannot be read in parts"
    last = str(e).strip().splitlines()[-1:] or [""]
    return f"cannot read ({type(e).__name__}: {_strip_all(last[0])[:300]})"


def _strip_all(text: str) -> str:
    """Every URL in `text` without its query (a pre-signed signature never reaches a message)."""
    return " ".join(_strip(w) if "://" in w else w for w in text.split())


class _Reader(io.RawIOBase):
    """A remote fsspec file as a raw stream whose read failures are `MediaError`s naming the source
    (PyAV re-raises what its read callback raised)."""

    def __init__(self, raw: Any, name: str) -> None:
        self.raw, self.label = raw, name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with _explained(self.label):
            data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with _explained(self.label):
            return int(self.raw.seek(offset, whence))

    def tell(self) -> int:
        return int(self.raw.tell())

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            super().close()
