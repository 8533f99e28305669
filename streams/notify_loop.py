"""The notification worker's consumer loop: poll, handle, commit, rewind and back off.

Offsets are committed only past records the handler settled; a partition whose sender
call failed is rewound to that record and retried after an exponential backoff, while
the loop keeps polling (so the worker stays in its group however long the sender is
down). :func:`run_notifier` runs it on the deployment's push topic.

>>> import asyncio, orjson
>>> from types import SimpleNamespace
>>> from streams.notify_handler import DecisionHandler, NotifyMetrics
>>> class Sender:
...     async def send(self, decision): pass
>>> value = orjson.dumps({"decision_id": "d1", "decided_at": 1.0, "expires_at": 9.0})
>>> handler = DecisionHandler(Sender(), NotifyMetrics(), clock=lambda: 2.0)
>>> batch = {"p0": [SimpleNamespace(offset=41, value=value)]}
>>> asyncio.run(process_batch(batch, handler))
BatchOutcome(commits={'p0': 42}, rewinds={}, settled=1)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from streams.client import EventProducer
from streams.notify_handler import Clock, DecisionHandler, DecisionSender, NotifyMetrics
from streams.settings import Settings

log = logging.getLogger("nudgestream.notify")

#: Records per poll: also the most a crash can make this worker send twice.
DEFAULT_BATCH: Final = 100
POLL_TIMEOUT_MS: Final = 500

Sleep = Callable[[float], Awaitable[None]]


class Record(Protocol):
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


class Consumer(Protocol):
    """The part of :class:`aiokafka.AIOKafkaConsumer` the loop uses."""

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[Any, Sequence[Record]]: ...

    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None: ...

    def seek(self, partition: Any, offset: int) -> None: ...


@dataclass(slots=True)
class Backoff:
    """Exponential delays between retries after a sender error, reset by a success."""

    initial_s: float = 0.5
    max_s: float = 30.0
    _next_s: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        self._next_s = min(self.max_s, self._next_s * 2 if self._next_s else self.initial_s)
        return self._next_s

    def reset(self) -> None:
        self._next_s = 0.0


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    #: Next offset to commit per partition (after its last settled record).
    commits: dict[Any, int]
    #: Offset of the record to retry per partition whose sender call failed.
    rewinds: dict[Any, int]
    settled: int


async def process_batch(
    batch: Mapping[Any, Sequence[Record]], handler: DecisionHandler
) -> BatchOutcome:
    """Handle records in order per partition, stopping a partition at its first failure."""
    commits: dict[Any, int] = {}
    rewinds: dict[Any, int] = {}
    settled = 0
    for partition, records in batch.items():
        for record in records:
            if not await handler.handle(record.value):
                rewinds[partition] = record.offset
                break
            commits[partition] = record.offset + 1
            settled += 1
    return BatchOutcome(commits, rewinds, settled)


@dataclass(frozen=True, slots=True)
class RunLimits:
    """When :func:`consume` returns (all None: only when ``stop`` is set)."""

    max_messages: int | None = None
    idle_exit_s: float | None = None
    stop: asyncio.Event | None = None


async def consume(
    consumer: Consumer,
    handler: DecisionHandler,
    limits: RunLimits = RunLimits(),
    *,
    batch: int = DEFAULT_BATCH,
    backoff: Backoff | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> int:
    """Poll, handle, commit, rewind on failure; return the number of settled records."""
    backoff = backoff or Backoff()
    settled = 0
    last_record = clock()
    while not _stopping(limits, settled):
        wanted = batch if limits.max_messages is None else min(batch, limits.max_messages - settled)
        records = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=wanted)
        if not records:
            if limits.idle_exit_s is not None and clock() - last_record >= limits.idle_exit_s:
                break
            continue
        last_record = clock()
        outcome = await process_batch(records, handler)
        settled += outcome.settled
        await handler.flush()  # at-least-once: the outcomes are on the broker before the commit
        await _commit(consumer, outcome.commits)
        for partition, offset in outcome.rewinds.items():
            _rewind(consumer, partition, offset)
        if outcome.rewinds:
            await sleep(backoff.next_delay())
        else:
            backoff.reset()
    return settled


def _stopping(limits: RunLimits, settled: int) -> bool:
    return (limits.stop is not None and limits.stop.is_set()) or (
        limits.max_messages is not None and settled >= limits.max_messages
    )


async def _commit(consumer: Consumer, offsets: dict[Any, int]) -> None:
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except KafkaError as exc:
        # A rebalance took the partitions away: their new owner resumes from the last
        # committed offsets, so at most this poll's records are sent twice.
        log.warning("offset commit failed (%s); records since the last commit will be re-read", exc)


def _rewind(consumer: Consumer, partition: Any, offset: int) -> None:
    try:
        consumer.seek(partition, offset)
    except KafkaError as exc:
        # No longer ours: the new owner starts from the committed offset, before it.
        log.warning("cannot rewind %s to %d (%s)", partition, offset, exc)


async def run_notifier(
    settings: Settings,
    sender: DecisionSender,
    *,
    group: str,
    limits: RunLimits = RunLimits(),
    metrics: NotifyMetrics | None = None,
    batch: int = DEFAULT_BATCH,
    backoff: Backoff | None = None,
) -> int:
    """Consume the deployment's push topic in ``group`` until ``limits``; return settled count."""
    consumer = AIOKafkaConsumer(
        settings.topics.push,
        group_id=group,
        client_id=f"{group}-notify",
        enable_auto_commit=False,
        isolation_level="read_committed",
        # A new group starts at the oldest retained decision: the expiry check skips the
        # stale ones, and none produced before the group existed is lost.
        auto_offset_reset="earliest",
        **settings.aiokafka_kwargs(),
    )
    try:
        await consumer.start()
        async with EventProducer.from_settings(settings, client_id=f"{group}-outcomes") as reporter:
            handler = DecisionHandler(sender, metrics or NotifyMetrics(), reporter=reporter)
            return await consume(consumer, handler, limits, batch=batch, backoff=backoff)
    finally:
        await consumer.stop()
