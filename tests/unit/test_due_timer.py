"""The due-trigger timer: it sends what the index says is due and still waits in the table."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson
from faust.types import TP

from models.pending import encode_pending, entry_id
from models.policy import Trigger, TriggerKind
from streams.decisions import DecisionEngine
from streams.pairs import partition_of
from streams.settings import load

#: Long past, and long after any run of this test (the timer reads the wall clock).
NOW = 1_700_000_000.0
FAR_FUTURE = 4_000_000_000.0


class Table(dict[bytes, bytes]):
    """The pending table as the engine uses it: a mapping with a recovery hook."""

    def on_recover(self, callback: Callable[[], Awaitable[None]]) -> None:
        self.recovered = callback


class Topic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict[str, Any]]] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.sent.append((key, orjson.loads(value)))


def waiting(user: str, due_at: float) -> Trigger:
    return Trigger(TriggerKind.BROWSE_ABANDONED, user, f"e-{due_at}", NOW - 3600, due_at, False, "sku-1", "phones")


def engine_with(table: Table) -> tuple[DecisionEngine, Topic]:
    settings = load({})
    app = faust.App("due-timer-test", autodiscover=False, web_enabled=False)
    engine = DecisionEngine(app, settings, None, None, table)  # type: ignore[arg-type]
    topic = Topic()
    engine.deferred_topic = topic  # type: ignore[assignment]
    return engine, topic


def test_after_recovery_only_due_entries_still_in_the_table_are_sent() -> None:
    due, later, gone = waiting("ann", NOW - 5), waiting("ann", FAR_FUTURE), waiting("ben", NOW - 1)
    table = Table({b"ann": encode_pending([due, later]), b"ben": encode_pending([gone])})
    engine, topic = engine_with(table)

    async def scenario() -> None:
        await table.recovered()
        del table[b"ben"]  # handled or erased after it was indexed
        await engine.fire_due()
        await engine.fire_due()  # a due entry is sent once

    asyncio.run(scenario())

    assert topic.sent == [(b"ann", {"kind": "due", "id": entry_id(due)})]
    assert len(engine.index) == 1, "the later entry stays indexed"


def test_a_revoked_partition_is_no_longer_fired() -> None:
    table = Table({b"ann": encode_pending([waiting("ann", NOW - 5)])})
    engine, topic = engine_with(table)
    settings = load({})

    async def scenario() -> None:
        await table.recovered()
        revoked = {TP(settings.topics.deferred, partition_of(b"ann", settings.partitions))}
        await engine._on_partitions_revoked(None, revoked)
        await engine.fire_due()

    asyncio.run(scenario())

    assert topic.sent == [] and len(engine.index) == 0
