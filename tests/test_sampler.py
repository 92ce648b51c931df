from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samu_st.data.sampler import (
    DurationBatchSampler,
    SampleKey,
    language_temperature_weights,
    padding_fraction,
)
from samu_st.errors import ConfigError


def lognormal_durations(n: int = 1000, seed: int = 0) -> np.ndarray:
    """Short read-speech-like clips: lognormal around 1 s, clipped to 0.5-3 s."""
    return np.clip(np.random.default_rng(seed).lognormal(0.0, 0.4, n), 0.5, 3.0)


def ids(batches: list[list[SampleKey]]) -> list[int]:
    return [k.idx for b in batches for k in b]


def padded_seconds(d: np.ndarray, batch: list[SampleKey]) -> float:
    return len(batch) * max(d[k.idx] / k.speed for k in batch)


def test_every_utterance_once_per_epoch_single_rank() -> None:
    d = lognormal_durations()
    s = DurationBatchSampler(d, 60.0, seed=1)
    for epoch in range(2):
        s.set_epoch(epoch)
        seen = ids(list(s))
        assert sorted(seen) == list(range(len(d)))


@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_are_disjoint_and_equal_length(drop_last: bool) -> None:
    d = lognormal_durations()
    ws = 3
    samplers = [
        DurationBatchSampler(d, 60.0, seed=5, rank=r, world_size=ws, drop_last=drop_last)
        for r in range(ws)
    ]
    shares = [list(s) for s in samplers]
    global_batches = samplers[0].global_batches(0)
    assert len(global_batches) % ws != 0  # the remainder path is exercised
    assert len({len(b) for b in shares}) == 1
    assert len(samplers[0]) == len(shares[0]) == len(global_batches) // ws + (not drop_last)
    per_rank = [set(ids(b)) for b in shares]
    counts = Counter(i for b in shares for i in ids(b))
    if drop_last:
        assert not (
            per_rank[0] & per_rank[1] or per_rank[0] & per_rank[2] or per_rank[1] & per_rank[2]
        )
        dropped = ids(global_batches[len(global_batches) - len(global_batches) % ws :])
        assert sorted(list(counts) + dropped) == list(range(len(d)))
        assert max(counts.values()) == 1
    else:
        assert set(counts) == set(range(len(d)))  # all seen; the padding batches twice


def test_no_batch_exceeds_max_duration_with_speed_perturbation() -> None:
    d = lognormal_durations()
    s = DurationBatchSampler(d, 30.0, speed_factors=(0.9, 1.0, 1.1), max_batch_size=25)
    batches = list(s)
    assert max(padded_seconds(d, b) for b in batches) <= 30.0
    assert max(len(b) for b in batches) <= 25
    assert {k.speed for b in batches for k in b} == {0.9, 1.0, 1.1}
    assert sorted(ids(batches)) == list(range(len(d)))


def test_padding_is_small_and_far_below_random_batches() -> None:
    d = lognormal_durations()
    s = DurationBatchSampler(d, 60.0, seed=0)
    batches = [[k.idx for k in b] for b in s.global_batches(0)]
    bucketed = padding_fraction(d, batches)
    perm = np.random.default_rng(0).permutation(len(d))
    random = padding_fraction(d, np.array_split(perm, len(batches)))  # type: ignore[arg-type]
    assert bucketed <= 0.05
    assert random > 0.3
    # Speed perturbation is bucketed too: padding of the perturbed lengths stays small.
    sp = DurationBatchSampler(d, 60.0, speed_factors=(0.9, 1.0, 1.1))
    real = sum(d[k.idx] / k.speed for b in sp.global_batches(0) for k in b)
    padded = sum(padded_seconds(d, b) for b in sp.global_batches(0))
    assert 1 - real / padded <= 0.05


def test_padding_fraction_value() -> None:
    assert padding_fraction([1.0, 3.0, 2.0, 2.0], [[0, 1], [2, 3]]) == pytest.approx(1 - 8 / 10)


def test_state_dict_round_trip_mid_epoch() -> None:
    d = lognormal_durations()
    kw = dict(seed=3, speed_factors=(0.9, 1.0, 1.1), rank=1, world_size=2)
    s = DurationBatchSampler(d, 60.0, **kw)  # type: ignore[arg-type]
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4)
    it = iter(s)
    head = [next(it) for _ in range(3)]
    state = s.state_dict()
    assert state["epoch"] == 4 and state["batches_done"] == 3
    fresh = DurationBatchSampler(d, 60.0, **kw)  # type: ignore[arg-type]
    fresh.load_state_dict(state)
    fresh.set_epoch(4)  # what a training loop does on resume: must not rewind
    assert head + list(fresh) == full
    # After a full epoch the position moves to the next epoch's start.
    assert fresh.state_dict()["epoch"] == 5 and fresh.state_dict()["batches_done"] == 0


def test_state_dict_rejects_other_data_and_rescales_world_size() -> None:
    d = lognormal_durations()
    state = DurationBatchSampler(d, 60.0, world_size=2).state_dict(batches_done=3)
    with pytest.raises(ConfigError, match="num_utterances"):
        DurationBatchSampler(d[:-1], 60.0).load_state_dict(state)
    single = DurationBatchSampler(d, 60.0)
    single.load_state_dict(state)
    assert list(single) == single.global_batches(0)[6:]


def test_epochs_differ_and_seed_reproduces() -> None:
    d = lognormal_durations()
    a, b = DurationBatchSampler(d, 60.0, seed=7), DurationBatchSampler(d, 60.0, seed=7)
    e0, e1 = a.global_batches(0), a.global_batches(1)
    assert e0 == b.global_batches(0)
    assert e0 != e1
    assert e0 != DurationBatchSampler(d, 60.0, seed=8).global_batches(0)
    # With several pools the batch contents change between epochs, not only their order.
    small = DurationBatchSampler(d, 60.0, seed=7, pool_size=250)
    contents = [{frozenset(k.idx for k in bt) for bt in small.global_batches(e)} for e in (0, 1)]
    assert len(contents[0] & contents[1]) < len(contents[0]) // 2


def test_unshuffled_is_sorted_by_length() -> None:
    d = lognormal_durations(200)
    order = ids(list(DurationBatchSampler(d, 20.0, shuffle=False)))
    assert np.all(np.diff(d[order]) >= 0)


def test_too_long_utterance_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"shorter than 1 utterance"):
        DurationBatchSampler([1.0, 2.0, 12.0], 10.0)
    with pytest.raises(ConfigError, match="after speed perturbation"):
        DurationBatchSampler([1.0, 9.5], 10.0, speed_factors=(0.9, 1.0))


def test_language_temperature_weights() -> None:
    langs = ["fr"] * 90 + ["cy"] * 10
    natural = language_temperature_weights(langs, 1.0)
    np.testing.assert_allclose(natural, np.full(100, 0.01))
    w = language_temperature_weights(langs, 2.0)
    share_cy = w[90:].sum()
    assert share_cy == pytest.approx(0.1**0.5 / (0.1**0.5 + 0.9**0.5))  # 0.25
    assert language_temperature_weights(langs, 1e6)[90:].sum() == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(ConfigError):
        language_temperature_weights(langs, 0.0)


def test_weighted_sampler_oversamples_low_resource_language() -> None:
    langs = ["fr"] * 900 + ["cy"] * 100
    d = lognormal_durations()
    w = language_temperature_weights(langs, 5.0)
    s = DurationBatchSampler(d, 60.0, weights=w, num_samples=2000)
    drawn = ids(list(s))
    assert len(drawn) == 2000
    share_cy = sum(i >= 900 for i in drawn) / len(drawn)
    expected = 0.1**0.2 / (0.1**0.2 + 0.9**0.2)  # 0.39
    assert abs(share_cy - expected) < 0.04


@settings(max_examples=60, deadline=None)
@given(
    durs=st.lists(st.floats(0.1, 5.0), min_size=1, max_size=120),
    max_duration=st.floats(5.0, 40.0),
    world_size=st.integers(1, 4),
    max_batch_size=st.one_of(st.none(), st.integers(1, 10)),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_invariants_property(
    durs: list[float],
    max_duration: float,
    world_size: int,
    max_batch_size: int | None,
    drop_last: bool,
    seed: int,
) -> None:
    d = np.array(durs)
    samplers = [
        DurationBatchSampler(
            d,
            max_duration,
            max_batch_size=max_batch_size,
            seed=seed,
            rank=r,
            world_size=world_size,
            drop_last=drop_last,
            pool_size=16,
        )
        for r in range(world_size)
    ]
    shares = [list(s) for s in samplers]
    glob = samplers[0].global_batches(0)
    assert sorted(ids(glob)) == list(range(len(d)))  # a partition of the epoch
    assert len({len(s) for s in shares}) == 1
    for share in shares:
        for b in share:
            assert b and padded_seconds(d, b) <= max_duration + 1e-9
            assert max_batch_size is None or len(b) <= max_batch_size
    seen = Counter(i for share in shares for i in ids(share))
    if drop_last and len(glob) < world_size:  # nothing to drop: every rank gets a batch
        assert all(len(s) == 1 for s in shares) and set(seen) == set(range(len(d)))
    elif drop_last:
        assert max(seen.values(), default=1) == 1
        assert len(d) - len(seen) <= sum(len(b) for b in glob[len(glob) - len(glob) % world_size :])
    else:
        assert set(seen) == set(range(len(d)))


def test_fewer_batches_than_ranks_still_gives_every_rank_a_batch() -> None:
    # one 8 s batch of tiny clips on 2 ranks: drop_last used to drop it, leaving both ranks an
    # empty epoch ("the batch sampler yielded no batch") at the rehearsal's 300 s batches
    shares = [
        list(DurationBatchSampler([0.5] * 16, 300.0, rank=r, world_size=2, drop_last=True))
        for r in range(2)
    ]
    assert [len(s) for s in shares] == [1, 1] and sorted(shares[0][0]) == sorted(shares[1][0])
