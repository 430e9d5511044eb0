"""The gate in front of a library's memory bank (memory.gate), on vectors made here."""

from __future__ import annotations

import numpy as np
import pytest

from memory.gate import (
    FEATURES,
    GateUnit,
    GateWeights,
    MemoryGate,
    MemoryOptions,
    _KindBank,
    budget_for,
    load_weights,
    torch_gate,
)


def unit_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def units(vectors: np.ndarray, kind: str = "shot", video: str = "v", offset: float = 0.0) -> list[GateUnit]:
    return [
        GateUnit(key=i + 1, kind=kind, video_id=video, start=offset + 2 * i, end=offset + 2 * i + 2, vector=v)
        for i, v in enumerate(vectors)
    ]


def random_weights(seed: int = 1, hidden: int = 6) -> GateWeights:
    rng = np.random.default_rng(seed)
    F = len(FEATURES)
    return GateWeights(
        rng.normal(size=(3 * hidden, F)),
        rng.normal(size=(3 * hidden, hidden)),
        rng.normal(size=3 * hidden),
        rng.normal(size=3 * hidden),
        rng.normal(size=hidden + F),
        0.3,
        fold_shot=0.9,
        fold_text=0.95,
    )


def test_the_numpy_cell_is_the_torch_module() -> None:
    import torch

    weights = random_weights()
    xs = np.random.default_rng(2).normal(size=(20, len(FEATURES)))
    with torch.no_grad():
        want = torch_gate(weights).double()(torch.as_tensor(xs)).numpy()
    h = np.zeros(weights.hidden)
    got = []
    for x in xs:
        h = weights.step(x, h)
        got.append(weights.salience(x, h))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    exported = torch_gate(weights).export()  # and back: the JSON weights are what torch holds
    np.testing.assert_allclose(exported.weight_hh, weights.weight_hh)
    assert GateWeights.from_json(weights.to_json()).head_bias == weights.head_bias


def test_shipped_weights_load_and_name_their_features() -> None:
    weights = load_weights()
    assert weights.weight_ih.shape[1] == len(FEATURES)
    assert 0 < weights.fold_shot <= 1 and 0 < weights.fold_text <= 1
    assert weights.fitted_on
    raw = weights.to_json()
    raw["features"] = ["something", "else"]
    with pytest.raises(ValueError, match="refit"):
        GateWeights.from_json(raw)


def test_a_repeat_folds_into_one_slot_that_keeps_every_occurrence() -> None:
    distinct = unit_vectors(5)
    stream = units(np.concatenate([distinct, distinct, distinct]))  # the same five shots three times
    gate = MemoryGate(MemoryOptions(), random_weights())
    decisions = list(gate.gate(stream, budget=100))
    assert [d.action for d in decisions] == ["write"] * 5 + ["fold"] * 10
    assert len(gate) == 5
    for slot in gate.slots.values():
        starts = [start for _, start, _, _ in slot.occurrences]
        assert len(starts) == 3 and starts[1] - starts[0] == pytest.approx(10.0)
        assert slot.seconds == pytest.approx(6.0)
    # the exemplar is the first occurrence, never an average of them
    first = decisions[0].slot
    assert first is not None and gate.slots[first].exemplar == 1
    np.testing.assert_array_equal(gate.vectors[first], distinct[0])


def test_the_shot_fold_threshold_follows_the_rate_the_vectors_were_encoded_at() -> None:
    """`MemoryOptions.vision_fps` picks the threshold fitted on vectors of that rate
    (`fold_shot_at`, shipped for 4 frames a second by tests/fit/fit_gate.py --fps 4); a rate with
    none fitted keeps the default rate's."""
    weights = random_weights()
    weights.fold_shot, weights.fold_shot_at = 0.86, {"4": 0.88}
    a, b = np.eye(2, 32, dtype=np.float32)
    pair = np.stack([a, 0.87 * a + np.sqrt(1 - 0.87**2) * b]).astype(np.float32)  # cosine 0.87

    def actions(fps: float) -> list[str]:
        gate = MemoryGate(MemoryOptions(vision_fps=fps), weights)
        return [d.action for d in gate.gate(units(pair), budget=10)]

    assert actions(1) == ["write", "fold"]
    assert actions(4) == ["write", "write"]
    assert actions(2) == ["write", "fold"]
    shipped = load_weights()
    assert shipped.fold_shot_for(1) == shipped.fold_shot
    assert shipped.fold_shot_for(4) != shipped.fold_shot  # fitted for 4 frames a second, shipped
    assert GateWeights.from_json(shipped.to_json()).fold_shot_at == shipped.fold_shot_at
    with pytest.raises(ValueError, match="vision_fps"):
        MemoryOptions(vision_fps=0)


def test_kinds_never_fold_into_each_other() -> None:
    v = unit_vectors(1)
    gate = MemoryGate(MemoryOptions(), random_weights())
    actions = [d.action for d in gate.gate(units(v, "shot") + units(v, "window", offset=10), budget=10)]
    assert actions == ["write", "write"]


def test_a_full_bank_merges_the_most_similar_pair_and_keeps_both_times() -> None:
    base = unit_vectors(4, seed=3)
    near = base[0] + 0.15 * unit_vectors(1, seed=4)[0]  # close to the first, below the fold threshold
    near /= np.linalg.norm(near)
    stream = units(np.concatenate([base, near[None]]))
    gate = MemoryGate(MemoryOptions(fold_shot=0.999), random_weights())
    gate.weights.head_bias = 50.0  # every slot very salient: merging costs less than evicting
    decisions = list(gate.gate(stream, budget=4))
    assert len(gate) == 4 and decisions[-1].action == "write"
    (event,) = gate.events
    assert event.action == "merge" and event.similarity == pytest.approx(float(base[0] @ near), abs=1e-5)
    joined = gate.slots[event.into]  # type: ignore[index]
    assert sorted(start for _, start, _, _ in joined.occurrences) == [0.0, 8.0]


def test_a_full_bank_evicts_the_least_salient_when_nothing_is_alike() -> None:
    stream = units(unit_vectors(6, dim=64, seed=5))
    gate = MemoryGate(MemoryOptions(), random_weights())
    gate.weights.head = np.zeros_like(gate.weights.head)
    gate.weights.head[FEATURES.index("log_seconds")] = 0.0
    saliences = iter([0.9, 0.2, 0.8, 0.7, 0.6, 0.95])
    gate.weights.salience = lambda x, h: next(saliences)  # type: ignore[method-assign]
    list(gate.gate(stream, budget=4))
    assert len(gate) == 4
    evicted = [e for e in gate.events if e.action == "evict"]
    assert [round(e.salience, 2) for e in evicted] == [0.2, 0.6]
    assert sorted(round(s.salience, 2) for s in gate.slots.values()) == [0.7, 0.8, 0.9, 0.95]


def test_skip_below_skips_and_the_bank_never_exceeds_its_budget() -> None:
    stream = units(unit_vectors(200, seed=6))
    gate = MemoryGate(MemoryOptions(skip_below=0.5), random_weights(seed=7))
    sizes = []
    for d in gate.gate(stream, budget=20):
        sizes.append(len(gate))
        assert (d.action == "skip") == (d.salience < 0.5)
    assert max(sizes) <= 20


def test_the_bank_finds_the_closest_pair_as_a_full_comparison_would() -> None:
    rng = np.random.default_rng(8)
    bank, live = _KindBank(), {}
    vecs = unit_vectors(120, dim=16, seed=9)
    for i, v in enumerate(vecs):
        bank.add(i, v)
        live[i] = v
        if i % 3 == 2:  # remove one now and then
            gone = int(rng.choice(list(live)))
            bank.remove(gone)
            live.pop(gone)
        ids = list(live)
        if len(ids) < 2:
            assert bank.closest_pair() is None
            continue
        m = np.stack([live[k] for k in ids])
        sims = m @ m.T
        np.fill_diagonal(sims, -np.inf)
        a, b = np.unravel_index(np.argmax(sims), sims.shape)
        pair = bank.closest_pair()
        assert pair is not None
        assert pair[2] == pytest.approx(float(sims[a, b]), abs=1e-6)
        assert {pair[0], pair[1]} == {ids[a], ids[b]}


def test_budget_is_a_share_of_units_capped_per_hour() -> None:
    assert budget_for(MemoryOptions(budget=0.1), 1788, 2.0) == 179
    assert budget_for(MemoryOptions(budget=1.0, slots_per_hour=50), 1788, 2.0) == 100
    with pytest.raises(ValueError, match=r"share of units in \(0, 1\]"):
        MemoryOptions(budget=0)


def test_shots_that_look_alike_fold_only_when_they_also_say_the_same() -> None:
    look = unit_vectors(1, seed=10)[0]
    words = unit_vectors(2, dim=16, seed=11)  # two different slides' text
    stream = units(np.stack([look] * 4))
    stream[0].text_vector, stream[1].text_vector = words[0], words[1]  # alike, different words: two slots
    stream[2].text_vector = words[0]  # the first slide again: folds
    # stream[3] has no words at all: it is not the same as a shot with some
    gate = MemoryGate(MemoryOptions(), random_weights())
    actions = [(d.action, d.slot) for d in gate.gate(stream, budget=10)]
    assert [a for a, _ in actions] == ["write", "write", "fold", "write"]
    assert actions[2][1] == actions[0][1]


def test_a_merged_shot_slot_keeps_the_words_it_lacks() -> None:
    """Merging joins two shots that look alike under one exemplar; the words the kept exemplar lacks
    (another slide's text, another label) stay with the slot, so it is still found by them."""
    base = unit_vectors(4, seed=3)
    near = base[0] + 0.15 * unit_vectors(1, seed=4)[0]
    near /= np.linalg.norm(near)
    words = unit_vectors(3, dim=16, seed=12)
    stream = units(np.concatenate([base, near[None]]))
    for k, u in enumerate(stream):
        u.text_row = 100 + k
    stream[0].text_vector = words[0]
    stream[4].text_vector = words[1]  # looks like the first, says something else
    gate = MemoryGate(MemoryOptions(fold_shot=0.999), random_weights())
    gate.weights.head_bias = 50.0  # every slot very salient: merging costs less than evicting
    list(gate.gate(stream, budget=4))
    (event,) = gate.events
    kept = gate.slots[event.into]  # type: ignore[index]
    assert kept.exemplar == 1 and set(kept.words) == {104}
    assert np.array_equal(kept.words[104], words[1])

    # the same words, or none, add nothing
    for other in (words[0], None):
        stream = units(np.concatenate([base, near[None]]))
        for k, u in enumerate(stream):
            u.text_row = 100 + k
        stream[0].text_vector, stream[4].text_vector = words[0], other
        gate = MemoryGate(MemoryOptions(fold_shot=0.999, fold_text=0.95), random_weights())
        gate.weights.head_bias = 50.0
        list(gate.gate(stream, budget=4))
        (event,) = gate.events
        assert event.action == "merge" and gate.slots[event.into].words == {}  # type: ignore[index]


def test_a_cue_a_live_window_holds_goes_first_and_comes_back_when_the_window_goes() -> None:
    """A window is its cues' words: while a live window slot holds a cue, the cue is the first to go,
    the least salient of those first, however salient a cue no window holds is; when the window
    goes, its cues are no longer held."""
    v = unit_vectors(5, dim=64, seed=10)
    stream = [
        GateUnit(1, "window", "a", 0.0, 6.0, v[0]),
        GateUnit(2, "cue", "a", 0.0, 2.0, v[1]),
        GateUnit(3, "cue", "a", 2.0, 4.0, v[2]),
        GateUnit(4, "cue", "a", 10.0, 12.0, v[3]),  # after the window: nothing holds it
    ]
    gate = MemoryGate(MemoryOptions(), random_weights())
    saliences = iter([0.9, 0.6, 0.5, 0.1, 0.9])
    gate.weights.salience = lambda x, h: next(saliences)  # type: ignore[method-assign]
    decisions = list(gate.gate(stream, budget=3))
    slot = {d.unit.key: d.slot for d in decisions}
    (event,) = gate.events
    assert (event.action, event.slot, event.into) == ("nest", slot[3], slot[1])
    assert event.similarity == pytest.approx(float(v[2] @ v[0]), abs=1e-5)
    assert gate.nested == {slot[2]: slot[1]}  # the other cue the window holds; not the lone one
    assert slot[4] in gate.slots  # kept, though the least salient

    gate._drop(slot[1])  # the window gone, nothing holds its cues: they go as any slot would
    assert gate.nested == {}
    holder = GateUnit(5, "window", "a", 0.0, 6.0, v[4])
    list(gate.gate([holder], budget=3))
    assert list(gate.nested) == [slot[2]]


def test_a_cue_said_again_elsewhere_is_held_only_where_every_place_of_it_is() -> None:
    line, other, window = unit_vectors(3, dim=64, seed=11)
    gate = MemoryGate(MemoryOptions(fold_text=0.99), random_weights())
    first = [GateUnit(1, "window", "a", 0.0, 6.0, window), GateUnit(2, "cue", "a", 0.0, 2.0, line)]
    list(gate.gate(first, budget=10))
    assert len(gate.nested) == 1
    again = [GateUnit(3, "cue", "b", 30.0, 32.0, line), GateUnit(4, "cue", "b", 40.0, 42.0, other)]
    decisions = list(gate.gate(again, budget=10))
    assert decisions[0].action == "fold"
    assert gate.nested == {}  # said again in b, where no window holds it
    list(gate.gate([GateUnit(5, "window", "b", 29.0, 33.0, other)], budget=10))
    assert list(gate.nested) == [decisions[0].slot]


def test_a_restored_cue_keeps_its_own_place_when_it_folds_another() -> None:
    """A slot restored from the catalog stands at least where its exemplar is: folding a place a
    window holds does not make it held while its own place is not."""
    from memory.gate import Slot

    line, window = unit_vectors(2, dim=64, seed=12)
    gate = MemoryGate(MemoryOptions(fold_text=0.99), random_weights())
    gate.restore(Slot(7, "cue", 70, "a", 0.0, 2.0, 0.5), line)  # no window of a is kept
    assert gate.slots[7].occurrences == [("a", 0.0, 2.0, 70)] and gate.nested == {}
    again = [GateUnit(1, "window", "b", 0.0, 6.0, window), GateUnit(2, "cue", "b", 1.0, 3.0, line)]
    assert [d.action for d in gate.gate(again, budget=10)] == ["write", "fold"]
    assert gate.nested == {}
