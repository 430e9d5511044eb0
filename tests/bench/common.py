"""Shared benchmark plumbing: run a command while sampling the RSS of its whole process tree."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "docs" / "benchmarks"
WORK = Path(os.environ.get("VIDMEM_BENCH_DIR", "/tmp/vidmem-bench"))
VIDMEM = Path(sys.executable).parent / "vidmem"


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def measure(cmd: list[str], env: dict[str, str] | None = None, interval: float = 0.1) -> Run:
    """Wall time and peak RSS (sum over the process and its children, sampled) of a command."""
    import tempfile

    # output goes to files: a pipe nobody reads until the end could fill and block the command
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True, env={**os.environ, **(env or {})})
        root = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(interval)
        seconds = time.perf_counter() - start
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    return Run(seconds, peak / 2**20, proc.returncode, out, err)


def machine() -> str:
    """What the figures were measured on: the shared machines differ in CPU model from one session to
    the next, and a ratio measured in one run is the only figure that carries over."""
    model = ""
    with contextlib.suppress(OSError):
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = f" ({names[0].strip()})" if names else ""
    return (
        f"{platform.processor() or platform.machine()}{model}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}"
    )


def write_results(name: str, data: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)


def fresh_db(server: str) -> str:
    """A new, empty database on the PostgreSQL at `server` (a URL); its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(server)
    name = f"vidmem_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def thread_cpu(owner: Any, name: str, label: str, spent: dict[str, float], lock: threading.Lock) -> None:
    """Wrap `owner.name` to add the calling thread's CPU seconds to `spent[label]`: a model's own
    cost inside a run whose other threads share the cores (the models here run on the caller's
    thread, one intra-op thread each)."""
    inner: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.thread_time()
        try:
            return inner(*args, **kwargs)
        finally:
            with lock:
                spent[label] = spent.get(label, 0.0) + time.thread_time() - t

    setattr(owner, name, wrapper)
