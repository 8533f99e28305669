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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from faust.types import EventT, Message, RecordMetadata, TableT

from models.cooccurrence import CoocConfig
from models.events import Rejection
from models.profile import ProfileConfig
from models.step import StepConfig
from streams import metrics
from streams.attribution import AttributionTracker
from streams.batches import HeldAcks, release, unsettled
from streams.clients import faust_app, redis_client
from streams.codecs import dlq_record
from streams.commands import CommandAgent
from streams.cooc_agent import ROWS_CHECKPOINT, CoocAgent
from streams.cooccurrence import FLUSH_INTERVAL_S, CoocRows, RelatedItemsStore
from streams.decisions import DecisionEngine
from streams.gauges import Gauges
from streams.ingest import IngestAgent, IngestTopics
from streams.learning import LiveLearning
from streams.loop_lag import watch_loop_lag
from streams.outcomes import OutcomeTracker
from streams.page import SAMPLE_INTERVAL_S, Dashboard
from streams.pages import add_pages
from streams.refetch import Refetcher
from streams.segmentation import SNAPSHOT_INTERVAL_S, SegmentTrainerService, SnapshotFollower
from streams.settings import Settings
from streams.trainer_agent import TrainerAgent

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
#: How often inactive users are looked for (at most; a tenth of the retention if shorter).
RETENTION_SWEEP_S = 3600.0


class Worker:
    """One nudgestream worker process: the Faust app and what its agents share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = faust_app(settings)
        self.topics = settings.topics
        self.refetcher = Refetcher(self.app, settings)
        self.redis = redis_client(settings)
        # Re-keyed events come back through the same agent, co-partitioned by user.
        events_topic = self.app.topic(*self.topics.events.values(), self.topics.rekeyed)
        self.dlq_topic = self.app.topic(self.topics.dlq)
        deferred_topic = self.app.topic(self.topics.deferred)
        cooc_topic = self.app.topic(self.topics.cooc_pairs)
        segments_train_topic = self.app.topic(self.topics.segments_train, partitions=1)
        segments_model_topic = self.app.topic(self.topics.segments_model, partitions=1)
        # Keys are the user id's UTF-8 bytes and values the encoded profile, both "raw":
        # what recovery reads back from the changelog is exactly what was written.
        self.profiles = self._table("profiles")
        #: The consumer generation whose table recovery completed last (see unsettled()).
        self.recovered_generation = -1
        self.profiles.on_recover(self._on_recovered)
        cooc_table = self._table("cooc")
        pending = self._table("pending")
        decided = self._table("decided")

        cooc_config = CoocConfig()
        step_config = StepConfig(
            ProfileConfig(half_life_s=settings.profile_half_life_s), cooc_config, settings.policy
        )
        related = RelatedItemsStore(self.redis, settings.app_id, cooc_config)
        self.segments = SnapshotFollower(settings)
        self.trainer = SegmentTrainerService(settings, self.redis)
        self.decisions = DecisionEngine(self.app, settings, related, self.segments, pending)
        self.outcomes = OutcomeTracker(
            self.app, settings, decided, self.refetcher, self._dead_letter, self._released
        )
        self.decisions.on_allowed = self.outcomes.record
        attribution = AttributionTracker(settings, decided)
        LiveLearning(settings, self.redis, decided).install(
            self.decisions, self.outcomes, attribution, self._every
        )
        self.ingest = IngestAgent(
            settings,
            IngestTopics(self.app.topic(self.topics.rekeyed), cooc_topic, segments_train_topic),
            self.profiles,
            step_config,
            decisions=self.decisions,
            outcomes=self.outcomes,
            attribution=attribution,
            segments=self.segments,
            refetcher=self.refetcher,
            dead_letter=self._dead_letter,
            released=self._released,
        )
        self.cooc = CoocAgent(
            self.app, self.topics.cooc_pairs, cooc_table, CoocRows(cooc_config), related,
            self.refetcher, HeldAcks(self.app, lambda: self.recovered_generation, "cooc"),
            settings.state_cache_max_keys,
        )
        self.commands = CommandAgent(
            settings, deferred_topic, self.redis, self.profiles,
            {"pending": pending, "decided": decided}, self.decisions, self.refetcher,
        )
        trainer = TrainerAgent(
            settings, self.trainer, self.segments, segments_model_topic, self.refetcher
        )

        self.app.agent(events_topic, name="ingest")(self.ingest.consume)
        self.app.agent(cooc_topic, name="cooc")(self.cooc.consume)
        self.app.agent(deferred_topic, name="deferred")(self.commands.consume)
        self.app.agent(self.outcomes.topic, name="outcomes")(self.outcomes.consume)
        self.app.agent(segments_train_topic, name="segment-trainer")(trainer.consume)
        self.app.task(self.segments.run)
        self.app.task(watch_loop_lag)
        eraser = self.commands.eraser
        self._every(1.0, self.decisions.fire_due)
        self._every(min(RETENTION_SWEEP_S, eraser.retention_s / 10), eraser.sweep)
        self._every(FLUSH_INTERVAL_S, self.cooc.flush_related)
        # Also while the worker stops: Faust then waits for every held batch (wait_empty)
        # with its timers already ended; without a checkpoint it waited until killed.
        self._every(ROWS_CHECKPOINT[1], self.cooc.checkpoint_rows, through_stop=True)
        self._every(SNAPSHOT_INTERVAL_S, trainer.publish_segments)
        gauges = Gauges(self.app, self.topics, self.profiles, cooc_table, self.segments, self.redis)
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

    def _every(
        self, seconds: float, job: Callable[[], Awaitable[Any]], through_stop: bool = False
    ) -> None:
        """Run ``job`` every ``seconds``; a failure is logged and counted, not fatal.

        An exception in a Faust timer stops the whole worker: a gauge refresh that meets
        a partition in the middle of a rebalance must not take the event path down.
        A Faust timer ends as soon as the app starts stopping; ``through_stop`` keeps
        ``job`` running until the app's tasks are cancelled, after its consumer stopped.
        """
        name = getattr(job, "__name__", "timer").lstrip("_")

        async def guarded() -> None:
            try:
                await job()
            except Exception:
                metrics.TIMER_ERRORS.labels(timer=name).inc()
                log.exception("timer %s failed; it runs again in %.0f s", name, seconds)

        guarded.__name__ = f"timer_{name}"
        if not through_stop:
            self.app.timer(seconds)(guarded)
            return

        async def until_cancelled() -> None:
            while True:
                await asyncio.sleep(seconds)
                await guarded()

        until_cancelled.__name__ = guarded.__name__
        self.app.task(until_cancelled)

    def _table(self, name: str) -> TableT[bytes, bytes]:
        # key_type/value_type decide how *recovery* decodes the changelog; the schema how
        # writes encode it: both must say raw bytes.
        return self.app.Table(
            name, partitions=self.settings.partitions, schema=RAW_SCHEMA, key_type=bytes,
            value_type=bytes, options=ROCKSDB_OPTIONS,
        )

    # --- shared by the agents -----------------------------------------------------

    def _released(self, events: Sequence[EventT[bytes]], agent: str) -> bool:
        """Release the batch, unpersisted, if a rebalance or recovery overlapped it."""
        if not unsettled(self.app, events, self.recovered_generation):
            return False
        release(self.refetcher, events)
        metrics.BATCHES_RELEASED.labels(agent=agent).inc()
        return True

    async def _on_partitions_assigned(self, sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        self.refetcher.forget(assigned)
        events = set(self.topics.events.values())
        partitions = sorted({tp.partition for tp in assigned if tp.topic in events})
        if partitions:
            await self.decisions.reconcile(partitions)

    async def _on_recovered(self) -> None:
        self.recovered_generation = self.app.consumer_generation_id
        self.cooc.cache.forget()  # the recovery may have rewritten the rows read

    async def _on_partitions_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        self.refetcher.forget(revoked)
        self.cooc.cache.forget()
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
