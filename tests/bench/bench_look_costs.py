"""Where the vision stage's CPU goes: each model's thread CPU seconds inside one visual pass over
bbb_10min.mp4 (`run_job`, shots and looks, in this process), and EfficientNet eager against the
ONNX graph it runs as, on the same frames in one run.

Run: .venv/bin/python -m tests.bench.bench_look_costs
"""

from __future__ import annotations

import collections
import resource
import threading
import time

import numpy as np

from tests.bench.common import SHARED, machine, thread_cpu, write_results


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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
    thread_cpu(vision.RapidOCRReader, "read", "OCR (keyframes, probes, text followed)", spent, lock)
    thread_cpu(vision.OpenCVPeopleDetector, "detect", "faces + people (keyframes)", spent, lock)
    thread_cpu(EfficientNetEncoder, "features_and_logits", "EfficientNet (changed frames)", spent, lock)
    cpu, wall = _cpu(), time.perf_counter()
    shots = run_job(VisualJob(info, DecodeOptions(), ShotOptions(), look=None)).shots
    shots_cpu, shots_wall = _cpu() - cpu, time.perf_counter() - wall
    cpu, wall = _cpu(), time.perf_counter()
    looked = run_job(VisualJob(info, DecodeOptions(), ShotOptions(), look=LookOptions()))
    look_cpu, look_wall = _cpu() - cpu, time.perf_counter() - wall
    assert looked.shots is not None and len(looked.shots.shots) == len(shots.shots)

    torch.set_num_threads(1)  # one core each, as in the visual worker
    frames = np.stack([f for _, _, f in sample_frames(info, [30.0 * k + 5 for k in range(32)])])
    per_frame = {}
    for label, eager in (("ONNX Runtime", False), ("eager torch", True)):
        enc.features_and_logits(frames[:4], eager=eager)
        t = time.thread_time()
        enc.features_and_logits(frames, eager=eager)
        per_frame[label] = round(1000 * (time.thread_time() - t) / len(frames), 1)

    parts = {k: round(v, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    data = {
        "machine": machine(),
        "shots": len(shots.shots),
        "shots_only": {"wall_s": round(shots_wall, 1), "cpu_s": round(shots_cpu, 1)},
        "shots_and_looks": {"wall_s": round(look_wall, 1), "cpu_s": round(look_cpu, 1)},
        "model_cpu_s": parts,
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
        "| model | CPU s |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in parts.items()],
        "",
        "EfficientNet-Lite0 on 32 frames of 1280x720, one core, ms a frame (resizing to 224 px included): "
        + ", ".join(f"{k} {v}" for k, v in per_frame.items())
        + ".",
    ]
    write_results("look_costs", data, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
