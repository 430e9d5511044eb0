"""Scenes and chapters: the exact partition kernel against brute force, topic shifts found in real
text with the packaged MiniLM, and the hierarchy stored by ingestion tiling each level's parent."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from indexers.pipeline import ingest
from indexers.structure import Atom, StructureOptions, atoms_from, build
from kernels.segment import partition, segment_costs, span_cost
from memory import Segment, Store
from memory.runtime.text import SentenceEmbedder
from tests import media

# --------------------------------------------------------------------------- the kernel


def brute_force(
    x: np.ndarray, w: np.ndarray, penalty: float, min_len: float = 0.0
) -> tuple[float, list[int]]:
    W, S, Q = segment_costs(x, w)
    n = len(x)
    best: tuple[float, list[int]] = (np.inf, [0])
    for k in range(n):
        for inner in itertools.combinations(range(1, n), k):
            cuts = [0, *inner]
            bounds = [*cuts, n]
            if min_len and any(W[b] - W[a] < min_len for a, b in itertools.pairwise(bounds)):
                continue
            cost = sum(float(span_cost(W, S, Q, a, b)) + penalty for a, b in itertools.pairwise(bounds))
            if cost < best[0] - 1e-9:
                best = (cost, cuts)
    return best


def total_cost(x: np.ndarray, w: np.ndarray, cuts: list[int], penalty: float) -> float:
    W, S, Q = segment_costs(x, w)
    bounds = [*cuts, len(x)]
    return sum(float(span_cost(W, S, Q, a, b)) + penalty for a, b in itertools.pairwise(bounds))


@pytest.mark.parametrize("seed", range(6))
def test_partition_is_the_exact_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 9
    # three noisy clusters in a row, with random lengths: a structure worth finding
    centres = rng.normal(size=(3, 4))
    x = np.concatenate([c + 0.3 * rng.normal(size=(3, 4)) for c in centres])
    w = rng.uniform(0.5, 3.0, n)
    for penalty in (0.1, 1.0, 5.0):
        got = partition(x, w, penalty)
        cost, cuts = brute_force(x, w, penalty)
        assert total_cost(x, w, got, penalty) == pytest.approx(cost, rel=1e-9, abs=1e-9), (got, cuts)


def test_partition_respects_min_len_and_allowed_starts() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(10, 3))
    w = np.ones(10)
    got = partition(x, w, 0.01, min_len=3.0)
    assert all(b - a >= 3 for a, b in itertools.pairwise([*got, 10]))
    cost, _ = brute_force(x, w, 0.01, min_len=3.0)
    assert total_cost(x, w, got, 0.01) == pytest.approx(cost)
    allowed = np.zeros(10, bool)
    allowed[[0, 4, 7]] = True
    assert set(partition(x, w, 0.0, allowed=allowed)) <= {0, 4, 7}
    assert partition(x, w, 0.0, allowed=allowed) == [0, 4, 7]  # no penalty: every allowed cut pays


def test_partition_of_identical_items_is_one_segment() -> None:
    assert partition(np.ones((20, 5)), np.ones(20), 1e-6) == [0]


# --------------------------------------------------------------------------- real text

TOPICS = {
    "baking": [
        "Preheat the oven to two hundred degrees before you mix the dough.",
        "Knead the bread dough for ten minutes until it is smooth and elastic.",
        "Let the dough rise in a warm place until it doubles in size.",
        "Brush the loaf with egg wash so the crust turns golden brown.",
        "Bake the bread for forty minutes and let it cool on a rack.",
        "Slice the warm bread and serve it with butter.",
    ],
    "astronomy": [
        "Jupiter is the largest planet in our solar system.",
        "Its great red spot is a storm larger than the Earth.",
        "Through a small telescope you can see four of its moons.",
        "The moons were discovered by Galileo in sixteen ten.",
        "Saturn's rings are made of ice and rock particles.",
        "On a clear night the planets shine brighter than most stars.",
    ],
    "football": [
        "The striker scored twice in the first half of the match.",
        "The goalkeeper saved a penalty in the final minute.",
        "The coach changed the formation after the break.",
        "Fans sang in the stadium until the final whistle.",
        "The referee showed two yellow cards to the defenders.",
        "The team now leads the league by three points.",
    ],
}


def topic_cues(seconds: float = 5.0) -> tuple[list[tuple[float, float, str]], list[float]]:
    cues, shifts, t = [], [], 0.0
    for i, lines in enumerate(TOPICS.values()):
        if i:
            shifts.append(t)
        for line in lines:
            cues.append((t, t + seconds - 0.5, line))
            t += seconds
    return cues, shifts


@pytest.fixture(scope="module")
def embed():  # type: ignore[no-untyped-def]
    return SentenceEmbedder().embed


def test_topic_shifts_become_scene_boundaries(embed) -> None:  # type: ignore[no-untyped-def]
    cues, shifts = topic_cues()
    duration = cues[-1][1] + 0.5
    got = build(atoms_from([], cues), duration, embed, StructureOptions())
    starts = [s for s, _ in got.scenes[1:]]
    assert starts == shifts, f"scenes {got.scenes}, topic shifts at {shifts}"
    assert_tiles(got.scenes, duration)
    assert_tiles(got.chapters, duration)
    assert {s for s, _ in got.chapters} <= {s for s, _ in got.scenes}


def test_granularity_orders_the_levels(embed) -> None:  # type: ignore[no-untyped-def]
    cues, _ = topic_cues()
    duration = cues[-1][1] + 0.5
    fine = build(
        atoms_from([], cues), duration, embed, StructureOptions(scene_seconds=2, chapter_seconds=400)
    )
    assert len(fine.scenes) > 3 and len(fine.chapters) < len(fine.scenes)
    assert {s for s, _ in fine.chapters} <= {s for s, _ in fine.scenes}


def test_shots_group_by_colour_when_nothing_is_said(embed) -> None:  # type: ignore[no-untyped-def]
    red, blue = np.zeros(16), np.zeros(16)
    red[0], blue[9] = 1.0, 1.0
    rng = np.random.default_rng(0)
    shots = [(i * 4.0, i * 4.0 + 4.0) for i in range(8)]
    visuals = [(red if i < 5 else blue) + 0.05 * rng.random(16) for i in range(8)]
    got = build(atoms_from(shots, [], visuals), 32.0, embed, StructureOptions(scene_seconds=6, min_scene=4))
    assert [s for s, _ in got.scenes] == [0.0, 20.0]


def test_a_cue_across_a_cut_keeps_its_shots_together(embed) -> None:  # type: ignore[no-untyped-def]
    red, blue = np.eye(16)[0], np.eye(16)[9]
    shots = [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    visuals = [red, blue, blue]
    cue = [(8.0, 12.0, "and so we walk through the door into the next room")]
    atoms = atoms_from(shots, cue, visuals)
    opts = StructureOptions(scene_seconds=1, min_scene=1)
    assert [s for s, _ in build(atoms, 30.0, embed, opts).scenes] == [0.0, 10.0]
    assert 10.0 not in [s for s, _ in build(atoms, 30.0, embed, opts, cues=cue).scenes]


def test_degenerate_inputs_give_one_scene(embed) -> None:  # type: ignore[no-untyped-def]
    assert build([], 12.0, embed).scenes == [(0.0, 12.0)]
    assert build([Atom(0.0, 5.0, "hello")], 5.0, embed).chapters == [(0.0, 5.0)]
    same = [Atom(i, i + 1.0, "") for i in range(5)]
    assert build(same, 5.0, embed).scenes == [(0.0, 5.0)]


def assert_tiles(spans: list[tuple[float, float]], duration: float) -> None:
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(duration)
    for (_, a_end), (b_start, _) in itertools.pairwise(spans):
        assert a_end == b_start


# --------------------------------------------------------------------------- stored hierarchy


def levels(store: Store, video_id: str) -> dict[str, list[Segment]]:
    with store.session() as s:
        rows = s.scalars(select(Segment).where(Segment.video_id == video_id).order_by(Segment.start)).all()
        s.expunge_all()
    out: dict[str, list[Segment]] = {"video": [], "chapter": [], "scene": [], "shot": []}
    for r in rows:
        out[r.level].append(r)
    return out


def assert_hierarchy(lv: dict[str, list[Segment]], duration: float) -> None:
    (root,) = lv["video"]
    by_id = {r.id: r for rows in lv.values() for r in rows}
    for child, parent in (("chapter", "video"), ("scene", "chapter"), ("shot", "scene")):
        rows = lv[child]
        if not rows:
            continue
        assert_tiles([(r.start, r.end) for r in rows], duration)
        for r in rows:
            assert r.parent_id is not None
            p = by_id[r.parent_id]
            assert p.level == parent, (r.level, p.level)
            assert p.start - 1e-6 <= r.start and r.end <= p.end + 1e-6, (r, p)
    assert root.end == pytest.approx(duration)


def test_transcript_only_item_gets_the_hierarchy(sqlite_store: Store, tmp_path: Path) -> None:
    cues, shifts = topic_cues()
    srt = media.write_srt(tmp_path / "topics.srt", cues)
    res = ingest(sqlite_store, srt)
    lv = levels(sqlite_store, res.video_id)
    assert_hierarchy(lv, res.duration)
    assert [r.start for r in lv["scene"][1:]] == shifts
    assert lv["shot"] == []


def test_video_scenes_are_made_of_whole_shots(
    store: Store, narrated_clip: media.NarratedClip, model_cache: Path
) -> None:
    res = ingest(store, narrated_clip.path, cache_dir=model_cache)
    lv = levels(store, res.video_id)
    assert_hierarchy(lv, res.duration)
    shot_starts = {r.start for r in lv["shot"]}
    assert {r.start for r in lv["scene"]} <= shot_starts
    assert {r.start for r in lv["chapter"]} <= {r.start for r in lv["scene"]}
    assert all(r.signature is not None and len(r.signature) == 400 * 4 for r in lv["shot"])
