"""Push decisions on real Kafka + Redis: triggers produce validated decisions, delays are
real, limits hold, the control group and suppressions are audited, Redis outages fail
closed and recover."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator

import jsonschema
import pytest
from referencing import Registry, Resource

from models.events import Event, EventType
from streams import services
from tests.conftest import PROJECT_ROOT
from tests.integration.conftest import Deployment, WorkerProcess, decode_json, produce, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMAS = PROJECT_ROOT / "schemas"


def validator(name: str) -> jsonschema.Draft202012Validator:
    resources = [
        (json.loads(p.read_text())["$id"], Resource.from_contents(json.loads(p.read_text())))
        for p in SCHEMAS.glob("*.json")
    ]
    registry: Registry = Registry().with_resources(resources)
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / name).read_text()), registry=registry)


@pytest.fixture(scope="module")
def worker(deployment: Deployment) -> Iterator[WorkerProcess]:
    process = deployment.start_worker(
        NUDGESTREAM_QUIET_HOURS="off",  # the test must not depend on the time of day
        NUDGESTREAM_ABANDON_DELAY_S="4",  # a real delay, short enough for a test
        NUDGESTREAM_PUSH_MIN_GAP_S="2",
        NUDGESTREAM_HOLDOUT_PERCENT="0",
    )
    process.wait_ready()
    yield process
    process.stop()


def browsing(user: str, items: list[str], start: float, category: str = "phones") -> list[Event]:
    return [
        Event(f"{user}-{n}", EventType.VIEW, user, item, start + n, category)
        for n, item in enumerate(items)
    ]


async def records(deployment: Deployment, topic: str, *, user: str, at_least: int = 0, timeout_s: float = 40) -> list[dict[str, object]]:
    """The JSON records of ``user`` on ``topic``, once at least ``at_least`` are there."""
    deadline = time.monotonic() + timeout_s
    while True:
        raw = await read_topic(deployment.settings.kafka_bootstrap, topic, until=1_000_000, timeout_s=2)
        found = [decode_json(v) for _, v in raw if decode_json(v)["user_id"] == user]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        await asyncio.sleep(1)


async def send(deployment: Deployment, events: list[Event]) -> None:
    topics = deployment.settings.topics
    await produce(
        deployment.settings.kafka_bootstrap,
        [(topics.event(e.type), e.user_id.encode(), e.to_bytes()) for e in events],
    )


async def seed_catalogue(deployment: Deployment, worker: WorkerProcess) -> None:
    """Forty shoppers view phones p1..p6 in pairs so related items and popularity exist."""
    now = time.time() - 3600
    events = []
    for n in range(40):
        first, second = f"p{n % 3 + 1}", f"p{n % 3 + 4}"
        events += browsing(f"seed-{n}", [first, second], now + n)
    await send(deployment, events)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if worker.metrics().get("nudgestream_related_items_writes_total", 0) >= 6:
            return
        await asyncio.sleep(0.5)
    raise AssertionError("related items were never written")


async def test_browsing_users_get_valid_pushes_then_delayed_reminders(
    deployment: Deployment, worker: WorkerProcess
) -> None:
    await seed_catalogue(deployment, worker)
    settings = deployment.settings
    start = time.time()
    await send(deployment, browsing("alice", ["p1", "p2"], start - 2))

    decisions = await records(deployment, settings.topics.push, user="alice", at_least=1)
    assert [d["trigger"] for d in decisions] == ["browse_interest"]
    # The reminder is decided after its delay; it offers the same items, already pushed,
    # so the item cool-down suppresses it (an audit record, not a second push).
    audit = await records(deployment, settings.topics.suppressed, user="alice", at_least=1)
    assert [(r["trigger"], r["reason"]) for r in audit] == [("browse_abandoned", "item_cooldown")]
    reminder = audit[0]
    assert float(str(reminder["decided_at"])) >= float(str(reminder["event_ts"])) + 4, "a real delay"
    schema = validator("decision.v1.json")
    for decision in decisions:
        schema.validate(decision)
        pushed = {i["item_id"] for i in decision["items"]}  # type: ignore[union-attr]
        assert pushed and not pushed & {"p1", "p2"}, "never push what the user just viewed"
        assert decision["explanation"]
    validator("audit.v1.json").validate(reminder)


async def test_a_buy_cancels_the_reminder_and_limits_are_audited(
    deployment: Deployment, worker: WorkerProcess
) -> None:
    settings = deployment.settings
    start = time.time()
    bob = browsing("bob", ["p1", "p2"], start - 3)
    bob.append(Event("bob-buy", EventType.BUY, "bob", "p2", start - 1, "phones"))
    # Carol browses a second category straight after: the minimum gap suppresses it.
    carol = browsing("carol", ["p1", "p2"], start - 3) + browsing("carol-b", ["p4", "p5"], start - 1)
    carol = [Event(e.event_id, e.type, "carol", e.item_id, e.ts, "cases" if "b" in e.event_id else "phones") for e in carol]
    await send(deployment, bob + carol)
    await asyncio.sleep(8)  # past the reminder's delay

    pushes = await records(deployment, settings.topics.push, user="bob", at_least=1)
    pushes += await records(deployment, settings.topics.push, user="carol", at_least=1)
    by_user = Counter((str(d["user_id"]), str(d["trigger"])) for d in pushes)
    assert by_user[("bob", "browse_abandoned")] == 0, "bob bought: no reminder"
    assert by_user[("bob", "browse_interest")] == 1
    assert by_user[("carol", "browse_interest")] == 1

    audit = await records(deployment, settings.topics.suppressed, user="carol", at_least=1)
    schema = validator("audit.v1.json")
    for record in audit:
        schema.validate(record)
    assert any(r["user_id"] == "carol" and r["reason"] == "min_gap" for r in audit), audit
    metrics = worker.metrics()
    assert metrics['nudgestream_suppressed_total{reason="min_gap"}'] >= 1


async def test_without_redis_nothing_is_pushed_and_it_recovers_by_itself(
    deployment: Deployment, worker: WorkerProcess, local_services: services.LocalServices
) -> None:
    settings = deployment.settings
    services.stop_service(local_services, "redis")
    try:
        await send(deployment, browsing("dave", ["p1", "p3"], time.time() - 1))
        await asyncio.sleep(8)
        assert not await records(deployment, settings.topics.push, user="dave", timeout_s=0), (
            "a push went out unchecked"
        )
        metrics = worker.metrics()
        assert metrics["nudgestream_redis_up"] == 0
        assert metrics['nudgestream_events_consumed_total{type="view"}'] >= 84, "consumption goes on"
    finally:
        services.up(local_services, say=lambda _: None)
    # The trigger is retried once Redis is back (30 s later at the most).
    dave = await records(deployment, settings.topics.push, user="dave", at_least=1, timeout_s=60)
    assert dave, "no push after Redis came back"
    assert worker.metrics()["nudgestream_redis_up"] == 1
