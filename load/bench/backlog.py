"""The bench's events: the backlog, and fresh events stamped as they are sent."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from aiokafka import TopicPartition

from load.bench.common import BACKLOG_EVENTS_PER_S, BenchConfig, BenchError
from load.cli import with_prefix
from load.generator import GeneratedEvent, GeneratorConfig, SyntheticWorld, generate_events
from load.producer import produce
from streams.settings import Settings


def generator_config(config: BenchConfig, start_ts: float) -> GeneratorConfig:
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
    source = generate_events(generator_config(config, start_ts), world)
    return list(itertools.islice(with_prefix(source, settings.topic_prefix), config.events))


def new_users(records: Iterable[GeneratedEvent], suffix: str) -> list[GeneratedEvent]:
    """The same events by users never seen before: ``suffix`` on every user and event id.

    A second cohort like this one measures memory per *additional* user: the buffers and
    caches the first backlog grew are already allocated, so what RSS grows by is state.
    """
    renamed = []
    for record in records:
        doc = orjson.loads(record.value)
        doc["user_id"] = f"{doc['user_id']}{suffix}"
        doc["event_id"] = f"{doc['event_id']}{suffix}"
        renamed.append(record._replace(key=doc["user_id"].encode(), value=orjson.dumps(doc)))
    return renamed


def stamped_now(
    records: Iterable[GeneratedEvent], clock: Callable[[], float] = time.time
) -> Iterator[GeneratedEvent]:
    """``records`` with each event's ``ts`` set to the clock when the sender takes it."""
    for record in records:
        doc = orjson.loads(record.value)
        doc["ts"] = clock()
        yield record._replace(value=orjson.dumps(doc))


def producer_options(settings: Settings) -> dict[str, Any]:
    return {k: v for k, v in settings.aiokafka_kwargs().items() if k != "bootstrap_servers"}


async def produce_all(settings: Settings, records: list[GeneratedEvent]) -> None:
    summary = await produce(
        records, bootstrap=settings.kafka_bootstrap, producer_options=producer_options(settings)
    )
    if summary.errors or summary.sent != len(records):
        raise BenchError(f"producing the backlog failed: {summary}")


def event_partitions(settings: Settings) -> list[TopicPartition]:
    return [
        TopicPartition(topic, p)
        for topic in settings.topics.events.values()
        for p in range(settings.partitions)
    ]
