"""End to end on real Kafka + Redis: an upstream service sends events with the producer
client, a worker decides, and the reference notification worker delivers each push once;
everything on the wire validates against the published contracts."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jsonschema
import pytest

from streams.client import EventProducer
from streams.notify import RunLimits, run_notifier
from tests.conftest import PROJECT_ROOT
from tests.integration.conftest import Deployment, read_topic

pytestmark = pytest.mark.integration


class Inbox:
    """A notification sender that keeps what it is given."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    async def send(self, decision: dict[str, Any]) -> None:
        self.received.append(decision)


async def test_client_to_worker_to_notification_worker(deployment: Deployment) -> None:
    worker = deployment.start_worker(NUDGESTREAM_QUIET_HOURS="off", NUDGESTREAM_HOLDOUT_PERCENT="0")
    worker.wait_ready()
    settings = deployment.settings
    async with EventProducer.from_settings(settings) as producer:
        for n in range(20):  # other shoppers make a catalogue
            await producer.send({"type": "view", "user_id": f"shopper{n}", "item_id": f"tv{n % 4}",
                                 "category": "electronics.tv", "ts": time.time() - 100})
        await producer.flush()
        deadline = time.monotonic() + 30
        while worker.metrics().get("nudgestream_related_items_writes_total", 0) < 4:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)
        for item in ("tv0", "tv1"):  # no event_id, no ts: the client fills them
            await producer.send({"type": "view", "user_id": "hank", "item_id": item,
                                 "category": "electronics.tv"})
        await producer.flush()

    inbox = Inbox()
    await asyncio.wait_for(
        run_notifier(settings, inbox, group=f"{settings.app_id}-notify-test",
                     limits=RunLimits(idle_exit_s=15)),
        timeout=90,
    )
    hank = [d for d in inbox.received if d["user_id"] == "hank"]
    assert len(hank) == 1 and hank[0]["trigger"] == "browse_interest"
    assert {i["item_id"] for i in hank[0]["items"]} <= {"tv2", "tv3"}
    assert len({d["decision_id"] for d in inbox.received}) == len(inbox.received)

    schemas = {p.name: json.loads(p.read_text()) for p in (PROJECT_ROOT / "schemas").glob("*.json")}
    jsonschema.Draft202012Validator(schemas["decision.v1.json"]).validate(hank[0])
    assert worker.metrics()['nudgestream_events_consumed_total{type="view"}'] == 22
    dlq = await read_topic(settings.kafka_bootstrap, settings.topics.dlq, until=1, timeout_s=2)
    assert dlq == [], "the client validates before sending: nothing reaches the dead letters"
