"""`/v1/jobs`: the ingestion queue, as far as the key may read it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from memory import StoreError
from service import jobs
from service.api.deps import API_PREFIX, Caller, Svc, readable_library
from service.api.errors import CALLER, ApiError, errors
from service.api.models import JobOut

router = APIRouter(prefix=API_PREFIX, tags=["jobs"])


@router.get("/jobs", responses=errors(*CALLER, 404, 422))
def list_jobs(
    who: Caller,
    svc: Svc,
    library: Annotated[str | None, Query(max_length=128)] = None,
    status: Literal["queued", "running", "done", "failed", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    """Jobs, newest first: of the named library, else every library the key may read."""
    library_id = readable_library(svc, who, library).id if library is not None else who.library_id
    rows = jobs.list_jobs(svc.store, library_id, status, limit)
    return [JobOut.model_validate(jobs.job_json(job, name)) for job, name in rows]


@router.get("/jobs/{job_id}", responses=errors(*CALLER, 404, 422))
def get_job(job_id: str, who: Caller, svc: Svc) -> JobOut:
    """One job: its status, stage, progress, and the video it made."""
    try:
        job, name = jobs.get_job(svc.store, job_id)
    except StoreError:
        job = None
    if job is None or not who.may_read(job.library_id):
        raise ApiError(404, "not_found", f"no job with id {job_id!r}")
    return JobOut.model_validate(jobs.job_json(job, name))
