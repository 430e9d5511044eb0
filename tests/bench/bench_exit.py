"""The exit gate with an LLM on the real vLLM server: prompt tokens against faithfulness.

TutorialVQA dev questions (every `--every`-th, empty ones left out), asked library-wide over the 76
transcripts, each answered by the same served model from three packs:
- **vidmem exit gate**: `ask` as shipped (gists, then refined spans until the stop head says
  enough), with the stop head of the fold that never saw the question's video (tests/fit/exit_folds.py
  writes one per fold; run it first);
- **fixed top-5**: `ask` without the gate and without gists (the five refined spans);
- **top 3 videos whole**: the transcripts of the three best coarse videos, every line, grouped four
  lines to a numbered piece of evidence (so the model can cite it), and nothing else.
No tool rounds (the pack is what is measured). Per pack: prompt tokens (the server's `usage`),
evidence tokens, p50 seconds, the share answered, and **faithful**: the answer cites a span
overlapping the gold answer (right video), as in docs/benchmarks/ask.md. "Equal faithfulness" is
judged on the paired difference (same questions): its 95% interval (normal, paired) is printed.

Each question's rows are appended to the bench work folder as they come, so a run that is stopped
resumes where it was (`--fresh` starts over).

Run: .venv/bin/python -m tests.bench.bench_exit [--every 4] [--model smollm2] [--packs gate top5 whole3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from tests.bench.common import WORK, machine, write_results
from tests.bench.tutorialvqa import DATA, open_library

PACKS = {"gate": "vidmem exit gate", "top5": "fixed top-5", "whole3": "top 3 videos whole"}


def whole_pack(store, question: str, enc):  # type: ignore[no-untyped-def]
    """Evidence: the top 3 coarse videos' transcripts, four lines to a piece."""
    from reasoning.answer import Evidence
    from reasoning.retrieve import load_cues
    from reasoning.search import SearchOptions, search
    from service.evaluate import LIBRARY

    coarse = search(store, question, LIBRARY, None, SearchOptions(top=30, level="all"), enc)
    videos: list[str] = []
    for m in coarse:
        if m.video_id not in videos:
            videos.append(m.video_id)
    out: list[Evidence] = []
    for v in videos[:3]:
        run = load_cues(store, v, enc.space)
        for i in range(0, len(run), 4):
            j = min(i + 4, len(run))
            text = " ".join(run.text[i:j])
            out.append(Evidence(len(out) + 1, v, float(run.start[i]), float(run.end[j - 1]), text, 0.0))
    return out


def paired_interval(a: list[float], b: list[float]) -> tuple[float, float]:
    """95% normal interval, in points, of the mean paired difference a - b (same questions)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    half = 1.96 * statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("inf")
    mean = statistics.mean(d)
    return 100 * (mean - half), 100 * (mean + half)


def main() -> None:
    from memory.runtime.llm import make_llm
    from memory.runtime.text import SentenceEmbedder, token_counts
    from reasoning.answer import AskOptions, LLMEngine, ask
    from reasoning.reader import ExitWeights
    from service.evaluate import LIBRARY, read_questions
    from service.llm_server import server_for
    from service.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--packs", nargs="+", default=list(PACKS), choices=list(PACKS))
    ap.add_argument("--max-model-len", type=int, default=8192)
    ap.add_argument("--fresh", action="store_true", help="Forget the rows of an earlier, stopped run.")
    args = ap.parse_args()
    folds_file = WORK / "exit-folds.json"
    if not folds_file.is_file():
        raise SystemExit(f"no {folds_file}: run `python -m tests.fit.exit_folds` first")
    head_of = {
        v: ExitWeights.from_json(f["weights"])
        for f in json.loads(folds_file.read_text())
        for v in f["videos"]
    }
    store, ids = open_library()
    questions = [q for q in read_questions(DATA, "dev")[:: args.every] if q.text.strip()]
    enc = SentenceEmbedder()
    done_file = WORK / f"exit-llm-{args.model}-{args.every}.jsonl"
    if args.fresh:
        done_file.unlink(missing_ok=True)
    done = {}
    if done_file.is_file():
        for line in done_file.read_text().splitlines():
            row = json.loads(line)
            done[(row["n"], row["pack"])] = row
    cache = Settings().cache_dir  # the machine's model cache, where `make models` converted the LLMs
    todo = [(n, q) for n, q in enumerate(questions) if any((n, p) not in done for p in args.packs)]
    with server_for(args.model, cache, max_model_len=args.max_model_len, kv_cache_gib=2) as server:
        llm = make_llm(server.served_name, url=server.url)
        t0 = time.perf_counter()
        for n, q in todo:
            gold = ids[q.video]
            for pack in args.packs:
                if (n, pack) in done:
                    continue
                before = llm.prompt_tokens
                t = time.perf_counter()
                if pack == "whole3":
                    evidence = whole_pack(store, q.text, enc)
                    answer = LLMEngine(llm, AskOptions(max_tool_rounds=0)).answer(q.text, evidence)
                else:
                    options = AskOptions(
                        max_tool_rounds=0,
                        exit_gate=pack == "gate",
                        gists=2 if pack == "gate" else 0,
                        exit_weights=head_of[q.video],
                    )
                    answer = ask(store, q.text, LLMEngine(llm, options), LIBRARY, None, options, enc)
                    evidence = answer.evidence
                ok = [
                    c
                    for c in answer.citations
                    if c.video_id == gold and min(c.end, q.end) > max(c.start, q.start)
                ]
                row = {
                    "n": n,
                    "pack": pack,
                    "seconds": time.perf_counter() - t,
                    "prompt": llm.prompt_tokens - before,
                    "evidence": sum(token_counts([e.text for e in evidence])),
                    "faithful": float(bool(ok)),
                    "answerable": float(answer.answerable),
                    "fell_back": float(answer.fallback is not None),
                }
                done[(n, pack)] = row
                with done_file.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            print(
                f"\r{n + 1}/{len(questions)} questions, {time.perf_counter() - t0:.0f} s", end="", flush=True
            )
    print()
    rows: dict[str, dict[str, list[float]]] = {PACKS[p]: {} for p in args.packs}
    for n in range(len(questions)):
        for pack in args.packs:
            for key, value in done[(n, pack)].items():
                if key not in ("n", "pack"):
                    rows[PACKS[pack]].setdefault(key, []).append(value)
    table = {
        name: {
            "questions": len(r["seconds"]),
            "prompt_tokens": round(statistics.mean(r["prompt"]), 1),
            "evidence_tokens": round(statistics.mean(r["evidence"]), 1),
            "p50_s": round(statistics.median(r["seconds"]), 2),
            "faithful": round(100 * statistics.mean(r["faithful"]), 1),
            "answerable": round(100 * statistics.mean(r["answerable"]), 1),
            "fell_back": round(100 * statistics.mean(r["fell_back"]), 1),
        }
        for name, r in rows.items()
    }
    lines = [
        "# The exit gate with an LLM: prompt tokens against faithfulness",
        "",
        f"{len(questions)} TutorialVQA dev questions (every {args.every}th), library-wide over the 76 transcripts; "
        f"{args.model} served by vLLM (CPU build, max-model-len {args.max_model_len}), no tool rounds. "
        "*faithful*: the answer cites a span overlapping the gold answer (right video). The exit gate's "
        "stop head for each question is the one fitted without its video (tests/fit/exit_folds.py, folds "
        "split by video). *prompt tokens*: the server's count, system prompt and worked example included.",
        "",
        f"Reproduce: `.venv/bin/python -m tests.fit.exit_folds` then `.venv/bin/python -m tests.bench.bench_exit "
        f"--every {args.every} --model {args.model} --packs {' '.join(args.packs)}`",
        f"Machine: {machine()}.",
        "",
        "| pack | questions | prompt tokens | evidence tokens | p50 s | faithful % | answerable % | fell back % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in table.items():
        lines.append(
            f"| {name} | {r['questions']} | {r['prompt_tokens']} | {r['evidence_tokens']} | {r['p50_s']} | "
            f"{r['faithful']} | {r['answerable']} | {r['fell_back']} |"
        )
    gate = table.get(PACKS["gate"])
    for other in ("whole3", "top5"):
        if gate and PACKS[other] in table:
            o = table[PACKS[other]]
            low, high = paired_interval(rows[PACKS["gate"]]["faithful"], rows[PACKS[other]]["faithful"])
            lines.append(
                f"\nAgainst {PACKS[other]}: {o['prompt_tokens'] / gate['prompt_tokens']:.2f}x fewer prompt tokens, "
                f"{o['evidence_tokens'] / gate['evidence_tokens']:.2f}x fewer evidence tokens, faithfulness "
                f"{gate['faithful'] - o['faithful']:+.1f} points (paired 95% interval {low:+.1f} to {high:+.1f})."
            )
    write_results("exit_llm", {"model": args.model, "table": table}, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
