"""The synthetic generator plants the structure the pipeline must find, and dirt it must reject."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter, defaultdict
from typing import Any

import pytest

from load.generator import (
    EXPECTED_REJECTION,
    GeneratedEvent,
    GeneratorConfig,
    MalformedKind,
    SyntheticWorld,
    generate_events,
)
from models.events import Event, EventType, Rejection, decode_event

STREAM_LENGTH = 25_000
#: For properties that do not need a shop-sized world (building one costs ~0.1 s).
SMALL = GeneratorConfig(users=300, items=200, concurrent_sessions=30)


def small(**changes: Any) -> GeneratorConfig:
    return dataclasses.replace(SMALL, **changes)


def take(config: GeneratorConfig, n: int = STREAM_LENGTH) -> list[GeneratedEvent]:
    return list(itertools.islice(generate_events(config), n))


def topic_type(record: GeneratedEvent) -> EventType:
    return EventType(record.topic.removeprefix("events."))


def decode(record: GeneratedEvent, now: float) -> Event | Rejection:
    return decode_event(record.value, now=now, expected_type=topic_type(record))


def valid_events(records: list[GeneratedEvent]) -> list[Event]:
    events = []
    for record in records:
        if record.malformed_reason is None:
            event = decode(record, now=math.inf)
            assert isinstance(event, Event), event
            events.append(event)
    return events


def at_least(expected: float, n: int) -> float:
    """Lower edge of a 5-sigma binomial interval: the test fails on a wrong rate, not on luck."""
    return expected - 5 * math.sqrt(expected * (1 - expected) / n)


def at_most(expected: float, n: int) -> float:
    return expected + 5 * math.sqrt(expected * (1 - expected) / n)


@pytest.fixture(scope="module")
def config() -> GeneratorConfig:
    return GeneratorConfig(seed=11)


@pytest.fixture(scope="module")
def records(config: GeneratorConfig) -> list[GeneratedEvent]:
    return take(config)


@pytest.fixture(scope="module")
def events(records: list[GeneratedEvent]) -> list[Event]:
    return valid_events(records)


@pytest.fixture(scope="module")
def world(config: GeneratorConfig) -> SyntheticWorld:
    return SyntheticWorld.build(config)


def test_the_same_configuration_yields_the_same_bytes() -> None:
    config = small(seed=8, malformed_share=0.1)
    assert take(config, 3000) == take(config, 3000)


def test_another_seed_yields_another_stream() -> None:
    assert take(small(seed=1), 200) != take(small(seed=2), 200)


def test_the_valid_stream_does_not_depend_on_the_malformed_share() -> None:
    clean = take(small(seed=3, malformed_share=0.0), 5000)
    dirty = take(small(seed=3, malformed_share=0.3), 10_000)
    assert [r for r in dirty if r.malformed_reason is None][:5000] == clean


def test_every_valid_message_decodes_on_its_topic_keyed_by_its_user(
    records: list[GeneratedEvent], config: GeneratorConfig
) -> None:
    latest = config.start_ts
    for record in records:
        if record.malformed_reason is not None:
            continue
        event = decode(record, now=latest)
        assert isinstance(event, Event), (record, event)
        assert record.topic == f"events.{event.type.value}"
        assert record.key == event.user_id.encode()
        assert event.category is not None and event.price is not None
        assert event.session_id is not None and event.tz is not None
        latest = max(latest, event.ts)


def test_every_malformed_message_is_rejected_for_its_intended_reason(
    records: list[GeneratedEvent], events: list[Event]
) -> None:
    # The decoder's clock is the stream's latest event time: valid events are never
    # "future", so only the deliberate far-future ones can be rejected as such.
    now = max(event.ts for event in events)
    for record in records:
        if record.malformed_reason is None:
            continue
        result = decode(record, now=now)
        assert isinstance(result, Rejection), record
        assert result.reason is EXPECTED_REJECTION[MalformedKind(record.malformed_reason)]


def test_malformed_messages_make_up_the_configured_share_and_cover_every_kind(
    records: list[GeneratedEvent], config: GeneratorConfig
) -> None:
    kinds = Counter(r.malformed_reason for r in records if r.malformed_reason is not None)
    share = sum(kinds.values()) / len(records)
    n = len(records)
    assert at_least(config.malformed_share, n) <= share <= at_most(config.malformed_share, n)
    assert set(kinds) == {kind.value for kind in MalformedKind}


def test_only_the_configured_malformed_kinds_are_made() -> None:
    config = small(seed=5, malformed_share=0.2, malformed_kinds=(MalformedKind.OVERSIZED,))
    reasons = {r.malformed_reason for r in take(config, 2000)}
    assert reasons == {None, MalformedKind.OVERSIZED.value}


def test_clicks_and_buys_follow_the_configured_funnel(
    events: list[Event], config: GeneratorConfig
) -> None:
    counts = Counter(event.type for event in events)
    views, clicks = counts[EventType.VIEW], counts[EventType.CLICK]
    click_rate, buy_rate = clicks / views, counts[EventType.BUY] / clicks
    p_click, p_buy = config.click_probability, config.buy_probability
    assert at_least(p_click, views) <= click_rate <= at_most(p_click, views)
    assert at_least(p_buy, clicks) <= buy_rate <= at_most(p_buy, clicks)


def test_a_click_follows_a_view_and_a_buy_follows_a_click_of_the_same_item(
    events: list[Event],
) -> None:
    last_in_session: dict[str | None, Event] = {}
    for event in events:
        previous = last_in_session.get(event.session_id)
        if event.type is EventType.CLICK:
            assert previous is not None and previous.type is EventType.VIEW
            assert previous.item_id == event.item_id
        if event.type is EventType.BUY:
            assert previous is not None and previous.type is EventType.CLICK
            assert previous.item_id == event.item_id
            assert event.quantity is not None and event.quantity >= 1
        last_in_session[event.session_id] = event


def test_a_session_belongs_to_one_user(events: list[Event]) -> None:
    users_of_session: dict[str | None, set[str]] = defaultdict(set)
    for event in events:
        users_of_session[event.session_id].add(event.user_id)
    assert all(len(users) == 1 for users in users_of_session.values())
    assert len(users_of_session) > 100, "many sessions interleave"


def test_event_time_advances_at_the_configured_rate(
    events: list[Event], config: GeneratorConfig
) -> None:
    times = [event.ts for event in events]
    assert times == sorted(times)
    assert times[0] >= config.start_ts
    # The sum of n exponential gaps has relative spread 1/sqrt(n): 5% is > 10 sigma here.
    expected_span = len(events) / config.events_per_second
    assert times[-1] - config.start_ts == pytest.approx(expected_span, rel=0.05)


def test_event_ids_are_unique(events: list[Event]) -> None:
    assert len({event.event_id for event in events}) == len(events)


def test_runs_started_at_different_times_have_different_event_ids() -> None:
    ids = set()
    for start in (1_700_000_000.0, 1_700_003_600.0):
        event = decode(take(small(start_ts=start), 1)[0], now=math.inf)
        assert isinstance(event, Event)
        ids.add(event.event_id)
    assert len(ids) == 2


def top_decile_share(config: GeneratorConfig, world: SyntheticWorld) -> float:
    """Share of views that go to the 10% most viewed items of each category."""
    views = Counter(
        e.item_id for e in valid_events(take(config, 10_000)) if e.type is EventType.VIEW
    )
    top = 0
    for items in world.category_items.values():
        ranked = sorted((views[item] for item in items), reverse=True)
        top += sum(ranked[: max(1, len(ranked) // 10)])
    return top / sum(views.values())


def test_item_popularity_is_skewed_like_zipf_within_categories() -> None:
    zipf = GeneratorConfig(seed=2, users=1000, related_view_share=0.0)
    near_uniform = GeneratorConfig(seed=2, users=1000, related_view_share=0.0, zipf_exponent=0.01)
    skewed = top_decile_share(zipf, SyntheticWorld.build(zipf))
    flat = top_decile_share(near_uniform, SyntheticWorld.build(near_uniform))
    # Zipf(1.1) over ~100 items puts about two thirds of the views on the top tenth;
    # an even spread gives a tenth plus sampling noise.
    assert skewed > 0.5
    assert flat < 0.25


def test_users_view_mostly_their_interest_types_core_categories(
    events: list[Event], world: SyntheticWorld, config: GeneratorConfig
) -> None:
    type_of = {user.user_id: user.interest_type for user in world.users}
    views_by_type: dict[int, Counter[str]] = defaultdict(Counter)
    for event in events:
        if event.type is EventType.VIEW and event.category is not None:
            views_by_type[type_of[event.user_id]][event.category] += 1
    core = config.core_categories_per_type
    top_categories = {}
    for interest_type, views in views_by_type.items():
        top = [category for category, _ in views.most_common(core)]
        top_categories[interest_type] = set(top)
        share = sum(views[c] for c in top) / sum(views.values())
        # Related views and the non-core tail dilute the core share, but it stays dominant
        # where an even spread would give core / categories = 15%.
        assert share > 0.5, (interest_type, share)
    assert len(views_by_type) == config.interest_types
    # Segments differ: no two types favour the very same categories.
    distinct = {frozenset(top) for top in top_categories.values()}
    assert len(distinct) == config.interest_types


def related_pair_share(config: GeneratorConfig) -> float:
    """Share of consecutive views in a session whose second item is related to the first."""
    world = SyntheticWorld.build(config)
    last_view: dict[str | None, str] = {}
    pairs = related = 0
    for event in valid_events(take(config, 10_000)):
        if event.type is not EventType.VIEW:
            continue
        previous = last_view.get(event.session_id)
        if previous is not None:
            pairs += 1
            related += event.item_id in world.related[previous]
        last_view[event.session_id] = event.item_id
    return related / pairs


def test_items_are_viewed_together_with_their_related_items() -> None:
    with_related = related_pair_share(small(seed=4, related_view_share=0.5))
    without = related_pair_share(small(seed=4, related_view_share=0.0))
    # Half the views follow a related item; by chance, popular items meet anyway.
    assert with_related >= 0.45
    assert with_related - without > 0.3


def test_related_items_share_the_category_or_its_companion(world: SyntheticWorld) -> None:
    for item_id, related in world.related.items():
        category = world.items[item_id].category
        allowed = {category, world.companion[category]}
        assert item_id not in related
        assert all(world.items[other].category in allowed for other in related)


def test_every_user_has_a_normalised_interest_mix(world: SyntheticWorld) -> None:
    for user in world.users:
        assert sum(user.interests.values()) == pytest.approx(1.0)
        assert all(weight > 0 for weight in user.interests.values())


@pytest.mark.parametrize(
    "bad",
    [
        {"users": 1},
        {"items": 3},
        {"malformed_share": 0.6},
        {"click_probability": 1.5},
        {"events_per_second": 0.0},
        {"concurrent_sessions": 3000},
        {"malformed_kinds": ()},
        {"core_categories_per_type": 0},
        {"views_per_session": 0.5},
    ],
)
def test_nonsensical_configurations_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GeneratorConfig(**bad)  # type: ignore[arg-type]
