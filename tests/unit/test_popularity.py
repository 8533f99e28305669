"""Specification of the decayed, bounded counters and of the popularity fallback."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.events import Event, EventType
from models.popularity import (
    REBASE_HALF_LIVES,
    Bound,
    DecayedCounter,
    Popularity,
    PopularityConfig,
)

HOUR = 3600.0


def view(item: str, ts: float, category: str | None = None, n: int = 0) -> Event:
    return Event(f"e{n}-{item}-{ts}", EventType.VIEW, "u1", item, ts, category)


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


# -- Popularity -------------------------------------------------------------------------


def test_top_ranks_by_decayed_weighted_popularity() -> None:
    pop = Popularity(PopularityConfig(half_life_s=HOUR))
    pop.learn_one(view("often", 0.0, n=1))
    pop.learn_one(view("often", 1.0, n=2))
    pop.learn_one(Event("b", EventType.BUY, "u2", "bought", 2.0))
    pop.learn_one(view("once", 3.0))
    assert [item for item, _ in pop.top(3)] == ["bought", "often", "once"]


def test_top_leaves_out_excluded_items() -> None:
    pop = Popularity()
    for n, item in enumerate(["a", "a", "b", "c"]):
        pop.learn_one(view(item, float(n), n=n))
    assert [item for item, _ in pop.top(2, exclude={"a"})] == ["c", "b"]


def test_a_category_list_is_topped_up_from_the_overall_list_unless_told_not_to() -> None:
    pop = Popularity()
    pop.learn_one(view("tea", 0.0, "drinks"))
    pop.learn_one(view("lamp", 1.0, "home", n=1))
    pop.learn_one(view("lamp", 2.0, "home", n=2))
    assert [item for item, _ in pop.top(2, category="drinks")] == ["tea", "lamp"]
    assert [item for item, _ in pop.top(2, category="drinks", fill=False)] == ["tea"]
    assert [item for item, _ in pop.top(2, category="unknown", fill=False)] == []


def test_segments_have_their_own_lists() -> None:
    pop = Popularity()
    pop.learn_one(view("a", 0.0), segment=1)
    pop.learn_one(view("b", 1.0), segment=2)
    pop.learn_one(view("b", 2.0, n=1), segment=2)
    assert [item for item, _ in pop.top(1, segment=1)] == ["a"]
    assert [item for item, _ in pop.top(1)] == ["b"]
    with pytest.raises(ValueError, match="not both"):
        pop.top(1, category="x", segment=1)


@settings(max_examples=25, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=60),  # item
            st.integers(min_value=0, max_value=9),  # category
            st.integers(min_value=0, max_value=5),  # segment
        ),
        max_size=250,
    )
)
def test_popularity_memory_stays_within_its_configured_bounds(
    events: list[tuple[int, int, int]],
) -> None:
    cfg = PopularityConfig(
        max_items=8,
        max_items_per_category=3,
        max_items_per_segment=4,
        max_categories=4,
        max_segments=2,
    )
    pop = Popularity(cfg)
    for n, (item, category, segment) in enumerate(events):
        pop.learn_one(view(f"i{item}", float(n), f"c{category}", n), segment=segment)
        assert len(pop.overall) <= cfg.max_items
        assert len(pop.categories.counters) <= cfg.max_categories
        assert len(pop.segments.counters) <= cfg.max_segments
        assert all(len(c) <= cfg.max_items_per_category for c in pop.categories.counters.values())
        assert all(len(c) <= cfg.max_items_per_segment for c in pop.segments.counters.values())


def test_popularity_survives_a_serialisation_round_trip() -> None:
    pop = Popularity()
    for n, item in enumerate(["a", "b", "b", "c"]):
        pop.learn_one(view(item, 100.0 * n, f"cat{n % 2}", n), segment=n % 3)
    copy = Popularity.from_bytes(pop.to_bytes())
    for kwargs in ({}, {"category": "cat1"}, {"segment": 2}):
        assert copy.top(5, **kwargs) == pop.top(5, **kwargs)
    pop.learn_one(view("c", 500.0, "cat0", 9))
    copy.learn_one(view("c", 500.0, "cat0", 9))
    assert copy.to_bytes() == pop.to_bytes()


def test_an_empty_popularity_recommends_nothing_and_round_trips() -> None:
    pop = Popularity()
    assert pop.top(3) == []
    assert Popularity.from_bytes(pop.to_bytes()).top(3) == []
    assert math.isnan(Popularity.from_bytes(pop.to_bytes()).landmark)
