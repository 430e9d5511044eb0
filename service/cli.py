"""`vidmem` on the command line: ingest, show, search, ask, edit, list, delete, reindex, models, demo.

Progress and errors go to stderr; results (tables or `--json`) go to stdout. Every error is one
line starting with `error:` and a non-zero exit status.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from kernels.timecode import hms
from service.settings import Settings

if TYPE_CHECKING:
    from memory import Store

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Long-video memory: ingest, search, show.")
out = Console()
err = Console(stderr=True)

HomeOpt = Annotated[Path | None, typer.Option("--home", help="Data folder (env VIDMEM_HOME).")]
DbOpt = Annotated[str | None, typer.Option("--database-url", help="Catalog URL (env VIDMEM_DATABASE_URL).")]
LibOpt = Annotated[str | None, typer.Option("--library", "-l", help="Library name (env VIDMEM_LIBRARY).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class CliError(Exception):
    pass


def _settings(home: Path | None, database_url: str | None, **extra: Any) -> Settings:
    given = {k: v for k, v in {"home": home, "database_url": database_url, **extra}.items() if v is not None}
    return Settings(**given)


def _store(settings: Settings) -> Store:
    from memory import Store

    return Store(settings.home, settings.database_url, settings.index_backend)


@contextmanager
def _errors() -> Iterator[None]:
    """Known failures become one `error:` line and exit status 1; never a traceback."""
    from indexers.decode import MediaError
    from memory import StoreError

    try:
        yield
    except (MediaError, StoreError, CliError, ValueError, FileNotFoundError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(1) from None


@contextmanager
def stage_progress() -> Iterator[Callable[[str, float], None]]:
    """One bar per ingestion stage on stderr; yields the `report(stage, fraction)` callback.

    Shown on a terminal, or anywhere when VIDMEM_PROGRESS is set."""
    bar = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal and "VIDMEM_PROGRESS" not in os.environ,
    )
    tasks: dict[str, Any] = {}

    def report(stage: str, frac: float) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=1.0)
        bar.update(tasks[stage], completed=frac)

    with bar:
        yield report


@app.command()
def ingest(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Media files, or .srt/.vtt files as transcript-only items; or URLs of them "
            "(s3://BUCKET/KEY, https://…, file://…), read by byte ranges (env VIDMEM_S3_ENDPOINT_URL "
            "and the AWS variables for s3)."
        ),
    ],
    library: LibOpt = None,
    subtitles: Annotated[
        Path | None, typer.Option(help="Subtitle file used as the transcript (one PATH only).")
    ] = None,
    asr_model: Annotated[
        str | None, typer.Option(help="Speech model: base, tiny.en or a CTranslate2 folder.")
    ] = None,
    language: Annotated[str | None, typer.Option(help="Force the transcript language, e.g. en.")] = None,
    allow_damaged: Annotated[bool, typer.Option(help="Ingest video with corrupt frames anyway.")] = False,
    captioner: Annotated[
        str | None, typer.Option(help="composed or openai-vlm (env VIDMEM_CAPTIONER).")
    ] = None,
    llm: Annotated[
        str | None, typer.Option(help="Caption LLM: smollm2, a local folder, or none (env VIDMEM_LLM).")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Ingest on the Ray cluster at this address (its head's host:port, or auto): one task "
            "per file, and for a long one per window of its shots (vision) and per chunk of its audio "
            "(speech; VIDMEM_RAY_WINDOW), retried on another node if one is lost. Needs a PostgreSQL "
            "catalog.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Ingest media into a library: shots, what is on screen, transcript, scenes and chapters,
    captions, embeddings (resumes unfinished work)."""
    from indexers import MediaError
    from indexers import ingest as run_ingest
    from indexers.source import has_scheme

    with _errors():
        if subtitles is not None and len(paths) != 1:
            raise CliError("--subtitles applies to exactly one PATH")
        cfg = _settings(
            home,
            database_url,
            library=library,
            asr_model=asr_model,
            asr_language=language,
            captioner=captioner,
            llm=llm,
        )
        store = _store(cfg)
        opts = cfg.ingest_options(subtitles=subtitles, allow_damaged=allow_damaged)
        results: list[Any] = []
        failed = 0
        if ray:
            results, failed = _ingest_on_ray(ray, cfg, paths, opts, as_json)
        for path in [] if ray else paths:
            try:
                with stage_progress() as report:
                    res = run_ingest(
                        store, path if has_scheme(path) else Path(path), opts, cfg.cache_dir, report
                    )
            except MediaError as e:
                err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
                failed += 1
                continue
            results.append(res)
            if not as_json:
                what = (
                    "already ingested"
                    if res.existed
                    else ("resumed and ingested" if res.resumed else "ingested")
                )
                known = "" if res.identity == "sha256" else f", known by its {res.identity}"
                out.print(
                    f"{what} [bold]{res.video_id}[/bold] {escape(_media_name(path))} into library "
                    f"{escape(repr(res.library))} ({hms(res.duration)}{known})",
                    highlight=False,
                )
        if as_json:
            objs = [
                {"video_id": r.video_id, "library": r.library, "duration": round(r.duration, 3)}
                for r in results
            ]
            if objs or len(paths) > 1:
                print(json.dumps(objs[0] if len(paths) == 1 else objs))
        if failed:
            raise typer.Exit(1)


def _media_name(where: str) -> str:
    """The file name of a path or media URL, as the video's title will be."""
    from indexers.source import MediaError, media_source

    try:
        return media_source(where).name
    except MediaError:
        return where


def _ingest_on_ray(
    address: str, cfg: Settings, paths: list[str], opts: Any, as_json: bool
) -> tuple[list, int]:
    """`vidmem ingest --ray`: the files as tasks on the cluster, each reported as it finishes.
    Ray's own notices to the driver (a node lost, a task retried) print to `sys.stdout` from a thread
    of Ray's: they go to stderr, so stdout carries only vidmem's lines (`--json` stays parseable)."""
    from indexers.distributed import Where, ingest_on_ray

    if not cfg.database_url or not cfg.database_url.startswith("postgresql"):
        raise CliError("--ray needs a catalog every node reaches: set VIDMEM_DATABASE_URL to PostgreSQL")
    where = Where(str(cfg.home), cfg.database_url, cfg.index_backend, str(cfg.cache_dir))

    shown = Console(file=sys.stdout)  # the real stdout, bound before Ray's notices are sent aside

    def done(path: str, res: Any, error: str | None) -> None:
        if error:
            err.print(f"[red]error:[/red] {escape(error)}", highlight=False, soft_wrap=True)
        elif not as_json:
            shown.print(f"ingested [bold]{res.video_id}[/bold] {escape(_media_name(path))} on the cluster "
                      f"into library {escape(repr(res.library))} ({hms(res.duration)})", highlight=False)  # fmt: skip

    sources = [p if "://" in p else Path(p) for p in paths]
    with redirect_stdout(sys.stderr):
        got = ingest_on_ray(address, where, sources, opts, done, window=cfg.ray_window or None)
    ok = [r for r in got if not isinstance(r, Exception)]
    return ok, len(got) - len(ok)


def _tags_text(tags: list[dict]) -> str:
    """Tags (labels, faces, people) as `vidmem show` prints them, apart from the caption: they are
    candidates, not facts. `tabby 0.42` (a label, its score), `2 face` (most on one frame); a
    scene's or chapter's say how many of its shots carry each (`tabby 0.42 in 3 shots`)."""
    return ", ".join(
        (f"{t['name']} {t['score']:.2f}" if t["kind"] == "label" else f"{t['count']} {t['name']}")
        + (f" in {t['shots']} shots" if t.get("shots", 1) > 1 else "")
        for t in tags
    )


def print_timeline(store: Store, video_id: str, as_json: bool = False) -> None:
    """Chapters, scenes and shots with their times and the transcript under them (or the same as JSON)."""
    from service.export import timeline

    t = timeline(store, video_id)
    if as_json:
        print(json.dumps(t))
        return
    video, chapters, scenes, shots, cues = t["video"], t["chapters"], t["scenes"], t["shots"], t["transcript"]
    out.print(
        f"[bold]{escape(video['title'])}[/bold]  id {video['id']}  library {escape(repr(video['library']))}  "
        f"{hms(video['duration'], True)}  {len(chapters)} chapters  {len(scenes)} scenes  {len(shots)} shots  "
        f"{len(cues)} cues  language {video['language'] or '-'}  [{video['status']}]",
        highlight=False,
    )
    if t["summary"]:
        out.print(f"[italic]{escape(t['summary'])}[/italic]", highlight=False)
    atoms = [(g, f"shot {i + 1}") for i, g in enumerate(shots)] or [
        (g, f"scene {i + 1}") for i, g in enumerate(scenes)
    ]
    spans = [(g["start"], g["end"], label) for g, label in atoms] or [(0.0, video["duration"], "")]
    shot_caption = {round(g["start"], 6): g.get("caption") for g in shots}
    shot_tags = {round(g["start"], 6): _tags_text(g.get("tags", [])) for g in shots}
    chapter_at = {round(c["start"], 6): i for i, c in enumerate(chapters)}
    scene_at = {round(c["start"], 6): i for i, c in enumerate(scenes)} if shots else {}
    headings = [
        ("chapter", chapters, chapter_at, "", "bold magenta"),
        ("scene", scenes, scene_at, "  ", "bold green"),
    ]
    ci = 0
    for n, (start, end, label) in enumerate(spans):
        for name, items, at, indent, style in headings:  # the chapter and scene that begin here
            if (i := at.get(round(start, 6))) is not None:
                c = items[i]
                out.print(
                    f"{indent}[{style}]{name} {i + 1}  {hms(c['start'], True)} - {hms(c['end'], True)}[/{style}]"
                    + (f"  {escape(c['caption'])}" if c["caption"] else "")
                    + (
                        f"  [yellow]tags: {escape(span_tags)}[/yellow]"
                        if (span_tags := _tags_text(c.get("tags", [])))
                        else ""
                    ),
                    highlight=False,
                )
        caption = shot_caption.get(round(start, 6))
        out.print(
            f"    [cyan]{hms(start, True)} - {hms(end, True)}[/cyan]  [bold]{label}[/bold]"
            + (f"  [dim]{escape(caption)}[/dim]" if caption else "")
            + (
                f"  [yellow]tags: {escape(tags)}[/yellow]" if (tags := shot_tags.get(round(start, 6))) else ""
            ),
            highlight=False,
        )
        while ci < len(cues) and (cues[ci]["start"] < end or n == len(spans) - 1):
            out.print(f"        {hms(cues[ci]['start'], True)}  {escape(cues[ci]['text'])}", highlight=False)
            ci += 1


@app.command()
def show(
    video_id: Annotated[str, typer.Argument(help="Video id (see `vidmem list`).")],
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Print a video's timeline: chapters, scenes and shots with their times, the transcript under them."""
    with _errors():
        print_timeline(_store(_settings(home, database_url)), video_id, as_json)


@app.command()
def export(
    video_id: Annotated[str, typer.Argument(help="Video id (see `vidmem list`).")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="vtt: WebVTT chapter markers; json: the nested hierarchy.")
    ] = "vtt",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Export a video's chapters (WebVTT) or its whole hierarchy (JSON) for players and editors."""
    from service.export import nested, timeline, webvtt_chapters

    with _errors():
        if fmt not in ("vtt", "json"):
            raise CliError(f"unknown format {fmt!r}; choose vtt or json")
        t = timeline(_store(_settings(home, database_url)), video_id)
        text = webvtt_chapters(t) if fmt == "vtt" else json.dumps(nested(t), indent=2) + "\n"
        if output is None:
            sys.stdout.write(text)
            return
        if output.is_dir():
            raise CliError(f"{output}: is a directory; give a file name")
        tmp = output.with_name(f".{output.name}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, output)  # whole or not at all
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise CliError(f"{output}: cannot write ({e.strerror})") from None
        err.print(f"wrote {escape(str(output))}", highlight=False)


@app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="What to look for, in plain language.")],
    library: LibOpt = None,
    video: Annotated[str | None, typer.Option("--video", help="Search inside one video.")] = None,
    top: Annotated[int, typer.Option("--top", "-k", min=1, max=1000, help="Moments to return.")] = 10,
    level: Annotated[
        str,
        typer.Option(
            "--level",
            help="What to return: moment (transcript windows and shots), cue, shot, scene, chapter or all.",
        ),
    ] = "moment",
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Find moments: hybrid lexical + dense search over transcript windows and shots (or scenes, chapters)."""
    from reasoning import SearchOptions, search

    with _errors():
        cfg = _settings(home, database_url, library=library)
        store = _store(cfg)
        from memory.runtime.images import image_encoder
        from memory.runtime.text import SentenceEmbedder

        visual = image_encoder(cfg.image_encoder)
        moments = search(
            store,
            query,
            cfg.library,
            video,
            SearchOptions(top=top, level=level),
            SentenceEmbedder(cfg.text_model),
            visual if visual.has_text else None,
        )
        if as_json:
            print(json.dumps([m.to_json() for m in moments]))
            return
        if not moments:
            out.print("no moments found")
            return
        table = Table("when", "video", "level", "score", "text", show_lines=False)
        for m in moments:
            table.add_row(
                f"{hms(m.start)} - {hms(m.end)}", m.video_id, m.kind, f"{m.score:.4f}", escape(m.text[:160])
            )
        out.print(table)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="A question about the videos, in plain language.")],
    library: LibOpt = None,
    video: Annotated[str | None, typer.Option("--video", help="Ask about one video.")] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="auto, local, openai or extractive (env VIDMEM_ANSWER_ENGINE)."),
    ] = None,
    evidence: Annotated[int, typer.Option(min=1, max=20, help="Refined spans that may be read.")] = 5,
    gists: Annotated[int, typer.Option(min=0, max=5, help="Scene or chapter gists read first.")] = 2,
    exit_gate: Annotated[
        bool, typer.Option("--exit-gate/--read-all", help="Stop reading when what was read suffices.")
    ] = True,
    whole: Annotated[
        bool,
        typer.Option(
            "--whole",
            help="Read the whole --video part by part with a bounded memory (GRU-Mem); needs an LLM engine.",
        ),
    ] = False,
    fallback: Annotated[
        bool,
        typer.Option(
            "--fallback", help="If the LLM server cannot be reached, give the extractive answer (marked)."
        ),
    ] = False,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Answer a question from the videos, citing the moments it rests on (HH:MM:SS)."""
    from memory.runtime.llm import LLMError, LLMUnavailable
    from memory.runtime.text import SentenceEmbedder
    from reasoning.answer import AskOptions, LLMEngine
    from reasoning.answer import ask as run_ask
    from reasoning.gru_mem import WholeReading, read_whole
    from reasoning.reader import Reading
    from service.settings import make_answer_engine

    with _errors():
        cfg = _settings(home, database_url, library=library, answer_engine=engine)
        store = _store(cfg)
        embedder = SentenceEmbedder(cfg.text_model)
        answer_engine = make_answer_engine(cfg, embedder)
        if whole and video is None:
            raise CliError("--whole reads one video: name it with --video")
        if whole and not isinstance(answer_engine, LLMEngine):
            raise CliError("--whole needs an LLM engine (--engine openai or local)")
        try:
            if whole:
                assert isinstance(answer_engine, LLMEngine) and video is not None
                answer = read_whole(store, video, question, answer_engine.llm)
            else:
                opts = AskOptions(evidence=evidence, gists=gists, exit_gate=exit_gate, fallback=fallback)
                answer = run_ask(store, question, answer_engine, cfg.library, video, opts, embedder)
        except LLMUnavailable as e:
            raise CliError(f"{e}\n(--fallback gives the extractive answer instead)") from None
        except LLMError as e:
            raise CliError(str(e)) from None
        if answer.fallback:
            err.print(
                f"[yellow]fallback:[/yellow] {escape(answer.fallback.source)} did not answer: "
                f"{escape(answer.fallback.reason)}",
                highlight=False,
                soft_wrap=True,
            )
        if as_json:
            print(json.dumps(answer.to_json()))
            return
        out.print(escape(answer.answer), highlight=False)
        for c in answer.citations:
            out.print(f"  [cyan]{hms(c.start)} - {hms(c.end)}[/cyan]  video {c.video_id}", highlight=False)
        err.print(f"[dim]engine {escape(answer.engine)}[/dim]", highlight=False)
        if isinstance(answer.reading, Reading):
            r = answer.reading
            err.print(
                f"[dim]read {len(r.read)} of {r.candidates} ({r.tokens} tokens), exit: {escape(r.exit)}"
                f"{escape(' - ' + r.note) if r.note else ''}[/dim]",
                highlight=False,
            )
        if isinstance(answer.reading, WholeReading):
            w = answer.reading
            changed = sum(s.update for s in w.steps)
            err.print(
                f"[dim]read {len(w.steps)} of {w.chunks} parts ({changed} changed the memory; "
                f"{w.tokens} prompt tokens), exit: {escape(w.exit)}[/dim]",
                highlight=False,
            )
        for t in answer.tools:
            told = f" → error: {t.error}" if t.error else f" → {t.added} new moment(s)"
            err.print(
                f"[dim]tool {escape(t.name)}({escape(json.dumps(t.arguments))}){escape(told)}[/dim]",
                highlight=False,
            )
        if answer.note:
            err.print(f"[yellow]note:[/yellow] {escape(answer.note)}", highlight=False, soft_wrap=True)


eval_app = typer.Typer(no_args_is_help=True, help="Run a benchmark through the normal ingestion and search.")
app.add_typer(eval_app, name="eval")


@eval_app.command("tutorialvqa")
def eval_tutorialvqa(
    data: Annotated[Path, typer.Option("--data", help="Folder with the TutorialVQA json files.")],
    split: Annotated[str, typer.Option(help="Reads SPLIT.json from --data.")] = "dev",
    mode: Annotated[
        str, typer.Option(help="single (inside the question's video) or library (all items).")
    ] = "single",
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Moment retrieval on TutorialVQA: R1@0.3/0.5/0.7 and mean IoU, in percent."""
    from indexers import IngestOptions
    from indexers.captions import CaptionOptions
    from service.evaluate import LIBRARY, evaluate, ingest_tracks, read_questions

    with _errors():
        if mode not in ("single", "library"):
            raise CliError(f"unknown mode {mode!r}; choose single or library")
        cfg = _settings(home, database_url)
        store = _store(cfg)
        questions = read_questions(data, split)
        opts = IngestOptions(library=LIBRARY, text_model=cfg.text_model, captions=CaptionOptions(llm=None))
        with stage_progress() as report:
            ids = ingest_tracks(store, data, cfg.home / "eval" / "tutorialvqa", opts, cfg.cache_dir, report)
            result = evaluate(store, questions, ids, mode, progress=report)
        if as_json:
            print(json.dumps({k: result[k] for k in ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU", "n")}))
            return
        out.print(
            f"TutorialVQA {escape(split)}, {mode}: R1@0.3 {result['R1@0.3']:.1f}  R1@0.5 {result['R1@0.5']:.1f}  "
            f"R1@0.7 {result['R1@0.7']:.1f}  mIoU {result['mIoU']:.1f}  (n={result['n']}, "
            f"{1000 * result['seconds_per_question']:.0f} ms per question)",
            highlight=False,
        )


@app.command("list")
def list_videos(
    library: LibOpt = None, as_json: JsonOpt = False, home: HomeOpt = None, database_url: DbOpt = None
) -> None:
    """List the videos of a library."""
    with _errors():
        cfg = _settings(home, database_url, library=library)
        videos = _store(cfg).videos(cfg.library)
        if as_json:
            print(json.dumps([v.to_json() for v in videos]))
            return
        table = Table("id", "title", "duration", "kind", "status")
        for v in videos:
            table.add_row(v.id, escape(v.title), hms(v.duration), v.kind, v.status)
        out.print(table)


@app.command()
def libraries(as_json: JsonOpt = False, home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """List libraries."""
    with _errors():
        rows = _store(_settings(home, database_url)).libraries()
        if as_json:
            print(json.dumps([lib.to_json(n) for lib, n in rows]))
        else:
            for lib, n in rows:
                out.print(f"{escape(lib.name)}\t{n} videos", highlight=False)


@app.command()
def delete(
    video_id: str,
    force: Annotated[
        bool,
        typer.Option("--force", help="Delete a video whose ingestion stopped half-way (status ingesting)."),
    ] = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Delete a video: its rows, vectors and thumbnails, and the service's copy of an upload (a file
    under the home's uploads, or the object it wrote into the object store); nothing else changes."""
    from service import jobs

    with _errors():
        settings = _settings(home, database_url)
        jobs.delete_video(_store(settings), settings, video_id, force=force)
        out.print(f"deleted {video_id}")


def _time(text: str) -> float:
    """Seconds from `SS.s` or `HH:MM:SS(.mmm)`."""
    from kernels.timecode import parse_hms

    try:
        return float(text)
    except ValueError:
        return parse_hms(text)


@app.command()
def edit(
    video_id: str,
    operation: Annotated[
        str,
        typer.Argument(
            help="generate, extend, bridge, retake, title, freeze, slowmo, pip, trim or crossfade."
        ),
    ],
    at: Annotated[
        str | None,
        typer.Option(
            "--at", help="The time of an insertion (seconds or HH:MM:SS; snapped to a shot boundary)."
        ),
    ] = None,
    span: Annotated[
        tuple[str, str] | None, typer.Option("--span", help="START END to replace (seconds or HH:MM:SS).")
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="Seconds of the result (snapped to the backend's frame grid)."),
    ] = None,
    prompt: Annotated[
        str, typer.Option("--prompt", help="What to show (written from the scenes around when empty).")
    ] = "",
    text: Annotated[str | None, typer.Option("--text", help="A title card's text.")] = None,
    speed: Annotated[float, typer.Option("--speed", help="slowmo: playback speed (< 1).")] = 0.5,
    overlay: Annotated[
        str | None, typer.Option("--overlay", help="pip: [VIDEO_ID@]START of the moment to inset.")
    ] = None,
    audio: Annotated[str, typer.Option("--audio", help="keep, silence or generate.")] = "keep",
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="ffmpeg (default), diffusers or http.")
    ] = "ffmpeg",
    queue: Annotated[
        bool,
        typer.Option(
            "--queue", help="Queue it as a job for the service's workers instead of rendering here."
        ),
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for the insert, timeline files and preview (default: home/edits/cli-<time>).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Render an insert or edit of a video here, and write its timeline (.otio, .edl, FCP .xml) and a
    preview. A request that cannot be honoured exits with status 2 and says why; nothing is written."""
    import time

    from pydantic import ValidationError

    from reasoning.generate import BackendError, EditRequest, RequestError, Run, prepare, run_edit

    cfg = _settings(home, database_url)
    with _errors():
        if (at is None) == (span is None):
            raise typer.BadParameter("give the anchor: --at TIME for an insertion, or --span START END")
        fields: dict[str, Any] = {
            "video_id": video_id,
            "operation": operation,
            "anchor": _time(at) if at is not None else tuple(_time(t) for t in span or ()),
            "duration": duration,
            "prompt": prompt,
            "text": text,
            "speed": speed,
            "audio": audio,
            "seed": seed,
            "backend": backend,
        }
        if overlay is not None:
            vid, _, start = overlay.rpartition("@")
            fields["overlay"] = {"video_id": vid or None, "start": _time(start)}
        try:
            request = EditRequest.model_validate(fields)
            store = _store(cfg)
            plan, engine = prepare(store, request, None, cfg.generation_options(), cfg.open_media)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            err.print(
                f"[red]error:[/red] {escape(where + ': ' if where else '')}{escape(first['msg'])}",
                highlight=False,
            )
            raise typer.Exit(2) from None
        except RequestError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
            raise typer.Exit(2) from None
        if queue:
            from service import jobs

            job = jobs.enqueue_edit(store, plan.source.library, request.model_dump(mode="json"),
                                    f"{operation} at {hms(plan.start / plan.source.fps)}")  # fmt: skip
            _print_jobs([jobs.job_json(*jobs.get_job(store, job.id))], as_json)
            return
        folder = out_dir or cfg.edits_dir / f"cli-{time.strftime('%Y%m%d-%H%M%S')}"
        for note in plan.notes:
            err.print(f"note: {escape(note)}", highlight=False)
        try:
            with stage_progress() as report:
                result = run_edit(store, plan, engine, folder, Run(lambda f: report("render", f)))
        except BackendError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
            raise typer.Exit(1) from None
    result["folder"] = str(folder.resolve())
    if as_json:
        out.print_json(json.dumps(result))
        return
    t = result["timeline"]
    out.print(
        f"{operation} at {t['insert_at_hms']} ({plan.frames} frames at {plan.fps:g} fps), timeline {hms(t['seconds'])}"
    )
    for kind, name in result["files"].items():
        out.print(f"  {kind:<8} {folder / name}", highlight=False)


@app.command()
def reindex(
    all_rows: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Forget every library's memory first: the indexes hold every row again, what it folded, "
            "skipped or evicted included (`vidmem memory regate` gates a library again).",
        ),
    ] = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Rebuild every FAISS index and lexical file from the SQL catalog."""
    with _errors():
        counts = _store(_settings(home, database_url)).reindex(forget_memory=all_rows)
        for name, n in counts.items():
            out.print(f"{name}: {n} vectors", highlight=False)
        out.print(f"rebuilt {len(counts)} index(es)")


@app.command()
def mcp(library: LibOpt = None, home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """Serve the agent tools (search, read, request inserts and edits, job status) over MCP on stdio."""
    from service.mcp import build_server

    build_server(_settings(home, database_url), library).run("stdio")


jobs_app = typer.Typer(
    no_args_is_help=True, help="The service's job queue: ingestions, regates, generations."
)
app.add_typer(jobs_app, name="jobs")


def _print_jobs(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("id", "kind", "status", "stage", "progress", "title", "error")
    for j in rows:
        table.add_row(j["id"], j["kind"], j["status"], j["stage"] or "", f"{100 * j['progress']:.0f}%",
                      escape(j["title"]), escape(j["error"] or ""))  # fmt: skip
    out.print(table)


@jobs_app.command("list")
def jobs_list(
    status: Annotated[
        str | None, typer.Option("--status", help="queued, running, done, failed or cancelled.")
    ] = None,
    library: LibOpt = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Jobs, newest first."""
    from service import jobs

    cfg = _settings(home, database_url)
    with _errors():
        store = _store(cfg)
        lib = store.find_library(library) if library else None
        if library and lib is None:
            raise CliError(f"no library named {library!r}")
        rows = [jobs.job_json(j, name) for j, name in jobs.list_jobs(store, lib.id if lib else None, status)]
    _print_jobs(rows, as_json)


@jobs_app.command("show")
def jobs_show(job_id: str, home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """One job as JSON (a generation's request and result included)."""
    from service import jobs

    with _errors():
        out.print_json(
            json.dumps(jobs.job_json(*jobs.get_job(_store(_settings(home, database_url)), job_id)))
        )


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """Cancel a queued job or a running generation."""
    from service import jobs

    with _errors():
        store = _store(_settings(home, database_url))
        jobs.cancel(store, job_id)
        _print_jobs([jobs.job_json(*jobs.get_job(store, job_id))], False)


@jobs_app.command("retry")
def jobs_retry(job_id: str, home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """Queue a failed or cancelled generation again."""
    from service import jobs

    with _errors():
        store = _store(_settings(home, database_url))
        jobs.retry(store, job_id)
        _print_jobs([jobs.job_json(*jobs.get_job(store, job_id))], False)


memory_app = typer.Typer(
    no_args_is_help=True, help="The library's memory: what it kept, what folded where, and why."
)
app.add_typer(memory_app, name="memory")


@memory_app.command("stats")
def memory_stats(
    library: LibOpt = None, as_json: JsonOpt = False, home: HomeOpt = None, database_url: DbOpt = None
) -> None:
    """Slots, retention, what the gate did with the units it saw, and the slots that stand for most."""
    from memory.bank import stats

    with _errors():
        cfg = _settings(home, database_url, library=library)
        store = _store(cfg)
        with store.session() as s:
            lib = store.library(s, cfg.library, create=False)
            got = stats(s, lib.id, cfg.memory_options())
        if as_json:
            print(json.dumps(got))
            return
        slots, rows = got["slots"], got["rows"]
        out.print(
            f"library {escape(repr(cfg.library))}: {slots['live']} live slots (budget {got['budget']}), "
            f"{slots['merged']} merged, {slots['nested']} nested, {slots['evicted']} evicted; {got['units']} units gated; "
            f"the indexes hold {rows['retained']} of {rows['gated']} unit rows ({100 * rows['retention']:.1f}%)",
            highlight=False,
        )
        table = Table("kind", "written", "folded", "skipped")
        for kind, acts in got["actions"].items():
            table.add_row(kind, str(acts["write"]), str(acts["fold"]), str(acts["skip"]))
        out.print(table)
        if got["largest"]:
            big = Table(
                "slot", "kind", "exemplar", "occurrences", "salience", title="slots standing for most"
            )
            for sl in got["largest"]:
                big.add_row(
                    str(sl["slot"]), sl["kind"], f"{sl['video_id']} {sl['timestamp']}", str(sl["occurrences"]),
                    f"{sl['salience']:.2f}",
                )  # fmt: skip
            out.print(big)


@memory_app.command("show")
def memory_show(
    video_id: Annotated[str, typer.Argument(help="Video id (see `vidmem list`).")],
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """What the memory did with each shot, window and cue of a video, and why."""
    from memory.bank import decisions_of

    with _errors():
        store = _store(_settings(home, database_url))
        with store.session() as s:
            store.get_video(s, video_id)
            rows = decisions_of(s, video_id)
        if as_json:
            print(json.dumps(rows))
            return
        table = Table("time", "kind", "decision", "why")
        for r in rows:
            slot = r["slot"]
            if r["action"] == "skip":
                why = f"salience {r['salience']:.2f} below the skip threshold"
            elif r["action"] == "fold":
                why = f"cosine {r['similarity']:.3f} with slot {slot['id']} at {slot['video_id']} {slot['timestamp']}"
            else:
                why = f"new (nearest cosine {r['similarity']:.3f}), salience {r['salience']:.2f}"
            if slot is not None and slot["state"] != "live":
                why += f"; slot {slot['id']} since {slot['state']}"
                if slot.get("into") is not None:
                    why += f" (window slot {slot['into']} holds its words)"
            table.add_row(hms(r["start"]), r["kind"], r["action"], why)
        out.print(table)


@memory_app.command("regate")
def memory_regate(library: LibOpt = None, home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """Forget the library's memory and gate its videos again with the memory settings in force."""
    from indexers.pipeline import regate

    with _errors(), stage_progress() as report:
        cfg = _settings(home, database_url, library=library)
        n = regate(_store(cfg), cfg.library, cfg.memory_options(), report)
        out.print(f"gated {n} video(s) of {cfg.library!r} again")


@app.command()
def models(home: HomeOpt = None) -> None:
    """Prepare the packaged models once (joins the split whisper base) and list where they are."""
    from memory.runtime import prepare

    with _errors():
        for name, path in prepare(_settings(home, None).cache_dir).items():
            out.print(f"{name}: {path}", highlight=False)


@app.command()
def demo(
    workdir: Annotated[Path | None, typer.Option(help="Where the sample media is made.")] = None,
    home: HomeOpt = None,
) -> None:
    """Make a real-looking sample (film + speech), ingest it, print its timeline and search it."""
    from service.demo import run_demo

    with _errors():
        cfg = _settings(home, None)
        run_demo(cfg, workdir or cfg.home / "demo", out, err)


llm_app = typer.Typer(
    no_args_is_help=True, help="LLM engines: convert packaged models, run a local vLLM server."
)
app.add_typer(llm_app, name="llm")


def _vllm_venv(cfg: Settings) -> Path:
    from service.llm_server import default_venv

    return cfg.vllm_venv or default_venv(cfg.home)


@llm_app.command("install")
def llm_install(home: HomeOpt = None) -> None:
    """Build the vLLM server's own virtual environment (~2 min, ~3.5 GB; `make vllm` does the same)."""
    from service.llm_server import LLMServerError, install_venv

    with _errors():
        try:
            python = install_venv(_vllm_venv(_settings(home, None)), quiet=False)
        except LLMServerError as e:
            raise CliError(str(e)) from None
        out.print(f"vLLM environment ready: {python}", highlight=False)


@llm_app.command("prepare")
def llm_prepare(
    names: Annotated[list[str] | None, typer.Argument(help="Packaged LLMs (default: all installed).")] = None,
    home: HomeOpt = None,
) -> None:
    """Convert packaged LLMs (GGUF) once into the model cache and print their folders."""
    from memory.runtime import ModelMissing
    from memory.runtime.llm import LLMS, prepare_llm

    with _errors():
        cache = _settings(home, None).cache_dir
        for name in names or list(LLMS):
            try:
                out.print(f"{name}: {prepare_llm(cache, name)}", highlight=False)
            except ModelMissing as e:
                if names:
                    raise CliError(str(e)) from None
                err.print(f"{name}: skipped ({escape(str(e))})", highlight=False)


@llm_app.command("serve")
def llm_serve(
    model: Annotated[
        str, typer.Option(help="Packaged LLM (smollm2, qwen0.5b, qwen1.5b) or a transformers folder.")
    ] = "qwen0.5b",
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 8000,
    tool_parser: Annotated[
        str | None,
        typer.Option(help="vLLM --tool-call-parser (default: the packaged model's, hermes for Qwen)."),
    ] = None,
    max_model_len: Annotated[int, typer.Option(help="Tokens of prompt plus reply per request.")] = 2048,
    log: Annotated[Path | None, typer.Option(help="Server log file (default: a temporary file).")] = None,
    home: HomeOpt = None,
) -> None:
    """Start a local vLLM server (CPU build) for a packaged model and supervise it until Ctrl-C."""
    import signal

    from memory.runtime import ModelMissing
    from service.llm_server import LLMServerError, require_venv, server_for

    with _errors():
        cfg = _settings(home, None)
        try:
            server = server_for(
                model,
                cfg.cache_dir,
                port=port,
                venv=_vllm_venv(cfg),
                tool_parser=tool_parser,
                max_model_len=max_model_len,
                log_path=log,
            )
            require_venv(server.venv)
            err.print(f"starting vLLM for {server.model_dir} (40-65 s on 2 cores) ...", highlight=False)
            server.start()
        except (LLMServerError, ModelMissing) as e:
            raise CliError(str(e)) from None
        signal.signal(signal.SIGTERM, lambda *_: server.stop())
        out.print(f"serving {server.served_name} at {server.url} (log {server.log_path})", highlight=False)
        out.print(f"export VIDMEM_LLM_URL={server.url}", highlight=False)
        out.print(f"export VIDMEM_LLM_MODEL={server.served_name}", highlight=False)
        try:
            code = server.wait()
        finally:
            server.stop()
        if code not in (0, -signal.SIGTERM):
            raise CliError(f"vLLM exited with status {code}; its log: {server.log_path}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (env VIDMEM_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env VIDMEM_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Ingestion worker processes (env VIDMEM_WORKERS).")
    ] = None,
    media_root: Annotated[
        list[Path] | None,
        typer.Option("--media-root", help="A folder the API may ingest from by path (repeatable)."),
    ] = None,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Run the HTTP service: the REST API under /v1 (OpenAPI at /docs) and the editor's page at /."""
    import uvicorn

    from service.app import create_app

    with _errors():
        cfg = _settings(
            home,
            database_url,
            host=host,
            port=port,
            workers=workers,
            media_roots=[p.resolve() for p in media_root] if media_root else None,
        )
        application = create_app(cfg)
        err.print(
            f"vidmem serving {cfg.home} at http://{cfg.host}:{cfg.port}/ (API docs /docs)", highlight=False
        )
    uvicorn.run(application, host=cfg.host, port=cfg.port, log_level="info", access_log=False)


keys_app = typer.Typer(no_args_is_help=True, help="API keys of the service (shown once when made).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="What the key is for (shown in listings).")],
    library: Annotated[
        str | None, typer.Option("--library", "-l", help="The one library it may use; none: admin.")
    ] = None,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            help="With --library: `read` (search, ask, watch; the default) or `write` (also upload, delete).",
        ),
    ] = None,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Make an API key and print it (only now: the catalog keeps its hash)."""
    from service.auth import create_key

    with _errors():
        if role is not None and library is None:
            raise CliError("--role goes with --library: an admin key may do everything")
        store = _store(_settings(home, database_url))
        print(create_key(store, name, library, role=role))


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False, home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """The keys (their first characters, never the secret)."""
    from service.auth import list_keys

    with _errors():
        rows = list_keys(_store(_settings(home, database_url)))
        if as_json:
            print(json.dumps(rows))
            return
        table = Table("id", "name", "prefix", "library", "role", "revoked", "created")
        for r in rows:
            table.add_row(
                str(r["id"]), str(r["name"]), f"{r['prefix']}…", str(r["library"] or "(admin)"),
                str(r["role"]), "yes" if r["revoked"] else "", str(r["created_at"])[:19],
            )  # fmt: skip
        out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: int, home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """Revoke a key by its id (`vidmem keys list`)."""
    from service.auth import revoke_key

    with _errors():
        revoke_key(_store(_settings(home, database_url)), key_id)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume")
        sys.exit(130)
