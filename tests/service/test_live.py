"""The service as it runs for users: `vidmem serve` in its own process with a worker process, killed
with SIGKILL mid-ingestion and started again; clients searching while it ingests; the editor's page
driven in a real headless Chromium (Debian's `chromium`, through Playwright).

The scenario runs once for the module: a 60 s narrated clip is imported by path; while the worker
transcribes, 16 clients search; once `shots` is checkpointed and before `embeddings` is, the server
process (not its group: the kernel must take the worker down with it) gets SIGKILL. A second server
on the same home takes the job over and finishes it. The last test adds a library where a line is
said again (the memory folds it), after the others have looked at the first library's one video.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from memory import STAGES
from tests.helpers import AUTH, KEY, PHRASES, REPEATED, SAID_AGAIN, STARTS, Server, free_port, stages_done
from tests.media import make_narrated_clip, write_srt

VIDMEM = Path(sys.executable).parent / "vidmem"
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Scenario:
    server: Server
    job: dict[str, Any]
    video_id: str
    stages_at_kill: list[str]
    shot_ids_at_kill: list[int]
    pids_at_kill: list[int]
    survivors: list[int]
    job_at_kill: tuple[str, str | None]
    searches: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def _shot_ids(db: Path) -> list[int]:
    con = sqlite3.connect(db, timeout=10)
    try:
        return [r[0] for r in con.execute("SELECT id FROM segments WHERE level = 'shot' ORDER BY id")]
    finally:
        con.close()


def _search_while(server: Server, running: threading.Event, codes: list[int], seconds: list[float]) -> None:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        while running.is_set():
            t0 = time.perf_counter()
            try:
                codes.append(client.get("/v1/search", params={"q": "golden lanterns market"}).status_code)
            except httpx.HTTPError:
                codes.append(-1)
            seconds.append(time.perf_counter() - t0)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("live")
    media = tmp / "media"
    clip = make_narrated_clip(media, phrases=PHRASES, starts=STARTS, total_seconds=60.0, name="talk.mp4")
    # answers go to an LLM server that is down: the page must show the marked fallback
    down = {
        "VIDMEM_ANSWER_ENGINE": "openai",
        "VIDMEM_LLM_URL": f"http://127.0.0.1:{free_port()}/v1",
        "VIDMEM_LLM_MODEL": "qwen0.5b",
    }
    server = Server(tmp / "home", media, tmp / "serve.log", env=down)
    db = server.home / "vidmem.db"
    server.start()
    try:
        assert server.post("/v1/libraries", json={"name": "main"}).status_code == 201
        r = server.post("/v1/libraries/main/imports", json={"path": clip.path.name})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        running, codes, seconds = threading.Event(), [], []  # type: ignore[var-annotated]
        running.set()
        clients = [
            threading.Thread(target=_search_while, args=(server, running, codes, seconds)) for _ in range(16)
        ]
        for c in clients:
            c.start()
        deadline = time.monotonic() + 400
        try:
            while True:
                stages = stages_done(db)
                if stages is not None and "shots" in stages and "embeddings" not in stages:
                    break
                if time.monotonic() > deadline or server.get(f"/v1/jobs/{job_id}").json()["status"] == "done":
                    pytest.fail(f"no moment to kill the server (stages {stages}):\n{server.log.read_text()}")
                time.sleep(0.1)
        finally:
            running.clear()
            for c in clients:
                c.join()
        pids = server.descendants()
        shot_ids = _shot_ids(db)
        server.kill()
        gone_by = time.monotonic() + 15
        while time.monotonic() < gone_by and any(
            psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids
        ):
            time.sleep(0.1)
        survivors = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        con = sqlite3.connect(db, timeout=10)
        job_at_kill = con.execute("SELECT status, owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
        con.close()

        server.start()  # the same home: the new server's worker takes the job over
        deadline = time.monotonic() + 400
        while (job := server.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            if time.monotonic() > deadline:
                pytest.fail(f"the job did not finish after the restart:\n{server.log.read_text()}")
            time.sleep(0.3)
        yield Scenario(
            server,
            job,
            job["video_id"],
            stages,
            shot_ids,
            pids,
            survivors,
            tuple(job_at_kill),
            codes,
            seconds,
        )
    finally:
        server.stop()


def test_a_killed_server_resumes_the_job_at_its_first_unfinished_stage(scenario: Scenario) -> None:
    s = scenario
    assert s.job_at_kill[0] == "running" and s.job_at_kill[1]  # left running by its dead owner
    assert s.job["status"] == "done", s.job
    assert s.job["attempts"] == 2 and s.job["error"] is None
    db = s.server.home / "vidmem.db"
    con = sqlite3.connect(db)
    try:
        videos = con.execute("SELECT id, status FROM videos").fetchall()
        checkpoints = con.execute("SELECT status, stages_done FROM ingest_jobs").fetchall()
    finally:
        con.close()
    assert videos == [(s.video_id, "ready")]  # one whole video, no half one
    assert len(checkpoints) == 1 and checkpoints[0][0] == "done"
    assert all(stage in checkpoints[0][1] for stage in STAGES)
    # the shots written before the kill are the ones kept: that stage was resumed past, not redone
    assert "shots" in s.stages_at_kill and _shot_ids(db) == s.shot_ids_at_kill


def test_nothing_is_orphaned_and_the_speech_is_found(scenario: Scenario) -> None:
    import faiss

    home = scenario.server.home
    con = sqlite3.connect(home / "vidmem.db")
    try:
        per_space = dict(con.execute("SELECT space, COUNT(*) FROM embeddings GROUP BY space").fetchall())
        owners = {r[0] for r in con.execute("SELECT DISTINCT video_id FROM embeddings")}
    finally:
        con.close()
    assert owners == {scenario.video_id}
    files = sorted((home / "vectors").glob("*.faiss"))
    assert sum(faiss.read_index(str(p)).ntotal for p in files) == sum(per_space.values())
    hits = scenario.server.get(
        "/v1/search", params={"q": "purple giraffe oranges", "level": "cue", "video": scenario.video_id}
    ).json()["moments"]
    assert hits and abs(hits[0]["start"] - STARTS[0]) < 2.0, hits[:2]


def test_the_workers_die_with_the_server(scenario: Scenario) -> None:
    assert scenario.pids_at_kill, "the server ran no worker process"
    assert scenario.survivors == []


def test_queries_kept_working_while_it_ingested(scenario: Scenario) -> None:
    assert len(scenario.searches) >= 16
    assert set(scenario.searches) == {200}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), "Debian's chromium is missing: `make browser` installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def _tag_first_shot(db: Path, video_id: str) -> None:
    """Give the first shot the tags the vision stage writes on footage (the clip's test patterns
    score below every threshold, so ingestion found none): a label and two people."""
    con = sqlite3.connect(db, timeout=10)
    try:
        shot, start, end = con.execute(
            "SELECT id, start, end FROM segments WHERE video_id = ? AND level = 'shot' ORDER BY start LIMIT 1",
            (video_id,),
        ).fetchone()
        con.executemany(
            "INSERT INTO tags (video_id, segment_id, start, end, kind, name, score, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (video_id, shot, start, end, "label", "tabby", 0.41, 1),
                (video_id, shot, start, end, "person", "person", 1.2, 2),
            ],
        )
        con.commit()
    finally:
        con.close()


def test_the_editors_page_searches_and_jumps_the_player(
    scenario: Scenario, browser: Any, tmp_path: Path
) -> None:
    server, vid = scenario.server, scenario.video_id
    _tag_first_shot(server.home / "vidmem.db", vid)
    page = browser.new_page(viewport={"width": 1360, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}/")
    page.fill("#login-key", KEY)
    page.click("#login-form button")
    page.wait_for_selector("#videos li a")
    assert "talk.mp4" in page.inner_text("#videos")

    page.click("#videos li a")
    page.wait_for_url(f"**/videos/{vid}")
    page.wait_for_function("document.querySelector('#player').readyState >= 1")
    timeline = server.get(f"/v1/videos/{vid}/timeline").json()
    assert page.locator('.lane[data-level="shots"] .seg').count() == len(timeline["shots"])
    assert page.locator("#transcript li").count() == len(timeline["transcript"])

    # tags are candidates: chips apart from the caption, saying so, for the shot at the playhead and
    # (its shots' merged) for its chapter
    assert [t["name"] for t in timeline["chapters"][0]["tags"]] == ["person", "tabby"]  # by score
    chips = page.locator("#shot-info .tags .tag")
    assert chips.all_inner_texts() == ["person ×2", "tabby"]
    assert page.get_attribute("#shot-info .tags", "title") == "candidate tags (not verified)"
    assert chips.nth(1).get_attribute("title") == "candidate tags (not verified): label tabby, score 0.41"
    prose = page.locator("#shot-info > span:not(.tags)").all_inner_texts()  # the span, the caption
    assert prose and not any("tabby" in text for text in prose)
    assert page.locator("#chapters li").first.locator(".tag").all_inner_texts() == ["person ×2", "tabby"]
    assert (
        page.evaluate("getComputedStyle(document.querySelector('#shot-info .tag')).borderStyle") == "dashed"
    )

    page.fill("#search-input", "seven silver submarines")
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#hits .hit")
    first = page.locator("#hits .hit").first
    start = float(first.get_attribute("data-start"))
    assert abs(start - STARTS[1]) < 3.0, start
    assert first.locator("button.ts").first.inner_text() == time.strftime("%H:%M:%S", time.gmtime(int(start)))
    first.locator("div").click()
    page.wait_for_function(f"Math.abs(document.querySelector('#player').currentTime - {start}) < 0.5")
    assert f"/videos/{vid}?t=" in page.url
    page.wait_for_selector("#transcript li.active")

    # the LLM server is down: the page asks with a fallback and says so above the quoted answer
    page.fill("#search-input", "what do the silver submarines do?")
    page.click("#ask-button")
    page.wait_for_selector("#answer .fallback")
    warning = page.inner_text("#answer .fallback")
    assert "llm:qwen0.5b did not answer" in warning and "could not be reached" in warning, warning
    assert "extractive answer" in warning
    assert page.locator("#answer .hit").count() >= 1
    reading = page.inner_text("#answer .reading")  # what was read, and why reading stopped
    assert re.fullmatch(r"read (\d+) of (\d+) pieces of evidence \((\d+) tokens\): .+", reading), reading
    assert page.get_attribute("#answer .reading", "title").count("tokens") == int(reading.split()[1])
    assert server.post("/v1/ask", json={"question": "what do the submarines do?"}).status_code == 503

    # a deep link opens the player at its moment
    page.goto(f"{server.url}/videos/{vid}?t=40")
    page.wait_for_function("Math.abs(document.querySelector('#player').currentTime - 40) < 0.5")
    page.fill("#search-input", "brave pilot frozen lake")
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#hits .hit")
    page.screenshot(path=str(tmp_path / "editor.png"), full_page=True)
    if os.environ.get("VIDMEM_KEEP_SCREENSHOT"):
        shutil.copy(tmp_path / "editor.png", ROOT / "docs" / "editor.png")
    assert errors == []
    page.close()


@dataclass
class Repeats:
    video_id: str
    """The clip again, with a sidecar transcript whose first line is said again at its end."""
    intro_id: str
    """A transcript-only item, ingested first, that says that line too: its slot's exemplar."""


def _not_kept(db: Path, video_id: str) -> tuple[float, float]:
    """Mark the video's last shot as the memory marks one it skipped (the clip's shots carry no
    vectors without the vision stage, so ingestion gated none of them)."""
    con = sqlite3.connect(db, timeout=10)
    try:
        shot, start, end = con.execute(
            "SELECT id, start, end FROM segments WHERE video_id = ? AND level = 'shot' ORDER BY start DESC LIMIT 1",
            (video_id,),
        ).fetchone()
        con.execute("UPDATE segments SET retained = 0, salience = 0.02 WHERE id = ?", (shot,))
        con.commit()
    finally:
        con.close()
    return start, end


@pytest.fixture(scope="module")
def repeats(scenario: Scenario) -> Repeats:
    server = scenario.server
    intro = write_srt(
        server.media / "intro.srt", [(5.0, 9.0, SAID_AGAIN), (12.0, 16.0, "glaze the pot before firing")]
    )
    repeat = server.media / "repeat.mp4"
    shutil.copy(server.media / "talk.mp4", repeat)
    write_srt(repeat.with_suffix(".srt"), REPEATED)  # its sidecar: the transcript
    assert server.post("/v1/libraries", json={"name": "pottery"}).status_code == 201
    queued = [
        server.post("/v1/libraries/pottery/imports", json={"path": p.name}).json()["id"]
        for p in (intro, repeat)
    ]  # one worker, oldest first: the intro is gated first
    deadline = time.monotonic() + 300
    while (done := [server.get(f"/v1/jobs/{j}").json() for j in queued]) and any(
        j["status"] in ("queued", "running") for j in done
    ):
        if time.monotonic() > deadline:
            pytest.fail(f"the pottery imports did not finish:\n{server.log.read_text()}")
        time.sleep(0.3)
    assert [j["status"] for j in done] == ["done", "done"], done
    return Repeats(done[1]["video_id"], done[0]["video_id"])


def test_the_page_lists_the_other_times_a_line_was_said_and_mutes_shots_not_kept(
    scenario: Scenario, repeats: Repeats, browser: Any
) -> None:
    server, vid, intro = scenario.server, repeats.video_id, repeats.intro_id
    decisions = server.get(f"/v1/videos/{vid}/memory").json()
    assert [
        (d["start"], d["slot"]["video_id"]) for d in decisions if d["action"] == "fold" and d["kind"] == "cue"
    ] == [
        (2.0, intro),
        (50.0, intro),
    ], decisions
    start, end = _not_kept(server.home / "vidmem.db", vid)

    page = browser.new_page(viewport={"width": 1360, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}/videos/{vid}")
    page.fill("#login-key", KEY)
    page.click("#login-form button")
    page.wait_for_function("document.querySelector('#player').readyState >= 1")

    # the shot the memory did not keep is drawn muted, and says why
    shots = page.locator('.lane[data-level="shots"] .seg')
    muted = page.locator('.lane[data-level="shots"] .seg.not-kept')
    assert muted.count() == 1 and shots.count() > 1
    assert float(muted.get_attribute("data-start")) == start
    assert "not kept by the memory (skipped, or its slot evicted)" in muted.get_attribute("title")
    assert "not kept" not in (shots.first.get_attribute("title") or "")

    # the line said again: the hit at its second time lists the others, here and in the intro
    page.fill("#search-input", SAID_AGAIN)
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#hits .hit .also a")
    hit = page.locator('#hits .hit[data-start="50"]')
    assert hit.count() == 1, page.inner_text("#hits")
    assert hit.locator(".also").inner_text().startswith("also at ")
    links = hit.locator(".also a")
    assert sorted(links.all_inner_texts()) == ["00:00:02", "00:00:05"]
    here = hit.locator(f'.also a[data-video="{vid}"]')
    there = hit.locator(f'.also a[data-video="{intro}"]')
    assert here.get_attribute("href") == f"/videos/{vid}?t=2.00"
    assert there.get_attribute("href") == f"/videos/{intro}?t=5.00"
    assert "elsewhere" in (there.get_attribute("class") or "")

    page.evaluate("document.querySelector('#player').currentTime = 30")
    here.click()  # in this video: the player seeks, the page stays
    page.wait_for_function("Math.abs(document.querySelector('#player').currentTime - 2) < 0.5")
    assert page.url.endswith(f"/videos/{vid}?t=2.00")
    there.click()  # in another video: that video opens at the time
    page.wait_for_url(f"**/videos/{intro}?t=5.00")
    page.wait_for_function("document.querySelector('#video-title').textContent === 'intro.srt'")
    assert errors == []
    page.close()


def test_an_editor_marks_in_and_out_renders_and_downloads_the_cut(
    scenario: Scenario, browser: Any, tmp_path: Path
) -> None:
    """On the page: keyframe thumbnails along the shot row; mark in and out on the player, choose an
    operation, render it through the server's workers, follow its progress, play the preview,
    download the EDL; and a request the backend cannot do is refused on the page with the reason."""
    server, vid = scenario.server, scenario.video_id
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}/")
    page.fill("#login-key", KEY)
    page.click("#login-form button")
    page.wait_for_selector("#videos li a")
    page.goto(f"{server.url}/videos/{vid}")
    page.wait_for_function("document.querySelector('#player').readyState >= 1")
    shots = page.locator('.lane[data-level="shots"] .seg')
    assert shots.count() > 1
    assert "/thumbnail?t=" in (shots.first.get_attribute("style") or "")
    page.wait_for_function(  # the thumbnail really loads (same session cookie as the page)
        "fetch(getComputedStyle(document.querySelector('.lane[data-level=shots] .seg')).backgroundImage"
        ".slice(5, -2)).then(r => r.ok && r.headers.get('content-type') === 'image/jpeg')"
    )

    def mark(button: str, at: float) -> None:
        page.evaluate(f"document.querySelector('#player').currentTime = {at}")
        page.wait_for_function(f"Math.abs(document.querySelector('#player').currentTime - {at}) < 0.05")
        page.click(button)

    mark("#mark-in", 10.0)
    page.select_option("#edit-op", "generate")
    page.fill("#edit-text", "a red balloon")
    page.click("#edit-form button[type=submit]")
    page.wait_for_function("document.querySelector('#edit-status').textContent.includes('backends that can')")

    mark("#mark-out", 14.0)
    assert page.inner_text("#in-at") == "00:00:10" and page.inner_text("#out-at") == "00:00:14"
    assert page.is_visible("#marks")
    page.select_option("#edit-op", "trim")
    page.click("#edit-form button[type=submit]")
    seen: list[str] = []
    deadline = time.monotonic() + 300
    while "done" not in (status := page.inner_text("#edit-status")):
        seen.append(status)
        assert time.monotonic() < deadline and "failed" not in status, status
        time.sleep(0.2)
    assert any(s.startswith(("queued", "running")) for s in seen), seen
    page.wait_for_function("document.querySelector('#edit-preview').readyState >= 1")
    duration = page.evaluate("document.querySelector('#edit-preview').duration")
    jobs = server.get("/v1/jobs", params={"library": "main"}).json()
    job = next(j for j in jobs if j["kind"] == "generate" and j["status"] == "done")
    assert job["request"]["operation"] == "trim"
    assert abs(duration - job["result"]["timeline"]["seconds"]) < 0.1
    assert job["result"]["timeline"]["seconds"] < 60.0 - 3.5  # about four seconds are gone
    with page.expect_download() as download:
        page.click("#edit-files a[download='edit.edl']")
    edl = Path(download.value.path()).read_text()
    assert "FROM CLIP NAME:" in edl and "talk.mp4" in edl
    assert errors == []
    page.close()
