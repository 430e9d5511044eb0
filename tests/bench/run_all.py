"""`make bench`: every benchmark in turn, each with the arguments docs/benchmarks/README.md gives,
each in its own process (a crash or a long one does not take the others down). Prints a summary of
what ran and how long; the results are the files each writes into docs/benchmarks/.

Run: .venv/bin/python -m tests.bench.run_all [--only NAME ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS: list[tuple[str, list[str]]] = [
    ("bench_shots", ["--repeat", "3"]),
    ("bench_ingest", ["--copies", "12"]),
    ("bench_asr", []),
    ("bench_segmentation", []),
    ("bench_tokens", ["--fps", "1", "4"]),
    ("calibrate_labels", []),
    ("bench_captions", ["--coverage-videos", "24", "--guard-videos", "2"]),
    ("bench_tutorialvqa", ["--coarse-modes", "single"]),
    ("span_folds", ["--folds", "5"]),
    ("bench_search", []),
    ("bench_ask", ["--questions", "12", "--models", "smollm2", "qwen0.5b"]),
    ("bench_service", ["--clients", "32", "--seconds", "30"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="names of benchmarks to run (default: all)")
    args = ap.parse_args()
    failed = []
    for name, extra in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        t0 = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"tests.bench.{name}", *extra])
        print(f"== {name}: exit {code} after {time.monotonic() - t0:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print("failed:", " ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
