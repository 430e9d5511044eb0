"""Ingestion throughput (x real time) and peak RSS: bbb_10min.mp4 against a 2-hour concatenation.

The claim checked: decoding is streamed in windows, so peak memory for 2 hours stays within 10% of
that for 10 minutes. Each ingestion runs `vidmem ingest` in a fresh process with a fresh home; the
model cache is shared and prepared first so neither run pays for joining the whisper weights.

Run: .venv/bin/python -m tests.bench.bench_ingest [--copies 12]
"""

from __future__ import annotations

import argparse
import json
import shutil

from tests.bench.common import SHARED, VIDMEM, WORK, machine, measure, write_results
from tests.media import make_long_clip, probe_duration


def ingest_once(path, tag: str, cache) -> dict:  # type: ignore[no-untyped-def]
    home = WORK / f"home-{tag}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "models").symlink_to(cache)
    run = measure([str(VIDMEM), "ingest", str(path), "--json"], env={"VIDMEM_HOME": str(home)})
    if run.returncode != 0:
        raise RuntimeError(f"ingest of {path} failed: {run.stderr[-1000:]}")
    video_id = json.loads(run.stdout)["video_id"]
    show = measure([str(VIDMEM), "show", video_id, "--json"], env={"VIDMEM_HOME": str(home)})
    timeline = json.loads(show.stdout)
    duration = probe_duration(path)
    return {
        "video": path.name,
        "duration_s": round(duration, 1),
        "wall_s": round(run.seconds, 1),
        "x_realtime": round(duration / run.seconds, 2),
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "shots": len(timeline["shots"]),
        "cues": len(timeline["transcript"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=12, help="copies of bbb_10min.mp4 in the long video")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    cache = WORK / "models"
    cache.mkdir(exist_ok=True)
    measure([str(VIDMEM), "models"], env={"VIDMEM_HOME": str(WORK / "home-models")})
    shutil.copytree(WORK / "home-models" / "models", cache, dirs_exist_ok=True)

    short = SHARED / "media" / "bbb_10min.mp4"
    long = make_long_clip(WORK, short, args.copies)
    rows = [ingest_once(short, "10min", cache), ingest_once(long, "long", cache)]
    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    data = {"machine": machine(), "rows": rows, "peak_rss_ratio_long_vs_short": round(ratio, 3)}
    lines = [
        "# Ingestion: throughput and peak memory",
        "",
        f"Machine: {data['machine']}. Command: `.venv/bin/python -m tests.bench.bench_ingest --copies {args.copies}`.",
        "Each row is one `vidmem ingest` (shots, transcript with whisper base + VAD, embeddings) in a fresh",
        "process; peak RSS is sampled every 100 ms over the process and its children (ffmpeg included).",
        "",
        "| video | duration | wall | × real time | peak RSS | shots | cues |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['video']} | {r['duration_s']} s | {r['wall_s']} s | {r['x_realtime']}× | "
            f"{r['peak_rss_mb']} MB | {r['shots']} | {r['cues']} |"
        )
    verdict = "within" if ratio <= 1.10 else "NOT within"
    lines += ["", f"Peak RSS, long / short: **{ratio:.3f}** ({verdict} the 10% target).", ""]
    write_results("ingest", data, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
