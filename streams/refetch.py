"""Fetch again the messages a Faust stream skipped, so no event is lost in a rebalance.

Around a rebalance a Faust stream drops messages that were fetched in the older consumer
generation (or while flow control was off) without processing them, and the consumer
does not always go back for them. A partition then continues one message *after* its
committed offset, and Faust commits past the hole: its commit check lets a gap of
exactly one message at the head through (faust-streaming ``Consumer._new_offset``; see
also its issues #596 and #502). Seen in the rebalance test: the message at the committed
offset of each moved partition was never processed.

:class:`Refetcher` keeps, per partition, the next offset it expects (the committed offset
after an assignment, then the last delivered offset + 1). When a batch starts past it,
the missing messages are read with a plain aiokafka consumer and handed to the agent in
front of the batch; once the batch is persisted they are acknowledged to Faust like any
other message, so commits move on. Replays are harmless everywhere (source positions in
profiles and rows, deterministic decision ids), so fetching too much costs only time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust.events import Event
from faust.types import TP, AppT, EventT
from faust.types.tuples import ConsumerMessage

from streams import metrics
from streams.faust_internals import committed_offset
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Give up on a hole after this long (the events stay unprocessed, as without us).
FETCH_TIMEOUT_S = 10.0


class Refetcher:
    """Finds the offsets a stream skipped and fetches those messages again."""

    def __init__(self, app: AppT, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._next: dict[TP, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    def forget(self, partitions: Iterable[TP]) -> None:
        """On a rebalance: expect the committed offset of these partitions next."""
        for tp in partitions:
            self._next.pop(tp, None)

    def rewind(self, events: Iterable[EventT[bytes]]) -> None:
        """Expect these (released, unprocessed) events again."""
        for event in events:
            tp, offset = event.message.tp, event.message.offset
            self._next[tp] = min(offset, self._next.get(tp, offset))

    async def fill(self, events: Sequence[EventT[bytes]]) -> tuple[list[EventT[bytes]], list[EventT[bytes]]]:
        """The batch with skipped messages put back in front, and those messages alone."""
        out: list[EventT[bytes]] = []
        fetched: list[EventT[bytes]] = []
        for event in events:
            tp, offset = event.message.tp, event.message.offset
            expected = self._expected(tp)
            if expected is not None and offset > expected:
                missing = await self._fetch(tp, expected, offset)
                fetched.extend(missing)
                out.extend(missing)
            out.append(event)
            self._next[tp] = max(offset + 1, self._next.get(tp, 0))
        return out, fetched

    def _expected(self, tp: TP) -> int | None:
        if tp in self._next:
            return self._next[tp]
        return committed_offset(self.app.consumer, tp)

    async def _fetch(self, tp: TP, start: int, end: int) -> list[EventT[bytes]]:
        """Messages ``start <= offset < end`` of ``tp`` (fewer if some no longer exist)."""
        async with self._lock:
            consumer = await self._started()
            partition = TopicPartition(tp.topic, tp.partition)
            consumer.assign([partition])
            consumer.seek(partition, start)
            found: list[EventT[bytes]] = []
            try:
                async with asyncio.timeout(FETCH_TIMEOUT_S):
                    while (await consumer.position(partition)) < end:
                        batch = await consumer.getmany(partition, timeout_ms=500)
                        found.extend(self._event(r) for r in batch.get(partition, []) if r.offset < end)
            except TimeoutError:
                log.warning("could not fetch skipped offsets %d..%d of %s again", start, end - 1, tp)
        metrics.MESSAGES_REFETCHED.labels(topic=tp.topic).inc(len(found))
        return found

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                **self.settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False,
                isolation_level="read_committed",
            )
            await self._consumer.start()
        return self._consumer

    def _event(self, r: ConsumerRecord[bytes, bytes]) -> EventT[bytes]:
        message = ConsumerMessage(
            r.topic, r.partition, r.offset, r.timestamp / 1000.0, r.timestamp_type,
            list(r.headers), r.key, r.value, r.checksum,
            generation_id=self.app.consumer_generation_id,
        )
        return Event(self.app, r.key, r.value, list(r.headers), message)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
