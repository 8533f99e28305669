"""The peers the worker is measured against, on the same backlog and broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from load.bench.backlog import event_partitions
from load.bench.common import POLL_S, PROJECT_DIR, SINK, STALL_S, BenchError, Throughput
from streams.settings import Settings


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


async def faust_passthrough(
    settings: Settings, env: Mapping[str, str], expected: int, scratch: Path
) -> Throughput:
    """The Faust batch peer (:mod:`load.bench.faust_peer`) on the backlog, in its own process.

    Run after :func:`raw_passthrough`, which creates the sink. Its own start-up (group
    join, assignment) is excluded: the peer times itself from its first batch.
    """
    result = scratch / "faust-peer.json"
    command = [
        sys.executable, "-m", "load.bench.faust_peer", "--sink", f"{settings.topic_prefix}{SINK}",
        "--expected", str(expected), "--result", str(result),
    ]
    log_path = scratch / "faust-peer.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=PROJECT_DIR
        )
    # Generous: start-up, then at least 1,000 events/s.
    deadline = time.monotonic() + STALL_S + expected / 1000
    try:
        while not result.exists():
            if process.poll() is not None:
                raise BenchError(f"the Faust peer exited; see {log_path}")
            if time.monotonic() > deadline:
                raise BenchError(f"the Faust peer did not pass {expected:,} events in time; see {log_path}")
            await asyncio.sleep(POLL_S)
    finally:
        _stop(process)
    figures = orjson.loads(result.read_bytes())
    return Throughput(figures["count"], figures["seconds"])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
