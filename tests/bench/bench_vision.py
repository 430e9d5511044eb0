"""The look inside the shots (indexers.visual.run_look) as it was and as it is, side by side in one
run on the same shots of bbb_10min.mp4: wall time, the time each model took (summed over threads),
and whether the two found the same things in every shot.

*Before*: EfficientNet in eager mode, one shot at a time, every sampled frame encoded (decoding
still goes on beside the one analysing thread, which the code before these changes did not do: the
speed-up over that code is larger than the one reported).
*After* (the defaults): the frozen TorchScript graph, `LookOptions.workers` shots at once on threads
while decoding goes on, and still frames taking the features of the frame they repeat
(`VisionOptions.still_below`).

Same findings means, per shot: the same on-screen lines, the same labels, the same face and person
counts. Both runs decode the same frames, so any difference comes from the speed-ups.

Run: .venv/bin/python -m tests.bench.bench_vision [--video PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import indexers.vision as vision
import indexers.visual as visual
from indexers.decode import DecodeOptions, probe
from indexers.shots import ShotOptions
from memory.runtime.images import EfficientNetEncoder
from tests.bench.common import SHARED, machine, write_results


class Clock:
    """Seconds spent in each wrapped call, summed over the threads that made them."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.lock = threading.Lock()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t

        return timed

    def frames(self, name: str, gen: Iterator[Any]) -> Iterator[Any]:
        while True:
            t = time.perf_counter()
            try:
                item = next(gen)
            except StopIteration:
                return
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t
            yield item


def look(
    info: Any, shots: list[tuple[float, float]], before: bool
) -> tuple[list[Any], float, dict[str, float]]:
    clock = Clock()
    saved = (
        vision.RapidOCRReader.read,
        vision.OpenCVPeopleDetector.detect,
        EfficientNetEncoder.features_and_logits,
        visual.sample_frames,
    )
    original = EfficientNetEncoder.features_and_logits
    encode = original
    if before:  # the eager module, and every frame encoded

        def eager(self: EfficientNetEncoder, frames: np.ndarray, **_: Any) -> tuple[np.ndarray, np.ndarray]:
            return original(self, frames, eager=True)

        encode = eager  # type: ignore[assignment]
    vision.RapidOCRReader.read = clock.wrap("ocr", vision.RapidOCRReader.read)  # type: ignore[method-assign]
    vision.OpenCVPeopleDetector.detect = clock.wrap("faces+people", vision.OpenCVPeopleDetector.detect)  # type: ignore[method-assign]
    EfficientNetEncoder.features_and_logits = clock.wrap("efficientnet", encode)  # type: ignore[method-assign]
    decode = visual.sample_frames
    visual.sample_frames = lambda *a, **k: clock.frames("decode (waited)", decode(*a, **k))  # type: ignore[assignment]
    try:
        opts = visual.LookOptions(workers=1) if before else visual.LookOptions()
        t = time.perf_counter()
        seeing = vision.VisionOptions(still_below=0.0) if before else vision.VisionOptions()
        looks = visual.run_look(info, shots, opts, vision=seeing)
        wall = time.perf_counter() - t
    finally:
        (
            vision.RapidOCRReader.read,
            vision.OpenCVPeopleDetector.detect,
            EfficientNetEncoder.features_and_logits,
            visual.sample_frames,
        ) = saved  # type: ignore[method-assign]
    return looks, wall, clock.spent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", type=Path, default=SHARED / "media" / "bbb_10min.mp4")
    args = ap.parse_args()
    info = probe(args.video)
    found = visual.run_visual(visual.VisualJob(info, DecodeOptions(), ShotOptions()))
    shots = [(s.start, s.end) for s in found.shots]
    EfficientNetEncoder().features_and_logits(np.zeros((1, 8, 8, 3), np.uint8))  # load and trace first
    runs = {name: look(info, shots, name == "before") for name in ("before", "after")}
    (old, t_old, s_old), (new, t_new, s_new) = runs["before"], runs["after"]

    def same(field: str, a: Any, b: Any) -> bool:
        if field == "texts":
            return [x.text for x in a.texts] == [x.text for x in b.texts]
        if field == "labels":
            return [n for n, _ in a.labels] == [n for n, _ in b.labels]
        return (a.faces, a.people) == (b.faces, b.people)

    agree = {
        f: sum(same(f, a, b) for a, b in zip(old, new, strict=True)) for f in ("texts", "labels", "people")
    }
    data = {
        "machine": machine(),
        "video": args.video.name,
        "shots": len(shots),
        "frames": sum(x.frames for x in new),
        "wall_s": {"before": round(t_old, 1), "after": round(t_new, 1)},
        "speedup": round(t_old / t_new, 2),
        "spent_s": {
            "before": {k: round(v, 1) for k, v in s_old.items()},
            "after": {k: round(v, 1) for k, v in s_new.items()},
        },
        "same_findings": agree,
        "lines": {"before": sum(len(x.texts) for x in old), "after": sum(len(x.texts) for x in new)},
        "tags": {
            "before": sum(len(x.labels) + (x.faces > 0) + (x.people > 0) for x in old),
            "after": sum(len(x.labels) + (x.faces > 0) + (x.people > 0) for x in new),
        },
        "after_options": {
            "look": dataclasses.asdict(visual.LookOptions()),
            "still_below": vision.VisionOptions().still_below,
        },
    }
    keys = sorted(set(s_old) | set(s_new))
    lines = [
        "# Looking inside shots: before and after the speed-ups, in one run",
        "",
        f"Machine: {data['machine']}. Command: `.venv/bin/python -m tests.bench.bench_vision`. "
        f"{args.video.name}: {len(shots)} shots, {data['frames']} sampled frames; the shots found once, "
        "then `indexers.visual.run_look` twice on them. *Before*: eager EfficientNet, one shot at a "
        "time (decoding goes on beside it), every frame encoded. *After*: the defaults (frozen graph, "
        f"{visual.LookOptions().workers} shots at once on threads, still frames reuse features).",
        "",
        "| | wall | " + " | ".join(keys) + " |",
        "|---|---|" + "---|" * len(keys),
        f"| before | {t_old:.1f} s | " + " | ".join(f"{s_old.get(k, 0):.1f} s" for k in keys) + " |",
        f"| after | {t_new:.1f} s | " + " | ".join(f"{s_new.get(k, 0):.1f} s" for k in keys) + " |",
        "",
        f"Speed-up of the look: **{data['speedup']:.2f}×**. Model times are summed over threads; "
        "`decode (waited)` is the time the decoding thread spent producing frames, waits for the "
        "cores included.",
        "",
        f"Same findings in {agree['texts']}/{len(shots)} shots for on-screen text, {agree['labels']}/{len(shots)} "
        f"for labels, {agree['people']}/{len(shots)} for face and person counts "
        f"(lines read: {data['lines']['before']} before, {data['lines']['after']} after).",
        "",
    ]
    write_results("vision", data, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
