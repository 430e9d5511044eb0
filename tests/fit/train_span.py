"""Fit the span scorer (reasoning/refine.py, `span_model.json`) on TutorialVQA's train questions.

The 76 transcripts are ingested through the normal path (service.evaluate, as `vidmem eval` does);
for every train question, every candidate run of cues in its video is described by the system's own
`span_features` and labelled with its IoU against the gold span. A one-hidden-layer MLP (32 tanh
units) is fitted listwise: the softmax of its scores over a question's candidates should match the
softmax of their IoU / 0.05, so runs that overlap the answer best rank first. Only the train split
is read for fitting; dev is reported after, by `vidmem eval`'s own code. Train and dev share all
76 videos, so dev does not show what the scorer is worth on unseen videos: tests/fit/span_folds.py
refits it with these functions on folds split by video.

Run: .venv/bin/python -m tests.fit.train_span [--epochs 15] [--hidden 32] [--check-dev]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from tests.bench.tutorialvqa import DATA, open_library


def examples(store, ids, split: str):  # type: ignore[no-untyped-def]
    from service.evaluate import read_questions

    return question_examples(store, ids, read_questions(DATA, split))


def question_examples(store, ids, questions, embedder=None):  # type: ignore[no-untyped-def]
    """Per question: (features of every candidate run in its video, their IoU with the gold span)."""
    from memory.runtime.text import SentenceEmbedder
    from reasoning.refine import span_features
    from reasoning.retrieve import load_cues
    from service.evaluate import iou

    enc = embedder or SentenceEmbedder()
    qvecs = enc.embed([q.text for q in questions])
    runs = {}
    out = []
    for q, qv in zip(questions, qvecs, strict=True):
        vid = ids[q.video]
        if vid not in runs:
            runs[vid] = load_cues(store, vid, enc.space)
        run = runs[vid]
        a, b, F = span_features(run, qv, q.text)
        target = np.array(
            [iou((run.start[i], run.end[j]), (q.start, q.end)) for i, j in zip(a, b, strict=True)]
        )
        out.append((torch.tensor(F, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)))
    return out


def fit(data, hidden: int, epochs: int, tau: float = 0.05, l2: float = 1e-3, seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    allF = torch.cat([f for f, _ in data])
    mu, sd = allF.mean(0), allF.std(0) + 1e-6
    model = torch.nn.Sequential(
        torch.nn.Linear(allF.shape[1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    # per question, once: standardised features and the target distribution softmax(IoU / tau)
    feats = [(f - mu) / sd for f, _ in data]
    wants = [torch.softmax(t / tau, 0) for _, t in data]
    for epoch in range(epochs):
        perm = np.random.RandomState(seed * 1000 + epoch).permutation(len(data))
        total = 0.0
        for k in range(0, len(perm), 64):
            # a batch's candidates in one tensor; each question's log-softmax is taken over its own
            # rows (segment ids), so the loss is the sum over questions of each one's listwise loss
            batch = perm[k : k + 64]
            seg = torch.cat([torch.full((len(wants[i]),), j) for j, i in enumerate(batch)])
            z = model(torch.cat([feats[i] for i in batch])).squeeze(-1)
            top = torch.full((len(batch),), -torch.inf).scatter_reduce(0, seg, z.detach(), "amax")
            norm = torch.zeros(len(batch)).index_add(0, seg, torch.exp(z - top[seg]))
            logp = z - (torch.log(norm) + top)[seg]
            want = torch.cat([wants[i] for i in batch])
            loss = -(want * logp).sum() / 64 + l2 * sum((p**2).sum() for p in model.parameters())
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        print(f"epoch {epoch + 1}/{epochs}: loss {total / max(1, len(perm) // 64):.4f}", flush=True)
    return model, mu, sd


def to_scorer(model, mu, sd):  # type: ignore[no-untyped-def]
    """The fitted torch MLP as the numpy `SpanScorer` that retrieval runs."""
    from reasoning.refine import SpanScorer

    lin1, lin2 = model[0], model[2]
    return SpanScorer(
        mu.numpy().astype(np.float64),
        sd.numpy().astype(np.float64),
        lin1.weight.detach().numpy().astype(np.float64),
        lin1.bias.detach().numpy().astype(np.float64),
        lin2.weight.detach().numpy()[0].astype(np.float64),
    )


def main() -> None:
    from reasoning.refine import MODEL_FILE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument(
        "--check-dev",
        action="store_true",
        help="Do not write span_model.json: answer the dev questions with the weights just fitted "
        "(single-video, `vidmem eval`'s code) and print the figures.",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    store, ids = open_library()
    print(f"library ready in {time.perf_counter() - t0:.0f} s", flush=True)
    train = examples(store, ids, "train")
    print(f"{len(train)} train questions, {sum(len(f) for f, _ in train)} candidate spans", flush=True)
    model, mu, sd = fit(train, args.hidden, args.epochs)
    if args.check_dev:
        from service.evaluate import evaluate, read_questions

        dev = read_questions(DATA, "dev")
        print(
            "dev, single-video, refitted weights:", evaluate(store, dev, ids, scorer=to_scorer(model, mu, sd))
        )
        return
    raw = to_scorer(model, mu, sd).to_json()
    raw["fitted_on"] = "TutorialVQA train split (3,718 questions), tests/fit/train_span.py"
    raw = {
        k: (np.round(v, 6).tolist() if isinstance(v, list) and k not in ("features",) else v)
        for k, v in raw.items()
    }
    MODEL_FILE.write_text(json.dumps(raw) + "\n")
    print(f"wrote {MODEL_FILE}")


if __name__ == "__main__":
    main()
