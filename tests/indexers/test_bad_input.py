"""Bad input on the command line: every file that cannot be ingested gives exit status 1, exactly one
`error:` line on stderr, no traceback, and leaves the library exactly as it was (row counts of every
table and the bytes of every file under VIDMEM_HOME/vectors). Valid media with hostile file names
is ingested like any other. Real SQLite, real decoders, real models; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import shared
from tests.media import CutClip, NarratedClip, truncate_copy, write_srt

VIDMEM = Path(sys.executable).parent / "vidmem"


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def cli(home: Path, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDMEM_")}
    env["VIDMEM_HOME"] = str(home)
    return subprocess.run(
        [str(VIDMEM), *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


Snapshot = tuple[dict[str, int], dict[str, bytes]]


def snapshot(home: Path) -> Snapshot:
    """Row count of every table in the catalog, and every file (with its bytes) under vectors/."""
    con = sqlite3.connect(home / "vidmem.db")
    try:
        tables = [
            r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        counts = {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()
    folder = home / "vectors"
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return counts, files


def remux(src: Path, dst: Path, tag: str) -> Path:
    """A stream copy of `src` with a different metadata tag: the same pictures, different bytes."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-nostdin",
            "-y",
            "-i",
            str(src),
            "-c",
            "copy",
            "-metadata",
            f"comment={tag}",
            "-f",
            "mp4",
            str(dst),
        ],
        check=True,
        capture_output=True,
    )
    return dst


# --------------------------------------------------------------------------------------------------
# the library every test starts from: one good video with shots, transcript and vectors
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, narrated_clip: NarratedClip) -> Path:
    home = tmp_path_factory.mktemp("bad_input") / "home"
    srt = write_srt(tmp_path_factory.mktemp("good") / "good.srt", narrated_clip.cues)
    ok(cli(home, "ingest", narrated_clip.path, "--subtitles", srt))
    counts, files = snapshot(home)
    assert counts["videos"] == 1 and counts["segments"] > 1 and counts["transcript_cues"] == 3
    assert counts["embeddings"] > 0 and any(name.endswith(".faiss") for name in files), (counts, list(files))
    return home


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inputs")


# --------------------------------------------------------------------------------------------------
# bad inputs: each run once, its outcome checked by the tests below
# --------------------------------------------------------------------------------------------------


def _text_as_mp4(d: Path, clip: CutClip) -> list[str | Path]:
    p = d / "x.mp4"
    p.write_text("this is a plain text file, not a video\n" * 20)
    return [p]


def _empty_srt(d: Path, clip: CutClip) -> list[str | Path]:
    p = d / "empty.srt"
    p.write_bytes(b"")
    return [p]


def _garbage_srt(d: Path, clip: CutClip) -> list[str | Path]:
    p = d / "garbage.srt"
    p.write_bytes(b"1\nnot a timing line\nhello\n\n\x00\xff\xfe garbage --> \n\x89PNG\r\n" + os.urandom(512))
    return [p]


def _bad_timing_srt(d: Path, clip: CutClip) -> list[str | Path]:
    p = d / "bad timing.srt"
    p.write_text("1\n00:00:01,000 --> 00:xx:02,000\nhello there\n")
    return [p]


def _directory(d: Path, clip: CutClip) -> list[str | Path]:
    p = d / "a folder.mp4"
    p.mkdir()
    return [p]


def _missing(d: Path, clip: CutClip) -> list[str | Path]:
    return [d / "no such video.mp4"]


def _missing_with_markup_chars(d: Path, clip: CutClip) -> list[str | Path]:
    # brackets are console markup for rich; the path must still be reported as an error line
    return [d / "missing[/]clip.mp4"]


def _truncated_half(d: Path, clip: CutClip) -> list[str | Path]:
    return [truncate_copy(clip.path, d / "truncated half.mp4", 0.5)]


def _truncated_head(d: Path, clip: CutClip) -> list[str | Path]:
    return [truncate_copy(clip.path, d / "truncated head.mp4", 0.05)]


def _damaged(d: Path, clip: CutClip) -> list[str | Path]:
    return [shared("megamind_damaged.avi")]


def _damaged_into_new_library(d: Path, clip: CutClip) -> list[str | Path]:
    return [shared("megamind_damaged.avi"), "--library", "brand-new"]


BAD: dict[str, Callable[[Path, CutClip], list[str | Path]]] = {
    "damaged-avi": _damaged,
    "damaged-avi-new-library": _damaged_into_new_library,
    "truncated-mp4-half": _truncated_half,
    "truncated-mp4-head": _truncated_head,
    "text-named-mp4": _text_as_mp4,
    "missing-path": _missing,
    "missing-path-with-brackets": _missing_with_markup_chars,
    "empty-srt": _empty_srt,
    "garbage-srt": _garbage_srt,
    "srt-with-bad-timing": _bad_timing_srt,
    "directory": _directory,
}


@pytest.fixture(scope="module", params=list(BAD))
def bad(request: pytest.FixtureRequest, home: Path, workdir: Path, cut_clip: CutClip) -> dict[str, Any]:
    """Ingest one bad input; record the process and the library before and after."""
    d = workdir / request.param
    d.mkdir()
    args = BAD[request.param](d, cut_clip)
    before = snapshot(home)
    proc = cli(home, "ingest", *args)
    return {
        "name": request.param,
        "path": Path(args[0]),
        "proc": proc,
        "before": before,
        "after": snapshot(home),
    }


def test_bad_input_fails_with_one_error_line(bad: dict[str, Any]) -> None:
    proc = bad["proc"]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:"), proc.stderr
    assert "ingested" not in proc.stdout, proc.stdout


def test_bad_input_leaves_the_library_exactly_as_it_was(bad: dict[str, Any]) -> None:
    (counts_before, files_before), (counts_after, files_after) = bad["before"], bad["after"]
    assert counts_after == counts_before
    assert sorted(files_after) == sorted(files_before)
    assert files_after == files_before


def test_bad_input_error_names_the_file(bad: dict[str, Any]) -> None:
    """With several paths on one command line, an error that does not name its file is no help."""
    assert bad["path"].name in bad["proc"].stderr, bad["proc"].stderr


# --------------------------------------------------------------------------------------------------
# several paths, one of them bad
# --------------------------------------------------------------------------------------------------


def test_several_paths_one_bad_the_good_ones_land(home: Path, workdir: Path, cut_clip: CutClip) -> None:
    d = workdir / "several"
    good1 = remux(cut_clip.path, d / "good one.mp4", "one")
    good2 = remux(cut_clip.path, d / "good two.mp4", "two")
    bad = d / "bad.mp4"
    bad.write_text("not a video")
    counts_before, _ = snapshot(home)

    proc = cli(home, "ingest", good1, bad, good2, "--json")
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.mp4" in lines[0], proc.stderr
    landed = json.loads(proc.stdout)
    assert len(landed) == 2 and len({x["video_id"] for x in landed}) == 2, landed

    listed = {v["title"]: v for v in json.loads(ok(cli(home, "list", "--json")).stdout)}
    assert {"good one.mp4", "good two.mp4"} <= set(listed)
    assert "bad.mp4" not in listed
    assert {listed["good one.mp4"]["id"], listed["good two.mp4"]["id"]} == {x["video_id"] for x in landed}
    assert all(listed[t]["status"] == "ready" for t in ("good one.mp4", "good two.mp4"))
    counts_after, _ = snapshot(home)
    assert counts_after["videos"] == counts_before["videos"] + 2
    added = 0
    for item in landed:  # the root, its chapters, scenes and shots: nothing else, nothing from bad.mp4
        shown = json.loads(ok(cli(home, "show", item["video_id"], "--json")).stdout)
        assert len(shown["shots"]) == len(cut_clip.cut_frames) + 1
        added += 1 + len(shown["chapters"]) + len(shown["scenes"]) + len(shown["shots"])
    assert counts_after["segments"] == counts_before["segments"] + added


# --------------------------------------------------------------------------------------------------
# valid media with hostile names
# --------------------------------------------------------------------------------------------------

HOSTILE = {
    "leading-dash": "-rf.mp4",
    "spaces": "my  holiday  clip .mp4",
    "quotes-and-shell": 'it\'s "quoted" `tick` $HOME; rm x & echo.mp4',
    "unicode": "ünïcødé 日本語 🎬 clip.mp4",
    "markup-brackets": "[bold]not bold[red].mp4",
}


@pytest.mark.parametrize("key", list(HOSTILE))
def test_hostile_file_name_is_ingested(home: Path, workdir: Path, cut_clip: CutClip, key: str) -> None:
    name = HOSTILE[key]
    d = workdir / f"hostile-{key}"
    media = remux(cut_clip.path, d / name, key)
    proc = cli(home, "ingest", "--", name, cwd=d)  # relative, after `--`, as a shell user types it
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("ingested "), proc.stdout
    video_id = proc.stdout.split()[1]

    shown = json.loads(ok(cli(home, "show", video_id, "--json")).stdout)
    assert shown["video"]["title"] == name
    assert shown["video"]["uri"] == str(media.resolve())
    assert len(shown["shots"]) == len(cut_clip.cut_frames) + 1
    for cut, shot in zip(cut_clip.cut_times, shown["shots"][1:], strict=True):
        assert abs(shot["start"] - cut) <= 1.0 / cut_clip.fps + 1e-6
    # the report names the file as it is (whitespace aside: the console wraps long lines)
    assert " ".join(name.split()) in " ".join(proc.stdout.split()), proc.stdout
