"""The `diffusers` generation backend: a video diffusion pipeline loaded from a folder the user names.

Three pipelines (`pipeline`):
- `ltx-condition`: LTX-Video through `diffusers.LTXConditionPipeline` (text-to-video, an extension
  from the shot's last frame, a bridge held to the frames on both sides, a retake held to both ends of
  its span): the plan's conditioning frames become `LTXVideoCondition` items at their frame index and
  strength; LTX's grid (8k+1 frames, 9 to 257) at 24 fps; sides multiples of 32.
- `ltx2-condition`: LTX-2 through `diffusers.LTX2ConditionPipeline`, the same operations and grid
  (`LTX2VideoCondition` items), and a sound track made with the picture: with `audio: generate` the
  pipeline's own audio (its vocoder's rate) becomes the piece's sound, the one backend that does so.
- `wan-vace`: Wan VACE through `diffusers.WanVACEPipeline`, for masks: a retake gets the span's own
  frames as `video` and, per frame, a `mask` white inside the request's box (regenerated) and black
  outside (kept); known frames (an extension's first, a bridge's ends) are given and the rest masked.
  Wan's grid (4k+1 frames, 5 to 129) at 16 fps; sides multiples of 16.
Frames are rendered at the source's shape scaled to at most `max_width`; each denoising step reports
progress (and is where a cancel stops it). The result is conformed to the timeline like any piece
(rate, size, sound).

No diffusion weights ship in any package: `model` is a local folder (`from_pretrained`, the hub
switched off). The tests build the same pipeline class from tiny randomly initialised components,
save it, and load it through this backend; what they check is the plumbing (conditioning, the frame
grid, progress, the file), not the picture.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from reasoning.generate.backends import Artifact, Backend, BackendError, Run
from reasoning.generate.media import conform, ffmpeg_path, opened, redact, still
from reasoning.generate.request import FrameGrid, Plan, RequestError, Source

PIPELINES = {
    "ltx-condition": "LTXConditionPipeline",
    "ltx2-condition": "LTX2ConditionPipeline",
    "wan-vace": "WanVACEPipeline",
}
SHAPE = {  # frame grid, frame rate, side multiple
    "ltx-condition": (FrameGrid(multiple=8, offset=1, least=9, most=257), 24.0, 32),
    "ltx2-condition": (FrameGrid(multiple=8, offset=1, least=9, most=257), 24.0, 32),
    "wan-vace": (FrameGrid(multiple=4, offset=1, least=5, most=129), 16.0, 16),
}


class DiffusersBackend(Backend):
    name = "diffusers"
    operations = frozenset({"generate", "extend", "bridge", "retake"})
    grid = FrameGrid(multiple=8, offset=1, least=9, most=257)
    describe = "a diffusers video pipeline (LTX-Video, LTX-2 with sound, Wan VACE) from a local folder"

    def __init__(
        self,
        model: str | Path | None = None,
        pipeline: str = "ltx-condition",
        device: str = "cpu",
        dtype: str = "float32",
        steps: int = 40,
        guidance: float = 3.0,
        fps: float | None = None,
        max_width: int = 704,
    ) -> None:
        if not model:
            raise RequestError("the diffusers backend needs a model folder: set VIDMEM_DIFFUSERS_MODEL")
        if not Path(model).is_dir():
            raise RequestError(f"the diffusers model folder {model} does not exist")
        if pipeline not in PIPELINES:
            raise RequestError(
                f"unknown diffusers pipeline {pipeline!r}; choose one of {', '.join(PIPELINES)}"
            )
        self.model, self.pipeline_name = Path(model), pipeline
        self.device, self.dtype, self.steps, self.guidance = device, dtype, steps, guidance
        self.grid, rate, self.side = SHAPE[pipeline]
        self.rate, self.max_width = float(fps or rate), max_width
        self.masks = pipeline == "wan-vace"
        self.sound = pipeline == "ltx2-condition"
        if self.sound:
            self.audio = frozenset({"keep", "silence", "generate"})
        self._pipe: Any = None

    def fps(self, source_fps: float) -> float:
        return self.rate

    def check(self, plan: Plan) -> None:
        if plan.request.mask is not None and not self.masks:
            raise RequestError(
                f"the {self.pipeline_name} pipeline cannot work inside a mask; the wan-vace pipeline can "
                "(VIDMEM_DIFFUSERS_PIPELINE=wan-vace with a Wan VACE model folder)"
            )
        if plan.request.audio == "generate" and not self.sound:
            raise RequestError(
                f"the {self.pipeline_name} pipeline makes no sound; the ltx2-condition pipeline does "
                "(VIDMEM_DIFFUSERS_PIPELINE=ltx2-condition with an LTX-2 model folder)"
            )
        super().check(plan)

    def load(self) -> Any:
        if self._pipe is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from the folder, never the hub
            try:
                import diffusers
                import torch
            except ImportError as e:
                raise BackendError(f"the diffusers backend needs `pip install diffusers` ({e})") from None
            cls = getattr(diffusers, PIPELINES[self.pipeline_name])
            pipe = cls.from_pretrained(str(self.model), dtype=getattr(torch, self.dtype))
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe.to(self.device)
        return self._pipe

    def size(self, plan: Plan) -> tuple[int, int]:
        """The model's frame size: the source's shape, at most `max_width` wide, sides multiples of 32."""
        w, h, k = plan.source.width, plan.source.height, self.side
        scale = min(1.0, self.max_width / w)
        return max(k, int(w * scale) // k * k), max(k, int(h * scale) // k * k)

    def render(self, plan: Plan, out: Path, run: Run) -> Artifact:
        import torch
        from PIL import Image

        out.mkdir(parents=True, exist_ok=True)
        pipe = self.load()
        width, height = self.size(plan)
        images = {}
        for c in plan.conditions:
            frame = still(plan.source, c.frame, plan.source.fps, out / f"condition-{c.position}.png")
            images[c.position] = (
                Image.open(frame).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
            )
        seed = plan.request.seed if plan.request.seed is not None else 0
        steps = self.steps

        def step(pipeline: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            run.progress(0.9 * (i + 1) / steps)  # may raise Cancelled: the pipeline stops here
            return kwargs

        common = {
            "prompt": plan.prompt,
            "negative_prompt": plan.request.negative_prompt or None,
            "width": width,
            "height": height,
            "num_frames": plan.frames,
            "num_inference_steps": steps,
            "guidance_scale": self.guidance,
            "generator": torch.Generator(device="cpu").manual_seed(seed),
            "output_type": "np",
            "callback_on_step_end": step,
        }
        if self.pipeline_name == "wan-vace":
            video, mask = self._vace_inputs(plan, images, width, height)
            result = pipe(video=video, mask=mask, **common)
        elif self.pipeline_name == "ltx2-condition":
            from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

            conditions2 = [
                LTX2VideoCondition(frames=images[c.position], index=c.position, strength=c.strength)
                for c in plan.conditions
            ]
            result = pipe(conditions=conditions2 or None, frame_rate=float(plan.fps), **common)
        else:
            from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

            conditions = [
                LTXVideoCondition(image=images[c.position], frame_index=c.position, strength=c.strength)
                for c in plan.conditions
            ]
            result = pipe(conditions=conditions or None, frame_rate=int(round(plan.fps)), **common)
        frames = np.asarray(result.frames[0])  # (T, H, W, 3) in [0, 1]
        if frames.shape[0] != plan.frames:
            raise BackendError(f"the pipeline made {frames.shape[0]} frames, not {plan.frames}")
        raw = out / "model.mp4"
        _write(frames, plan.fps, raw)
        sound = None
        if plan.request.audio == "generate":
            sound = _write_sound(
                result.audio[0], int(pipe.vocoder.config.output_sampling_rate), out / "model.wav"
            )
        piece = conform(raw, plan, out / "insert.mp4", lambda f: run.progress(0.9 + 0.1 * f), sound)
        details = {
            "pipeline": type(pipe).__name__,
            "model": str(self.model),
            "model_size": [width, height],
            "model_frames": plan.frames,
            "model_fps": plan.fps,
            "steps": steps,
            "seed": seed,
            "conditions": [{"frame_index": c.position, "strength": c.strength} for c in plan.conditions],
            "mask": plan.request.mask.model_dump() if plan.request.mask is not None else None,
            "sound": "generated" if sound is not None else plan.request.audio,
            "renders": self.describe,
        }
        return Artifact.piece(piece, plan, self.name, details)

    def _vace_inputs(
        self, plan: Plan, images: dict[int, Any], width: int, height: int
    ) -> tuple[list[Any], list[Any]]:
        """VACE's `video` and `mask` (white: generate, black: keep). A retake starts from its span's
        own frames, masked inside the box (or whole); elsewhere known frames are kept, the rest made."""
        from PIL import Image, ImageDraw

        n = plan.frames
        gray = Image.new("RGB", (width, height), (128, 128, 128))
        keep, make = Image.new("L", (width, height), 0), Image.new("L", (width, height), 255)
        if plan.operation == "retake":
            span = (plan.end - plan.start) / plan.source.fps
            video = _span_frames(plan.source, plan.start / plan.source.fps, span, n, width, height)
            box = make
            if plan.request.mask is not None:
                m = plan.request.mask
                box = keep.copy()
                ImageDraw.Draw(box).rectangle(
                    [m.x * width, m.y * height, (m.x + m.width) * width - 1, (m.y + m.height) * height - 1],
                    fill=255,
                )
            return video, [box] * n
        video = [images.get(i, gray) for i in range(n)]
        mask = [keep if i in images else make for i in range(n)]
        return video, mask


def _span_frames(source: Source, start: float, seconds: float, n: int, width: int, height: int) -> list[Any]:
    """`n` frames evenly over [start, start + seconds) of `source`, at width x height."""
    from PIL import Image

    rate = n / max(seconds, 1e-3)
    cmd = [ffmpeg_path(), "-v", "error", "-nostdin", "-ss", f"{start:.6f}", "-t", f"{seconds + 1:.6f}", *opened(source),
           "-vf", f"setpts=PTS-STARTPTS,fps={rate:.6f},scale={width}:{height},tpad=stop_mode=clone:stop={n}",
           "-frames:v", str(n), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, timeout=600)
    size = width * height * 3
    if res.returncode != 0 or len(res.stdout) < n * size:
        raise BackendError(
            f"could not read the span's frames: {redact(res.stderr.decode(errors='replace'))[-300:]}"
        )
    return [Image.frombytes("RGB", (width, height), res.stdout[i * size : (i + 1) * size]) for i in range(n)]


def _write(frames: np.ndarray, fps: float, out: Path) -> None:
    """(T, H, W, 3) floats in [0, 1] to a near-lossless H.264 file."""
    t, h, w, _ = frames.shape
    data = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8).tobytes()
    cmd = [ffmpeg_path(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", f"{fps}", "-i", "-", "-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p", str(out)]  # fmt: skip
    res = subprocess.run(cmd, input=data, capture_output=True)
    if res.returncode != 0:
        raise BackendError(
            f"could not write the model's frames: {res.stderr.decode(errors='replace')[-300:]}"
        )


def _write_sound(audio: Any, rate: int, out: Path) -> Path:
    """The pipeline's audio ((channels, samples) floats in [-1, 1]) as a 16-bit WAV file."""
    import wave

    data = np.asarray(audio.float().cpu() if hasattr(audio, "cpu") else audio, dtype=np.float32)
    if data.ndim == 1:
        data = data[None]
    if data.size == 0:
        raise BackendError("the pipeline made no sound")
    pcm = (np.clip(data.T, -1, 1) * 32767).astype("<i2")  # interleaved (samples, channels)
    with wave.open(str(out), "wb") as f:
        f.setnchannels(pcm.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return out
