"""A killed ingestion resumes at its first unfinished stage and ends with exactly the rows an
uninterrupted ingestion writes.

The scenario (run once for the module): a 60 s narrated clip is ingested with the `base` speech
model in one home without interruption (the reference), and in another home by a process that is
SIGKILLed once `shots` is checkpointed (so it dies transcribing), then by a second process that is
SIGKILLed once `transcript` is checkpointed (so it dies embedding), then by a third that finishes.
Real SQLite, FAISS, decoders and models; the state is read straight from the SQLite file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from memory import STAGES
from tests.helpers import PHRASES, STARTS, stages_done
from tests.media import NarratedClip, make_narrated_clip

VIDMEM = Path(sys.executable).parent / "vidmem"


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDMEM_")}
    env["VIDMEM_HOME"] = str(home)
    return env


def start(home: Path, clip: Path, log: Path) -> subprocess.Popen[bytes]:
    """`vidmem ingest` in its own process group (so its ffmpeg child dies with it)."""
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [str(VIDMEM), "ingest", str(clip), "--asr-model", "base"],
            env=_env(home),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def kill_once(
    proc: subprocess.Popen[bytes], db: Path, log: Path, done: str, timeout: float = 400
) -> list[str]:
    """Poll the catalog until `done` is checkpointed but `embeddings` is not, then SIGKILL."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"ingestion ended (exit {proc.returncode}) before it could be killed after "
                f"{done!r}:\n{log.read_text(errors='replace')}"
            )
        stages = stages_done(db)
        if stages is not None and done in stages and "embeddings" not in stages:
            kill(proc)
            return stages
        time.sleep(0.05)
    kill(proc)
    pytest.fail(f"{done!r} was not checkpointed within {timeout}s")


def state(home: Path) -> dict[str, Any]:
    """Everything the ingestion wrote, read from the SQLite file and the vectors folder."""
    import faiss

    con = sqlite3.connect(home / "vidmem.db")
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        videos = q("SELECT id, status, kind, duration FROM videos")
        jobs = q("SELECT status, stage, stages_done FROM ingest_jobs")
        root = q("SELECT start, \"end\" FROM segments WHERE level = 'video'")
        shots = q("SELECT start, \"end\" FROM segments WHERE level = 'shot' ORDER BY ordinal")
        cues = q('SELECT start, "end", text FROM transcript_cues ORDER BY start')
        emb = q("SELECT kind, COUNT(*) FROM embeddings GROUP BY kind ORDER BY kind")
        n_emb = q("SELECT COUNT(*) FROM embeddings")[0][0]
        n_text = q("SELECT COUNT(*) FROM embeddings WHERE modality = 'text'")[0][0]
        n_visual = q("SELECT COUNT(*) FROM embeddings WHERE modality = 'visual'")[0][0]
        spaces = q("SELECT COUNT(DISTINCT space) FROM embeddings")[0][0]
    finally:
        con.close()
    indexes = sorted((home / "vectors").glob("*.faiss")) if (home / "vectors").is_dir() else []
    return {
        "videos": videos,
        "jobs": [(s, st, json.loads(d)) for s, st, d in jobs],
        "root": root,
        "shots": shots,
        "cues": cues,
        "embeddings_by_kind": emb,
        "embeddings": n_emb,
        "text_embeddings": n_text,
        "visual_embeddings": n_visual,
        "spaces": spaces,
        "faiss": {p.name: faiss.read_index(str(p)).ntotal for p in indexes},
    }


def flat(pairs: Any) -> list[float]:
    return [x for pair in pairs for x in pair]


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower().replace("-", "")))


# --------------------------------------------------------------------------------------------------
# the scenario
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> NarratedClip:
    return make_narrated_clip(
        tmp_path_factory.mktemp("resume_media"),
        phrases=PHRASES,
        starts=STARTS,
        total_seconds=60.0,
        name="sixty.mp4",
    )


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path, clip: NarratedClip
) -> dict[str, Any]:
    from memory.runtime.whisper import whisper_path

    whisper_path("base", model_cache)  # join the split model once, before two processes want it
    root = tmp_path_factory.mktemp("resume")
    homes = {}
    for name in ("killed", "reference"):
        homes[name] = root / name
        homes[name].mkdir()
        (homes[name] / "models").symlink_to(model_cache, target_is_directory=True)
    db = homes["killed"] / "vidmem.db"
    out: dict[str, Any] = {"homes": homes}

    reference = start(homes["reference"], clip.path, root / "reference.log")  # runs alongside
    try:
        first = start(homes["killed"], clip.path, root / "first.log")
        out["stages_at_first_kill"] = kill_once(first, db, root / "first.log", "shots")
        out["after_first_kill"] = state(homes["killed"])

        second = start(homes["killed"], clip.path, root / "second.log")
        out["stages_at_second_kill"] = kill_once(second, db, root / "second.log", "transcript")
        out["after_second_kill"] = state(homes["killed"])

        third = subprocess.run(
            [str(VIDMEM), "ingest", str(clip.path), "--asr-model", "base"],
            env=_env(homes["killed"]),
            capture_output=True,
            text=True,
            timeout=600,
        )
        out["third"] = third
        out["resumed"] = state(homes["killed"])
    finally:
        if reference.poll() is None:
            reference.wait(timeout=600)
    out["reference_log"] = (root / "reference.log").read_text(errors="replace")
    assert reference.returncode == 0, out["reference_log"]
    out["reference"] = state(homes["reference"])
    return out


# --------------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------------


def test_kill_while_transcribing_leaves_whole_stages(scenario: dict[str, Any], clip: NarratedClip) -> None:
    s = scenario["after_first_kill"]
    stages = s["jobs"][0][2]
    # shots and transcript run side by side: either may have been checkpointed first
    assert "shots" in stages and "embeddings" not in stages, stages
    assert len(s["videos"]) == 1 and s["videos"][0][1] == "ingesting", s["videos"]
    assert len(s["jobs"]) == 1 and s["jobs"][0][0] == "running", s["jobs"]
    # shots: checkpointed, so all there
    assert len(s["shots"]) == len(clip.cut_times) + 1 and len(s["root"]) == 1, s["shots"]
    # transcript: all cues with its checkpoint, or none without it
    if "transcript" in stages:
        assert len(s["cues"]) >= len(PHRASES), s["cues"]
    else:
        assert s["cues"] == [], s["cues"]
    assert s["text_embeddings"] == 0 and s["faiss"] == {}, s
    # the vision stage's visual vectors are in SQL exactly when it is checkpointed (FAISS comes later)
    assert (s["visual_embeddings"] > 0) == ("vision" in stages), (stages, s["visual_embeddings"])


def test_kill_while_embedding_leaves_whole_stages(scenario: dict[str, Any], clip: NarratedClip) -> None:
    s = scenario["after_second_kill"]
    stages = s["jobs"][0][2]
    assert {"shots", "transcript"} <= set(stages) and "embeddings" not in stages, stages
    assert len(s["videos"]) == 1 and s["videos"][0][1] == "ingesting", s["videos"]
    assert len(s["jobs"]) == 1, s["jobs"]
    assert len(s["shots"]) == len(clip.cut_times) + 1 and len(s["root"]) == 1
    assert len(s["cues"]) >= len(PHRASES), s["cues"]  # the whole transcript, checkpointed with its rows
    assert s["text_embeddings"] == 0 and s["faiss"] == {}, s
    # the vision stage's visual vectors are in SQL exactly when it is checkpointed (FAISS comes later)
    assert (s["visual_embeddings"] > 0) == ("vision" in stages), (stages, s["visual_embeddings"])
    # the second run resumed: it did not redo (and so did not duplicate) the shots
    assert s["shots"] == scenario["after_first_kill"]["shots"]


def test_resumed_run_reports_resumed_and_finishes(scenario: dict[str, Any]) -> None:
    third = scenario["third"]
    assert third.returncode == 0, third.stdout + third.stderr
    assert "Traceback" not in third.stdout + third.stderr
    video_id = scenario["after_first_kill"]["videos"][0][0]
    assert "resumed" in third.stdout and video_id in third.stdout, third.stdout
    s = scenario["resumed"]
    assert [v[:3] for v in s["videos"]] == [(video_id, "ready", "video")]
    assert s["jobs"] == [("done", None, list(STAGES))]


def test_resumed_rows_equal_an_uninterrupted_ingestion(scenario: dict[str, Any], clip: NarratedClip) -> None:
    got, ref = scenario["resumed"], scenario["reference"]
    assert ref["jobs"] == [("done", None, list(STAGES))]
    assert len(got["shots"]) == len(ref["shots"]) == len(clip.cut_times) + 1
    assert flat(got["shots"]) == pytest.approx(flat(ref["shots"]), abs=1e-9)
    assert got["root"] == ref["root"]
    assert [c[2] for c in got["cues"]] == [c[2] for c in ref["cues"]]
    assert flat(c[:2] for c in got["cues"]) == pytest.approx(flat(c[:2] for c in ref["cues"]), abs=1e-6)
    assert got["embeddings"] == ref["embeddings"] > 0
    assert got["embeddings_by_kind"] == ref["embeddings_by_kind"]
    assert got["videos"][0][3] == pytest.approx(ref["videos"][0][3])
    # and what was heard is the narration, each phrase near its time
    for text, t0 in zip(PHRASES, STARTS, strict=True):
        near = set().union(*(words(c[2]) for c in got["cues"] if abs(c[0] - t0) <= 1.0))
        assert near & {w for w in words(text) if len(w) >= 5}, (text, got["cues"])


def test_faiss_holds_exactly_the_sql_vectors(scenario: dict[str, Any]) -> None:
    for name in ("resumed", "reference"):
        s = scenario[name]
        assert len(s["faiss"]) == s["spaces"] == 2, (name, s["faiss"])  # text and visual
        assert sum(s["faiss"].values()) == s["embeddings"], (name, s["faiss"], s["embeddings"])
