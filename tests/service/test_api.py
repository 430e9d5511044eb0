"""The REST API through its ASGI app (fastapi's TestClient): real catalog (SQLite, and PostgreSQL where
it matters), real FAISS, real decoders and models; jobs run by the real worker code (`service.jobs.work`)
in this process. The worker processes, SIGKILL and the browser are in tests/service/test_live.py."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexers.vision import VisionOptions
from service import jobs
from service.app import create_app
from service.settings import Settings
from tests.helpers import ADMIN, OTHER, REPEATED, SAID_AGAIN, TALK, H, error, run_jobs, settings_for, upload
from tests.media import make_cut_clip, truncate_copy, write_srt


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return settings_for(tmp_path)


@pytest.fixture
def client(cfg: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as c:
        yield c


def test_health_and_readiness_are_open_everything_else_needs_a_key(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["status"] == "ready"
    for path in ("/v1/libraries", "/v1/jobs", "/v1/search?q=x", "/v1/me"):
        r = client.get(path)
        assert r.status_code == 401 and error(r)["code"] == "unauthorized"
        r = client.get(path, headers={"Authorization": "Bearer vm_not-a-key-at-all-000000"})
        assert r.status_code == 401
        r = client.get(path, headers={"X-API-Key": ADMIN})
        assert r.status_code == 200, r.text
    assert client.get("/openapi.json").json()["info"]["title"] == "vidmem"


def test_the_text_model_is_loaded_while_the_service_starts(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from memory.runtime import _LOADED

    svc = client.app.state.service  # type: ignore[attr-defined]
    assert svc.warming is not None
    svc.warming.join(120)  # no search was made
    assert svc._embedder is not None and f"text:{svc._embedder.name}" in _LOADED
    (tmp_path / "bad").mkdir()
    with TestClient(create_app(settings_for(tmp_path / "bad", text_model="no-such-model"))) as c:
        c.app.state.service.warming.join(120)  # type: ignore[attr-defined]
        assert "the text model did not load at start" in caplog.text and "no-such-model" in caplog.text
        assert c.get("/health").json() == {"status": "ok"}  # the service is up all the same


def test_upload_ingest_search_hierarchy_export_ask(client: TestClient, cfg: Settings, tmp_path: Path) -> None:
    assert client.post("/v1/libraries", json={"name": "talks"}, headers=H).status_code == 201
    srt = write_srt(tmp_path / "talk.srt", TALK)
    r = upload(client, "talks", srt, "application/x-subrip")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["title"] == "talk.srt"

    # a query before the job ran finds nothing, and fails nothing
    assert (
        client.get("/v1/search", params={"q": "giraffe", "library": "talks"}, headers=H).json()["moments"]
        == []
    )
    run_jobs(cfg)
    done = client.get(f"/v1/jobs/{job['id']}", headers=H).json()
    assert done["status"] == "done" and done["progress"] == 1.0 and done["video_id"]
    vid = done["video_id"]
    [video] = client.get("/v1/libraries/talks/videos", headers=H).json()
    assert video["id"] == vid and video["status"] == "ready" and video["duration"] == 24.0
    assert "uri" not in video

    hits = client.get(
        "/v1/search", params={"q": "giraffe oranges", "video": vid, "level": "cue"}, headers=H
    ).json()
    best = hits["moments"][0]
    assert (best["start"], best["end"], best["timestamp"]) == (12.0, 18.0, "00:00:12")
    assert best["link"] == f"/videos/{vid}?t=12.00"
    inside = client.get(
        "/v1/search", params={"q": "bread", "video": vid, "level": "cue", "from": 0, "to": 11}, headers=H
    ).json()["moments"]
    assert inside and all(m["start"] < 11 for m in inside)
    refined = client.get("/v1/search", params={"q": "brass telescope", "refine": True}, headers=H).json()
    assert refined["moments"][0]["start"] >= 17.9

    tree = client.get(f"/v1/videos/{vid}/hierarchy", headers=H).json()
    assert tree["format"] == "vidmem.timeline/1" and "uri" not in tree["video"]
    said = [c["text"] for ch in tree["chapters"] for sc in ch["scenes"] for c in sc["transcript"]]
    assert said == [t for _, _, t in TALK]
    vtt = client.get(f"/v1/videos/{vid}/export", params={"format": "vtt"}, headers=H)
    assert vtt.headers["content-type"].startswith("text/vtt") and vtt.text.startswith("WEBVTT")
    assert "attachment" in vtt.headers["content-disposition"]

    answer = client.post("/v1/ask", json={"question": "What does the giraffe eat?", "video": vid}, headers=H)
    body = answer.json()
    assert answer.status_code == 200 and body["engine"] == "extractive"
    assert [(c["start"], c["end"]) for c in body["citations"]] == [(12.0, 18.0)]
    assert body["citations"][0]["link"] == f"/videos/{vid}?t=12.00"
    assert body["exit"]["reason"] in ("gate", "all read") and body["exit"]["after"] == len(body["read"])
    assert body["tokens"] == sum(r["tokens"] for r in body["read"]) > 0
    assert body["read"][-1]["role"] == "span" and 0 <= body["read"][-1]["stop"] <= 1
    every = client.post(
        "/v1/ask",
        json={"question": "What does the giraffe eat?", "video": vid, "exit_gate": False},
        headers=H,
    ).json()
    assert every["exit"]["reason"] == "off" and "stop" not in every["read"][0]
    assert every["exit"]["after"] == every["exit"]["of"] >= body["exit"]["after"]
    for whole, why in (({"mode": "whole"}, "give `video`"), ({"mode": "whole", "video": vid}, "LLM engine")):
        refused = client.post("/v1/ask", json={"question": "How does the talk go?", **whole}, headers=H)
        assert refused.status_code == 422 and why in refused.json()["error"]["message"], refused.text


def _without_slot_ids(stats: dict) -> dict:
    """Stats as they compare across a regate (which numbers the slots anew)."""
    return {**stats, "largest": [{k: v for k, v in sl.items() if k != "slot"} for sl in stats["largest"]]}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_library_s_memory_its_decisions_the_other_times_a_line_was_said_and_regate(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    cfg = settings_for(tmp_path, database_url=url) if url else settings_for(tmp_path)
    with TestClient(create_app(cfg)) as client:
        for name in ("pottery", "else"):
            assert client.post("/v1/libraries", json={"name": name}, headers=H).status_code == 201
        r = upload(client, "pottery", write_srt(tmp_path / "pottery.srt", REPEATED), "application/x-subrip")
        run_jobs(cfg)
        vid = client.get(f"/v1/jobs/{r.json()['id']}", headers=H).json()["video_id"]

        # the numbers: the line said again is one fold, the one row the indexes do not hold
        stats = client.get("/v1/libraries/pottery/memory", headers=H).json()
        assert stats["actions"]["cue"] == {"write": 4, "fold": 1, "skip": 0}
        assert stats["actions"]["window"]["fold"] == 0
        units = stats["units"]
        assert units == sum(sum(a.values()) for a in stats["actions"].values()) and units >= 5
        assert stats["slots"] == {"live": units - 1, "merged": 0, "nested": 0, "evicted": 0}
        assert stats["budget"] >= units - 1
        rows = stats["rows"]
        assert rows["retained"] == rows["gated"] - 1 and rows["retention"] == round(
            rows["retained"] / rows["gated"], 4
        )
        top = stats["largest"][0]
        assert (top["kind"], top["state"], top["video_id"], top["start"], top["end"], top["timestamp"]) == (
            "cue",
            "live",
            vid,
            2.0,
            6.0,
            "00:00:02",
        )
        assert top["occurrences"] == 2 and all(sl["occurrences"] == 1 for sl in stats["largest"][1:])

        # the decisions, in time order: the first time wrote the slot, the second folded into it
        decisions = client.get(f"/v1/videos/{vid}/memory", headers=H).json()
        assert len(decisions) == units and [d["start"] for d in decisions] == sorted(
            d["start"] for d in decisions
        )
        [fold] = [d for d in decisions if d["action"] == "fold"]
        assert (fold["kind"], fold["start"], fold["end"], fold["timestamp"]) == (
            "cue",
            50.0,
            54.0,
            "00:00:50",
        )
        assert fold["similarity"] > 0.99
        assert fold["slot"] == {
            "id": top["slot"],
            "state": "live",
            "video_id": vid,
            "start": 2.0,
            "timestamp": "00:00:02",
            "exemplar": False,
            "into": None,
        }
        [first] = [d for d in decisions if d["kind"] == "cue" and d["start"] == 2.0]
        assert first["action"] == "write" and first["slot"]["id"] == top["slot"] and first["slot"]["exemplar"]
        assert all(d["slot"]["exemplar"] for d in decisions if d["action"] == "write")

        # search: one slot, two places, each citing the other with its deep link
        hits = client.get(
            "/v1/search", params={"q": SAID_AGAIN, "video": vid, "level": "cue", "top": 2}, headers=H
        ).json()["moments"]
        assert sorted((m["start"], m["also"]) for m in hits) == [
            (2.0, [{"video_id": vid, "start": 50.0, "end": 54.0, "timestamp": "00:00:50", "link": f"/videos/{vid}?t=50.00"}]),
            (50.0, [{"video_id": vid, "start": 2.0, "end": 6.0, "timestamp": "00:00:02", "link": f"/videos/{vid}?t=2.00"}]),
        ]  # fmt: skip
        # refined, a span inside the line said again keeps its other place; one wider keeps none
        refined = client.get(
            "/v1/search", params={"q": SAID_AGAIN, "video": vid, "refine": True}, headers=H
        ).json()
        spans = {(m["start"], m["end"]): [o["start"] for o in m["also"]] for m in refined["moments"]}
        assert spans.get((50.0, 54.0)) == [2.0], spans
        assert all(also == [] for (a, b), also in spans.items() if b - a > 6.0), spans

        # a key of the library reads its memory; a key of another library finds nothing
        keys = {}
        for name, library, role in (
            ("reader", "pottery", "read"),
            ("writer", "pottery", "write"),
            ("other", "else", "write"),
        ):
            made = client.post("/v1/keys", json={"name": name, "library": library, "role": role}, headers=H)
            keys[name] = {"Authorization": f"Bearer {made.json()['key']}"}
        assert client.get("/v1/libraries/pottery/memory", headers=keys["reader"]).json() == stats
        assert client.get(f"/v1/videos/{vid}/memory", headers=keys["reader"]).json() == decisions
        for path in ("/v1/libraries/pottery/memory", f"/v1/videos/{vid}/memory"):
            assert client.get(path, headers=keys["other"]).status_code == 404, path
        assert client.get("/v1/libraries/nowhere/memory", headers=H).status_code == 404
        assert client.get("/v1/videos/nowhere/memory", headers=H).status_code == 404

        # regate: not with a read key (nor another library's), queued as a job with a write key
        r = client.post("/v1/libraries/pottery/memory/regate", headers=keys["reader"])
        assert r.status_code == 403 and error(r)["code"] == "forbidden"
        assert client.post("/v1/libraries/pottery/memory/regate", headers=keys["other"]).status_code == 404
        r = client.post("/v1/libraries/pottery/memory/regate", headers=keys["writer"])
        assert r.status_code == 202, r.text
        job = r.json()
        assert (job["kind"], job["status"], job["library"], job["video_id"]) == (
            "regate",
            "queued",
            "pottery",
            None,
        )
        again = client.post("/v1/libraries/pottery/memory/regate", headers=H)  # still queued: the same job
        assert again.status_code == 202 and again.json()["id"] == job["id"]
        run_jobs(cfg)
        done = client.get(f"/v1/jobs/{job['id']}", headers=keys["reader"]).json()
        assert (done["status"], done["progress"], done["error"], done["video_id"]) == (
            "done",
            1.0,
            None,
            None,
        )
        # the same settings gate the same way: the same memory, its slots numbered anew
        after = client.get("/v1/libraries/pottery/memory", headers=H).json()
        assert _without_slot_ids(after) == _without_slot_ids(stats)
        assert [d["action"] for d in client.get(f"/v1/videos/{vid}/memory", headers=H).json()] == [
            d["action"] for d in decisions
        ]
        hits = client.get(
            "/v1/search", params={"q": SAID_AGAIN, "library": "pottery", "level": "cue"}, headers=H
        )
        assert sorted((m["start"], [o["start"] for o in m["also"]]) for m in hits.json()["moments"][:2]) == [
            (2.0, [50.0]),
            (50.0, [2.0]),
        ]
        assert {j["kind"] for j in client.get("/v1/jobs", headers=H).json()} == {"ingest", "regate"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cut_clip(tmp_path_factory.mktemp("clip"), cut_frames=(48, 120), total_frames=180).path


def test_media_is_served_with_byte_ranges_and_keyframe_thumbnails(
    client: TestClient, cfg: Settings, clip: Path
) -> None:
    shutil.copy(clip, cfg.media_roots[0] / "cuts.mp4")
    client.post("/v1/libraries", json={"name": "clips"}, headers=H)
    r = client.post("/v1/libraries/clips/imports", json={"path": "cuts.mp4"}, headers=H)
    assert r.status_code == 202, r.text
    run_jobs(cfg)
    vid = client.get(f"/v1/jobs/{r.json()['id']}", headers=H).json()["video_id"]
    data = clip.read_bytes()

    whole = client.get(f"/v1/videos/{vid}/media", headers=H)
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    part = client.get(f"/v1/videos/{vid}/media", headers={**H, "Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    tail = client.get(f"/v1/videos/{vid}/media", headers={**H, "Range": "bytes=-64"})
    assert tail.status_code == 206 and tail.content == data[-64:]
    bad = client.get(f"/v1/videos/{vid}/media", headers={**H, "Range": f"bytes={len(data) + 10}-"})
    assert bad.status_code == 416

    timeline = client.get(f"/v1/videos/{vid}/timeline", headers=H).json()
    assert [round(s["start"], 2) for s in timeline["shots"]] == [0.0, 2.0, 5.0]  # cuts at frames 48, 120
    thumb = client.get(f"/v1/videos/{vid}/thumbnail", params={"t": 3.0, "width": 160}, headers=H)
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"  # a JPEG
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(thumb.content)).size == (160, 90)
    again = client.get(f"/v1/videos/{vid}/thumbnail", params={"t": 3.0, "width": 160}, headers=H)
    assert again.content == thumb.content and any((cfg.home / "thumbs" / vid).iterdir())


def test_a_library_key_never_reads_another_library(client: TestClient, cfg: Settings, tmp_path: Path) -> None:
    for name, cues in (("alpha", TALK), ("beta", OTHER)):
        client.post("/v1/libraries", json={"name": name}, headers=H)
        assert upload(client, name, write_srt(tmp_path / f"{name}.srt", cues)).status_code == 202
    run_jobs(cfg)
    key = client.post("/v1/keys", json={"name": "editor", "library": "alpha"}, headers=H).json()["key"]
    K = {"Authorization": f"Bearer {key}"}
    beta_video = client.get("/v1/libraries/beta/videos", headers=H).json()[0]["id"]

    assert [lib["name"] for lib in client.get("/v1/libraries", headers=K).json()] == ["alpha"]
    assert client.get("/v1/libraries/beta/videos", headers=K).status_code == 404
    for path in (
        f"/v1/videos/{beta_video}",
        f"/v1/videos/{beta_video}/media",
        f"/v1/videos/{beta_video}/hierarchy",
    ):
        assert client.get(path, headers=K).status_code == 404, path
    assert client.delete(f"/v1/videos/{beta_video}", headers=K).status_code == 404
    assert client.get("/v1/search", params={"q": "seagull", "library": "beta"}, headers=K).status_code == 404
    assert (
        client.get("/v1/search", params={"q": "seagull", "video": beta_video}, headers=K).status_code == 404
    )
    # no library named: the key's own, so the seagull in beta is not found
    own = client.get("/v1/search", params={"q": "seagull sandwich"}, headers=K).json()
    assert own["library"] == "alpha" and all(m["video_id"] != beta_video for m in own["moments"])
    asked = client.post("/v1/ask", json={"question": "what did the seagull steal?"}, headers=K).json()
    assert all(c["video_id"] != beta_video for c in asked["citations"])
    assert {j["library"] for j in client.get("/v1/jobs", headers=K).json()} == {"alpha"}
    assert client.post("/v1/libraries", json={"name": "gamma"}, headers=K).status_code == 403
    assert client.get("/v1/keys", headers=K).status_code == 403
    assert upload(client, "beta", write_srt(tmp_path / "x.srt", OTHER), key=key).status_code == 404

    # keys are stored hashed: the secret is nowhere in the catalog
    con = sqlite3.connect(cfg.home / "vidmem.db")
    stored = con.execute("SELECT digest, prefix FROM api_keys").fetchall()
    con.close()
    assert stored and all(key not in d and ADMIN not in d for d, _ in stored)
    key_id = next(k["id"] for k in client.get("/v1/keys", headers=H).json() if k["name"] == "editor")
    assert client.delete(f"/v1/keys/{key_id}", headers=H).status_code == 204
    assert client.get("/v1/libraries", headers=K).status_code == 401


def test_bad_uploads_get_clear_errors_and_leave_nothing(
    client: TestClient, cfg: Settings, tmp_path: Path, clip: Path
) -> None:
    client.post("/v1/libraries", json={"name": "main"}, headers=H)
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video, only text pretending " * 50)
    r = upload(client, "main", junk, "video/mp4")
    assert r.status_code == 422 and error(r)["code"] == "bad_media" and str(tmp_path) not in r.text

    # cut short: its header (moov first) still probes, so it is queued; ingestion finds the damage,
    # the job fails with the reason, and neither the video nor the uploaded copy stays
    cut = truncate_copy(clip, tmp_path / "cut.mp4", keep_fraction=0.4)
    r = upload(client, "main", cut, "video/mp4")
    assert r.status_code == 202, r.text
    run_jobs(cfg)
    failed = client.get(f"/v1/jobs/{r.json()['id']}", headers=H).json()
    assert failed["status"] == "failed" and "cut.mp4" in failed["error"], failed
    assert str(cfg.home) not in failed["error"]

    hostile = tmp_path / "passwd"
    hostile.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    r = client.post(
        "/v1/libraries/main/videos",
        params={"filename": "../../etc/passwd"},
        content=hostile.read_bytes(),
        headers={**H, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 422
    r = upload(client, "main", junk, "text/html")
    assert r.status_code == 415 and error(r)["code"] == "unsupported_media_type"
    r = client.post("/v1/libraries/main/videos", params={"filename": "e.mp4"}, content=b"", headers=H)
    assert r.status_code == 422
    r = client.post("/v1/libraries/nowhere/videos", params={"filename": "a.mp4"}, content=b"x", headers=H)
    assert r.status_code == 404

    assert not list(cfg.uploads_dir.iterdir())  # every refused or failed upload was removed
    assert [j["status"] for j in client.get("/v1/jobs", headers=H).json()] == ["failed"]
    assert client.get("/v1/libraries/main/videos", headers=H).json() == []


def test_uploads_over_the_size_limit_are_cut_off(tmp_path: Path, clip: Path) -> None:
    cfg = settings_for(tmp_path, upload_max_bytes=10_000)
    with TestClient(create_app(cfg)) as client:
        client.post("/v1/libraries", json={"name": "main"}, headers=H)
        big = clip.read_bytes()
        assert len(big) > 10_000
        r = upload(client, "main", clip, "video/mp4")  # declared length over the limit: refused at once
        assert r.status_code == 413 and error(r)["code"] == "too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
            for i in range(0, len(big), 4096):
                yield big[i : i + 4096]

        r = client.post(
            "/v1/libraries/main/videos",
            params={"filename": "big.mp4"},
            content=chunks(),
            headers={**H, "Content-Type": "video/mp4"},
        )
        assert r.status_code == 413
        assert not list(cfg.uploads_dir.iterdir())


def test_server_side_paths_stay_inside_the_media_roots(
    client: TestClient, cfg: Settings, tmp_path: Path
) -> None:
    client.post("/v1/libraries", json={"name": "main"}, headers=H)
    root = cfg.media_roots[0]
    outside = write_srt(tmp_path / "outside.srt", TALK)
    os.symlink(outside, root / "link.srt")
    (root / "sub").mkdir()
    for path, status in (
        ("../outside.srt", 403),
        ("sub/../../outside.srt", 403),
        (str(outside), 403),
        ("link.srt", 403),  # a symlink leading out
        ("/etc/passwd", 403),
        ("missing.srt", 404),
        ("sub", 404),
    ):
        r = client.post("/v1/libraries/main/imports", json={"path": path}, headers=H)
        assert r.status_code == status, (path, r.text)
        error(r)
    write_srt(root / "sub" / "ok.srt", TALK)
    assert (
        client.post("/v1/libraries/main/imports", json={"path": "sub/ok.srt"}, headers=H).status_code == 202
    )


def test_no_media_roots_means_no_server_side_paths(tmp_path: Path) -> None:
    cfg = settings_for(tmp_path, media_roots=[])
    with TestClient(create_app(cfg)) as client:
        client.post("/v1/libraries", json={"name": "main"}, headers=H)
        r = client.post("/v1/libraries/main/imports", json={"path": "/etc/hostname"}, headers=H)
        assert r.status_code == 403 and "VIDMEM_MEDIA_ROOTS" in error(r)["message"]


def test_errors_have_one_shape(client: TestClient) -> None:
    cases = [
        (client.get("/v1/nothing-here", headers=H), 404, "not_found"),
        (client.put("/v1/libraries", headers=H), 405, "method_not_allowed"),
        (client.get("/v1/search", params={"q": "x", "top": 0}, headers=H), 422, "invalid_request"),
        (client.get("/v1/search", params={"q": "x" * 1001}, headers=H), 422, "invalid_request"),
        (client.get("/v1/search", params={"q": "x", "top": 101}, headers=H), 422, "invalid_request"),
        (client.get("/v1/search", params={"q": "   "}, headers=H), 422, "invalid_request"),
        (client.get("/v1/search", params={"q": "x", "library": "none"}, headers=H), 404, "not_found"),
        (client.get("/v1/videos/abc", headers=H), 404, "not_found"),
        (client.get("/v1/jobs/abc", headers=H), 404, "not_found"),
        (client.post("/v1/libraries", json={"name": "../x"}, headers=H), 422, "invalid_request"),
        (
            client.post(
                "/v1/libraries", content=b"{not json", headers={**H, "Content-Type": "application/json"}
            ),
            422,
            "invalid_request",
        ),
        (client.post("/v1/ask", json={"question": ""}, headers=H), 422, "invalid_request"),
    ]
    for r, status, code in cases:
        assert r.status_code == status, (r.request.url, r.text)
        assert error(r)["code"] == code
    client.post("/v1/libraries", json={"name": "dup"}, headers=H)
    r = client.post("/v1/libraries", json={"name": "dup"}, headers=H)
    assert r.status_code == 409 and error(r)["code"] == "conflict"


def test_deleting_a_video_removes_it_and_nothing_else(
    client: TestClient, cfg: Settings, tmp_path: Path
) -> None:
    client.post("/v1/libraries", json={"name": "main"}, headers=H)
    upload(client, "main", write_srt(tmp_path / "a.srt", TALK))
    upload(client, "main", write_srt(tmp_path / "b.srt", OTHER))
    run_jobs(cfg)
    videos = {v["title"]: v["id"] for v in client.get("/v1/libraries/main/videos", headers=H).json()}
    uploads_before = sorted(p.name for p in cfg.uploads_dir.iterdir())
    assert len(uploads_before) == 2
    assert client.delete(f"/v1/videos/{videos['a.srt']}", headers=H).status_code == 204
    assert client.get(f"/v1/videos/{videos['a.srt']}", headers=H).status_code == 404
    assert len(list(cfg.uploads_dir.iterdir())) == 1
    found = client.get("/v1/search", params={"q": "giraffe seagull", "library": "main"}, headers=H).json()[
        "moments"
    ]
    assert found and {m["video_id"] for m in found} == {videos["b.srt"]}
    con = sqlite3.connect(cfg.home / "vidmem.db")
    owners = {r[0] for r in con.execute("SELECT DISTINCT video_id FROM embeddings")}
    con.close()
    assert owners == {videos["b.srt"]}


def test_admin_key_is_made_into_a_file_only_its_owner_reads_and_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import stat

    cfg = settings_for(tmp_path, api_key=None)
    with TestClient(create_app(cfg)) as client:
        path = cfg.home / "admin.key"
        key = path.read_text().strip()
        assert key.startswith("vm_") and stat.S_IMODE(path.stat().st_mode) == 0o600
        printed = capsys.readouterr().err
        assert str(path) in printed and key not in printed and key[3:12] not in printed
        assert key not in caplog.text
        assert client.get("/v1/libraries").status_code == 401  # never open
        assert client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).json()["admin"] is True
    with TestClient(create_app(cfg)):
        assert "admin.key" not in capsys.readouterr().err  # the catalog has an admin key: nothing new
    assert path.read_text().strip() == key


def test_session_cookie_lets_the_page_stream_media(client: TestClient) -> None:
    assert client.post("/v1/session", json={"key": "wrong-key-0000000000"}).status_code == 401
    r = client.post("/v1/session", json={"key": ADMIN})
    assert r.status_code == 200 and "httponly" in r.headers["set-cookie"].lower()
    assert client.get("/v1/libraries").status_code == 200  # the cookie authenticates
    assert client.delete("/v1/session").status_code == 204
    assert client.get("/v1/libraries").status_code == 401


def test_settings_come_from_flags_then_env_then_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "vidmem.toml"
    config.write_text('port = 9100\nworkers = 3\nlibrary = "from-file"\nmedia_roots = ["/srv/media"]\n')
    monkeypatch.setenv("VIDMEM_CONFIG", str(config))
    monkeypatch.setenv("VIDMEM_WORKERS", "2")
    cfg = Settings(library="from-flag")  # type: ignore[call-arg]
    assert (cfg.port, cfg.workers, cfg.library, cfg.media_roots) == (
        9100,
        2,
        "from-flag",
        [Path("/srv/media")],
    )
    monkeypatch.setenv("VIDMEM_VISION_PEOPLE", "false")
    monkeypatch.setenv("VIDMEM_VISION_TEXT_FRAMES", "2")
    look = Settings().ingest_options().look  # type: ignore[call-arg]
    assert look is not None and look.vision == VisionOptions(people=False, text_frames=2)
    assert (look.fps, look.max_frames) == (1.0, 16)
    monkeypatch.setenv("VIDMEM_VISION_FPS", "4")
    look = Settings().ingest_options().look  # type: ignore[call-arg]
    assert look is not None and (look.fps, look.max_frames) == (4.0, 64)
    assert Settings().memory_options().vision_fps == 4.0  # type: ignore[call-arg]  # its fold threshold
    monkeypatch.setenv("VIDMEM_VISION_FPS", "5")  # more than the decoding pass keeps
    with pytest.raises(ValueError, match="vision_fps"):
        Settings()  # type: ignore[call-arg]
    monkeypatch.delenv("VIDMEM_VISION_FPS")
    monkeypatch.setenv("VIDMEM_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match="VIDMEM_CONFIG"):
        Settings()  # type: ignore[call-arg]


def test_the_job_queue_hands_each_job_to_one_worker_and_takes_over_dead_ones(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import update

    from memory import Job

    with store.session() as s:
        store.library(s, "main")
    first = jobs.enqueue(store, "main", tmp_path / "a.srt", "a.srt", upload=False).id
    second = jobs.enqueue(store, "main", tmp_path / "b.srt", "b.srt", upload=False).id
    me = jobs.owner_name()
    assert jobs.claim(store, me, stale_after=30) == first  # oldest first
    assert jobs.claim(store, "other-host:1", stale_after=30) == second
    assert jobs.claim(store, "third-host:1", stale_after=30) is None  # nothing left to claim

    # a worker process of this host that is gone: its job goes back to the queue at once
    with store.session() as s:
        s.execute(update(Job).where(Job.id == first).values(owner=f"{jobs.HOST}:999999999"))
    assert jobs.claim(store, "third-host:1", stale_after=30) == first
    # another host's worker is judged by its heartbeat only
    assert jobs.claim(store, me, stale_after=30) is None
    with store.session() as s:
        s.execute(update(Job).where(Job.id == second).values(heartbeat=0.0))
    assert jobs.claim(store, me, stale_after=30) == second
    job, _ = jobs.get_job(store, second)
    assert (job.status, job.owner, job.attempts) == ("running", me, 2)


def test_the_api_on_a_postgresql_catalog(tmp_path: Path, postgres_url: str) -> None:
    cfg = settings_for(tmp_path, database_url=postgres_url)
    with TestClient(create_app(cfg)) as client:
        client.post("/v1/libraries", json={"name": "main"}, headers=H)
        r = upload(client, "main", write_srt(tmp_path / "talk.srt", TALK))
        assert r.status_code == 202
        run_jobs(cfg)
        assert client.get(f"/v1/jobs/{r.json()['id']}", headers=H).json()["status"] == "done"
        hits = client.get("/v1/search", params={"q": "giraffe oranges", "level": "cue"}, headers=H).json()
        assert hits["moments"][0]["start"] == 12.0
        key = client.post("/v1/keys", json={"name": "ed", "library": "main"}, headers=H).json()["key"]
        assert client.get("/v1/libraries", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_an_internal_failure_is_a_500_with_a_reference_and_no_traceback(
    cfg: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from service import app as app_module

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire at /srv/secret/path")

    with TestClient(create_app(cfg), raise_server_exceptions=False) as client:
        monkeypatch.setattr(app_module.auth, "authenticate", broken)
        r = client.get("/v1/libraries", headers=H)
        body = error(r)
        assert r.status_code == 500 and body["code"] == "internal"
        assert "secret" not in r.text and "RuntimeError" not in r.text and "ref " in body["message"]
        ref = body["message"].split("ref ")[1].split(")")[0]
        logged = [rec for rec in caplog.records if rec.levelname == "ERROR"]
        assert any(ref in rec.getMessage() for rec in logged)  # the server log has it, under that ref
        assert client.get("/health").status_code == 200  # and the service is still up
    caplog.clear()


def test_keys_from_the_command_line(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from service.cli import app as cli

    run = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    made = run.invoke(cli, ["keys", "create", "ops", *home])
    assert made.exit_code == 0, made.output
    secret = made.output.strip()
    assert secret.startswith("vm_") and len(secret) > 40
    unknown = run.invoke(cli, ["keys", "create", "ed", "--library", "nowhere", *home])
    assert unknown.exit_code == 1 and "no library named 'nowhere'" in unknown.output
    listed = json.loads(run.invoke(cli, ["keys", "list", "--json", *home]).output)
    assert [(k["name"], k["prefix"], k["library"]) for k in listed] == [("ops", secret[:8], None)]
    assert secret not in json.dumps(listed)
    assert run.invoke(cli, ["keys", "revoke", str(listed[0]["id"]), *home]).exit_code == 0
    cfg = settings_for(tmp_path, api_key=None)
    with TestClient(create_app(cfg)) as client:
        assert client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_vidmem_ask_answers_with_nothing_running(tmp_path: Path) -> None:
    """The embedded default (`auto` with no server configured) is the extractive engine: it needs
    no model server and cites the moment."""
    from tests.helpers import cli, cli_json

    home = tmp_path / "home"
    cli(home, "ingest", write_srt(tmp_path / "talk.srt", TALK), "--library", "talks")
    answer = cli_json(home, "ask", "What does the purple giraffe eat?", "--library", "talks")
    assert set(answer) >= {"answer", "citations", "engine"} and answer["engine"] == "extractive"
    assert [(c["start"], c["end"], c["timestamp"]) for c in answer["citations"]] == [(12.0, 18.0, "00:00:12")]
