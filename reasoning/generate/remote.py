"""The `http` generation backend: a video model served elsewhere, through one of two protocols.

- `openai-videos`: the OpenAI Videos API as vLLM-Omni serves it (`vllm serve <model> --omni`):
  `POST /v1/videos` (multipart: prompt, model, seconds, size, and vLLM-Omni's width, height,
  num_frames, fps, negative_prompt, seed; the first conditioning frame as `input_reference`), poll
  `GET /v1/videos/{id}` (`status` queued, in_progress, completed, failed; `progress` 0-100), then
  `GET /v1/videos/{id}/content`.
- `comfyui`: a ComfyUI server: conditioning frames uploaded (`POST /upload/image`), a workflow
  template (API format, a JSON file the user names) filled in — every string `"{{prompt}}"`,
  `"{{negative_prompt}}"`, `"{{seed}}"`, `"{{frames}}"`, `"{{width}}"`, `"{{height}}"`, `"{{fps}}"`,
  `"{{image}}"`, `"{{image_end}}"` is replaced by its value (numbers as numbers) — queued with
  `POST /prompt`, followed through `GET /queue` and `GET /history/{prompt_id}`, fetched with `GET /view`.

The remote id is remembered in the job (`Run.remember`) as soon as the server gives it, so a worker
that dies mid-job is followed by one that resumes polling the same remote job instead of submitting
it again. What comes back is conformed to the plan (frames, rate, size, sound) like any piece; with
`audio: generate` its own sound track is kept (a model that made none fails the job saying so).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from reasoning.generate.backends import Artifact, Backend, BackendError, Run
from reasoning.generate.media import conform, has_audio, still
from reasoning.generate.request import FrameGrid, Plan, RequestError

PROTOCOLS = ("openai-videos", "comfyui")


class HttpBackend(Backend):
    name = "http"
    operations = frozenset({"generate", "extend", "bridge", "retake"})
    grid = FrameGrid(multiple=8, offset=1, least=9, most=257)
    audio = frozenset({"keep", "silence", "generate"})
    describe = "a video model behind an OpenAI-Videos (vLLM-Omni) or ComfyUI server"

    def __init__(
        self,
        url: str | None = None,
        protocol: str = "openai-videos",
        model: str = "",
        workflow: str | Path | None = None,
        api_key: str | None = None,
        fps: float = 24.0,
        poll_seconds: float = 1.0,
        timeout_seconds: float = 3600.0,
    ) -> None:
        if not url:
            raise RequestError("the http backend needs a server: set VIDMEM_GENERATION_URL")
        if protocol not in PROTOCOLS:
            raise RequestError(
                f"unknown generation protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}"
            )
        if protocol == "comfyui" and not workflow:
            raise RequestError(
                "the comfyui protocol needs a workflow template: set VIDMEM_GENERATION_WORKFLOW"
            )
        self.url, self.protocol, self.model = url.rstrip("/"), protocol, model
        self.workflow = Path(workflow) if workflow else None
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.rate, self.poll, self.timeout = float(fps), poll_seconds, timeout_seconds

    def fps(self, source_fps: float) -> float:
        return self.rate

    def render(self, plan: Plan, out: Path, run: Run) -> Artifact:
        out.mkdir(parents=True, exist_ok=True)
        frames = {
            c.position: still(plan.source, c.frame, plan.source.fps, out / f"condition-{c.position}.png")
            for c in plan.conditions
        }
        raw = out / "remote.mp4"
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=60.0) as client:
            try:
                if self.protocol == "openai-videos":
                    remote = self._openai(client, plan, frames, raw, run)
                else:
                    remote = self._comfy(client, plan, frames, raw, run)
            except httpx.HTTPError as e:
                raise BackendError(f"the generation server at {self.url} failed: {e}") from None
        sound = None
        if plan.request.audio == "generate":
            if not has_audio(raw):
                raise BackendError(
                    f"the model at {self.url} made no sound; ask for audio keep or silence, or serve a "
                    "model that makes sound (LTX-2)"
                )
            sound = raw
        piece = conform(raw, plan, out / "insert.mp4", lambda f: run.progress(0.9 + 0.1 * f), sound)
        raw.unlink(missing_ok=True)
        details = {
            "protocol": self.protocol,
            "remote_id": remote,
            "server": self.url,
            "renders": self.describe,
        }
        return Artifact.piece(piece, plan, self.name, details)

    # --- OpenAI Videos (vLLM-Omni) -----------------------------------------------------------------

    def _openai(self, client: httpx.Client, plan: Plan, frames: dict[int, Path], raw: Path, run: Run) -> str:
        remote = run.saved.get("remote_id")
        if remote is None:
            w, h = plan.source.width, plan.source.height
            data = {
                "prompt": plan.prompt,
                "model": self.model,
                "seconds": f"{plan.seconds:.3f}",
                "size": f"{w}x{h}",
                "width": str(w),
                "height": str(h),
                "num_frames": str(plan.frames),
                "fps": f"{plan.fps:g}",
                "negative_prompt": plan.request.negative_prompt,
            }
            if plan.request.seed is not None:
                data["seed"] = str(plan.request.seed)
            files = {}
            if 0 in frames:
                files["input_reference"] = ("frame.png", frames[0].read_bytes(), "image/png")
            r = client.post("/v1/videos", data=data, files=files or None)
            _ok(r, "POST /v1/videos")
            remote = str(r.json()["id"])
            run.remember(remote_id=remote, protocol="openai-videos")
        deadline = time.monotonic() + self.timeout
        while True:
            r = client.get(f"/v1/videos/{remote}")
            _ok(r, f"GET /v1/videos/{remote}")
            job = r.json()
            status = job.get("status")
            if status == "completed":
                break
            if status == "failed":
                err = job.get("error") or {}
                raise BackendError(
                    f"the generation server failed job {remote}: {err.get('message') or err or 'no reason given'}"
                )
            run.progress(0.9 * float(job.get("progress") or 0) / 100)
            if time.monotonic() > deadline:
                raise BackendError(f"job {remote} did not finish within {self.timeout:g} s")
            time.sleep(self.poll)
        with client.stream("GET", f"/v1/videos/{remote}/content") as r:
            _ok(r, f"GET /v1/videos/{remote}/content")
            with raw.open("wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        return remote

    # --- ComfyUI -----------------------------------------------------------------------------------

    def _comfy(self, client: httpx.Client, plan: Plan, frames: dict[int, Path], raw: Path, run: Run) -> str:
        remote = run.saved.get("remote_id")
        if remote is None:
            names: dict[str, str] = {}
            for position, path in sorted(frames.items()):
                r = client.post("/upload/image", files={"image": (path.name, path.read_bytes(), "image/png")},
                                data={"overwrite": "true"})  # fmt: skip
                _ok(r, "POST /upload/image")
                key = "image" if position == 0 else "image_end"
                names[key] = r.json()["name"]
            assert self.workflow is not None
            values: dict[str, Any] = {
                "prompt": plan.prompt,
                "negative_prompt": plan.request.negative_prompt,
                "seed": plan.request.seed if plan.request.seed is not None else 0,
                "frames": plan.frames,
                "width": plan.source.width,
                "height": plan.source.height,
                "fps": plan.fps,
                **names,
            }
            graph = _fill(json.loads(self.workflow.read_text()), values)
            r = client.post("/prompt", json={"prompt": graph, "client_id": "vidmem"})
            _ok(r, "POST /prompt")
            body = r.json()
            if body.get("node_errors"):
                raise BackendError(f"ComfyUI refused the workflow: {json.dumps(body['node_errors'])[:500]}")
            remote = str(body["prompt_id"])
            run.remember(remote_id=remote, protocol="comfyui")
        deadline = time.monotonic() + self.timeout
        while True:
            r = client.get(f"/history/{remote}")
            _ok(r, f"GET /history/{remote}")
            entry = r.json().get(remote)
            if entry is not None:
                status = entry.get("status") or {}
                if status.get("status_str") == "error":
                    messages = [m for m in status.get("messages", []) if m and m[0] == "execution_error"]
                    reason = messages[0][1].get("exception_message", "") if messages else "no reason given"
                    raise BackendError(f"ComfyUI failed prompt {remote}: {reason}")
                if status.get("completed", True):
                    break
            queue = client.get("/queue").json()
            running = any(item[1] == remote for item in queue.get("queue_running", []))
            run.progress(0.45 if running else 0.0)  # ComfyUI reports steps only over its websocket
            if time.monotonic() > deadline:
                raise BackendError(f"prompt {remote} did not finish within {self.timeout:g} s")
            time.sleep(self.poll)
        outputs = [
            item
            for node in entry.get("outputs", {}).values()
            for kind in ("videos", "gifs", "images")
            for item in node.get(kind, [])
        ]
        if not outputs:
            raise BackendError(f"ComfyUI prompt {remote} finished without a video output")
        item = outputs[0]
        params = {
            "filename": item["filename"],
            "subfolder": item.get("subfolder", ""),
            "type": item.get("type", "output"),
        }
        with client.stream("GET", "/view", params=params) as r:
            _ok(r, "GET /view")
            with raw.open("wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        return remote


def _ok(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        response.read()
        raise BackendError(f"{what} answered {response.status_code}: {response.text[:300]}")


def _fill(node: Any, values: dict[str, Any]) -> Any:
    """`node` with every `"{{name}}"` string replaced by `values[name]`."""
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    if isinstance(node, str) and node.startswith("{{") and node.endswith("}}"):
        name = node[2:-2].strip()
        if name not in values:
            raise BackendError(f"the workflow asks for {node}, which this request does not give")
        return values[name]
    return node
