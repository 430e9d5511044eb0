"""Ingestion on a real Ray cluster started on this machine as separate processes: `ray start --head`
(no CPUs: it only schedules) and two worker nodes joining it (`ray start --address`, one CPU each).
The catalog is the PostgreSQL with pgvector (the vectors in it too). A worker node is SIGKILLed (its
raylet and the worker running the task) while it ingests; Ray runs the task again on the other node,
which resumes the video from its checkpoint. The result must be exactly the rows a single-machine
ingestion of the same files writes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import ray
from sqlalchemy import func, select

from indexers import ingest
from indexers.captions import CaptionOptions
from indexers.decode import probe
from indexers.distributed import RemoteWindows, SpeechChunks, Where, ingest_on_ray
from indexers.pipeline import IngestOptions
from indexers.source import StorageOptions, media_source
from indexers.transcript import TranscribeOptions
from indexers.visual import LookOptions
from memory import STAGES, EmbeddingRow, IngestJob, ScreenText, Segment, Store, Tag, TranscriptCue, Video
from tests.conftest import shared
from tests.helpers import cli, free_port
from tests.media import make_narrated_clip
from tests.remote import S3Server

RAY = Path(sys.executable).parent / "ray"


@pytest.fixture
def cluster() -> Iterator[str]:
    temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")  # short: Unix socket paths are limited
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--disable-usage-stats"]
    try:
        subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                        f"--temp-dir={temp}", *common], check=True, capture_output=True, env=env, timeout=120)  # fmt: skip
        for _ in range(2):
            subprocess.run([str(RAY), "start", f"--address={address}", "--num-cpus=1", *common],
                           check=True, capture_output=True, env=env, timeout=120)  # fmt: skip
        yield address
    finally:
        ray.shutdown()  # a driver still connected when its cluster stops is ended by Ray, test run and all
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _rows(store: Store) -> dict[str, dict[str, int]]:
    """Per video (by file name): how many rows of each kind it owns, and its finished stages."""
    out: dict[str, dict[str, int]] = {}
    with store.session() as s:
        for video in s.scalars(select(Video)):
            vid = video.id
            count = {
                "segments": s.scalar(select(func.count()).select_from(Segment).where(Segment.video_id == vid)),
                "cues": s.scalar(select(func.count()).select_from(TranscriptCue).where(TranscriptCue.video_id == vid)),
                "embeddings": s.scalar(select(func.count()).select_from(EmbeddingRow).where(EmbeddingRow.video_id == vid)),
                "jobs": s.scalar(select(func.count()).select_from(IngestJob).where(IngestJob.video_id == vid)),
            }  # fmt: skip
            assert video.title not in out, f"{video.title} was ingested twice"
            out[video.title] = {k: int(v or 0) for k, v in count.items()} | {
                "ready": int(video.status == "ready")
            }
    return out


def _running_task(spare: str | None, task: str = "_ingest_task") -> tuple[int, int] | None:
    """(worker pid, its raylet's pid) of a worker running `task` now, on a node other than the one
    whose raylet socket is `spare` (the driver's: on one machine the driver attaches to one of the
    nodes' raylets, and losing it would be losing the driver, not a worker node)."""
    for p in psutil.process_iter(["cmdline"]):
        if " ".join(p.info["cmdline"] or []).startswith(f"ray::{task}"):
            raylet = psutil.Process(p.ppid())
            socket = next(
                (a.split("=", 1)[1] for a in raylet.cmdline() if a.startswith("--raylet_socket_name=")), None
            )
            if socket != spare:
                return p.pid, raylet.pid
    return None


class _Ingesting:
    """`ingest_on_ray` run in a thread (what it returns, or raises, lands in `results`), and the
    driver's connection it made: `running(task)` waits for a worker node to run `task`."""

    def __init__(self, cluster: str, where: Where, paths: list[Path], options: IngestOptions,
                 seconds: float, **kwargs: Any) -> None:  # fmt: skip
        self.results: list[Any] = []
        self.deadline = time.monotonic() + seconds
        self.runner = threading.Thread(target=self._run, args=(cluster, where, paths, options), kwargs=kwargs)
        self.runner.start()
        while not ray.is_initialized():
            self._alive("no connection to the cluster")
            time.sleep(0.1)
        self.spare = ray._private.worker.global_worker.node.raylet_socket_name

    def _run(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.results.extend(ingest_on_ray(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 (the assertion on `results` shows it)
            self.results.append(e)

    def _alive(self, what: str) -> None:
        assert time.monotonic() < self.deadline and self.runner.is_alive(), f"{what}: {self.results}"

    def running(self, task: str = "_ingest_task") -> tuple[int, int]:
        while (found := _running_task(self.spare, task)) is None:
            self._alive(f"no {task} ran on a worker node")
            time.sleep(0.2)
        return found

    def finish(self, timeout: float) -> list[Any]:
        self.runner.join(timeout=timeout)
        assert not self.runner.is_alive(), f"the cluster did not finish in {timeout:.0f} s"
        return self.results


def test_a_lost_node_is_retried_elsewhere_with_exactly_the_rows_of_one_machine(
    cluster: str, pgvector_url: str, tmp_path: Path, model_cache: Path
) -> None:
    media = tmp_path / "media"
    clips = [
        make_narrated_clip(media, phrases=("the purple giraffe eats bright oranges",), starts=(2.0,),
                           total_seconds=14.0, name="one.mp4").path,
        make_narrated_clip(media, phrases=("seven silver submarines dive at midnight",), starts=(3.0,),
                           total_seconds=14.0, name="two.mp4").path,
    ]  # fmt: skip
    options = IngestOptions(library="ray", captions=CaptionOptions(llm=None), look=None)

    alone = Store(tmp_path / "alone")  # one machine, SQLite: what the cluster must equal
    for clip in clips:
        ingest(alone, clip, options, cache_dir=model_cache)
    expected = _rows(alone)
    alone.close()

    where = Where(str(tmp_path / "node-home"), pgvector_url, "postgres", str(model_cache))
    run = _Ingesting(cluster, where, clips, options, 300)
    task = run.running()  # a worker node holds a task: then it writes rows
    store = Store(tmp_path / "driver", pgvector_url, index="postgres")

    def checkpointed() -> bool:
        with store.session() as s:
            return any("shots" in (j.stages_done or []) for j in s.scalars(select(IngestJob)))

    while not checkpointed():
        assert time.monotonic() < run.deadline, "no stage was checkpointed"
        time.sleep(0.2)
    worker, raylet = _running_task(run.spare) or task
    os.kill(raylet, signal.SIGKILL)  # the node is lost: its raylet and the worker on it
    os.kill(worker, signal.SIGKILL)
    results = run.finish(600)
    assert len(results) == len(clips) and all(not isinstance(r, Exception) for r in results), results
    assert _rows(store) == expected
    with store.session() as s:
        assert [list(j.stages_done) for j in s.scalars(select(IngestJob))] == [list(STAGES)] * len(clips)

    # the command line does the same on the cluster that is left; a SQLite catalog is refused
    third = make_narrated_clip(media, phrases=("the copper kettle whistles at dawn",), starts=(1.0,),
                               total_seconds=8.0, name="three.mp4").path  # fmt: skip
    home = tmp_path / "cli-home"
    home.mkdir()
    (home / "models").symlink_to(model_cache)
    env = {"VIDMEM_DATABASE_URL": pgvector_url, "VIDMEM_INDEX_BACKEND": "postgres", "VIDMEM_VISION": "false",
           "VIDMEM_LLM": "none"}  # fmt: skip
    got = json.loads(
        cli(home, "ingest", third, "--library", "ray", "--ray", cluster, "--json", env=env).stdout
    )
    assert got["library"] == "ray" and got["video_id"] in {v.id for v in store.videos("ray")}
    refused = cli(tmp_path / "lite", "ingest", third, "--ray", cluster, ok=False)
    assert refused.returncode == 1 and "PostgreSQL" in refused.stderr
    store.close()


def test_urls_go_to_the_cluster_one_task_each_with_the_rows_of_one_machine(
    s3: S3Server, cluster: str, pgvector_url: str, tmp_path: Path, model_cache: Path
) -> None:
    media = tmp_path / "media"
    clips = [
        make_narrated_clip(media, phrases=("the purple giraffe eats bright oranges",), starts=(2.0,),
                           total_seconds=8.0, name="one.mp4").path,
        make_narrated_clip(media, phrases=("seven silver submarines dive at midnight",), starts=(2.0,),
                           total_seconds=8.0, name="two.mp4").path,
    ]  # fmt: skip
    urls = [s3.put("media", f"ray/{clip.name}", clip) for clip in clips]
    options = IngestOptions(library="ray", captions=CaptionOptions(llm=None), look=None,
                            storage=StorageOptions(s3_endpoint_url=s3.endpoint))  # fmt: skip

    alone = Store(tmp_path / "alone")
    for clip in clips:
        ingest(alone, clip, options, cache_dir=model_cache)
    expected = _rows(alone)
    alone.close()

    where = Where(str(tmp_path / "node-home"), pgvector_url, "postgres", str(model_cache))
    got = ingest_on_ray(cluster, where, [*urls, "s3://media/ray/missing.mp4"], options)
    assert [getattr(r, "identity", None) for r in got[:2]] == ["s3-etag", "s3-etag"], got
    assert isinstance(got[2], Exception) and "no such object" in str(got[2])
    store = Store(tmp_path / "driver", pgvector_url, index="postgres")
    try:
        assert _rows(store) == expected
        with store.session() as s:
            assert sorted(s.scalars(select(Video.uri))) == urls
    finally:
        store.close()


class _Killed(BaseException):
    """Stops an ingestion as a kill does: not an Exception, so nothing it wrote is cleaned up."""


def _killed_once_shots_are_stored(store: Store, path: Path, options: IngestOptions, cache: Path) -> None:
    """Ingest `path` and stop as a killed process would once its shots are stored and its vision is
    not (speech is heard first, and the visual pass runs in this process: `workers=False`)."""

    def report(stage: str, fraction: float) -> None:
        if stage == "vision":
            with store.session() as s:
                if "shots" in s.scalars(select(IngestJob.stages_done)).one():
                    raise _Killed

    with pytest.raises(_Killed):
        ingest(store, path, dataclasses.replace(options, workers=False), cache_dir=cache, progress=report)
    with store.session() as s:
        assert set(s.scalars(select(IngestJob.stages_done)).one()) == {"shots", "transcript"}
        assert s.scalar(select(func.count()).select_from(Tag)) == 0


@pytest.mark.parametrize("split", ["windows", "known shots"])
def test_a_long_videos_visual_pass_is_split_and_a_lost_task_is_run_again(
    split: str, cluster: str, pgvector_url: str, tmp_path: Path, model_cache: Path
) -> None:
    """The Big Buck Bunny trailer (55 s) with 10 s windows. `windows` (what a fresh ingestion
    does): a task per window decodes it from 20 s before, finds the shots that begin in it and looks
    inside them; the owner joins them. `known shots` (what an ingestion resumed after its shots were
    stored does): a task per window seeks to it and looks inside the stored shots that begin there.
    A node is lost while it runs such a task; the job completes, and the shots and vision rows are
    exactly those of the same ingestion on a single machine (fresh: one pass that looks as it goes;
    resumed: one pass over the stored shots)."""
    trailer = shared("bbb_trailer.mp4")
    options = IngestOptions(library="ray", captions=CaptionOptions(llm=None), look=LookOptions(workers=1))
    assert RemoteWindows(10.0).wanted(probe(media_source(trailer)).duration)
    task = "_window_task" if split == "windows" else "look_window"

    alone = Store(tmp_path / "alone")  # one machine, SQLite: what the cluster must equal
    if split == "known shots":
        _killed_once_shots_are_stored(alone, trailer, options, model_cache)
    ingest(alone, trailer, options, cache_dir=model_cache)
    expected = _vision(alone)
    alone.close()
    assert len(expected["shots"]) >= 10 and expected["texts"] and expected["tags"]

    where = Where(str(tmp_path / "node-home"), pgvector_url, "postgres", str(model_cache))
    store = Store(tmp_path / "driver", pgvector_url, index="postgres")
    if split == "known shots":
        _killed_once_shots_are_stored(store, trailer, options, model_cache)
    run = _Ingesting(cluster, where, [trailer], options, 600, window=10.0)
    worker, raylet = run.running(task)
    os.kill(raylet, signal.SIGKILL)  # the node is lost while it decodes a window or looks inside one
    os.kill(worker, signal.SIGKILL)
    results = run.finish(900)
    assert len(results) == 1 and not isinstance(results[0], Exception), results
    assert results[0].resumed == (split == "known shots")

    try:
        got = _vision(store)
        vectors, want = got.pop("vectors"), expected.pop("vectors")
        assert got == expected
        assert vectors.shape == want.shape and np.allclose(vectors, want, atol=1e-5)
        with store.session() as s:
            assert s.scalars(select(Video.status)).one() == "ready"
            assert list(s.scalars(select(IngestJob.stages_done)).one()) == list(STAGES)
    finally:
        store.close()


def _vision(store: Store) -> dict[str, Any]:
    """The one video's shots and what its vision stage wrote about them: on-screen text, tags, and
    the visual vectors (in shot order)."""
    with store.session() as s:
        shots = s.scalars(select(Segment).where(Segment.level == "shot").order_by(Segment.start)).all()
        ordinal = {g.id: i for i, g in enumerate(shots)}
        texts = sorted((ordinal[t.segment_id], t.text, t.start, t.end) for t in s.scalars(select(ScreenText)))
        tags = sorted(
            (ordinal[t.segment_id], t.kind, t.name, round(t.score, 5))
            for t in s.scalars(select(Tag))
            if t.segment_id in ordinal
        )
        rows = s.scalars(select(EmbeddingRow).where(EmbeddingRow.modality == "visual")).all()
        rows = sorted(rows, key=lambda r: (ordinal.get(r.segment_id or -1, -1), r.id))
        return {
            "shots": [(g.start, g.end) for g in shots],
            "texts": texts,
            "tags": tags,
            "visual": [
                (ordinal.get(r.segment_id or -1, -1), r.kind, r.start, r.end, r.retained) for r in rows
            ],
            "vectors": np.stack([np.frombuffer(r.vector, np.float32) for r in rows]),
        }


def test_a_long_recordings_speech_is_heard_per_chunk_elsewhere_with_the_cues_of_one_machine(
    cluster: str, pgvector_url: str, tmp_path: Path, model_cache: Path
) -> None:
    """A 40 s narrated clip with 10 s chunks and windows: the owner hears the first chunk with speech
    (the language), the later chunks are heard by tasks of their own; the cues are exactly those of
    a transcription on one machine."""
    phrases = (
        "the purple giraffe eats bright oranges",
        "seven silver submarines dive at midnight",
        "the copper kettle whistles at dawn",
        "a violet lantern floats over the harbour",
    )
    clip = make_narrated_clip(tmp_path / "media", phrases=phrases, starts=(1.0, 11.0, 21.5, 31.0),
                              total_seconds=40.0, name="long talk.mp4").path  # fmt: skip
    options = IngestOptions(library="ray", captions=CaptionOptions(llm=None), look=None,
                            transcribe=TranscribeOptions(chunk=10.0))  # fmt: skip
    assert SpeechChunks(10.0).wanted(40.0)

    alone = Store(tmp_path / "alone")
    ingest(alone, clip, options, cache_dir=model_cache)
    with alone.session() as s:
        expected = [
            (c.start, c.end, c.text) for c in s.scalars(select(TranscriptCue).order_by(TranscriptCue.start))
        ]
    alone.close()
    assert len(expected) >= 4 and {w for c in expected for w in c[2].lower().split()} >= {"giraffe", "kettle"}

    where = Where(str(tmp_path / "node-home"), pgvector_url, "postgres", str(model_cache))
    run = _Ingesting(cluster, where, [clip], options, 600, window=10.0)
    run.running("_hear_task")  # a later chunk is heard on a worker node, not by the owner
    [got] = run.finish(600)
    assert not isinstance(got, Exception), got
    store = Store(tmp_path / "driver", pgvector_url, index="postgres")
    try:
        with store.session() as s:
            cues = [
                (c.start, c.end, c.text)
                for c in s.scalars(select(TranscriptCue).order_by(TranscriptCue.start))
            ]
            assert s.scalars(select(Video.language)).one() == "en"
        assert cues == expected
    finally:
        store.close()
