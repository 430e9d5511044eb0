"""The `http` generation backend against servers on 127.0.0.1 that speak the two protocols it
supports — test doubles of a remote GPU model, which cannot run here: the OpenAI Videos API as
vLLM-Omni serves it (`/v1/videos`), and ComfyUI (`/upload/image`, `/prompt`, `/queue`, `/history`,
`/view`). Each fake renders a real video with ffmpeg (the conditioning frame held with a slow zoom,
else a test pattern) at its own size and rate; vidmem must conform it to the plan. Also: a remote
failure fails the job with the server's reason, and a worker killed while the remote job runs is
followed by one that resumes polling it, without submitting it again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from memory import Store
from reasoning.generate import BackendError, EditRequest, prepare, run_edit
from reasoning.generate.media import count_frames, grab, psnr
from service import jobs
from service.settings import Settings
from tests.helpers import run_jobs, settings_for
from tests.media import bbb_excerpt

MODEL_SIZE = (256, 144)
"""What the fake model renders at: never the video's size, so conforming is exercised."""


def render(out: Path, frames: int, fps: float, image: Path | None, sound: bool = False) -> None:
    """The fake model's video; with `sound`, a 440 Hz tone as its own sound track (as LTX-2 makes)."""
    w, h = MODEL_SIZE
    if image is not None:
        src = ["-loop", "1", "-i", str(image)]
        graph = f"scale={w}:{h},zoompan=z='1+0.002*on':d=1:s={w}x{h}:fps={fps}"
    else:
        src = ["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}"]
        graph = "null"
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-shortest"] if sound else []
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *src, *tone, "-vf", graph, "-frames:v", str(frames), "-r", f"{fps}",
         "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )  # fmt: skip


class Remote:
    """A fake video-generation server: jobs advance one step per poll, or wait for `release`."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="vidmem-remote-"))
        self.posts: list[dict[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.hold = threading.Event()
        self.hold.set()  # set: jobs advance; cleared: they stay in progress
        self.app = FastAPI()
        self._routes()

    def advance(self, job: dict[str, Any]) -> None:
        if job["status"] in ("completed", "failed") or not self.hold.is_set():
            return
        job["polls"] += 1
        if job["polls"] >= 3:
            if "fail" in job["prompt"]:
                job["status"], job["error"] = (
                    "failed",
                    {"code": "oom", "message": "CUDA out of memory (fake)"},
                )
            else:
                render(job["file"], job["frames"], job["fps"], job["image"], "sound" in job["prompt"])
                job["status"] = "completed"
        else:
            job["status"], job["progress"] = "in_progress", 30 * job["polls"]

    def _routes(self) -> None:
        app = self.app

        @app.post("/v1/videos")
        async def create(
            prompt: str = Form(...),
            num_frames: int = Form(...),
            fps: float = Form(...),
            width: int = Form(...),
            height: int = Form(...),
            model: str = Form(""),
            negative_prompt: str = Form(""),
            seed: int | None = Form(None),
            seconds: str = Form(""),
            size: str = Form(""),
            input_reference: UploadFile | None = None,
        ) -> JSONResponse:
            vid = "video_" + uuid.uuid4().hex[:8]
            image = None
            if input_reference is not None:
                image = self.folder / f"{vid}.png"
                image.write_bytes(await input_reference.read())
            self.posts.append({"prompt": prompt, "num_frames": num_frames, "fps": fps, "seed": seed,
                               "width": width, "height": height, "image": image is not None})  # fmt: skip
            self.jobs[vid] = {"status": "queued", "progress": 0, "polls": 0, "prompt": prompt, "frames": num_frames,
                              "fps": fps, "image": image, "file": self.folder / f"{vid}.mp4"}  # fmt: skip
            return JSONResponse({"id": vid, "object": "video", "status": "queued", "progress": 0})

        @app.get("/v1/videos/{vid}")
        def status(vid: str) -> JSONResponse:
            job = self.jobs[vid]
            self.advance(job)
            body = {"id": vid, "object": "video", "status": job["status"], "progress": job["progress"]}
            if job["status"] == "failed":
                body["error"] = job["error"]
            return JSONResponse(body)

        @app.get("/v1/videos/{vid}/content")
        def content(vid: str) -> FileResponse:
            return FileResponse(self.jobs[vid]["file"], media_type="video/mp4")

        # --- ComfyUI ---
        @app.post("/upload/image")
        async def upload(image: UploadFile, overwrite: str = Form("false")) -> JSONResponse:
            name = f"{uuid.uuid4().hex[:6]}-{image.filename}"
            (self.folder / name).write_bytes(await image.read())
            return JSONResponse({"name": name, "subfolder": "", "type": "input"})

        @app.post("/prompt")
        async def prompt(request: Request) -> JSONResponse:
            graph = (await request.json())["prompt"]
            self.posts.append({"graph": graph})
            pid = uuid.uuid4().hex
            sampler, loader = graph["3"]["inputs"], graph["5"]["inputs"]
            self.jobs[pid] = {"status": "queued", "progress": 0, "polls": 0, "prompt": graph["6"]["inputs"]["text"],
                              "frames": sampler["length"], "fps": sampler["fps"], "image": self.folder / loader["image"],
                              "file": self.folder / f"{pid}.mp4"}  # fmt: skip
            return JSONResponse({"prompt_id": pid, "number": len(self.posts), "node_errors": {}})

        @app.get("/queue")
        def queue() -> JSONResponse:
            running = [[0, pid, {}, {}, []] for pid, j in self.jobs.items() if j["status"] == "in_progress"]
            return JSONResponse({"queue_running": running, "queue_pending": []})

        @app.get("/history/{pid}")
        def history(pid: str) -> JSONResponse:
            job = self.jobs[pid]
            self.advance(job)
            if job["status"] == "failed":
                status = {"status_str": "error", "completed": False,
                          "messages": [["execution_error", {"exception_message": job["error"]["message"]}]]}  # fmt: skip
                return JSONResponse({pid: {"outputs": {}, "status": status}})
            if job["status"] != "completed":
                return JSONResponse({})
            out = {"9": {"gifs": [{"filename": job["file"].name, "subfolder": "", "type": "output"}]}}
            return JSONResponse(
                {
                    pid: {
                        "outputs": out,
                        "status": {"status_str": "success", "completed": True, "messages": []},
                    }
                }
            )

        @app.get("/view")
        def view(filename: str, subfolder: str = "", type: str = "output") -> FileResponse:
            return FileResponse(self.folder / Path(filename).name, media_type="video/mp4")


@pytest.fixture(scope="module")
def remote() -> Iterator[tuple[Remote, str]]:
    fake = Remote()
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield fake, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory, remote: tuple[Remote, str]) -> Settings:
    tmp = tmp_path_factory.mktemp("remote")
    cfg = settings_for(tmp, generation_url=remote[1], generation_fps=16.0)
    clip = bbb_excerpt(cfg.media_roots[0] / "bunny.mp4", 12, 320, 180)
    store = Store(cfg.home)
    with store.session() as s:
        store.library(s, "gen")
    jobs.enqueue(store, "gen", clip, clip.name, upload=False)
    store.close()
    run_jobs(cfg)
    return cfg


def video(cfg: Settings) -> tuple[Store, str]:
    store = Store(cfg.home)
    return store, store.videos("gen")[0].id


def test_openai_videos_generate_is_conformed_to_the_timeline(
    cfg: Settings, remote: tuple[Remote, str]
) -> None:
    fake, _ = remote
    store, vid = video(cfg)
    fake.posts.clear()
    req = EditRequest(
        video_id=vid,
        operation="generate",
        anchor=4.0,
        duration=2.0,
        prompt="a rabbit waves",
        seed=7,
        backend="http",
    )
    plan, backend = prepare(store, req, None, cfg.generation_options())
    assert plan.fps == 16 and plan.frames == 33  # 2 s at 16 fps on the 8k+1 grid
    assert plan.timeline_frames == round(33 * 24 / 16)
    result = run_edit(store, plan, backend, cfg.home / "gen-openai")
    (post,) = fake.posts
    assert (
        post["prompt"] == "a rabbit waves"
        and post["num_frames"] == 33
        and post["fps"] == 16
        and post["seed"] == 7
    )
    assert (post["width"], post["height"]) == (320, 180)
    insert = cfg.home / "gen-openai" / "insert.mp4"
    assert count_frames(insert) == plan.timeline_frames and result["artifact"]["remote_id"].startswith(
        "video_"
    )
    assert count_frames(cfg.home / "gen-openai" / "preview.mp4") == result["timeline"]["frames"]
    store.close()


def test_openai_videos_extend_sends_its_conditioning_frame(cfg: Settings, remote: tuple[Remote, str]) -> None:
    """The fake holds the frame it was sent; the piece must start on the shot's last frame."""
    fake, _ = remote
    store, vid = video(cfg)
    fake.posts.clear()
    req = EditRequest(
        video_id=vid, operation="extend", anchor=4.0, duration=1.0, prompt="keeps hopping", backend="http"
    )
    plan, backend = prepare(store, req, None, cfg.generation_options())
    run_edit(store, plan, backend, cfg.home / "gen-extend")
    assert fake.posts[0]["image"]
    first = grab(cfg.home / "gen-extend" / "insert.mp4", 0, plan.source.fps)
    condition = grab(Path(plan.source.path), plan.conditions[0].frame, plan.source.fps)
    assert psnr(first, condition) >= 25  # through the model's 256x144 and back: the same picture
    store.close()


WORKFLOW = {
    "3": {
        "class_type": "LTXVSampler",
        "inputs": {"seed": "{{seed}}", "length": "{{frames}}", "fps": "{{fps}}"},
    },
    "5": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{negative_prompt}}"}},
    "9": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["3", 0]}},
}
"""An LTX image-to-video workflow template in ComfyUI's API format."""


def comfyui(url: str, folder: Path) -> dict[str, dict[str, Any]]:
    """Backend options for the fake ComfyUI at `url`, with `WORKFLOW` written into `folder`."""
    path = folder / "ltx.json"
    path.write_text(json.dumps(WORKFLOW))
    return {"http": {"url": url, "protocol": "comfyui", "workflow": path, "fps": 24.0}}


def test_comfyui_workflow_is_filled_queued_followed_and_fetched(
    cfg: Settings, remote: tuple[Remote, str], tmp_path: Path
) -> None:
    fake, url = remote
    store, vid = video(cfg)
    options = comfyui(url, tmp_path)
    fake.posts.clear()
    req = EditRequest(
        video_id=vid,
        operation="bridge",
        anchor=(5.0, 6.0),
        prompt="the rabbit turns",
        negative_prompt="blur",
        seed=3,
        backend="http",
    )
    plan, backend = prepare(store, req, None, options)
    result = run_edit(store, plan, backend, tmp_path / "out")
    graph = fake.posts[0]["graph"]
    assert graph["6"]["inputs"]["text"] == "the rabbit turns" and graph["7"]["inputs"]["text"] == "blur"
    assert graph["3"]["inputs"] == {"seed": 3, "length": plan.frames, "fps": 24.0}  # numbers stay numbers
    assert plan.frames % 8 == 1
    assert count_frames(tmp_path / "out" / "insert.mp4") == plan.timeline_frames
    assert result["artifact"]["protocol"] == "comfyui"
    store.close()


def test_the_remote_models_own_sound_is_kept_when_asked_for(
    cfg: Settings, remote: tuple[Remote, str], tmp_path: Path
) -> None:
    """`audio: generate` keeps the sound the remote model made (the fake's 440 Hz tone), where `keep`
    lays the source's sound; a model that made none fails the job saying so."""
    store, vid = video(cfg)

    def sound(prompt: str, audio: str, name: str) -> np.ndarray:
        req = EditRequest(video_id=vid, operation="generate", anchor=4.0, duration=1.0, prompt=prompt,
                          audio=audio, backend="http")  # fmt: skip
        plan, backend = prepare(store, req, None, cfg.generation_options())
        run_edit(store, plan, backend, tmp_path / name)
        res = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / name / "insert.mp4"), "-map", "0:a:0",
                              "-ac", "1", "-ar", "16000", "-f", "f32le", "-"], capture_output=True, check=True)  # fmt: skip
        return np.frombuffer(res.stdout, "<f4")

    def peak_hz(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x[: 16000 // 2]))
        return float(np.argmax(spectrum) * 16000 / (16000 // 2))

    made = sound("a rabbit with sound", "generate", "made")
    kept = sound("a rabbit with sound", "keep", "kept")
    assert abs(peak_hz(made) - 440) <= 4 and abs(peak_hz(kept) - 440) > 20
    with pytest.raises(BackendError, match="made no sound"):
        sound("a silent rabbit", "generate", "none")
    store.close()


@pytest.mark.parametrize("protocol", ["openai-videos", "comfyui"])
def test_a_remote_failure_fails_with_the_servers_reason(
    protocol: str, cfg: Settings, remote: tuple[Remote, str], tmp_path: Path
) -> None:
    store, vid = video(cfg)
    options = cfg.generation_options() if protocol == "openai-videos" else comfyui(remote[1], tmp_path)
    req = EditRequest(video_id=vid, operation="extend", anchor=4.0, prompt="please fail", backend="http")
    plan, backend = prepare(store, req, None, options)
    with pytest.raises(BackendError, match="CUDA out of memory"):
        run_edit(store, plan, backend, tmp_path / "out")
    store.close()
    bad = Settings(**{**cfg.model_dump(), "generation_url": None})
    store, vid = video(cfg)
    from reasoning.generate import RequestError

    with pytest.raises(RequestError, match="VIDMEM_GENERATION_URL"):
        prepare(
            store,
            EditRequest(video_id=vid, operation="generate", anchor=4.0, prompt="x", backend="http"),
            None,
            bad.generation_options(),
        )
    store.close()


def test_a_killed_worker_is_followed_by_one_that_resumes_polling(
    cfg: Settings, remote: tuple[Remote, str]
) -> None:
    """Real worker processes: the first is SIGKILLed while the remote job runs; the second finds the
    remote id in the job and polls it. The server saw one submission."""
    fake, _ = remote
    store, vid = video(cfg)
    fake.posts.clear()
    fake.hold.clear()  # remote jobs stay in progress until released
    req = EditRequest(
        video_id=vid, operation="generate", anchor=4.0, duration=1.0, prompt="a rabbit", backend="http"
    )
    job = jobs.enqueue_edit(store, "gen", req.model_dump(mode="json"), "generate")
    env = dict(os.environ, VIDMEM_WORKER_SETTINGS=cfg.model_dump_json())
    worker = subprocess.Popen([sys.executable, "-m", "service.jobs"], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            row, _ = jobs.get_job(store, job.id)
            if (row.result or {}).get("saved", {}).get("remote_id"):
                break
            time.sleep(0.2)
        remote_id = row.result["saved"]["remote_id"]  # type: ignore[index]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker = subprocess.Popen([sys.executable, "-m", "service.jobs"], env=env)
        time.sleep(2)
        fake.hold.set()
        while time.monotonic() < deadline + 120:
            row, _ = jobs.get_job(store, job.id)
            if row.status in ("done", "failed"):
                break
            time.sleep(0.3)
        assert row.status == "done", row.error
        assert len(fake.posts) == 1  # resumed, not resubmitted
        assert row.result["artifact"]["remote_id"] == remote_id and row.attempts == 2  # type: ignore[index]
    finally:
        fake.hold.set()
        worker.kill()
        worker.wait()
        store.close()
