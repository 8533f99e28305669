"""Push decisions on real Kafka + Redis: triggers produce validated decisions, delays are
real, limits hold, the control group and suppressions are audited, Redis outages fail
closed and recover."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import faust
import jsonschema
import orjson
import pytest
import redis.asyncio as aioredis
from redis.asyncio import Connection, ConnectionPool
from referencing import Registry, Resource

from load import services
from models.cooccurrence import CoocConfig
from models.decision import AUDIT_SCHEMA_VERSION
from models.events import Event, EventType
from models.limits import LimitRequest, LimitResult
from models.policy import Trigger, TriggerKind
from models.profile import Profile
from models.step import StepConfig, step
from streams import settings
from streams.cooccurrence import PopularCache, RelatedItemsStore
from streams.decisions import DecisionEngine
from streams.segmentation import SnapshotFollower
from tests.conftest import PROJECT_ROOT
from tests.decision_cases import CASES, POPULAR, RELATED, Case, Expect
from tests.integration.conftest import Deployment, WorkerProcess, decode_json, produce, read_topic
from tests.integration.test_reliability import forget_redis_keys, new_deployment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMAS = PROJECT_ROOT / "schemas"
AUDIT = f"audit.v{AUDIT_SCHEMA_VERSION}.json"


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
    validator(AUDIT).validate(reminder)


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
    schema = validator(AUDIT)
    for record in audit:
        schema.validate(record)
    assert any(r["user_id"] == "carol" and r["reason"] == "min_gap" for r in audit), audit
    metrics = worker.metrics()
    assert metrics['nudgestream_suppressed_total{reason="min_gap"}'] >= 1


@pytest.fixture
def new_shop(local_services: services.LocalServices, tmp_path: Path) -> Iterator[Deployment]:
    """A deployment of its own: no related items, no popular ones, nothing yet."""
    shop = new_deployment(local_services, tmp_path, NUDGESTREAM_QUIET_HOURS="off", NUDGESTREAM_HOLDOUT_PERCENT="0")
    yield shop
    shop.stop_all()
    asyncio.run(forget_redis_keys(shop))


async def test_a_new_shops_first_trigger_is_audited_as_having_no_candidates(new_shop: Deployment) -> None:
    """Cold start leaves a trace: nothing to recommend is an audit record, not silence."""
    worker = new_shop.start_worker()
    worker.wait_ready()
    # The shop's only events: this user's own items are never offered, and there is
    # nothing else (no related items, no popular ones) to offer.
    await send(new_shop, browsing("dora", ["lamp1", "lamp2"], time.time() - 2, category="lamps"))
    topics = new_shop.settings.topics
    audit = await records(new_shop, topics.suppressed, user="dora", at_least=1)
    assert [(r["trigger"], r["outcome"], r["items"]) for r in audit] == [("browse_interest", "no_candidates", [])]
    validator(AUDIT).validate(audit[0])
    assert await records(new_shop, topics.push, user="dora", timeout_s=0) == []
    metric = 'nudgestream_decisions_total{outcome="no_candidates",trigger="browse_interest"}'
    assert worker.metrics()[metric] == 1


class CountingConnection(Connection):
    """Records the command names of each write to Redis: one list per round trip."""

    writes: ClassVar[list[list[str]]] = []
    _packed: list[str] | None = None

    def pack_command(self, *args: Any) -> list[bytes]:
        if self._packed is None:
            self._packed = []
        self._packed.append(str(args[0]).upper())
        return super().pack_command(*args)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        packed, self._packed = self._packed or [], None
        CountingConnection.writes.append(packed)
        await super().send_packed_command(command, check_health)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_triggers_of_a_batch_share_one_candidate_read_and_one_limiter_call(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = settings.load({**deployment.env, "NUDGESTREAM_QUIET_HOURS": "off", "NUDGESTREAM_HOLDOUT_PERCENT": "0"})
    prefix = f"batch-{uuid.uuid4().hex[:8]}"
    pool = ConnectionPool.from_url(config.redis_url, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    clock = Clock()
    store = RelatedItemsStore(client, prefix, CoocConfig(), PopularCache(clock=clock))
    # p4 is the best related item of p1 and of p2.
    related = {"p1": [["p4", 5.0], ["p3", 1.0]], "p2": [["p4", 5.0], ["p6", 1.0]], "p6": [["p5", 1.0]]}
    for item, ranked in related.items():
        await client.set(store.keys.related(item), orjson.dumps(ranked))
    for key in (store.keys.popular, store.keys.popular_in("phones")):
        await client.zadd(key, {"p3": 3.0, "p5": 2.0, "p6": 1.0})
    app = faust.App(f"{prefix}-app", broker=config.broker_urls, autodiscover=False, web_enabled=False)
    engine = DecisionEngine(app, config, store, SnapshotFollower(config), app.Table("pending"))
    checks: list[list[str]] = []
    check_many = engine.limiter.check_many

    async def counted(requests: Sequence[LimitRequest]) -> list[LimitResult]:
        checks.append([r.user_id for r in requests])
        return await check_many(requests)

    monkeypatch.setattr(engine.limiter, "check_many", counted)
    profiles: dict[str, Profile | None] = {}
    steps, positions = StepConfig(policy=config.policy), itertools.count()

    async def batch(events: list[Event]) -> list[list[str]]:
        """What the ingest agent does with a batch; the Redis writes of its candidate read."""
        now = time.time()
        for event in events:
            result = step(profiles.get(event.user_id), event, "v0", next(positions), now, steps)
            profiles[event.user_id] = result.profile
            engine.on_triggers(result.profile, result.due, result.later)
        await client.ping()  # the connection is open: only the candidate read is counted
        CountingConnection.writes.clear()
        await engine.flush(now)
        return list(CountingConnection.writes)

    users = [f"{prefix}-{name}" for name in ("ann", "ben", "cid", "dot", "eve")]
    ann, ben, cid, dot, eve = users
    start = time.time() - 10
    viewed = {user: browsing(user, ["p1", "p2"], start) for user in (ann, ben, cid)}
    first = [viewed[user][n] for n in range(2) for user in (ann, ben, cid)]
    # Ann looks at p4 after her trigger: her decision must see the profile of its event.
    first.append(Event(f"{ann}-late", EventType.VIEW, ann, "p4", start + 3, "phones"))
    # Cid buys in the same batch: his second push is refused by the gap after the first.
    first.append(Event(f"{cid}-buy", EventType.BUY, cid, "p6", start + 4, "phones"))
    try:
        assert await batch(first) == [["MGET", "ZREVRANGE", "ZREVRANGE"]]
        assert checks == [[ann, ben, cid, cid]], "one limiter call, in the order of the events"
        clock.now += 1.0
        assert await batch(browsing(dot, ["p1", "p2"], start)) == [["MGET"]], "popular lists cached"
        clock.now += 1.0
        assert await batch(browsing(eve, ["p1", "p2"], start)) == [["MGET", "ZREVRANGE", "ZREVRANGE"]]
        assert len(checks) == 3
        await app.producer.flush()
    finally:
        await engine.limiter.aclose()
        await app.producer.stop()
        await client.delete(*map(store.keys.related, related), store.keys.popular, store.keys.popular_in("phones"))
        await client.aclose()

    async def of_ours(topic: str) -> dict[str, list[dict[str, Any]]]:
        """The records of the test's users on ``topic`` (all acknowledged: no waiting)."""
        found: dict[str, list[dict[str, Any]]] = {user: [] for user in users}
        for _, value in await read_topic(config.kafka_bootstrap, topic, until=1_000_000, timeout_s=2):
            record = orjson.loads(value or b"")
            user = record.get("user_id") or record.get("trigger", {}).get("user_id")
            if user in found:
                found[user].append(record)
        return found

    pushed = await of_ours(config.topics.push)
    assert all([d["trigger"] for d in pushed[user]] == ["browse_interest"] for user in users), pushed
    items = {user: [i["item_id"] for i in pushed[user][0]["items"]] for user in users}
    assert "p4" in items[ann] and items[ann] == items[ben], "decided on the profile of its event"
    audit = await of_ours(config.topics.suppressed)
    assert [(r["trigger"], r["reason"]) for r in audit[cid]] == [("post_purchase", "min_gap")]
    deferred = await of_ours(config.topics.deferred)
    assert all([e["kind"] for e in deferred[user]] == ["wait"] for user in users), "browse_abandoned is held"


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


async def test_the_stream_decides_every_case_as_the_replay(deployment: Deployment) -> None:
    """``tests/decision_cases.py`` through the worker's engine: what the replay decides."""
    run = uuid.uuid4().hex[:8]
    start = time.time() - 10
    client = aioredis.from_url(deployment.settings.redis_url)
    store = RelatedItemsStore(client, f"cases-{run}", CoocConfig())
    for item, ranked in RELATED.items():
        await client.set(store.keys.related(item), orjson.dumps(ranked))
    for category, ranked in POPULAR.items():
        await client.zadd(store.keys.popular_in(category), dict(ranked))
    try:
        for n, case in enumerate(CASES):
            # Its own limiter keys per case: the cases must not limit one another.
            env = {**deployment.env, **case.env(start), "NUDGESTREAM_APP_ID": f"cases-{run}-{n}"}
            await decide_in_the_stream(settings.load(env), store, case.events(start, run))
        found: dict[str, list[dict[str, Any]]] = {case.user: [] for case in CASES}
        for topic in (deployment.settings.topics.push, deployment.settings.topics.suppressed):
            for _, value in await read_topic(deployment.settings.kafka_bootstrap, topic, until=1_000_000, timeout_s=2):
                record = orjson.loads(value or b"")
                if record.get("user_id") in found and record["decision_id"] in decision_ids(CASES, start, run):
                    found[record["user_id"]].append(record)
        for case in CASES:
            decided = sorted(found[case.user], key=lambda r: (r["decided_at"], r["decision_id"]))
            assert [
                Expect(r["trigger"], r.get("outcome", "pushed"), r.get("reason"), tuple(i["item_id"] for i in r["items"]))
                for r in decided
            ] == list(case.expect), case.name
    finally:
        await client.delete(*map(store.keys.related, RELATED), *map(store.keys.popular_in, POPULAR))
        await client.aclose()


async def decide_in_the_stream(config: settings.Settings, store: RelatedItemsStore, events: list[Event]) -> None:
    """What the ingest agent does, one event per batch: the step, then the engine."""
    app = faust.App(f"{config.app_id}-app", broker=config.broker_urls, autodiscover=False, web_enabled=False)
    engine = DecisionEngine(app, config, store, SnapshotFollower(config), app.Table("pending"))
    steps, profile = StepConfig(policy=config.policy), None
    try:
        for position, event in enumerate(events):
            now = time.time()
            result = step(profile, event, "v0", position, now, steps)
            profile = result.profile
            engine.on_triggers(result.profile, result.due, result.later)
            await engine.flush(now)
            await asyncio.gather(*engine.take_sent())
    finally:
        await engine.limiter.aclose()
        await app.producer.stop()


def decision_ids(cases: Sequence[Case], start: float, run: str) -> set[str]:
    """The ids every decision of this run can have (trigger kind x triggering event)."""
    return {
        Trigger(kind, e.user_id, e.event_id, e.ts, e.ts, False, e.item_id, "").decision_id
        for case in cases for e in case.events(start, run) for kind in TriggerKind
    }
