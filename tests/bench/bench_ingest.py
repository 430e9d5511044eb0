"""Ingestion throughput (x real time) and peak RSS: bbb_10min.mp4 against a 2-hour concatenation,
each with every stage and with the first slice's stages only (no vision stage, no LLM), side by side.

The claims checked: decoding is streamed in windows, so peak memory for 2 hours stays within 10% of
that for 10 minutes; and what the vision stage and the LLM captions add to time and memory. Each
ingestion runs `vidmem ingest` in a fresh process with a fresh home; the model cache is shared and
prepared first so no run pays for joining the whisper weights or converting the LLM.

Run: .venv/bin/python -m tests.bench.bench_ingest [--copies 12]
"""

from __future__ import annotations

import argparse
import json
import shutil

from tests.bench.common import SHARED, VIDMEM, WORK, machine, measure, write_results
from tests.media import make_long_clip, probe_duration

VARIANTS = {
    "all stages": {},
    "vision, no LLM": {"VIDMEM_LLM": "none"},
    "without vision and LLM": {"VIDMEM_VISION": "false", "VIDMEM_LLM": "none"},
    "vision at 4 frames a second, no LLM": {"VIDMEM_LLM": "none", "VIDMEM_VISION_FPS": "4"},
}
DEFAULT_VARIANTS = list(VARIANTS)[:3]  # the 4-a-second variant runs when asked for (ingest_fps4.md)


def ingest_once(path, tag: str, cache, variant: str = "all stages") -> dict:  # type: ignore[no-untyped-def]
    home = WORK / f"home-{tag}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "models").symlink_to(cache)
    env = {"VIDMEM_HOME": str(home), **VARIANTS[variant]}
    run = measure([str(VIDMEM), "ingest", str(path), "--json"], env=env)
    if run.returncode != 0:
        raise RuntimeError(f"ingest of {path} failed: {run.stderr[-1000:]}")
    video_id = json.loads(run.stdout)["video_id"]
    show = measure([str(VIDMEM), "show", video_id, "--json"], env={"VIDMEM_HOME": str(home)})
    timeline = json.loads(show.stdout)
    duration = probe_duration(path)
    return {
        "video": path.name,
        "variant": variant,
        "duration_s": round(duration, 1),
        "wall_s": round(run.seconds, 1),
        "x_realtime": round(duration / run.seconds, 2),
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "shots": len(timeline["shots"]),
        "cues": len(timeline["transcript"]),
        "scenes": len(timeline["scenes"]),
        "chapters": len(timeline["chapters"]),
        "screen_text": len(timeline["screen_text"]),
        "tags": sum(len(sh["tags"]) for sh in timeline["shots"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=12, help="copies of bbb_10min.mp4 in the long video")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS)
    ap.add_argument("--short", action="store_true", help="bbb_10min.mp4 only, not the long video")
    ap.add_argument("--out", default="ingest", help="results name in docs/benchmarks")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    cache = WORK / "models"
    cache.mkdir(exist_ok=True)
    measure([str(VIDMEM), "models"], env={"VIDMEM_HOME": str(WORK / "home-models")})
    shutil.copytree(WORK / "home-models" / "models", cache, dirs_exist_ok=True)

    short = SHARED / "media" / "bbb_10min.mp4"
    long = make_long_clip(WORK, short, args.copies)
    rows = []
    videos = ((short, "10min"),) if args.short else ((short, "10min"), (long, "long"))
    for path, tag in videos:
        for i, variant in enumerate(args.variants):
            rows.append(ingest_once(path, f"{tag}-{i}", cache, variant))

    def row(video: str, variant: str) -> dict | None:  # type: ignore[type-arg]
        return next((r for r in rows if r["video"] == video and r["variant"] == variant), None)

    data: dict = {"machine": machine(), "rows": rows}  # type: ignore[type-arg]
    for path in (short, long):
        base = row(path.name, "without vision and LLM")
        for variant, key in (
            ("vision, no LLM", "vision"),
            ("vision at 4 frames a second, no LLM", "vision_fps4"),
            ("all stages", "all_stages"),
        ):
            r = row(path.name, variant)
            if base and r:
                data[f"{key}_time_ratio_{path.name}"] = round(r["wall_s"] / base["wall_s"], 3)
                data[f"{key}_rss_ratio_{path.name}"] = round(r["peak_rss_mb"] / base["peak_rss_mb"], 3)
    full = [row(p.name, "all stages") for p in (short, long)]
    if full[0] and full[1]:
        data["peak_rss_ratio_long_vs_short"] = round(full[1]["peak_rss_mb"] / full[0]["peak_rss_mb"], 3)
    lines = [
        "# Ingestion: throughput and peak memory",
        "",
        f"Machine: {data['machine']}. Command: `.venv/bin/python -m tests.bench.bench_ingest "
        + ("--short" if args.short else f"--copies {args.copies}")
        + (
            f" --variants {' '.join(repr(v) for v in args.variants)}"
            if args.variants != DEFAULT_VARIANTS
            else ""
        )
        + (f" --out {args.out}" if args.out != "ingest" else "")
        + "`.",
        "Each row is one `vidmem ingest` in a fresh process; peak RSS is sampled every 100 ms over the",
        "process and its children (the visual worker and ffmpeg included). *All stages*: shots, vision",
        "(OCR, labels, faces/people, token-merged EfficientNet vectors), transcript (whisper base + VAD),",
        "scenes/chapters, captions condensed by SmolLM2, embeddings. *Vision, no LLM*: `VIDMEM_LLM=none`",
        "(extractive captions); *at 4 frames a second*: `VIDMEM_VISION_FPS=4` besides (4 frames a second of",
        "shot encoded for the visual vectors and labels instead of 1). *Without vision and LLM*:",
        "`VIDMEM_VISION=false VIDMEM_LLM=none` (the first slice's stages, plus scenes/chapters and",
        "extractive captions).",
        "",
        "| video | stages | duration | wall | × real time | peak RSS | shots | scenes | chapters | screen text | tags | cues |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['video']} | {r['variant']} | {r['duration_s']} s | {r['wall_s']} s | {r['x_realtime']}× | "
            f"{r['peak_rss_mb']} MB | {r['shots']} | {r['scenes']} | {r['chapters']} | {r['screen_text']} | "
            f"{r['tags']} | {r['cues']} |"
        )
    lines.append("")
    if "peak_rss_ratio_long_vs_short" in data:
        ratio = data["peak_rss_ratio_long_vs_short"]
        verdict = "within" if ratio <= 1.10 else "NOT within"
        lines.append(f"Peak RSS, long / short, all stages: **{ratio:.3f}** ({verdict} the 10% target).")
    for path in (short, long):
        for key, what in (
            ("vision", "The vision stage"),
            ("vision_fps4", "The vision stage at 4 frames a second"),
            ("all_stages", "Vision and the LLM together"),
        ):
            if f"{key}_time_ratio_{path.name}" in data:
                lines.append(
                    f"{what} on {path.name}: wall time **{data[f'{key}_time_ratio_{path.name}']:.2f}×**, "
                    f"peak RSS **{data[f'{key}_rss_ratio_{path.name}']:.2f}×** of the run without vision and LLM."
                )
    lines.append("")
    write_results(args.out, data, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
