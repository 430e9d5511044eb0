"""A library's videos and each video: upload and import (queued as jobs), facts, timeline,
hierarchy, export, media (byte ranges), thumbnails, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from service import jobs, remote, uploads
from service.api.deps import (
    API_PREFIX,
    Caller,
    Svc,
    links,
    readable_library,
    readable_video,
    require_writer,
    video_json,
)
from service.api.errors import BODY, CALLER, ApiError, errors
from service.api.models import Hierarchy, ImportIn, JobOut, Timeline, VideoOut
from service.export import nested, timeline, webvtt_chapters
from service.media import keyframe_jpeg, media_type

router = APIRouter(prefix=API_PREFIX, tags=["videos"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}
_MEDIA_TYPES = ("video/*", "audio/*", "application/x-subrip", "text/vtt", "application/octet-stream")
_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.get("/libraries/{library}/videos", responses=errors(*CALLER, 404, 422))
def videos(library: str, who: Caller, svc: Svc) -> list[VideoOut]:
    """The library's videos, oldest first."""
    lib = readable_library(svc, who, library)
    return [VideoOut.model_validate(video_json(v)) for v in svc.store.videos(lib.name)]


@router.post(
    "/libraries/{library}/videos",
    status_code=202,
    openapi_extra=_UPLOAD_BODY,
    responses=errors(*CALLER, 400, 403, 404, 413, 415, 422),
)
async def upload(
    library: str,
    request: Request,
    who: Caller,
    svc: Svc,
    filename: Annotated[
        str | None,
        Query(min_length=1, max_length=255, description="Needed with a raw body; a form names its file."),
    ] = None,
) -> JobOut:
    """Upload a media (or .srt/.vtt) file as the request body, or as the file part of a
    multipart/form-data form; ingestion is queued (202 + job)."""
    lib = await run_in_threadpool(readable_library, svc, who, library)  # the catalog blocks: off the
    require_writer(who, lib, "uploading")  # event loop, so other requests go on meanwhile

    def queue(path: Path | str, name: str) -> JobOut:
        return JobOut.model_validate(
            jobs.job_json(jobs.enqueue(svc.store, lib.name, path, name, True), lib.name)
        )

    return await uploads.receive(request, svc.settings, filename, queue)


@router.post("/libraries/{library}/imports", status_code=202, responses=errors(*CALLER, *BODY, 403, 404))
def import_path(library: str, body: ImportIn, who: Caller, svc: Svc) -> JobOut:
    """Ingest a file already on the server (202 + job): an admin key may take it from the media
    roots or the roots granted to the library; a `write` key of the library from the latter. An
    admin key may also name media by URL (`s3://`, `https://`, `http://`) inside the media URL roots;
    a `file://` URL is a server-side path."""
    cfg = svc.settings
    lib = readable_library(svc, who, library)
    require_writer(who, lib, "importing")
    value = uploads.local_import(body.path)
    if "://" in value:
        if not who.admin:
            raise ApiError(
                403, "forbidden", "importing media by URL needs an admin key (VIDMEM_MEDIA_URL_ROOTS)"
            )
        from indexers.source import media_source

        url = uploads.confine_url(value, cfg.media_url_roots)
        name = media_source(url).name
        uploads.probe(url, name, cfg.storage_options())
        job = jobs.enqueue(svc.store, lib.name, url, name, upload=False)
        return JobOut.model_validate(jobs.job_json(job, lib.name))
    granted = cfg.library_media_roots.get(lib.name, [])
    if not who.admin and not granted:
        raise ApiError(
            403, "forbidden", "importing server-side paths needs an admin key, or a media root granted "
            f"to library {lib.name!r} (VIDMEM_LIBRARY_MEDIA_ROOTS)"
        )  # fmt: skip
    path = uploads.confine(value, [*cfg.media_roots, *granted] if who.admin else granted)
    uploads.probe(path, path.name)
    job = jobs.enqueue(svc.store, lib.name, path, path.name, upload=False)
    return JobOut.model_validate(jobs.job_json(job, lib.name))


@router.get("/videos/{video_id}", responses=errors(*CALLER, 404, 422))
def video(video_id: str, who: Caller, svc: Svc) -> VideoOut:
    """One video."""
    return VideoOut.model_validate(video_json(readable_video(svc, who, video_id)))


def _timeline(svc: Svc, video_id: str) -> dict[str, Any]:
    """The timeline as the API shows it: the video with its links, without its path on the server."""
    t = timeline(svc.store, video_id, uri=False)
    t["video"].update(links(video_id))
    return t


@router.get("/videos/{video_id}/timeline", responses=errors(*CALLER, 404, 422))
def video_timeline(video_id: str, who: Caller, svc: Svc) -> Timeline:
    """Chapters, scenes, shots, on-screen text and transcript as flat lists (seconds)."""
    readable_video(svc, who, video_id)
    return Timeline.model_validate(_timeline(svc, video_id))


@router.get("/videos/{video_id}/hierarchy", responses=errors(*CALLER, 404, 422))
def hierarchy(video_id: str, who: Caller, svc: Svc) -> Hierarchy:
    """Chapters holding their scenes, scenes their shots, on-screen text and transcript."""
    readable_video(svc, who, video_id)
    return Hierarchy.model_validate(nested(_timeline(svc, video_id)))


@router.get(
    "/videos/{video_id}/export",
    response_class=Response,
    responses={
        200: {
            "description": "A WebVTT chapters track, or the nested timeline as a JSON file.",
            "content": {
                "text/vtt": {"schema": {"type": "string"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/Hierarchy"}},
            },
        },
        **errors(*CALLER, 404, 422),
    },
)
def export(video_id: str, who: Caller, svc: Svc, format: Literal["vtt", "json"] = "json") -> Response:
    """WebVTT chapters (`<track kind="chapters">`) or the nested timeline as a JSON file."""
    v = readable_video(svc, who, video_id)
    t = _timeline(svc, video_id)
    stem = uploads.safe_name(Path(v.title).stem) or v.id
    if format == "vtt":
        return PlainTextResponse(
            webvtt_chapters(t),
            media_type="text/vtt",
            headers={"Content-Disposition": f'attachment; filename="{stem}.chapters.vtt"'},
        )
    body = Hierarchy.model_validate(nested(t)).model_dump(mode="json", by_alias=True)
    return JSONResponse(body, headers={"Content-Disposition": f'attachment; filename="{stem}.json"'})


@router.get(
    "/videos/{video_id}/media",
    response_class=FileResponse,
    responses={
        200: {"description": "The whole media file.", "content": dict.fromkeys(_MEDIA_TYPES, _BINARY)},
        206: {"description": "The requested byte range.", "content": dict.fromkeys(_MEDIA_TYPES, _BINARY)},
        **errors(*CALLER, 404, 416, 422),
    },
)
def media(video_id: str, request: Request, who: Caller, svc: Svc) -> Response:
    """The media file, with HTTP byte ranges (`Range: bytes=START-END`) so a player can seek; media
    named by URL is relayed from its store range by range."""
    v = readable_video(svc, who, video_id)
    if "://" in v.uri:
        from indexers.source import media_source

        source = media_source(v.uri, svc.settings.storage_options())
        kind = media_type(Path(source.name))
        return remote.serve(source, request.headers.get("range"), kind, v.title)
    path = Path(v.uri)
    if not path.is_file():
        raise ApiError(404, "not_found", f"the media of video {video_id} is no longer on the server")
    return FileResponse(
        path, media_type=media_type(path), filename=v.title, content_disposition_type="inline"
    )


@router.get(
    "/videos/{video_id}/thumbnail",
    response_class=Response,
    responses={
        200: {"description": "A JPEG.", "content": {"image/jpeg": _BINARY}},
        **errors(*CALLER, 404, 422),
    },
)
def thumbnail(
    video_id: str,
    who: Caller,
    svc: Svc,
    t: Annotated[float, Query(ge=0, le=1e7)] = 0.0,
    width: Annotated[int, Query(ge=32, le=1280)] = 320,
) -> Response:
    """The keyframe at or before `t` seconds, as a JPEG `width` pixels wide (cached)."""
    v = readable_video(svc, who, video_id)
    if v.kind != "video":
        raise ApiError(404, "not_found", f"video {video_id} has no picture ({v.kind})")
    return Response(keyframe_jpeg(svc.settings, v, t, width), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=86400"})  # fmt: skip


@router.delete(
    "/videos/{video_id}",
    status_code=204,
    response_class=Response,
    responses=errors(*CALLER, 403, 404, 409, 422, 503),
)
def delete_video(video_id: str, who: Caller, svc: Svc) -> Response:
    """Remove a video: its rows, vectors, thumbnails and uploaded file (or uploaded object: removed
    first, so a store that cannot be reached leaves everything as it was, 503); nothing else."""
    from indexers.source import MediaError

    v = readable_video(svc, who, video_id)
    require_writer(who, v.library, "deleting")
    try:
        jobs.delete_video(svc.store, svc.settings, video_id)
    except jobs.JobStateError as e:
        raise ApiError(409, "conflict", str(e)) from None
    except MediaError as e:
        raise ApiError(503, "unavailable", f"the object store could not delete the media: {e}") from None
    return Response(status_code=204)
