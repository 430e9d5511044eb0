"""The visual pass in a worker process: decode the video once and find its shots, while the parent
transcribes the audio.

A process of its own, for three reasons:
- decoding and speech recognition use the cores together instead of one after the other;
- the worker's memory goes back whole when it exits, so decoder and feature leftovers never sit in
  the parent's heap under the next stage (docs/benchmarks/ingest.md, peak RSS over duration);
- a decoder that crashes on hostile input takes down the worker, not the ingestion or the service:
  the crash comes back as a `MediaError`.
The worker reads the file and computes; only the parent writes to the catalog.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from indexers.decode import DecodeOptions, MediaError, MediaInfo, stream_frames
from indexers.shots import ContentShotDetector, ShotOptions, ShotResult

_ROOT = str(Path(__file__).resolve().parents[1])  # where `indexers` is importable from


@dataclass
class VisualJob:
    info: MediaInfo
    decode: DecodeOptions
    shots: ShotOptions
    decoder: str = "pyav"


def run_visual(job: VisualJob, progress: Callable[[float], None] | None = None) -> ShotResult:
    """The visual pass itself, in this process."""
    frames = stream_frames(job.info, job.decode, job.decoder)
    return ContentShotDetector(job.shots).detect(frames, job.info.duration, progress)


class VisualWorker:
    """Runs `run_visual` in a child process from construction on; `result()` waits for it.

    A reader thread passes progress to `progress(fraction)` and the result to `on_result(result)`
    (which may commit it at once). `error` is set as soon as the worker or `on_result` fails, so the
    caller can stop its own work early. Use as a context manager: leaving the block stops a worker
    that is still running."""

    def __init__(
        self,
        job: VisualJob,
        progress: Callable[[float], None] | None = None,
        on_result: Callable[[ShotResult], None] | None = None,
    ) -> None:
        self._progress, self._on_result = progress, on_result
        self._result: ShotResult | None = None
        self.error: BaseException | None = None
        # a fresh interpreter, not multiprocessing: the caller's __main__ is never re-imported
        read_fd, write_fd = os.pipe()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([_ROOT, os.environ.get("PYTHONPATH", "")])}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "indexers.visual", str(write_fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            pass_fds=(write_fd,),
            env=env,
        )
        os.close(write_fd)  # the child holds the only writer: its exit is our EOF
        self._conn = Connection(read_fd, writable=False)
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.write(pickle.dumps(job))
            self._proc.stdin.close()
        self._reader = threading.Thread(target=self._read, name="vidmem-visual-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                kind, value = self._conn.recv()
                if kind == "progress":
                    if self._progress:
                        self._progress(value)
                elif kind == "done":
                    if self._on_result:
                        self._on_result(value)
                    self._result = value
                    return
                else:
                    self.error = value
                    return
        except (EOFError, OSError):
            code = self._proc.wait()
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            self._stderr.seek(0)
            last = (self._stderr.read().decode(errors="replace").strip().splitlines() or [""])[-1]
            self.error = MediaError(
                f"the video decoder {how} before finishing{f' ({last})' if last else ''}; "
                "the file may be damaged"
            )
        except Exception as e:  # a callback failed: stop the worker, keep the reason
            self.error = e
            self._proc.kill()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def result(self) -> ShotResult:
        self._reader.join()
        self._proc.wait()
        if self.error is not None:
            raise self.error
        assert self._result is not None
        return self._result

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._reader.join()  # the pipe is at EOF now; a commit under way finishes first
        self._conn.close()
        self._stderr.close()

    def __enter__(self) -> VisualWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _worker_main(fd: int) -> None:
    """The child: a pickled VisualJob on stdin; progress, then the result or the error, on `fd`."""
    _die_with_parent()
    from indexers.heap import steady_heap

    steady_heap()
    conn = Connection(fd, readable=False)
    sent = 0.0

    def progress(fraction: float) -> None:
        nonlocal sent
        if time.monotonic() - sent >= 0.2:
            sent = time.monotonic()
            conn.send(("progress", fraction))

    try:
        job = pickle.load(sys.stdin.buffer)
        conn.send(("done", run_visual(job, progress)))
    except MediaError as e:
        conn.send(("error", e))
    except BaseException as e:  # anything else, as text: it may not pickle
        conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))
    finally:
        conn.close()


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when its parent dies (a killed ingestion leaves none)."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(pr_set_pdeathsig, signal.SIGKILL)


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]))
