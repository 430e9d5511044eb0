"""A capacity model for 10,000 hours of video a day, from per-unit costs measured here.

Measured in this run: one ingestion of bbb_10min.mp4 with every stage (vision, the packaged LLM
condensing captions) into a fresh PostgreSQL catalog with the `postgres` index backend (pgvector
vectors, full-text postings), the way a scaled-out deployment stores it. Per hour of video: CPU
core-seconds (this process and its children: the visual worker, ffmpeg), rows per kind, bytes on
disk per relation, and the LLM's prompt and completion tokens. Then an hour of talk: the
transcripts of TutorialVQA's tutorial videos (../shared/eval; real narration, their own timings), in
order until an hour is reached, ingested as subtitle tracks with the same packaged LLM condensing
their captions: the LLM tokens and CPU per hour of talk (a film without dialogue asks the LLM for
little; a talk for much more).

Read from the other benchmarks' results (run them first; the table names each source):
- docs/benchmarks/asr.json: speech recognition's cost per hour of speech (bbb has no dialogue, so
  its ingestion does not pay it; talks and newsrooms do);
- docs/benchmarks/ray.json: the speed-up of 2 and 3 Ray worker nodes over one, on this machine;
- docs/benchmarks/pgvector.json: pgvector search p50/p95 and recall at the sizes measured.

What is not measured here and is labelled as an assumption in the table: GPU throughput for the
LLM (no GPU was lent to the sessions that wrote this), so GPU-hours are given for a stated range of
tokens per second per GPU.

Run: make postgres && .venv/bin/python -m tests.bench.bench_capacity
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

import memory.runtime.llm as llm_runtime
from indexers import ingest
from indexers.pipeline import IngestOptions
from memory import Store
from tests.bench.common import RESULTS, SHARED, WORK, fresh_db, machine, write_results

HOURS_PER_DAY = 10_000
GPU_TOKENS_PER_S = (2_000, 10_000)
"""Assumed LLM throughput per GPU (prompt + completion tokens per second, batched, a 0.5-2 B model
on vLLM): a range, not a measurement; the GPU-hours scale inversely with it."""
HEADROOM = 1.5
"""Provisioned cores over the mean need: peaks, retries, re-ingestion."""
NODE_CORES = 16


def core_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def read(name: str) -> Any:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=SHARED / "media" / "bbb_10min.mp4")
    ap.add_argument("--url", default=os.environ.get("VIDMEM_TEST_PGVECTOR_URL"))
    ap.add_argument("--talk-hours", type=float, default=1.0, help="hours of TutorialVQA talk to ingest")
    args = ap.parse_args()
    if not args.url:
        raise SystemExit("no PostgreSQL with pgvector: run `make postgres` or pass --url")

    tokens = {"prompt": 0, "completion": 0}
    count = llm_runtime.LLM._count

    def counting(self: llm_runtime.LLM, prompt: int, completion: int) -> None:
        tokens["prompt"] += prompt
        tokens["completion"] += completion
        count(self, prompt, completion)

    llm_runtime.LLM._count = counting  # type: ignore[method-assign]

    url = fresh_db(args.url)
    home = WORK / "capacity" / "home"
    store = Store(home, url, index="postgres")
    cpu0, t0 = core_seconds(), time.perf_counter()
    result = ingest(store, args.video, IngestOptions(library="capacity"), cache_dir=WORK / "models")
    wall, cpu = time.perf_counter() - t0, core_seconds() - cpu0
    hours = result.duration / 3600
    with store.engine.connect() as c:
        rows = dict(c.execute(text("SELECT kind, count(*) FROM embeddings GROUP BY kind")).all())  # type: ignore[arg-type]
        vector_rows = dict(
            c.execute(text("SELECT modality, count(*) FROM embeddings GROUP BY modality")).all()
        )  # type: ignore[arg-type]
        sizes = dict(
            c.execute(  # type: ignore[arg-type]
                text(
                    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind = 'r'"
                )
            ).all()
        )
        database = int(c.scalar(text("SELECT pg_database_size(current_database())")) or 0)
    film_tokens = dict(tokens)  # the counter goes on counting the talk
    talk = measure_talk(store, args.talk_hours, tokens)
    store.close()
    vectors = sum(v for k, v in sizes.items() if k.startswith("vidmem_vec_"))
    per_hour = {
        "core_s": cpu / hours,
        "wall_s_2_cores": wall / hours,
        "rows": sum(rows.values()) / hours,
        "bytes_catalog": (sum(sizes.values()) - vectors - sizes.get("vidmem_lexemes", 0)) / hours,
        "bytes_vectors": vectors / hours,
        "bytes_lexemes": sizes.get("vidmem_lexemes", 0) / hours,
        "bytes_database": sum(sizes.values()) / hours,  # the tables, not the empty database's own ~8 MB
        "prompt_tokens": film_tokens["prompt"] / hours,
        "completion_tokens": film_tokens["completion"] / hours,
    }

    asr = read("asr")
    asr_row = next((r for r in asr["rows"] if r["input"].endswith("_x6.m4a")), None) if asr else None
    asr_core_s_per_hour = (
        asr_row["faster_whisper_alone_s"] * 2 / (asr["clip_s"] * 6 / 3600) if asr_row else None
    )  # 2 cores busy for its wall time: an upper bound on its core-seconds
    ray = read("ray")
    pg = read("pgvector")

    day = HOURS_PER_DAY
    core_h_day = day * per_hour["core_s"] / 3600
    speech_core_h_day = day * asr_core_s_per_hour / 3600 if asr_core_s_per_hour else None
    cores = core_h_day / 24 * HEADROOM
    cores_speech = (core_h_day + (speech_core_h_day or 0)) / 24 * HEADROOM
    llm_tokens_day = day * (per_hour["prompt_tokens"] + per_hour["completion_tokens"])
    gpu_hours = [llm_tokens_day / rate / 3600 for rate in GPU_TOKENS_PER_S]
    talk_tokens_day = day * (talk["prompt_tokens_per_hour"] + talk["completion_tokens_per_hour"])
    talk_gpu_hours = [talk_tokens_day / rate / 3600 for rate in GPU_TOKENS_PER_S]
    gib = 1024**3
    data = {
        "machine": machine(),
        "video": args.video.name,
        "duration_s": round(result.duration, 1),
        "measured": {
            "wall_s": round(wall, 1),
            "core_s": round(cpu, 1),
            "rows": rows,
            "rows_by_modality": vector_rows,
            "bytes": sizes,
            "database_bytes": database,
            "tokens": film_tokens,
        },
        "per_video_hour": {k: round(v, 1) for k, v in per_hour.items()},
        "asr_core_s_per_speech_hour": round(asr_core_s_per_hour, 1) if asr_core_s_per_hour else None,
        "talk": talk,
        "day": {
            "video_hours": day,
            "core_hours": round(core_h_day),
            "core_hours_with_speech": round(core_h_day + (speech_core_h_day or 0)),
            "cores": round(cores),
            "cores_with_speech": round(cores_speech),
            "nodes_16_cores": round(cores_speech / NODE_CORES + 0.5),
            "rows": round(day * per_hour["rows"]),
            "database_gib": round(day * per_hour["bytes_database"] / gib, 2),
            "vectors_gib": round(day * per_hour["bytes_vectors"] / gib, 2),
            "llm_tokens": round(llm_tokens_day),
            "gpu_hours": [round(g, 1) for g in gpu_hours],
            "llm_tokens_talk": round(talk_tokens_day),
            "gpu_hours_talk": [round(g, 1) for g in talk_gpu_hours],
        },
    }
    d = data["day"]
    ray_line = "not run (docs/benchmarks/ray.json missing)"
    if ray:
        one = next((r["seconds"] for r in ray["rows"] if r["workers"] == 1), None)
        parts = [
            f"{r['workers']} workers {one / r['seconds']:.2f}×"
            for r in ray["rows"]
            if r["workers"] > 1 and one
        ]
        ray_line = (
            ", ".join(parts) + " over one (docs/benchmarks/ray.md; 2 cores: a third worker only shares them)"
        )
    pg_line = "not run"
    if pg:
        pg_line = "; ".join(
            f"{r['n']:,} rows ({r['queries']}, ef_search {r.get('ef_search', 128)}): p50 {r['pgvector']['p50_ms']} ms, "
            f"p95 {r['pgvector']['p95_ms']} ms, recall@10 {r['pgvector']['recall10']}"
            for r in pg["results"]
        )
    lines = [
        "# Capacity: 10,000 hours of video a day",
        "",
        f"Machine: {data['machine']}. Command: `make postgres && .venv/bin/python -m tests.bench.bench_capacity`.",
        f"Per-unit costs measured on {args.video.name} ({result.duration:.0f} s; a film: shots, on-screen",
        "text and tags, no dialogue), ingested with every stage into PostgreSQL with the `postgres` index",
        "backend; scaled linearly per hour of video (docs/benchmarks/ingest.md shows ingestion cost and",
        "memory staying flat from 10 minutes to 2 hours).",
        "",
        "## Measured per hour of video",
        "",
        "| quantity | per video hour | source |",
        "|---|---:|---|",
        f"| CPU, every stage but speech (vision, captions by the packaged LLM on CPU) | {per_hour['core_s'] / 3600:.2f} core-hours | this run |",
        "| CPU, speech recognition (whisper base, per hour of speech) | "
        + (f"{asr_core_s_per_hour / 3600:.2f} core-hours" if asr_core_s_per_hour else "n/a")
        + " | docs/benchmarks/asr.json (wall × 2 cores: an upper bound) |",
        f"| embedding rows (windows, shots, scenes, chapters, visual vectors) | {per_hour['rows']:,.0f} | this run |",
        f"| catalog tables (PostgreSQL, indexes included) | {per_hour['bytes_catalog'] / 2**20:.1f} MiB | this run |",
        f"| vector tables (pgvector, HNSW included) | {per_hour['bytes_vectors'] / 2**20:.1f} MiB | this run |",
        f"| full-text postings (tsvector, GIN included) | {per_hour['bytes_lexemes'] / 2**20:.2f} MiB | this run |",
        f"| LLM tokens (prompt + completion, caption condensing) | {per_hour['prompt_tokens']:,.0f} + {per_hour['completion_tokens']:,.0f} | this run: a film without dialogue, where the LLM condenses only the spans whose facts outgrow a caption |",
        f"| LLM tokens per hour of talk (prompt + completion) | {talk['prompt_tokens_per_hour']:,.0f} + {talk['completion_tokens_per_hour']:,.0f} | this run: {talk['tracks']} TutorialVQA transcripts, {talk['hours']:.2f} h of narration, as subtitle tracks |",
        f"| CPU per hour of talk, transcript given (structure, captions by the packaged LLM, embeddings) | {talk['core_s_per_hour'] / 3600:.2f} core-hours | this run; speech recognition is the row above |",
        "",
        "## For 10,000 video hours a day",
        "",
        "| quantity | per day | how |",
        "|---|---:|---|",
        f"| CPU core-hours, film-like video | {d['core_hours']:,} | 10,000 × the measured core-hours |",
        f"| CPU core-hours, every hour also speech | {d['core_hours_with_speech']:,} | plus whisper per hour of speech |",
        f"| ingest cores provisioned | {d['cores']:,} to {d['cores_with_speech']:,} | core-hours / 24 × {HEADROOM} headroom |",
        f"| Ray worker nodes of {NODE_CORES} cores | {d['nodes_16_cores']:,} | with speech; one Ray task per video (docs/configuration.md) |",
        f"| new embedding rows | {d['rows']:,} | |",
        f"| database growth | {d['database_gib']:,} GiB/day ({d['database_gib'] * 365 / 1024:,.1f} TiB/year) | catalog + vectors + postings |",
        f"| of which vectors (pgvector) | {d['vectors_gib']:,} GiB/day | HNSW graphs grow with them |",
        f"| LLM tokens, film-like | {d['llm_tokens']:,} | |",
        f"| LLM tokens, every hour talk | {d['llm_tokens_talk']:,} | |",
        f"| GPU-hours for the LLM (vLLM), film-like | {d['gpu_hours'][1]:,} to {d['gpu_hours'][0]:,} | **assumed** {GPU_TOKENS_PER_S[1]:,} to {GPU_TOKENS_PER_S[0]:,} tokens/s per GPU: not measured (no GPU lent) |",
        f"| GPU-hours for the LLM (vLLM), every hour talk | {d['gpu_hours_talk'][1]:,} to {d['gpu_hours_talk'][0]:,} | the same assumption |",
        "",
        f"Scaling measured: Ray ingestion {ray_line}. Search: pgvector {pg_line} (docs/benchmarks/pgvector.md).",
        "",
        "What the model leaves out: the media store (the videos themselves dominate storage: bbb_10min.mp4",
        "is 50 MB for 10 minutes, 300 MB an hour, 2.9 TB a day at that bitrate); query load (each search",
        "is one pgvector walk and one GIN lookup per library; docs/benchmarks/service.md); and vision on a",
        "GPU, which would move most of the CPU figure off the CPUs.",
        "",
    ]
    write_results("capacity", data, "\n".join(lines))
    (RESULTS / "scale.md").write_text(scale_md())
    print("\n".join(lines))


def measure_talk(store: Store, hours: float, tokens: dict[str, int]) -> dict[str, Any]:
    """TutorialVQA transcripts, in dataset order until `hours` of narration, ingested as subtitle
    tracks with the packaged LLM: its tokens (counted into `tokens`, reset first) and the CPU, per
    hour of talk."""
    from service.evaluate import read_tracks, srt

    tracks = read_tracks(SHARED / "eval" / "tutorialvqa")
    folder = WORK / "capacity" / "talk"
    folder.mkdir(parents=True, exist_ok=True)
    tokens["prompt"] = tokens["completion"] = 0
    seconds, used = 0.0, 0
    cpu0 = core_seconds()
    for vid, sentences in sorted(tracks.items()):
        if seconds >= hours * 3600:
            break
        path = folder / f"talk-{vid}.srt"
        path.write_text(srt(sentences))
        got = ingest(store, path, IngestOptions(library="capacity-talk"), cache_dir=WORK / "models")
        seconds += got.duration
        used += 1
        print(f"  talk: {used} tracks, {seconds / 3600:.2f} h, tokens {tokens}", flush=True)
    cpu = core_seconds() - cpu0
    h = seconds / 3600
    return {
        "tracks": used,
        "hours": round(h, 3),
        "prompt_tokens": tokens["prompt"],
        "completion_tokens": tokens["completion"],
        "prompt_tokens_per_hour": round(tokens["prompt"] / h, 1),
        "completion_tokens_per_hour": round(tokens["completion"] / h, 1),
        "core_s_per_hour": round(cpu / h, 1),
    }


def scale_md() -> str:
    """docs/benchmarks/scale.md: the scale-out figures in one place, each from its own script."""
    parts = ["# Scale-out: the measured figures", ""]
    for name, title in (
        ("ray", "Ray ingestion"),
        ("ray_windows", "Ray: one long video split into tasks"),
        ("pgvector", "pgvector against FAISS"),
        ("capacity", "Capacity model"),
    ):
        path = RESULTS / f"{name}.md"
        parts += [f"## {title}", ""]
        if path.exists():
            body = path.read_text().split("\n", 1)[1].strip()
            parts += [body.replace("\n## ", "\n### "), ""]
        else:
            parts += [f"Not run yet: `python -m tests.bench.bench_{name}`.", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
