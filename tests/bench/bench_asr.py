"""What ingestion costs on top of speech recognition: `vidmem ingest` against faster-whisper alone.

The input is 5 minutes of bbb_10min.mp4 (720p film) with real speech laid over its soundtrack at
known offsets: jfk.wav, the two-speaker call.wav and five LibriVox readings. Both sides run in a
fresh process with the same model (whisper base, int8, greedy, VAD, word timestamps), so both pay
Python start-up and model loading; faster-whisper decodes the audio itself. `vidmem ingest` runs
twice on each input, each time into a fresh home: with every default stage (vision and the LLM's
captions included), and with the first slice's stages only (`VIDMEM_VISION=false VIDMEM_LLM=none`).

Run: .venv/bin/python -m tests.bench.bench_asr
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from service.demo import speech_mix
from tests.bench.common import SHARED, VIDMEM, WORK, machine, measure, write_results

SPEECH = (
    [("jfk.wav", 10.0), ("call.wav", 40.0)]
    + [
        (f"librivox/sense_and_sensibility_01_austen_64kb-{n}.wav", 90.0 + 30.0 * i)
        for i, n in enumerate(["0870", "0880", "0890", "0920", "0930"])
    ]
    + [("jfk.wav", 260.0)]
)
LENGTH = 300.0

WHISPER_ALONE = """
import sys, time
from faster_whisper import WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8")
segments, info = model.transcribe(sys.argv[2], beam_size=1, vad_filter=True, word_timestamps=True,
                                  condition_on_previous_text=False)
print(sum(1 for _ in segments))
"""


def make_clip() -> tuple:  # type: ignore[type-arg]
    media = SHARED / "media"
    out = WORK / "speech_over_film.mp4"
    if not out.exists():
        inputs = ["-t", str(LENGTH), "-i", str(media / "bbb_10min.mp4")]
        for name, _ in SPEECH:
            inputs += ["-i", str(media / name)]
        graph = speech_mix("[0:a]volume=0.3[m]", 1, [t for _, t in SPEECH])
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                *inputs,
                "-filter_complex",
                graph,
                "-map",
                "0:v",
                "-map",
                "[a]",
                "-c:v",
                "copy",
                "-c:a",
                "aac",
                "-t",
                str(LENGTH),
                str(out),
            ],
            check=True,
        )
    return out, LENGTH


def audio_only(clip):  # type: ignore[no-untyped-def]
    """The same soundtrack without the picture (the AAC stream copied, not re-encoded)."""
    out = WORK / "speech_over_film.m4a"
    if not out.exists():
        cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-map", "0:a", "-c:a", "copy", str(out)]
        subprocess.run(cmd, check=True)
    return out


def looped(audio, times: int):  # type: ignore[no-untyped-def]
    """The soundtrack `times` over, one file (stream copy): fixed costs spread over longer input."""
    out = WORK / f"speech_over_film_x{times}.m4a"
    if not out.exists():
        listing = WORK / f"speech_over_film_x{times}.txt"
        listing.write_text(f"file '{audio}'\n" * times)
        cmd = ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
        subprocess.run([*cmd, "-c", "copy", str(out)], check=True)
    return out


LEAN = {"VIDMEM_VISION": "false", "VIDMEM_LLM": "none"}


def ingest(path, home, settings: dict[str, str]) -> tuple:  # type: ignore[no-untyped-def, type-arg]
    """One `vidmem ingest` in a fresh process: its wall seconds and the timeline it stored."""
    env = {"VIDMEM_HOME": str(home), **settings}
    run = measure([str(VIDMEM), "ingest", str(path), "--json"], env=env)
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-800:])
    video_id = json.loads(run.stdout)["video_id"]
    shown = json.loads(measure([str(VIDMEM), "show", video_id, "--json"], env=env).stdout)
    return run.seconds, shown


def compare(path, homes, model_dir: str) -> dict:  # type: ignore[no-untyped-def]
    """faster-whisper alone, then `vidmem ingest` with every stage and with the first slice's, on one file."""
    alone = measure([sys.executable, "-c", WHISPER_ALONE, model_dir, str(path)])
    if alone.returncode != 0:
        raise RuntimeError(alone.stderr[-800:])
    whole, shown = ingest(path, homes[0], {})
    lean, _ = ingest(path, homes[1], LEAN)
    return {
        "input": path.name,
        "faster_whisper_alone_s": round(alone.seconds, 1),
        "vidmem_ingest_s": round(whole, 1),
        "ratio": round(whole / alone.seconds, 2),
        "vidmem_ingest_lean_s": round(lean, 1),
        "ratio_lean": round(lean / alone.seconds, 2),
        "whisper_segments": int(alone.stdout.strip() or 0),
        "vidmem_cues": len(shown["transcript"]),
        "vidmem_shots": len(shown["shots"]),
        "vidmem_scenes": len(shown["scenes"]),
    }


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    clip, length = make_clip()
    home, lean = WORK / "home-asr", WORK / "home-asr-lean"
    for h in (home, lean):
        shutil.rmtree(h, ignore_errors=True)
    prep = measure([str(VIDMEM), "models"], env={"VIDMEM_HOME": str(home)})
    lean.mkdir(parents=True)
    (lean / "models").symlink_to(home / "models")
    model_dir = next(
        line.split(": ", 1)[1] for line in prep.stdout.splitlines() if line.startswith("whisper base")
    )
    audio = audio_only(clip)
    rows = [compare(p, (home, lean), model_dir) for p in (clip, audio, looped(audio, 6))]
    data = {"machine": machine(), "clip_s": length, "rows": rows}
    lines = [
        "# Ingestion on top of speech recognition",
        "",
        f"Machine: {data['machine']}. Command: `.venv/bin/python -m tests.bench.bench_asr`.",
        f"Input: {length:.0f} s of bbb_10min.mp4 (1280×720) with jfk.wav, call.wav and five LibriVox readings",
        "mixed over the soundtrack (speech_over_film.mp4), the same soundtrack alone (.m4a, the AAC",
        "stream copied), and that soundtrack six times over (30 min). Same model both sides: whisper base, int8, greedy, VAD, word timestamps; each run",
        "is a fresh process that pays Python start-up and model loading. *Every stage*: `vidmem ingest` as it",
        "ships: shots and the look inside them (OCR, labels, faces and people, visual vectors; in a worker",
        "process, beside the ASR), transcript, scenes/chapters, captions condensed by SmolLM2, embeddings,",
        "memory. *First slice*: `VIDMEM_VISION=false VIDMEM_LLM=none` (shots, transcript, scenes/chapters,",
        "extractive captions, embeddings, memory). Each in a fresh home.",
        "",
        "| input | faster-whisper alone | every stage | / ASR | first slice | / ASR | whisper segments | cues | shots | scenes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['input']} | {r['faster_whisper_alone_s']} s | {r['vidmem_ingest_s']} s | **{r['ratio']}×** | "
            f"{r['vidmem_ingest_lean_s']} s | **{r['ratio_lean']}×** | "
            f"{r['whisper_segments']} | {r['vidmem_cues']} | {r['vidmem_shots']} | {r['vidmem_scenes']} |"
        )
    lines.append("")
    write_results("asr", data, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
