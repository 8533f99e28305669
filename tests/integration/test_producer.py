"""The load producer against the real local broker: complete, keyed, paced and clean on exit."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from load import services
from load.generator import GeneratedEvent, GeneratorConfig, generate_events
from load.producer import ProgressReport, TokenBucket, partition_for, produce, replay_log
from models.events import Event, decode_event

pytestmark = pytest.mark.integration

TYPES = ("view", "click", "buy")


@pytest.fixture
def bootstrap(local_services: services.LocalServices) -> str:
    return local_services.kafka_bootstrap


@pytest.fixture
def prefix() -> str:
    """Topics of their own for each test (the broker creates them on first use)."""
    return f"it-load-{uuid.uuid4().hex[:8]}."


def generated(prefix: str, **config: object) -> Iterator[GeneratedEvent]:
    source = generate_events(GeneratorConfig(start_ts=time.time(), **config))  # type: ignore[arg-type]
    for record in source:
        yield record._replace(topic=prefix + record.topic)


async def read_all(
    bootstrap: str, prefix: str, *, until: int, timeout_s: float = 60.0
) -> tuple[list[ConsumerRecord[bytes, bytes]], dict[str, list[int]]]:
    """Every message on the prefix's event topics (read until ``until`` have arrived),
    and the partitions of each topic."""
    topics = [f"{prefix}events.{name}" for name in TYPES]
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < until and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
        partitions = {t: sorted(consumer.partitions_for_topic(t) or ()) for t in topics}
    finally:
        await consumer.stop()
    return out, partitions


async def create_event_topics(bootstrap: str, prefix: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(f"{prefix}events.{name}", partitions, 1) for name in TYPES]
        )
    finally:
        await admin.close()


async def test_every_generated_message_arrives_once_on_its_keys_partition(
    bootstrap: str, prefix: str
) -> None:
    await create_event_topics(bootstrap, prefix, partitions=4)
    source = list(itertools.islice(generated(prefix, seed=21, malformed_share=0.05), 3000))
    summary = await produce(source, bootstrap=bootstrap)

    assert (summary.sent, summary.errors) == (len(source), 0)
    assert summary.per_topic == Counter(record.topic for record in source)
    assert summary.malformed_sent == sum(r.malformed_reason is not None for r in source)
    received, partitions = await read_all(bootstrap, prefix, until=len(source))
    assert Counter((r.topic, r.key, r.value) for r in received) == Counter(
        (r.topic, r.key, r.value) for r in source
    )
    assert all(len(found) == 4 for found in partitions.values())
    for record in received:
        assert record.partition == partition_for(record.key, partitions[record.topic])


async def test_order_per_user_is_kept(bootstrap: str, prefix: str) -> None:
    source = list(itertools.islice(generated(prefix, seed=22, malformed_share=0.0), 2000))
    await produce(source, bootstrap=bootstrap)
    received, _ = await read_all(bootstrap, prefix, until=len(source))
    sent_by_stream: dict[tuple[str, bytes | None], list[bytes]] = defaultdict(list)
    for record in source:
        sent_by_stream[(record.topic, record.key)].append(record.value)
    got_by_stream: dict[tuple[str, bytes | None], list[bytes]] = defaultdict(list)
    for message in sorted(received, key=lambda r: r.offset):
        got_by_stream[(message.topic, message.key)].append(message.value)
    assert got_by_stream == sent_by_stream


async def test_a_paced_producer_never_runs_ahead_of_its_rate(bootstrap: str, prefix: str) -> None:
    rate = 2000.0
    reports: list[ProgressReport] = []
    summary = await produce(
        generated(prefix, seed=23),
        bootstrap=bootstrap,
        rate=rate,
        duration=2.5,
        progress=reports.append,
    )
    # The bucket can be ahead of the average by at most one burst, never more.
    assert summary.sent <= rate * summary.elapsed_s + TokenBucket(rate, now=0).burst
    # A loose floor only: the point is that pacing lets messages through at all.
    assert summary.sent >= rate * 2.5 * 0.25
    assert len(reports) >= 2
    assert [r.sent for r in reports] == sorted(r.sent for r in reports)
    assert reports[-1].sent == summary.sent


async def test_count_limits_what_is_sent(bootstrap: str, prefix: str) -> None:
    summary = await produce(generated(prefix, seed=24), bootstrap=bootstrap, count=777)
    assert summary.sent == 777
    received, _ = await read_all(bootstrap, prefix, until=778, timeout_s=2)
    assert len(received) == 777


async def test_a_stop_request_ends_the_run_with_everything_acknowledged(
    bootstrap: str, prefix: str
) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)
    summary = await produce(generated(prefix, seed=25), bootstrap=bootstrap, rate=1000, stop=stop)
    assert summary.sent > 0
    received, _ = await read_all(bootstrap, prefix, until=summary.sent + 1, timeout_s=2)
    assert len(received) == summary.sent


async def test_cancellation_flushes_what_was_accepted_and_leaves_no_tasks(
    bootstrap: str, prefix: str
) -> None:
    reports: list[ProgressReport] = []
    before = asyncio.all_tasks()
    task = asyncio.create_task(
        produce(generated(prefix, seed=26), bootstrap=bootstrap, rate=1000, progress=reports.append)
    )
    await asyncio.sleep(2.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reports, "progress was reported while sending"
    received, _ = await read_all(bootstrap, prefix, until=10**9, timeout_s=2)
    assert len(received) >= reports[-1].sent
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


LOG = """ts,user_id,event,item_id,category,price
1569888000,u1,view,i1,electronics.smartphone,100
1569888030,u2,view,i2,electronics.smartphone,120
not-a-time,u3,view,i3,,
1569888060,u1,click,i1,electronics.smartphone,100
1569888090,u1,buy,i1,electronics.smartphone,100
1569888120,u2,view,i9,,
"""


async def test_a_replayed_log_arrives_with_fresh_timestamps(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "tiny.csv"
    path.write_text(LOG)
    before = time.time()
    # 120 s of log at speed 60: two seconds of replay.
    summary = await replay_log(
        path, bootstrap=bootstrap, speed=60.0, rewrite_ts=True, topic_prefix=prefix
    )
    after = time.time()

    assert (summary.sent, summary.skipped, summary.errors) == (5, 1, 0)
    # The schedule never sends early: the last event is due two seconds in.
    assert summary.elapsed_s >= 2.0
    received, _ = await read_all(bootstrap, prefix, until=5)
    events = [decode_event(r.value, now=after) for r in received]
    assert all(isinstance(e, Event) and before <= e.ts <= after for e in events)
    assert sorted(e.event_id for e in events if isinstance(e, Event)) == [
        f"tiny:{line}" for line in (2, 3, 5, 6, 7)
    ]
