"""The visual pass in its worker process: same shots as in-process, crashes come back as MediaError,
and a worker never outlives the ingestion that started it. Real processes, real decoders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from sqlalchemy import select

from indexers.decode import DecodeOptions, MediaError, probe
from indexers.pipeline import IngestOptions, ingest
from indexers.shots import ShotOptions, ShotResult
from indexers.visual import LookOptions, ShotLook, VisualJob, VisualWorker, run_job
from memory import Segment, Store, TranscriptCue
from tests import media
from tests.conftest import shared

ROOT = Path(__file__).resolve().parents[2]


def job_for(path: Path, look: LookOptions | None = None) -> VisualJob:
    return VisualJob(probe(path), DecodeOptions(), ShotOptions(), look=look)


def test_worker_finds_and_sees_the_same_as_this_process(cut_clip: media.CutClip) -> None:
    job = job_for(cut_clip.path, LookOptions())
    seen: list[tuple[str, float]] = []
    committed: list[ShotResult] = []
    looked: list[list[ShotLook]] = []
    with VisualWorker(job, lambda *p: seen.append(p), committed.append, looked.append) as worker:
        remote = worker.result()
    local = run_job(job)
    assert remote.shots is not None and local.shots is not None
    assert [(s.start, s.end, s.transition) for s in remote.shots.shots] == [
        (s.start, s.end, s.transition) for s in local.shots.shots
    ]
    assert len(remote.shots.shots) == len(cut_clip.cut_times) + 1
    assert committed == [remote.shots]  # on_shots got them before result() returned
    assert looked == [remote.looks] and remote.looks is not None and local.looks is not None
    assert [lk.index for lk in remote.looks] == list(range(len(remote.shots.shots)))
    for a, b in zip(remote.looks, local.looks, strict=True):
        assert a.frames == b.frames >= 1 and a.labels == b.labels and a.spans == b.spans
        assert 1 <= len(a.vectors) <= LookOptions().keep
        np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)
    assert {stage for stage, _ in seen} <= {"shots", "vision"}
    assert all(0.0 <= f <= 1.0 for _, f in seen)


def test_the_vision_options_travel_with_the_look_to_the_worker(slide_clip: media.SlideClip) -> None:
    """`LookOptions.vision` is what the worker process looks with (settings reach it this way)."""
    from indexers.vision import VisionOptions

    def texts(look: LookOptions) -> list[list[str]]:
        with VisualWorker(job_for(slide_clip.path, look), lambda *p: None) as worker:
            looks = worker.result().looks
        assert looks is not None and len(looks) == len(slide_clip.shots)
        return [[t.text for t in lk.texts] for lk in looks]

    read = texts(LookOptions())
    assert any("Quarterly results 2026" in lines for lines in read), read
    assert texts(LookOptions(vision=VisionOptions(ocr=False))) == [[]] * len(slide_clip.shots)


def test_known_shots_are_looked_at_without_detecting_them_again(cut_clip: media.CutClip) -> None:
    """A resumed ingestion: the shots are in the catalog, the vision stage is not."""
    known = [(0.0, 1.0), (1.0, 2.5)]
    job = VisualJob(probe(cut_clip.path), DecodeOptions(), ShotOptions(), known_shots=known)
    result = run_job(job)
    assert result.shots is None and result.looks is not None
    assert [lk.frames for lk in result.looks] == [1, 2]  # one per second, at least one per shot
    assert all(
        t0 >= s and t1 <= e for lk, (s, e) in zip(result.looks, known, strict=True) for t0, t1 in lk.spans
    )


def wait_for_progress(path: Path) -> tuple[VisualWorker, threading.Event]:
    started = threading.Event()
    worker = VisualWorker(job_for(path), lambda *p: started.set())
    assert started.wait(60), "the worker reported no progress"
    return worker, started


@pytest.mark.slow
def test_a_worker_killed_mid_video_is_a_media_error() -> None:
    worker, _ = wait_for_progress(shared("bbb_10min.mp4"))
    with worker:
        os.kill(worker.pid, signal.SIGKILL)
        with pytest.raises(MediaError, match="killed by signal 9"):
            worker.result()


def test_worker_refusal_comes_back_with_its_reason() -> None:
    with (
        VisualWorker(job_for(shared("megamind_damaged.avi"))) as worker,
        pytest.raises(MediaError, match="damaged video: .* frames show corrupt blocks"),
    ):
        worker.result()


@pytest.mark.slow
def test_a_worker_dies_with_its_parent(tmp_path: Path) -> None:
    """SIGKILL the process that started the worker (not its group): the kernel takes the worker too."""
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from indexers.decode import DecodeOptions, probe
        from indexers.shots import ShotOptions, ShotResult
        from indexers.visual import VisualJob, VisualWorker
        info = probe(Path({str(shared("bbb_10min.mp4"))!r}))
        worker = VisualWorker(VisualJob(info, DecodeOptions(), ShotOptions(), look=None))
        print(worker.pid, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert parent.stdout is not None
        worker_pid = int(parent.stdout.readline())
        assert psutil.Process(worker_pid).ppid() == parent.pid
        time.sleep(1.0)  # let the worker get into decoding
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.1)
        else:
            os.kill(worker_pid, signal.SIGKILL)
            pytest.fail("the worker outlived the process that started it")
    finally:
        parent.kill()


def rows(store: Store, video_id: str) -> tuple[list[tuple[float, float]], list[str]]:
    with store.session() as s:
        shots = s.scalars(
            select(Segment)
            .where(Segment.video_id == video_id, Segment.level == "shot")
            .order_by(Segment.ordinal)
        ).all()
        cues = s.scalars(
            select(TranscriptCue).where(TranscriptCue.video_id == video_id).order_by(TranscriptCue.start)
        ).all()
        return [(x.start, x.end) for x in shots], [c.text for c in cues]


def test_ingesting_with_and_without_the_worker_gives_the_same_rows(
    tmp_path: Path, narrated_clip: media.NarratedClip, model_cache: Path
) -> None:
    got = {}
    for workers in (True, False):
        store = Store(tmp_path / f"workers-{workers}")
        try:
            res = ingest(store, narrated_clip.path, IngestOptions(workers=workers), cache_dir=model_cache)
            got[workers] = rows(store, res.video_id)
        finally:
            store.close()
    assert got[True] == got[False]
    assert len(got[True][0]) == len(narrated_clip.cut_times) + 1
    assert got[True][1], "no transcript"


def _assert_same_looks(got: list[ShotLook], want: list[ShotLook]) -> None:
    """The same findings in every shot: texts, labels, faces, people, spans; vectors within 1e-5."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert (a.texts, a.labels, a.faces, a.people, a.spans) == (
            b.texts,
            b.labels,
            b.faces,
            b.people,
            b.spans,
        )
        np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def _sampled(shot: tuple[float, float]) -> int:
    from indexers.visual import sample_times

    return len(sample_times([shot], LookOptions())[0])


def test_one_decoding_pass_finds_the_shots_of_detection_alone_and_every_sample_frame() -> None:
    """Shots and the look share the detector's decoding pass (`run_along`): the shots are exactly
    those of a detection on its own, and every shot, settled while the stream was read or only at
    its end, gets as many frames as its sample times, all inside it."""
    from indexers.visual import run_visual

    job = job_for(shared("bbb_trailer.mp4"), LookOptions())
    settled: list[float] = []
    import indexers.shots as shots_module

    update = shots_module._Settler.update

    def recording(self: shots_module._Settler, *args: object) -> tuple[list[float], float] | None:
        out = update(self, *args)  # type: ignore[arg-type]
        if out is not None:
            settled.extend(out[0])
        return out

    shots_module._Settler.update = recording  # type: ignore[method-assign]
    try:
        along = run_job(job)
    finally:
        shots_module._Settler.update = update  # type: ignore[method-assign]
    alone = run_visual(job_for(shared("bbb_trailer.mp4")))
    assert along.shots is not None and along.looks is not None
    spans = [(s.start, s.end) for s in along.shots.shots]
    assert spans == [(s.start, s.end) for s in alone.shots]
    assert len(settled) >= len(spans) // 2  # most shots were looked at while the stream was read
    assert [lk.index for lk in along.looks] == list(range(len(spans)))
    for look, (start, end) in zip(along.looks, spans, strict=True):
        assert look.frames == _sampled((start, end))
        assert all(start - 0.02 <= a <= b < end for a, b in look.spans)


def test_the_look_encodes_frames_at_the_rate_asked_up_to_what_the_decoding_pass_keeps() -> None:
    """`VIDMEM_VISION_FPS` (`LookOptions.at_rate`): 4 frames a second of each shot reach the encoder
    from the one decoding pass, where the default takes 1; more than the pass keeps is refused."""
    from indexers.vision import VisionOptions
    from indexers.visual import sample_times

    dense = LookOptions.at_rate(4, VisionOptions(ocr=False, people=False))
    assert (dense.fps, dense.max_frames) == (4, 64)
    result = run_job(job_for(shared("bbb_trailer.mp4"), dense))
    assert result.shots is not None and result.looks is not None
    spans = [(s.start, s.end) for s in result.shots.shots]
    frames = [look.frames for look in result.looks]
    # each frame kept once: two sample times a quarter second apart can fall on the same kept frame
    assert all(0 < n <= len(sample_times([shot], dense)[0]) for n, shot in zip(frames, spans, strict=True))
    assert sum(frames) >= 3 * sum(_sampled(shot) for shot in spans)
    assert all(1 <= len(look.vectors) <= dense.keep for look in result.looks)
    with pytest.raises(ValueError, match="fps"):
        LookOptions.at_rate(5)


def test_a_shot_the_final_picks_change_is_looked_at_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection at the detector's settled boundaries: one that the final picks do not keep
    (the picks over the whole stream can differ from those made while reading it). The two shots
    looked at in its place are dropped, and the real one is looked at by seeking back to it."""
    import indexers.shots as shots_module

    update = shots_module._Settler.update
    injected: list[float] = []

    def wrong(self: shots_module._Settler, *args: object) -> tuple[list[float], float] | None:
        out = update(self, *args)  # type: ignore[arg-type]
        if out is not None and not injected:
            long = [b for a, b in zip([0.0, *out[0]], out[0], strict=False) if b - a >= 4.0]
            if long:
                injected.append(long[0] - 2.0)  # inside a shot of 4 s or more
                return sorted(injected + out[0]), out[1]
        return out

    monkeypatch.setattr(shots_module._Settler, "update", wrong)
    result = run_job(job_for(shared("bbb_trailer.mp4"), LookOptions()))
    assert injected and result.shots is not None and result.looks is not None
    spans = [(s.start, s.end) for s in result.shots.shots]
    assert all(injected[0] not in span for span in spans)
    hit = next(i for i, (a, b) in enumerate(spans) if a < injected[0] < b)
    for look, shot in zip(result.looks, spans, strict=True):
        assert look.frames == _sampled(shot)
    seen = result.looks[hit].spans
    assert min(a for a, _ in seen) < injected[0] < max(b for _, b in seen)  # frames from both sides


def test_a_long_videos_windows_joined_are_one_pass_over_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass split into 10 s windows (`run_along` with a window, as a Ray task runs each one;
    `join_windows` as their owner joins them): each window decodes from 20 s before its start, not
    from the beginning, and together they find exactly the shots, signatures and looks of one pass
    over the whole trailer. A boundary two windows place differently is settled by the later one,
    and the shots whose span moved are looked at again by seeking."""
    from dataclasses import replace

    from indexers import visual
    from indexers.visual import join_windows, run_along, window_edges

    job = job_for(shared("bbb_trailer.mp4"), LookOptions(workers=1))
    whole, looks = run_along(job, lambda stage, fraction: None)
    edges = window_edges(job.info.duration, 10.0)
    assert len(edges) == 5 and edges[-1][1] == float("inf")
    parts = [run_along(job, lambda stage, fraction: None, window=w) for w in edges]
    # the last window decodes from the keyframe before 20 s (14.1 s), not from the beginning
    assert parts[-1][0].frames < 0.8 * whole.frames
    joined, seen = join_windows(job, parts)
    assert [(s.start, s.end) for s in joined.shots] == [(s.start, s.end) for s in whole.shots]
    for a, b in zip(joined.shots, whole.shots, strict=True):
        np.testing.assert_allclose(a.signature, b.signature, atol=1e-6)
    assert [lk.index for lk in seen] == list(range(len(looks)))
    _assert_same_looks(seen, looks)

    # a later window places its first boundary 0.5 s later than the window before it did: that
    # boundary is the later window's, and the shot before it is looked at again, alone
    k = next(i for i in range(2, len(parts)) if parts[i][0].shots)
    found, own = parts[k]
    moved = replace(found.shots[0], start=found.shots[0].start + 0.5)
    parts[k] = (replace(found, shots=[moved, *found.shots[1:]]), own)
    asked: list[tuple[float, float]] = []
    look_again = visual.run_look

    def spy(info, shots, *args, **kwargs):  # type: ignore[no-untyped-def]
        asked.extend(shots)
        return look_again(info, shots, *args, **kwargs)

    monkeypatch.setattr(visual, "run_look", spy)
    joined, seen = join_windows(job, parts)
    spans = [(s.start, s.end) for s in joined.shots]
    i = spans.index((moved.start, moved.end))
    assert spans[:i] + spans[i + 1 :] == [(a, b if b != found.shots[0].start else moved.start) for a, b in [
        (s.start, s.end) for s in whole.shots] if a != found.shots[0].start]  # fmt: skip
    assert asked == [spans[i - 1]]
    look = seen[i - 1]
    assert look.frames == _sampled(spans[i - 1])
    assert all(spans[i - 1][0] - 0.02 <= a <= b < spans[i - 1][1] for a, b in look.spans)


def test_known_shots_looked_at_window_by_window_are_one_pass_over_them() -> None:
    """A resumed ingestion's vision split into 10 s windows (`look_window`, as a Ray task runs each
    one): each window looks inside the stored shots that begin in it, seeking to the later ones, and
    together they find exactly the looks of one pass over all the shots."""
    from indexers.visual import look_window, run_look, run_visual, window_edges

    job = job_for(shared("bbb_trailer.mp4"), LookOptions(workers=1))
    shots = [(s.start, s.end) for s in run_visual(job).shots]
    job.known_shots = shots
    assert job.look is not None
    whole = run_look(job.info, shots, job.look)
    parts = [look_window(job, a, b) for a, b in window_edges(job.info.duration, 10.0)]
    assert [len(p) for p in parts] == [
        sum(a <= s < b for s, _ in shots) for a, b in window_edges(job.info.duration, 10.0)
    ]
    seen = [look for part in parts for look in part]
    assert len(seen) == len(whole) >= 10 and any(lk.texts for lk in whole)
    _assert_same_looks(seen, whole)


def test_seeking_to_sparse_times_gives_the_frames_of_one_sequential_pass() -> None:
    from indexers.decode import sample_frames

    info = probe(shared("bbb_trailer.mp4"))
    times = [1.0, 1.6, 30.0, 47.5]
    plain = list(sample_frames(info, times, max_side=320))
    sought = list(sample_frames(info, times, max_side=320, seek_beyond=5.0))
    assert [(i, t) for i, t, _ in sought] == [(i, t) for i, t, _ in plain]
    assert len(plain) == len(times)
    for (_, _, a), (_, _, b) in zip(plain, sought, strict=True):
        np.testing.assert_array_equal(a, b)
