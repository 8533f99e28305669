"""Attribution on the ingest path, on an in-memory table: credits written, then counted, once."""

from __future__ import annotations

from dataclasses import dataclass

from models.attribution import Signal
from models.decided import DecidedPush, DecisionLog
from models.events import Event, EventType
from models.lift import Group
from models.policy import TriggerKind
from streams import metrics
from streams.attribution import AttributionTracker
from streams.settings import load

NOW = 1_700_000_000.0


@dataclass
class FakeMessage:
    key: bytes
    topic: str = "events.buy"
    partition: int = 0
    offset: int = 0


@dataclass(eq=False)
class FakeEvent:
    message: FakeMessage


def conversions(signal: Signal, group: Group = Group.TREATMENT, segment: str = "2") -> float:
    child = metrics.PUSH_CONVERSIONS.labels(TriggerKind.POST_PURCHASE.value, segment, group.value, signal.value)
    return float(child._value.get())  # type: ignore[attr-defined]


def recorded(user: str, *entries: DecidedPush) -> dict[bytes, bytes]:
    log = DecisionLog()
    for entry in entries:
        log.record(entry)
    return {user.encode(): log.to_bytes()}


def pushed(decision_id: str, group: Group = Group.TREATMENT) -> DecidedPush:
    return DecidedPush(decision_id, NOW, ("sku-1",), ("phones",), TriggerKind.POST_PURCHASE, 2, group)


def batch(tracker: AttributionTracker, *events: Event) -> list[FakeEvent]:
    sources = []
    for event in events:
        source = FakeEvent(FakeMessage(event.user_id.encode()))
        tracker.observe(event.user_id.encode(), event, source)  # type: ignore[arg-type]
        sources.append(source)
    return sources


def buy(item: str = "sku-1", ts: float = NOW + 60, event_id: str = "b1", kind: EventType = EventType.BUY) -> Event:
    return Event(event_id, kind, "ann", item, ts, "phones")


def test_a_buy_is_credited_written_and_counted_once_even_when_delivered_again() -> None:
    table = recorded("ann", pushed("d-1"))
    tracker = AttributionTracker(load({}), table)  # type: ignore[arg-type]
    bought, clicked = conversions(Signal.BUY), conversions(Signal.CLICK)
    tracker.persist(batch(tracker, buy(), buy(event_id="b2"), buy(kind=EventType.CLICK, event_id="c1")))  # type: ignore[arg-type]
    assert conversions(Signal.BUY) == bought + 1 and conversions(Signal.CLICK) == clicked + 1
    entry = DecisionLog.from_bytes(table[b"ann"]).find("d-1")
    assert entry is not None and {s for s, _ in entry.credited} == {Signal.BUY, Signal.CLICK}
    tracker.persist(batch(tracker, buy()))  # type: ignore[arg-type]  # replayed after a crash
    assert conversions(Signal.BUY) == bought + 1


def test_the_control_group_converts_under_its_own_labels() -> None:
    table = recorded("ann", pushed("d-1", Group.CONTROL))
    tracker = AttributionTracker(load({}), table)  # type: ignore[arg-type]
    before = conversions(Signal.BUY, Group.CONTROL)
    tracker.persist(batch(tracker, buy()))  # type: ignore[arg-type]
    assert conversions(Signal.BUY, Group.CONTROL) == before + 1


def test_the_window_is_the_setting() -> None:
    table = recorded("ann", pushed("d-1"))
    tracker = AttributionTracker(load({"NUDGESTREAM_ATTRIBUTION_WINDOW_S": "600"}), table)  # type: ignore[arg-type]
    stored = dict(table)
    tracker.persist(batch(tracker, buy(ts=NOW + 601)))  # type: ignore[arg-type]
    assert table == stored, "a buy after the window credits nothing and writes nothing"


def test_a_batch_released_by_a_rebalance_writes_and_counts_nothing() -> None:
    table = recorded("ann", pushed("d-1"))
    tracker = AttributionTracker(load({}), table)  # type: ignore[arg-type]
    stored, bought = dict(table), conversions(Signal.BUY)
    batch(tracker, buy())  # released: never persisted
    other = FakeEvent(FakeMessage(b"bob"))
    tracker.persist([other])  # type: ignore[list-item]
    assert table == stored and conversions(Signal.BUY) == bought
    tracker.persist(batch(tracker, buy()))  # type: ignore[arg-type]  # delivered again
    assert conversions(Signal.BUY) == bought + 1


def test_users_without_a_recorded_decision_are_left_alone() -> None:
    table: dict[bytes, bytes] = {}
    tracker = AttributionTracker(load({}), table)  # type: ignore[arg-type]
    tracker.persist(batch(tracker, buy()))  # type: ignore[arg-type]
    assert table == {}
