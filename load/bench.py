"""``nudgestream bench``: throughput, latency and memory of one worker, in one run.

The run uses the configured, real Kafka broker and Redis server, in a namespace of its
own (topic prefix, application id, consumer group, Redis key prefix ``bench-<hex>``),
all of which it deletes at the end:

1. **Backlog.** ``events`` synthetic events (:mod:`load.generator`: ``users`` users, no
   malformed messages, event times ending about a minute before now) are produced to
   the three event topics.
2. **Raw passthrough** (``raw_passthrough_eps``). One plain aiokafka consumer reads those
   messages (same topics, partitions and bytes) and one plain aiokafka producer writes a
   one-byte message per event to a sink topic with ``acks=all``, as the worker does. No
   decoding, no state: the ceiling of one Python process on this broker and machine,
   timed from the first message consumed to the last one acknowledged.
3. **Pipeline** (``pipeline_eps``). One worker process (``python -m streams.cli worker``)
   is started on the backlog. Its ``/metrics`` are polled (events handled = consumed +
   rejected + duplicates) from the first poll that sees progress, so start-up is
   excluded. The worker feeds itself (co-occurrence increments, segment samples, delayed
   triggers), so the clock stops when its consumer group has no lag left on any topic;
   ``ingest_eps`` is the rate until ``/metrics`` counted every event.
4. **Memory** (``bytes_per_user``). VmRSS of the worker once it has drained the backlog,
   minus VmRSS when it turned ready, divided by the users that occur in the backlog: an
   upper bound of the per-user state, as item rows, the segment model, buffers and
   allocator slack are in the difference too. ``tables`` gives the state itself: keys and
   encoded bytes of every table, read back from the changelogs.
5. **Latency** (``latency_ms``). Fresh events, stamped with the wall clock as they are
   sent, are offered at ``load_share`` (50 %) of ``pipeline_eps`` for ``latency_s``
   seconds. Every decision made for them (pushed, or audited as suppressed, deferred or
   holdout) is read back and timed as its arrival minus its ``event_ts``, each
   ``decision_id`` once (:mod:`load.decisions`). The worker's own
   ``nudgestream_event_lag_seconds`` histogram (event time to end of processing) over the
   same span gives ``event_lag_ms``.
6. **Lag** (``lag_end``). End offsets minus the worker group's committed offsets, over
   every topic the group reads, once the worker has handled all it was sent.

Diagnostics beside the figures: the worker's CPU use in both phases (``worker_cpu``,
1.0 = one core) and the messages it wrote to Kafka per backlog event, by topic
(``messages_per_event``).

>>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5)
3.0
>>> percentile([], 0.99) is None
True
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.admin import DeleteGroupsRequest

from load.cli import with_prefix
from load.decisions import DECISION_GRACE_S, DecisionWatcher
from load.demo import DemoWorker, Snapshot, scrape
from load.generator import GeneratedEvent, GeneratorConfig, SyntheticWorld, generate_events
from load.producer import produce
from load.services import KAFKA_VERSION
from streams.admin import create_topics
from streams.settings import Settings, load

#: Goals the figures are judged against (docs/BENCHMARKS.md).
GOAL_THROUGHPUT_RATIO: Final = 0.5
GOAL_P99_DECISION_MS: Final = 50.0
GOAL_BYTES_PER_USER: Final = 1024.0
#: Event-time rate of the backlog: 100k events span about 100 s ending just before now,
#: so none is in the future and none is too old for the co-occurrence window.
BACKLOG_EVENTS_PER_S: Final = 1000.0
POLL_S: Final = 0.2
#: The raw passthrough's output topic (under the run's prefix).
SINK: Final = "bench.sink"
REPORT_S: Final = 5.0
LAG_POLL_S: Final = 0.5
#: The worker made no progress for this long: something is broken, stop waiting.
STALL_S: Final = 60.0
#: Faust commits offsets every few seconds; lag is read after waiting up to this long.
SETTLE_S: Final = 20.0
#: A lag of transaction markers only (see _only_markers_left) that stays this long is final.
QUIET_S: Final = 10.0
#: Decisions still on their way when the offered stream stops are waited for this long.
EVENT_LAG_METRIC: Final = "nudgestream_event_lag_seconds"
QUANTILES: Final = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
#: Settings that are secrets: never echoed in the reported command.
SECRET_VARIABLES: Final = ("NUDGESTREAM_KAFKA_SASL_PASSWORD", "NUDGESTREAM_PSEUDONYM_KEY")
PROJECT_DIR: Final = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (a stall, a dead worker)."""


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BenchConfig:
    events: int = 50_000
    users: int = 5000
    seed: int = 1
    #: Seconds of fresh events offered for the latency figure.
    latency_s: float = 25.0
    #: Offered rate in the latency phase, as a share of the measured pipeline rate.
    load_share: float = 0.5
    #: Run the worker under pyinstrument and write its profile here (slows the worker).
    profile: Path | None = None
    #: Extra environment of the worker only, for what-if runs (e.g. Faust's PRODUCER_LINGER).
    worker_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.events < 1 or self.users < 2:
            raise ValueError("need events >= 1 and users >= 2")
        if not self.latency_s > 0 or not 0 < self.load_share <= 1:
            raise ValueError("need latency_s > 0 and 0 < load_share <= 1")


# --- the run -------------------------------------------------------------------------


async def run_bench(
    settings_env: Mapping[str, str],
    *,
    events: int,
    users: int,
    seed: int,
    latency_s: float = 25.0,
    load_share: float = 0.5,
    profile: Path | None = None,
    worker_env: Mapping[str, str] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Run every phase (see the module doc) and return the figures as a JSON-able dict."""
    config = BenchConfig(events, users, seed, latency_s, load_share, profile, worker_env or {})
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix=f"nudgestream-{tag}-"))
    env = isolated_env(settings_env, tag, scratch)
    settings = load(env)
    say(f"namespace {tag} on {','.join(settings.kafka_bootstrap)}; worker log in {scratch}")
    result: dict[str, Any] = {}
    try:
        await create_topics(settings)
        result = await _measure(settings, env, config, scratch)
    finally:
        await clean_up(settings)
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        **result,
        "app_id": settings.app_id,
        "topic_prefix": settings.topic_prefix,
        "profile": str(profile) if profile else None,
        "machine": machine_facts(),
        "versions": versions(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
    }


def isolated_env(base: Mapping[str, str], tag: str, scratch: Path) -> dict[str, str]:
    """``base`` with this run's own app id, topic prefix, web port and data folder."""
    return {
        **base,
        "NUDGESTREAM_APP_ID": tag,
        "NUDGESTREAM_TOPIC_PREFIX": f"{tag}.",
        "NUDGESTREAM_WEB_PORT": str(free_port()),
        "NUDGESTREAM_DATA_DIR": str(scratch / "data"),
    }


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _measure(
    settings: Settings, env: dict[str, str], config: BenchConfig, scratch: Path
) -> dict[str, Any]:
    world = SyntheticWorld.build(_generator_config(config, start_ts=0.0))
    backlog = build_backlog(settings, config, world)
    active_users = len({record.key for record in backlog})
    say(f"producing the backlog: {len(backlog):,} events of {active_users:,} users ...")
    await _produce_all(settings, backlog)
    say("raw aiokafka passthrough ...")
    raw = await raw_passthrough(settings, len(backlog))
    say(f"raw passthrough: {raw.eps:,.0f} events/s")
    worker = BenchWorker(settings, scratch / "worker.log")
    worker.launch({**env, **config.worker_env}, config.profile)
    try:
        async with GroupLag(settings) as lag:
            worker.wait_ready()
            rss_ready = worker.rss_bytes()
            say(f"worker ready (pid {worker.pid}, VmRSS {rss_ready / 2**20:,.0f} MiB); draining the backlog ...")
            cpu, wall = worker.cpu_seconds(), time.monotonic()
            pipeline = await measure_pipeline(worker, lag, len(backlog))
            pipeline_cpu = (worker.cpu_seconds() - cpu) / (time.monotonic() - wall)
            rss_drained = worker.rss_bytes()
            tables = await table_state(settings)
            written = await messages_per_event(settings, len(backlog))
            offered = pipeline.full.eps * config.load_share
            say(f"latency: offering {offered:,.0f} events/s for {config.latency_s:.0f}s ...")
            latency = await measure_latency(settings, worker, config, world, offered)
            lag_end = await lag.settled()
    finally:
        worker.stop()
    memory = (rss_drained - rss_ready) / active_users
    ratio = pipeline.full.eps / raw.eps
    latency_cpu = latency.pop("worker_cpu")
    return {
        "events": len(backlog),
        "users": config.users,
        "active_users": active_users,
        "seed": config.seed,
        "raw_passthrough_eps": round(raw.eps, 1),
        "pipeline_eps": round(pipeline.full.eps, 1),
        "ingest_eps": round(pipeline.ingest.eps, 1),
        "ratio": round(ratio, 3),
        "offered_eps": round(offered, 1),
        # CPU seconds per second of the worker process (1.0 = one core fully busy).
        "worker_cpu": {"pipeline": round(pipeline_cpu, 2), "latency": latency_cpu},
        **latency,
        "bytes_per_user": round(memory, 1),
        "tables": tables,
        "table_bytes_per_user": round(sum(t["bytes"] for t in tables.values()) / active_users, 1),
        "rss_ready_bytes": rss_ready,
        "rss_drained_bytes": rss_drained,
        "messages_per_event": written,
        "lag_end": sum(lag_end.values()),
        "lag_end_by_topic": lag_end,
        "seconds": {
            "raw_passthrough": round(raw.seconds, 2),
            "ingest": round(pipeline.ingest.seconds, 2),
            "pipeline": round(pipeline.full.seconds, 2),
        },
        "worker_env": dict(config.worker_env),
        "goals": goals(ratio, latency["latency_ms"]["p99"], memory),
    }


# --- events ----------------------------------------------------------------------------


def _generator_config(config: BenchConfig, start_ts: float) -> GeneratorConfig:
    return GeneratorConfig(
        users=config.users,
        seed=config.seed,
        malformed_share=0.0,
        start_ts=start_ts,
        events_per_second=BACKLOG_EVENTS_PER_S,
        concurrent_sessions=min(200, config.users // 2),
    )


def build_backlog(
    settings: Settings, config: BenchConfig, world: SyntheticWorld
) -> list[GeneratedEvent]:
    """The backlog, built before timing anything; its event times end about a minute ago."""
    span_s = config.events / BACKLOG_EVENTS_PER_S
    # The Poisson clock ends near start + span; the margin keeps its tail out of the future.
    start_ts = time.time() - 1.2 * span_s - 60.0
    source = generate_events(_generator_config(config, start_ts), world)
    return list(itertools.islice(with_prefix(source, settings.topic_prefix), config.events))


def stamped_now(
    records: Iterable[GeneratedEvent], clock: Callable[[], float] = time.time
) -> Iterator[GeneratedEvent]:
    """``records`` with each event's ``ts`` set to the clock when the sender takes it."""
    for record in records:
        doc = orjson.loads(record.value)
        doc["ts"] = clock()
        yield record._replace(value=orjson.dumps(doc))


def _producer_options(settings: Settings) -> dict[str, Any]:
    return {k: v for k, v in settings.aiokafka_kwargs().items() if k != "bootstrap_servers"}


async def _produce_all(settings: Settings, records: list[GeneratedEvent]) -> None:
    summary = await produce(
        records, bootstrap=settings.kafka_bootstrap, producer_options=_producer_options(settings)
    )
    if summary.errors or summary.sent != len(records):
        raise BenchError(f"producing the backlog failed: {summary}")


def event_partitions(settings: Settings) -> list[TopicPartition]:
    return [
        TopicPartition(topic, p)
        for topic in settings.topics.events.values()
        for p in range(settings.partitions)
    ]


# --- raw passthrough -------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    count: int
    seconds: float

    @property
    def eps(self) -> float:
        return self.count / self.seconds


async def raw_passthrough(settings: Settings, expected: int) -> Throughput:
    """Read the backlog and write one small message per event; no processing."""
    sink = f"{settings.topic_prefix}{SINK}"
    await _create_topic(settings, sink)
    kwargs = settings.aiokafka_kwargs()
    consumer = AIOKafkaConsumer(
        **kwargs, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(**kwargs, acks="all")
    await consumer.start()
    await producer.start()
    try:
        sources = event_partitions(settings)
        consumer.assign(sources)
        await consumer.seek_to_beginning(*sources)
        return await _pass_through(consumer, producer, sink, expected)
    finally:
        await consumer.stop()
        await producer.stop()


async def _pass_through(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, sink: str, expected: int
) -> Throughput:
    acks: list[asyncio.Future[Any]] = []
    first: float | None = None
    last_progress = time.monotonic()
    while len(acks) < expected:
        batch = await consumer.getmany(timeout_ms=1000)
        if batch:
            first = first or time.monotonic()
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > STALL_S:
            raise BenchError(f"raw passthrough stalled at {len(acks):,} of {expected:,} events")
        for tp, records in batch.items():
            for record in records:
                acks.append(await producer.send(sink, b"1", key=record.key, partition=tp.partition))
    await asyncio.gather(*acks)
    assert first is not None
    return Throughput(len(acks), time.monotonic() - first)


async def _create_topic(settings: Settings, name: str) -> None:
    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=settings.partitions, replication_factor=settings.replication)]
        )
    finally:
        await admin.close()


# --- the worker ------------------------------------------------------------------------


class BenchWorker(DemoWorker):
    """The demo's worker process, started with the bench's environment, maybe profiled."""

    def launch(self, env: Mapping[str, str], profile: Path | None) -> None:
        command = [sys.executable, "-m", "streams.cli", "worker"]
        if profile is not None:
            # pyinstrument picks the report format from the file name (.txt, .html, ...).
            command[1:1] = ["-m", "pyinstrument", "-o", str(profile)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **env}, cwd=PROJECT_DIR,
            )

    def stop(self) -> None:
        # SIGINT, not SIGTERM: Faust stops cleanly either way, and a profiler only
        # writes its report when the program ends through KeyboardInterrupt or exit.
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident memory now, from /proc (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError("VmRSS not found in /proc/<pid>/status")

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far, from /proc (Linux)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        # Fields 14 and 15 of stat(5), counted after the command name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def scrape(self) -> Snapshot:
        """The worker's metrics; a busy worker may answer late, so a slow scrape is retried."""
        deadline = time.monotonic() + STALL_S
        while True:
            try:
                return await asyncio.to_thread(scrape, self.settings.web_port)
            except OSError:  # timeouts and refused connections alike
                if time.monotonic() > deadline or self.process is None or self.process.poll() is not None:
                    raise BenchError(f"the worker's /metrics did not answer; see {self.log_path}") from None
                await asyncio.sleep(POLL_S)


def handled(snapshot: Snapshot) -> float:
    """Events the worker is done with: processed, dead-lettered or skipped as duplicates."""
    return snapshot.processed + snapshot.rejected + snapshot.get("nudgestream_events_duplicate_total")


@dataclass(frozen=True)
class PipelineRates:
    #: Until the ingest agent has handled every event (what /metrics counts).
    ingest: Throughput
    #: Until the worker group has also drained the topics it feeds itself (co-occurrence
    #: increments, segment samples): the rate the worker sustains.
    full: Throughput


async def measure_pipeline(worker: BenchWorker, lag: GroupLag, expected: int) -> PipelineRates:
    """Time the backlog from the first poll that sees progress (start-up excluded)."""
    origin = await _wait_handled(worker, 1)
    ingested = await _wait_handled(worker, expected, report=True)
    ingest = Throughput(int(handled(ingested) - handled(origin)), ingested.at - origin.at)
    if ingest.seconds <= 0:
        raise BenchError("the backlog was drained before it could be timed; use more events")
    say(f"ingest agent done: {ingest.eps:,.0f} events/s; waiting for the internal topics ...")
    drained_at = await lag.wait_drained()
    return PipelineRates(ingest, Throughput(ingest.count, drained_at - origin.at))


async def _wait_handled(worker: BenchWorker, target: float, *, report: bool = False) -> Snapshot:
    snapshot = await worker.scrape()
    progress_at, progress = snapshot.at, handled(snapshot)
    reported_at = snapshot.at
    while handled(snapshot) < target:
        if report and snapshot.at - reported_at >= REPORT_S:
            say(f"  handled {progress:,.0f} of {target:,.0f} events")
            reported_at = snapshot.at
        if worker.process is not None and worker.process.poll() is not None:
            raise BenchError(f"the worker exited; see {worker.log_path}")
        if snapshot.at - progress_at > STALL_S:
            raise BenchError(
                f"the worker made no progress for {STALL_S:.0f}s at {progress:,.0f} of "
                f"{target:,.0f} events; see {worker.log_path}"
            )
        await asyncio.sleep(POLL_S)
        snapshot = await worker.scrape()
        if handled(snapshot) > progress:
            progress_at, progress = snapshot.at, handled(snapshot)
    return snapshot


# --- latency ---------------------------------------------------------------------------


async def measure_latency(
    settings: Settings, worker: BenchWorker, config: BenchConfig, world: SyntheticWorld,
    offered_eps: float,
) -> dict[str, Any]:
    before = await worker.scrape()
    started = time.time()
    watcher = DecisionWatcher(settings, since=started)
    watching = await watcher.start()
    live = dataclasses.replace(
        _generator_config(config, start_ts=started), seed=config.seed + 1
    )
    cpu, wall = worker.cpu_seconds(), time.monotonic()
    summary = await produce(
        stamped_now(with_prefix(generate_events(live, world), settings.topic_prefix)),
        bootstrap=settings.kafka_bootstrap, rate=offered_eps, duration=config.latency_s,
        producer_options=_producer_options(settings),
    )
    cpu_share = (worker.cpu_seconds() - cpu) / (time.monotonic() - wall)
    after = await _wait_handled(worker, handled(before) + summary.sent)
    await asyncio.sleep(DECISION_GRACE_S)
    watcher.stop()
    await watching
    figures = latency_figures(watcher.latencies_s, before, after, summary.sent, settings)
    return {**figures, "worker_cpu": round(cpu_share, 2)}


def latency_figures(
    latencies_s: Mapping[str, list[float]], before: Snapshot, after: Snapshot, sent: int,
    settings: Settings,
) -> dict[str, Any]:
    every = [s for values in latencies_s.values() for s in values]
    pushed = latencies_s.get(settings.topics.push, [])
    note = None
    if not every:
        note = (
            "no decision arrived for the offered events (is the decision path in this "
            "build?): decision latencies are null"
        )
    return {
        "latency_events": sent,
        "decisions": len(every),
        "decisions_by_topic": {topic: len(values) for topic, values in latencies_s.items()},
        "latency_ms": _quantiles_ms(every),
        "push_latency_ms": _quantiles_ms(pushed),
        "latency_note": note,
        "event_lag_ms": {
            name: _ms(histogram_delta_quantile(before, after, EVENT_LAG_METRIC, q))
            for name, q in QUANTILES.items()
        },
    }


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _quantiles_ms(values_s: list[float]) -> dict[str, float | None]:
    return {name: _ms(percentile(values_s, q)) for name, q in QUANTILES.items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def histogram_delta_quantile(
    before: Snapshot, after: Snapshot, metric: str, q: float
) -> float | None:
    """The q-quantile of what a histogram observed between two scrapes.

    Interpolated linearly inside the bucket, as Prometheus' ``histogram_quantile`` does;
    None when nothing was observed, the last finite bound when the rank is beyond it.

    >>> before = Snapshot({'lag_bucket{le="0.1"}': 5.0, 'lag_bucket{le="0.5"}': 5.0,
    ...                    'lag_bucket{le="+Inf"}': 5.0}, at=0.0)
    >>> after = Snapshot({'lag_bucket{le="0.1"}': 7.0, 'lag_bucket{le="0.5"}': 9.0,
    ...                   'lag_bucket{le="+Inf"}': 9.0}, at=1.0)
    >>> [round(histogram_delta_quantile(before, after, "lag", q), 3) for q in (0.5, 0.75)]
    [0.1, 0.3]
    >>> histogram_delta_quantile(after, after, "lag", 0.5) is None
    True
    """
    buckets = sorted(
        (_bucket_bound(name), value - before.get(name))
        for name, value in after.values.items()
        if name.startswith(f"{metric}_bucket{{")
    )
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def _bucket_bound(series: str) -> float:
    return float(series.split('le="', 1)[1].split('"', 1)[0])


# --- lag and clean-up ------------------------------------------------------------------


def deployment_partitions(settings: Settings) -> dict[str, list[TopicPartition]]:
    """The partitions of every topic of the deployment, by topic name."""
    return {
        spec.name: [TopicPartition(spec.name, p) for p in range(spec.partitions or settings.partitions)]
        for spec in settings.topics.specs()
    }


class GroupLag:
    """The worker group's lag: end offsets minus committed offsets, summed per topic.

    The topics counted are the event topics and every topic of the deployment on which
    the group has committed an offset (the ones the worker feeds itself), so the bench
    does not need to know which agent reads what. Faust commits every few seconds, so a
    lag read this way reaches 0 up to one commit interval after the work is done: times
    taken from it are upper bounds.
    """

    def __init__(self, settings: Settings) -> None:
        self.group = settings.app_id
        self.topics = deployment_partitions(settings)
        self.event_topics = set(settings.topics.events.values())
        self._admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
        self._consumer = AIOKafkaConsumer(**settings.aiokafka_kwargs(), group_id=None)

    async def __aenter__(self) -> GroupLag:
        await self._admin.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def partition_lags(self) -> dict[TopicPartition, int]:
        committed = await self._admin.list_consumer_group_offsets(self.group)
        read_by_group = self.event_topics | {tp.topic for tp in committed if tp.topic in self.topics}
        partitions = [tp for topic in sorted(read_by_group) for tp in self.topics[topic]]
        ends = await self._consumer.end_offsets(partitions)
        return {
            tp: max(0, ends[tp] - max(committed[tp].offset if tp in committed else 0, 0))
            for tp in partitions
        }

    async def read(self) -> dict[str, int]:
        lag: dict[str, int] = {}
        for tp, behind in (await self.partition_lags()).items():
            lag[tp.topic] = lag.get(tp.topic, 0) + behind
        return lag

    async def wait_drained(self) -> float:
        """The monotonic time at which the group had nothing left to process."""
        lowest, lowest_at = math.inf, time.monotonic()
        while True:
            lags = await self.partition_lags()
            total, now = sum(lags.values()), time.monotonic()
            if total < lowest:
                lowest, lowest_at = total, now
            if total == 0:
                return now
            if _only_markers_left(lags) and now - lowest_at >= QUIET_S:
                return lowest_at
            if now - lowest_at > STALL_S:
                raise BenchError(f"the worker group's lag stayed at {await self.read()} for {STALL_S:.0f}s")
            await asyncio.sleep(LAG_POLL_S)

    async def settled(self) -> dict[str, int]:
        """The lag once it is 0 (or only markers stay), or as it is after SETTLE_S."""
        deadline = time.monotonic() + SETTLE_S
        quiet_since, previous = time.monotonic(), None
        while time.monotonic() < deadline:
            lags = await self.partition_lags()
            if lags != previous:
                quiet_since, previous = time.monotonic(), lags
            if not any(lags.values()) or (
                _only_markers_left(lags) and time.monotonic() - quiet_since >= QUIET_S
            ):
                break
            await asyncio.sleep(LAG_POLL_S)
        return await self.read()


def _only_markers_left(lags: Mapping[TopicPartition, int]) -> bool:
    """With exactly_once, the commit marker closing a transaction takes an offset after the
    last message, which no consumer commits past: a lag of 1 that stays is no work left."""
    return max(lags.values(), default=0) <= 1


async def table_state(settings: Settings) -> dict[str, dict[str, int]]:
    """Keys and encoded bytes (keys + values) of every table of the worker, from its changelogs.

    This is the state itself, as a RocksDB store holds it; the in-memory store adds the
    Python objects around it. Every changelog topic of the app (``<app_id>-*-changelog``)
    is read to its end, keeping the latest value of each key.
    """
    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    await admin.start()
    try:
        names = [
            t for t in await admin.list_topics()
            if t.startswith(f"{settings.app_id}-") and t.endswith("-changelog")
        ]
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    partitions = [
        TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]
    ]
    sizes = await _latest_sizes(settings, partitions)
    state: dict[str, dict[str, int]] = {}
    for (topic, _), size in sizes.items():
        table = topic.removeprefix(f"{settings.app_id}-").removesuffix("-changelog")
        entry = state.setdefault(table, {"keys": 0, "bytes": 0})
        entry["keys"] += 1
        entry["bytes"] += size
    return state


async def messages_per_event(settings: Settings, events: int) -> dict[str, float]:
    """Messages the worker wrote to each topic (its own and Faust's), per backlog event."""
    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if _is_worker_output(settings, t)]
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    partitions = [
        TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]
    ]
    consumer = AIOKafkaConsumer(**settings.aiokafka_kwargs(), group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    written: dict[str, int] = {}
    for tp, end in ends.items():
        name = tp.topic.removeprefix(settings.topic_prefix).removeprefix(f"{settings.app_id}-")
        written[name] = written.get(name, 0) + end
    return {name: round(count / events, 3) for name, count in sorted(written.items()) if count}


def _is_worker_output(settings: Settings, topic: str) -> bool:
    inputs = {*settings.topics.events.values(), f"{settings.topic_prefix}{SINK}"}
    ours = topic.startswith((settings.topic_prefix, f"{settings.app_id}-"))
    return ours and topic not in inputs


async def _latest_sizes(
    settings: Settings, partitions: list[TopicPartition]
) -> dict[tuple[str, bytes], int]:
    """(topic, key) -> len(key) + len(latest value), tombstoned keys left out."""
    consumer = AIOKafkaConsumer(
        **settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    sizes: dict[tuple[str, bytes], int] = {}
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        deadline = time.monotonic() + STALL_S
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    key = (tp.topic, record.key or b"")
                    if record.value is None:
                        sizes.pop(key, None)
                    else:
                        sizes[key] = len(key[1]) + len(record.value)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        if remaining:
            raise BenchError(f"could not read the changelogs to their end: {sorted(remaining)}")
    finally:
        await consumer.stop()
    return sizes


async def clean_up(settings: Settings) -> None:
    """Delete the run's topics (its own and the worker's internal ones), group and Redis keys."""
    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    await admin.start()
    try:
        ours = [
            name for name in await admin.list_topics()
            if name.startswith((settings.topic_prefix, f"{settings.app_id}-"))
        ]
        if ours:
            await admin.delete_topics(ours)
        with contextlib.suppress(Exception):  # best effort: an empty group expires anyway
            coordinator = await admin.find_coordinator(settings.app_id)
            await admin._send_request(DeleteGroupsRequest([settings.app_id]), coordinator)
    finally:
        await admin.close()
    deleted = await _delete_redis_keys(settings)
    say(f"cleaned up: {len(ours)} topics, {deleted} Redis keys")


async def _delete_redis_keys(settings: Settings) -> int:
    client = aioredis.from_url(settings.redis_url)
    deleted = 0
    try:
        batch: list[Any] = []
        async for key in client.scan_iter(match=f"{settings.app_id}:*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                deleted += await client.delete(*batch)
                batch = []
        if batch:
            deleted += await client.delete(*batch)
    finally:
        await client.aclose()
    return deleted


# --- facts and report ------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    cpu_model = _proc_field("/proc/cpuinfo", "model name")
    mem_kib = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_bytes": int(mem_kib.split()[0]) * 1024 if mem_kib else None,
        "platform": platform.platform(),
    }


def _proc_field(path: str, name: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == name:
                return value.strip()
    return None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "kafka": KAFKA_VERSION}
    for package in ("faust-streaming", "aiokafka", "river", "redis", "orjson"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def goals(ratio: float, p99_ms: float | None, bytes_per_user: float) -> dict[str, Any]:
    return {
        "throughput_ratio": {"goal": f">= {GOAL_THROUGHPUT_RATIO}", "met": ratio >= GOAL_THROUGHPUT_RATIO},
        "p99_decision_ms": {
            "goal": f"<= {GOAL_P99_DECISION_MS:.0f}",
            "met": None if p99_ms is None else p99_ms <= GOAL_P99_DECISION_MS,
        },
        "bytes_per_user": {"goal": f"<= {GOAL_BYTES_PER_USER:.0f}", "met": bytes_per_user <= GOAL_BYTES_PER_USER},
    }


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT MET", None: "not measured"}[met]


def _triple(figures: Mapping[str, float | None]) -> str:
    return " / ".join("-" if figures[k] is None else f"{figures[k]:,.1f}" for k in QUANTILES)


def _split(result: Mapping[str, Any]) -> str:
    users = result["active_users"]
    return ", ".join(
        f"{name} {table['bytes'] / users:,.0f} ({table['keys']:,} keys)"
        for name, table in sorted(result["tables"].items())
    )


def render_table(result: Mapping[str, Any]) -> str:
    goal = result["goals"]
    machine, ver = result["machine"], result["versions"]
    rows = [
        ("raw aiokafka passthrough", f"{result['raw_passthrough_eps']:,.0f} events/s", ""),
        ("pipeline, one worker", f"{result['pipeline_eps']:,.0f} events/s",
         "until its internal topics are drained too"),
        ("  ingest agent alone", f"{result['ingest_eps']:,.0f} events/s", "until /metrics counts every event"),
        ("  ratio", f"{result['ratio']:.3f}",
         f"goal {goal['throughput_ratio']['goal']}: {_verdict(goal['throughput_ratio']['met'])}"),
        ("  worker CPU", f"{result['worker_cpu']['pipeline']:.0%} of a core", ""),
        ("offered load", f"{result['offered_eps']:,.0f} events/s",
         f"{result['latency_events']:,} events; worker CPU {result['worker_cpu']['latency']:.0%} of a core"),
        ("event→decision p50/p95/p99", f"{_triple(result['latency_ms'])} ms",
         f"{result['decisions']:,} decisions; goal p99 {goal['p99_decision_ms']['goal']} ms: "
         f"{_verdict(goal['p99_decision_ms']['met'])}"),
        ("  pushed only", f"{_triple(result['push_latency_ms'])} ms", ""),
        ("event→processed (histogram)", f"{_triple(result['event_lag_ms'])} ms", "worker's event-lag histogram"),
        ("state per active user", f"{result['bytes_per_user']:,.0f} B",
         f"goal {goal['bytes_per_user']['goal']} B: {_verdict(goal['bytes_per_user']['met'])}"),
        ("  tables, encoded", f"{result['table_bytes_per_user']:,.0f} B", _split(result)),
        ("Kafka messages per event", f"{sum(result['messages_per_event'].values()):.2f}",
         "written by the worker, all topics"),
        ("consumer lag at the end", f"{result['lag_end']:,}", ""),
    ]
    lines = [
        f"nudgestream bench: {result['events']:,} events, {result['users']:,} users "
        f"({result['active_users']:,} active), {result['date']}",
        f"machine: {machine['cores']} cores, {machine['cpu_model']}; Python {ver['python']}, "
        f"faust-streaming {ver['faust-streaming']}, aiokafka {ver['aiokafka']}, "
        f"river {ver['river']}, Kafka {ver['kafka']}",
        "",
        *(f"  {name:<30} {value:>24}  {note}".rstrip() for name, value, note in rows),
    ]
    if result["latency_note"]:
        lines.append(f"  note: {result['latency_note']}")
    if result["worker_env"]:
        lines.append(f"  worker environment: {result['worker_env']}")
    if result["profile"]:
        lines.append(f"  profiled worker (figures include the profiler's overhead): {result['profile']}")
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BenchConfig()
    parser.add_argument("--events", type=int, default=defaults.events, help="events in the backlog")
    parser.add_argument("--users", type=int, default=defaults.users, help="synthetic users")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the generator")
    parser.add_argument(
        "--latency-seconds", type=float, default=defaults.latency_s,
        help="seconds of events offered for the latency figure",
    )
    parser.add_argument(
        "--load-share", type=float, default=defaults.load_share,
        help="offered rate in the latency phase, as a share of the measured pipeline rate",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="FILE",
        help="run the worker under pyinstrument (which must be installed) and write its "
        "profile to FILE (.txt, .html, .pyisession); the figures then include its overhead",
    )
    parser.add_argument(
        "--worker-env", action="append", default=[], metavar="NAME=VALUE", type=_assignment,
        help="extra environment of the worker only, for what-if runs (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="end the output with one JSON line")


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def run_bench_command(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(
            run_bench(
                os.environ, events=args.events, users=args.users, seed=args.seed,
                latency_s=args.latency_seconds, load_share=args.load_share,
                profile=args.profile, worker_env=dict(args.worker_env), command=invocation(args),
            )
        )
    except (BenchError, ValueError) as exc:
        print(f"nudgestream bench: {exc}", file=sys.stderr)
        return 1
    print(render_table(result))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def invocation(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str:
    """The command that repeats this run: every option spelt out, with the NUDGESTREAM_*
    settings in force (secrets left out)."""
    environ = os.environ if environ is None else environ
    settings = [
        f"{name}={shlex.quote(value)}"
        for name, value in sorted(environ.items())
        if name.startswith("NUDGESTREAM_") and name not in SECRET_VARIABLES
    ]
    options = [
        "--events", str(args.events), "--users", str(args.users), "--seed", str(args.seed),
        "--latency-seconds", f"{args.latency_seconds:g}", "--load-share", f"{args.load_share:g}",
    ]
    if args.profile is not None:
        options += ["--profile", str(args.profile)]
    for name, value in args.worker_env:
        options += ["--worker-env", f"{name}={value}"]
    if args.json:
        options.append("--json")
    return " ".join([*settings, "nudgestream bench", shlex.join(options)])
