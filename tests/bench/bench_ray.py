"""Ingestion of one batch of videos on a Ray cluster of 1, 2 and 3 worker nodes, side by side in one
run, against the same batch ingested one after another in one process.

The cluster is started here on this machine as separate processes (`ray start --head` with no CPUs,
then N worker nodes of one CPU each, as tests/indexers/test_ray.py does), the catalog is the
PostgreSQL with pgvector (`make postgres`; vectors in it), and each configuration ingests the same
batch into a fresh database: `--videos` narrated clips of `--seconds` each (espeak speech over hard
cuts; vision off and no caption LLM, so speech recognition dominates, as it does for talks). Reported:
wall seconds per configuration and the speed-up over one worker node. Each worker node is pinned
to one core (`taskset`; node i on core i mod the cores), so that a node stands for a one-core
machine: one ingestion alone would otherwise spread over both cores (its visual worker beside the
speech recognition) and leave a second node nothing to add. This machine has 2 cores: a third
node shares a core with the first, and the figure says so. The one-process reference is not
pinned (both cores).

With `--long VIDEO`, a second table (docs/benchmarks/ray_windows.md): that one video with vision on
(extractive captions), ingested in one process (shots and vision from one decoding pass) against
Ray with N worker nodes, once as one task and once split (`--window`: the video is longer than two;
`RemoteWindows`: a task per window decodes it, finds its shots and looks inside them, on any node,
while the owner transcribes; `SpeechChunks`: later audio chunks go out too), and whether each run
wrote the one process's shots and vision rows. `--videos 0` skips the batch.

Run: make postgres && .venv/bin/python -m tests.bench.bench_ray [--videos 6] [--seconds 60] [--workers 1 2 3]
     [--long ../shared/media/bbb_10min.mp4 --window 150]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from indexers import ingest
from indexers.captions import CaptionOptions
from indexers.distributed import Where, ingest_on_ray
from indexers.pipeline import IngestOptions
from memory import EmbeddingRow, ScreenText, Segment, Store, Tag
from tests.bench.common import WORK, fresh_db, machine, write_results
from tests.helpers import free_port
from tests.media import make_narrated_clip

RAY = Path(sys.executable).parent / "ray"
WORDS = [
    "river",
    "lantern",
    "copper",
    "violet",
    "harbour",
    "meadow",
    "signal",
    "orchard",
    "glacier",
    "market",
]


def clips(n: int, seconds: float) -> list[Path]:
    folder = WORK / "ray" / f"clips-{n}-{int(seconds)}"
    out = []
    for i in range(n):
        phrases = [
            f"the {WORDS[(i + j) % 10]} {WORDS[(i + 2 * j + 3) % 10]} story number {j}" for j in range(4)
        ]
        starts = [2.0 + j * seconds / 4 for j in range(4)]
        path = folder / f"clip{i}.mp4"
        if not path.exists():
            make_narrated_clip(folder, phrases=phrases, starts=starts, total_seconds=seconds, name=path.name)
        out.append(path)
    return out


def cluster(workers: int) -> tuple[str, str]:
    temp = tempfile.mkdtemp(prefix="vb", dir="/tmp")
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                    f"--temp-dir={temp}", "--disable-usage-stats"], check=True, capture_output=True, env=env)  # fmt: skip
    cores = os.cpu_count() or 1
    for i in range(workers):  # node i pinned to core i mod cores: a node is a one-core machine
        subprocess.run(["taskset", "-c", str(i % cores), str(RAY), "start", f"--address=127.0.0.1:{port}",
                        "--num-cpus=1", "--disable-usage-stats"], check=True, capture_output=True, env=env)  # fmt: skip
    return f"127.0.0.1:{port}", temp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--url", default=os.environ.get("VIDMEM_TEST_PGVECTOR_URL"))
    ap.add_argument("--long", type=Path, help="one long video, with vision: split per window or not")
    ap.add_argument("--window", type=float, default=150.0, help="window seconds (a video over two is split)")
    args = ap.parse_args()
    if not args.url:
        raise SystemExit("no PostgreSQL with pgvector: run `make postgres` or pass --url")
    if args.videos:
        batch_table(args)
    if args.long:
        windows_table(args)


def run_cluster(n: int, url: str, home: str, paths: list[Path], options: IngestOptions,
                window: float | None) -> tuple[float, str]:  # fmt: skip
    """Seconds to ingest `paths` on a fresh cluster of `n` worker nodes, and the catalog's URL."""
    import ray

    address, temp = cluster(n)
    try:
        where = Where(home, fresh_db(url), "postgres", str(WORK / "ray" / "models"))
        t0 = time.perf_counter()
        got = ingest_on_ray(address, where, paths, options, window=window)
        seconds = time.perf_counter() - t0
        assert all(not isinstance(r, Exception) for r in got), got
        return seconds, where.database_url
    finally:
        ray.shutdown()
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True)


def visual_rows(home: Path, url: str) -> dict[str, Any]:
    """The one video's shots and what its vision stage wrote: on-screen text, tags, visual vectors."""
    store = Store(home, url, index="postgres")
    try:
        with store.session() as s:
            shots = s.scalars(select(Segment).where(Segment.level == "shot").order_by(Segment.start)).all()
            ordinal = {g.id: i for i, g in enumerate(shots)}
            rows = sorted(
                s.scalars(select(EmbeddingRow).where(EmbeddingRow.modality == "visual")),
                key=lambda r: (ordinal.get(r.segment_id or -1, -1), r.id),  # a shot's rows as written
            )
            return {
                "shots": [(g.start, g.end) for g in shots],
                "texts": sorted((ordinal[t.segment_id], t.text, t.start, t.end) for t in s.scalars(select(ScreenText))),
                "tags": sorted((ordinal.get(t.segment_id or -1, -1), t.kind, t.name, round(t.score, 5))
                               for t in s.scalars(select(Tag))),
                "vectors": np.stack([np.frombuffer(r.vector, np.float32) for r in rows]),
            }  # fmt: skip
    finally:
        store.close()


def same_as(want: dict[str, Any], got: dict[str, Any]) -> str:
    """How the rows of a run compare with the one process's."""
    shots = sum(a == b for a, b in zip(want["shots"], got["shots"], strict=False))
    out = f"{shots}/{len(want['shots'])} shots"
    if got["shots"] != want["shots"]:
        return out + f" ({len(got['shots'])} found)"
    out += f"; texts {'equal' if got['texts'] == want['texts'] else 'differ'}"
    out += f", tags {'equal' if got['tags'] == want['tags'] else 'differ'}"
    if got["vectors"].shape != want["vectors"].shape:
        return out + ", vectors differ in number"
    return out + f", vectors max diff {float(np.abs(got['vectors'] - want['vectors']).max()):.1e}"


def windows_table(args: argparse.Namespace) -> None:
    options = IngestOptions(library="bench", captions=CaptionOptions(llm=None))
    rows = []
    url = fresh_db(args.url)
    store = Store(WORK / "ray" / "home-long", url, index="postgres")
    t0 = time.perf_counter()
    ingest(store, args.long, options, cache_dir=WORK / "ray" / "models")
    alone = time.perf_counter() - t0
    store.close()
    want = visual_rows(WORK / "ray" / "home-long", url)
    rows.append({"config": "one process, no Ray (one decoding pass)", "workers": 0, "window": None,
                 "seconds": round(alone, 1), "rows": "-"})  # fmt: skip
    print(rows[-1], flush=True)
    for n in args.workers:
        for window in (None, args.window):
            home = str(WORK / "ray" / f"home-long-{n}-{window}")
            seconds, db = run_cluster(n, args.url, home, [args.long], options, window)
            split = "split (a task per window, per audio chunk)" if window else "one task"
            rows.append({"config": f"Ray, {n} worker node{'s' if n > 1 else ''}, {split}", "workers": n,
                         "window": window, "seconds": round(seconds, 1),
                         "rows": same_as(want, visual_rows(Path(home), db))})  # fmt: skip
            print(rows[-1], flush=True)
    lines = [
        "# Ingestion on Ray: one long video, split into tasks",
        "",
        f"{args.long.name}, every stage but the caption LLM (extractive captions), into a fresh PostgreSQL + "
        "pgvector catalog per configuration; the cluster as in ray.md (a head with no CPUs, N worker nodes "
        "of one CPU each, node i pinned to core i mod 2). *one task*: the video's task does everything, "
        "shots and vision from one decoding pass, like the one process. *split* (`--window "
        f"{args.window:.0f}`: longer than two windows): the video's task transcribes it while a task per window "
        "decodes that window (from 20 s before it), finds the shots that begin there and looks inside them "
        "(`indexers.distributed.RemoteWindows`; the owner joins them), and each audio chunk after the first "
        "with speech goes to a task too (`SpeechChunks`). *rows*: the shots, on-screen text, tags and visual "
        "vectors each run wrote, against the one process's.",
        "",
        f"Reproduce: `make postgres && .venv/bin/python -m tests.bench.bench_ray --videos 0 --long {args.long} "
        f"--window {args.window:.0f} --workers {' '.join(map(str, args.workers))}`",
        f"Machine: {machine()}. Two cores: a third worker node can only share them.",
        "",
        "| configuration | wall s | over one process | rows against the one process |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {r['config']} | {r['seconds']} | {alone / r['seconds']:.2f}x | {r['rows']} |" for r in rows]
    lines.append("")
    write_results("ray_windows", {"machine": machine(), "rows": rows, "args": {k: str(v) for k, v in vars(args).items()}},
                  "\n".join(lines))  # fmt: skip


def batch_table(args: argparse.Namespace) -> None:
    import ray

    batch = clips(args.videos, args.seconds)
    options = IngestOptions(library="bench", captions=CaptionOptions(llm=None), look=None)
    cache = WORK / "ray" / "models"
    rows = []

    url = fresh_db(args.url)  # one process, one file after another: the reference
    store = Store(WORK / "ray" / "home-alone", url, index="postgres")
    t0 = time.perf_counter()
    for clip in batch:
        ingest(store, clip, options, cache_dir=cache)
    alone = time.perf_counter() - t0
    store.close()
    rows.append({"config": "one process, no Ray", "workers": 0, "seconds": round(alone, 1)})
    print(rows[-1], flush=True)

    for n in args.workers:
        address, temp = cluster(n)
        try:
            url = fresh_db(args.url)
            where = Where(str(WORK / "ray" / f"home-{n}"), url, "postgres", str(cache))
            t0 = time.perf_counter()
            got = ingest_on_ray(address, where, batch, options)
            seconds = time.perf_counter() - t0
            assert all(not isinstance(r, Exception) for r in got), got
            rows.append(
                {
                    "config": f"Ray, {n} worker node{'s' if n > 1 else ''}",
                    "workers": n,
                    "seconds": round(seconds, 1),
                }
            )
            print(rows[-1], flush=True)
        finally:
            ray.shutdown()
            subprocess.run([str(RAY), "stop", "--force"], capture_output=True)
    one = next(r["seconds"] for r in rows if r["workers"] == 1) if 1 in args.workers else None
    lines = [
        "# Ingestion on Ray: 1, 2 and 3 worker nodes",
        "",
        f"One batch of {args.videos} narrated clips of {args.seconds:.0f} s (espeak speech over hard cuts; "
        "vision off, extractive captions: speech recognition dominates), ingested into a fresh PostgreSQL + "
        "pgvector catalog per configuration. The Ray cluster runs on this machine as separate processes: a "
        "head with no CPUs and N worker nodes of one CPU each, node i pinned to core i mod 2 (`taskset`: a node "
        "stands for a one-core machine); one task per video. The one-process reference uses both cores.",
        "",
        f"Reproduce: `make postgres && .venv/bin/python -m tests.bench.bench_ray --videos {args.videos} "
        f"--seconds {args.seconds:.0f} --workers {' '.join(map(str, args.workers))}`",
        f"Machine: {machine()}. Two cores: a third worker node can only share them.",
        "",
        "| configuration | wall s | speed-up over 1 worker node | over one process |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        over_one = f"{one / r['seconds']:.2f}x" if one else "-"
        lines.append(f"| {r['config']} | {r['seconds']} | {over_one} | {alone / r['seconds']:.2f}x |")
    lines.append("")
    write_results("ray", {"machine": machine(), "rows": rows, "args": vars(args)}, "\n".join(lines))


if __name__ == "__main__":
    main()
