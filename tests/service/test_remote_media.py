"""The service with media in an object store: uploads streamed into the bucket (`upload_url`),
imports by URL confined to `media_url_roots`, the player's byte ranges and thumbnails read from the
object, and a deleted video's uploaded object deleted with it.

The S3-compatible server is moto's (`moto.server.ThreadedMotoServer`, moto[server] 5.2) on
127.0.0.1 (tests/remote.py): the service reaches it over HTTP with s3fs, ffmpeg through pre-signed
URLs. Real SQLite, decoders and speech model; the jobs run in this process (`jobs.work(once=True)`).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
import uuid
from io import BytesIO
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexers.source import media_source
from service.app import create_app
from service.remote import PART_BYTES, ObjectUpload
from service.settings import Settings
from tests.helpers import TALK, H, cli, cli_json, error, run_jobs, settings_for, upload
from tests.media import make_narrated_clip, write_srt
from tests.remote import S3Server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return s3.bucket(f"vidmem-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s, cuts at 3 s and 7 s, one spoken phrase at 2 s."""
    return make_narrated_clip(
        tmp_path_factory.mktemp("talk"), phrases=("the purple giraffe eats bright oranges",), starts=(2.0,),
        total_seconds=10.0, cut_frames=(72, 168), name="giraffe talk.mp4",
    ).path  # fmt: skip


def _client(cfg: Settings) -> TestClient:
    return TestClient(create_app(cfg))


def test_an_upload_lands_in_the_bucket_is_searchable_streams_by_range_and_goes_with_its_video(
    s3: S3Server, bucket: str, talk: Path, tmp_path: Path
) -> None:
    cfg = settings_for(tmp_path, upload_url=f"s3://{bucket}/incoming", s3_endpoint_url=s3.endpoint)
    data = talk.read_bytes()
    with _client(cfg) as client:
        client.post("/v1/libraries", json={"name": "talks"}, headers=H)
        r = upload(client, "talks", talk, "video/mp4")
        assert r.status_code == 202, r.text
        [key] = s3.keys(bucket)
        assert key.startswith("incoming/") and key.endswith("/giraffe talk.mp4"), key
        assert s3.get(bucket, key) == data
        assert not cfg.uploads_dir.exists() or not any(cfg.uploads_dir.iterdir())  # nothing on local disk

        run_jobs(cfg)
        job = client.get(f"/v1/jobs/{r.json()['id']}", headers=H).json()
        assert job["status"] == "done", job
        vid = job["video_id"]
        video = client.get(f"/v1/videos/{vid}", headers=H).json()
        assert (
            video["title"] == "giraffe talk.mp4" and video["status"] == "ready" and video["duration"] == 10.0
        )
        moments = client.get("/v1/search", params={"q": "purple giraffe", "library": "talks"}, headers=H)
        assert moments.json()["moments"] and moments.json()["moments"][0]["video_id"] == vid

        # the player reads the object by ranges, relayed from the bucket
        whole = client.get(f"/v1/videos/{vid}/media", headers=H)
        assert whole.status_code == 200 and whole.content == data, whole.headers
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
        part = client.get(f"/v1/videos/{vid}/media", headers={**H, "Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == data[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
        tail = client.get(f"/v1/videos/{vid}/media", headers={**H, "Range": "bytes=-64"})
        assert tail.status_code == 206 and tail.content == data[-64:]
        past = client.get(f"/v1/videos/{vid}/media", headers={**H, "Range": f"bytes={len(data) + 10}-"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
        error(past)
        thumb = client.get(f"/v1/videos/{vid}/thumbnail", params={"t": 8.0, "width": 160}, headers=H)
        assert thumb.status_code == 200, thumb.text
        from PIL import Image

        assert Image.open(BytesIO(thumb.content)).size == (160, 90)

        # the same bytes again, as a form this time: the same video; the second object is removed
        again = client.post(
            "/v1/libraries/talks/videos", files={"file": ("copy.mp4", data, "video/mp4")}, headers=H
        )
        assert again.status_code == 202, again.text
        run_jobs(cfg)
        assert client.get(f"/v1/jobs/{again.json()['id']}", headers=H).json()["video_id"] == vid
        assert s3.keys(bucket) == [key]

        assert client.delete(f"/v1/videos/{vid}", headers=H).status_code == 204
        assert s3.keys(bucket) == [] and s3.pending_uploads(bucket) == []
        assert client.get(f"/v1/videos/{vid}", headers=H).status_code == 404


def test_the_cli_delete_removes_the_uploaded_object_and_keeps_everything_when_the_store_is_down(
    s3: S3Server, bucket: str, talk: Path, tmp_path: Path
) -> None:
    """`vidmem delete` (a separate process) deletes what the API's delete does: an uploaded object
    with its video. With the store unreachable it deletes nothing, and says why."""
    cfg = settings_for(tmp_path, upload_url=f"s3://{bucket}/in", s3_endpoint_url=s3.endpoint)
    with _client(cfg) as client:
        client.post("/v1/libraries", json={"name": "talks"}, headers=H)
        r = upload(client, "talks", talk, "video/mp4")
        assert r.status_code == 202, r.text
        run_jobs(cfg)
        vid = client.get(f"/v1/jobs/{r.json()['id']}", headers=H).json()["video_id"]
    [key] = s3.keys(bucket)

    down = cli(cfg.home, "delete", vid, ok=False, env={"VIDMEM_S3_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert down.returncode == 1 and down.stderr.startswith("error:"), down.stderr
    assert s3.keys(bucket) == [key]
    assert [v["id"] for v in cli_json(cfg.home, "list", "--library", "talks")] == [vid]

    cli(cfg.home, "delete", vid, env={"VIDMEM_S3_ENDPOINT_URL": s3.endpoint})
    assert s3.keys(bucket) == [] and cli_json(cfg.home, "list", "--library", "talks") == []


def test_an_edit_of_a_video_in_the_bucket_reads_it_by_ranges_and_names_it_by_its_url(
    s3: S3Server, bucket: str, talk: Path, tmp_path: Path
) -> None:
    """A generation job on media in the object store: ffmpeg reads the object through a pre-signed
    URL (no local copy), the insert holds the source's own frame, and the timeline and every file
    written name the object by its s3:// URL, never by the signed one. With the store unreachable
    the job fails and says why."""
    import opentimelineio as otio

    from reasoning.generate.media import count_frames, grab, psnr

    cfg = settings_for(tmp_path, upload_url=f"s3://{bucket}/in", s3_endpoint_url=s3.endpoint)
    with _client(cfg) as client:
        client.post("/v1/libraries", json={"name": "talks"}, headers=H)
        r = upload(client, "talks", talk, "video/mp4")
        run_jobs(cfg)
        vid = client.get(f"/v1/jobs/{r.json()['id']}", headers=H).json()["video_id"]
        [key] = s3.keys(bucket)
        url = f"s3://{bucket}/{urllib.parse.quote(key)}"  # as the catalog records it

        r = client.post("/v1/edits", json={"video_id": vid, "operation": "freeze", "anchor": 5.0}, headers=H)
        assert r.status_code == 202, r.text
        run_jobs(cfg)
        done = client.get(f"/v1/jobs/{r.json()['id']}", headers=H).json()
        assert done["status"] == "done", done
        out = cfg.edits_dir / done["id"]
        plan = done["result"]["plan"]
        insert, preview = out / "insert.mp4", out / "preview.mp4"
        assert (
            count_frames(insert) == plan["frames"]
            and count_frames(preview) == done["result"]["timeline"]["frames"]
        )
        frozen = grab(talk, round(plan["start"] * 24), 24.0)  # the local file's frame at the anchor
        assert psnr(grab(insert, 0, 24.0), frozen) > 35
        timeline = otio.adapters.read_from_file(str(out / "edit.otio"))
        urls = {c.media_reference.target_url for c in timeline.find_clips()}
        assert url in urls and all(u == url or u.startswith("file://") for u in urls), urls
        written = [p.read_bytes() for p in out.iterdir() if p.suffix in (".otio", ".edl", ".xml")]
        assert written and not any(b"X-Amz" in w or b"Signature" in w for w in written)
        assert "X-Amz" not in json.dumps(done)

        down = settings_for(tmp_path, upload_url=f"s3://{bucket}/in", s3_endpoint_url="http://127.0.0.1:9")
        r = client.post("/v1/edits", json={"video_id": vid, "operation": "freeze", "anchor": 2.0}, headers=H)
        run_jobs(down)
        failed = client.get(f"/v1/jobs/{r.json()['id']}", headers=H).json()
        assert failed["status"] == "failed" and "cannot be read at its URL" in failed["error"], failed
        assert "X-Amz" not in failed["error"]


def test_a_refused_upload_leaves_nothing_in_the_bucket(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    cfg = settings_for(
        tmp_path, upload_url=f"s3://{bucket}/in", s3_endpoint_url=s3.endpoint, upload_max_bytes=64 * 1024
    )
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    with _client(cfg) as client:
        client.post("/v1/libraries", json={"name": "main"}, headers=H)
        r = upload(client, "main", text, "video/mp4")
        assert r.status_code == 422 and error(r)["code"] == "bad_media", r.text
        assert "notes.mp4" in error(r)["message"] and "s3://" not in error(r)["message"]
        big = client.post(  # over the limit, without a Content-Length to refuse it up front
            "/v1/libraries/main/videos",
            params={"filename": "big.mp4"},
            content=iter([b"\0" * 32 * 1024] * 4),
            headers={**H, "Content-Type": "video/mp4"},
        )
        assert big.status_code == 413, big.text
        assert s3.keys(bucket) == [] and s3.pending_uploads(bucket) == []


def test_an_object_upload_is_multipart_and_an_aborted_one_leaves_no_part(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """12 MiB in 256 KiB writes: two parts of `PART_BYTES`, sent as they fill; the bytes come back
    whole. Discarded after its first part, an upload is aborted: no object, no pending upload."""
    cfg = settings_for(tmp_path, upload_url=f"s3://{bucket}/in", s3_endpoint_url=s3.endpoint)
    payload = os.urandom(12 << 20)
    storage = cfg.storage_options()

    async def send(target: str, data: bytes, finish: bool) -> ObjectUpload:
        out = ObjectUpload(media_source(target, storage))
        for i in range(0, len(data), 256 * 1024):
            out.write(data[i : i + 256 * 1024])
            await out.drain()
            assert len(out.pending) < PART_BYTES + 256 * 1024  # memory holds about a part
        if finish:
            await out.commit()
        return out

    asyncio.run(send(f"s3://{bucket}/in/whole.bin", payload, True))
    assert s3.get(bucket, "in/whole.bin") == payload
    assert s3.client.head_object(Bucket=bucket, Key="in/whole.bin")["ETag"].endswith('-2"')  # multipart

    half = asyncio.run(send(f"s3://{bucket}/in/half.bin", payload[: PART_BYTES + 1024], False))
    assert s3.pending_uploads(bucket) == ["in/half.bin"]  # its first part is in the store
    half.discard_now()
    assert s3.pending_uploads(bucket) == [] and s3.keys(bucket) == ["in/whole.bin"]


def test_imports_by_url_stay_inside_the_url_roots(
    s3: S3Server, bucket: str, talk: Path, tmp_path: Path
) -> None:
    cfg = settings_for(tmp_path, s3_endpoint_url=s3.endpoint, media_url_roots=[f"s3://{bucket}/library/"])
    s3.put(bucket, "library/talk.mp4", talk)
    s3.put(bucket, "private/talk.mp4", talk)
    inside = write_srt(cfg.media_roots[0] / "inside.srt", TALK)
    outside = write_srt(tmp_path / "outside.srt", TALK)
    with _client(cfg) as client:
        client.post("/v1/libraries", json={"name": "main"}, headers=H)
        for path, status in (
            (f"s3://{bucket}/private/talk.mp4", 403),
            (f"s3://{bucket}/library/../private/talk.mp4", 403),
            (f"s3://{bucket}/library/%2e%2e/private/talk.mp4", 403),
            (f"s3://{bucket}x/library/talk.mp4", 403),
            (f"gs://{bucket}/library/talk.mp4", 422),
            (f"s3://{bucket}/library/missing.mp4", 422),  # bad_media: no such object
            (outside.as_uri(), 403),
            ("file://otherhost/etc/passwd", 403),
        ):
            r = client.post("/v1/libraries/main/imports", json={"path": path}, headers=H)
            assert r.status_code == status, (path, r.text)
            assert "Traceback" not in error(r)["message"]
        assert (
            "no such object"
            in client.post(
                "/v1/libraries/main/imports", json={"path": f"s3://{bucket}/library/missing.mp4"}, headers=H
            ).json()["error"]["message"]
        )

        writer = client.post("/v1/keys", json={"name": "w", "library": "main", "role": "write"}, headers=H)
        W = {"Authorization": f"Bearer {writer.json()['key']}"}
        r = client.post(
            "/v1/libraries/main/imports", json={"path": f"s3://{bucket}/library/talk.mp4"}, headers=W
        )
        assert r.status_code == 403 and "admin" in error(r)["message"]

        assert (
            client.post("/v1/libraries/main/imports", json={"path": inside.as_uri()}, headers=H).status_code
            == 202
        )
        r = client.post(
            "/v1/libraries/main/imports", json={"path": f"s3://{bucket}/library/talk.mp4"}, headers=H
        )
        assert r.status_code == 202 and r.json()["title"] == "talk.mp4", r.text
        run_jobs(cfg)
        job = client.get(f"/v1/jobs/{r.json()['id']}", headers=H).json()
        assert job["status"] == "done", job
        part = client.get(f"/v1/videos/{job['video_id']}/media", headers={**H, "Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == talk.read_bytes()[:100]
        # an imported object is the library's source, not the service's copy: deleting the video keeps it
        assert client.delete(f"/v1/videos/{job['video_id']}", headers=H).status_code == 204
        assert "library/talk.mp4" in s3.keys(bucket)

    (tmp_path / "closed").mkdir()
    closed = settings_for(tmp_path / "closed", s3_endpoint_url=s3.endpoint)
    with _client(closed) as client:
        client.post("/v1/libraries", json={"name": "main"}, headers=H)
        r = client.post(
            "/v1/libraries/main/imports", json={"path": f"s3://{bucket}/library/talk.mp4"}, headers=H
        )
        assert r.status_code == 403 and "VIDMEM_MEDIA_URL_ROOTS" in error(r)["message"]
