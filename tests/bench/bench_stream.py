"""A two-hour stream through the service: the memory's bank, the gate's cost, search while it grows.

The stream is twelve ten-minute segments, as a recorder writes them (HLS/DVR style): `bbb_10min.mp4`
re-encoded twelve ways (tests/bench/copies.py: 640-1280 px, CRF 18-35, brightness +-0.05, a 96%
crop, 0-2 s trimmed; no audio), so every shot comes back eleven times, each time a little
different. `vidmem serve` (one worker, vision on, the memory capped at `--per-hour` slots per hour
of media) imports them one after another into one library, while `--clients` threads loop
`GET /v1/search` over it.

Measured:
- after each segment, the bank's live slots against its budget B (`GET /v1/libraries/L/memory`);
- the memory stage's seconds against the segment's whole ingestion (`IngestJob.stage_seconds`);
- search latency while ingesting against the same clients idle (on the first segment once it has
  landed, before the second is imported, and after the last one, on all twelve);
- the service's resident memory (server and worker processes together): the peak while the first
  segment is ingested against the peak over the whole stream, the server and its workers also
  apart. The service is searched from the start, so both peaks are those of a service in use:
  before the first segment's tags are known the clients search `WARM` (placeholder words), and
  before that one search loads the text model. (Until this was so, the first segment's peak was
  that of a server nobody had searched yet, without the text model: the later segments carried the
  search side's ~0.5 GB against it.)
- at 10, 30, 60 and 120 minutes, questions about what was seen so far: the five most frequent tags
  of the first segment, searched library-wide (top 12); per query, the share of the segments seen
  that its moments (and their `also`) cite, and whether any cites a segment not yet ingested.

Run: .venv/bin/python -m tests.bench.bench_stream [--segments 12] [--per-hour 300] [--clients 4]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sqlite3
import statistics
import threading
import time

import httpx
import psutil

from indexers.decode import probe
from tests.bench.common import SHARED, WORK, machine, write_results
from tests.bench.copies import recipes, reencode
from tests.helpers import AUTH, Server

LIBRARY = "stream"
WARM = ["an animal in the grass", "trees", "the sky", "a bird", "water"]
"""What the clients search while the first segment is ingested, before its tags are known."""
CHECKPOINTS = (1, 3, 6, 12)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 1) if s else float("nan")


class Load:
    """`clients` threads looping searches; latencies are kept per phase."""

    def __init__(self, server: Server, queries: list[str], clients: int) -> None:
        self.server, self.queries, self.clients = server, queries, clients
        self.phase = "idle"
        self.seconds: dict[str, list[float]] = {}
        self.errors = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, i: int) -> None:
        n = i
        with httpx.Client(base_url=self.server.url, headers=AUTH, timeout=120) as c:
            while not self.stop.is_set():
                q = self.queries[n % len(self.queries)]
                n += self.clients
                phase = self.phase
                t0 = time.perf_counter()
                try:
                    ok = (
                        c.get("/v1/search", params={"q": q, "library": LIBRARY, "top": 10}).status_code == 200
                    )
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - t0
                if phase == self.phase:  # a request that straddles two phases counts in neither
                    self.seconds.setdefault(phase, []).append(took)
                self.errors += not ok

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


ROLES = {"service.jobs": "job worker", "indexers.visual": "visual worker"}
"""Children told apart by their command line; any other (ffmpeg, ...) counts as `other`."""


class RSS:
    """The resident memory of a process and its children, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.root = psutil.Process(pid)
        self.peak: dict[str, int] = {}
        self.parts: dict[str, dict[str, int]] = {}
        """Per phase, the peaks of the API process alone, of its children (workers, their helpers),
        and of each kind of child (`ROLES`): where memory grows."""
        self.phase = "start"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            api = children = 0
            roles: dict[str, int] = {}
            with contextlib.suppress(psutil.Error):
                api = self.root.memory_info().rss
                for p in self.root.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss = p.memory_info().rss
                        line = " ".join(p.cmdline())
                        role = next((r for key, r in ROLES.items() if key in line), "other")
                        children += rss
                        roles[role] = roles.get(role, 0) + rss
            total = api + children
            self.peak[self.phase] = max(self.peak.get(self.phase, 0), total)
            part = self.parts.setdefault(self.phase, {"api": 0, "children": 0})
            for key, value in {"api": api, "children": children, **roles}.items():
                part[key] = max(part.get(key, 0), value)


def ask_seen(server: Server, queries: list[str], seen: list[str], home) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Per query: the share of the segments seen that the top 12 moments (with `also`) cite, and the
    share whose own shots carry the tag searched for (a re-encoded copy may name its shots otherwise:
    then only a fold with another copy's shot can cite it)."""
    shares, outside, answered = [], 0, 0
    per_query: dict[str, float] = {}
    tagged: dict[str, float] = {}
    with sqlite3.connect(home / "vidmem.db") as db:
        for q in queries:
            marks = ",".join("?" * len(seen))
            n = db.execute(
                f"select count(distinct video_id) from tags where kind = 'label' and replace(name, '_', ' ') = ? and video_id in ({marks})",
                (q, *seen),
            ).fetchone()[0]
            tagged[q] = round(100 * n / len(seen), 1)
    for q in queries:
        r = server.get("/v1/search", params={"q": q, "library": LIBRARY, "top": 12, "level": "shot"})
        r.raise_for_status()
        cited: set[str] = set()
        for m in r.json()["moments"]:
            cited.add(m["video_id"])
            cited.update(o["video_id"] for o in m["also"])
        answered += bool(cited)
        outside += bool(cited - set(seen))
        shares.append(len(cited & set(seen)) / len(seen))
        per_query[q] = round(100 * shares[-1], 1)
    return {
        "segments_cited": round(100 * statistics.mean(shares), 1),
        "answered": round(100 * answered / len(queries), 1),
        "cites_unseen": outside,
        "per_query": per_query,
        "tagged": tagged,
    }


def rss_growth(rows: list[dict]) -> dict[str, float]:  # type: ignore[type-arg]
    """Each segment's peak (server and workers together) fitted on its frame size and its place in
    the stream: what grows with the stream's length, apart from what each segment's frames cost."""
    import numpy as np

    peak = np.array([r["rss_total_mib"] for r in rows], float)
    mp = np.array([r["pixels"] / 1e6 for r in rows])
    x = np.column_stack([np.ones(len(rows)), mp, [r["segment"] for r in rows]])
    coef, *_ = np.linalg.lstsq(x, peak, rcond=None)
    sigma2 = float(((peak - x @ coef) ** 2).sum()) / max(1, len(rows) - 3)
    se = float(np.sqrt(sigma2 * np.linalg.inv(x.T @ x)[2, 2]))
    at = coef[0] + coef[1] * mp.mean()  # the stream's mean frame size
    return {
        "per_megapixel": round(float(coef[1])),
        "per_segment": round(float(coef[2]), 1),
        "per_segment_low": round(float(coef[2] - 2 * se), 1),
        "per_segment_high": round(float(coef[2] + 2 * se), 1),
        "ratio": round(float((at + coef[2] * rows[-1]["segment"]) / (at + coef[2] * rows[0]["segment"])), 3),
    }


def top_tags(home, video_id: str, k: int = 5) -> list[str]:  # type: ignore[no-untyped-def]
    with sqlite3.connect(home / "vidmem.db") as db:
        rows = db.execute(
            "select name, count(*) from tags where video_id = ? and kind = 'label' group by name "
            "order by count(*) desc limit ?",
            (video_id, k),
        ).fetchall()
    return [name.replace("_", " ") for name, _ in rows]


def stage_seconds(home, video_id: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    import json

    with sqlite3.connect(home / "vidmem.db") as db:
        row = db.execute(
            "select stage_seconds from ingest_jobs where video_id = ? order by created_at desc limit 1",
            (video_id,),
        ).fetchone()
    return json.loads(row[0]) if row and row[0] else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=12)
    ap.add_argument("--per-hour", type=float, default=300.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--idle", type=float, default=20.0, help="Seconds of searching in each idle phase.")
    args = ap.parse_args()
    film = SHARED / "media" / "bbb_10min.mp4"
    segments = [reencode(film, r) for r in recipes(args.segments)]
    home = WORK / "stream-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {"VIDMEM_VISION": "true", "VIDMEM_MEMORY_SLOTS_PER_HOUR": f"{args.per_hour:g}"}
    server = Server(home, segments[0].parent, WORK / "stream-serve.log", env=env)
    server.start()
    rss = RSS(server.proc.pid)  # type: ignore[union-attr]
    rss.thread.start()
    rows, checks = [], {}
    load: Load | None = None
    try:
        assert server.post("/v1/libraries", json={"name": LIBRARY}).status_code in (200, 201, 409)
        server.get("/v1/search", params={"q": WARM[0], "library": LIBRARY})  # loads the text model
        load = Load(server, WARM, args.clients)
        load.phase = "first segment"  # other queries than later: not in the latency table
        load.start()
        seen: list[str] = []
        t_stream = time.perf_counter()
        for n, path in enumerate(segments, 1):
            rss.phase = f"segment {n}"
            if n > 1:
                load.phase = "ingesting"
            queued = server.post(f"/v1/libraries/{LIBRARY}/imports", json={"path": path.name})
            assert queued.status_code == 202, queued.text
            job = queued.json()
            t0 = time.perf_counter()
            while (state := server.get(f"/v1/jobs/{job['id']}").json())["status"] in ("queued", "running"):
                time.sleep(0.5)
            wall = time.perf_counter() - t0
            assert state["status"] == "done", state
            video = state["video_id"]
            seen.append(video)
            took = stage_seconds(home, video)
            memory = server.get(f"/v1/libraries/{LIBRARY}/memory").json()
            row = {
                "segment": n,
                "width": probe(path).width,
                "pixels": probe(path).width * probe(path).height,
                "rss_total_mib": round(rss.peak.get(f"segment {n}", 0) / 2**20),
                "minutes": 10 * n,
                "ingest_s": round(wall, 1),
                "memory_s": took.get("memory"),
                "gate_share": round(100 * took.get("memory", 0.0) / wall, 2),
                "live": memory["slots"]["live"],
                "budget": memory["budget"],
                "units": memory["units"],
                "rss_api_mib": round(rss.parts.get(f"segment {n}", {}).get("api", 0) / 2**20),
                "rss_workers_mib": round(rss.parts.get(f"segment {n}", {}).get("children", 0) / 2**20),
                **{
                    f"rss_{role.replace(' ', '_')}_mib": round(
                        rss.parts.get(f"segment {n}", {}).get(role, 0) / 2**20
                    )
                    for role in (*ROLES.values(), "other")
                },
            }
            rows.append(row)
            print(row, flush=True)
            if n == 1:
                queries = top_tags(home, video)
                print("queries", queries, flush=True)
                load.phase = "switching"
                load.queries = queries
                load.phase = "idle"  # on the first segment
                time.sleep(args.idle)
            if n in CHECKPOINTS:
                load.phase = "checkpoint"
                checks[10 * n] = ask_seen(server, queries, seen, home)
                print(10 * n, "min", checks[10 * n], flush=True)
        stream_s = time.perf_counter() - t_stream
        load.phase = "idle at the end"
        time.sleep(args.idle)
        load.close()
    finally:
        if load is not None:
            load.close()
        rss.stop.set()
        server.stop()
    lat = {
        phase: {"requests": len(xs), "p50_ms": _pct(xs, 0.5), "p95_ms": _pct(xs, 0.95)}
        for phase, xs in load.seconds.items()
        if phase in ("idle", "ingesting", "idle at the end")
    }
    idle_p95 = max(lat.get(p, {}).get("p95_ms", 0.0) for p in ("idle", "idle at the end"))
    shares = [r["gate_share"] for r in rows]
    rss_first = rss.peak.get("segment 1", 0) / 2**20
    rss_all = max(rss.peak.values()) / 2**20
    growth = rss_growth(rows)
    summary = {
        "bank_within_budget": all(r["live"] <= r["budget"] for r in rows),
        "gate_share_mean": round(statistics.mean(shares), 2),
        "gate_share_max": max(shares),
        "p95_ratio": round(lat["ingesting"]["p95_ms"] / idle_p95, 2) if "ingesting" in lat else None,
        "rss_first_mib": round(rss_first),
        "rss_peak_mib": round(rss_all),
        "rss_ratio": round(rss_all / max(rss_first, 1), 2),
        "rss_growth": growth,
        "stream_s": round(stream_s),
        "search_errors": load.errors,
    }
    lines = [
        "# A two-hour stream through the service",
        "",
        f"{args.segments} ten-minute segments (`bbb_10min.mp4` re-encoded {args.segments} ways, "
        "tests/bench/copies.py; no audio) imported one after another into one library of `vidmem serve` "
        f"(one worker, vision on, the memory capped at {args.per_hour:g} slots per hour of media), while "
        f"{args.clients} clients loop `GET /v1/search` over the library from the start (queries: the first segment's five "
        "most frequent tags once it has landed; placeholder words before, after one search has loaded the text model).",
        "",
        f"Reproduce: `.venv/bin/python -m tests.bench.bench_stream --segments {args.segments} --per-hour "
        f"{args.per_hour:g} --clients {args.clients}`",
        f"Machine: {machine()}.",
        "",
        "Peak RSS, MiB, each part's own peak over the segment (the workers: the job worker, the visual worker"
        " it starts, and their helpers, together):",
        "",
        "| after | ingest s | memory stage s | gate share % | live slots | budget B | units gated | API | workers "
        "| job worker | visual worker | width px |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['minutes']} min | {r['ingest_s']} | {r['memory_s']} | {r['gate_share']} | {r['live']} | "
            f"{r['budget']} | {r['units']} | {r['rss_api_mib']} | {r['rss_workers_mib']} | "
            f"{r['rss_job_worker_mib']} | {r['rss_visual_worker_mib']} | {r['width']} |"
        )
    lines += [
        "",
        "Questions about what was seen so far (per query: the share of the segments ingested that its top 12 "
        "moments and their `also` cite; *cites unseen*: queries citing a segment not yet ingested):",
        "",
        "| after | segments cited % | answered % | cites unseen |",
        "|---|---:|---:|---:|",
    ]
    for minutes, c in checks.items():
        lines.append(f"| {minutes} min | {c['segments_cited']} | {c['answered']} | {c['cites_unseen']} |")
    lines += [
        "",
        "Per query, the segments seen that its moments cite / whose own shots carry the tag, %:",
        "",
        "| query | " + " | ".join(f"{m} min" for m in checks) + " |",
    ]
    lines.append("|---|" + "---:|" * len(checks))
    for q in queries:
        lines.append(
            f"| {q} | "
            + " | ".join(f"{c['per_query'][q]} / {c['tagged'][q]}" for c in checks.values())
            + " |"
        )
    lines += [
        "",
        "| search phase | requests | p50 ms | p95 ms |",
        "|---|---:|---:|---:|",
    ]
    for phase, r in lat.items():
        lines.append(f"| {phase} | {r['requests']} | {r['p50_ms']} | {r['p95_ms']} |")
    lines += [
        "",
        f"- The bank stayed within B after every segment: {summary['bank_within_budget']}.",
        f"- The memory stage took {summary['gate_share_mean']}% of a segment's ingestion on average, at most "
        f"{summary['gate_share_max']}% (target <= 2%).",
        f"- Search p95 while ingesting / idle (the larger idle p95): {summary['p95_ratio']}x (target <= 2x); "
        f"{summary['search_errors']} failed requests.",
        f"- Peak RSS of the service: {summary['rss_first_mib']} MiB while the first segment was ingested, "
        f"{summary['rss_peak_mib']} MiB over the stream ({summary['rss_ratio']}x; target <= 1.1x). Apart: the "
        f"server {rows[0]['rss_api_mib']} MiB on the first segment, {max(r['rss_api_mib'] for r in rows)} MiB at "
        f"most; the workers {rows[0]['rss_workers_mib']} MiB, {max(r['rss_workers_mib'] for r in rows)} MiB at most.",
        f"- Each segment's peak against its frame size and its place in the stream (least squares over the "
        f"{len(rows)} segments, peak MiB = a + b x megapixels + c x segment): b = {growth['per_megapixel']} MiB "
        f"per megapixel, c = {growth['per_segment']} MiB per segment (+-2 standard errors: {growth['per_segment_low']} to "
        f"{growth['per_segment_high']}): at the stream's mean frame size, the last segment's peak is "
        f"{growth['ratio']}x the first's.",
    ]
    write_results(
        "stream",
        {"args": vars(args), "rows": rows, "checks": checks, "latency": lat, **summary},
        "\n".join(lines) + "\n",
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
