"""`/v1/edits` and a generation job's actions: request an insert or edit (checked now, rendered by a
worker), cancel, retry, and fetch what it made (insert, preview, `.otio`, `.edl`, FCP `.xml`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from kernels.timecode import hms
from memory import StoreError
from reasoning.generate import EditRequest, RequestError, prepare
from service import jobs
from service.api.deps import API_PREFIX, Caller, Svc, readable_video, require_writer
from service.api.errors import BODY, CALLER, ApiError, errors
from service.api.models import JobOut

router = APIRouter(prefix=API_PREFIX, tags=["edits"])

FILES = {
    "insert.mp4": "video/mp4",
    "preview.mp4": "video/mp4",
    "edit.otio": "application/json",
    "edit.edl": "text/plain",
    "edit.xml": "application/xml",
}
"""What a generation job may serve, by name, and its type."""


@router.post("/edits", status_code=202, responses=errors(*CALLER, *BODY, 403, 404))
async def create_edit(body: EditRequest, who: Caller, svc: Svc) -> JobOut:
    """Request an insert or edit of a video (202 + a `generate` job). The request is checked now
    (anchor inside the video and snapped, duration on the backend's grid, the backend able to do the
    operation): a request that cannot be honoured is a 422 that says why, and no job is made."""
    video = readable_video(svc, who, body.video_id)
    require_writer(who, video.library, "editing")
    try:
        plan, _backend = await run_in_threadpool(
            prepare, svc.store, body, video.library.name, svc.settings.generation_options()
        )
    except RequestError as e:
        raise ApiError(422, "invalid_edit", str(e)) from None
    at = plan.start / plan.source.fps
    job = jobs.enqueue_edit(
        svc.store,
        video.library.name,
        body.model_dump(mode="json"),
        f"{body.operation} at {hms(at)} of {video.title}",
    )
    return JobOut.model_validate(jobs.job_json(job, video.library.name))


def _job(svc: Svc, who: Caller, job_id: str, write: bool = False):  # type: ignore[no-untyped-def]
    try:
        job, name = jobs.get_job(svc.store, job_id)
    except StoreError:
        job = None
    if job is None or not who.may_read(job.library_id):
        raise ApiError(404, "not_found", f"no job with id {job_id!r}")
    if write and not who.may_write(job.library_id):
        raise ApiError(403, "forbidden", f"key {who.name!r} may only read library {name!r}")
    return job, name


@router.post("/jobs/{job_id}/cancel", responses=errors(*CALLER, 403, 404, 409, 422))
def cancel_job(job_id: str, who: Caller, svc: Svc) -> JobOut:
    """Cancel a queued job or a running generation (its worker stops at its next progress report and
    removes what it wrote). 409 for a job that has ended or an ingestion already running."""
    _job(svc, who, job_id, write=True)
    try:
        job = jobs.cancel(svc.store, job_id)
    except jobs.JobStateError as e:
        raise ApiError(409, "conflict", str(e)) from None
    return JobOut.model_validate(jobs.job_json(*jobs.get_job(svc.store, job.id)))


@router.post("/jobs/{job_id}/retry", responses=errors(*CALLER, 403, 404, 409, 422))
def retry_job(job_id: str, who: Caller, svc: Svc) -> JobOut:
    """Queue a failed or cancelled generation again, from the start (409 for any other job)."""
    _job(svc, who, job_id, write=True)
    try:
        jobs.retry(svc.store, job_id)
    except jobs.JobStateError as e:
        raise ApiError(409, "conflict", str(e)) from None
    return JobOut.model_validate(jobs.job_json(*jobs.get_job(svc.store, job_id)))


_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.get(
    "/jobs/{job_id}/files/{name}",
    response_class=FileResponse,
    responses={
        200: {"description": "The file.", "content": dict.fromkeys(sorted(set(FILES.values())), _BINARY)},
        206: {"description": "The requested byte range.", "content": {"video/mp4": _BINARY}},
        **errors(*CALLER, 404, 416, 422),
    },
)
def job_file(job_id: str, name: str, who: Caller, svc: Svc) -> FileResponse:
    """A file a finished generation made: `insert.mp4`, `preview.mp4` (byte ranges, for the player),
    `edit.otio`, `edit.edl` (CMX 3600) or `edit.xml` (FCP XML)."""
    job, _ = _job(svc, who, job_id)
    if name not in FILES:
        raise ApiError(404, "not_found", f"no file {name!r}; a generation makes {', '.join(FILES)}")
    path = Path(svc.settings.edits_dir) / job.id / name
    if job.kind != "generate" or job.status != "done" or not path.is_file():
        raise ApiError(404, "not_found", f"job {job_id} has no {name} (it is a {job.status} {job.kind} job)")
    inline = name.endswith(".mp4")
    return FileResponse(
        path,
        media_type=FILES[name],
        filename=f"{job.id}-{name}",
        content_disposition_type="inline" if inline else "attachment",
    )
