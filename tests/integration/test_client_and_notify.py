"""The integration surface on a real broker: events in through the client, pushes out once."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import generate_latest

from models.events import EventType
from streams.client import EventProducer, InvalidEvent, SyncEventProducer
from streams.notify import (
    Backoff,
    NotifyMetrics,
    RunLimits,
    add_notify_arguments,
    run_notifier,
    run_notify,
)
from streams.settings import Settings
from tests.conftest import PROJECT_ROOT
from tests.integration.conftest import Deployment, free_port, parse_metrics, read_topic

pytestmark = pytest.mark.integration

EVENT_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((PROJECT_ROOT / "schemas" / "event.v1.json").read_text())
)


# --- events in ---------------------------------------------------------------------------


async def test_events_sent_with_the_client_land_on_their_topics_keyed_by_user(
    deployment: Deployment,
) -> None:
    settings = deployment.settings
    async_events: list[dict[str, Any]] = [
        {"type": "view", "user_id": "ann", "item_id": "phone-1", "category": "electronics", "price": 300.0},
        {"type": "click", "user_id": "ann", "item_id": "phone-1"},
        {"type": "buy", "user_id": "ann", "item_id": "phone-1", "quantity": 1, "event_id": "ann-buy-1"},
        {"type": "view", "user_id": "bob", "item_id": "kettle-7", "ts": time.time() - 60},
    ]
    async with EventProducer.from_settings(settings) as producer:
        deliveries = [await producer.send(event) for event in async_events[:-1]]
        deliveries.append(asyncio.ensure_future(producer.send_and_wait(async_events[-1])))
        with pytest.raises(InvalidEvent, match="item_id"):
            await producer.send({"type": "view", "user_id": "ann"})
        async_metadata = await asyncio.gather(*deliveries)

    sync_events: list[dict[str, Any]] = [
        {"type": "view", "user_id": "cat", "item_id": "book-3"},
        {"type": "buy", "user_id": "cat", "item_id": "book-3", "price": 12.0},
    ]

    def send_from_sync_code() -> list[Any]:
        with SyncEventProducer(EventProducer.from_settings(settings)) as sync_producer:
            futures = [sync_producer.send(event) for event in sync_events]
            with pytest.raises(InvalidEvent, match="unknown_event_type"):
                sync_producer.send({"type": "like", "user_id": "cat", "item_id": "book-3"})
            sync_producer.flush()
            return [future.result(timeout=30) for future in futures]

    sync_metadata = await asyncio.to_thread(send_from_sync_code)

    sent = async_events + sync_events
    metadata = async_metadata + sync_metadata
    expected_topics = [settings.topics.event(EventType(e["type"])) for e in sent]
    assert [m.topic for m in metadata] == expected_topics
    # One partition per user: per-user state in the workers depends on it.
    partitions_by_user: dict[str, set[int]] = {}
    for event, meta in zip(sent, metadata, strict=True):
        partitions_by_user.setdefault(event["user_id"], set()).add(meta.partition)
    assert all(len(p) == 1 for p in partitions_by_user.values()), partitions_by_user

    bootstrap = deployment.env["NUDGESTREAM_KAFKA_BOOTSTRAP"]
    landed: list[tuple[str, bytes | None, dict[str, Any]]] = []
    for event_type, topic in settings.topics.events.items():
        expected = sum(e["type"] == event_type.value for e in sent)
        for key, value in await read_topic(bootstrap, topic, until=expected):
            landed.append((topic, key, orjson.loads(value or b"")))
    assert len(landed) == len(sent)  # the invalid events were never sent
    for topic, key, doc in landed:
        EVENT_SCHEMA.validate(doc)
        assert topic == settings.topics.event(EventType(doc["type"]))
        assert key == doc["user_id"].encode()
    assert "ann-buy-1" in {d["event_id"] for _, _, d in landed}
    assert len({d["event_id"] for _, _, d in landed}) == len(sent)


# --- pushes out ------------------------------------------------------------------------


def decision(decision_id: str, user_id: str, *, expires_in: float = 600.0) -> dict[str, Any]:
    now = time.time()
    return {
        "schema": 1, "decision_id": decision_id, "user_id": user_id,
        "items": [{"item_id": "sku-1", "score": 2.0}], "trigger": "browse_interest",
        "segment": 1, "explanation": "often bought with sku-0", "event_ts": now - 1.0,
        "decided_at": now - 0.5, "expires_at": now + expires_in,
    }


async def publish(settings: Settings, decisions: list[dict[str, Any]]) -> list[Any]:
    """Write decisions to the push topic keyed by user, as the decision step does."""
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **settings.aiokafka_kwargs())
    await producer.start()
    try:
        return [
            await producer.send_and_wait(
                settings.topics.push, key=d["user_id"].encode(), value=orjson.dumps(d)
            )
            for d in decisions
        ]
    finally:
        await producer.stop()


async def publish_aborted(settings: Settings, doc: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(transactional_id=f"test-{doc['decision_id']}", **settings.aiokafka_kwargs())
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(settings.topics.push, key=doc["user_id"].encode(), value=orjson.dumps(doc))
        await producer.abort_transaction()
    finally:
        await producer.stop()


@dataclass
class RecordingSender:
    """Records decision ids; fails for ``failing``; sets ``stop`` once ``done`` holds."""

    done: Callable[[RecordingSender], bool]
    failing: set[str] = field(default_factory=set)
    sent: list[str] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, doc: dict[str, Any]) -> None:
        decision_id = doc["decision_id"]
        self.attempts[decision_id] += 1
        try:
            if decision_id in self.failing:
                raise ConnectionError("push provider unavailable")
            self.sent.append(decision_id)
        finally:
            if self.done(self):
                self.stop.set()


async def run_until_done(
    settings: Settings, sender: RecordingSender, group: str, metrics: NotifyMetrics | None = None
) -> None:
    run = run_notifier(
        settings, sender, group=group, limits=RunLimits(stop=sender.stop), metrics=metrics,
        backoff=Backoff(initial_s=0.05, max_s=0.2),
    )
    await asyncio.wait_for(run, timeout=60)


async def test_each_live_decision_reaches_the_sender_exactly_once(deployment: Deployment) -> None:
    settings = deployment.settings
    await publish_aborted(settings, decision("aborted", "ann"))
    await publish(
        settings,
        [
            decision("d1", "ann"),
            decision("d2", "bob"),
            decision("d1", "ann"),  # re-published after a decision-engine restart
            decision("late", "ann", expires_in=-5.0),
            decision("d3", "ann"),  # after the copy and the expired one on ann's partition
        ],
    )
    sender = RecordingSender(done=lambda s: {"d1", "d2", "d3"} <= set(s.sent))
    metrics = NotifyMetrics()
    await run_until_done(settings, sender, "notify-once", metrics)

    assert sorted(sender.sent) == ["d1", "d2", "d3"]
    values = parse_metrics(generate_latest(metrics.registry).decode())
    assert values["nudgestream_notify_duplicates_total"] == 1
    assert values["nudgestream_notify_expired_total"] == 1
    assert values["nudgestream_notify_sent_total"] == 3
    assert values["nudgestream_notify_latency_seconds_count"] == 3


async def committed_offset(settings: Settings, group: str, partition: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **settings.aiokafka_kwargs())
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(partition)
        return offset
    finally:
        await consumer.stop()


async def test_a_failed_send_is_retried_and_not_committed_so_a_restart_delivers_it(
    deployment: Deployment,
) -> None:
    settings = deployment.settings
    before, failing, after = (decision(i, "dan") for i in ("r-before", "r-fail", "r-after"))
    metadata = await publish(settings, [before, failing, after])
    failing_at = TopicPartition(metadata[1].topic, metadata[1].partition)
    group = "notify-retry"

    first = RecordingSender(done=lambda s: s.attempts["r-fail"] >= 3, failing={"r-fail"})
    await run_until_done(settings, first, group)
    assert "r-before" in first.sent
    assert "r-fail" not in first.sent
    # Records behind the failed one wait: the partition's order is the user's order.
    assert first.attempts["r-after"] == 0
    assert await committed_offset(settings, group, failing_at) == metadata[1].offset

    second = RecordingSender(done=lambda s: "r-after" in s.sent)
    await run_until_done(settings, second, group)
    assert [d for d in second.sent if d.startswith("r-")] == ["r-fail", "r-after"]


def test_the_notify_command_writes_json_lines_and_serves_its_metrics(
    deployment: Deployment, tmp_path: Path
) -> None:
    settings = deployment.settings
    asyncio.run(publish(settings, [decision("cli-1", "eve"), decision("cli-1", "eve"), decision("cli-2", "fay")]))
    out = tmp_path / "pushes.jsonl"
    port = free_port()
    parser = argparse.ArgumentParser()
    add_notify_arguments(parser)
    args = parser.parse_args(
        ["--group", "notify-cli", "--out", str(out), "--idle-exit", "4", "--metrics-port", str(port)]
    )
    exit_codes: list[int] = []
    command = threading.Thread(target=lambda: exit_codes.append(run_notify(args, settings)))
    command.start()
    scraped: dict[str, float] = {}
    while command.is_alive() and not scraped:
        if out.exists() and '"cli-2"' in out.read_text():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                scraped = parse_metrics(response.read().decode())
        time.sleep(0.1)
    command.join(timeout=60)

    assert exit_codes == [0]
    sent_ids = [orjson.loads(line)["decision_id"] for line in out.read_text().splitlines()]
    assert sent_ids.count("cli-1") == sent_ids.count("cli-2") == 1
    assert len(sent_ids) == len(set(sent_ids))
    assert scraped["nudgestream_notify_sent_total"] >= 2
