"""The ``ingest`` agent: the event topics in, profiles and every side effect of an event out.

Per batch: admit each message (decode, dead-letter or re-key it), apply the core step of
:mod:`models.step` to each valid event, send what the steps produced (pair increments,
segment samples, decisions), and only then write the batch's profiles. The profile reads
and writes of this path are :meth:`IngestAgent._read_profile` and
:meth:`IngestAgent._write_profiles`, nowhere else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

import faust
from faust.types import EventT, RecordMetadata, TableT, TopicT

from models.events import Event, EventType, Rejection, RejectReason, decode_event
from models.features import FeatureConfig
from models.profile import Profile
from models.step import StepConfig, step
from streams import metrics
from streams.attribution import AttributionTracker
from streams.batches import batches
from streams.decisions import DecisionEngine
from streams.faust_internals import acting_for
from streams.outcomes import DeadLetter, OutcomeTracker, Released
from streams.pairs import PairBatch, source_id
from streams.refetch import Refetcher
from streams.segmentation import SnapshotFollower, training_record
from streams.settings import Settings


@dataclass(frozen=True)
class IngestTopics:
    """The topics the ingest agent sends to."""

    rekeyed: TopicT
    cooc_pairs: TopicT
    segments_train: TopicT


class IngestAgent:
    """The ingest agent and the per-user state it owns: the ``profiles`` table."""

    def __init__(
        self,
        settings: Settings,
        topics: IngestTopics,
        profiles: TableT[bytes, bytes],
        step_config: StepConfig,
        *,
        decisions: DecisionEngine,
        outcomes: OutcomeTracker,
        attribution: AttributionTracker,
        segments: SnapshotFollower,
        refetcher: Refetcher,
        dead_letter: DeadLetter,
        released: Released,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.profiles = profiles
        self.step_config = step_config
        self.decisions = decisions
        self.outcomes = outcomes
        self.attribution = attribution
        self.segments = segments
        self.refetcher = refetcher
        self.dead_letter = dead_letter
        self.released = released
        self._topic_types: dict[str, EventType] = {
            name: t for t, name in settings.topics.events.items()
        }

    async def consume(self, stream: faust.StreamT[bytes]) -> None:
        bounds = (self.settings.batch_max_events, self.settings.batch_wait_s)
        async for events in batches(stream, self.refetcher, bounds):
            await self.process_batch(events)

    async def process_batch(self, events: Sequence[EventT[bytes]]) -> None:
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
            await self._admit(batch, event)
        for partition, message in batch.pairs.messages().items():
            batch.sent.append(await self.topics.cooc_pairs.send(partition=partition, value=message))
        for record in batch.samples:
            batch.sent.append(await self.topics.segments_train.send(value=record))
        await self.decisions.flush(batch.now)
        # Only this batch's own messages: a producer flush would also wait for what the
        # other agents keep sending, and under load it hardly ever ends.
        await asyncio.gather(*batch.sent, *self.decisions.take_sent())
        if self.released(events, "ingest"):
            return
        self.outcomes.persist(events)
        self.attribution.persist(events)
        self._write_profiles(batch)
        batch.count()

    async def _admit(self, batch: _Batch, event: EventT[bytes]) -> None:
        """Decode one message: dead-letter it, re-key it, or apply it to its user."""
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
            batch.sent.append(await self.dead_letter(decoded, message, batch.now))
            batch.rejected.append(decoded.reason)
            return
        user_key = decoded.user_id.encode()
        if key != user_key:
            # Per-user state needs every event of a user on one partition: re-key it
            # instead of processing it on the wrong partition (or dropping it). Through an
            # internal topic: other readers of the event topic must not see it twice.
            batch.sent.append(await self.topics.rekeyed.send(key=user_key, value=value))
            return
        self.attribution.observe(user_key, decoded, event)
        if self._apply_step(batch, user_key, decoded, event):
            batch.applied.append(decoded)
        else:
            batch.duplicates += 1

    def _apply_step(
        self, batch: _Batch, user_key: bytes, event: Event, source: EventT[bytes]
    ) -> bool:
        """The user-side core step for one valid event; False for a duplicate."""
        stored = self._read_profile(batch, user_key)
        position = source.message.offset
        rekeyed = source.message.topic == self.settings.topics.rekeyed
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

    def _read_profile(self, batch: _Batch, user_key: bytes) -> Profile | None:
        """The user's profile as this batch left it, else as stored."""
        if user_key in batch.profiles:
            return batch.profiles[user_key][0]
        stored = self.profiles.get(user_key)
        return Profile.from_bytes(stored) if stored is not None else None

    def _write_profiles(self, batch: _Batch) -> None:
        """Write each user's latest profile once, acting for the event that changed it."""
        for user_key, (profile, event) in batch.profiles.items():
            with acting_for(event):
                self.profiles[user_key] = profile.to_bytes()

    def _training_record(self, profile: Profile, now: float) -> bytes:
        snapshot = self.segments.current
        features = snapshot.features if snapshot is not None else FeatureConfig()
        return training_record(profile, now, features)


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
