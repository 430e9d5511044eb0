"""The diffusers backend at full size on a GPU: seconds per denoising step and peak GPU memory.

LTX-Video's real architecture (the default configurations of `LTXVideoTransformer3DModel`, 28 layers,
2048 wide; `AutoencoderKLLTXVideo`; a T5 encoder of T5-XXL's shape, 4096 wide, 24 layers) with random
weights — no weights ship anywhere, so this measures speed and memory, never the picture — built on
the GPU in bfloat16, saved, and run through `reasoning.generate.diffusion.DiffusersBackend` exactly as
a user's folder would be: an extension from a real frame of `bbb_10min.mp4`, 704x480, at 8k+1 frames.

Needs a CUDA GPU (the project's GPU machine when a session is lent one); CI never runs it.
Run: .venv/bin/python -m tests.bench.bench_diffusers_gpu [--frames 121 97 65] [--steps 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.bench.common import SHARED, machine, write_results


def build(folder: Path) -> Path:
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXVideoTransformer3DModel,
    )
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    torch.manual_seed(0)
    with torch.device("cuda"):
        transformer = LTXVideoTransformer3DModel().to(torch.bfloat16)
        vae = AutoencoderKLLTXVideo().to(torch.bfloat16)
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=32128,
                d_model=4096,
                d_kv=64,
                d_ff=10240,
                num_layers=24,
                num_heads=64,
                feed_forward_proj="gated-gelu",
                pad_token_id=0,
            )  # fmt: skip
        ).to(torch.bfloat16)
    words = ["<pad>", "</s>", "<unk>", "a", "rabbit", "hops", "on"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    pipe = LTXConditionPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                                text_encoder=text_encoder, tokenizer=tokenizer)  # fmt: skip
    pipe.save_pretrained(folder)
    del pipe, transformer, vae, text_encoder
    torch.cuda.empty_cache()
    return folder


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[121, 65])
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this benchmark runs on a GPU machine only")
    from indexers import ingest
    from indexers.captions import CaptionOptions
    from indexers.pipeline import IngestOptions
    from memory import Store
    from reasoning.generate import EditRequest, Run, prepare, run_edit

    work = Path(tempfile.mkdtemp(prefix="vidmem-gpu-"))
    model = build(work / "ltx-random")
    store = Store(work / "home")
    options = IngestOptions(library="g", captions=CaptionOptions(llm=None), look=None)
    vid = ingest(store, SHARED / "media" / "bbb_trailer.mp4", options).video_id
    rows = []
    for frames in args.frames:
        backend_options = {
            "diffusers": {"model": model, "device": "cuda", "dtype": "bfloat16", "steps": args.steps}
        }
        req = EditRequest(video_id=vid, operation="extend", anchor=20.0, duration=frames / 24, prompt="a rabbit hops on",
                          backend="diffusers", seed=0)  # fmt: skip
        plan, backend = prepare(store, req, None, backend_options)
        backend.load()  # type: ignore[attr-defined]
        torch.cuda.reset_peak_memory_stats()
        marks: list[float] = []
        t0 = time.perf_counter()
        run_edit(
            store,
            plan,
            backend,
            work / f"out-{frames}",
            Run(lambda f, marks=marks: marks.append(time.perf_counter())),
        )
        total = time.perf_counter() - t0
        torch.cuda.synchronize()
        denoise = [t for t in marks if t - t0 >= 0][: args.steps]
        per_step = (denoise[-1] - denoise[0]) / max(1, len(denoise) - 1) if len(denoise) > 1 else float("nan")
        rows.append({"frames": plan.frames, "size": backend.size(plan), "steps": args.steps,  # type: ignore[attr-defined]
                     "s_per_step": round(per_step, 3), "total_s": round(total, 1),
                     "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)})  # fmt: skip
        print(rows[-1], flush=True)
    gpu = torch.cuda.get_device_name(0)
    lines = [
        "# The diffusers backend at full size on a GPU",
        "",
        f"LTX-Video's architecture with random weights (speed and memory only), bfloat16, on {gpu}; an "
        "extension from a frame of bbb_trailer.mp4 through `DiffusersBackend` (conditioning, VAE decode, "
        "conforming included in the total).",
        "",
        f"Reproduce: `.venv/bin/python -m tests.bench.bench_diffusers_gpu --frames {' '.join(map(str, args.frames))} --steps {args.steps}`",
        f"Machine: {machine()}.",
        "",
        "| frames | size | steps | s per step | total s | peak GPU GiB |",
        "|---:|---|---:|---:|---:|---:|",
        *(
            f"| {r['frames']} | {r['size'][0]}x{r['size'][1]} | {r['steps']} | {r['s_per_step']} | {r['total_s']} | {r['peak_gib']} |"
            for r in rows
        ),
    ]
    write_results("diffusers_gpu", {"gpu": gpu, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
