"""The outcomes agent's rules and the decided table's writers, on in-memory stand-ins."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.decided import DecisionLog
from models.decision import Decision
from models.events import Rejection, RejectReason
from models.lift import Group
from models.outcomes import OutcomeKind
from models.policy import Trigger, TriggerKind
from streams import metrics
from streams.faust_internals import acting_for
from streams.outcomes import OutcomeTracker
from streams.settings import load

NOW = 1_700_000_000.0


@dataclass
class FakeMessage:
    key: bytes | None
    value: bytes | None
    topic: str = "notifications.outcomes"
    partition: int = 0
    offset: int = 0


@dataclass(eq=False)
class FakeEvent:
    message: FakeMessage


@dataclass
class FakeTopic:
    sent: list[tuple[bytes, bytes | None]] = field(default_factory=list)

    async def send(self, *, key: bytes, value: bytes | None) -> asyncio.Future[None]:
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@dataclass
class FakeApp:
    outcomes: FakeTopic = field(default_factory=FakeTopic)

    def topic(self, name: str) -> FakeTopic:
        return self.outcomes


@dataclass
class Harness:
    released: bool = False
    dead: list[Rejection] = field(default_factory=list)
    table: dict[bytes, bytes] = field(default_factory=dict)
    app: FakeApp = field(default_factory=FakeApp)

    def tracker(self) -> OutcomeTracker:
        async def dead_letter(rejection: Rejection, message: Any, now: float) -> asyncio.Future[None]:
            self.dead.append(rejection)
            return await self.app.outcomes.send(key=b"dlq", value=None)

        def released(events: Sequence[Any], agent: str) -> bool:
            return self.released

        return OutcomeTracker(
            self.app, load({}), self.table, None, dead_letter, released  # type: ignore[arg-type]
        )


def decision(user: str, decision_id: str, kind: TriggerKind = TriggerKind.BROWSE_INTEREST) -> tuple[Trigger, Decision]:
    trigger = Trigger(kind, user, f"e-{decision_id}", NOW, NOW, False, "sku-0", "phones")
    made = Decision(decision_id, user, (("sku-1", 2.0),), kind, 3, "x", NOW, NOW, NOW + 60, False)
    return trigger, made


def outcome(kind: str, decision_id: str, user: str, key: str | None = None) -> FakeEvent:
    value = orjson.dumps({"schema": 1, "kind": kind, "decision_id": decision_id, "user_id": user, "ts": NOW})
    return FakeEvent(FakeMessage((key or user).encode(), value))


def stored(harness: Harness, user: str) -> DecisionLog:
    return DecisionLog.from_bytes(harness.table.get(user.encode()))


def counted(kind: OutcomeKind, group: Group = Group.TREATMENT) -> float:
    return metrics.OUTCOMES_BY_LABELS[(kind, TriggerKind.BROWSE_INTEREST, group)]._value.get()  # type: ignore[attr-defined]


def test_an_ingest_batch_writes_its_decisions_with_its_profiles_and_only_then() -> None:
    harness = Harness()
    tracker = harness.tracker()
    tracker.record(*decision("ann", "d-1"), holdout=False)
    tracker.record(*decision("bob", "d-2"), holdout=True)
    assert harness.table == {}, "no current event: kept until the batch persists"
    tracker.persist([FakeEvent(FakeMessage(b"ann", b"{}"))])  # type: ignore[list-item]
    entry = stored(harness, "ann").find("d-1")
    assert entry is not None and entry.group is Group.TREATMENT and entry.items == ("sku-1",)
    assert entry.categories == ("phones",) and entry.segment == 3
    assert b"bob" not in harness.table, "no event of bob's in the batch: decided again on replay"
    tracker.persist([FakeEvent(FakeMessage(b"bob", b"{}"))])  # type: ignore[list-item]
    assert b"bob" not in harness.table, "what a batch did not write is not written by the next"


def test_a_decision_of_the_deferred_agent_is_written_at_once_and_once() -> None:
    harness = Harness()
    tracker = harness.tracker()
    command = FakeEvent(FakeMessage(b"ann", b"{}"))
    before = metrics.DECISIONS_RECORDED._value.get()  # type: ignore[attr-defined]
    with acting_for(command):  # type: ignore[arg-type]
        tracker.record(*decision("ann", "d-1"), holdout=True)
        tracker.record(*decision("ann", "d-1"), holdout=True)  # re-made after a crash
    assert [e.decision_id for e in stored(harness, "ann").entries] == ["d-1"]
    assert metrics.DECISIONS_RECORDED._value.get() == before + 1  # type: ignore[attr-defined]
    exposures = metrics.PUSH_EXPOSURES.labels("browse_interest", "3", "control")
    assert exposures._value.get() == 1  # type: ignore[attr-defined]
    conversions = metrics.PUSH_CONVERSIONS.labels("browse_interest", "3", "control", "buy")
    assert conversions._value.get() == 0, "the conversion series exists from the first exposure"  # type: ignore[attr-defined]


async def test_each_outcome_of_a_recorded_decision_is_counted_once() -> None:
    harness = Harness()
    tracker = harness.tracker()
    with acting_for(FakeEvent(FakeMessage(b"ann", b"{}"))):  # type: ignore[arg-type]
        tracker.record(*decision("ann", "d-1"), holdout=False)
    sent, clicked = counted(OutcomeKind.SENT), counted(OutcomeKind.CLICKED)
    duplicates = metrics.OUTCOMES_DUPLICATE._value.get()  # type: ignore[attr-defined]
    await tracker.handle([outcome("sent", "d-1", "ann"), outcome("clicked", "d-1", "ann"), outcome("clicked", "d-1", "ann")])  # type: ignore[list-item]
    await tracker.handle([outcome("clicked", "d-1", "ann")])  # type: ignore[list-item]  # replayed
    assert counted(OutcomeKind.SENT) == sent + 1 and counted(OutcomeKind.CLICKED) == clicked + 1
    assert metrics.OUTCOMES_DUPLICATE._value.get() == duplicates + 2  # type: ignore[attr-defined]
    entry = stored(harness, "ann").find("d-1")
    assert entry is not None and entry.seen == {OutcomeKind.SENT, OutcomeKind.CLICKED}
    assert harness.dead == []


async def test_malformed_and_unknown_outcomes_are_dead_lettered_and_misrouted_ones_rekeyed() -> None:
    harness = Harness()
    tracker = harness.tracker()
    with acting_for(FakeEvent(FakeMessage(b"ann", b"{}"))):  # type: ignore[arg-type]
        tracker.record(*decision("ann", "d-1"), holdout=False)
    misrouted = outcome("opened", "d-1", "ann", key="bob")
    bad = FakeEvent(FakeMessage(b"ann", b'{"schema": 1, "kind": "liked"}'))
    await tracker.handle([
        bad, outcome("clicked", "d-9", "ann"), outcome("clicked", "d-1", "bob"), misrouted,  # type: ignore[list-item]
    ])
    assert [r.reason for r in harness.dead] == [
        RejectReason.UNKNOWN_OUTCOME, RejectReason.UNKNOWN_DECISION, RejectReason.UNKNOWN_DECISION,
    ]
    assert (b"ann", misrouted.message.value) in harness.app.outcomes.sent
    entry = stored(harness, "ann").find("d-1")
    assert entry is not None and entry.seen == frozenset()


async def test_a_batch_released_by_a_rebalance_neither_marks_nor_counts() -> None:
    harness = Harness()
    tracker = harness.tracker()
    with acting_for(FakeEvent(FakeMessage(b"ann", b"{}"))):  # type: ignore[arg-type]
        tracker.record(*decision("ann", "d-1"), holdout=True)
    dismissed = counted(OutcomeKind.DISMISSED, Group.CONTROL)
    harness.released = True
    await tracker.handle([outcome("dismissed", "d-1", "ann")])  # type: ignore[list-item]
    assert counted(OutcomeKind.DISMISSED, Group.CONTROL) == dismissed
    harness.released = False
    await tracker.handle([outcome("dismissed", "d-1", "ann")])  # type: ignore[list-item]  # delivered again
    assert counted(OutcomeKind.DISMISSED, Group.CONTROL) == dismissed + 1
