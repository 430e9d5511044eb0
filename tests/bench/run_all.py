"""`make bench`: every benchmark in turn, each with the arguments docs/benchmarks/README.md gives,
each in its own process (a crash or a long one does not take the others down). Prints a summary of
what ran and how long; the results are the files each writes into docs/benchmarks/.

Fitting scripts run too where their docs sit beside the benchmarks' and they leave the package as
it is: tests/fit/calibrate_labels.py (which only reports the thresholds), tests/fit/span_folds.py,
and fit_gate and exit_folds with --dry-run (exit_folds also writes the per-fold heads bench_exit reads).
tests/fit/train_span.py does not: it rewrites the shipped weights.

Run: .venv/bin/python -m tests.bench.run_all [--only NAME ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from tests.bench.common import SHARED

# (module, arguments); --only takes the last part of the module's name.
BENCHMARKS: list[tuple[str, list[str]]] = [
    ("tests.bench.bench_shots", ["--repeat", "3"]),
    ("tests.bench.bench_ingest", ["--copies", "12"]),
    ("tests.bench.bench_vision", []),
    ("tests.bench.bench_asr", []),
    ("tests.bench.bench_segmentation", []),
    ("tests.bench.bench_tokens", ["--fps", "1", "4"]),
    ("tests.fit.calibrate_labels", []),
    ("tests.bench.bench_captions", ["--coverage-videos", "24", "--guard-videos", "2"]),
    ("tests.bench.bench_tutorialvqa", ["--coarse-modes", "single"]),
    ("tests.fit.span_folds", ["--folds", "5"]),
    ("tests.bench.bench_text", ["--rounds", "3"]),
    ("tests.bench.bench_search", []),
    ("tests.fit.fit_gate", ["--no-trailer", "--dry-run"]),
    ("tests.bench.bench_memory", []),
    ("tests.bench.bench_ask", ["--questions", "12", "--models", "smollm2", "qwen0.5b"]),
    ("tests.bench.bench_service", ["--clients", "32", "--seconds", "30"]),
    ("tests.fit.exit_folds", ["--every", "3", "--dry-run"]),
    ("tests.bench.bench_exit", ["--every", "4", "--packs", "gate", "whole3"]),
    ("tests.bench.bench_stream", []),
    ("tests.bench.bench_edit_agent", ["--model", "qwen0.5b"]),
    (
        "tests.bench.bench_pgvector",
        ["--rebuild", "--sizes", "100000", "1000000", "--ef-search", "default", "128", "400"],
    ),
    ("tests.bench.bench_ray", ["--long", str(SHARED / "media" / "bbb_10min.mp4"), "--window", "150"]),
    ("tests.bench.bench_capacity", []),  # after ray and pgvector: it reads their results
]
# tests.bench.bench_diffusers_gpu needs a CUDA GPU: run it by hand on a GPU machine.


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="names of benchmarks to run (default: all)")
    args = ap.parse_args()
    failed = []
    for module, extra in BENCHMARKS:
        name = module.rsplit(".", 1)[-1]
        if args.only and name not in args.only:
            continue
        t0 = time.monotonic()
        code = subprocess.call([sys.executable, "-m", module, *extra])
        print(f"== {name}: exit {code} after {time.monotonic() - t0:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print("failed:", " ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
