"""The per-user record of recent decisions: bounded, replay-safe, each outcome counted once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.attribution import AttributionConfig, Scope, Signal
from models.decided import (
    KEEP_S,
    MAX_BYTES,
    MAX_DECISIONS,
    DecidedPush,
    DecisionLog,
    attribute,
)
from models.events import Event, EventType
from models.lift import Group
from models.outcomes import OutcomeKind
from models.policy import TriggerKind

NOW = 1_700_000_000.0
short_ids = st.text(min_size=1, max_size=24)

decisions = st.builds(
    DecidedPush,
    decision_id=st.integers(0, 30).map(lambda i: f"d-{i}"),
    ts=st.floats(NOW, NOW + 30 * 86400),
    items=st.lists(short_ids, min_size=1, max_size=3).map(tuple),
    categories=st.lists(short_ids, max_size=2).map(tuple),
    trigger=st.sampled_from(TriggerKind),
    segment=st.none() | st.integers(0, 50),
    group=st.sampled_from(Group),
    credited=st.frozensets(st.tuples(st.sampled_from([Signal.CLICK, Signal.BUY]), st.sampled_from(Scope))),
)


def push(decision_id: str, ts: float = NOW, items: tuple[str, ...] = ("sku-1",)) -> DecidedPush:
    return DecidedPush(decision_id, ts, items, ("phones",), TriggerKind.BROWSE_INTEREST, 2, Group.CONTROL)


def logged(entries: list[DecidedPush]) -> DecisionLog:
    log = DecisionLog()
    for entry in entries:
        log.record(entry)
    return log


@given(st.lists(decisions, max_size=20))
def test_a_log_round_trips_through_its_bytes(entries: list[DecidedPush]) -> None:
    log = logged(entries)
    assert DecisionLog.from_bytes(log.to_bytes()) == log


def test_no_stored_log_is_an_empty_log() -> None:
    assert DecisionLog.from_bytes(None).entries == []


def test_a_log_of_another_format_version_is_refused() -> None:
    with pytest.raises(ValueError, match="format 3"):
        DecisionLog.from_bytes(b"[3, []]")


@given(st.lists(decisions, max_size=20, unique_by=lambda e: e.decision_id))
@settings(max_examples=300)
def test_replaying_the_decisions_records_each_once(entries: list[DecidedPush]) -> None:
    once = logged(entries)
    replayed = logged(entries)
    for entry in entries:
        replayed.record(entry)
    assert [e.decision_id for e in replayed.entries] == [e.decision_id for e in once.entries]
    ids = [e.decision_id for e in once.entries]
    assert len(ids) == len(set(ids))
    for entry in list(once.entries):
        assert not once.record(entry)


@given(st.lists(decisions, min_size=1, max_size=30, unique_by=lambda e: e.decision_id))
@settings(max_examples=200)
def test_the_log_stays_bounded_and_keeps_the_newest_decision(entries: list[DecidedPush]) -> None:
    log = logged(entries)
    assert 1 <= len(log.entries) <= MAX_DECISIONS
    assert len(log.entries) == 1 or len(log.to_bytes()) <= MAX_BYTES
    times = [e.ts for e in log.entries]
    assert times == sorted(times)
    assert all(ts >= times[-1] - KEEP_S for ts in times)
    assert times[-1] == max(e.ts for e in entries)


def test_a_typical_user_keeps_the_most_recent_decisions_in_the_byte_budget() -> None:
    items = ("sku-100234", "sku-100987", "sku-2")
    log = logged([push(f"d-{i:020x}", NOW + i * 3600.25, items) for i in range(12)])
    kept = range(12 - MAX_DECISIONS, 12)
    assert [e.decision_id for e in log.entries] == [f"d-{i:020x}" for i in kept]
    assert len(log.to_bytes()) <= MAX_BYTES


def test_decisions_older_than_the_window_are_forgotten() -> None:
    log = logged([push("old", NOW), push("new", NOW + KEEP_S + 1)])
    assert [e.decision_id for e in log.entries] == ["new"]


@given(
    entries=st.lists(decisions, min_size=1, max_size=8),
    observed=st.lists(st.tuples(st.integers(0, 7), st.sampled_from(OutcomeKind)), max_size=30),
    stored=st.booleans(),
)
def test_each_outcome_of_a_decision_counts_once_however_often_it_arrives(
    entries: list[DecidedPush], observed: list[tuple[int, OutcomeKind]], stored: bool
) -> None:
    log = logged(entries)
    counted: list[tuple[str, OutcomeKind]] = []
    for index, kind in observed:
        decision = log.entries[index % len(log.entries)].decision_id
        if stored:  # as if read back from the table between two outcomes
            log = DecisionLog.from_bytes(log.to_bytes())
        if log.observe(decision, kind):
            counted.append((decision, kind))
    assert len(counted) == len(set(counted))
    expected = {(log.entries[i % len(log.entries)].decision_id, k) for i, k in observed}
    assert set(counted) == expected
    for entry in log.entries:
        assert entry.seen == {k for d, k in counted if d == entry.decision_id}


def test_recording_a_decision_again_keeps_the_outcomes_seen_for_it() -> None:
    log = logged([push("d-1")])
    log.observe("d-1", OutcomeKind.SENT)
    assert not log.record(push("d-1", NOW + 5))
    entry = log.find("d-1")
    assert entry is not None and entry.seen == {OutcomeKind.SENT} and entry.ts == NOW


def test_observing_a_decision_not_in_the_log_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        DecisionLog().observe("d-x", OutcomeKind.CLICKED)


WINDOW = AttributionConfig(window_s=3600.0)


def event(kind: EventType, item: str, ts: float, category: str = "phones", event_id: str = "") -> Event:
    return Event(event_id or f"{kind.value}-{item}-{ts}", kind, "ann", item, ts, category)


def test_a_buy_and_a_click_of_a_pushed_item_in_the_window_each_convert_once() -> None:
    log = logged([push("d-1", items=("sku-1", "sku-2"))])
    buy, click = event(EventType.BUY, "sku-2", NOW + 60), event(EventType.CLICK, "sku-1", NOW + 90)
    assert [(e.decision_id, s) for e, s in attribute(log, buy, WINDOW)] == [("d-1", Signal.BUY)]
    assert [s for _, s in attribute(log, click, WINDOW)] == [Signal.CLICK]
    assert attribute(log, buy, WINDOW) == [] and attribute(log, click, WINDOW) == []
    assert attribute(log, event(EventType.BUY, "sku-1", NOW + 120), WINDOW) == [], "one buy per decision"
    entry = log.find("d-1")
    assert entry is not None and entry.credited == {
        (Signal.BUY, Scope.ITEM), (Signal.BUY, Scope.CATEGORY), (Signal.CLICK, Scope.ITEM),
        (Signal.CLICK, Scope.CATEGORY),
    }


def test_a_buy_in_the_category_converts_and_the_item_credit_later_is_no_second_conversion() -> None:
    log = logged([push("d-1")])
    assert [s for _, s in attribute(log, event(EventType.BUY, "other", NOW + 1), WINDOW)] == [Signal.BUY]
    assert attribute(log, event(EventType.BUY, "sku-1", NOW + 2), WINDOW) == []
    entry = log.find("d-1")
    assert entry is not None and (Signal.BUY, Scope.ITEM) in entry.credited


@pytest.mark.parametrize(
    ("kind", "item", "ts", "category"),
    [
        (EventType.VIEW, "sku-1", NOW + 60, "phones"),  # a view is no click and no buy
        (EventType.BUY, "sku-1", NOW, "phones"),  # not after the decision
        (EventType.BUY, "sku-1", NOW + 3601, "phones"),  # after the window
        (EventType.BUY, "other", NOW + 60, "lamps"),  # neither the item nor its category
    ],
)
def test_events_outside_the_window_or_the_push_are_not_credited(
    kind: EventType, item: str, ts: float, category: str
) -> None:
    log = logged([push("d-1")])
    assert attribute(log, event(kind, item, ts, category), WINDOW) == []
    assert log == logged([push("d-1")])


def test_a_buy_in_two_open_windows_converts_both_decisions_in_their_own_groups() -> None:
    control = push("d-1")
    treated = DecidedPush("d-2", NOW + 10, ("sku-1",), ("phones",), TriggerKind.POST_PURCHASE, None, Group.TREATMENT)
    log = logged([control, treated])
    converted = attribute(log, event(EventType.BUY, "sku-1", NOW + 60), WINDOW)
    assert sorted((e.decision_id, e.group, s) for e, s in converted) == [
        ("d-1", Group.CONTROL, Signal.BUY), ("d-2", Group.TREATMENT, Signal.BUY),
    ]


def test_credits_survive_the_bytes_and_a_version_1_record_reads_without_credits() -> None:
    log = logged([push("d-1")])
    attribute(log, event(EventType.CLICK, "sku-1", NOW + 5), WINDOW)
    again = DecisionLog.from_bytes(log.to_bytes())
    assert attribute(again, event(EventType.CLICK, "sku-1", NOW + 5), WINDOW) == []
    v1 = b'[1,[["d-1",1700000000.0,["sku-1"],["phones"],0,2,"c",8]]]'
    old = DecisionLog.from_bytes(v1).find("d-1")
    assert old is not None and old.seen == {OutcomeKind.CLICKED} and old.credited == frozenset()
