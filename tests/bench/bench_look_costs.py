"""Where the vision stage's CPU goes: each model's thread CPU seconds inside one visual pass over
bbb_10min.mp4 (`run_job`, shots and looks, in this process), and EfficientNet eager against the
ONNX graph it runs as, on the same frames in one run.

The floor: every model call of the pass is recorded (its frames kept) and replayed afterwards one
after another on one thread, nothing else running: what the models cost on their own. However the
work is scheduled, the pass cannot take less wall time than (shots-only CPU + that cost) / cores,
nor less than the shots-only pass; against the shots-only pass measured in the same run, that is
the least the vision stage can add on this machine with these models and settings.

Run: .venv/bin/python -m tests.bench.bench_look_costs
"""

from __future__ import annotations

import collections
import os
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tests.bench.common import SHARED, machine, thread_cpu, write_results


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


Call = tuple[str, Callable[..., Any], tuple, dict[str, Any]]


def record(owner: Any, name: str, label: str, calls: list[Call]) -> None:
    """Wrap `owner.name` to keep each call (its bound method and arguments) for a replay."""
    inner: Callable[..., Any] = getattr(owner, name)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append((label, getattr(self, "_replay_" + name), args, kwargs))
        return inner(self, *args, **kwargs)

    setattr(owner, "_replay_" + name, inner)
    setattr(owner, name, wrapper)


def replay(calls: list[Call]) -> dict[str, float]:
    """Each recorded call again, in order, on this thread alone: its thread CPU seconds per model."""
    alone: dict[str, float] = collections.defaultdict(float)
    firsts = {label: (method, args, kwargs) for label, method, args, kwargs in reversed(calls)}
    for method, args, kwargs in firsts.values():
        method(*args, **kwargs)  # this thread's engines loaded before the clock starts
    for label, method, args, kwargs in calls:
        t = time.thread_time()
        method(*args, **kwargs)
        alone[label] += time.thread_time() - t
    return dict(alone)


def floor(base_cpu: float, base_wall: float, models_cpu: float, cores: int) -> float:
    """The least wall time a pass doing `models_cpu` more work than the base can take, over the base's."""
    return max(base_wall, (base_cpu + models_cpu) / cores) / base_wall


def main() -> None:
    import torch

    import indexers.vision as vision
    from indexers.decode import DecodeOptions, probe, sample_frames
    from indexers.shots import ShotOptions
    from indexers.visual import LookOptions, VisualJob, run_job
    from memory.runtime.images import EfficientNetEncoder

    video = SHARED / "media" / "bbb_10min.mp4"
    info = probe(video)
    enc = EfficientNetEncoder()
    enc.features_and_logits(np.zeros((1, 720, 1280, 3), np.uint8))  # loaded before the clock starts

    spent: dict[str, float] = collections.defaultdict(float)
    lock = threading.Lock()
    calls: list[Call] = []
    for owner, name, label in (
        (vision.RapidOCRReader, "read", "OCR (keyframes, probes, text followed)"),
        (vision.OpenCVPeopleDetector, "detect", "faces + people (keyframes)"),
        (EfficientNetEncoder, "features_and_logits", "EfficientNet (changed frames)"),
    ):
        record(owner, name, label, calls)  # the call kept for the replay, then timed in the pass
        thread_cpu(owner, name, label, spent, lock)
    cpu, wall = _cpu(), time.perf_counter()
    shots = run_job(VisualJob(info, DecodeOptions(), ShotOptions(), look=None)).shots
    assert shots is not None
    shots_cpu, shots_wall = _cpu() - cpu, time.perf_counter() - wall
    cpu, wall = _cpu(), time.perf_counter()
    looked = run_job(VisualJob(info, DecodeOptions(), ShotOptions(), look=LookOptions()))
    look_cpu, look_wall = _cpu() - cpu, time.perf_counter() - wall
    assert looked.shots is not None and len(looked.shots.shots) == len(shots.shots)

    torch.set_num_threads(1)  # one core each, as in the visual worker
    alone = replay(calls)
    frames_in = collections.Counter(c[0] for c in calls)
    frames = np.stack([f for _, _, f in sample_frames(info, [30.0 * k + 5 for k in range(32)])])
    per_frame = {}
    for label, eager in (("ONNX Runtime", False), ("eager torch", True)):
        enc.features_and_logits(frames[:4], eager=eager)
        t = time.thread_time()
        enc.features_and_logits(frames, eager=eager)
        per_frame[label] = round(1000 * (time.thread_time() - t) / len(frames), 1)

    parts = {k: round(v, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    cores = os.cpu_count() or 1
    total = sum(alone.values())
    floors = {
        "all models": floor(shots_cpu, shots_wall, total, cores),
        **{
            f"without {k.split(' (')[0]}": floor(shots_cpu, shots_wall, total - v, cores)
            for k, v in alone.items()
        },
    }
    data = {
        "machine": machine(),
        "shots": len(shots.shots),
        "shots_only": {"wall_s": round(shots_wall, 1), "cpu_s": round(shots_cpu, 1)},
        "shots_and_looks": {"wall_s": round(look_wall, 1), "cpu_s": round(look_cpu, 1)},
        "model_cpu_s": parts,
        "model_cpu_alone_s": {k: round(alone[k], 1) for k in parts},
        "calls": dict(frames_in),
        "cores": cores,
        "floor_ratio": {k: round(v, 2) for k, v in floors.items()},
        "efficientnet_ms_per_frame": per_frame,
    }
    lines = [
        "# Where the vision stage's CPU goes",
        "",
        f"Machine: {data['machine']}. Command: `.venv/bin/python -m tests.bench.bench_look_costs`. "
        f"bbb_10min.mp4, {len(shots.shots)} shots, one visual pass in this process (models loaded first); "
        "CPU is the process's, all threads; each model's share is the thread CPU time of its calls.",
        "",
        "| pass | wall s | CPU s |",
        "|---|---:|---:|",
        f"| shots only | {shots_wall:.1f} | {shots_cpu:.1f} |",
        f"| shots and looks | {look_wall:.1f} | {look_cpu:.1f} |",
        "",
        "| model | calls | CPU s in the pass | CPU s alone, one thread |",
        "|---|---:|---:|---:|",
        *[f"| {k} | {frames_in[k]} | {v} | {alone[k]:.1f} |" for k, v in parts.items()],
        "",
        "*Alone*: each call of the pass replayed afterwards on one thread, nothing else running. The "
        f"floor on {cores} cores: the pass cannot take less than max(shots-only wall, (shots-only CPU "
        "+ the models alone) / cores), over the shots-only pass of this run:",
        "",
        "| models | floor: wall over shots only |",
        "|---|---:|",
        *[f"| {k} | {v:.2f}x |" for k, v in floors.items()],
        "",
        "EfficientNet-Lite0 on 32 frames of 1280x720, one core, ms a frame (resizing to 224 px included): "
        + ", ".join(f"{k} {v}" for k, v in per_frame.items())
        + ".",
    ]
    write_results("look_costs", data, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
