"""Specification of pair increments, decayed bounded rows and relatedness scores."""

from __future__ import annotations

import math
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.association import log_likelihood_ratio
from models.cooccurrence import (
    CoocConfig,
    DecayedValue,
    Increment,
    Row,
    Scoring,
    blend_related,
    pair_increments,
    score_row,
)
from models.events import Event, EventType
from models.popularity import DecayedCounter
from models.profile import DEFAULT_EVENT_WEIGHTS, RecentItem

VIEW, CLICK, BUY = EventType.VIEW, EventType.CLICK, EventType.BUY
W = DEFAULT_EVENT_WEIGHTS


def recent(*items: tuple[str, float] | tuple[str, float, EventType]) -> list[RecentItem]:
    """Recent items, oldest first, as the profile keeps them."""
    return [RecentItem(i[0], "c", i[1], i[2] if len(i) > 2 else VIEW) for i in items]


def event(item: str, ts: float, kind: EventType = VIEW) -> Event:
    return Event(f"e-{item}-{ts}", kind, "u1", item, ts)


def neighbours_of(increments: list[Increment], item: str) -> dict[str, float]:
    return {k: w for inc in increments if inc.item_id == item for k, w in inc.neighbours}


# -- pair increments --------------------------------------------------------------------


def test_a_first_event_only_counts_its_item() -> None:
    incs = pair_increments([], event("a", 10.0, BUY), CoocConfig())
    assert incs == [Increment("a", 10.0, W[BUY], ())]


def test_pairs_only_reach_back_window_items_items() -> None:
    cfg = CoocConfig(window_items=2, pair_decay=1.0)
    history = recent(("a", 1.0), ("b", 2.0), ("c", 3.0))
    incs = pair_increments(history, event("d", 4.0), cfg)
    assert set(neighbours_of(incs, "d")) == {"b", "c"}


def test_pairs_only_reach_back_window_s_seconds() -> None:
    cfg = CoocConfig(window_s=60.0)
    history = recent(("old", 0.0), ("edge", 40.0), ("near", 90.0))
    incs = pair_increments(history, event("x", 100.0), cfg)
    assert set(neighbours_of(incs, "x")) == {"edge", "near"}


def test_a_late_event_pairs_with_items_on_both_sides_of_it_in_time() -> None:
    cfg = CoocConfig(window_s=60.0)
    history = recent(("before", 950.0), ("after", 1040.0), ("much_later", 1100.0))
    incs = pair_increments(history, event("late", 1000.0), cfg)
    assert set(neighbours_of(incs, "late")) == {"before", "after"}


def test_a_pair_weighs_the_weaker_interaction_halved_per_item_in_between() -> None:
    cfg = CoocConfig(pair_decay=0.5)
    history = recent(("bought", 1.0, BUY), ("clicked", 2.0, CLICK), ("viewed", 3.0, VIEW))
    incs = pair_increments(history, event("new", 4.0, CLICK), cfg)
    assert incs[0].occurrences == W[CLICK]
    assert neighbours_of(incs, "new") == {
        "viewed": min(W[CLICK], W[VIEW]),
        "clicked": min(W[CLICK], W[CLICK]) * 0.5,
        "bought": min(W[CLICK], W[BUY]) * 0.25,
    }


def test_every_pair_is_sent_to_both_rows_with_the_same_weight() -> None:
    history = recent(("a", 1.0), ("b", 2.0, BUY), ("c", 3.0))
    incs = pair_increments(history, event("x", 4.0, BUY), CoocConfig())
    own, *reverse = incs
    assert own.item_id == "x"
    assert {inc.item_id for inc in reverse} == {k for k, _ in own.neighbours}
    for inc in reverse:
        assert inc.occurrences == 0.0
        assert inc.neighbours == ((own.item_id, dict(own.neighbours)[inc.item_id]),)


@settings(max_examples=200, deadline=None)
@given(
    history=st.lists(
        st.tuples(
            st.sampled_from("abcdefgh"),
            st.floats(min_value=0.0, max_value=7200.0),
            st.sampled_from(list(EventType)),
        ),
        unique_by=lambda r: r[0],  # the profile keeps one entry per item
        max_size=10,
    ),
    item=st.sampled_from("abcdefghxyz"),
    ts=st.floats(min_value=0.0, max_value=7200.0),
    kind=st.sampled_from(list(EventType)),
)
def test_increments_are_symmetric_and_never_outweigh_the_interaction(
    history: list[tuple[str, float, EventType]], item: str, ts: float, kind: EventType
) -> None:
    ordered = recent(*sorted(history, key=lambda r: r[1]))
    incs = pair_increments(ordered, event(item, ts, kind), CoocConfig())
    if not incs:
        return
    own, *reverse = incs
    assert own.item_id == item
    assert 0 < own.occurrences <= W[kind]
    assert [inc.item_id for inc in reverse] == [other for other, _ in own.neighbours]
    for inc, (other, weight) in zip(reverse, own.neighbours, strict=True):
        assert other != item
        assert inc.neighbours == ((item, weight),)
        assert inc.occurrences == 0.0
        assert 0 < weight <= own.occurrences


def test_revisiting_an_item_in_the_window_adds_nothing() -> None:
    history = recent(("a", 1.0), ("b", 2.0))
    assert pair_increments(history, event("a", 3.0), CoocConfig()) == []


def test_a_stronger_revisit_adds_only_the_difference() -> None:
    cfg = CoocConfig(pair_decay=1.0)
    history = recent(("a", 1.0, VIEW), ("b", 2.0, CLICK), ("c", 3.0, VIEW))
    incs = pair_increments(history, event("a", 4.0, BUY), cfg)
    assert incs[0].occurrences == W[BUY] - W[VIEW]
    # With the view, a-b weighed min(view, click) = view; with the buy, min(buy, click).
    # a-c weighed a view either way, so it adds nothing.
    assert neighbours_of(incs, "a") == {"b": W[CLICK] - W[VIEW]}


def test_an_increment_survives_its_wire_form() -> None:
    inc = Increment("i1", 12.5, 3.0, (("i2", 1.0), ("i3", 0.25)))
    assert Increment.from_bytes(inc.to_bytes()) == inc


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="window"):
        CoocConfig(window_items=0)
    with pytest.raises(ValueError, match="pair_decay"):
        CoocConfig(pair_decay=0.0)
    with pytest.raises(ValueError, match="event_weights"):
        CoocConfig(event_weights={VIEW: 1.0})
    with pytest.raises(ValueError, match="capacity"):
        CoocConfig(max_neighbours=0)


# -- rows -------------------------------------------------------------------------------


def test_a_row_counts_and_pairs_decay_with_the_half_life() -> None:
    cfg = CoocConfig(half_life_s=100.0)
    row = Row()
    row.apply(Increment("a", 0.0, 4.0, (("b", 2.0),)), cfg)
    assert row.at(100.0, cfg.half_life_s) == pytest.approx(2.0)
    assert row.neighbours.value("b", 200.0, cfg.half_life_s) == pytest.approx(0.5)


def test_a_late_increment_lands_with_its_decayed_weight() -> None:
    cfg = CoocConfig(half_life_s=100.0)
    row = Row()
    row.apply(Increment("a", 1000.0, 1.0, (("b", 1.0),)), cfg)
    row.apply(Increment("a", 900.0, 1.0, (("b", 1.0),)), cfg)
    assert row.at(1000.0, cfg.half_life_s) == pytest.approx(1.5)
    assert row.neighbours.value("b", 1000.0, cfg.half_life_s) == pytest.approx(1.5)


@settings(max_examples=40, deadline=None)
@given(
    max_neighbours=st.integers(min_value=1, max_value=10),
    stream=st.lists(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=50), st.floats(min_value=0.01, max_value=5.0)
            ),
            max_size=6,
        ),
        max_size=80,
    ),
)
def test_a_row_never_holds_more_than_max_neighbours(
    max_neighbours: int, stream: list[list[tuple[int, float]]]
) -> None:
    cfg = CoocConfig(max_neighbours=max_neighbours)
    row = Row()
    for ts, pairs in enumerate(stream):
        row.apply(Increment("x", float(ts), 1.0, tuple((f"n{k}", w) for k, w in pairs)), cfg)
        assert len(row.neighbours) <= max_neighbours


def test_a_row_survives_a_serialisation_round_trip() -> None:
    cfg = CoocConfig(max_neighbours=3)
    row = Row()
    for ts, other in enumerate(["b", "c", "b", "d", "e"]):
        row.apply(Increment("a", float(ts), 1.0, ((other, 1.0),)), cfg)
    copy = Row.from_bytes(row.to_bytes())
    assert (copy.value, copy.ts) == (row.value, row.ts)
    assert copy.neighbours.weights == row.neighbours.weights
    assert (copy.neighbours.landmark, copy.neighbours.mass) == (
        row.neighbours.landmark,
        row.neighbours.mass,
    )
    assert score_row(copy, 9.0, {}, 10.0, cfg) == score_row(row, 9.0, {}, 10.0, cfg)


def test_an_empty_row_round_trips() -> None:
    copy = Row.from_bytes(Row().to_bytes())
    assert copy.ts == -math.inf
    assert len(copy.neighbours) == 0


def row_state(row: Row) -> tuple[object, ...]:
    """Everything a row holds, floats bit for bit (a NaN landmark compares equal)."""
    counter = row.neighbours

    def bits(x: float) -> bytes:
        return struct.pack("<d", x)

    weights = {k: bits(w) for k, w in counter.weights.items()}
    return bits(row.value), bits(row.ts), row.positions, bits(counter.landmark), bits(counter.mass), weights


finite = st.floats(allow_nan=False, allow_infinity=False)
rows = st.builds(
    lambda value, ts, positions, landmark, mass, weights: Row(
        value, ts, DecayedCounter(landmark, mass, weights), positions
    ),
    value=finite,
    ts=st.just(-math.inf) | finite,
    positions=st.dictionaries(st.text(), st.integers(-1, 2**62), max_size=12),
    landmark=st.just(math.nan) | finite,
    mass=finite,
    weights=st.dictionaries(st.text(), st.floats(min_value=0, allow_infinity=False), max_size=60),
)


@given(rows)
def test_a_row_reads_back_exactly(row: Row) -> None:
    """Exact: the pruning compares weights, so a rounded weight could change a row's
    neighbours and with them the related lists."""
    assert row_state(Row.from_bytes(row.to_bytes())) == row_state(row)


@given(rows)
def test_older_row_versions_still_decode(row: Row) -> None:
    ts = row.ts if math.isfinite(row.ts) else None
    counter = row.neighbours.to_list()
    version_2 = orjson.dumps([2, row.value, ts, row.positions, *counter])
    version_1 = orjson.dumps([1, row.value, ts, *counter])
    assert row_state(Row.from_bytes(version_2)) == row_state(row)
    without_positions = row_state(Row.from_bytes(version_1))
    assert without_positions == row_state(Row(row.value, row.ts, row.neighbours))


def test_a_row_costs_about_nine_bytes_plus_its_id_per_neighbour() -> None:
    cfg = CoocConfig()
    row = Row()
    for ts in range(40):
        others = tuple((f"i{1000 + 7 * ts + k}", 1.0 + k) for k in range(3))
        row.apply(Increment("x", 1_796_317_852.129 + ts, 1.0, others), cfg)
        row.mark(f"v{ts % 4}", 10_000 + ts)
    assert len(row.neighbours) > 40, "a row near its bound"
    ids = sum(len(k) for k in row.neighbours.weights)
    assert len(row.to_bytes()) <= ids + 9 * len(row.neighbours) + 4 * 6 + 40


def test_decayed_value_folds_late_additions_without_moving_its_clock() -> None:
    total = DecayedValue()
    total.add(1.0, 10.0, 10.0)
    total.add(1.0, 0.0, 10.0)
    assert total.ts == 10.0
    assert total.at(10.0, 10.0) == pytest.approx(1.5)


# -- scoring ----------------------------------------------------------------------------


def test_llr_is_zero_for_independent_items_and_grows_with_evidence() -> None:
    # P(B | A) = 10/100 = P(B) = 100/1000: no association.
    assert log_likelihood_ratio(10.0, 100.0, 100.0, 1000.0) == pytest.approx(0.0, abs=1e-9)
    weak = log_likelihood_ratio(2.0, 10.0, 10.0, 1000.0)
    strong = log_likelihood_ratio(8.0, 10.0, 10.0, 1000.0)
    assert 0 < weak < strong


def test_llr_ignores_negative_association_and_is_symmetric() -> None:
    # B is rarer with A (1/100) than without it (99/900).
    assert log_likelihood_ratio(1.0, 100.0, 100.0, 1000.0) == 0.0
    assert log_likelihood_ratio(3.0, 10.0, 40.0, 500.0) == pytest.approx(
        log_likelihood_ratio(3.0, 40.0, 10.0, 500.0)
    )


def test_scores_prefer_a_specific_neighbour_to_a_merely_popular_one() -> None:
    """Both co-occur 5 times with A; "hit" occurs 500 times anyway, "niche" 6 times."""
    for scoring in Scoring:
        cfg = CoocConfig(scoring=scoring)
        row = Row()
        row.apply(Increment("a", 0.0, 10.0, (("hit", 5.0), ("niche", 5.0))), cfg)
        ranked = score_row(row, 0.0, {"hit": 500.0, "niche": 6.0}, 10_000.0, cfg)
        assert [item for item, _ in ranked] == ["niche", "hit"], scoring


def test_score_row_keeps_the_top_k() -> None:
    cfg = CoocConfig(top_k=2, scoring=Scoring.JACCARD)
    row = Row()
    row.apply(Increment("a", 0.0, 10.0, (("b", 3.0), ("c", 2.0), ("d", 1.0))), cfg)
    ranked = score_row(row, 0.0, {"b": 3.0, "c": 2.0, "d": 1.0}, 100.0, cfg)
    assert [item for item, _ in ranked] == ["b", "c"]


def test_a_neighbour_without_a_known_count_occurs_only_where_it_co_occurs() -> None:
    cfg = CoocConfig(scoring=Scoring.JACCARD)
    row = Row()
    row.apply(Increment("a", 0.0, 4.0, (("b", 2.0),)), cfg)
    [(item, score)] = score_row(row, 0.0, {}, 100.0, cfg)
    assert item == "b"
    assert score == pytest.approx(2.0 / 4.0)


def test_blend_scales_each_list_by_its_best_score_and_skips_exclusions() -> None:
    popular_item_list = [("p1", 1000.0), ("shared", 500.0)]
    niche_item_list = [("n1", 2.0), ("shared", 1.0)]
    blended = blend_related([(popular_item_list, 1.0), (niche_item_list, 1.0)], 3, {"p1"})
    # shared: 0.5 + 0.5 = 1.0 = n1's 1.0, ties broken by id.
    assert blended == ["n1", "shared"]


def test_blend_weights_lists_and_ignores_empty_ones() -> None:
    latest = [("x", 1.0)]
    older = [("y", 1.0)]
    assert blend_related([([], 1.0), (older, 0.5), (latest, 1.0)], 5) == ["x", "y"]
