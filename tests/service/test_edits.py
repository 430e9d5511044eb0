"""Generation requests through the service: `POST /v1/edits` checks a request before any job exists,
the real worker code renders it (ffmpeg backend), the job's files are served (byte ranges for the
preview), a queued or running job can be cancelled and retried, and a worker killed with SIGKILL
mid-render has its job taken over and finished. Real catalog, real ASGI app, real ingestion of real
footage (24 s of Big Buck Bunny), real worker processes for the kill; the CLI through its console script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reasoning.generate.media import count_frames
from service import jobs
from service.app import create_app
from service.settings import Settings
from tests.helpers import H, cli, error, run_jobs, settings_for
from tests.media import bbb_excerpt


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp("edits")
    cfg = settings_for(tmp)
    bbb_excerpt(cfg.media_roots[0] / "bunny.mp4", 16, 320, 180)
    return cfg


@pytest.fixture(scope="module")
def client(cfg: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as c:
        assert c.post("/v1/libraries", json={"name": "cuts"}, headers=H).status_code == 201
        r = c.post(
            "/v1/libraries/cuts/imports", json={"path": str(cfg.media_roots[0] / "bunny.mp4")}, headers=H
        )
        assert r.status_code == 202, r.text
        run_jobs(cfg)
        assert c.get(f"/v1/jobs/{r.json()['id']}", headers=H).json()["status"] == "done"
        yield c


def video_id(client: TestClient) -> str:
    return client.get("/v1/libraries/cuts/videos", headers=H).json()[0]["id"]


def count_jobs(client: TestClient) -> int:
    return len(client.get("/v1/jobs", headers=H).json())


def test_a_request_is_checked_before_a_job_exists(client: TestClient) -> None:
    vid = video_id(client)
    before = count_jobs(client)
    for body, status, says in (
        ({"operation": "freeze", "anchor": 40.0}, 422, "past its end"),
        (
            {"operation": "generate", "anchor": 2.0, "prompt": "a rabbit"},
            422,
            "backends that can: diffusers, http",
        ),
        ({"operation": "freeze", "anchor": 2.0, "backend": "nope"}, 422, "unknown generation backend"),
        ({"operation": "slowmo", "anchor": 2.0}, 422, "[start, end]"),
        ({"operation": "freeze", "anchor": 2.0, "duration": 0}, 422, "duration"),
    ):
        r = client.post("/v1/edits", json={"video_id": vid, **body}, headers=H)
        assert r.status_code == status, r.text
        assert says in error(r)["message"], r.text
    r = client.post(
        "/v1/edits", json={"video_id": "missing", "operation": "freeze", "anchor": 1.0}, headers=H
    )
    assert r.status_code == 404
    assert count_jobs(client) == before


def test_an_edit_renders_and_its_files_are_served(client: TestClient, cfg: Settings) -> None:
    vid = video_id(client)
    r = client.post(
        "/v1/edits",
        json={"video_id": vid, "operation": "title", "anchor": 4.1, "text": "Part two"},
        headers=H,
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "generate" and job["status"] == "queued" and job["request"]["text"] == "Part two"
    run_jobs(cfg)
    done = client.get(f"/v1/jobs/{job['id']}", headers=H).json()
    assert done["status"] == "done", done
    result = done["result"]
    assert result["artifact"]["backend"] == "ffmpeg" and result["plan"]["frames"] == 48  # 2 s at 24 fps
    assert result["timeline"]["frames"] == 16 * 24 + 48
    preview = client.get(f"/v1/jobs/{job['id']}/files/preview.mp4", headers={**H, "Range": "bytes=0-99"})
    assert preview.status_code == 206 and len(preview.content) == 100
    full = client.get(f"/v1/jobs/{job['id']}/files/preview.mp4", headers=H)
    path = cfg.edits_dir / job["id"] / "preview.mp4"
    assert full.content == path.read_bytes() and count_frames(path) == result["timeline"]["frames"]
    edl = client.get(f"/v1/jobs/{job['id']}/files/edit.edl", headers=H)
    assert edl.status_code == 200 and "FROM CLIP NAME:  title" in edl.text
    otio = client.get(f"/v1/jobs/{job['id']}/files/edit.otio", headers=H).json()
    assert otio["OTIO_SCHEMA"].startswith("Timeline")
    assert client.get(f"/v1/jobs/{job['id']}/files/secret.txt", headers=H).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/files/..%2Fhome.db", headers=H).status_code == 404


def test_cancel_and_retry(client: TestClient, cfg: Settings) -> None:
    vid = video_id(client)
    body = {"video_id": vid, "operation": "freeze", "anchor": 3.0, "duration": 0.5}
    job = client.post("/v1/edits", json=body, headers=H).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=H)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    run_jobs(cfg)  # nothing to claim
    assert client.get(f"/v1/jobs/{job['id']}", headers=H).json()["status"] == "cancelled"
    assert not (cfg.edits_dir / job["id"]).exists()
    r = client.post(f"/v1/jobs/{job['id']}/retry", headers=H)
    assert r.status_code == 200 and r.json()["status"] == "queued"
    run_jobs(cfg)
    assert client.get(f"/v1/jobs/{job['id']}", headers=H).json()["status"] == "done"
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=H)
    assert r.status_code == 409 and "only a queued job" in error(r)["message"]
    r = client.post(f"/v1/jobs/{job['id']}/retry", headers=H)
    assert r.status_code == 409


def _worker(cfg: Settings) -> subprocess.Popen[bytes]:
    env = dict(os.environ, VIDMEM_WORKER_SETTINGS=cfg.model_dump_json())
    return subprocess.Popen([sys.executable, "-m", "service.jobs"], env=env)


def _wait(client: TestClient, job_id: str, ok, seconds: float = 240):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=H).json()
        if ok(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never got there: {job}")


def test_a_running_render_is_cancelled_and_a_killed_one_taken_over(client: TestClient, cfg: Settings) -> None:
    """Slow motion over 8 s (motion interpolation: seconds of work) in a real worker process."""
    vid = video_id(client)
    body = {"video_id": vid, "operation": "slowmo", "anchor": [2.0, 10.0], "speed": 0.25}
    job = client.post("/v1/edits", json=body, headers=H).json()
    worker = _worker(cfg)
    try:
        _wait(client, job["id"], lambda j: j["status"] == "running" and 0 < j["progress"] < 0.5)
        worker.send_signal(signal.SIGKILL)  # as a crash: no cleanup, the job left running
        worker.wait()
        assert client.get(f"/v1/jobs/{job['id']}", headers=H).json()["status"] == "running"
        worker = _worker(cfg)  # takes the dead worker's job over and renders it from the start
        done = _wait(client, job["id"], lambda j: j["status"] in ("done", "failed"))
        assert done["status"] == "done" and done["attempts"] == 2, done
        insert = cfg.edits_dir / job["id"] / "insert.mp4"
        assert count_frames(insert) == done["result"]["plan"]["frames"] == round(8 * 24 / 0.25)
        # cancelled while it renders: the worker stops and removes what it wrote
        again = client.post("/v1/edits", json=body, headers=H).json()
        _wait(client, again["id"], lambda j: j["status"] == "running" and j["progress"] > 0)
        assert client.post(f"/v1/jobs/{again['id']}/cancel", headers=H).json()["status"] == "cancelled"
        deadline = time.monotonic() + 60
        while (cfg.edits_dir / again["id"]).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (cfg.edits_dir / again["id"]).exists()
        assert client.get(f"/v1/jobs/{again['id']}", headers=H).json()["status"] == "cancelled"
    finally:
        worker.kill()
        worker.wait()


def test_the_cli_renders_here_queues_and_refuses(client: TestClient, cfg: Settings, tmp_path: Path) -> None:
    vid = video_id(client)
    home = cfg.home
    refused = cli(home, "edit", vid, "generate", "--at", "2", "--prompt", "a rabbit", ok=False)
    assert refused.returncode == 2 and "backends that can: diffusers, http" in refused.stderr
    wrong = cli(home, "edit", vid, "slowmo", "--at", "2", ok=False)
    assert wrong.returncode == 2 and "[start, end]" in wrong.stderr
    out = tmp_path / "cut"
    made = cli(home, "edit", vid, "trim", "--span", "00:00:02", "4.5", "--json", "--out", out)
    result = json.loads(made.stdout)
    assert result["timeline"]["frames"] == count_frames(out / "preview.mp4") < 16 * 24
    assert sorted(p.name for p in out.iterdir()) == ["edit.edl", "edit.otio", "edit.xml", "preview.mp4"]
    queued = json.loads(cli(home, "edit", vid, "freeze", "--at", "3", "--queue", "--json").stdout)
    assert queued[0]["status"] == "queued" and queued[0]["kind"] == "generate"
    listed = json.loads(cli(home, "jobs", "list", "--status", "queued", "--json").stdout)
    assert [j["id"] for j in listed] == [queued[0]["id"]]
    cli(home, "jobs", "cancel", queued[0]["id"])
    assert jobs.get_job(client.app.state.service.store, queued[0]["id"])[0].status == "cancelled"  # type: ignore[attr-defined]


# --- agents: the same tools over REST, LangChain and MCP --------------------------------------------


def test_agent_tools_over_rest(client: TestClient, cfg: Settings) -> None:
    names = [t["function"]["name"] for t in client.get("/v1/tools", headers=H).json()]
    assert names == ["search_moments", "read_context", "request_insert", "request_edit", "job_status"]
    vid = video_id(client)
    before = count_jobs(client)
    call = {
        "arguments": {"video_id": vid, "operation": "title", "at": 4.1, "text": "Intro", "intent": "a title"}
    }
    r = client.post("/v1/tools/request_insert", json=call, headers=H)
    assert r.status_code == 200, r.text
    job = r.json()["result"]
    assert job["kind"] == "generate" and job["status"] == "queued"
    from memory import Store
    from reasoning.generate import load_source

    store = Store(cfg.home)
    source = load_source(store, vid)
    store.close()
    cuts = {round(b * source.fps) for b in source.boundaries}  # in frames: the plan's times are rounded
    assert job["plan"]["start"] == job["plan"]["end"] and round(job["plan"]["start"] * source.fps) in cuts
    for bad, says in (
        ({"video_id": vid, "operation": "generate", "at": 2.0, "intent": "x"}, "backends that can"),
        ({"video_id": vid, "operation": "slowmo", "at": 2.0}, "operation must be one of"),
        ({"video_id": vid, "operation": "title", "at": 99.0, "text": "x"}, "past its end"),
        ({"video_id": vid, "operation": "title"}, "'at' is missing"),
    ):
        r = client.post("/v1/tools/request_insert", json={"arguments": bad}, headers=H)
        assert r.status_code == 422 and says in error(r)["message"], r.text
    assert count_jobs(client) == before + 1  # the refused calls queued nothing
    run_jobs(cfg)
    status = client.post("/v1/tools/job_status", json={"arguments": {"job_id": job["id"]}}, headers=H).json()
    assert (
        status["result"]["status"] == "done" and status["result"]["result"]["timeline"]["insert_frames"] == 48
    )
    moments = client.post("/v1/tools/search_moments", json={"arguments": {"query": "rabbit"}}, headers=H)
    assert moments.status_code == 200 and isinstance(moments.json()["result"], list)
    assert client.post("/v1/tools/nope", json={"arguments": {}}, headers=H).status_code == 404


def test_agent_tools_in_langchain(client: TestClient, cfg: Settings) -> None:
    from memory import Store
    from reasoning.langchain import langchain_tools

    store = Store(cfg.home)
    tools = {t.name: t for t in langchain_tools(store, "cuts", jobs.QueueEdits(store, "cuts"))}
    assert set(tools) == {"search_moments", "read_context", "request_insert", "request_edit", "job_status"}
    vid = video_id(client)
    job = tools["request_edit"].invoke({"video_id": vid, "operation": "trim", "start": 2.0, "end": 4.5})
    assert job["kind"] == "generate" and job["request"]["anchor"] == [2.0, 4.5]
    run_jobs(cfg)
    assert tools["job_status"].invoke({"job_id": job["id"]})["status"] == "done"
    store.close()


def test_agent_tools_over_mcp_with_the_sdk_client(client: TestClient, cfg: Settings) -> None:
    """`vidmem mcp` started by the official SDK's stdio client, as an agent host starts it."""
    import anyio
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from tests.helpers import VIDMEM

    vid = video_id(client)
    params = StdioServerParameters(
        command=str(VIDMEM), args=["mcp", "--home", str(cfg.home), "--library", "cuts"], env=dict(os.environ)
    )

    async def session() -> dict[str, Any]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            listed = [t.name for t in (await s.list_tools()).tools]
            made = await s.call_tool(
                "request_edit", {"video_id": vid, "operation": "slowmo", "start": 3.0, "end": 4.0}
            )
            wrong = await s.call_tool("request_insert", {"video_id": vid, "operation": "freeze", "at": 500.0})
            found = await s.call_tool("search_moments", {"query": "bunny", "top": 3})
            return {"listed": listed, "made": made, "wrong": wrong, "found": found}

    out = anyio.run(session)
    assert sorted(out["listed"]) == [
        "job_status",
        "read_context",
        "request_edit",
        "request_insert",
        "search_moments",
    ]
    assert not out["made"].is_error, out["made"].content
    job = json.loads(out["made"].content[0].text)
    assert job["kind"] == "generate" and job["plan"]["operation"] == "slowmo"
    assert out["wrong"].is_error and "past its end" in out["wrong"].content[0].text
    assert not out["found"].is_error
    assert jobs.get_job(client.app.state.service.store, job["id"])[0].status == "queued"  # type: ignore[attr-defined]
