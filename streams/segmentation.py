"""Segments in the stream: one trainer, a compacted snapshot topic every worker follows.

* Every worker sends a *sample* of profile vectors to ``segments.train`` (one partition),
  so exactly one worker — whichever owns that partition — trains CluStream, off the
  per-event path of the others.
* The trainer publishes a versioned :class:`~models.segments.SegmentSnapshot` to the
  compacted ``segments.model`` topic when a new version exists (at most every
  ``SNAPSHOT_INTERVAL_S``), and checkpoints its CluStream state to Redis so a restarted or
  re-assigned trainer continues the same version sequence and segment ids.
* Every worker follows ``segments.model`` with its own group-less consumer and assigns its
  users with the latest snapshot: the same snapshot gives the same segment everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.features import FeatureConfig, profile_vector
from models.profile import Profile
from models.segments import CheckpointError, SegmentSnapshot, SegmentTrainer
from streams import metrics
from streams.keys import RedisKeys
from streams.settings import Settings

log = logging.getLogger(__name__)

SNAPSHOT_KEY = b"snapshot"
SNAPSHOT_INTERVAL_S = 10.0
def training_record(profile: Profile, now: float, features: FeatureConfig) -> bytes:
    return orjson.dumps({"v": profile_vector(profile, now, features), "c": profile.categories})


class SegmentTrainerService:
    """The trainer's state and its Redis checkpoint; driven by the trainer agent."""

    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.checkpoint_key = RedisKeys.of_app(settings.app_id).segments_checkpoint
        self.trainer: SegmentTrainer | None = None
        self.last_published = 0
        # learn_one and the snapshot (in a thread) must not interleave.
        self.lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self.trainer is not None

    def stop(self) -> None:
        self.trainer = None

    async def start(self, latest: SegmentSnapshot | None) -> SegmentTrainer:
        """Restore from the Redis checkpoint, else resume from the latest snapshot."""
        raw = None
        try:
            raw = await self.redis.get(self.checkpoint_key)
        except Exception:  # a trainer without Redis still trains; it only cannot resume
            metrics.REDIS_ERRORS.labels(operation="segments_checkpoint").inc()
            log.warning("segment trainer: checkpoint unavailable, starting fresh", exc_info=True)
        trainer = None
        if isinstance(raw, bytes) and raw:
            try:
                trainer = SegmentTrainer.restore(raw)
                log.info("segment trainer restored at version %d", trainer.version)
            except CheckpointError as exc:
                log.warning("segment trainer: checkpoint not usable (%s); resuming from snapshot", exc)
        if trainer is None:
            trainer = SegmentTrainer(resume_from=latest)
        self.trainer = trainer
        self.last_published = trainer.version
        return trainer

    async def learn(self, records: Sequence[bytes]) -> None:
        """Learn a batch of training records, in a thread.

        CluStream learns a vector in 0.1-0.6 ms: a batch of them on the event loop would
        hold every agent up for its whole length; in a thread the loop gets its turn
        every few milliseconds (the GIL's switch interval).
        """
        samples = [_sample(record) for record in records]
        async with self.lock:
            trainer = self.trainer
            assert trainer is not None
            await asyncio.get_running_loop().run_in_executor(None, _learn_all, trainer, samples)
        metrics.SEGMENT_LEARNED.inc(len(samples))

    async def snapshot(self) -> SegmentSnapshot | None:
        """A new snapshot to publish, or None (not the trainer, warming up, or no change).

        The offline k-means (~0.1 s) runs in a thread so the event loop keeps serving.
        """
        async with self.lock:
            trainer = self.trainer
            if trainer is None:
                return None
            loop = asyncio.get_running_loop()
            snap = await loop.run_in_executor(None, trainer.snapshot, time.time())
            metrics.SEGMENT_MICRO_CLUSTERS.set(trainer.micro_clusters)
        if snap is None or snap.version == self.last_published:
            return None
        self.last_published = snap.version
        return snap

    async def checkpoint(self) -> None:
        trainer = self.trainer
        if trainer is None:
            return  # the training partition moved meanwhile: its new owner checkpoints
        try:
            await self.redis.set(self.checkpoint_key, trainer.checkpoint())
        except Exception:
            metrics.REDIS_ERRORS.labels(operation="segments_checkpoint").inc()
            log.warning("segment trainer: checkpoint failed", exc_info=True)


class SnapshotFollower:
    """Follows the compacted snapshot topic; ``current`` is the latest snapshot."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: SegmentSnapshot | None = None
        self.changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("segment snapshot follower failed; retrying", exc_info=True)
                await asyncio.sleep(2.0)

    async def _follow(self) -> None:
        topic = self.settings.topics.segments_model
        consumer = AIOKafkaConsumer(
            **self.settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0)])
            async for record in consumer:
                if record.key == SNAPSHOT_KEY and record.value:
                    self.apply(SegmentSnapshot.from_bytes(record.value))
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def apply(self, snapshot: SegmentSnapshot) -> None:
        if self.current is not None and snapshot.version <= self.current.version:
            return
        self.current = snapshot
        self.changed.set()
        export_snapshot_metrics(snapshot)

    def assign(self, profile: Profile, now: float) -> int | None:
        """The user's segment, or None while no snapshot exists (warm-up)."""
        snap = self.current
        if snap is None:
            return None
        return snap.assign(profile_vector(profile, now, snap.features))


def export_snapshot_metrics(snapshot: SegmentSnapshot) -> None:
    metrics.SEGMENT_SNAPSHOT_VERSION.set(snapshot.version)
    metrics.SEGMENT_SNAPSHOT_TIMESTAMP.set(snapshot.created_at)
    metrics.SEGMENT_K.set(snapshot.k)
    for criterion in ("silhouette", "calinski_harabasz", "davies_bouldin"):
        metrics.SEGMENT_QUALITY.labels(criterion=criterion).set(getattr(snapshot.scores, criterion))


async def read_latest_snapshot(settings: Settings, timeout_s: float = 10.0) -> SegmentSnapshot | None:
    """The newest snapshot on the topic (for the CLI and for a trainer's cold start)."""
    topic = settings.topics.segments_model
    consumer = AIOKafkaConsumer(
        **settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    latest: SegmentSnapshot | None = None
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        deadline = time.monotonic() + timeout_s
        while await consumer.position(partition) < end and time.monotonic() < deadline:
            batch = await consumer.getmany(partition, timeout_ms=500)
            for record in batch.get(partition, []):
                if record.key == SNAPSHOT_KEY and record.value:
                    latest = SegmentSnapshot.from_bytes(record.value)
    finally:
        await consumer.stop()
    return latest


def snapshot_summary(snapshot: SegmentSnapshot) -> bytes:
    """A readable JSON description of a snapshot (for the CLI and the web page)."""
    return orjson.dumps(
        {
            "version": snapshot.version,
            "created_at": snapshot.created_at,
            "k": snapshot.k,
            "learned": snapshot.learned,
            "scores": {
                "silhouette": snapshot.scores.silhouette,
                "calinski_harabasz": snapshot.scores.calinski_harabasz,
                "davies_bouldin": snapshot.scores.davies_bouldin,
            },
            "segments": [
                {
                    "id": s.id,
                    "label": s.label,
                    "share": s.share,
                    "top_categories": s.top_categories,
                }
                for s in snapshot.segments
            ],
        }
    )


def _sample(record: bytes) -> tuple[Sequence[float], Mapping[str, float]]:
    data = orjson.loads(record)
    return data["v"], data.get("c") or {}


def _learn_all(
    trainer: SegmentTrainer, samples: Sequence[tuple[Sequence[float], Mapping[str, float]]]
) -> None:
    for vector, categories in samples:
        trainer.learn_one(vector, categories)
