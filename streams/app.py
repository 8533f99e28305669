"""The Faust application: topics, tables, agents and web pages of a worker.

Agents are thin loops: decode → call the transport-free core in ``models`` → send. All
state a restart must survive lives in changelog-backed tables (profiles, co-occurrence
rows) or in Redis; nothing important is only in process memory.

Processing guarantee: at-least-once. Faust flushes the producer (every send and every
changelog write) before it commits consumer offsets, so a crash replays events rather
than losing them; replays are made harmless by the per-user event-id window in the
profile (see ``models.profile``) and by deterministic decision ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.types import EventT, Message, RecordMetadata, TableT

from models.cooccurrence import CoocConfig, DecayedValue
from models.events import Event, Rejection, RejectReason, decode_event
from models.features import FeatureConfig
from models.profile import Profile, ProfileConfig
from models.step import StepConfig, step
from streams import metrics
from streams.attribution import AttributionTracker
from streams.batches import BACKGROUND_BATCH, batches, release, unsettled
from streams.clients import faust_app, redis_client
from streams.codecs import dlq_record
from streams.cooccurrence import (
    FLUSH_INTERVAL_S,
    CoocRows,
    RelatedItemsStore,
    decode_row,
    total_key,
)
from streams.decisions import DecisionEngine
from streams.erasure import EXPIRE, FORGET, Eraser
from streams.faust_internals import (
    acting_for,
)
from streams.gauges import Gauges
from streams.learning import LiveLearning
from streams.outcomes import OutcomeTracker
from streams.page import SAMPLE_INTERVAL_S, Dashboard
from streams.pages import add_pages
from streams.pairs import PairBatch, source_id
from streams.refetch import Refetcher
from streams.segmentation import (
    SNAPSHOT_INTERVAL_S,
    SNAPSHOT_KEY,
    SegmentTrainerService,
    SnapshotFollower,
    read_latest_snapshot,
    training_record,
)
from streams.settings import Settings

log = logging.getLogger(__name__)


RAW_SCHEMA: faust.Schema[bytes, bytes] = faust.Schema(
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)
#: RocksDB defaults (3 x 64 MiB write buffers per partition, a 2 GiB block cache) would
#: outgrow a 2 GiB container; these keep a table's RocksDB footprint near 100 MiB.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 16 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 64 * 1024 * 1024,
}
#: Training samples older than this are skipped by a trainer that has fallen behind.
MAX_SAMPLE_AGE_S = 30.0
#: How often inactive users are looked for (at most; a tenth of the retention if shorter).
RETENTION_SWEEP_S = 3600.0


class Worker:
    """One nudgestream worker process: the Faust app and what its agents share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.profile_config = ProfileConfig(half_life_s=settings.profile_half_life_s)
        self.app = faust_app(settings)
        self.topics = settings.topics
        self.refetcher = Refetcher(self.app, settings)
        self._topic_types = {name: t for t, name in self.topics.events.items()}
        # Re-keyed events come back through the same agent, co-partitioned by user.
        self.events_topic = self.app.topic(*self.topics.events.values(), self.topics.rekeyed)
        self.rekeyed_topic = self.app.topic(self.topics.rekeyed)
        self.dlq_topic = self.app.topic(self.topics.dlq)
        # Keys are the user id's UTF-8 bytes and values the encoded profile, both "raw":
        # what recovery reads back from the changelog is exactly what was written.
        self.profiles = self._table("profiles")
        #: The consumer generation whose table recovery completed last (see unsettled()).
        self.recovered_generation = -1
        self.profiles.on_recover(self._on_recovered)
        self.redis = redis_client(settings)
        self.cooc_config = CoocConfig()
        self.step_config = StepConfig(self.profile_config, self.cooc_config, settings.policy)
        self.cooc_topic = self.app.topic(self.topics.cooc_pairs)
        self.cooc_table = self._table("cooc")
        self.cooc_rows = CoocRows(self.cooc_config)
        self.related = RelatedItemsStore(self.redis, settings.app_id, self.cooc_config)
        self.pending = self._table("pending")
        self.deferred_topic = self.app.topic(self.topics.deferred)
        self.segments_train_topic = self.app.topic(self.topics.segments_train, partitions=1)
        self.segments_model_topic = self.app.topic(self.topics.segments_model, partitions=1)
        self.segments = SnapshotFollower(settings)
        self.trainer = SegmentTrainerService(settings, self.redis)
        self.decisions = DecisionEngine(self.app, settings, self.related, self.segments, self.pending)
        self.decided = self._table("decided")
        self.outcomes = OutcomeTracker(
            self.app, settings, self.decided, self.refetcher, self._dead_letter, self._released
        )
        self.decisions.on_allowed = self.outcomes.record
        self.attribution = AttributionTracker(settings, self.decided)
        LiveLearning(settings, self.redis, self.decided).install(
            self.decisions, self.outcomes, self.attribution, self._every
        )
        self.eraser = Eraser(
            settings, self.redis, self.profiles, {"pending": self.pending, "decided": self.decided},
            self._send_command,
        )
        self.app.agent(self.events_topic, name="ingest")(self._ingest)
        self.app.agent(self.cooc_topic, name="cooc")(self._cooccurrence)
        self.app.agent(self.deferred_topic, name="deferred")(self._deferred)
        self.app.agent(self.outcomes.topic, name="outcomes")(self.outcomes.consume)
        self._every(1.0, self.decisions.fire_due)
        self._every(min(RETENTION_SWEEP_S, self.eraser.retention_s / 10), self.eraser.sweep)
        self.app.agent(self.segments_train_topic, name="segment-trainer")(self._train_segments)
        self._every(FLUSH_INTERVAL_S, self._flush_related)
        self.app.task(self.segments.run)
        self._every(SNAPSHOT_INTERVAL_S, self._publish_segments)
        gauges = Gauges(self.app, self.topics, self.profiles, self.cooc_table, self.segments, self.redis)
        self._every(5.0, gauges.refresh)
        # As often as Faust commits: the lag gauge follows each commit within one interval.
        self._every(self.app.conf.broker_commit_interval, gauges.refresh_lag)
        self._every(30.0, gauges.refresh_segments)
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_partitions_assigned)  # type: ignore[arg-type]
        self.app.on_before_shutdown.connect(self.trainer.on_app_stop)  # type: ignore[arg-type]
        add_pages(self.app, self.segments)
        dashboard = Dashboard(lambda: self.segments.current, self.decisions.latest)
        self._every(SAMPLE_INTERVAL_S, dashboard.sample_ctr)
        dashboard.add_pages(self.app)

    def _every(self, seconds: float, job: Callable[[], Awaitable[Any]]) -> None:
        """Run ``job`` every ``seconds``; a failure is logged and counted, not fatal.

        An exception in a Faust timer stops the whole worker: a gauge refresh that meets
        a partition in the middle of a rebalance must not take the event path down.
        """
        name = getattr(job, "__name__", "timer").lstrip("_")

        async def guarded() -> None:
            try:
                await job()
            except Exception:
                metrics.TIMER_ERRORS.labels(timer=name).inc()
                log.exception("timer %s failed; it runs again in %.0f s", name, seconds)

        guarded.__name__ = f"timer_{name}"
        self.app.timer(seconds)(guarded)

    def _table(self, name: str) -> TableT[bytes, bytes]:
        # key_type/value_type decide how *recovery* decodes the changelog; the schema how
        # writes encode it: both must say raw bytes.
        return self.app.Table(
            name, partitions=self.settings.partitions, schema=RAW_SCHEMA, key_type=bytes,
            value_type=bytes, options=ROCKSDB_OPTIONS,
        )

    # --- agents --------------------------------------------------------------------

    async def _ingest(self, stream: faust.StreamT[bytes]) -> None:
        bounds = (self.settings.batch_max_events, self.settings.batch_wait_s)
        async for events in batches(stream, self.refetcher, bounds):
            await self.handle_events(events)

    async def handle_events(self, events: Sequence[EventT[bytes]]) -> None:
        """One batch of the event topics: validate, update profiles, act, then persist.

        Order matters for a crash. Every side effect of the batch (pair increments,
        segment samples, decisions, dead letters) is sent and **acknowledged** before the
        profiles that mark its events applied are written, and Faust writes those before
        it commits the offsets. A crash before the profiles land replays the events and
        re-makes their side effects, which are idempotent (rows keep source positions,
        decisions have deterministic ids); a crash after it skips them, and nothing was
        lost. A user's events in one batch cost one profile write.
        """
        batch = _Batch(time.time(), PairBatch(self.settings.partitions))
        for event in events:
            await self._handle(batch, event)
        for partition, message in batch.pairs.messages().items():
            batch.sent.append(await self.cooc_topic.send(partition=partition, value=message))
        for record in batch.samples:
            batch.sent.append(await self.segments_train_topic.send(value=record))
        await self.decisions.flush(batch.now)
        # Only this batch's own messages: a producer flush would also wait for what the
        # other agents keep sending, and under load it hardly ever ends.
        await asyncio.gather(*batch.sent, *self.decisions.take_sent())
        if self._released(events, "ingest"):
            return
        self.outcomes.persist(events)
        self.attribution.persist(events)
        for user_key, (profile, event) in batch.profiles.items():
            with acting_for(event):
                self.profiles[user_key] = profile.to_bytes()
        batch.count()

    async def _handle(self, batch: _Batch, event: EventT[bytes]) -> None:
        message = event.message
        topic, key, value = message.topic, message.key, message.value
        decoded = decode_event(
            value or b"",
            now=batch.now,
            expected_type=self._topic_types.get(topic),
            max_bytes=self.settings.max_event_bytes,
            max_future_skew_s=self.settings.max_future_skew_s,
        )
        if isinstance(decoded, Rejection):
            batch.sent.append(await self._dead_letter(decoded, message, batch.now))
            batch.rejected.append(decoded.reason)
            return
        user_key = decoded.user_id.encode()
        if key != user_key:
            # Per-user state needs every event of a user on one partition: re-key it
            # instead of processing it on the wrong partition (or dropping it). Through an
            # internal topic: other readers of the event topic must not see it twice.
            batch.sent.append(await self.rekeyed_topic.send(key=user_key, value=value))
            return
        self.attribution.observe(user_key, decoded, event)
        if self._process(batch, user_key, decoded, event):
            batch.applied.append(decoded)
        else:
            batch.duplicates += 1

    def _released(self, events: Sequence[EventT[bytes]], agent: str) -> bool:
        """Release the batch, unpersisted, if a rebalance or recovery overlapped it."""
        if not unsettled(self.app, events, self.recovered_generation):
            return False
        release(self.refetcher, events)
        metrics.BATCHES_RELEASED.labels(agent=agent).inc()
        return True

    def _process(
        self, batch: _Batch, user_key: bytes, event: Event, source: EventT[bytes]
    ) -> bool:
        """The user-side core step for one valid event; False for a duplicate."""
        stored = batch.profile(user_key, self.profiles)
        position = source.message.offset
        rekeyed = source.message.topic == self.topics.rekeyed
        source_name = source_id(event.type, source.message.partition, rekeyed=rekeyed)
        result = step(stored, event, source_name, position, batch.now, self.step_config)
        if result.replayed:
            return False  # re-delivered after a crash or rebalance: applied already
        batch.profiles[user_key] = (result.profile, source)
        if result.applied:
            self.decisions.on_triggers(result.profile, result.due, result.later)
            batch.pairs.add(source_name, position, result.increments, event.category)
            if result.sample:
                batch.samples.append(self._training_record(result.profile, batch.now))
        return result.applied

    async def _cooccurrence(self, stream: faust.StreamT[bytes]) -> None:
        """Row owner: every message holds increments for items of its own partition."""
        async for events in batches(stream, self.refetcher, BACKGROUND_BATCH):
            by_partition = {event.message.partition: event for event in events}
            writes = self.cooc_rows.apply_batch(
                ((e.message.partition, e.value) for e in events), self.cooc_table.get
            )
            if self._released(events, "cooc"):
                continue
            for key, (partition, row) in writes.items():
                with acting_for(by_partition[partition]):
                    self.cooc_table[key] = row

    async def _deferred(self, stream: faust.StreamT[bytes]) -> None:
        """Per-user commands, co-partitioned with the events: delayed triggers, erasure."""
        async for events in batches(stream, self.refetcher, BACKGROUND_BATCH):
            for event in events:
                with acting_for(event):
                    await self._command(event.message.key, orjson.loads(event.value))

    async def _command(self, key: bytes | None, message: dict[str, Any]) -> None:
        if key is None:
            log.warning("ignored a %s command without a user key", message.get("kind"))
            return
        if message["kind"] in (FORGET, EXPIRE):
            await self.eraser.handle(key, message)
            return
        stored = self.profiles.get(key)
        profile = Profile.from_bytes(stored) if stored is not None else None
        await self.decisions.on_deferred(key, message, profile)

    async def _send_command(self, key: bytes, value: bytes) -> None:
        await self.deferred_topic.send(key=key, value=value)

    async def _flush_related(self) -> None:
        """Score dirty rows and publish their related items and counts to Redis."""
        items = self.cooc_rows.take_dirty()
        if not items:
            return
        rows = {}
        for item in items:
            raw = self.cooc_table.get(item.encode())
            if raw is not None:
                rows[item] = decode_row(raw)
        totals: dict[int, DecayedValue] = {}
        for tp in self.app.consumer.assignment():
            if tp.topic == self.topics.cooc_pairs:
                raw_total = self.cooc_table.get(total_key(tp.partition))
                totals[tp.partition] = decode_row(raw_total) if raw_total else DecayedValue()
        categories = self.cooc_rows.take_categories()
        try:
            written = await self.related.publish(rows, totals, time.time(), categories)
        except Exception:
            # Retried at the next flush.
            self.cooc_rows.dirty.update(items)
            self.cooc_rows.categories.update(categories)
            metrics.REDIS_ERRORS.labels(operation="related_items").inc()
            log.warning("publishing related items failed; will retry", exc_info=True)
            return
        metrics.RELATED_WRITES.inc(written)

    def _training_record(self, profile: Profile, now: float) -> bytes:
        snapshot = self.segments.current
        features = snapshot.features if snapshot is not None else FeatureConfig()
        return training_record(profile, now, features)

    async def _train_segments(self, stream: faust.StreamT[bytes]) -> None:
        """The single trainer (segments.train has one partition) learns every sample."""
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

    async def _publish_segments(self) -> None:
        """On the trainer's worker: publish a new snapshot version, then checkpoint."""
        snapshot = await self.trainer.snapshot()
        if snapshot is not None:
            await self.segments_model_topic.send(key=SNAPSHOT_KEY, value=snapshot.to_bytes())
            self.segments.apply(snapshot)
            await self.trainer.checkpoint()

    async def _on_partitions_assigned(self, sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        self.refetcher.forget(assigned)
        events = set(self.topics.events.values())
        partitions = sorted({tp.partition for tp in assigned if tp.topic in events})
        if partitions:
            await self.decisions.reconcile(partitions)

    async def _on_recovered(self) -> None:
        self.recovered_generation = self.app.consumer_generation_id

    async def _on_partitions_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        self.refetcher.forget(revoked)
        if any(tp.topic == self.topics.segments_train for tp in revoked):
            # Another worker trains now; if the partition comes back, resume from its
            # checkpoint rather than from this worker's stale model.
            await self.trainer.stop()

    async def _dead_letter(
        self, rejection: Rejection, message: Message, now: float
    ) -> Awaitable[RecordMetadata]:
        record = dlq_record(
            rejection,
            value=message.value,
            key=message.key,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            rejected_at=now,
        )
        return await self.dlq_topic.send(key=message.key, value=record)



@dataclass
class _Batch:
    """What one batch of the ingest agent accumulates before it is sent and persisted."""

    now: float
    pairs: PairBatch
    samples: list[bytes] = field(default_factory=list)
    #: Acknowledgements of the batch's messages, awaited before its profiles are written.
    sent: list[Awaitable[RecordMetadata]] = field(default_factory=list)
    #: Events applied, and how many were skipped as duplicates (counted once persisted).
    applied: list[Event] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[RejectReason] = field(default_factory=list)
    #: The batch's latest profile of each user, with the event that last changed it.
    profiles: dict[bytes, tuple[Profile, EventT[bytes]]] = field(default_factory=dict)

    def count(self) -> None:
        """Count the batch in the metrics: only once it is persisted, so never twice."""
        done = time.time()
        for event in self.applied:
            metrics.CONSUMED_BY_TYPE[event.type].inc()
            metrics.EVENT_LAG.observe(max(0.0, done - event.ts))
        metrics.EVENTS_DUPLICATE.inc(self.duplicates)
        for reason in self.rejected:
            metrics.REJECTED_BY_REASON[reason].inc()

    def profile(self, user_key: bytes, table: TableT[bytes, bytes]) -> Profile | None:
        """The user's profile as this batch left it, else as stored."""
        if user_key in self.profiles:
            return self.profiles[user_key][0]
        stored = table.get(user_key)
        return Profile.from_bytes(stored) if stored is not None else None
