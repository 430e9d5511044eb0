"""The generation bridge: an insert or edit request, checked against its video, rendered by a
backend, laid on an OpenTimelineIO timeline with a preview.

    plan, backend = prepare(store, EditRequest(video_id=..., operation="title", anchor=62.0, text="Layer masks"))
    result = run_edit(store, plan, backend, Path("out"))

`prepare` is all the checking: what it returns will render (short of a backend failure), and a
`RequestError` means no job should be made. `run_edit` writes `insert.mp4` (the backend's piece),
`edit.otio`, `edit.edl`, `edit.xml` and `preview.mp4` into the folder, and returns what it made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import select

from kernels.timecode import hms
from memory import Segment, Store, TranscriptCue
from reasoning.generate.backends import (
    BACKENDS,
    CAPABILITIES,
    Artifact,
    Backend,
    BackendError,
    Cancelled,
    Run,
    backend_for,
)
from reasoning.generate.request import OPERATIONS, EditRequest, Plan, RequestError, Source, plan_edit
from reasoning.generate.timeline import build_timeline, lay_out, render_preview, write_exports

__all__ = [
    "BACKENDS",
    "CAPABILITIES",
    "OPERATIONS",
    "Artifact",
    "Backend",
    "BackendError",
    "Cancelled",
    "EditRequest",
    "Opener",
    "Plan",
    "RequestError",
    "Run",
    "load_source",
    "prepare",
    "run_edit",
]

Opener = Callable[[str], tuple[str, tuple[str, ...]]]
"""How ffmpeg opens media the catalog names by URL: `Video.uri` -> (what follows `-i`, the input
options before it). The service makes one from its storage settings (an `s3://` object becomes a
pre-signed https URL, read by ranges; never a whole copy); it raises when the media cannot be reached."""

CONTEXT_SECONDS = 20.0
"""How far around the anchor the prompt is written from, when the caller gives none."""


def load_source(
    store: Store, video_id: str, library: str | None = None, media: Opener | None = None
) -> Source:
    """The video as a plan needs it; `RequestError` if it does not exist (or is outside `library`),
    has no picture, or its file is gone. Media by URL is opened with `media`; without it the source
    can be planned and checked, not rendered (`Source.inputs` refuses)."""
    with store.session() as s:
        video = store.video_in(s, video_id, library)
        if video is None:
            where = f" in library {library!r}" if library is not None else ""
            raise RequestError(f"no video with id {video_id!r}{where}")
        if video.kind != "video" or not video.fps or not video.width or not video.height:
            raise RequestError(
                f"{video_id} ({video.title}) has no picture to edit: it is a {video.kind} item"
            )
        starts = s.scalars(
            select(Segment.start)
            .where(Segment.video_id == video_id, Segment.level == "shot")
            .order_by(Segment.start)
        ).all()
        source = Source(
            video_id=video.id,
            path="" if "://" in video.uri else video.uri,
            uri=video.uri,
            duration=float(video.duration),
            fps=float(video.fps),
            width=int(video.width),
            height=int(video.height),
            boundaries=tuple(sorted({0.0, *map(float, starts), float(video.duration)})),
            library=video.library.name,
        )
    if source.remote:
        if media is None:
            return source
        try:
            path, options = media(source.uri)
        except Exception as e:
            raise RequestError(f"the media of {video_id} cannot be read at its URL: {e}") from None
        return replace(source, path=path, options=options)
    if not Path(source.path).is_file():
        raise RequestError(f"the media of {video_id} is no longer at its path; ingest it again")
    return source


def scene_context(store: Store, video_id: str, start: float, end: float) -> str:
    """What the scenes around [start, end] show and say: the captions of the scenes before and after,
    and the transcript within `CONTEXT_SECONDS` (the prompt's raw material when the caller gives only
    an operation)."""
    lo, hi = max(0.0, start - CONTEXT_SECONDS), end + CONTEXT_SECONDS
    with store.session() as s:
        scenes = s.scalars(
            select(Segment)
            .where(
                Segment.video_id == video_id, Segment.level == "scene", Segment.end > lo, Segment.start < hi
            )
            .order_by(Segment.start)
        ).all()
        cues = s.scalars(
            select(TranscriptCue)
            .where(TranscriptCue.video_id == video_id, TranscriptCue.end > lo, TranscriptCue.start < hi)
            .order_by(TranscriptCue.start)
        ).all()
        captions = [
            f"{hms(sc.start)} {sc.caption.strip()}" for sc in scenes if sc.caption and sc.caption.strip()
        ]
        said = " ".join(c.text.strip() for c in cues)
    parts = []
    if captions:
        parts.append("Scenes: " + " | ".join(captions))
    if said:
        parts.append("Said: " + said[:600])
    return ". ".join(parts)


def prepare(
    store: Store,
    request: EditRequest,
    library: str | None = None,
    backend_options: dict[str, dict[str, Any]] | None = None,
    media: Opener | None = None,
) -> tuple[Plan, Backend]:
    """The request checked and resolved: its plan and the backend that will render it. `media`
    opens videos named by URL (needed to render them; a check alone does without)."""
    backend = backend_for(request.backend, request.operation, (backend_options or {}).get(request.backend))
    source = load_source(store, request.video_id, library, media)
    overlay = None
    if request.overlay is not None and request.operation == "pip":
        try:
            overlay = load_source(store, request.overlay.video_id or request.video_id, library, media)
        except RequestError as e:
            raise RequestError(f"pip: {e}") from None
    span = request.anchor if isinstance(request.anchor, tuple) else (request.anchor, request.anchor)
    context = "" if request.prompt.strip() else scene_context(store, request.video_id, *span)
    plan = plan_edit(request, source, backend.grid, backend.fps(source.fps), context, overlay)
    backend.check(plan)
    return plan, backend


def chapters(store: Store, video_id: str) -> list[tuple[float, float, str]]:
    with store.session() as s:
        rows = s.scalars(
            select(Segment)
            .where(Segment.video_id == video_id, Segment.level == "chapter")
            .order_by(Segment.start)
        ).all()
        return [(r.start, r.end, (r.caption or f"chapter {i + 1}").strip()) for i, r in enumerate(rows)]


def run_edit(
    store: Store | None,
    plan: Plan,
    backend: Backend,
    out: Path,
    run: Run | None = None,
    job: str = "",
) -> dict[str, Any]:
    """Render `plan` with `backend` into the folder `out`, lay it on the timeline, write the exports
    and the preview; what was made, as a job's result. `BackendError` when rendering fails,
    `Cancelled` when `run.progress` says so."""
    run = run or Run()
    out.mkdir(parents=True, exist_ok=True)
    outer = run.progress
    artifact: Artifact | None = None
    if plan.frames > 0:
        inner = Run(lambda f: outer(0.8 * f), run.saved, run.keep)
        artifact = backend.render(plan, out, inner)
        if artifact.frames != plan.timeline_frames or artifact.fps != plan.source.fps:
            raise BackendError(
                f"{backend.name} delivered {artifact.frames} frames at {artifact.fps:g} fps, not the "
                f"{plan.timeline_frames} at {plan.source.fps:g} fps planned"
            )
    cut = lay_out(plan, artifact.path if artifact else None)
    seed = plan.request.seed
    metadata = {
        "job": job,
        "backend": backend.name,
        "operation": plan.operation,
        "prompt": plan.prompt,
        "prompt_source": plan.prompt_source,
        "negative_prompt": plan.request.negative_prompt,
        "seed": seed,
        "request": plan.request.model_dump(mode="json"),
    }
    timeline = build_timeline(
        cut,
        plan,
        f"{plan.source.video_id} {plan.operation}",
        metadata,
        chapters(store, plan.source.video_id) if store is not None else [],
    )
    files = write_exports(timeline, out)
    preview = render_preview(cut, plan, out / "preview.mp4", lambda f: outer(0.8 + 0.2 * f))
    fps = plan.source.fps
    return {
        "plan": plan.to_json(),
        "artifact": artifact.to_json() if artifact else None,
        "timeline": {
            "frames": cut.frames,
            "fps": fps,
            "seconds": round(cut.frames / fps, 4),
            "insert_at": cut.insert_at,
            "insert_at_hms": hms(cut.insert_at / fps, millis=True),
            "insert_frames": cut.insert_frames,
        },
        "files": {**files, "preview": "preview.mp4", **({"insert": artifact.path.name} if artifact else {})},
        "preview": preview,
    }
