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
import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
import redis.asyncio as aioredis
from aiohttp import web as aiohttp_web
from faust.types import TP, EventT, Message, RecordMetadata, TableT

from models.cooccurrence import CoocConfig, DecayedValue, pair_increments
from models.events import Event, Rejection, RejectReason, decode_event
from models.features import FeatureConfig, should_sample
from models.policy import copy_profile
from models.profile import Profile, ProfileConfig, update
from streams import metrics
from streams.attribution import AttributionTracker
from streams.batches import BACKGROUND_BATCH, batches, release, unsettled
from streams.codecs import dlq_record
from streams.cooccurrence import (
    FLUSH_INTERVAL_S,
    CoocRows,
    PairBatch,
    RelatedItemsStore,
    decode_row,
    source_id,
    total_key,
)
from streams.decisions import DecisionEngine
from streams.erasure import EXPIRE, FORGET, Eraser
from streams.faust_internals import (
    acting_for,
    committed_offset,
    recovery_completed,
    set_producer_buffer_limit,
)
from streams.outcomes import OutcomeTracker
from streams.refetch import Refetcher
from streams.segmentation import (
    SNAPSHOT_INTERVAL_S,
    SNAPSHOT_KEY,
    SegmentTrainerService,
    SnapshotFollower,
    read_latest_snapshot,
    snapshot_summary,
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
#: How many profiles the segment-size gauge looks at per refresh (an estimate beyond),
#: and how many between two turns of the event loop (see _refresh_segment_gauges).
SEGMENT_GAUGE_SAMPLE = 500
SEGMENT_GAUGE_SLICE = 5


def redis_client(settings: Settings) -> aioredis.Redis:
    """Short timeouts: a dead Redis must fail a decision fast (closed), not stall a stream."""
    return aioredis.from_url(
        settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0,
        health_check_interval=10, retry_on_timeout=False,
    )


class Worker:
    """One nudgestream worker process: the Faust app and what its agents share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.profile_config = ProfileConfig(half_life_s=settings.profile_half_life_s)
        self.app = _faust_app(settings)
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
        self._every(5.0, self._refresh_gauges)
        # As often as Faust commits: the lag gauge follows each commit within one interval.
        self._every(self.app.conf.broker_commit_interval, self._refresh_lag)
        self._every(30.0, self._refresh_segment_gauges)
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_partitions_assigned)  # type: ignore[arg-type]
        self._add_pages()

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
        """The user-side core steps for one valid event; False for a duplicate."""
        profile = batch.profile(user_key, self.profiles)
        position = source.message.offset
        source_name = source_id(event.type, source.message.partition, rekeyed=source.message.topic == self.topics.rekeyed)
        if profile is not None and profile.replayed(source_name, position, event.ts):
            return False  # re-delivered after a crash or rebalance: applied already
        # update() changes the profile in place; triggers and pairs need the state before.
        before = copy_profile(profile)
        profile, applied = update(profile, event, batch.now, self.profile_config)
        profile.positions[source_name] = position
        batch.profiles[user_key] = (profile, source)
        if applied:
            self.decisions.on_event(before, profile, event, batch.now)
            increments = pair_increments(before.recent if before else [], event, self.cooc_config)
            batch.pairs.add(source_name, position, increments, event.category)
            if should_sample(profile.events):
                batch.samples.append(self._training_record(profile, batch.now))
        return applied

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
            self.trainer.stop()

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

    # --- housekeeping --------------------------------------------------------------

    async def _refresh_gauges(self) -> None:
        metrics.PROFILES.set(len(self.profiles))
        metrics.COOC_ROWS.set(len(self.cooc_table))
        await self._check_redis()

    async def _refresh_lag(self) -> None:
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

    async def _refresh_segment_gauges(self) -> None:
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

    def _add_pages(self) -> None:
        app = self.app

        @app.page("/metrics")
        async def prometheus(web: Any, request: Any) -> Any:
            return aiohttp_web.Response(
                body=metrics.exposition(), content_type="text/plain", charset="utf-8"
            )

        @app.page("/segments")
        async def segments(web: Any, request: Any) -> Any:
            """The snapshot in use; with ?vector=x1,x2,... also the segment it assigns."""
            snapshot = self.segments.current
            if snapshot is None:
                return web.json({"version": 0, "warming_up": True})
            body: dict[str, Any] = orjson.loads(snapshot_summary(snapshot))
            vector = request.query.get("vector")
            if vector:
                body["assigned"] = snapshot.assign([float(x) for x in vector.split(",")])
            return web.json(body)

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"status": "ok"})

        @app.page("/readyz")
        async def readyz(web: Any, request: Any) -> Any:
            ready = app.rebalancing is False and recovery_completed(app)
            return web.json({"ready": ready}, status=200 if ready else 503)


def _faust_app(settings: Settings) -> faust.App:
    store = "rocksdb://" if settings.store == "rocksdb" else "memory://"
    app = faust.App(
        settings.app_id,
        broker=settings.broker_urls,
        broker_credentials=_credentials(settings),
        store=store,
        datadir=str(settings.data_dir),
        autodiscover=False,
        web_enabled=True,
        # Bind where configured; advertise the host name, so each worker has its own URL.
        web_bind=settings.web_host,
        web_host=socket.gethostname(),
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        processing_guarantee=settings.processing_guarantee,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 10),
        table_standby_replicas=0,
        web_in_thread=False,
        # aiokafka keeps one request in flight per broker and waits, message by message,
        # for a full batch of a partition to be sent: with Faust's 16 KiB, a few 1 KiB
        # profile writes fill it and hold every other write up for a round trip.
        producer_max_batch_size=settings.producer_max_batch_bytes,
    )

    async def raise_producer_buffer_limit() -> None:
        # Table writes queue in Faust's ProducerBuffer; past max_messages (100) the
        # conductor waits for it to drain before it hands *any* stream its next message
        # ("producer buffer full"): under load that stopped the worker for 40 % of the
        # time (docs/BENCHMARKS.md). The buffer is still drained before every commit.
        set_producer_buffer_limit(app, settings.producer_buffer_max_messages)

    app.task(raise_producer_buffer_limit)
    return app


def _credentials(settings: Settings) -> Any:
    """Faust's form of the same security settings the aiokafka clients use."""
    kwargs = settings.aiokafka_kwargs()
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(kwargs["ssl_context"])
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=kwargs.get("ssl_context"),
    )


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
