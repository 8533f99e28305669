"""Push decisions in the stream: triggers, delays, candidates, rate limits, publishing.

Runs inside the user-partitioned worker, after the profile update:

1. The ingest agent's step (:func:`models.step.step`) gives the event's triggers. An
   immediate one is queued with the profile (never changed later) and decided when the ingest agent ends its batch
   (:meth:`DecisionEngine.flush`); a delayed one ("no buy within N minutes", or a
   decision deferred by quiet hours) goes to ``notifications.deferred`` (keyed by user,
   co-partitioned with the events) and from there into the changelog-backed ``pending``
   table (compact records, :mod:`models.pending`), so a crash loses no timer. A timer on
   each worker re-sends due entries of its partitions as ``due`` messages, which the
   ``deferred`` agent decides one by one *in stream context* (tables may only change
   there), after :func:`models.policy.still_valid`. The timer finds them in an in-memory
   index of due times (:class:`models.pending.DueIndex`), kept up to date on every write
   and rebuilt from the table after each recovery, not by scanning the table.
2. The data the policy needs for all the triggers of a batch (related items of recent
   items, popular items overall and per category) is fetched from Redis in **one
   pipelined round trip**; popular lists, which change only when related items are
   published, are kept in process for that long (:class:`streams.cooccurrence.PopularCache`).
3. :func:`models.candidates.decide` picks the items; a trigger that finds none (cold
   start) is audited on ``notifications.suppressed`` as ``no_candidates``, with no items
   (:func:`models.routing.unfilled`).
4. The Redis limiter checks and records each push atomically, all of a batch in one
   call (:meth:`streams.limiter.RedisLimiter.check_many`, in event order); it fails
   closed. A push deferred by quiet hours is decided again when they end (spread over
   ``release_spread_s`` so a night's pushes do not all leave at 08:00:00).
5. An allowed decision is published to ``notifications.push``; once the broker has
   acknowledged it (awaited beside the stream, not in it) the limiter marks it published — unless the user is in the control
   group (:func:`models.routing.in_holdout`, drawn after the limits so that control users
   face the same limits as the others); suppressed, deferred and holdout decisions go to
   ``notifications.suppressed`` with their reason. Where a verdict sends a decision is
   :func:`models.routing.route`, the function the offline replay calls too.

Effectively once: the decision id is a hash of (trigger, triggering event id), so an
event replayed after a crash re-makes the *same* decision. The limiter returns its
recorded verdict without counting it again, and reports whether it was already
published, in which case it is not sent again. The remaining window — a crash between
the broker's ack and the published mark — gives one duplicate with the same
``decision_id``, which notification workers drop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TableT

from models.candidates import decide, needs
from models.decision import Decision, Outcome
from models.limits import Verdict
from models.pending import DueIndex, decode_pending, encode_pending, entry_id
from models.policy import Trigger, still_valid
from models.profile import Profile
from models.routing import Route, in_holdout, route, segment_of, unfilled
from streams import metrics
from streams.cooccurrence import RelatedItemsStore
from streams.limiter import RedisLimiter
from streams.page import latest_decisions
from streams.pairs import partition_of
from streams.segmentation import SnapshotFollower
from streams.settings import Settings

log = logging.getLogger(__name__)

#: A trigger whose candidate data could not be fetched (Redis down) is retried this much later.
RETRY_AFTER_S = 30.0
#: Pushes per partition looked at on assignment (more than a commit interval produces).
RECONCILE_RECORDS = 5000
RECONCILE_TIMEOUT_S = 15.0
#: Users read between two yields to the event loop while the due index is rebuilt.
REBUILD_YIELD_EVERY = 200

#: A trigger to decide now, with the profile to decide it on.
Due = tuple[Trigger, Profile]


class DecisionEngine:
    """The decision path of one worker.

    The ingest agent calls :meth:`on_triggers` per event and :meth:`flush` per batch; the
    ``deferred`` agent calls :meth:`on_deferred` per message, which decides at once
    (through the same path) rather than joining the ingest batch: a decision's sends
    belong to the stream that caused it.
    """

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        related: RelatedItemsStore,
        segments: SnapshotFollower,
        pending: TableT[bytes, bytes],
    ) -> None:
        self.settings = settings
        self.transactional = settings.processing_guarantee == "exactly_once"
        self.policy = settings.policy
        self.related = related
        self.segments = segments
        self.pending = pending
        self.limiter = RedisLimiter(settings.redis_url, settings.limits, prefix=f"{settings.app_id}:")
        self.push_topic = app.topic(settings.topics.push)
        self.audit_topic = app.topic(settings.topics.suppressed)
        self.deferred_topic = app.topic(settings.topics.deferred)
        #: Due times of the entries of ``pending`` (a due one pops once, so the ``deferred``
        #: agent is not flooded with repeats of it).
        self.index = DueIndex()
        self._rebuilds = 0
        pending.on_recover(self.rebuild_index)
        app.on_partitions_revoked.connect(self._on_partitions_revoked)  # type: ignore[arg-type]
        #: What :meth:`on_event` queued for the next :meth:`flush`.
        self._due: list[Due] = []
        self._waiting: list[Trigger] = []
        self._confirmations: set[asyncio.Future[None]] = set()
        #: Acknowledgements of the messages sent and not yet waited for, per agent task
        #: (the ingest and deferred agents share this engine; see take_sent).
        self._sent: dict[asyncio.Task[Any] | None, list[Awaitable[Any]]] = {}
        #: Called with (trigger, decision as pushed, in the control group?) for every
        #: allowed decision (see streams.outcomes.OutcomeTracker.record).
        self.on_allowed: Callable[[Trigger, Decision, bool], None] | None = None
        #: The learning policies (streams.learning.LiveLearning): a decision's stop
        #: reason before the limits, and a deferred decision's release time.
        self.steer: Callable[[Decision], str | None] | None = None
        self.release: Callable[[Decision, str | None], Callable[[float], float] | None] | None = None
        #: What the worker's page shows of the decisions emitted (streams.page).
        self.latest = latest_decisions(settings.pseudonym_key)

    async def reconcile(self, partitions: Sequence[int]) -> int:
        """On assignment: mark pushes already on the topic as published in the limiter.

        Closes the crash window between the broker's ack and the published mark: events
        after the last committed offset are replayed, and their decisions found here are
        not sent again. Only the tail matters (offsets are committed every few seconds).
        """
        try:
            async with asyncio.timeout(RECONCILE_TIMEOUT_S):
                pushed = await published_decisions(self.settings, partitions, RECONCILE_RECORDS)
                now = time.time()
                for start in range(0, len(pushed), 64):
                    await asyncio.gather(
                        *(self.limiter.mark_published(u, d, now) for u, d in pushed[start : start + 64])
                    )
        except Exception:
            log.warning("reconciling published pushes failed; duplicates are possible", exc_info=True)
            return 0
        return len(pushed)

    # --- from the ingest agent ---------------------------------------------------------

    def on_triggers(
        self, profile: Profile, due: Sequence[Trigger], later: Sequence[Trigger]
    ) -> None:
        """Queue an event's triggers (:class:`models.step.Step`) for :meth:`flush`."""
        self._due.extend((trigger, profile) for trigger in due)
        self._waiting.extend(later)

    async def flush(self, now: float) -> None:
        """Hold the queued delayed triggers and decide the immediate ones."""
        due, self._due = self._due, []
        waiting, self._waiting = self._waiting, []
        for trigger in waiting:
            await self._wait(trigger)
        await self._run(due, now)

    # --- delays ----------------------------------------------------------------------

    async def _wait(self, trigger: Trigger) -> None:
        entry = {"kind": "wait", "id": entry_id(trigger), "trigger": trigger.to_dict()}
        self._sending(
            await self.deferred_topic.send(key=trigger.user_id.encode(), value=orjson.dumps(entry))
        )

    async def on_deferred(self, key: bytes, message: dict[str, Any], profile: Profile | None) -> None:
        """``deferred`` agent: store a waiting trigger, or decide a due one."""
        raw = self.pending.get(key)
        entries = {entry_id(t): t for t in decode_pending(raw, key.decode())} if raw else {}
        if message["kind"] == "wait":
            trigger = Trigger.from_dict(message["trigger"])
            if entry_id(trigger) not in entries:  # else a replayed wait message
                entries[entry_id(trigger)] = trigger
                self.pending[key] = encode_pending(entries.values())
                self.index.add(self._partition(key), key, trigger.due_at)
            return
        stored = entries.pop(message["id"], None)
        if stored is None:
            return  # already handled (a duplicate due message)
        now = time.time()
        if profile is None or not still_valid(stored, profile, now, self.policy):
            metrics.DECISIONS.labels(trigger=stored.kind.value, outcome="cancelled").inc()
        else:
            await self._run([(stored, profile)], now)
            # The decision is on the broker before the entry that calls for it is gone: a
            # crash in between decides it again (same decision id, never published twice).
            await self._flush_sends()
        if entries:
            self.pending[key] = encode_pending(entries.values())
        else:
            del self.pending[key]

    def take_sent(self) -> list[Awaitable[Any]]:
        """The acknowledgements of what the calling agent sent since its last call."""
        return self._sent.pop(asyncio.current_task(), [])

    def _sending(self, ack: Awaitable[Any]) -> None:
        self._sent.setdefault(asyncio.current_task(), []).append(ack)

    async def _flush_sends(self) -> None:
        """Wait until the broker has acknowledged the decisions sent so far."""
        await asyncio.gather(*self.take_sent())

    async def fire_due(self) -> None:
        """Timer: re-send the due entries of this worker's partitions as ``due`` messages."""
        due = list(self.index.pop_due(time.time()).items())
        for done, (key, times) in enumerate(due):
            try:
                await self._fire(key, times)
            except BaseException:
                for unsent, unsent_times in due[done:]:  # tried again at the next tick
                    for due_at in unsent_times:
                        self.index.add(self._partition(unsent), unsent, due_at)
                raise

    async def _fire(self, key: bytes, times: set[float]) -> None:
        raw = self.pending.get(key)
        if raw is None:
            return  # handled or erased since it was indexed
        for trigger in decode_pending(raw, key.decode()):
            if trigger.due_at in times:
                message = orjson.dumps({"kind": "due", "id": entry_id(trigger)})
                await self.deferred_topic.send(key=key, value=message)

    async def rebuild_index(self) -> None:
        """After table recovery: index every entry of the partitions now assigned.

        Recovery has left the table with exactly those; the scan yields to the event loop
        every :data:`REBUILD_YIELD_EVERY` users, and a rebuild that a newer one (the next
        rebalance) overtakes stops.
        """
        self._rebuilds += 1
        rebuild = self._rebuilds
        self.index.clear()
        for n, key in enumerate(list(self.pending.keys())):
            if n % REBUILD_YIELD_EVERY == REBUILD_YIELD_EVERY - 1:
                await asyncio.sleep(0)
                if rebuild != self._rebuilds:
                    return
            raw = self.pending.get(key)
            if raw is not None:
                for trigger in decode_pending(raw, key.decode()):
                    self.index.add(self._partition(key), key, trigger.due_at)

    async def _on_partitions_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        self.index.drop(sorted({tp.partition for tp in revoked if tp.topic == self.settings.topics.deferred}))

    def _partition(self, key: bytes) -> int:
        # Keyed commands reach the deferred topic through the standard partitioner, and a
        # table entry lives in the partition of the command that wrote it.
        return partition_of(key, self.settings.partitions)

    # --- deciding --------------------------------------------------------------------

    async def _run(self, due: Sequence[Due], now: float) -> None:
        """Decide, limit and act on triggers: one candidate fetch, one limiter call."""
        decided = await self._decide(due, now)
        requests = [decision.limit_request(profile.tz) for (_, profile), decision in decided]
        results = await self.limiter.check_many(requests)
        for ((trigger, profile), decision), result in zip(decided, results, strict=True):
            if result.verdict is Verdict.ALLOWED and self.on_allowed is not None:
                # Replays too: the record of a decision published before a crash may be lost.
                holdout = in_holdout(decision.user_id, self.policy.holdout_percent, self.policy.holdout_salt)
                self.on_allowed(trigger, decision.restricted_to(result.items), holdout)
            release = self.release(decision, profile.tz) if self.release is not None else None
            routed = route(trigger, decision, result, self.policy, release)
            if routed is not None:
                await self._act(routed)

    async def _decide(self, due: Sequence[Due], now: float) -> list[tuple[Due, Decision]]:
        """The triggers that led to a decision, with it, in the order of ``due``."""
        segments = [segment_of(self.segments.current, profile, now) for _, profile in due]
        wanted = [
            needs(trigger, profile, self.policy, info)
            for (trigger, profile), (_, info) in zip(due, segments, strict=True)
        ]
        try:
            data = await self.related.fetch_many(wanted)
        except Exception:
            metrics.REDIS_ERRORS.labels(operation="candidates").inc()
            log.warning("candidate data unavailable; retrying the triggers later", exc_info=True)
            for trigger, _ in due:
                await self._wait(trigger.deferred_to(now + RETRY_AFTER_S))
            return []
        decided = []
        for (trigger, profile), (segment, info), candidates in zip(due, segments, data, strict=True):
            decision = decide(trigger, profile, candidates, segment, info, now, self.policy)
            stopped = None if decision is None or self.steer is None else self.steer(decision)
            if decision is None:
                await self._act_unfilled(trigger, segment, now)
            elif stopped is not None:
                await self._act(Route(decision, Outcome.SUPPRESSED, stopped))
            else:
                decided.append(((trigger, profile), decision))
        return decided

    async def _act_unfilled(self, trigger: Trigger, segment: int | None, now: float) -> None:
        """A trigger that found nothing (cold start) is audited too, with no items."""
        routed = unfilled(trigger, segment, now, self.policy)
        if routed is None:  # expired while it waited: nothing was decided
            metrics.DECISIONS.labels(trigger=trigger.kind.value, outcome="expired").inc()
            return
        await self._act(routed)

    async def _act(self, routed: Route) -> None:
        if routed.outcome is None:
            await self._publish(routed.decision)
            return
        assert routed.reason is not None  # route() gives every unsent decision a reason
        if routed.retry is not None:
            await self._wait(routed.retry)
        if routed.outcome is Outcome.SUPPRESSED:
            metrics.SUPPRESSED.labels(reason=routed.reason).inc()
        await self._audit(routed.decision, routed.outcome, routed.reason)

    async def _publish(self, decision: Decision) -> None:
        record = orjson.dumps(decision.to_dict())
        ack = await self.push_topic.send(key=decision.user_id.encode(), value=record)
        self.latest.add(decision, "pushed")
        # The agent waits for this acknowledgement once per batch (take_sent); marking
        # the push published in the limiter runs beside the stream, off the event path.
        self._sending(ack)
        task = asyncio.ensure_future(self._confirm(ack, decision))
        self._confirmations.add(task)
        task.add_done_callback(self._confirmations.discard)

    async def _confirm(self, ack: Awaitable[Any], decision: Decision) -> None:
        """After the broker's ack: tell the limiter it was published, count it."""
        try:
            await ack
        except Exception:
            log.warning("push %s not acknowledged; it is retried with its event", decision.decision_id)
            return
        if not self.transactional:
            # With Kafka transactions an acknowledged push may still be aborted by a
            # crash; only reconcile() (reading committed pushes) may mark it published.
            await self.limiter.mark_published(decision.user_id, decision.decision_id, time.time())
        metrics.DECISIONS.labels(trigger=decision.trigger.value, outcome="pushed").inc()
        metrics.DECISION_LATENCY.observe(max(0.0, time.time() - decision.event_ts))

    async def _audit(self, decision: Decision, outcome: Outcome, reason: str) -> None:
        record = orjson.dumps(decision.to_audit_dict(outcome, reason))
        self._sending(await self.audit_topic.send(key=decision.user_id.encode(), value=record))
        self.latest.add(decision, outcome.value, reason)
        metrics.DECISIONS.labels(trigger=decision.trigger.value, outcome=outcome.value).inc()


async def published_decisions(
    settings: Settings, partitions: Sequence[int], records: int
) -> list[tuple[str, str]]:
    """(user_id, decision_id) of the last ``records`` pushes of each push-topic partition."""
    consumer = AIOKafkaConsumer(
        **settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    found: list[tuple[str, str]] = []
    try:
        tps = [TopicPartition(settings.topics.push, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - records))
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            if not batch:
                break
            for tp, messages in batch.items():
                for message in messages:
                    if message.value:
                        record = orjson.loads(message.value)
                        found.append((record["user_id"], record["decision_id"]))
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return found

