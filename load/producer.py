"""Send event streams to Kafka at a target rate, or replay a real log in scaled time.

Two entry points share one send loop:

* :func:`produce` sends any iterable of :class:`~load.generator.GeneratedEvent` (for
  example :func:`load.generator.generate_events`) either as fast as possible or at a
  target rate paced by a :class:`TokenBucket`.
* :func:`replay_log` reads a CSV log (see :mod:`models.logfile`) and sends it as fast as
  possible or time-scaled by :class:`ReplaySchedule` (``speed=60`` plays an hour in a
  minute).

Both stop at ``duration`` seconds, at ``count`` messages or when a ``stop`` event is set,
whichever comes first, report progress about once a second, and flush and close the
producer on every way out, cancellation included. Delivery is counted when the broker
acknowledges it (``acks="all"`` with an idempotent producer), so ``sent`` never counts a
message that was lost. Messages are sent as record batches built here, one per partition
and chunk, keyed to the partition the standard (murmur2) partitioner would choose.

Timestamps in a replayed log are years old. The worker accepts old events (it rejects only
those from the future or before 2000), but time-decayed profiles, rate limits and quiet
hours then run in the log's time. ``rewrite_ts=True`` stamps each event with the wall
clock when it is sent instead, so a live worker sees a live stream. With ``speed`` above 1
that compresses every gap by ``speed``: sessions, decay and rate limits play out faster in
event time too. Shifting timestamps by a constant would keep the gaps but put events up to
``duration * (speed - 1)`` seconds into the future, beyond the worker's skew tolerance.

The pacing logic is pure and takes the time as an argument:

>>> bucket = TokenBucket(rate=1000.0, now=0.0)
>>> bucket.take(now=0.010, limit=100)
10
>>> schedule = ReplaySchedule(speed=60.0)
>>> [schedule.due_s(ts) for ts in (600.0, 660.0, 630.0, 1260.0)]
[0.0, 1.0, 1.0, 11.0]
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from load.generator import GeneratedEvent, topic_for
from models.events import Event
from models.logfile import BadRow, open_events

#: Durable, ordered per key, and without duplicates on retry. There is no linger: the
#: batches are built here from each chunk, up to ``max_batch_size`` bytes.
DEFAULT_PRODUCER_OPTIONS: Final[Mapping[str, Any]] = {
    "acks": "all",
    "enable_idempotence": True,
    "max_batch_size": 256 * 1024,
    "client_id": "nudgestream-load",
}
#: Messages taken from the source between checks of the limits and the pacer.
MAX_CHUNK: Final = 1000
#: Pacing slice: a paced sender sleeps at least this long, so it sends in batches
#: (250 messages a wake-up at 50k/s); the rate stays exact over longer spans.
MIN_SLEEP_S: Final = 0.005
#: Longest sleep between checks of the limits (duration, stop) while waiting to send.
MAX_IDLE_SLEEP_S: Final = 0.1
#: A replay shortens longer stretches of log time without events to this (see ReplaySchedule).
DEFAULT_MAX_GAP_S: Final = 3600.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ProgressReport:
    sent: int
    errors: int
    elapsed_s: float
    #: Acknowledged messages per second since the previous report.
    recent_rate: float

    @property
    def average_rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ProduceSummary:
    sent: int
    errors: int
    per_topic: dict[str, int]
    malformed_sent: int
    elapsed_s: float
    #: Source rows that could not be turned into a message (unparsable log rows).
    skipped: int = 0

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


ProgressCallback = Callable[[ProgressReport], None]


class TokenBucket:
    """Grants whole messages at ``rate`` per second; idle time banks at most ``burst``.

    Tokens accrue continuously and are handed out in whole numbers, so the long-run grant
    count is ``floor(rate * elapsed)`` however coarse the caller's sleeps are, as long as
    it polls again within ``(burst - 1) / rate`` seconds (a tenth of a second by default).
    """

    __slots__ = ("_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, *, now: float, burst: float | None = None) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a positive number")
        self.rate = rate
        # A tenth of a second of traffic absorbs event-loop hiccups without a visible spike;
        # at a few messages a second, two tokens keep a late wake-up from losing one.
        self.burst = burst if burst is not None else max(2.0, rate * 0.1)
        if not self.burst >= 1:
            raise ValueError("burst must be >= 1")
        self._tokens = 0.0
        self._updated = now

    def take(self, now: float, limit: int) -> int:
        """Consume and return up to ``limit`` whole tokens available at ``now``."""
        self._refill(now)
        granted = min(int(self._tokens), limit)
        self._tokens -= granted
        return granted

    def wait_s(self, now: float, want: int) -> float:
        """Seconds from ``now`` until ``want`` tokens (at most ``burst``) are available."""
        self._refill(now)
        missing = min(float(want), self.burst) - self._tokens
        return max(0.0, missing / self.rate)

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now


class ReplaySchedule:
    """When, in seconds after the replay starts, each logged event is due.

    Log time runs ``speed`` times faster than the wall clock. The schedule follows the
    latest timestamp seen, so a late (out-of-order) event is due at once instead of
    rewinding the replay, and a jump forward longer than ``max_gap_s`` of log time is
    shortened to it: one dirty timestamp months before the rest of a log must not stall
    the replay for days.
    """

    __slots__ = ("_due", "_log_now", "max_gap_s", "speed")

    def __init__(self, speed: float, *, max_gap_s: float = DEFAULT_MAX_GAP_S) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ValueError("speed must be a positive number")
        if not max_gap_s >= 0:
            raise ValueError("max_gap_s must be >= 0")
        self.speed = speed
        self.max_gap_s = max_gap_s
        self._log_now: float | None = None
        self._due = 0.0

    def due_s(self, ts: float) -> float:
        if self._log_now is not None and ts > self._log_now:
            self._due += min(ts - self._log_now, self.max_gap_s) / self.speed
        if self._log_now is None or ts > self._log_now:
            self._log_now = ts
        return self._due


@dataclass(slots=True)
class _Tally:
    """Counts acknowledgements as the producer's delivery futures resolve."""

    sent: int = 0
    errors: int = 0
    malformed_sent: int = 0
    per_topic: Counter[str] = field(default_factory=Counter)
    pending: set[asyncio.Future[Any]] = field(default_factory=set)

    def track(self, future: asyncio.Future[Any], topic: str, batch: list[GeneratedEvent]) -> None:
        self.pending.add(future)
        malformed = sum(record.malformed_reason is not None for record in batch)
        future.add_done_callback(functools.partial(self._settled, topic, len(batch), malformed))

    def _settled(self, topic: str, size: int, malformed: int, future: asyncio.Future[Any]) -> None:
        self.pending.discard(future)
        if future.cancelled() or future.exception() is not None:
            self.errors += size
            return
        self.sent += size
        self.per_topic[topic] += size
        self.malformed_sent += malformed

    async def settle(self) -> None:
        if self.pending:
            await asyncio.wait(list(self.pending))

    def summary(self, elapsed_s: float, skipped: int = 0) -> ProduceSummary:
        return ProduceSummary(
            sent=self.sent,
            errors=self.errors,
            per_topic=dict(self.per_topic),
            malformed_sent=self.malformed_sent,
            elapsed_s=elapsed_s,
            skipped=skipped,
        )


async def produce(
    source: Iterable[GeneratedEvent],
    *,
    bootstrap: str | Iterable[str],
    rate: float | None = None,
    duration: float | None = None,
    count: int | None = None,
    progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
    producer_options: Mapping[str, Any] | None = None,
) -> ProduceSummary:
    """Send ``source`` at ``rate`` messages/s (None: as fast as possible).

    Stops when the source ends, after ``duration`` seconds, after ``count`` messages or
    when ``stop`` is set (a signal handler can set it to end with a summary rather than
    a cancellation). ``producer_options`` override :data:`DEFAULT_PRODUCER_OPTIONS`
    (security settings go here). ``progress`` is called about once a second and at the end.
    """
    return await _send_all(
        paced_chunks(iter(source), rate),
        bootstrap=bootstrap,
        limits=_Limits(duration, count, stop),
        progress=progress,
        producer_options=producer_options,
    )


async def replay_log(
    path: str | Path,
    *,
    bootstrap: str | Iterable[str],
    speed: float | None = None,
    rate: float | None = None,
    rewrite_ts: bool = False,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
    topic_prefix: str = "",
    duration: float | None = None,
    count: int | None = None,
    progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
    producer_options: Mapping[str, Any] | None = None,
) -> ProduceSummary:
    """Replay a CSV event log, time-scaled by ``speed`` or paced at ``rate`` messages/s.

    With neither it is sent as fast as possible. ``rewrite_ts`` stamps each event with
    the wall clock at sending (see the module docstring for why and what it changes).
    Events go to ``<topic_prefix>events.<type>``; unparsable rows are counted as
    ``skipped``. Other arguments are as in :func:`produce`.
    """
    if speed is not None and rate is not None:
        raise ValueError("pace a replay by speed or by rate, not both")
    replay = LogReplay(open_events(path), rewrite_ts=rewrite_ts, topic_prefix=topic_prefix)
    chunks = (
        replay.chunks(ReplaySchedule(speed, max_gap_s=max_gap_s))
        if speed is not None
        else paced_chunks(replay.records(), rate)
    )
    summary = await _send_all(
        chunks,
        bootstrap=bootstrap,
        limits=_Limits(duration, count, stop),
        progress=progress,
        producer_options=producer_options,
    )
    return dataclasses.replace(summary, skipped=replay.skipped)


def record_for(event: Event, topic_prefix: str = "") -> GeneratedEvent:
    """The message for a valid event: its type's topic, keyed by user id."""
    topic = topic_prefix + topic_for(event.type)
    return GeneratedEvent(topic, event.user_id.encode(), event.to_bytes())


async def paced_chunks(
    records: Iterator[GeneratedEvent],
    rate: float | None,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> AsyncGenerator[list[GeneratedEvent], None]:
    """Yield ``records`` in chunks, no faster than ``rate`` per second when it is set."""
    bucket = TokenBucket(rate, now=clock()) if rate is not None else None
    # Wake up for a slice's worth of messages: at 50k/s one wake-up per message would
    # cost more than the sending, and tiny batches would cap throughput.
    want = max(1, math.ceil((rate or 0.0) * MIN_SLEEP_S))
    while True:
        size = MAX_CHUNK
        if bucket is not None:
            size = bucket.take(clock(), MAX_CHUNK)
            if size == 0:
                wait_s = bucket.wait_s(clock(), want)
                await sleep(min(max(MIN_SLEEP_S, wait_s), MAX_IDLE_SLEEP_S))
                yield []  # lets the sender check its limits while the rate is low
                continue
        chunk = list(itertools.islice(records, size))
        if not chunk:
            return
        yield chunk


class LogReplay:
    """Turns the rows of a log into messages, counting the rows it cannot use.

    :meth:`records` gives them all in file order (for rate-paced or unpaced sending);
    :meth:`chunks` gives them in time-scaled chunks as a :class:`ReplaySchedule` has
    them fall due. With ``rewrite_ts`` each event's time is the wall clock when it is
    taken, which is when it is about to be sent.
    """

    def __init__(
        self, rows: Iterator[Event | BadRow], *, rewrite_ts: bool = False, topic_prefix: str = ""
    ) -> None:
        self._rows = rows
        self._rewrite_ts = rewrite_ts
        self._topic_prefix = topic_prefix
        #: Rows that could not be parsed, counted as they are read.
        self.skipped = 0

    def records(self, *, wall_clock: Clock = time.time) -> Iterator[GeneratedEvent]:
        for event in self._events():
            yield self._record(event, wall_clock)

    async def chunks(
        self,
        schedule: ReplaySchedule,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> AsyncGenerator[list[GeneratedEvent], None]:
        events = ((schedule.due_s(event.ts), event) for event in self._events())
        upcoming = next(events, None)
        started = clock()
        while upcoming is not None:
            elapsed = clock() - started
            chunk: list[GeneratedEvent] = []
            while upcoming is not None and upcoming[0] <= elapsed and len(chunk) < MAX_CHUNK:
                chunk.append(self._record(upcoming[1], wall_clock))
                upcoming = next(events, None)
            if not chunk and upcoming is not None:
                wait_s = upcoming[0] - elapsed
                await sleep(min(max(wait_s, MIN_SLEEP_S), MAX_IDLE_SLEEP_S))
            # An empty chunk still lets the sender check its limits during long waits.
            yield chunk

    def _events(self) -> Iterator[Event]:
        for row in self._rows:
            if isinstance(row, BadRow):
                self.skipped += 1
            else:
                yield row

    def _record(self, event: Event, wall_clock: Clock) -> GeneratedEvent:
        if self._rewrite_ts:
            event = dataclasses.replace(event, ts=round(wall_clock(), 3))
        return record_for(event, self._topic_prefix)


@dataclass(frozen=True, slots=True)
class _Limits:
    duration: float | None
    count: int | None
    stop: asyncio.Event | None

    def __post_init__(self) -> None:
        if self.duration is not None and not self.duration > 0:
            raise ValueError("duration must be > 0 seconds")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")

    def reached(self, queued: int, elapsed_s: float) -> bool:
        return (
            (self.count is not None and queued >= self.count)
            or (self.duration is not None and elapsed_s >= self.duration)
            or (self.stop is not None and self.stop.is_set())
        )


async def _send_all(
    chunks: AsyncGenerator[list[GeneratedEvent], None],
    *,
    bootstrap: str | Iterable[str],
    limits: _Limits,
    progress: ProgressCallback | None,
    producer_options: Mapping[str, Any] | None,
) -> ProduceSummary:
    options = {**DEFAULT_PRODUCER_OPTIONS, **(producer_options or {})}
    servers = bootstrap if isinstance(bootstrap, str) else list(bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=servers, **options)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    tally = _Tally()
    reporter = _Reporter(tally, progress, time.monotonic)
    ticker = asyncio.create_task(reporter.every(1.0))
    try:
        async with contextlib.aclosing(chunks):
            await _pump(chunks, producer, tally, limits, reporter.elapsed_s)
        await producer.flush()
        await tally.settle()
    finally:
        ticker.cancel()
        # stop() flushes what is still buffered, also when we are being cancelled.
        await producer.stop()
    reporter.report()
    return tally.summary(reporter.elapsed_s())


async def _pump(
    chunks: AsyncIterator[list[GeneratedEvent]],
    producer: AIOKafkaProducer,
    tally: _Tally,
    limits: _Limits,
    elapsed_s: Clock,
) -> None:
    queued = 0
    async for chunk in chunks:
        if limits.reached(queued, elapsed_s()):
            return
        allowed = chunk if limits.count is None else chunk[: limits.count - queued]
        await _send_chunk(producer, allowed, tally)
        queued += len(allowed)
        if limits.reached(queued, elapsed_s()):
            return  # before the source makes (or waits for) another chunk
        # Give the producer's sender task a turn even when no send had to wait.
        await asyncio.sleep(0)


def partition_for(key: bytes | None, partitions: Sequence[int]) -> int:
    """The partition of ``partitions`` (sorted) that the Java client and Faust pick for key.

    >>> partition_for(b"u1", [0, 1, 2, 3]) == partition_for(b"u1", [0, 1, 2, 3])
    True
    """
    if key is None:
        return random.choice(partitions)
    return partitions[_key_slot(key, len(partitions))]


@functools.lru_cache(maxsize=1 << 16)
def _key_slot(key: bytes, partition_count: int) -> int:
    # murmur2 is pure Python here; users repeat, so caching saves most of its cost.
    slot: int = (murmur2(key) & 0x7FFFFFFF) % partition_count
    return slot


async def _send_chunk(
    producer: AIOKafkaProducer, chunk: list[GeneratedEvent], tally: _Tally
) -> None:
    """Send a chunk as whole record batches, one per partition (or more when full).

    Building batches ourselves costs a few microseconds a message instead of the
    ~25 us of ``send()``, which is what makes 50k messages/s reachable in one process.
    """
    groups: dict[tuple[str, int], list[GeneratedEvent]] = defaultdict(list)
    partitions: dict[str, list[int]] = {}
    for record in chunk:
        known = partitions.get(record.topic)
        if known is None:
            try:
                known = sorted(await producer.partitions_for(record.topic))
            except KafkaError:
                known = []  # the topic is unavailable: its messages count as errors
            partitions[record.topic] = known
        if known:
            groups[(record.topic, partition_for(record.key, known))].append(record)
        else:
            tally.errors += 1
    for (topic, partition), records in groups.items():
        await _send_batches(producer, topic, partition, records, tally)


async def _send_batches(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    records: list[GeneratedEvent],
    tally: _Tally,
) -> None:
    batch = producer.create_batch()
    members: list[GeneratedEvent] = []
    for record in records:
        if batch.append(key=record.key, value=record.value, timestamp=None) is None:
            await _submit(producer, batch, topic, partition, members, tally)
            batch, members = producer.create_batch(), []
            # An empty batch always takes one message, however large.
            batch.append(key=record.key, value=record.value, timestamp=None)
        members.append(record)
    await _submit(producer, batch, topic, partition, members, tally)


async def _submit(
    producer: AIOKafkaProducer,
    batch: Any,
    topic: str,
    partition: int,
    members: list[GeneratedEvent],
    tally: _Tally,
) -> None:
    # A closed batch is sent without waiting for linger: it is already as full as it gets.
    batch.close()
    try:
        future = await producer.send_batch(batch, topic, partition=partition)
    except KafkaError:
        tally.errors += len(members)
        return
    tally.track(future, topic, members)


class _Reporter:
    """Hands progress to the callback: periodically while sending, and once at the end."""

    def __init__(self, tally: _Tally, callback: ProgressCallback | None, clock: Clock) -> None:
        self._tally = tally
        self._callback = callback
        self._clock = clock
        self._started = self._last_time = clock()
        self._last_sent = 0

    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def report(self) -> None:
        if self._callback is None:
            return
        now = self._clock()
        sent = self._tally.sent
        recent_rate = (sent - self._last_sent) / max(now - self._last_time, 1e-9)
        self._callback(ProgressReport(sent, self._tally.errors, now - self._started, recent_rate))
        self._last_sent, self._last_time = sent, now

    async def every(self, interval_s: float) -> None:
        while self._callback is not None:
            await asyncio.sleep(interval_s)
            self.report()
