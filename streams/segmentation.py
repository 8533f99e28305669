"""Segments in the stream: one trainer, a compacted snapshot topic every worker follows.

* Every worker sends a *sample* of profile vectors to ``segments.train`` (one partition),
  so exactly one worker — whichever owns that partition — trains CluStream, off the
  per-event path of the others, and in a child process of its own
  (:mod:`streams.trainer_process`): its event loop only queues samples and moves bytes.
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
from collections import deque
from collections.abc import Sequence

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.features import FeatureConfig, profile_vector
from models.profile import Profile
from models.segments import SegmentSnapshot
from streams import metrics
from streams.keys import RedisKeys
from streams.settings import Settings
from streams.trainer_process import Message, TrainerProcess, TrainerProcessError

log = logging.getLogger(__name__)

SNAPSHOT_KEY = b"snapshot"
SNAPSHOT_INTERVAL_S = 10.0
#: Samples waiting for the trainer process at most (~1 s of its learning); older are shed.
MAX_QUEUED_SAMPLES = 2000
#: Samples per request to the trainer process.
LEARN_BATCH = 500
#: Wait before starting a trainer process again after one died.
RESTART_BACKOFF_S = 1.0


def training_record(profile: Profile, now: float, features: FeatureConfig) -> bytes:
    return orjson.dumps({"v": profile_vector(profile, now, features), "c": profile.categories})


class SegmentTrainerService:
    """The trainer process, its sample queue and its Redis checkpoint; driven by the trainer agent.

    The event loop only queues samples and exchanges bytes with the process
    (:mod:`streams.trainer_process`): learning and snapshots run there. A process that
    dies is counted, logged and replaced by one restored from the last checkpoint.
    """

    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.checkpoint_key = RedisKeys.of_app(settings.app_id).segments_checkpoint
        self.running = False
        self.process: TrainerProcess | None = None
        #: Samples not yet sent; the oldest are shed when the process falls behind.
        self.queue: deque[bytes] = deque()
        self._queued = asyncio.Event()
        self._feeder: asyncio.Task[None] | None = None
        #: The latest snapshot known (to resume from without a checkpoint).
        self._latest: SegmentSnapshot | None = None
        #: The checkpoint taken with the latest snapshot, not yet written to Redis.
        self._checkpoint: bytes | None = None
        #: Bumped by every stop: a call that started before a stop drops its result.
        self._epoch = 0
        self._died = False
        # One request at a time on the process's pipes.
        self.lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self.running

    async def start(self, latest: SegmentSnapshot | None) -> None:
        """Start the process from the Redis checkpoint, else from the latest snapshot."""
        self.running = True
        self._latest = latest
        async with self.lock:
            await self._spawn(self._epoch)
        self._feeder = asyncio.create_task(self._feed(), name="segment-trainer-feed")

    async def stop(self) -> None:
        """Stop training here (the partition moved, or the worker stops): no process is left."""
        self.running = False
        self._epoch += 1
        metrics.SEGMENT_SKIPPED.inc(len(self.queue))
        self.queue.clear()
        if self._feeder is not None:
            self._feeder.cancel()
            self._feeder = None
        process, self.process = self.process, None
        if process is not None:
            await process.close()

    async def on_app_stop(self, sender: object = None, **kwargs: object) -> None:
        """For the Faust app's ``on_before_shutdown`` signal."""
        await self.stop()

    async def learn(self, records: Sequence[bytes]) -> None:
        """Queue training records for the process; returns at once."""
        overflow = len(self.queue) + len(records) - MAX_QUEUED_SAMPLES
        if overflow > 0:  # the freshest samples are the most useful ones
            for _ in range(min(overflow, len(self.queue))):
                self.queue.popleft()
            metrics.SEGMENT_SKIPPED.inc(overflow)
        self.queue.extend(records[-MAX_QUEUED_SAMPLES:])
        self._queued.set()

    async def snapshot(self) -> SegmentSnapshot | None:
        """A new snapshot to publish, or None (not the trainer, warming up, or no change)."""
        reply = await self._call(("snapshot", time.time()))
        if reply is None:
            return None
        _, raw, checkpoint, micro_clusters = reply
        metrics.SEGMENT_MICRO_CLUSTERS.set(micro_clusters)
        if raw is None:
            return None
        snap = SegmentSnapshot.from_bytes(raw)
        self._latest, self._checkpoint = snap, checkpoint
        return snap

    async def checkpoint(self) -> None:
        """Write the checkpoint taken with the snapshot just published."""
        checkpoint, self._checkpoint = self._checkpoint, None
        if checkpoint is None or not self.running:
            return  # the training partition moved meanwhile: its new owner checkpoints
        try:
            await self.redis.set(self.checkpoint_key, checkpoint)
        except Exception:
            metrics.REDIS_ERRORS.labels(operation="segments_checkpoint").inc()
            log.warning("segment trainer: checkpoint failed", exc_info=True)

    async def _feed(self) -> None:
        """Send the queued samples to the process, a batch per request."""
        while True:
            await self._queued.wait()
            batch = [self.queue.popleft() for _ in range(min(LEARN_BATCH, len(self.queue)))]
            if not self.queue:
                self._queued.clear()
            try:
                learned = await self._call(("learn", batch)) is not None
            except Exception:
                log.exception("segment trainer: a batch of %d samples failed", len(batch))
                learned = False
            if learned:
                metrics.SEGMENT_LEARNED.inc(len(batch))
            else:
                metrics.SEGMENT_SKIPPED.inc(len(batch))

    async def _call(self, request: Message) -> Message | None:
        """The process's reply, or None if there is no trainer here or its process died."""
        async with self.lock:
            epoch = self._epoch
            if not self.running:
                return None
            if self.process is None:
                await self._spawn(epoch)
            process = self.process
            if process is None:
                return None
            try:
                return await process.call(request)
            except TrainerProcessError as exc:
                if epoch == self._epoch:  # else stopped on purpose meanwhile
                    self._crashed(exc)
                    await self._spawn(epoch)
                return None

    async def _spawn(self, epoch: int) -> None:
        """Start a process restored from the checkpoint (lock held); on failure leave none."""
        if self._died:  # a trainer that keeps dying is not respawned in a tight loop
            await asyncio.sleep(RESTART_BACKOFF_S)
        checkpoint = await self._read_checkpoint()
        latest = self._latest.to_bytes() if self._latest is not None else None
        process = TrainerProcess()
        try:
            await process.start()
            _, version, detail = await process.call(("start", checkpoint, latest))
        except TrainerProcessError as exc:
            self._crashed(exc)
            return
        if epoch != self._epoch:  # stopped while starting
            await process.close()
            return
        log.info("segment trainer process %s %s at version %d", process.pid, detail, version)
        self.process, self._died = process, False

    def _crashed(self, exc: TrainerProcessError) -> None:
        metrics.SEGMENT_TRAINER_CRASHES.inc()
        log.error("segment trainer process died: %s; restarting it from the last checkpoint", exc)
        self.process, self._died = None, True

    async def _read_checkpoint(self) -> bytes | None:
        try:
            raw = await self.redis.get(self.checkpoint_key)
        except Exception:  # a trainer without Redis still trains; it only cannot resume
            metrics.REDIS_ERRORS.labels(operation="segments_checkpoint").inc()
            log.warning("segment trainer: checkpoint unavailable, starting fresh", exc_info=True)
            return None
        return raw if isinstance(raw, bytes) and raw else None


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
