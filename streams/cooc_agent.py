"""The ``cooc`` agent, owner of the co-occurrence rows, and their publication to Redis.

The ingest agent sends each batch's pair increments to the partition that owns the
item's row (``streams.pairs``); this agent applies them to the changelog-backed ``cooc``
table, and a timer (:meth:`CoocAgent.flush_related`) scores the rows it changed and
publishes their related items and counts.
"""

from __future__ import annotations

import logging
import time

import faust
from faust.types import TableT

from models.cooccurrence import DecayedValue
from streams import metrics
from streams.batches import BACKGROUND_BATCH, batches
from streams.cooccurrence import CoocRows, RelatedItemsStore, decode_row, total_key
from streams.faust_internals import acting_for
from streams.outcomes import Released
from streams.refetch import Refetcher

log = logging.getLogger(__name__)


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
        released: Released,
    ) -> None:
        self.app = app
        self.topic = topic
        self.table = table
        self.rows = rows
        self.related = related
        self.refetcher = refetcher
        self.released = released

    async def consume(self, stream: faust.StreamT[bytes]) -> None:
        async for events in batches(stream, self.refetcher, BACKGROUND_BATCH):
            by_partition = {event.message.partition: event for event in events}
            writes = self.rows.apply_batch(
                ((e.message.partition, e.value) for e in events), self.table.get
            )
            if self.released(events, "cooc"):
                continue
            for key, (partition, row) in writes.items():
                with acting_for(by_partition[partition]):
                    self.table[key] = row

    async def flush_related(self) -> None:
        """Score dirty rows and publish their related items and counts to Redis."""
        items = self.rows.take_dirty()
        if not items:
            return
        rows = {}
        for item in items:
            raw = self.table.get(item.encode())
            if raw is not None:
                rows[item] = decode_row(raw)
        totals: dict[int, DecayedValue] = {}
        for tp in self.app.consumer.assignment():
            if tp.topic == self.topic:
                raw_total = self.table.get(total_key(tp.partition))
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
