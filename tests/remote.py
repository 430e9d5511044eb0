"""Local stand-ins for where media lives remotely, for the tests of media by URL.

* :class:`S3Server` - moto's S3-compatible server (``moto.server.ThreadedMotoServer``, the same
  werkzeug app the ``moto_server`` CLI runs) on 127.0.0.1, a real HTTP endpoint that s3fs, botocore
  and ffmpeg (through pre-signed URLs) talk to; nothing is patched in-process.
* :class:`RangeServer` - a plain ``http.server`` on 127.0.0.1 that honours ``Range`` (206 with
  ``Content-Range``), answers HEAD with ``Content-Length`` and an ``ETag``, and counts the requests
  and bytes it served, so a test can tell a ranged read from a whole download.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "vidmem-test",
    "AWS_SECRET_ACCESS_KEY": "vidmem-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""What the test S3 server accepts (moto takes any); set in os.environ so worker processes (the
visual pass, `vidmem` subprocesses) inherit them as they would a deployment's."""


@contextmanager
def aws_environment() -> Iterator[None]:
    """The standard AWS variables set to the test credentials, restored afterwards."""
    saved = {k: os.environ.get(k) for k in (*CREDENTIALS, "AWS_PROFILE", "AWS_SESSION_TOKEN")}
    os.environ.update(CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class S3Server:
    """moto's S3 server on a free port of 127.0.0.1; `endpoint` is its URL, `client` a boto3 client."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        import boto3

        self.client: Any = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, data: bytes | Path) -> str:
        body = data.read_bytes() if isinstance(data, Path) else data
        self.client.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        got = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for o in got.get("Contents", []))

    def pending_uploads(self, bucket: str) -> list[str]:
        """Keys of multipart uploads begun and neither completed nor aborted."""
        got = self.client.list_multipart_uploads(Bucket=bucket)
        return [u["Key"] for u in got.get("Uploads", [])]

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def stop(self) -> None:
        self._server.stop()


@dataclass
class Served:
    method: str
    path: str
    range: str | None
    status: int
    sent: int


@dataclass
class RangeLog:
    requests: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, r: Served) -> None:
        with self.lock:
            self.requests.append(r)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def bytes_sent(self, path: str) -> int:
        with self.lock:
            return sum(r.sent for r in self.requests if r.path == path and r.method == "GET")

    def ranged(self, path: str) -> list[Served]:
        with self.lock:
            return [r for r in self.requests if r.path == path and r.method == "GET" and r.range]


class RangeServer:
    """Serves the files of `root` at `url/<name>` with HTTP byte ranges (RFC 9110, one range)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = RangeLog()
        handler = _handler(root, self.log)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="range-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _handler(root: Path, log: RangeLog) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _file(self) -> Path | None:
            name = self.path.split("?", 1)[0].lstrip("/")
            path = root / name
            return path if "/" not in name and path.is_file() else None

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = self._file()
            asked = self.headers.get("Range")
            if path is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                log.add(Served(self.command, self.path, asked, 404, 0))
                return
            size = path.stat().st_size
            start, end, status = 0, size - 1, 200
            m = _RANGE.match(asked or "")
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    log.add(Served(self.command, self.path, asked, 416, 0))
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{path.stat().st_mtime_ns:x}-{size:x}"')
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            sent = 0
            if body:
                with open(path, "rb") as fh:
                    fh.seek(start)
                    remaining = end - start + 1
                    try:
                        while remaining > 0:
                            chunk = fh.read(min(remaining, 64 * 1024))
                            if not chunk:
                                break
                            self.wfile.write(chunk)
                            sent += len(chunk)
                            remaining -= len(chunk)
                    except (BrokenPipeError, ConnectionResetError):  # the reader had enough
                        self.close_connection = True
            log.add(Served(self.command, self.path, asked, status, sent))

    return Handler
