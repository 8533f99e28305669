"""Specification of the decayed, bounded counters and of the served popularity."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.popularity import (
    REBASE_HALF_LIVES,
    Bound,
    DecayedCounter,
    ServedPopularity,
    popularity_score,
)

HOUR = 3600.0


# -- DecayedCounter ---------------------------------------------------------------------


def test_a_weight_halves_every_half_life() -> None:
    bound = Bound(capacity=10, half_life_s=HOUR)
    counter = DecayedCounter()
    counter.add("a", 8.0, 0.0, bound)
    assert counter.value("a", HOUR, HOUR) == pytest.approx(4.0)
    assert counter.value("a", 3 * HOUR, HOUR) == pytest.approx(1.0)


def test_a_late_addition_counts_with_the_weight_it_has_today() -> None:
    bound = Bound(capacity=10, half_life_s=HOUR)
    counter = DecayedCounter()
    counter.add("now", 1.0, 10 * HOUR, bound)
    counter.add("late", 1.0, 9 * HOUR, bound)
    assert counter.value("late", 10 * HOUR, HOUR) == pytest.approx(0.5)


def test_decay_never_reorders_keys_but_recency_beats_an_equal_older_count() -> None:
    bound = Bound(capacity=10, half_life_s=HOUR)
    counter = DecayedCounter()
    counter.add("old", 1.0, 0.0, bound)
    counter.add("new", 1.0, HOUR, bound)
    assert [key for key, _ in counter.top(2, 5 * HOUR, HOUR)] == ["new", "old"]


def test_rebasing_keeps_values_and_forgets_keys_that_decayed_to_nothing() -> None:
    bound = Bound(capacity=10, half_life_s=1.0)
    counter = DecayedCounter()
    counter.add("ancient", 1.0, 0.0, bound)
    counter.add("fresh", 1.0, 10.0, bound)
    later = REBASE_HALF_LIVES + 20.0
    counter.add("fresh", 1.0, later, bound)
    assert counter.landmark == later
    assert "ancient" not in counter.weights
    assert counter.value("fresh", later, 1.0) == pytest.approx(1.0 + 2.0 ** -(later - 10.0))


def test_a_full_counter_makes_room_by_dropping_its_weakest_keys() -> None:
    bound = Bound(capacity=4, half_life_s=1e9)
    counter = DecayedCounter()
    for key, weight in [("a", 10.0), ("b", 9.0), ("c", 1.0), ("d", 2.0)]:
        counter.add(key, weight, 0.0, bound)
    dropped = counter.add("e", 3.0, 0.0, bound)
    assert len(counter) <= bound.keep
    assert {"c", "d"} <= set(dropped)
    assert {"a", "b"} <= set(counter.weights)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=12),
    stream=st.lists(
        st.tuples(st.integers(min_value=0, max_value=40), st.floats(min_value=0.1, max_value=5.0)),
        max_size=300,
    ),
)
def test_misra_gries_bounds_hold_for_any_stream(
    capacity: int, stream: list[tuple[int, float]]
) -> None:
    """Never more than ``capacity`` keys; each stored weight is at most the error bound
    below the truth, never above it; and every key heavier than the bound is present."""
    bound = Bound(capacity=capacity, half_life_s=1e12)  # no decay within the test
    counter = DecayedCounter()
    truth: dict[str, float] = {}
    for key_number, weight in stream:
        key = f"k{key_number}"
        counter.add(key, weight, 0.0, bound)
        truth[key] = truth.get(key, 0.0) + weight
        assert len(counter) <= capacity
    error = counter.error_bound(0.0, bound)
    assert error == pytest.approx(sum(truth.values()) / (bound.keep + 1))
    for key, true_weight in truth.items():
        stored = counter.value(key, 0.0, bound.half_life_s)
        assert stored <= true_weight + 1e-9
        assert stored >= true_weight - error - 1e-9
        if true_weight > error + 1e-9:
            assert key in counter.weights


def test_bound_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Bound(capacity=0, half_life_s=1.0)
    with pytest.raises(ValueError, match="half_life_s"):
        Bound(capacity=1, half_life_s=0.0)


# -- the served popularity ------------------------------------------------------------


def test_a_count_seen_later_ranks_as_its_decayed_value_now() -> None:
    served = ServedPopularity(half_life_s=HOUR)
    served.learn("old", None, 3.0, 0.0)  # 1.5 an hour later
    served.learn("new", None, 2.0, HOUR)
    assert [item for item, _ in served.top(2)] == ["new", "old"]
    assert served.top(2)[0][1] == popularity_score(2.0, HOUR, HOUR)


def test_an_item_counts_in_the_category_it_was_seen_in_and_nothing_counts_zero() -> None:
    served = ServedPopularity(half_life_s=HOUR)
    served.learn("tea", "drinks", 1.0, 0.0)
    served.learn("lamp", None, 5.0, 0.0)
    served.learn("ghost", "drinks", 0.0, 0.0)
    assert [item for item, _ in served.top(5, "drinks")] == ["tea"]
    assert [item for item, _ in served.top(5)] == ["lamp", "tea"]
    assert served.top(5, "unknown") == []


def test_the_kept_lists_must_hold_something() -> None:
    with pytest.raises(ValueError, match="kept"):
        ServedPopularity(half_life_s=HOUR, kept=0)


@given(
    st.lists(
        st.tuples(
            st.sampled_from("abcdefgh"), st.sampled_from(["x", "y", None]), st.floats(0.1, 100.0)
        ),
        max_size=60,
    )
)
def test_served_popularity_keeps_exactly_the_best_counts(
    offers: list[tuple[str, str | None, float]],
) -> None:
    served = ServedPopularity(half_life_s=3600.0, kept=3, kept_per_category=3)
    best: dict[str, float] = {}
    #: An item stays in every category it was seen in, at its score then (as served).
    best_in: dict[str, dict[str, float]] = defaultdict(dict)
    for item, category, count in offers:
        # Counts only grow in a replay: make each offer the running maximum.
        score = max(math.log2(count), best.get(item, -math.inf))
        served.learn(item, category, 2**score, 0.0)
        best[item] = score
        if category:
            best_in[category][item] = score
    assert served.top(3) == ranked(best)[:3]
    for category in ("x", "y"):
        assert served.top(3, category) == ranked(best_in[category])[:3]


def ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
