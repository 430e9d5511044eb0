"""The edit agent with an LLM on the real vLLM server: how many plain-words intents become valid
edit requests, how often it picks the operation and the moment meant, and how long it takes.

The footage: 96 s of Big Buck Bunny with the subtitles `tests.helpers.EDIT_CUES` (12 cues);
the intents: `tests.helpers.INTENTS` (24, each with the operation meant and the cue it is about).
Per intent (`reasoning.edit_agent.request_from_intent`): vidmem searches the video for the intent,
the model chooses under a JSON schema, vidmem checks the request and queues it.
- *valid*: a job was queued (anchor inside the video, an insertion on a shot boundary, duration on
  the backend's grid, a prompt the model wrote);
- *operation*: the model's operation is the one meant;
- *moment*: the anchor the agent chose (before it is snapped to a shot boundary) lies within 1 s of
  the cue meant (an insertion) or overlaps it (a span);
- latency: wall seconds per intent (search, the model's reply, a second reply when the first was refused).

Run: .venv/bin/python -m tests.bench.bench_edit_agent [--model qwen0.5b]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tests.bench.common import machine, write_results


def main() -> None:
    from indexers import ingest
    from indexers.captions import CaptionOptions
    from indexers.pipeline import IngestOptions
    from memory import Store
    from memory.runtime.llm import make_llm
    from reasoning.edit_agent import request_from_intent
    from service import jobs
    from service.llm_server import free_port, server_for
    from service.settings import Settings
    from tests.helpers import EDIT_CUES, INTENTS, edit_footage

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen0.5b")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vidmem-edit-agent-"))
    clip, srt = edit_footage(root)
    store = Store(root / "home")
    cache = Settings().cache_dir
    options = IngestOptions(library="shop", subtitles=srt, captions=CaptionOptions(llm=None), look=None)
    vid = ingest(store, clip, options, cache_dir=cache).video_id
    edits = jobs.QueueEdits(store, "shop")
    rows = []
    with server_for(args.model, cache, port=free_port(), max_model_len=4096, kv_cache_gib=1) as server:
        llm = make_llm(server.served_name, url=server.url)
        for intent, meant, cue in INTENTS:
            r = request_from_intent(store, llm, intent, vid, edits, "shop")
            start, end, _ = EDIT_CUES[cue - 1]
            plan = r.job["plan"] if r.job else None
            chosen = (r.choices[-1] if r.choices else {}).get("operation")
            a = r.arguments or {}  # the agent's choice, before the anchor is snapped to a shot boundary
            if plan is None:
                at_moment = False
            elif "at" in a:
                at_moment = start - 1 <= a["at"] <= end + 1
            else:
                at_moment = a["start"] < end + 1 and a["end"] > start - 1
            rows.append({"intent": intent, "meant": meant, "chosen": chosen, "valid": r.valid,
                         "moment": at_moment, "seconds": r.seconds, "attempts": r.attempts,
                         "error": r.error, "prompt": plan["prompt"] if plan else None})  # fmt: skip
            print(
                f"{len(rows)}/{len(INTENTS)} {r.seconds:.1f}s valid={r.valid} {chosen} ({meant})", flush=True
            )
    n = len(rows)
    seconds = sorted(r["seconds"] for r in rows)
    summary = {
        "intents": n,
        "valid": round(100 * sum(r["valid"] for r in rows) / n, 1),
        "operation": round(100 * sum(r["chosen"] == r["meant"] for r in rows) / n, 1),
        "moment": round(100 * sum(r["moment"] for r in rows) / n, 1),
        "second_try": round(100 * sum(r["attempts"] > 1 for r in rows) / n, 1),
        "p50_s": round(statistics.median(seconds), 2),
        "p95_s": round(seconds[min(n - 1, round(0.95 * (n - 1)))], 2),
    }
    lines = [
        "# The edit agent: plain-words intents to edit requests",
        "",
        f"{n} scripted intents about 96 s of Big Buck Bunny with 12 subtitle cues (tests/helpers.py "
        f"`INTENTS`, `EDIT_CUES`); {args.model} served by vLLM (CPU build), the choice under a JSON schema "
        "(structured output), one more try when vidmem refuses the request. *valid*: a job was queued (anchor "
        "inside the video, insertions on a shot boundary, a non-empty prompt the model wrote); *operation*: "
        "the one meant; *moment*: the anchor the agent chose (before snapping) within 1 s of, or overlapping, the "
        "cue meant. Chosen by looking at these intents (there is no held-out set): the candidate moments are "
        "transcript cues, not refined spans (first run: 20.8% moment), and the schema asks for the moment "
        "before the operation (second run: 33.3% moment, 79.2% operation).",
        "",
        f"Reproduce: `.venv/bin/python -m tests.bench.bench_edit_agent --model {args.model}`",
        f"Machine: {machine()}.",
        "",
        "| intents | valid % | operation meant % | moment meant % | needed a second try % | p50 s | p95 s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {n} | {summary['valid']} | {summary['operation']} | {summary['moment']} | {summary['second_try']} | "
        f"{summary['p50_s']} | {summary['p95_s']} |",
        "",
        "| intent | meant | chosen | valid | moment | s | prompt written |",
        "|---|---|---|---|---|---:|---|",
    ]
    for r in rows:
        prompt = (r["prompt"] or r["error"] or "").replace("|", "/")[:90]
        lines.append(f"| {r['intent']} | {r['meant']} | {r['chosen']} | {r['valid']} | {r['moment']} | "
                     f"{r['seconds']:.1f} | {prompt} |")  # fmt: skip
    write_results(
        "edit_agent", {"model": args.model, "summary": summary, "rows": rows}, "\n".join(lines) + "\n"
    )
    print("\n".join(lines[:12]))


if __name__ == "__main__":
    main()
