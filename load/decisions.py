"""Decisions read back from the notification topics, each ``decision_id`` counted once.

The audit topic is written at least once (docs/TOPICS.md): after a worker crash a
holdout, suppressed or no-candidates record can appear twice with the same
``decision_id``. Every count the project makes of decisions (``nudgestream demo``'s
summary, the benchmark's latency figures) goes through :class:`DecisionTally`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.candidates import is_popularity_fallback
from models.decision import Outcome
from streams.settings import Settings

#: The outcome of a record on the push topic (audit records carry their own).
PUSHED = "pushed"
#: How long decisions may still arrive after the worker has handled the last event.
DECISION_GRACE_S = 2.0


@dataclass
class DecisionTally:
    """Decision ids by outcome, and those whose items were a popularity fallback."""

    ids: dict[str, set[str]] = field(default_factory=dict)
    fallbacks: set[str] = field(default_factory=set)

    def add(self, record: Mapping[str, Any], *, pushed: bool) -> bool:
        """Count a record; False if its decision was counted with that outcome already."""
        decision_id = str(record.get("decision_id"))
        seen = self.ids.setdefault(PUSHED if pushed else str(record.get("outcome")), set())
        if decision_id in seen:
            return False
        seen.add(decision_id)
        if record.get("items") and is_popularity_fallback(str(record.get("explanation", ""))):
            self.fallbacks.add(decision_id)
        return True

    def count(self, outcome: str) -> int:
        return len(self.ids.get(outcome, ()))

    def fallback_share(self) -> float | None:
        """Of the decisions that found items, the share that had only popular ones."""
        found = set().union(*(ids for o, ids in self.ids.items() if o != Outcome.NO_CANDIDATES))
        return len(self.fallbacks & found) / len(found) if found else None


@dataclass
class DecisionWatcher:
    """Tallies, and times, every decision on the notification topics from the moment it
    is positioned whose event is from ``since`` on (every one, by default)."""

    settings: Settings
    since: float = -math.inf
    tally: DecisionTally = field(default_factory=DecisionTally)
    #: Arrival minus event time of each decision (its first record), by topic.
    latencies_s: dict[str, list[float]] = field(default_factory=dict)
    #: Set once the consumer sits at the end of every partition: produce only then.
    positioned: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def topics(self) -> list[str]:
        """Pushed decisions, and the audit of the others."""
        topics = self.settings.topics
        return [topics.push, topics.suppressed]

    async def start(self) -> asyncio.Task[None]:
        """:meth:`run` in the background, once positioned (a failure to get there raises)."""
        task = asyncio.create_task(self.run())
        positioned = asyncio.ensure_future(self.positioned.wait())
        await asyncio.wait([positioned, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            positioned.cancel()
            task.result()
        return task

    async def run(self) -> None:
        # read_committed, as the notification workers read: under exactly_once a decision
        # reaches them only when its transaction commits.
        consumer = AIOKafkaConsumer(
            **self.settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False,
            auto_offset_reset="latest", isolation_level="read_committed",
        )
        await consumer.start()
        try:
            partitions = [
                TopicPartition(t, p) for t in self.topics for p in range(self.settings.partitions)
            ]
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for partition in partitions:
                await consumer.position(partition)  # resolves "the end" now, not at first fetch
            self.positioned.set()
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                arrived = time.time()
                for tp, records in batch.items():
                    self.record(tp.topic, arrived, (r.value for r in records))
        finally:
            await consumer.stop()

    def record(self, topic: str, arrived: float, values: Iterable[bytes | None]) -> None:
        for value in values:
            record = orjson.loads(value or b"{}")
            event_ts = record.get("event_ts")
            if not isinstance(event_ts, int | float) or event_ts < self.since:
                continue
            if self.tally.add(record, pushed=topic == self.settings.topics.push):
                self.latencies_s.setdefault(topic, []).append(arrived - event_ts)

    def stop(self) -> None:
        self._stop.set()
