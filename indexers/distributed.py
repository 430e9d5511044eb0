"""Ingestion on a Ray cluster: one task per file, committed to the shared catalog by that task alone;
a long recording's vision and speech spread over tasks of their own, which the file's task commits.

`ingest_on_ray(address, ...)` connects to a running cluster (`ray start --head`, then
`ray start --address=HEAD:PORT` on each worker machine) and submits `indexers.ingest` for each file
as a Ray task. The catalog must be one every node reaches (PostgreSQL; with
`VIDMEM_INDEX_BACKEND=postgres` the vectors go there too, so no node keeps an index of its own that
others would need). Every node reads the media at the same path (a shared mount), or by URL
(`s3://`, `https://`: each task reads its object by byte ranges; the nodes need the store's
credentials, e.g. the standard AWS variables, and `IngestOptions.storage` carries its endpoint).

What makes it safe is what makes a local ingestion resumable: a video's rows are written stage by
stage with a checkpoint (`IngestJob.stages_done`), and the video is found again by its content
hash. A task whose worker or whole node is lost (Ray retries it on another node: `max_retries`) finds
its video half-done and goes on from the first unfinished stage, so nothing is written twice and
nothing is lost; one task per file is the one owner of that video's rows. The result of each file
comes back as it finishes.

A recording longer than two windows (30 minutes each by default) is split. Its visual pass
(`RemoteWindows`): a task per window decodes it from 20 s before its start (the boundary picker's
context), finds the shots that begin in it and looks inside them, on its node, going on past the
window's end until the boundary after it settles, so its last shot is seen whole; the owner joins
the windows (`indexers.visual.join_windows`). Every window sizes its detector by the stream's
first frames and keeps a long shot's frames on a grid fixed by the shot alone, so the joined shots
and looks are exactly those of one pass (bbb_10min in 60 s windows: all 150 shots, their signatures
and looks equal; tests/indexers/test_visual.py on the trailer); a boundary two windows would place
differently is the later window's, and the shot before it is looked at again. A resumed owner whose
shots are stored sends a task per window too: each seeks to its window and looks inside the stored
shots that begin there (`indexers.visual.look_window`), as one pass over them would. Speech
(`SpeechChunks`): the owner reads
the audio once, hears the first chunk with speech (the language) and sends every later chunk to a
task: the same cues as one machine. These tasks write nothing: the owner gathers what they found in
order and commits it with its stage, so a lost task is simply run again (`max_retries`) and a lost
owner sends them again from its last checkpoint (tests/indexers/test_ray.py).

Ray is imported only here, when a cluster is asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexers.pipeline import IngestOptions, IngestResult, MediaError
from indexers.shots import ShotResult
from indexers.source import has_scheme, source_uri
from indexers.transcript import Cue, TranscribeOptions, chunk_cues
from indexers.visual import (
    ShotLook,
    VisualJob,
    join_windows,
    look_window,
    run_along,
    stream_rate,
    window_edges,
)

RETRIES = 3
"""Times a task is run again after its worker or node died (Ray's `max_retries`)."""


@dataclass(frozen=True)
class Where:
    """Where a task finds the store: the shared catalog, and a home for its node's model cache."""

    home: str
    database_url: str
    index: str = "files"
    cache_dir: str | None = None


@functools.cache
def _remote(fn: Callable[..., Any], retries: int) -> Any:
    """`fn` as a Ray task of one CPU, retried `retries` times (made once per process)."""
    import ray

    return ray.remote(max_retries=retries, num_cpus=1)(fn)


@dataclass(frozen=True)
class _Split:
    """What splits a recording: its length in windows. Used from inside a task of a connected
    cluster (the owner of the recording), or from a driver that called `ray.init`."""

    window: float = 1800.0
    """A recording longer than two windows is split; a shorter one is done by its owner alone."""
    retries: int = RETRIES
    """Times a task is run again after its worker or node died."""

    def __post_init__(self) -> None:
        if not self.window > 0:
            raise ValueError(f"window must be positive seconds, got {self.window}")

    def wanted(self, duration: float) -> bool:
        return duration > 2 * self.window


@dataclass(frozen=True)
class RemoteWindows(_Split):
    """The visual pass of a long video as Ray tasks, one per window
    (`indexers.visual.WindowsElsewhere`): each decodes its window from `indexers.visual.CONTEXT`
    seconds before it, finds the shots that begin there and looks inside them, on its node; the
    owner joins them (`indexers.visual.join_windows`). When the shots are known already (a resumed
    ingestion), each task looks inside the known shots that begin in its window
    (`indexers.visual.look_window`). Only shots and looks cross the network."""

    def start(self, job: VisualJob) -> _Windows:
        edges = window_edges(job.info.duration, self.window)
        if job.known_shots is not None:
            task = _remote(look_window, self.retries)
            return _Windows(job, [task.remote(job, a, b) for a, b in edges])
        task = _remote(_window_task, self.retries)
        # the detector's rate measured once here, not again by every window
        job = dataclasses.replace(
            job, shots=dataclasses.replace(job.shots, rate=job.shots.rate or stream_rate(job))
        )
        return _Windows(job, [task.remote(job, a, b) for a, b in edges])


class _Windows:
    """One video's windows under way (`indexers.visual.Windows`). The owner's main thread waits
    for them in Ray (`result`), which lends its CPU to them meanwhile."""

    def __init__(self, job: VisualJob, refs: list[Any]) -> None:
        self.job, self.refs = job, refs

    def result(self, progress: Callable[[float], None]) -> tuple[ShotResult | None, list[ShotLook]]:
        import ray

        parts = []
        for k, ref in enumerate(self.refs):
            parts.append(ray.get(ref))
            progress((k + 1) / len(self.refs))
        if self.job.known_shots is not None:  # each window's looks, in the order of the shots
            looks = [look for part in parts for look in part]
            return None, [dataclasses.replace(look, index=i) for i, look in enumerate(looks)]
        return join_windows(self.job, parts)


def _window_task(job: VisualJob, start: float, end: float) -> tuple[ShotResult, list[ShotLook]]:
    """One window of a long video: its shots and the looks inside them (a Ray task)."""
    return run_along(job, lambda stage, fraction: None, window=(start, end))


@dataclass(frozen=True)
class SpeechChunks(_Split):
    """Speech recognition of a long recording as Ray tasks, one per audio chunk
    (`TranscribeOptions.chunk` seconds; `indexers.transcript.HearElsewhere`): the owner reads the
    audio once and hears the first chunk with speech itself (the language); every later chunk goes
    out as it is read."""

    def submit(
        self, offset: float, samples: Any, language: str, opts: TranscribeOptions, cache_dir: Path
    ) -> Callable[[], list[tuple[Cue, str]]]:
        import ray

        ref = _remote(_hear_task, self.retries).remote(offset, samples, language, opts, str(cache_dir))
        return lambda: ray.get(ref)  # type: ignore[no-any-return]


def _hear_task(
    offset: float, samples: Any, language: str, opts: TranscribeOptions, cache_dir: str
) -> list[tuple[Cue, str]]:
    """One chunk of audio heard (a Ray task), with the node's copy of the packaged model."""
    from memory.runtime.whisper import load_whisper

    model = load_whisper(opts.model, Path(cache_dir), opts.threads)
    return list(chunk_cues(model, offset, samples, language, opts))


def _ingest_task(where: Where, path: str, options: IngestOptions) -> dict[str, Any]:
    """One file (a path every node sees, or a URL), on whichever node Ray chose (a Ray task: runs
    in a worker process there)."""
    from indexers.pipeline import ingest
    from memory import Store

    store = Store(Path(where.home), where.database_url, where.index)
    try:
        res = ingest(store, path, options, Path(where.cache_dir) if where.cache_dir else None)
    except MediaError as e:
        return {"path": path, "error": str(e)}
    finally:
        store.close()
    return {"path": path, "result": res.__dict__}


def ingest_on_ray(
    address: str,
    where: Where,
    paths: Sequence[Path | str],
    options: IngestOptions,
    done: Callable[[str, IngestResult | None, str | None], None] | None = None,
    retries: int = RETRIES,
    window: float | None = RemoteWindows.window,
) -> list[IngestResult | MediaError]:
    """Ingest `paths` (paths or URLs) on the Ray cluster at `address` (`host:port` of its head, or
    `auto`), one task per file; a recording longer than two `window`s also sends out one task per
    window for its shots and vision (`RemoteWindows`) and one per chunk of its audio for speech
    (`SpeechChunks`); None: one task per file. `done(path, result, error)` as each finishes.
    Results in the order of `paths`: an `IngestResult`, or the `MediaError` that file met. A
    `ValueError` when the catalog is not one the nodes can share."""
    if window and options.look is not None and options.windows_elsewhere is None:
        options = dataclasses.replace(options, windows_elsewhere=RemoteWindows(window, retries))
    if window and options.hear_elsewhere is None:
        options = dataclasses.replace(options, hear_elsewhere=SpeechChunks(window, retries))
    if not where.database_url.startswith("postgresql"):
        raise ValueError(
            "ingestion on Ray needs a catalog every node reaches: set VIDMEM_DATABASE_URL to PostgreSQL"
        )
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is a dependency
        raise RuntimeError("ingestion on Ray needs `pip install ray`") from e

    owned = not ray.is_initialized()  # connected here: disconnected here (a driver whose cluster
    if owned:  # goes away while it is connected is ended by Ray)
        # Ray caps OpenMP at a task's one CPU, and speech recognition (CTranslate2) follows the
        # thread count in its arithmetic: a chunk heard with one thread came out punctuated
        # differently ("midnight." for "midnight"). The tasks take the threads of a process here.
        threads = {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                 runtime_env={"env_vars": threads})  # fmt: skip
    try:
        return _run(ray, where, paths, options, done, retries)
    finally:
        if owned:
            ray.shutdown()


def _run(ray: Any, where: Where, paths: Sequence[Path | str], options: IngestOptions,
         done: Callable[[str, IngestResult | None, str | None], None] | None, retries: int) -> list[IngestResult | MediaError]:  # fmt: skip
    task = _remote(_ingest_task, retries)
    names = [_name(p) for p in paths]
    refs = {task.remote(where, name, options): name for name in dict.fromkeys(names)}
    out: dict[str, IngestResult | MediaError] = {}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            got = ray.get(ref)
            path = refs[ref]
            if "error" in got:
                out[path] = MediaError(got["error"])
                if done:
                    done(path, None, got["error"])
            else:
                out[path] = IngestResult(**got["result"])
                if done:
                    done(path, out[path], None)  # type: ignore[arg-type]
    return [out[name] for name in names]


def _name(where: Path | str) -> str:
    """What a task is given: the absolute path of a file, the URL of an object (as written)."""
    if has_scheme(where) and not str(where).lower().startswith("file://"):
        return str(where)  # a scheme no node reads fails in its task, as a bad file does
    return source_uri(where)
