"""The ``cooc`` agent, owner of the co-occurrence rows, and their publication to Redis.

The ingest agent sends each batch's pair increments to the partition that owns the
item's row (``streams.pairs``); this agent applies them to the changelog-backed ``cooc``
table, and a timer (:meth:`CoocAgent.flush_related`) scores the rows it changed and
publishes their related items and counts.

Rows go through a write-behind cache (:mod:`streams.write_behind`): each changed row is
written once per checkpoint (every :data:`ROWS_CHECKPOINT` s or events), and only then
are the batches that changed it acknowledged. A checkpoint whose held batches overlapped
a rebalance or a recovery releases them all, as the per-batch check did.
"""

from __future__ import annotations

import logging
import time

import faust
from faust.types import EventT, TableT

from models.cooccurrence import DecayedValue
from streams import metrics
from streams.batches import BACKGROUND_BATCH, HeldAcks, Taken, batches
from streams.cooccurrence import CoocRows, RelatedItemsStore, decode_row, total_key
from streams.faust_internals import acting_for
from streams.refetch import Refetcher
from streams.write_behind import WriteBehind

log = logging.getLogger(__name__)

#: Checkpoints of the rows: at most this many held events or seconds apart (well under
#: the commit interval; a rebalance waits for the held batches, released by the timer).
ROWS_CHECKPOINT = (2_000, 0.5)


class CoocAgent:
    """Row owner: every message holds increments for items of its own partition."""

    def __init__(
        self,
        app: faust.App,
        topic: str,
        table: TableT[bytes, bytes],
        rows: CoocRows,
        related: RelatedItemsStore,
        refetcher: Refetcher,
        acks: HeldAcks,
        max_clean: int,
    ) -> None:
        self.app = app
        self.topic = topic
        self.table = table
        self.rows = rows
        self.related = related
        self.refetcher = refetcher
        self.cache: WriteBehind[bytes, bytes, EventT[bytes], Taken] = WriteBehind(
            table.get, self._write, acks, max_held=ROWS_CHECKPOINT[0], max_clean=max_clean
        )

    async def consume(self, stream: faust.StreamT[bytes]) -> None:
        hold = self.cache.hold
        async for events in batches(stream, self.refetcher, BACKGROUND_BATCH, hold):
            by_partition = {event.message.partition: event for event in events}
            writes = self.rows.apply_batch(
                ((e.message.partition, e.value) for e in events), self.cache.get
            )
            for key, (partition, row) in writes.items():
                self.cache.put(key, row, by_partition[partition])

    def _write(self, key: bytes, row: bytes, event: EventT[bytes]) -> None:
        with acting_for(event):
            self.table[key] = row

    async def checkpoint_rows(self) -> None:
        """Write the changed rows, then acknowledge their batches (the timer's job)."""
        await self.cache.checkpoint()

    async def flush_related(self) -> None:
        """Score dirty rows and publish their related items and counts to Redis."""
        items = self.rows.take_dirty()
        if not items:
            return
        rows = {}
        for item in items:
            raw = self.cache.get(item.encode())
            if raw is not None:
                rows[item] = decode_row(raw)
        totals: dict[int, DecayedValue] = {}
        for tp in self.app.consumer.assignment():
            if tp.topic == self.topic:
                raw_total = self.cache.get(total_key(tp.partition))
                totals[tp.partition] = decode_row(raw_total) if raw_total else DecayedValue()
        categories = self.rows.take_categories()
        try:
            written = await self.related.publish(rows, totals, time.time(), categories)
        except Exception:
            # Retried at the next flush.
            self.rows.dirty.update(items)
            self.rows.categories.update(categories)
            metrics.REDIS_ERRORS.labels(operation="related_items").inc()
            log.warning("publishing related items failed; will retry", exc_info=True)
            return
        metrics.RELATED_WRITES.inc(written)
