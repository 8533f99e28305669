"""What the bench reads back from Kafka (group lag, table state, messages written) and clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DeleteGroupsRequest

from load.bench.common import (
    LAG_POLL_S,
    QUIET_S,
    SETTLE_S,
    SINK,
    STALL_S,
    BenchError,
    peer_app_id,
    say,
)
from streams.settings import Settings


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
    return ours and topic not in inputs and not topic.startswith(peer_app_id(settings))


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
        for group in (settings.app_id, peer_app_id(settings)):
            with contextlib.suppress(Exception):  # best effort: an empty group expires anyway
                coordinator = await admin.find_coordinator(group)
                await admin._send_request(DeleteGroupsRequest([group]), coordinator)
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
