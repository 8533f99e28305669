"""The worker's gauges: table sizes, Redis health, consumer lag, users per segment.

Each refresh is a timer of the worker (:class:`streams.app.Worker`); they read the
tables and the consumer, never change them.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import faust
import redis.asyncio as aioredis
from faust.types import TP, TableT

from models.profile import Profile
from streams import metrics
from streams.faust_internals import committed_offset
from streams.segmentation import SnapshotFollower
from streams.topics import Topics

#: How many profiles the segment-size gauge looks at per refresh (an estimate beyond),
#: and how many between two turns of the event loop (see Gauges.refresh_segments).
SEGMENT_GAUGE_SAMPLE = 500
SEGMENT_GAUGE_SLICE = 5


class Gauges:
    """The refreshes of the worker's gauges (see the module doc)."""

    def __init__(
        self,
        app: faust.App,
        topics: Topics,
        profiles: TableT[bytes, bytes],
        cooc_table: TableT[bytes, bytes],
        segments: SnapshotFollower,
        redis: aioredis.Redis,
    ) -> None:
        self.app = app
        self.topics = topics
        self.profiles = profiles
        self.cooc_table = cooc_table
        self.segments = segments
        self.redis = redis

    async def refresh(self) -> None:
        metrics.PROFILES.set(len(self.profiles))
        metrics.COOC_ROWS.set(len(self.cooc_table))
        await self._check_redis()

    async def refresh_lag(self) -> None:
        """Messages past the committed offsets, by topic the agents read.

        A timer of its own: the table sizes above are counted key by key in RocksDB, and
        a slow or failing count must not leave an old lag on display.
        """
        consumer = self.app.consumer
        # Changelogs are assigned too, but read by the table recovery, never committed.
        tps = [tp for tp in consumer.assignment() if self.app.topics.acks_enabled_for(tp.topic)]
        committed: dict[TP, int | None] = {
            tp: committed_offset(consumer, tp) for tp in tps
        }
        # Faust knows no offset for a partition with no commit (or one at offset 0): the
        # group starts it from the beginning, so the whole partition is behind.
        unknown = [tp for tp, offset in committed.items() if offset is None]
        if unknown:
            committed.update(await consumer.earliest_offsets(*unknown))
        # Start from zero so partitions lost in a rebalance stop counting here.
        lag: dict[str, int] = dict.fromkeys(self.topics.events.values(), 0)
        for tp, offset in committed.items():
            highwater = consumer.highwater(tp)
            if offset is None or highwater is None:  # unknown for a moment after an assignment
                continue
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, highwater - offset)
        for topic, value in lag.items():
            metrics.CONSUMER_LAG.labels(topic=topic).set(value)

    async def _check_redis(self) -> None:
        try:
            await self.redis.ping()
        except Exception:
            metrics.REDIS_UP.set(0)
            metrics.REDIS_ERRORS.labels(operation="ping").inc()
        else:
            metrics.REDIS_UP.set(1)

    async def refresh_segments(self) -> None:
        """Users per segment, estimated from up to SEGMENT_GAUGE_SAMPLE local profiles.

        Decoding and assigning a profile costs about 0.2 ms: the sample is small, and the
        loop gets its turn every SEGMENT_GAUGE_SLICE profiles, so that the events wait
        for about a millisecond at most (5,000 profiles in one go held them up ~1 s).
        """
        snapshot = self.segments.current
        if snapshot is None:
            return
        counts = dict.fromkeys(snapshot.ids, 0)
        sample = list(itertools.islice(self.profiles.keys(), SEGMENT_GAUGE_SAMPLE))
        seen = 0
        now = time.time()
        for start in range(0, len(sample), SEGMENT_GAUGE_SLICE):
            for key in sample[start : start + SEGMENT_GAUGE_SLICE]:
                raw = self.profiles.get(key)  # erased meanwhile: not counted
                if raw is not None:
                    counts[self.segments.assign(Profile.from_bytes(raw), now) or 0] += 1
                    seen += 1
            await asyncio.sleep(0)
        scale = len(self.profiles) / seen if seen else 0.0
        metrics.SEGMENT_USERS.clear()
        for segment, count in counts.items():
            metrics.SEGMENT_USERS.labels(segment=str(segment)).set(round(count * scale))
