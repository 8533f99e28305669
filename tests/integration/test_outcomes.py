"""Push outcomes on real Kafka + Redis: reported by notify and the client, counted once."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from models.events import Event, EventType
from streams.client import EventProducer
from streams.notify import RunLimits, run_notifier
from tests.integration.conftest import (
    Deployment,
    WorkerProcess,
    decode_json,
    produce,
    produce_events,
    read_topic,
)

pytestmark = pytest.mark.integration

USERS = [f"oli{n}" for n in range(16)]


def outcomes_metric(kind: str, group: str = "treatment", trigger: str = "browse_interest") -> str:
    return f'nudgestream_push_outcomes_total{{group="{group}",outcome="{kind}",trigger="{trigger}"}}'


async def wait_for(worker: WorkerProcess, done: Callable[[dict[str, float]], bool], what: str) -> dict[str, float]:
    deadline = time.monotonic() + 40
    while not done(values := worker.metrics()):
        assert time.monotonic() < deadline, f"{what}: {values}\n{worker.log_tail()}"
        await asyncio.sleep(0.5)
    return values


@dataclass
class Inbox:
    """A sender that stops the notifier once every expected decision was sent."""

    expected: set[str]
    sent: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, decision: dict[str, Any]) -> None:
        self.sent.append(decision["decision_id"])
        if self.expected <= set(self.sent):
            self.stop.set()


async def browse(deployment: Deployment, worker: WorkerProcess, users: list[str]) -> None:
    """Readers make popular lamps, then each user views two of them."""
    settings = deployment.settings
    now = time.time()
    tag = uuid.uuid4().hex[:6]  # new events each time: a profile skips event ids it has seen
    catalogue = [Event(f"c{n}-{tag}", EventType.VIEW, f"reader{n}-{tag}", f"lamp{n % 4}", now - 60, "lamps") for n in range(12)]
    await produce_events(settings, catalogue)
    await wait_for(worker, lambda m: m["nudgestream_related_items_writes_total"] >= 4, "related items")
    browsing = [
        Event(f"{user}-{k}", EventType.VIEW, user, f"lamp{k}", now - 5 + k, "lamps")
        for user in users for k in range(2)
    ]
    await produce_events(settings, browsing)


async def decisions_of(deployment: Deployment, worker: WorkerProcess) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Browse with every user and return (pushes, holdout records) once all are decided."""
    settings = deployment.settings
    await browse(deployment, worker, USERS)
    deadline = time.monotonic() + 40
    while True:
        pushes = [decode_json(v) for _, v in await read_topic(settings.kafka_bootstrap, settings.topics.push, until=10**6, timeout_s=2)]
        audit = [decode_json(v) for _, v in await read_topic(settings.kafka_bootstrap, settings.topics.suppressed, until=10**6, timeout_s=2)]
        holdout = [r for r in audit if r["outcome"] == "holdout"]
        if {str(r["user_id"]) for r in pushes + holdout} == set(USERS):
            return pushes, holdout
        assert time.monotonic() < deadline, "every browsing user gets a push or a holdout record"
        await asyncio.sleep(1)


async def test_outcomes_are_checked_against_the_decisions_and_counted_once(deployment: Deployment) -> None:
    worker = deployment.start_worker(NUDGESTREAM_HOLDOUT_PERCENT="50")
    worker.wait_ready()
    settings = deployment.settings
    pushes, holdout = await decisions_of(deployment, worker)
    assert pushes and holdout, "a 50 % control group splits the users"

    # notify reports `sent` for each push it hands to its sender.
    inbox = Inbox({str(p["decision_id"]) for p in pushes})
    run = run_notifier(settings, inbox, group=f"{settings.app_id}-notify-outcomes", limits=RunLimits(stop=inbox.stop))
    await asyncio.wait_for(run, timeout=60)
    await wait_for(worker, lambda m: m[outcomes_metric("sent")] == len(pushes), "sent outcomes")

    # The app reports a click on a push (twice: at-least-once), and an outcome of a
    # control-group decision is recorded under its group.
    clicked = pushes[0]
    click = {"kind": "clicked", "decision_id": clicked["decision_id"], "user_id": clicked["user_id"]}
    dismissed = {"kind": "dismissed", "decision_id": holdout[0]["decision_id"], "user_id": holdout[0]["user_id"]}
    stranger = next(u for u in USERS if u != clicked["user_id"])
    async with EventProducer.from_settings(settings) as producer:
        for outcome in (click, click, dismissed):
            await (await producer.report_outcome(outcome))
        # Another user's decision id, and an id never issued.
        await (await producer.report_outcome({**click, "user_id": stranger}))
        await (await producer.report_outcome({**click, "decision_id": "d-never-issued"}))
    await produce(settings.kafka_bootstrap, [(settings.topics.outcomes, b"oli0", b'{"schema": 1, "kind": ')])

    values = await wait_for(
        worker,
        lambda m: m['nudgestream_outcomes_rejected_total{reason="unknown_decision"}'] == 2
        and m['nudgestream_outcomes_rejected_total{reason="bad_json"}'] == 1
        and m[outcomes_metric("clicked")] == 1,
        "clicks, unknown decisions and the malformed outcome",
    )
    assert values["nudgestream_push_outcomes_duplicate_total"] == 1
    assert values[outcomes_metric("dismissed", group="control")] == 1
    assert values[outcomes_metric("sent")] == len(pushes), "sent counted once per push"

    dead = [decode_json(v) for _, v in await read_topic(settings.kafka_bootstrap, settings.topics.dlq, until=3)]
    by_reason: dict[object, list[dict[str, Any]]] = {}
    for record in dead:
        by_reason.setdefault(record["reason"], []).append(record)
    assert len(by_reason["unknown_decision"]) == 2 and len(by_reason["bad_json"]) == 1
    assert all(r["topic"] == settings.topics.outcomes for r in dead)
    assert "never issued to this user_id" in str(by_reason["unknown_decision"][0]["detail"])
    original = base64.b64decode(str(by_reason["bad_json"][0]["value_b64"]))
    assert original == b'{"schema": 1, "kind": ', "the original bytes, to replay once fixed"

    # A replay after a restart: the new worker recovers the record from its changelog and
    # does not count the click again.
    worker.stop()
    restarted = deployment.start_worker(NUDGESTREAM_HOLDOUT_PERCENT="50")
    restarted.wait_ready()
    async with EventProducer.from_settings(settings) as producer:
        await (await producer.report_outcome(click))
    values = await wait_for(
        restarted, lambda m: m["nudgestream_push_outcomes_duplicate_total"] == 1, "the replayed click"
    )
    assert values[outcomes_metric("clicked")] == 0


async def test_a_delayed_push_decided_by_the_deferred_agent_is_recorded_too(deployment: Deployment) -> None:
    deployment.stop_all()  # this test needs a worker with other triggers
    worker = deployment.start_worker(
        NUDGESTREAM_TRIGGERS="browse_abandoned", NUDGESTREAM_ABANDON_DELAY_S="3",
        NUDGESTREAM_HOLDOUT_PERCENT="0",
    )
    worker.wait_ready()
    settings = deployment.settings
    await browse(deployment, worker, ["pia"])
    deadline = time.monotonic() + 40
    while not (pushes := [
        decode_json(v) for k, v in await read_topic(settings.kafka_bootstrap, settings.topics.push, until=10**6, timeout_s=2)
        if k == b"pia"
    ]):
        assert time.monotonic() < deadline, worker.log_tail()
    assert [p["trigger"] for p in pushes] == ["browse_abandoned"]
    async with EventProducer.from_settings(settings) as producer:
        await (await producer.report_outcome(
            {"kind": "opened", "decision_id": pushes[0]["decision_id"], "user_id": "pia"}
        ))
    await wait_for(
        worker, lambda m: m[outcomes_metric("opened", trigger="browse_abandoned")] == 1, "the opened reminder"
    )
