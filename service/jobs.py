"""The service's job queue: jobs in the catalog, run by worker processes, taken over after a crash.

A job is a row (`memory.Job`): queued → running → done | failed. A worker claims the oldest queued
job with one conditional UPDATE (two workers cannot both win it), runs it, and reports the stage,
progress and a heartbeat as it goes. Its `kind` says what it runs: `ingest` the normal pipeline
(`indexers.ingest`, which checkpoints every stage), `regate` a library's memory forgotten and gated
again (`indexers.pipeline.regate`, from the vectors in the catalog: no decoding, no embedding
model), `generate` an edit request rendered by a generation backend onto a timeline
(`reasoning.generate`, into `home/edits/<job id>/`). A queued job, or a running generation, can be
cancelled; a failed or cancelled generation retried. A running job is taken over when its worker is gone: at once when the owner was a process on
this host that no longer exists (a server killed with SIGKILL and started again), else when its
heartbeat is older than `job_stale_seconds`. An ingestion then finds the video by its content hash
and resumes at the first unfinished stage; what a killed stage half-wrote was never committed. A
regate starts over (it forgets first, so a second run ends where one whole run would). A job that
took its worker down `MAX_ATTEMPTS` times is failed instead of retried.

Workers are separate processes (`python -m service.jobs`), started and restarted by `WorkerPool`
inside `vidmem serve`, so ingestion never holds the API's interpreter; each dies with the server
(PR_SET_PDEATHSIG), as a crash would leave it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select, update

from kernels.timecode import iso
from memory import Job, Library, Store, StoreError, Video

log = logging.getLogger("vidmem.jobs")

MAX_ATTEMPTS = 3
"""Claims of one job before it is failed: a job that kills its worker must not kill every worker."""

HOST = os.environ.get("VIDMEM_NODE") or socket.gethostname()
"""The name this host's workers go by in the job queue (`host:pid`). Two hosts must differ: a job
of another host is taken over only when its heartbeat is stale, one of this host as soon as its
process is gone. `VIDMEM_NODE` names it when the machine's hostname does not tell hosts apart (two
`vidmem serve` hosts on one machine, containers with one hostname)."""


def owner_name() -> str:
    return f"{HOST}:{os.getpid()}"


def _alive(owner: str | None) -> bool:
    """Whether the worker `owner` may still run: unknown hosts count as alive (their heartbeat decides)."""
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != HOST:
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except (PermissionError, ValueError):
        return True
    return _not_zombie(int(pid))


def _not_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def job_json(job: Job, library: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "library": library,
        "title": job.title,
        "status": job.status,
        "stage": job.stage,
        "progress": round(job.progress, 4),
        "video_id": job.video_id,
        "error": job.error,
        "attempts": job.attempts,
        "owner": job.owner if job.status == "running" else None,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
    }
    if job.kind == "generate":
        result = dict(job.result or {})
        result.pop("saved", None)
        out["request"] = job.request
        out["result"] = result or None
    return out


def enqueue(store: Store, library: str, source: Path | str, title: str, upload: bool) -> Job:
    """A queued job for `source` (a path, or a media URL) in an existing library."""
    with store.session() as s:
        lib = store.library(s, library, create=False)
        job = Job(library_id=lib.id, source=str(source), title=title, upload=upload, status="queued")
        s.add(job)
        s.flush()
        return job


def enqueue_regate(store: Store, library: str) -> Job:
    """A job that forgets the library's memory and gates its videos again with the worker's memory
    settings; the library's regate job still queued or running when there is one (a second would
    redo the same work)."""
    with store.session() as s:
        lib = store.library(s, library, create=False)
        active = s.scalars(
            select(Job)
            .where(Job.library_id == lib.id, Job.kind == "regate", Job.status.in_(("queued", "running")))
            .order_by(Job.created_at)
            .limit(1)
        ).first()
        if active is not None:
            return active
        job = Job(library_id=lib.id, kind="regate", source="", title="memory regate", status="queued")
        s.add(job)
        s.flush()
        return job


def enqueue_edit(store: Store, library: str, request: dict[str, Any], title: str) -> Job:
    """A queued generation job for a checked edit request (`reasoning.generate.prepare` passed)."""
    with store.session() as s:
        lib = store.library(s, library, create=False)
        job = Job(
            library_id=lib.id,
            kind="generate",
            source=request["video_id"],
            title=title,
            status="queued",
            video_id=request["video_id"],
            request=request,
        )
        s.add(job)
        s.flush()
        return job


class QueueEdits:
    """`reasoning.tools.Edits` over this queue for one caller: requests land as `generate` jobs of
    the video's library; `status` reads only jobs of `library` (None: any)."""

    def __init__(self, store: Store, library: str | None) -> None:
        self.store, self.library = store, library

    def submit(self, request: Any, plan: Any) -> dict[str, Any]:
        from kernels.timecode import hms

        at = hms(plan.start / plan.source.fps)
        job = enqueue_edit(
            self.store, plan.source.library, request.model_dump(mode="json"), f"{plan.operation} at {at}"
        )
        return {**job_json(*get_job(self.store, job.id)), "plan": plan.to_json()}

    def status(self, job_id: str) -> dict[str, Any]:
        from reasoning.tools import ToolError

        try:
            job, name = get_job(self.store, job_id)
        except StoreError:
            job, name = None, ""
        if job is None or (self.library is not None and name != self.library):
            raise ToolError(
                f"job_status: no job with id {job_id!r}; use the id request_insert or request_edit returned"
            )
        return job_json(job, name)


class JobStateError(StoreError):
    """A cancel or retry that the job's status does not allow."""


def cancel(store: Store, job_id: str) -> Job:
    """Cancel a queued job, or a running generation (its worker stops at its next progress report)."""
    with store.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise StoreError(f"no job with id {job_id!r}")
        if job.status == "queued" or (job.status == "running" and job.kind == "generate"):
            job.status, job.owner = "cancelled", None
        elif job.status != "cancelled":
            raise JobStateError(
                f"job {job_id} is {job.status}; only a queued job or a running generation can be cancelled"
            )
        s.flush()
        s.refresh(job)
        s.expunge(job)
        return job


def retry(store: Store, job_id: str) -> Job:
    """Queue a failed or cancelled generation again, from the start."""
    with store.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise StoreError(f"no job with id {job_id!r}")
        if job.kind != "generate" or job.status not in ("failed", "cancelled"):
            raise JobStateError(
                f"job {job_id} is a {job.status} {job.kind} job; only a failed or cancelled generation can be retried"
            )
        job.status, job.error, job.attempts, job.result = "queued", None, 0, None
        job.stage, job.progress, job.owner, job.heartbeat = None, 0.0, None, None
        s.flush()
        s.refresh(job)
        s.expunge(job)
        return job


def get_job(store: Store, job_id: str) -> tuple[Job, str]:
    with store.session() as s:
        row = s.execute(
            select(Job, Library.name).join(Library, Library.id == Job.library_id).where(Job.id == job_id)
        ).first()
    if row is None:
        raise StoreError(f"no job with id {job_id!r}")
    return row[0], row[1]


def list_jobs(
    store: Store, library_id: int | None = None, status: str | None = None, limit: int = 100
) -> list[tuple[Job, str]]:
    """Jobs with their library's name, newest first: of one library (None: every library), in one
    status (None: any)."""
    query = select(Job, Library.name).join(Library, Library.id == Job.library_id)
    if library_id is not None:
        query = query.where(Job.library_id == library_id)
    if status is not None:
        query = query.where(Job.status == status)
    with store.session() as s:
        rows = s.execute(query.order_by(Job.created_at.desc()).limit(limit)).all()
    return [(job, name) for job, name in rows]


def active_job(store: Store, video_id: str) -> str | None:
    """The id of a queued or running job of the video, if any (it may not be deleted meanwhile)."""
    with store.session() as s:
        return s.scalar(select(Job.id).where(Job.video_id == video_id, Job.status.in_(("queued", "running"))))


def uploaded(store: Store, video_id: str, uri: str) -> bool:
    """Whether the video's media at `uri` is the service's own copy of an upload (an upload job made
    the video from it), which goes when the video does."""
    with store.session() as s:
        found = s.scalar(
            select(Job.id).where(Job.video_id == video_id, Job.upload.is_(True), Job.source == uri).limit(1)
        )
    return found is not None


def delete_video(store: Store, settings: Any, video_id: str, force: bool = False) -> Video:
    """Delete a video and what the service made for it: its rows and vectors, its thumbnails, and the
    service's copy of an upload (a folder under `uploads_dir`, or an object it wrote into the object
    store). The object goes first: a store that cannot be reached raises MediaError and leaves
    everything as it was, so the catalog never names media that is gone. JobStateError while a job
    ingests it, or while its status says `ingesting` (a CLI ingestion running, or one that stopped:
    `force` deletes it anyway); StoreError when there is no such video. Returns the deleted row."""
    with store.session() as s:
        video = s.get(Video, video_id)
        if video is None:
            raise StoreError(f"no video with id {video_id!r}")
        s.expunge(video)
    if active_job(store, video_id) is not None:
        raise JobStateError(f"video {video_id} is being ingested; delete it when its job ends")
    if video.status == "ingesting" and not force:
        raise JobStateError(
            f"video {video_id} is being ingested (or its ingestion stopped: ingest it again to finish "
            "it, or delete it with force)"
        )
    if "://" in video.uri and uploaded(store, video_id, video.uri):
        from indexers.source import media_source

        media_source(video.uri, settings.storage_options()).remove()
    store.delete_video(video_id)
    folder = Path(video.uri).parent
    if "://" not in video.uri and folder.resolve().parent == settings.uploads_dir.resolve():
        shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(settings.home / "thumbs" / video_id, ignore_errors=True)
    return video


def requeue_orphans(store: Store) -> int:
    """Put back in the queue the running jobs whose worker process on this host is gone."""
    with store.session() as s:
        running = s.execute(select(Job.id, Job.owner).where(Job.status == "running")).all()
    dead = [job_id for job_id, owner in running if not _alive(owner)]
    for job_id in dead:
        with store.session() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running")
                .values(status="queued", owner=None, heartbeat=None)
            )
    return len(dead)


def claim(store: Store, owner: str, stale_after: float) -> str | None:
    """The id of the job this worker now owns (the oldest claimable), or None."""
    requeue_orphans(store)
    cutoff = time.time() - stale_after
    claimable = or_(
        Job.status == "queued",
        and_(Job.status == "running", or_(Job.heartbeat.is_(None), Job.heartbeat < cutoff)),
    )
    with store.session() as s:
        candidates = list(s.scalars(select(Job.id).where(claimable).order_by(Job.created_at).limit(8)))
    for job_id in candidates:
        with store.session() as s:
            won = s.execute(  # type: ignore[attr-defined]
                update(Job)
                .where(Job.id == job_id, claimable)
                .values(status="running", owner=owner, heartbeat=time.time(), attempts=Job.attempts + 1)
            ).rowcount
        if won == 1:
            return job_id
    return None


def _remove_upload(job: Job, uploads: Path, settings: Any = None) -> None:
    """Delete the service's copy of an upload (only ever a path inside `uploads`, or the object it
    wrote into the object store)."""
    if not job.upload:
        return
    if "://" in job.source:
        from indexers.source import MediaError, media_source

        try:
            media_source(job.source, settings.storage_options() if settings else None).remove()
        except MediaError as e:  # the store is down: the object stays, the job's outcome does not change
            log.warning("could not remove the uploaded %s: %s", job.title, e)
        return
    folder = Path(job.source).parent
    if folder.resolve().parent == uploads.resolve():
        shutil.rmtree(folder, ignore_errors=True)


def _ingest_source(source: str) -> Path | str:
    """A job's source as the pipeline takes it: a path, or a media URL."""
    return source if "://" in source else Path(source)


def _source_uri(source: str) -> str:
    """What the pipeline records as the video's `uri` for a job's source (a path or a URL)."""
    if "://" in source:
        from indexers.source import MediaError, source_uri

        try:
            return source_uri(source)
        except MediaError:  # the pipeline refuses it: no video to find
            return source
    return str(Path(source).resolve())


class _Reporter:
    """The pipeline's progress callback: the job's stage and progress, at most every half second,
    and the video id once the pipeline has made the video row."""

    def __init__(self, store: Store, job: Job) -> None:
        self.store, self.job_id, self.library_id = store, job.id, job.library_id
        self.uri = _source_uri(job.source)
        self.makes_video = job.kind == "ingest"
        self.cancellable = job.kind == "generate"
        self.video_id: str | None = None
        self.last = 0.0
        self.lock = threading.Lock()

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if now - self.last < 0.5 and fraction < 1.0:
            return
        self.last = now
        values: dict[str, Any] = {"stage": stage, "progress": float(min(max(fraction, 0.0), 1.0))}
        with self.lock, self.store.session() as s:
            if self.makes_video and self.video_id is None and stage != "hash":
                self.video_id = s.scalar(
                    select(Video.id).where(Video.library_id == self.library_id, Video.uri == self.uri)
                )
            if self.video_id is not None:
                values["video_id"] = self.video_id
            moved = s.execute(  # type: ignore[attr-defined]
                update(Job)
                .where(Job.id == self.job_id, Job.status == "running")
                .values(heartbeat=time.time(), **values)
            ).rowcount
        if moved == 0 and self.cancellable:
            from reasoning.generate import Cancelled

            raise Cancelled(f"job {self.job_id} was cancelled")

    def beat(self) -> None:
        with self.lock, self.store.session() as s:
            s.execute(update(Job).where(Job.id == self.job_id).values(heartbeat=time.time()))


def run_job(store: Store, settings: Any, job_id: str) -> None:
    """Run one claimed job to done or failed (never raises for a bad input)."""
    from indexers import MediaError, ingest
    from indexers.pipeline import regate

    job, library = get_job(store, job_id)
    uploads = settings.uploads_dir
    if job.attempts > MAX_ATTEMPTS:
        _finish(store, job_id, "failed", error=f"gave up after {MAX_ATTEMPTS} attempts that ended the worker")
        _remove_upload(job, uploads, settings)
        return
    reporter = _Reporter(store, job)
    stop = threading.Event()

    def heartbeat() -> None:  # a stage may be quiet for long (a big model load): still alive
        while not stop.wait(max(1.0, settings.job_stale_seconds / 4)):
            try:
                reporter.beat()
            except Exception:  # a busy database: the next beat will do
                log.debug("heartbeat failed", exc_info=True)

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    if job.kind == "generate":
        try:
            _run_generate(store, settings, job, reporter)
        finally:
            stop.set()
            beat.join()
        return
    try:
        if job.kind == "regate":
            regate(store, library, settings.memory_options(), reporter)
            result = None
        else:
            result = ingest(
                store,
                _ingest_source(job.source),
                settings.ingest_options(library),
                settings.cache_dir,
                reporter,
            )
    except MediaError as e:
        message = (
            str(e).replace(str(Path(job.source)), job.title).replace(job.source.split("?", 1)[0], job.title)
        )  # no server path or object URL to clients
        _finish(store, job_id, "failed", error=message)
        _remove_upload(job, uploads, settings)
    except Exception as e:  # a bug, not the input: keep the message short, the log has the rest
        log.exception("job %s failed", job_id)
        what = "regating the memory" if job.kind == "regate" else "ingestion"
        _finish(store, job_id, "failed", error=f"{what} failed ({type(e).__name__})")
        _remove_upload(job, uploads, settings)
    else:
        if result is None:
            _finish(store, job_id, "done")
        else:
            _finish(store, job_id, "done", video_id=result.video_id)
            if result.existed:
                _remove_upload(job, uploads, settings)  # the same bytes were ingested before: that copy stays
    finally:
        stop.set()
        beat.join()


def _run_generate(store: Store, settings: Any, job: Job, reporter: _Reporter) -> None:
    """Render a generation job into `home/edits/<id>/`. A bad request (the video deleted since) or
    a backend failure fails it with the message; a cancel stops it and removes what it wrote."""
    from reasoning.generate import BackendError, Cancelled, EditRequest, RequestError, Run, prepare, run_edit

    out = settings.edits_dir / job.id
    saved = dict((job.result or {}).get("saved") or {})

    def keep(state: dict[str, Any]) -> None:
        with store.session() as s:
            s.execute(update(Job).where(Job.id == job.id).values(result={"saved": state}))

    run = Run(lambda f: reporter("render", f), saved, keep)
    try:
        request = EditRequest.model_validate(job.request or {})
        plan, backend = prepare(store, request, None, settings.generation_options(), settings.open_media)
        reporter("render", 0.0)
        result = run_edit(store, plan, backend, out, run, job.id)
    except Cancelled:
        shutil.rmtree(out, ignore_errors=True)
    except (RequestError, BackendError, ValueError) as e:
        _finish(store, job.id, "failed", error=str(e)[:2000])
    except Exception as e:  # a bug, not the request: a short message, the log has the rest
        log.exception("job %s failed", job.id)
        _finish(store, job.id, "failed", error=f"generation failed ({type(e).__name__})")
    else:
        _finish(store, job.id, "done", result=result)


def _finish(store: Store, job_id: str, status: str, **values: Any) -> None:
    """The job's end, unless it was cancelled meanwhile (a cancel is the last word)."""
    with store.session() as s:
        extra = {"progress": 1.0, "stage": None} if status == "done" else {}
        s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status != "cancelled")
            .values(status=status, owner=None, **extra, **values)
        )


def work(settings: Any, stop: threading.Event | None = None, poll: float = 0.5, once: bool = False) -> None:
    """Claim and run jobs until `stop` is set (or, with `once`, until the queue is empty)."""
    store = Store(settings.home, settings.database_url, settings.index_backend)
    owner = owner_name()
    stop = stop or threading.Event()
    while not stop.is_set():
        job_id = claim(store, owner, settings.job_stale_seconds)
        if job_id is None:
            if once:
                break
            stop.wait(poll)
            continue
        run_job(store, settings, job_id)
    store.close()


class WorkerPool:
    """`count` worker processes, restarted when one dies, killed by the kernel when the server dies."""

    def __init__(self, settings: Any, count: int) -> None:
        self.settings, self.count = settings, count
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, VIDMEM_WORKER_SETTINGS=self.settings.model_dump_json())
        return subprocess.Popen([sys.executable, "-m", "service.jobs"], env=env)

    def start(self) -> None:
        if self.count < 1:
            return
        self.procs = [self._spawn() for _ in range(self.count)]
        # the monitor spawns replacements, so it is the parent thread PR_SET_PDEATHSIG watches: it
        # lives as long as the server
        self._monitor = threading.Thread(target=self._watch, name="vidmem-workers", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            for i, p in enumerate(self.procs):
                if p.poll() is not None and not self._stop.is_set():
                    log.warning("ingestion worker %d exited with %s; starting another", p.pid, p.returncode)
                    self.procs[i] = self._spawn()

    def alive(self) -> int:
        return sum(p.poll() is None for p in self.procs)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
        if self._monitor is not None:
            self._monitor.join(timeout)


def _worker_main() -> None:
    """A worker process. SIGTERM ends it where it stands, as a crash would: its job is taken over
    and resumed at the first unfinished stage by the next worker."""
    import json

    from indexers.heap import share_heaps
    from indexers.visual import _die_with_parent
    from service.settings import Settings

    _die_with_parent()
    share_heaps(2)  # as the visual worker it starts (not measured apart: docs/benchmarks/README.md)
    parser = argparse.ArgumentParser(description="A vidmem ingestion worker (started by `vidmem serve`).")
    parser.parse_args()
    raw = os.environ.get("VIDMEM_WORKER_SETTINGS")
    settings = Settings(**json.loads(raw)) if raw else Settings()  # type: ignore[call-arg]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    work(settings)


if __name__ == "__main__":
    _worker_main()
