"""Reference notification worker: each live push decision handed to a sender once.

``nudgestream notify`` reads ``notifications.push`` (``schemas/decision.v1.json``) in a
consumer group with ``isolation_level="read_committed"`` (decisions of aborted
transactions are never seen) and, for each decision:

1. drops it if its ``decision_id`` was already sent (counted as a duplicate);
2. skips it if it is past ``expires_at`` (counted as expired): a late push is worse
   than none;
3. hands it to a :class:`DecisionSender` (default :class:`JsonLinesSender`: JSON lines
   on stdout or appended to a file; a real deployment plugs in its push provider);
4. reports what it did on ``notifications.outcomes`` (``schemas/outcome.v1.json``):
   ``sent`` after the sender succeeded, ``failed`` with reason ``expired`` for a decision
   it skipped as too late, and ``failed`` with reason ``sender_error`` for each failed
   sender call (at-least-once: the worker counts each ``decision_id`` and kind once, so
   the retries and a re-read poll are harmless);
5. commits the offset only after the sender succeeded and its outcomes were
   acknowledged by the broker. On a sender error the record's
   partition is rewound to it and retried with exponential backoff; no offset past it
   is committed, so a restart delivers it again. The worker keeps polling while it
   retries, so it stays in its consumer group however long the sender is down.

**Why duplicates happen and how far the de-duplication reaches.** The decision engine
is at-least-once: after a crash it replays events and re-publishes the same decisions
under the same deterministic ``decision_id`` (same key, so same partition), usually
seconds after the first copy. This worker itself re-reads, after a crash or a
rebalance, the records of at most one poll (``--batch``) that were sent but not yet
committed. :class:`SeenDecisions` remembers sent ids *in memory*, each until its
decision expires: after that the expiry check drops any copy anyway, so memory stays
proportional to the decisions live at once (and a hard capacity bounds it). A restart,
or a partition moving to another worker, starts with an empty set and relies on the
committed offsets: only the uncommitted tail of one poll can be sent twice (or a copy
from the engine that straddles the move). Persisting the set in Redis would not close that
window (a crash between the push and the write still duplicates) and would put a
second dependency on the last hop; a push provider that takes ``decision_id`` as its
idempotency key closes it, so the id is passed through unchanged in every decision.

Metrics (own registry, own port, default 6067, ``/metrics``):
``nudgestream_notify_{received,sent,duplicates,expired,invalid,sender_errors,outcomes}_total``
and ``nudgestream_notify_latency_seconds`` (``decided_at`` to the sender's success).

>>> seen = SeenDecisions(capacity=2)
>>> seen.add("d1", expires_at=100.0)
>>> seen.contains("d1", now=99.0), seen.contains("d1", now=101.0), seen.contains("d2", now=99.0)
(True, False, False)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import logging
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Protocol

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from models.outcomes import OutcomeKind
from streams.client import EventProducer, InvalidEvent
from streams.metrics import LATENCY_BUCKETS
from streams.settings import Settings

log = logging.getLogger("nudgestream.notify")

DEFAULT_METRICS_PORT: Final = 6067
#: Sent ids remembered at most; beyond it the ones expiring soonest are forgotten first.
DEFAULT_DEDUPE_CAPACITY: Final = 200_000
#: Records per poll: also the most a crash can make this worker send twice.
DEFAULT_BATCH: Final = 100
POLL_TIMEOUT_MS: Final = 500

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class DecisionSender(Protocol):
    """Delivers one decision (the decoded ``notifications.push`` value); raises on failure."""

    async def send(self, decision: dict[str, Any]) -> None: ...


class OutcomeReporter(Protocol):
    """Where the worker reports outcomes (:class:`streams.client.EventProducer` is one)."""

    async def report_outcome(self, outcome: Mapping[str, Any]) -> Any: ...

    async def flush(self) -> None: ...


class JsonLinesSender:
    """Writes each decision as one JSON line to stdout, or appends it to ``path``."""

    def __init__(self, path: Path | None = None) -> None:
        self._out: IO[bytes] = path.open("ab") if path is not None else sys.stdout.buffer
        self._owned = path is not None

    async def send(self, decision: dict[str, Any]) -> None:
        self._out.write(orjson.dumps(decision) + b"\n")
        # Flushed per line: "sent" must mean the line left this process.
        self._out.flush()

    def close(self) -> None:
        if self._owned:
            self._out.close()


@dataclass(frozen=True, slots=True)
class Decision:
    """The fields this worker acts on, and the whole decoded record for the sender."""

    decision_id: str
    decided_at: float
    expires_at: float
    doc: dict[str, Any]


def parse_decision(raw: bytes | None) -> Decision | None:
    """The decision in a record's value, or None if it lacks what this worker needs."""
    try:
        doc = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    decision_id = doc.get("decision_id")
    decided_at = _finite_number(doc.get("decided_at"))
    expires_at = _finite_number(doc.get("expires_at"))
    if not isinstance(decision_id, str) or not decision_id:
        return None
    if decided_at is None or expires_at is None:
        return None
    return Decision(decision_id, decided_at, expires_at, doc)


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class SeenDecisions:
    """Ids of decisions already sent, each remembered until its decision expires.

    A copy arriving later is dropped by the expiry check instead, so forgetting then is
    safe. Both forgetting rules pop the id expiring soonest from one heap.
    """

    def __init__(self, capacity: int = DEFAULT_DEDUPE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def contains(self, decision_id: str, now: float) -> bool:
        self._forget_expired(now)
        return decision_id in self._expiry

    def add(self, decision_id: str, expires_at: float) -> None:
        if decision_id in self._expiry:
            return
        while len(self._expiry) >= self.capacity:
            self._forget_soonest()
        self._expiry[decision_id] = expires_at
        heapq.heappush(self._heap, (expires_at, decision_id))

    def _forget_expired(self, now: float) -> None:
        # Strictly earlier than now, like the expiry check (now > expires_at): at the
        # boundary a copy is still caught here.
        while self._heap and self._heap[0][0] < now:
            self._forget_soonest()

    def _forget_soonest(self) -> None:
        _, decision_id = heapq.heappop(self._heap)
        del self._expiry[decision_id]


class NotifyMetrics:
    """The worker's own Prometheus metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"nudgestream_notify_{name}_total", doc, registry=self.registry)

        self.received = counter("received", "Records read from the push topic (retries included).")
        self.sent = counter("sent", "Decisions the sender accepted.")
        self.duplicates = counter("duplicates", "Decisions dropped: their decision_id was already sent.")
        self.expired = counter("expired", "Decisions skipped because they were past expires_at.")
        self.invalid = counter("invalid", "Records skipped: not a decision this worker can act on.")
        self.sender_errors = counter("sender_errors", "Failed sender calls (each is retried).")
        self.outcomes = counter("outcomes", "Outcomes (sent, failed) reported on the outcomes topic.")
        self.latency = Histogram(
            "nudgestream_notify_latency_seconds",
            "Time from a decision's decided_at to the sender's success.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


class DecisionHandler:
    """What happens to one record: parse, drop duplicates and expired, send, remember."""

    def __init__(
        self,
        sender: DecisionSender,
        metrics: NotifyMetrics,
        seen: SeenDecisions | None = None,
        clock: Clock = time.time,
        reporter: OutcomeReporter | None = None,
    ) -> None:
        self.sender = sender
        self.metrics = metrics
        self.seen = seen or SeenDecisions()
        self.clock = clock
        #: None: outcomes are not reported (a sender used on its own).
        self.reporter = reporter

    async def handle(self, value: bytes | None) -> bool:
        """True when the record is settled (its offset may be committed), False to retry."""
        self.metrics.received.inc()
        decision = parse_decision(value)
        if decision is None:
            # Retrying cannot fix it; holding the partition on it would stop every push.
            self.metrics.invalid.inc()
            return True
        now = self.clock()
        if self.seen.contains(decision.decision_id, now):
            self.metrics.duplicates.inc()
            return True
        if now > decision.expires_at:
            self.metrics.expired.inc()
            await self._report(decision, OutcomeKind.FAILED, "expired", f"past expires_at {decision.expires_at}")
            return True
        try:
            await self.sender.send(decision.doc)
        except Exception as exc:
            self.metrics.sender_errors.inc()
            log.warning("sender failed for decision %s; will retry", decision.decision_id, exc_info=True)
            await self._report(decision, OutcomeKind.FAILED, "sender_error", f"{type(exc).__name__}: {exc}")
            return False
        self.seen.add(decision.decision_id, decision.expires_at)
        self.metrics.sent.inc()
        self.metrics.latency.observe(max(0.0, self.clock() - decision.decided_at))
        await self._report(decision, OutcomeKind.SENT)
        return True

    async def _report(
        self, decision: Decision, kind: OutcomeKind, reason: str | None = None, detail: str | None = None
    ) -> None:
        """Queue the outcome; :meth:`flush` waits for it before the offset is committed."""
        if self.reporter is None:
            return
        outcome = {
            "kind": kind.value, "decision_id": decision.decision_id,
            "user_id": decision.doc.get("user_id"), "ts": self.clock(),
        }
        if reason is not None:
            outcome["reason"] = reason
        if detail is not None:
            outcome["detail"] = detail[:256]
        try:
            await self.reporter.report_outcome(outcome)
        except InvalidEvent as exc:
            # A decision without a usable user_id: the push matters more than its report.
            log.warning("cannot report %s of decision %s: %s", kind, decision.decision_id, exc)
            return
        self.metrics.outcomes.inc()

    async def flush(self) -> None:
        """Wait until the broker has every outcome reported so far."""
        if self.reporter is not None:
            await self.reporter.flush()


class Record(Protocol):
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


class Consumer(Protocol):
    """The part of :class:`aiokafka.AIOKafkaConsumer` the loop uses."""

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[Any, Sequence[Record]]: ...

    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None: ...

    def seek(self, partition: Any, offset: int) -> None: ...


@dataclass(slots=True)
class Backoff:
    """Exponential delays between retries after a sender error, reset by a success."""

    initial_s: float = 0.5
    max_s: float = 30.0
    _next_s: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        self._next_s = min(self.max_s, self._next_s * 2 if self._next_s else self.initial_s)
        return self._next_s

    def reset(self) -> None:
        self._next_s = 0.0


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    #: Next offset to commit per partition (after its last settled record).
    commits: dict[Any, int]
    #: Offset of the record to retry per partition whose sender call failed.
    rewinds: dict[Any, int]
    settled: int


async def process_batch(
    batch: Mapping[Any, Sequence[Record]], handler: DecisionHandler
) -> BatchOutcome:
    """Handle records in order per partition, stopping a partition at its first failure."""
    commits: dict[Any, int] = {}
    rewinds: dict[Any, int] = {}
    settled = 0
    for partition, records in batch.items():
        for record in records:
            if not await handler.handle(record.value):
                rewinds[partition] = record.offset
                break
            commits[partition] = record.offset + 1
            settled += 1
    return BatchOutcome(commits, rewinds, settled)


@dataclass(frozen=True, slots=True)
class RunLimits:
    """When :func:`consume` returns (all None: only when ``stop`` is set)."""

    max_messages: int | None = None
    idle_exit_s: float | None = None
    stop: asyncio.Event | None = None


async def consume(
    consumer: Consumer,
    handler: DecisionHandler,
    limits: RunLimits = RunLimits(),
    *,
    batch: int = DEFAULT_BATCH,
    backoff: Backoff | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> int:
    """Poll, handle, commit, rewind on failure; return the number of settled records."""
    backoff = backoff or Backoff()
    settled = 0
    last_record = clock()
    while not _stopping(limits, settled):
        wanted = batch if limits.max_messages is None else min(batch, limits.max_messages - settled)
        records = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=wanted)
        if not records:
            if limits.idle_exit_s is not None and clock() - last_record >= limits.idle_exit_s:
                break
            continue
        last_record = clock()
        outcome = await process_batch(records, handler)
        settled += outcome.settled
        await handler.flush()  # at-least-once: the outcomes are on the broker before the commit
        await _commit(consumer, outcome.commits)
        for partition, offset in outcome.rewinds.items():
            _rewind(consumer, partition, offset)
        if outcome.rewinds:
            await sleep(backoff.next_delay())
        else:
            backoff.reset()
    return settled


def _stopping(limits: RunLimits, settled: int) -> bool:
    return (limits.stop is not None and limits.stop.is_set()) or (
        limits.max_messages is not None and settled >= limits.max_messages
    )


async def _commit(consumer: Consumer, offsets: dict[Any, int]) -> None:
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except KafkaError as exc:
        # A rebalance took the partitions away: their new owner resumes from the last
        # committed offsets, so at most this poll's records are sent twice.
        log.warning("offset commit failed (%s); records since the last commit will be re-read", exc)


def _rewind(consumer: Consumer, partition: Any, offset: int) -> None:
    try:
        consumer.seek(partition, offset)
    except KafkaError as exc:
        # No longer ours: the new owner starts from the committed offset, before it.
        log.warning("cannot rewind %s to %d (%s)", partition, offset, exc)


async def run_notifier(
    settings: Settings,
    sender: DecisionSender,
    *,
    group: str,
    limits: RunLimits = RunLimits(),
    metrics: NotifyMetrics | None = None,
    batch: int = DEFAULT_BATCH,
    backoff: Backoff | None = None,
) -> int:
    """Consume the deployment's push topic in ``group`` until ``limits``; return settled count."""
    consumer = AIOKafkaConsumer(
        settings.topics.push,
        group_id=group,
        client_id=f"{group}-notify",
        enable_auto_commit=False,
        isolation_level="read_committed",
        # A new group starts at the oldest retained decision: the expiry check skips the
        # stale ones, and none produced before the group existed is lost.
        auto_offset_reset="earliest",
        **settings.aiokafka_kwargs(),
    )
    try:
        await consumer.start()
        async with EventProducer.from_settings(settings, client_id=f"{group}-outcomes") as reporter:
            handler = DecisionHandler(sender, metrics or NotifyMetrics(), reporter=reporter)
            return await consume(consumer, handler, limits, batch=batch, backoff=backoff)
    finally:
        await consumer.stop()


# --- command line ---------------------------------------------------------------------


def add_notify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group", default=None, help="consumer group (default: NUDGESTREAM_APP_ID + '-notify')"
    )
    parser.add_argument(
        "--out", metavar="FILE", type=Path, default=None,
        help="append decisions as JSON lines to FILE (default: stdout)",
    )
    parser.add_argument(
        "--max-messages", metavar="N", type=_positive_int, default=None,
        help="exit after N records are settled (sent, duplicate, expired or invalid)",
    )
    parser.add_argument(
        "--idle-exit", metavar="S", type=_positive_float, default=None,
        help="exit after S seconds without a record (the start counts as one)",
    )
    parser.add_argument(
        "--batch", metavar="N", type=_positive_int, default=DEFAULT_BATCH,
        help="records per poll and commit; a crash can re-send at most this many",
    )
    parser.add_argument(
        "--metrics-port", metavar="PORT", type=int, default=DEFAULT_METRICS_PORT,
        help=f"port of /metrics on NUDGESTREAM_WEB_HOST (default {DEFAULT_METRICS_PORT}; 0: off)",
    )


def run_notify(args: argparse.Namespace, settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    group = args.group or f"{settings.app_id}-notify"
    metrics = NotifyMetrics()
    server = None
    if args.metrics_port:
        server, _ = start_http_server(args.metrics_port, settings.web_host, metrics.registry)
    sender = JsonLinesSender(args.out)
    try:
        settled = asyncio.run(_serve(settings, sender, group, metrics, args))
    except KafkaConnectionError as exc:
        print(f"nudgestream notify: cannot reach Kafka: {exc}", file=sys.stderr)
        return 1
    finally:
        sender.close()
        if server is not None:
            server.shutdown()
            server.server_close()
    log.info("notify: %d records settled, group %s", settled, group)
    return 0


async def _serve(
    settings: Settings, sender: DecisionSender, group: str, metrics: NotifyMetrics,
    args: argparse.Namespace,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available off the main thread; Ctrl-C then still interrupts, less gracefully.
        with contextlib.suppress(ValueError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    limits = RunLimits(args.max_messages, args.idle_exit, stop)
    return await run_notifier(
        settings, sender, group=group, limits=limits, metrics=metrics, batch=args.batch
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value
