"""The ``segment-trainer`` agent: segment samples in, snapshot versions out.

``segments.train`` has one partition, so one worker trains; its trainer runs in a child
process (:class:`streams.segmentation.SegmentTrainerService`). A timer on every worker
(:meth:`TrainerAgent.publish_segments`) publishes a new snapshot when this worker trains.
"""

from __future__ import annotations

import time

import faust
from faust.types import TopicT

from streams import metrics
from streams.batches import BACKGROUND_BATCH, batches
from streams.refetch import Refetcher
from streams.segmentation import (
    SNAPSHOT_KEY,
    SegmentTrainerService,
    SnapshotFollower,
    read_latest_snapshot,
)
from streams.settings import Settings

#: Training samples older than this are skipped by a trainer that has fallen behind.
MAX_SAMPLE_AGE_S = 30.0


class TrainerAgent:
    """The single trainer (segments.train has one partition) learns every sample."""

    def __init__(
        self,
        settings: Settings,
        trainer: SegmentTrainerService,
        segments: SnapshotFollower,
        model_topic: TopicT,
        refetcher: Refetcher,
    ) -> None:
        self.settings = settings
        self.trainer = trainer
        self.segments = segments
        self.model_topic = model_topic
        self.refetcher = refetcher

    async def consume(self, stream: faust.StreamT[bytes]) -> None:
        async for events in batches(stream, self.refetcher, BACKGROUND_BATCH):
            if not self.trainer.started:
                await self.trainer.start(await read_latest_snapshot(self.settings))
            # The samples are a sample: when the trainer falls behind (CluStream learns a
            # few thousand vectors per second), stale ones are shed rather than queued.
            oldest = time.time() - MAX_SAMPLE_AGE_S
            fresh = [e.value for e in events if e.message.timestamp >= oldest]
            metrics.SEGMENT_SKIPPED.inc(len(events) - len(fresh))
            if fresh:
                await self.trainer.learn(fresh)

    async def publish_segments(self) -> None:
        """On the trainer's worker: publish a new snapshot version, then checkpoint."""
        snapshot = await self.trainer.snapshot()
        if snapshot is not None:
            await self.model_topic.send(key=SNAPSHOT_KEY, value=snapshot.to_bytes())
            self.segments.apply(snapshot)
            await self.trainer.checkpoint()
