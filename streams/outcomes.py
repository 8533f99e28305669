"""Push outcomes in: the ``outcomes`` agent and the per-user record of recent decisions.

Two writers here (and a third, :mod:`streams.attribution`, crediting clicks and buys)
share the changelog-backed ``decided`` table (key: the user id; value: a
:class:`models.decided.DecisionLog`), co-partitioned with the events:

* the decision path (:meth:`OutcomeTracker.record`, called by
  :class:`streams.decisions.DecisionEngine` for every allowed decision, pushed or held
  back for the control group). A table may only be written for an event of the key's
  partition: a decision made by the ``deferred`` agent is written at once (its message is
  the user's); one made at the end of an ingest batch is kept until the batch persists
  its profiles (:meth:`OutcomeTracker.persist`), so a batch released by a rebalance
  writes neither — its events are decided again, under the same decision ids.
* the ``outcomes`` agent (:meth:`OutcomeTracker.consume`), which decodes each outcome
  (``schemas/outcome.v1.json``), dead-letters malformed ones and those whose
  ``decision_id`` is not in the user's record (``unknown_decision``), and otherwise
  marks the outcome seen and counts it — once per (decision, outcome): the mark is in
  the table, so a replayed or duplicated outcome finds it and is not counted again.

Counting follows the ingest agent's order: dead letters acknowledged, then the records
written, then the metrics, and only then are the offsets committed by Faust.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import faust
from faust.streams import current_event
from faust.types import EventT, Message, RecordMetadata, TableT

from models.decided import KEEP_S, MAX_DECISIONS, DecidedPush, DecisionLog
from models.decision import Decision
from models.events import Rejection, RejectReason
from models.lift import Group
from models.outcomes import DEFAULT_MAX_OUTCOME_BYTES, OutcomeKind, decode_outcome
from models.policy import Trigger
from streams import metrics
from streams.batches import BACKGROUND_BATCH, batches
from streams.faust_internals import acting_for
from streams.refetch import Refetcher
from streams.settings import Settings

DeadLetter = Callable[[Rejection, Message, float], Awaitable[Awaitable[RecordMetadata]]]
Released = Callable[[Sequence[EventT[bytes]], str], bool]


class OutcomeTracker:
    """The worker's ``decided`` table, its writers and the ``outcomes`` agent."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        table: TableT[bytes, bytes],
        refetcher: Refetcher,
        dead_letter: DeadLetter,
        released: Released,
    ) -> None:
        self.settings = settings
        self.table = table
        self.refetcher = refetcher
        self.dead_letter = dead_letter
        self.released = released
        self.topic = app.topic(settings.topics.outcomes)
        #: Called with the decisions newly recorded (streams.learning.LiveLearning.exposed).
        self.on_recorded: Callable[[Sequence[DecidedPush]], None] | None = None
        #: Decisions of the running ingest batch, by user key, until it persists.
        self._unwritten: dict[bytes, list[DecidedPush]] = {}

    # --- the decision path ----------------------------------------------------------

    def record(self, trigger: Trigger, decision: Decision, holdout: bool) -> None:
        """Remember an allowed decision (its pushed items) for the user's outcomes."""
        entry = DecidedPush(
            decision_id=decision.decision_id,
            ts=decision.decided_at,
            items=tuple(item for item, _ in decision.items),
            categories=(trigger.category,),
            trigger=decision.trigger,
            segment=decision.segment,
            group=Group.CONTROL if holdout else Group.TREATMENT,
        )
        key = decision.user_id.encode()
        event = current_event()
        if event is not None and event.message.key == key:
            self._write(key, [entry])
        else:
            self._unwritten.setdefault(key, []).append(entry)

    def persist(self, events: Sequence[EventT[bytes]]) -> None:
        """Write the batch's decisions, each acting for an event of its user."""
        unwritten, self._unwritten = self._unwritten, {}
        by_key = {event.message.key: event for event in events}
        for key, entries in unwritten.items():
            source = by_key.get(key)
            if source is not None:  # else a released batch's: decided again on replay
                with acting_for(source):
                    self._write(key, entries)

    def _write(self, key: bytes, entries: Sequence[DecidedPush]) -> None:
        log = DecisionLog.from_bytes(self.table.get(key))
        added = [entry for entry in entries if log.record(entry)]
        if added:
            self.table[key] = log.to_bytes()
            metrics.DECISIONS_RECORDED.inc(len(added))
            for entry in added:
                metrics.count_exposure(entry)
            if self.on_recorded is not None:
                self.on_recorded(added)

    # --- the outcomes agent ---------------------------------------------------------

    async def consume(self, stream: faust.StreamT[bytes]) -> None:
        async for events in batches(stream, self.refetcher, BACKGROUND_BATCH):
            await self.handle(events)

    async def handle(self, events: Sequence[EventT[bytes]]) -> None:
        batch = _OutcomeBatch(time.time())
        for event in events:
            await self._handle(batch, event)
        await asyncio.gather(*batch.sent)
        if self.released(events, "outcomes"):
            return
        for key, (marks, source) in batch.marks.items():
            if not marks:
                continue
            # Read again: a decision may have been recorded while the batch was sent.
            log = DecisionLog.from_bytes(self.table.get(key))
            for decision_id, kind in marks:
                if log.find(decision_id) is not None:
                    log.observe(decision_id, kind)
            with acting_for(source):
                self.table[key] = log.to_bytes()
        batch.count()

    async def _handle(self, batch: _OutcomeBatch, event: EventT[bytes]) -> None:
        message = event.message
        decoded = decode_outcome(
            message.value or b"", now=batch.now, max_bytes=DEFAULT_MAX_OUTCOME_BYTES,
            max_future_skew_s=self.settings.max_future_skew_s,
        )
        if isinstance(decoded, Rejection):
            await self._reject(batch, decoded, message)
            return
        key = decoded.user_id.encode()
        if message.key != key:
            # The user's record is on the user's partition: re-key, as for events.
            batch.sent.append(await self.topic.send(key=key, value=message.value))
            return
        # Read at each outcome: the decision path may have recorded a decision since.
        entry = DecisionLog.from_bytes(self.table.get(key)).find(decoded.decision_id)
        if entry is None:
            detail = (
                f"decision_id {decoded.decision_id[:40]!r} is not one of the user's last "
                f"{MAX_DECISIONS} decisions of the past {KEEP_S / 86400:g} days: it was "
                "never issued to this user_id, or is older"
            )
            await self._reject(batch, Rejection(RejectReason.UNKNOWN_DECISION, detail), message)
            return
        mark = (decoded.decision_id, decoded.kind)
        marks = batch.marks.setdefault(key, ([], event))[0]
        if decoded.kind in entry.seen or mark in marks:
            batch.duplicates += 1
        else:
            marks.append(mark)
            batch.counted.append((decoded.kind, entry))

    async def _reject(self, batch: _OutcomeBatch, rejection: Rejection, message: Message) -> None:
        batch.sent.append(await self.dead_letter(rejection, message, batch.now))
        batch.rejected.append(rejection.reason)


@dataclass
class _OutcomeBatch:
    now: float
    sent: list[Awaitable[RecordMetadata]] = field(default_factory=list)
    #: The outcomes to mark per user, with an outcome of the user to write them for.
    marks: dict[bytes, tuple[list[tuple[str, OutcomeKind]], EventT[bytes]]] = field(default_factory=dict)
    counted: list[tuple[OutcomeKind, DecidedPush]] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[RejectReason] = field(default_factory=list)

    def count(self) -> None:
        """Count the batch once it is persisted, so never twice."""
        for kind, entry in self.counted:
            metrics.OUTCOMES_BY_LABELS[(kind, entry.trigger, entry.group)].inc()
        metrics.OUTCOMES_DUPLICATE.inc(self.duplicates)
        for reason in self.rejected:
            metrics.OUTCOMES_REJECTED_BY_REASON[reason].inc()
