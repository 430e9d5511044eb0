"""A library's memory (`memory.bank`): its numbers, what it did with each unit of a video and why, and
gating the library again with the memory settings in force (a job, as an ingestion is)."""

from __future__ import annotations

from fastapi import APIRouter

from service import jobs
from service.api.deps import API_PREFIX, Caller, Svc, readable_library, readable_video, require_writer
from service.api.errors import CALLER, errors
from service.api.models import DecisionOut, JobOut, MemoryStatsOut

router = APIRouter(prefix=API_PREFIX, tags=["memory"])


@router.get("/libraries/{library}/memory", responses=errors(*CALLER, 404, 422))
def library_memory(library: str, who: Caller, svc: Svc) -> MemoryStatsOut:
    """Slots by state, the bank's budget, what the gate did with the units it saw, how much of their
    rows the search indexes hold, and the slots that stand for the most units."""
    from memory.bank import stats

    lib = readable_library(svc, who, library)
    with svc.store.session() as s:
        return MemoryStatsOut.model_validate(stats(s, lib.id, svc.settings.memory_options()))


@router.get("/videos/{video_id}/memory", responses=errors(*CALLER, 404, 422))
def video_memory(video_id: str, who: Caller, svc: Svc) -> list[DecisionOut]:
    """What the memory did with each of the video's shots, transcript windows and cues, in time
    order: written, folded into a slot (which, and its place), or skipped, and why."""
    from memory.bank import decisions_of

    readable_video(svc, who, video_id)
    with svc.store.session() as s:
        return [DecisionOut.model_validate(d) for d in decisions_of(s, video_id)]


@router.post("/libraries/{library}/memory/regate", status_code=202, responses=errors(*CALLER, 403, 404, 422))
def regate(library: str, who: Caller, svc: Svc) -> JobOut:
    """Forget the library's memory and gate its ready videos again, in the order they were ingested,
    with the service's memory settings (`write` or admin): queued as a job (202 + the job; the
    library's regate job still queued or running, if there is one). Search keeps working meanwhile,
    over every row until the new memory is written."""
    lib = readable_library(svc, who, library)
    require_writer(who, lib, "gating its memory again")
    return JobOut.model_validate(jobs.job_json(jobs.enqueue_regate(svc.store, lib.name), lib.name))
