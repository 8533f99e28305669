"""Attribution of clicks and buys to pushes and holdout records: windows, scopes, exactly once."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from models.attribution import (
    AttributionConfig,
    Attributor,
    Exposure,
    Scope,
    Signal,
    UserAttribution,
)
from models.events import Event, EventType
from models.lift import Group

CONFIG = AttributionConfig(window_s=100.0, retention_s=50.0)


def exposure(decision_id: str = "d-1", group: Group = Group.TREATMENT, sent_at: float = 0.0) -> Exposure:
    return Exposure(decision_id, "u1", group, sent_at, ("a", "b"), ("toys",), "browse_interest", 3)


def event(n: int, kind: EventType, item: str, ts: float, category: str = "toys") -> Event:
    return Event(f"e{n}", kind, "u1", item, ts, category)


def credit_list(user: UserAttribution, events: list[Event], config: AttributionConfig = CONFIG) -> list[tuple[str, str, str]]:
    return [(a.exposure.decision_id, a.signal.value, a.scope.value)
            for e in events for a in user.observe(e, config)]


def credits(user: UserAttribution, events: list[Event], config: AttributionConfig = CONFIG) -> set[tuple[str, str, str]]:
    return set(credit_list(user, events, config))


def test_a_buy_of_a_pushed_item_within_the_window_is_credited_to_the_push() -> None:
    user = UserAttribution()
    assert user.expose(exposure(), 0.0, CONFIG)
    assert credits(user, [event(1, EventType.BUY, "a", 100.0)]) == {
        ("d-1", "buy", "item"), ("d-1", "buy", "category")}


def test_events_at_the_send_time_or_after_the_window_are_not_credited() -> None:
    user = UserAttribution()
    user.expose(exposure(), 0.0, CONFIG)
    assert credits(user, [event(1, EventType.BUY, "a", 0.0), event(2, EventType.BUY, "a", 100.5)]) == set()


def test_a_buy_in_a_pushed_category_is_credited_in_the_category_scope_only() -> None:
    user = UserAttribution()
    user.expose(exposure(), 0.0, CONFIG)
    assert credits(user, [event(1, EventType.BUY, "z", 10.0)]) == {("d-1", "buy", "category")}
    assert credits(user, [event(2, EventType.BUY, "z", 11.0, "books")]) == set()
    no_categories = AttributionConfig(window_s=100.0, categories=False)
    other = UserAttribution()
    other.expose(exposure(), 0.0, no_categories)
    assert credits(other, [event(3, EventType.BUY, "z", 10.0)], no_categories) == set()


def test_clicks_and_buys_are_credited_separately_and_views_only_as_touches() -> None:
    config = AttributionConfig(window_s=100.0, signals=frozenset(Signal))
    user = UserAttribution()
    user.expose(exposure(), 0.0, config)
    got = credits(user, [event(1, EventType.VIEW, "a", 1.0), event(2, EventType.CLICK, "b", 2.0)], config)
    assert {(s, c) for _, s, c in got} == {
        ("touch", "item"), ("touch", "category"), ("click", "item"), ("click", "category")}


def test_holdout_records_are_attributed_alike_in_the_control_group() -> None:
    attributor = Attributor(CONFIG)
    attributor.expose(exposure("d-c", Group.CONTROL), 0.0)
    (first, _) = attributor.observe(event(1, EventType.BUY, "a", 5.0))
    assert first.exposure.group is Group.CONTROL
    (closed,) = attributor.close(100.0)
    assert closed.exposure.group is Group.CONTROL and closed.earned(Signal.BUY)


def test_a_push_that_earned_nothing_closes_with_no_credit() -> None:
    attributor = Attributor(CONFIG)
    attributor.expose(exposure(), 0.0)
    assert attributor.close(99.0) == []
    (closed,) = attributor.close(100.0)
    assert closed.credited == frozenset() and not closed.earned(Signal.BUY, Scope.CATEGORY)


def test_a_replayed_exposure_is_ignored_while_remembered_and_refused_when_too_old() -> None:
    user = UserAttribution()
    assert user.expose(exposure(), 0.0, CONFIG)
    user.close(100.0, CONFIG)
    assert not user.expose(exposure(), 120.0, CONFIG)  # closed, still remembered
    user.close(151.0, CONFIG)
    assert user.closed == {}
    assert not user.expose(exposure(), 151.0, CONFIG)  # forgotten, but too old to credit once


def test_switched_off_nothing_is_exposed_or_credited() -> None:
    off = AttributionConfig(enabled=False)
    user = UserAttribution()
    assert not user.expose(exposure(), 0.0, off)
    assert user.observe(event(1, EventType.BUY, "a", 1.0), off) == []


kinds = st.sampled_from(list(EventType))
stream = st.lists(
    st.tuples(kinds, st.sampled_from(["a", "b", "c"]), st.sampled_from(["toys", "books"]),
              st.floats(0, 300, allow_nan=False)),
    max_size=20,
)


@given(stream, st.lists(st.integers(0, 19), max_size=20), st.integers(0, 20))
def test_replays_and_restarts_never_double_count(
    rows: list[tuple[EventType, str, str, float]], repeats: list[int], cut: int
) -> None:
    """Delivering events again, exposures again, or resuming from a saved state at any
    point gives exactly the credits of one clean pass."""
    config = AttributionConfig(window_s=100.0, signals=frozenset(Signal))
    events = [event(n, kind, item, ts, cat) for n, (kind, item, cat, ts) in enumerate(rows)]
    pushes = [exposure("d-1", sent_at=0.0), exposure("d-2", sent_at=50.0)]

    clean = UserAttribution()
    for push in pushes:
        clean.expose(push, 0.0, config)
    expected = credits(clean, events, config)

    noisy = UserAttribution()
    for push in pushes + pushes:
        noisy.expose(push, 0.0, config)
    delivered = list(events) + [events[i] for i in repeats if i < len(events)]
    got = credit_list(noisy, delivered[:cut], config)
    restored = UserAttribution.from_dict(orjson.loads(orjson.dumps(noisy.to_dict())))
    for push in pushes:
        restored.expose(push, 0.0, config)
    got += credit_list(restored, delivered + delivered, config)
    assert sorted(got) == sorted(expected)
