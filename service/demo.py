"""The README's first command: make a real-looking sample, ingest it, show it, search it, ask it.

The film is Big Buck Bunny (Blender Foundation, CC-BY 3.0), fetched from the PyPI sdist of
moviepy 2.2.1, which ships it among its docs; a narrator (espeak-ng) speaks known lines over it at
known times. Without the registry, the sample falls back to ffmpeg test patterns with the same
narration, so the demo still runs end to end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from service.settings import Settings

NARRATION: tuple[tuple[float, str], ...] = (
    (6.0, "Welcome to the meadow. Our story follows a big rabbit who lives under an old tree."),
    (38.0, "A small bird sits on a branch, and the forest slowly wakes up in the morning light."),
    (70.0, "The rabbit stretches, yawns, and steps out of his burrow to greet the sunshine."),
    (104.0, "A pink butterfly flutters past the rabbit, who smiles and watches it fly away."),
    (132.0, "Three mischievous rodents hide behind the rocks and plan a nasty prank with an apple."),
)
LENGTH = 160.0  # seconds of film used
QUERIES = ("butterfly flying past the rabbit", "rodents planning a prank")
QUESTION = "Where do the rodents hide?"
"""Asked after the searches: answered by the configured answer engine (extractive by default), with
the moments it cites."""


def speech_mix(music: str, first_voice: int, offsets: Sequence[float]) -> str:
    """ffmpeg filter graph: a soundtrack chain ending in `[m]`, plus voice inputs `first_voice`,
    `first_voice + 1`, ... each delayed to its offset (seconds), mixed into `[a]` at full level."""
    delays = ";".join(
        f"[{first_voice + i}:a]adelay={round(t * 1000)}:all=1[v{i}]" for i, t in enumerate(offsets)
    )
    labels = "".join(f"[v{i}]" for i in range(len(offsets)))
    return f"{music};{delays};[m]{labels}amix=inputs={len(offsets) + 1}:normalize=0[a]"


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {res.stderr.strip()[-400:]}")


def _film(workdir: Path, err: Console) -> Path | None:
    """Big Buck Bunny from the moviepy sdist on PyPI, or None when the registry is unreachable."""
    film = workdir / "bbb.mp4"
    if film.exists():
        return film
    err.print("fetching Big Buck Bunny (CC-BY 3.0) from the moviepy 2.2.1 sdist on PyPI ...")
    dl = workdir / "dl"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            "moviepy==2.2.1",
            "-d",
            str(dl),
        ],
        capture_output=True,
        text=True,
    )
    sdists = list(dl.glob("moviepy-*.tar.gz"))
    if res.returncode != 0 or not sdists:
        err.print("[yellow]could not fetch the film; using ffmpeg test patterns instead[/yellow]")
        return None
    with tarfile.open(sdists[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("moviepy_10_minutes.zip"))
        with tar.extractfile(member) as zf_bytes, zipfile.ZipFile(zf_bytes) as zf:  # type: ignore[union-attr]
            name = next(n for n in zf.namelist() if n.endswith("bbb.mp4") and "trailer" not in n)
            with zf.open(name) as src, open(film, "wb") as dst:
                shutil.copyfileobj(src, dst)
    shutil.rmtree(dl, ignore_errors=True)
    return film


def make_sample(workdir: Path, err: Console) -> tuple[Path, list[tuple[float, str]]]:
    """A ~2.7-minute film with narration at known times; returns its path and the lines spoken."""
    workdir.mkdir(parents=True, exist_ok=True)
    sample = workdir / "sample.mp4"
    if sample.exists():
        return sample, list(NARRATION)
    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is missing; run `make setup`")
    voices = []
    for i, (_, text) in enumerate(NARRATION):
        wav = workdir / f"line{i}.wav"
        _run(["espeak-ng", "-s", "150", "-w", str(wav), text])
        voices.append(wav)
    film = _film(workdir, err)
    inputs: list[str] = []
    if film is not None:
        inputs = ["-t", str(LENGTH), "-i", str(film)]
        music = "[0:a]volume=0.35[m]"
    else:  # test patterns cut every 20 s, with a quiet tone as the soundtrack
        srcs = [
            "testsrc2",
            "smptebars",
            "mandelbrot",
            "rgbtestsrc",
            "cellauto",
            "life",
            "testsrc",
            "yuvtestsrc",
        ]
        for src in srcs:
            inputs += ["-f", "lavfi", "-t", str(LENGTH / len(srcs)), "-i", f"{src}=size=640x360:rate=24"]
        inputs += ["-f", "lavfi", "-t", str(LENGTH), "-i", "sine=frequency=220:sample_rate=44100"]
        music = f"[{len(srcs)}:a]volume=0.05[m]"
    first_voice = inputs.count("-i")
    for wav in voices:
        inputs += ["-i", str(wav)]
    graph = speech_mix(music, first_voice, [t for t, _ in NARRATION])
    if film is not None:
        maps = ["-map", "0:v:0", "-c:v", "copy"]
    else:
        n = first_voice - 1
        graph += ";" + "".join(f"[{i}:v]" for i in range(n)) + f"concat=n={n}:v=1:a=0[v]"
        maps = ["-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    _run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            *inputs,
            "-filter_complex",
            graph,
            *maps,
            "-map",
            "[a]",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            "-t",
            str(LENGTH),
            str(sample),
        ]
    )
    return sample, list(NARRATION)


def run_demo(cfg: Settings, workdir: Path, out: Console, err: Console) -> None:
    import os

    from indexers import IngestOptions, ingest
    from indexers.transcript import TranscribeOptions
    from kernels.timecode import hms
    from memory import Store
    from memory.runtime.text import SentenceEmbedder
    from reasoning import SearchOptions, search
    from reasoning.answer import ask
    from reasoning.reader import Reading
    from service.cli import print_timeline, stage_progress
    from service.settings import make_answer_engine

    sample, lines = make_sample(workdir, err)
    out.print(
        f"[bold]sample[/bold] {sample} -- narration at " + ", ".join(hms(t) for t, _ in lines),
        highlight=False,
    )
    store = Store(cfg.home, cfg.database_url, cfg.index_backend)
    os.environ.setdefault("VIDMEM_PROGRESS", "1")
    with stage_progress() as report:
        opts = IngestOptions(library="demo", transcribe=TranscribeOptions(model=cfg.asr_model))
        res = ingest(store, sample, opts, cfg.cache_dir, report)
    out.print(f"ingested [bold]{res.video_id}[/bold] into library 'demo' ({hms(res.duration)})\n")
    print_timeline(store, res.video_id)
    embedder = SentenceEmbedder(cfg.text_model)
    for query in QUERIES:
        out.print(f"\n[bold]search[/bold] {query!r}", highlight=False)
        for m in search(store, query, "demo", options=SearchOptions(top=3), embedder=embedder):
            out.print(
                f"  [cyan]{hms(m.start)} - {hms(m.end)}[/cyan]  score {m.score:.4f}  {escape(m.text[:100])}",
                highlight=False,
            )
    out.print(f"\n[bold]ask[/bold] {QUESTION!r}", highlight=False)
    answer = ask(store, QUESTION, make_answer_engine(cfg, embedder), "demo", embedder=embedder)
    out.print(f"  {escape(answer.answer)}", highlight=False)
    for c in answer.citations:
        out.print(f"  cites [cyan]{hms(c.start)} - {hms(c.end)}[/cyan]  video {c.video_id}", highlight=False)
    read = answer.reading
    tail = (
        f", read {len(read.read)} of {read.candidates}, exit: {read.exit}"
        if isinstance(read, Reading)
        else ""
    )
    out.print(f"  [dim]engine {escape(answer.engine)}{escape(tail)}[/dim]", highlight=False)
    out.print(
        f'\nTry: vidmem search "..." --library demo --home {cfg.home}\n'
        f'     vidmem ask "..." --library demo --home {cfg.home}',
        highlight=False,
    )
