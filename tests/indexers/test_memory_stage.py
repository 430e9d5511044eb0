"""The memory stage of ingestion (memory.gate through memory.bank): real media, real FAISS, real
SQLite and PostgreSQL. A repeat folds into one slot that cites every time it was seen; the search
indexes hold what is retained; nothing is lost."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from indexers.decode import probe, sample_frames
from indexers.pipeline import IngestOptions, ingest
from memory import STAGES, EmbeddingRow, IngestJob, Segment, Store
from memory.bank import interleave, join_runs, take_turns
from memory.catalog import MemorySlot, MemoryUnit
from memory.runtime.images import image_encoder
from reasoning.search import SearchOptions, search, search_frame
from tests import media


def _count(store: Store, *where) -> int:  # type: ignore[no-untyped-def]
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(EmbeddingRow).where(*where)) or 0)


def _indexed(store: Store, library_id: int, space: str) -> int:
    return store.vectors.count(library_id, space)


@pytest.fixture(scope="module")
def thrice(media_dir: Path, cut_clip: media.CutClip) -> Path:
    """The cut clip three times over: each of its shots three times."""
    return media.make_long_clip(media_dir / "thrice", cut_clip.path, 3)


def test_a_repeated_shot_is_one_slot_that_cites_every_time(
    store: Store, thrice: Path, cut_clip: media.CutClip, model_cache: Path
) -> None:
    vid = ingest(store, thrice, IngestOptions(library="m"), cache_dir=model_cache).video_id
    with store.session() as s:
        shots = s.scalars(select(Segment).where(Segment.video_id == vid, Segment.level == "shot")).all()
        slots = s.scalars(
            select(MemorySlot).where(MemorySlot.kind == "shot", MemorySlot.state == "live")
        ).all()
        actions = [u.action for u in s.scalars(select(MemoryUnit).order_by(MemoryUnit.start))]
        library_id = slots[0].library_id
        took = s.scalar(select(IngestJob.stage_seconds).where(IngestJob.video_id == vid))
    n = len(cut_clip.cut_times) + 1
    assert len(shots) == 3 * n and len(slots) == n
    assert took is not None and set(took) == set(STAGES)  # every stage timed, the gate among them
    assert all(0 <= took[stage] < 600 for stage in STAGES)
    assert actions == ["write"] * n + ["fold"] * 2 * n
    assert all(sh.retained for sh in shots) and all(sh.salience is not None for sh in shots)

    # the indexes hold the exemplars (and the gists), SQL holds everything
    space = "visual:efficientnet-lite0"
    visual = EmbeddingRow.video_id == vid, EmbeddingRow.modality == "visual"
    kept = _count(store, *visual, EmbeddingRow.retained)
    assert 0 < kept < _count(store, *visual)
    assert _indexed(store, library_id, space) == kept

    # a frame of the second shot, held out, finds it in all three copies
    period = cut_clip.duration
    t = (cut_clip.cut_times[0] + cut_clip.cut_times[1]) / 2 + 0.1
    ((_, _, frame),) = sample_frames(probe(cut_clip.path), [t])
    found = search_frame(
        store, frame, image_encoder("efficientnet"), library="m", options=SearchOptions(top=3)
    )
    starts = sorted(m.start for m in found)
    assert starts == pytest.approx([cut_clip.cut_times[0] + k * period for k in range(3)], abs=0.15)
    for m in found:
        assert len(m.also) == 2 and all(v == vid for v, _, _ in m.also)
        assert m.to_json()["also"][0]["timestamp"].count(":") == 2

    # nothing is lost: forgetting the memory puts every row back in the index
    store.reindex(forget_memory=True)
    assert _count(store, *visual, EmbeddingRow.retained) == _count(store, *visual)
    assert _indexed(store, library_id, space) == _count(
        store, EmbeddingRow.library_id == library_id, EmbeddingRow.space == space
    )
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(MemorySlot)) == 0


def test_deleting_the_video_that_holds_an_exemplar_hands_it_over(
    sqlite_store: Store, thrice: Path, cut_clip: media.CutClip, model_cache: Path
) -> None:
    store = sqlite_store
    first = ingest(store, cut_clip.path, IngestOptions(library="h"), cache_dir=model_cache).video_id
    later = ingest(store, thrice, IngestOptions(library="h"), cache_dir=model_cache).video_id
    with store.session() as s:
        later_actions = set(
            s.scalars(
                select(MemoryUnit.action).where(MemoryUnit.video_id == later, MemoryUnit.kind == "shot")
            )
        )
    assert later_actions == {"fold"}, "every shot of the copies is one seen in the first video"
    t = cut_clip.cut_times[1] + 1.0  # the third shot
    ((_, _, frame),) = sample_frames(probe(cut_clip.path), [t])
    enc = image_encoder("efficientnet")
    # scoped to the later video, whose shots all folded into the first video's slots
    inside = search_frame(store, frame, enc, video_id=later, options=SearchOptions(top=3))
    assert {m.video_id for m in inside} == {later} and len(inside) == 3
    # library-wide, the slot's four places take turns by video: one moment in each video first,
    # and each moment's `also` names the other video before its own video's other places
    both = search_frame(store, frame, enc, library="h", options=SearchOptions(top=2))
    assert {m.video_id for m in both} == {first, later}
    for m in both:
        assert len(m.also) == 3 and m.also[0][0] != m.video_id
    store.delete_video(first)
    after = search_frame(store, frame, enc, library="h", options=SearchOptions(top=3))
    assert {m.video_id for m in after} == {later}
    assert sorted(m.start for m in after) == pytest.approx(
        [cut_clip.cut_times[1] + k * cut_clip.duration for k in range(3)], abs=0.15
    )


def test_the_videos_take_turns_in_a_slots_places() -> None:
    """A slot seen three times in one video and once in another names the other video second."""
    places = [("b", 0.0, 1.0), ("b", 5.0, 6.0), ("b", 9.0, 10.0), ("a", 2.0, 3.0), ("c", 1.0, 2.0)]
    assert take_turns(places) == [places[0], places[3], places[4], places[1], places[2]]
    assert take_turns(places[:3]) == places[:3]  # one video: its own order


def test_a_slots_places_less_like_the_query_wait_behind_the_next_hit() -> None:
    """A hit's first place keeps its rank; its other places come out before the next hit only where
    they look at least as much like the query, else wherever they rank, most alike first."""
    hits = [[(0.97, "a1"), (0.95, "a2"), (0.50, "a3")], [(0.90, "b1"), (0.40, "b2")], [], [(0.60, "c1")]]
    assert list(interleave(hits)) == [(0, "a1"), (0, "a2"), (1, "b1"), (3, "c1"), (0, "a3"), (1, "b2")]
    # equals: a slot's places in their own order (the videos taking turns) before the next hit's
    assert list(interleave([[(1.0, "x1"), (1.0, "x2")], [(1.0, "y1")]])) == [(0, "x1"), (0, "x2"), (1, "y1")]
    # unknown likeness holds nothing back: a place of unknown likeness waits for nothing, and a hit
    # of unknown likeness lets every waiting place go first
    hits = [[(0.9, "a1"), (0.1, "a2"), (None, "a3")], [(None, "b1")], [(0.5, "c1")]]
    assert [p for _, p in interleave(hits)] == ["a1", "a3", "a2", "b1", "c1"]


def test_a_merged_slot_answers_with_the_places_that_look_like_the_query_first(
    sqlite_store: Store, thrice: Path, cut_clip: media.CutClip, media_dir: Path, model_cache: Path
) -> None:
    """The cut clip three times over, then hue-shifted once, in a bank of four slots: the bank merges
    its nearest pair of slots, two different shots. Asked for a frame of either, the first four
    moments are that shot's four places (three, and the hue-shifted one in its own slot or not), not
    a place of the shot merged in, which a slot that named every video in turn put second."""
    from bisect import bisect_right

    from indexers.pipeline import regate
    from memory.gate import MemoryOptions, load_weights

    store = sqlite_store
    hue = media.filtered_copy(cut_clip.path, media_dir / "hue" / "cuts_hue90.mp4", "hue=h=90")
    first = ingest(store, thrice, IngestOptions(library="g"), cache_dir=model_cache).video_id
    ingest(store, hue, IngestOptions(library="g"), cache_dir=model_cache)
    regate(store, "g", MemoryOptions(budget=4 / 16), weights=load_weights().constant())

    bounds = (0.0, *cut_clip.cut_times)

    def shot(t: float) -> int:  # which shot of the cut clip a time of either video is in
        return bisect_right(bounds, t % cut_clip.duration + 0.01) - 1

    with store.session() as s:
        units = s.execute(
            select(MemoryUnit.slot_id, MemoryUnit.start)
            .join(MemorySlot, MemorySlot.id == MemoryUnit.slot_id)
            .where(MemoryUnit.kind == "shot", MemoryUnit.video_id == first, MemorySlot.state == "live")
        ).all()
    held: dict[int, set[int]] = {}
    for slot, start in units:
        held.setdefault(slot, set()).add(shot(start))
    merged = [shots for shots in held.values() if len(shots) > 1]
    assert len(merged) == 1 and len(merged[0]) == 2, held  # the premise: one slot holds two shots
    enc = image_encoder("efficientnet")
    for k in sorted(merged[0]):
        mid = (bounds[k] + (bounds + (cut_clip.duration,))[k + 1]) / 2
        ((_, _, frame),) = sample_frames(probe(cut_clip.path), [mid])
        found = search_frame(store, frame, enc, library="g", options=SearchOptions(top=4))
        assert [shot(m.start) for m in found] == [k] * 4, (k, [(m.video_id, m.start) for m in found])
        assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)


def test_places_one_after_another_in_a_video_are_one_place() -> None:
    """Units of one slot that touch (a cut between two looks of one thing) or overlap (windows) join,
    scoring as their best part; a gap, or another video, keeps them apart."""
    places = [
        (0.2, "b", 10.0, 12.0),
        (0.9, "a", 5.0, 7.5),
        (0.4, "b", 12.0, 15.0),  # right after the first: one run
        (0.3, "b", 14.0, 18.0),  # overlaps it
        (0.8, "b", 18.6, 20.0),  # 0.6 s later: apart
        (0.1, "a", 7.8, 9.0),  # 0.3 s later: joined
    ]
    assert join_runs(places) == [
        (0.4, "b", 10.0, 18.0),
        (0.8, "b", 18.6, 20.0),
        (0.9, "a", 5.0, 9.0),
    ]
    assert join_runs(places, gap=0.0) == [
        (0.4, "b", 10.0, 18.0),
        (0.8, "b", 18.6, 20.0),
        (0.9, "a", 5.0, 7.5),
        (0.1, "a", 7.8, 9.0),
    ]


def test_a_slot_seen_across_cuts_is_one_moment(
    sqlite_store: Store, thrice: Path, cut_clip: media.CutClip, model_cache: Path
) -> None:
    """Thresholds loosened until every shot without words folds into one slot: the shots after the
    first of each copy, one after the other, are one stretch of that slot, so a search finds one
    moment per copy spanning them, not one per shot."""
    from indexers.pipeline import regate
    from memory.gate import MemoryOptions

    store = sqlite_store
    vid = ingest(store, thrice, IngestOptions(library="j"), cache_dir=model_cache).video_id
    regate(store, "j", MemoryOptions(fold_shot=-1.0))
    period, cuts = cut_clip.duration, cut_clip.cut_times
    with store.session() as s:
        units = s.execute(
            select(MemoryUnit.start, MemoryUnit.slot_id)
            .where(MemoryUnit.kind == "shot")
            .order_by(MemoryUnit.start)
        ).all()
    slot = {round(start, 1): slot for start, slot in units}
    later = [slot[round(k * period + t, 1)] for k in range(3) for t in cuts]
    assert len(set(later)) == 1  # the test pattern, with its digits, stays apart
    ((_, _, frame),) = sample_frames(probe(cut_clip.path), [(cuts[0] + cuts[1]) / 2])
    found = search_frame(
        store, frame, image_encoder("efficientnet"), library="j", options=SearchOptions(top=3)
    )
    assert [m.video_id for m in found] == [vid] * 3
    spans = sorted((m.start, m.end) for m in found)
    expected = [(k * period + cuts[0], (k + 1) * period) for k in range(3)]
    assert np.allclose(spans, expected, atol=0.15)
    assert all(len(m.also) == 2 for m in found)


def _line_said_again(store: Store, tmp_path: Path, library: str) -> tuple[str, str]:
    """Two talks ingested into `library`, one after the other: the first opens with a line the
    second says again at 10 s (both cues 8 s long). Their video ids."""
    intro = "Welcome back to the workshop on restoring old photographs."
    lines_a = [intro, "Today we repair a torn corner with the clone stamp.", "Thanks for watching."]
    lines_b = ["Levels and curves fix a faded print.", intro, "Sharpen last, after resizing."]
    a = media.write_srt(tmp_path / "a.srt", [(10.0 * i, 10.0 * i + 8, t) for i, t in enumerate(lines_a)])
    b = media.write_srt(tmp_path / "b.srt", [(10.0 * i, 10.0 * i + 8, t) for i, t in enumerate(lines_b)])
    va = ingest(store, a, IngestOptions(library=library)).video_id
    return va, ingest(store, b, IngestOptions(library=library)).video_id


def test_a_line_said_again_folds_and_a_scoped_search_still_finds_it(
    sqlite_store: Store, tmp_path: Path
) -> None:
    store = sqlite_store
    va, vb = _line_said_again(store, tmp_path, "t")
    with store.session() as s:
        folded = s.scalars(
            select(MemoryUnit).where(MemoryUnit.video_id == vb, MemoryUnit.action == "fold")
        ).all()
    assert [(u.kind, u.start) for u in folded if u.kind == "cue"] == [("cue", 10.0)]
    top = search(
        store, "welcome back to the workshop", video_id=vb, options=SearchOptions(level="cue", top=1)
    )[0]
    assert (top.video_id, top.start) == (vb, 10.0)
    assert top.also == [(va, 0.0, 8.0)]
    both = search(
        store, "welcome back to the workshop", library="t", options=SearchOptions(level="cue", top=2)
    )
    assert sorted((m.video_id, m.start) for m in both) == sorted([(va, 0.0), (vb, 10.0)])
    np.testing.assert_equal(len({m.score for m in both}), 1)  # one slot: one score, two places


def test_a_line_said_twice_in_a_row_is_one_place_elsewhere(sqlite_store: Store, tmp_path: Path) -> None:
    """Said once in one talk and twice back to back in another: both later cues fold into the first
    one's slot, and its other place, in the search and for a refined span, is one stretch."""
    from reasoning.retrieve import _seen_elsewhere

    store = sqlite_store
    intro = "Welcome back to the workshop on restoring old photographs."
    lines_a = [intro, "Today we repair a torn corner with the clone stamp.", "Thanks for watching."]
    lines_b = ["Levels and curves fix a faded print.", intro, intro, "Sharpen last, after resizing."]
    a = media.write_srt(tmp_path / "a.srt", [(8.0 * i + 1, 8.0 * i + 8, t) for i, t in enumerate(lines_a)])
    b = media.write_srt(tmp_path / "b.srt", [(8.0 * i, 8.0 * i + 8, t) for i, t in enumerate(lines_b)])
    va = ingest(store, a, IngestOptions(library="w")).video_id
    vb = ingest(store, b, IngestOptions(library="w")).video_id
    with store.session() as s:
        folded = s.scalars(
            select(MemoryUnit.start).where(
                MemoryUnit.video_id == vb, MemoryUnit.kind == "cue", MemoryUnit.action == "fold"
            )
        ).all()
    assert sorted(folded) == [8.0, 16.0]
    query = "welcome back to the workshop"
    top = search(store, query, video_id=va, options=SearchOptions(level="cue", top=1))[0]
    assert (top.video_id, top.start) == (va, 1.0)
    assert top.also == [(vb, 8.0, 24.0)]
    # a refined span inside the line (what `retrieve` gives each span it cuts); one wider gets none
    assert _seen_elsewhere(store, va, [(2.0, 7.0), (1.0, 16.0)]) == [[(vb, 8.0, 24.0)], []]


def test_regate_with_a_smaller_budget_keeps_less_and_stays_within_it(
    sqlite_store: Store, tmp_path: Path
) -> None:
    from indexers.pipeline import regate
    from memory.bank import stats
    from memory.gate import MemoryOptions

    store = sqlite_store
    lines = [f"Step {i}: adjust the {w} slider until the sky looks right." for i, w in enumerate(
        ["exposure", "contrast", "highlights", "shadows", "whites", "blacks", "clarity", "vibrance"]
    )]  # fmt: skip
    path = media.write_srt(tmp_path / "steps.srt", [(6.0 * i, 6.0 * i + 5, t) for i, t in enumerate(lines)])
    vid = ingest(store, path, IngestOptions(library="r")).video_id
    with store.session() as s:
        lib_id = store.library(s, "r", create=False).id
        full = stats(s, lib_id)
    assert full["rows"]["retention"] == 1.0 and full["slots"]["live"] == full["units"]

    assert regate(store, "r", MemoryOptions(budget=0.5)) == 1
    with store.session() as s:
        half = stats(s, lib_id, MemoryOptions(budget=0.5))
    assert half["slots"]["live"] <= half["budget"] == -(-full["units"] // 2)
    assert half["slots"]["merged"] + half["slots"]["nested"] + half["slots"]["evicted"] > 0
    assert half["rows"]["retained"] < full["rows"]["retained"]
    # what the indexes hold is what SQL says is retained, and a hit still cites every place it stands for
    kept = _count(
        store,
        EmbeddingRow.library_id == lib_id,
        EmbeddingRow.space.startswith("text:"),
        EmbeddingRow.retained,
    )
    assert _indexed(store, lib_id, "text:all-MiniLM-L6-v2") == kept
    cues = search(store, "adjust the slider", video_id=vid, options=SearchOptions(level="cue", top=8))
    assert cues and all(m.video_id == vid for m in cues)

    regate(store, "r", MemoryOptions(budget=1.0))
    with store.session() as s:
        assert stats(s, lib_id)["rows"]["retained"] == full["rows"]["retained"]


def test_a_cue_its_window_holds_is_let_go_first_and_still_found_through_it(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Two talks ingested one after the other into a library whose bank holds half its units. The
    bank lets go of cues whose words a live window slot holds, not of windows, and each such cue is
    still found, by its own words, through its window."""
    from memory.bank import stats
    from memory.gate import MemoryOptions

    store = sqlite_store
    talks = {
        "a": [
            "Open the raw file and check the histogram before anything else.",
            "The white balance picker wants a neutral grey card in the frame.",
            "Lens corrections remove the purple fringing along the branches.",
            "Crop to the golden ratio overlay and straighten the horizon.",
            "A graduated filter darkens the sky without touching the hills.",
            "Noise reduction on the luminance channel smooths the shadows.",
            "Export as a sixteen bit TIFF for printing on matte paper.",
        ],
        "b": [
            "The pen tool draws a path around the teapot's spout.",
            "Feather the selection by two pixels so the edge looks soft.",
            "A new layer from the selection keeps the original untouched.",
            "Drop shadows need a light source from the upper left.",
            "Merge visible only after saving a copy with every layer.",
            "The healing brush samples texture from the clean tablecloth.",
            "Save for web shrinks the file to under two hundred kilobytes.",
        ],
    }
    options = IngestOptions(library="n", memory=MemoryOptions(budget=0.5))
    videos = {}
    for name, lines in talks.items():
        srt = media.write_srt(
            tmp_path / f"{name}.srt", [(7.0 * i, 7.0 * i + 6, t) for i, t in enumerate(lines)]
        )
        videos[name] = ingest(store, srt, options).video_id
    with store.session() as s:
        lib_id = store.library(s, "n", create=False).id
        got = stats(s, lib_id, options.memory)
        slots = {m.id: m for m in s.scalars(select(MemorySlot).where(MemorySlot.library_id == lib_id))}
    assert got["slots"]["live"] <= got["budget"]
    assert got["slots"]["nested"] > 0 and got["slots"]["evicted"] == 0
    assert all(m.state == "live" for m in slots.values() if m.kind == "window")
    nested = [m for m in slots.values() if m.state == "nested"]
    assert {m.video_id for m in nested} == set(videos.values())
    for m in nested:
        holder = slots[m.into_id]  # type: ignore[index]
        assert (holder.kind, holder.state, holder.video_id) == ("window", "live", m.video_id)
        assert holder.start <= m.start and m.end <= holder.end
        text = _cue_text(store, m.exemplar_id)
        found = search(store, text, library="n", options=SearchOptions(top=3))
        assert any(f.video_id == m.video_id and f.start < m.end and m.start < f.end for f in found), text


def test_a_restored_cue_said_in_two_videos_is_held_only_as_both_windows_are(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """The gate of a later ingestion is loaded from the catalog (memory.bank.load_gate): a cue slot
    that folded a line said again in another video comes back with both places, so it counts as held
    only while a window holds each."""
    from memory.bank import load_gate

    store = sqlite_store
    va, vb = _line_said_again(store, tmp_path, "p")
    with store.session() as s:
        lib_id = store.library(s, "p", create=False).id
        gate = load_gate(s, lib_id)
    said = next(slot for slot in gate.slots.values() if slot.kind == "cue" and len(slot.occurrences) > 1)
    assert {(v, a) for v, a, _, _ in said.occurrences} == {(va, 0.0), (vb, 10.0)}
    holder = gate.slots[gate.nested[said.id]]  # the window holding one of its places
    assert holder.kind == "window" and any(
        holder.video_id == v and holder.start <= a and b <= holder.end for v, a, b, _ in said.occurrences
    )
    (window,) = (
        w.id
        for w in gate.slots.values()
        if (w.kind, w.video_id) == ("window", vb) and w.start <= 10.0 and w.end >= 18.0
    )
    gate._drop(window)  # the window of b that holds it gone: the line said there is no longer held
    assert said.id not in gate.nested


def _cue_text(store: Store, row_id: int) -> str:
    with store.session() as s:
        return str(s.scalar(select(EmbeddingRow.text).where(EmbeddingRow.id == row_id)))


def test_a_merged_slide_is_still_found_by_its_own_words(
    sqlite_store: Store, slide_clip: media.SlideClip, model_cache: Path
) -> None:
    """Two slides look alike and say different things: a bank too small for both merges them, and
    the slide merged away stays findable by its text, at its own time, citing the other."""
    from indexers.pipeline import regate
    from memory.bank import load_gate
    from memory.gate import MemoryOptions, load_weights

    store = sqlite_store
    vid = ingest(store, slide_clip.path, IngestOptions(library="w"), cache_dir=model_cache).video_id
    first, _, second = slide_clip.shots  # slide, footage, slide
    weights = dataclasses.replace(load_weights(), head_bias=50.0)  # merging costs less than evicting
    assert regate(store, "w", MemoryOptions(budget=0.6), weights=weights) == 1  # 2 slots for 3 shots
    with store.session() as s:
        lib_id = store.library(s, "w", create=False).id
        (merged,) = s.scalars(select(MemorySlot).where(MemorySlot.state == "merged")).all()
        live = s.get(MemorySlot, merged.into_id)
        assert live is not None and live.state == "live"
        own = s.execute(
            select(EmbeddingRow.id, EmbeddingRow.modality, EmbeddingRow.retained, EmbeddingRow.slot_id)
            .join(Segment, Segment.id == EmbeddingRow.segment_id)
            .where(Segment.video_id == vid, Segment.level == "shot", Segment.start >= second[0] - 0.2)
        ).all()
        gate = load_gate(s, lib_id)
    # the slide merged away: its words stay in the indexes, standing for the live slot; its look goes
    words = [r for r in own if r.modality == "text"]
    assert len(words) == 1 and words[0].retained and words[0].slot_id == live.id
    assert not any(r.retained for r in own if r.modality == "visual")
    assert set(gate.slots[live.id].words) == {words[0].id}  # and the bank knows it when it reloads
    assert gate.text_rows[live.id] != words[0].id

    (found, *_) = search(store, "questions and answers", library="w", options=SearchOptions(level="shot"))
    assert found.start == pytest.approx(second[0], abs=0.2)
    assert [a for _, a, _ in found.also] == pytest.approx([first[0]], abs=0.2)


def test_a_slot_ranks_as_the_best_unit_folded_into_it(
    sqlite_store: Store, slide_clip: media.SlideClip, model_cache: Path
) -> None:
    """The index holds one unit of a slot (its exemplar). A look nearer the footage than that
    exemplar, but nearest the slide folded into its slot, ranks the slot first: the search scores a
    slot among its candidates by the best of the units folded into it, each by its own rows in SQL."""
    from indexers.pipeline import regate
    from memory.gate import MemoryOptions, unit_vector
    from reasoning.search import _dense, _scope

    store = sqlite_store
    vid = ingest(store, slide_clip.path, IngestOptions(library="r"), cache_dir=model_cache).video_id
    space = "visual:efficientnet-lite0"

    def rows_at(t: float) -> tuple[list[int], np.ndarray]:
        with store.session() as s:
            got = s.execute(
                select(EmbeddingRow.id, EmbeddingRow.vector)
                .join(Segment, Segment.id == EmbeddingRow.segment_id)
                .where(Segment.video_id == vid, Segment.level == "shot", EmbeddingRow.space == space)
                .where(Segment.start > t - 0.2, Segment.start < t + 0.2)
            ).all()
        return [i for i, _ in got], np.stack([np.frombuffer(v, np.float32) for _, v in got])

    (first, _), (footage, _), (second, _) = [(a, b) for a, b, _ in slide_clip.shots]
    (exemplar, a), (others, f), (folded, b) = rows_at(first), rows_at(footage), rows_at(second)
    alike = float(unit_vector(list(a)) @ unit_vector(list(b)))
    assert float(unit_vector(list(a)) @ unit_vector(list(f))) < alike - 0.02
    # the two slides fold into one slot: thresholds loosened until they do (their looks are near,
    # their words differ; the footage has none, so it stays apart)
    regate(store, "r", MemoryOptions(fold_shot=alike - 0.01, fold_text=-1.0))
    with store.session() as s:
        actions = list(
            s.scalars(select(MemoryUnit.action).where(MemoryUnit.kind == "shot").order_by(MemoryUnit.start))
        )
        retained = set(s.scalars(select(EmbeddingRow.id).where(EmbeddingRow.retained)))
    assert actions == ["write", "write", "fold"]
    assert set(exemplar) <= retained and not set(folded) & retained

    def looks(q: np.ndarray) -> tuple[float, float, float]:
        return float((a @ q).max()), float((f @ q).max()), float((b @ q).max())

    # a look between the folded slide and the footage: the footage beats the exemplar, the folded
    # slide beats the footage
    between = []
    for w in np.linspace(0.0, 3.0, 301):
        q = (b[0] + w * f[0]).astype(np.float32)
        q /= np.linalg.norm(q)
        by_exemplar, by_footage, by_folded = looks(q)
        if by_exemplar < by_footage < by_folded:
            between.append(q)
    assert between, "no look lies between the folded slide and the footage"
    q = between[len(between) // 2]
    ranked = _dense(
        store, _scope(store, "r", None, "shot", None, None), space, q, SearchOptions(level="shot")
    )
    assert ranked[0] in exemplar  # the slot (it stands for the folded slide), then the footage
    assert ranked[1] in others
