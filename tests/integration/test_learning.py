"""The learning policies in the worker on real Kafka + Redis: a user who ignored their pushes
gets no further push (audited as ``fatigue``) while a control user is untouched, and the
bandit's shared counts appear in Redis from exposures and attributed conversions."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from models.events import Event, EventType
from models.routing import in_holdout
from streams.client import EventProducer
from streams.keys import RedisKeys
from tests.integration.conftest import (
    Deployment,
    WorkerProcess,
    decode_json,
    produce_events,
    read_topic,
)
from tests.integration.test_decisions_crash import DETERMINISTIC
from tests.integration.test_outcomes import wait_for

pytestmark = pytest.mark.integration

HOLDOUT = "50"
IGNORED = 2  # more than the free ignores (1): the cool-down starts


def users(holdout: bool, count: int, prefix: str) -> list[str]:
    """User ids on one side of the 50 % control group (the worker draws the same)."""
    found = (f"{prefix}{n}" for n in range(1000))
    return [u for u in found if in_holdout(u, float(HOLDOUT)) == holdout][:count]


def start(deployment: Deployment, learning: str) -> WorkerProcess:
    deployment.stop_all()
    worker = deployment.start_worker(
        **{**DETERMINISTIC, "NUDGESTREAM_HOLDOUT_PERCENT": HOLDOUT, "NUDGESTREAM_LEARNING": learning,
           "NUDGESTREAM_LEARNING_SYNC_S": "1"},
    )
    worker.wait_ready()
    return worker


async def popular_lamps(deployment: Deployment, worker: WorkerProcess) -> None:
    settings = deployment.settings
    tag = uuid.uuid4().hex[:6]
    now = time.time()
    catalogue = [Event(f"c{n}-{tag}", EventType.VIEW, f"reader{n}-{tag}", f"lamp{n % 4}", now - 60, "lamps")
                 for n in range(12)]
    await produce_events(settings, catalogue)
    await wait_for(worker, lambda m: m["nudgestream_related_items_writes_total"] >= 4, "related items")


async def browse_round(deployment: Deployment, who: list[str], round_: int) -> dict[str, dict[str, Any]]:
    """Each user views two items of a new category (one browse trigger each); the decision
    of each user of the round: a push, a holdout record or a suppression, by user."""
    settings = deployment.settings
    tag, now, category = uuid.uuid4().hex[:6], time.time(), f"shelf{round_}"
    views = [Event(f"{u}-{tag}-{k}", EventType.VIEW, u, f"{category}-{k}", now + k, category)
             for u in who for k in range(2)]
    await produce_events(settings, views)
    deadline = time.monotonic() + 40
    while True:
        records = [decode_json(v) for topic in (settings.topics.push, settings.topics.suppressed)
                   for _, v in await read_topic(settings.kafka_bootstrap, topic, until=10**6, timeout_s=2)]
        # This round's: triggered by an event of this round (the rounds are seconds apart).
        mine = {str(r["user_id"]): r for r in records if float(r["event_ts"]) >= now and str(r["user_id"]) in who}
        if set(mine) == set(who):
            return mine
        assert time.monotonic() < deadline, f"every user of round {round_} is decided: {mine}"
        await asyncio.sleep(1)


async def test_a_user_who_ignored_their_pushes_gets_none_and_a_control_user_is_untouched(
    deployment: Deployment,
) -> None:
    worker = start(deployment, "fatigue")
    settings = deployment.settings
    ignorer, control = users(False, 1, "ign")[0], users(True, 1, "ctl")[0]
    await popular_lamps(deployment, worker)
    for round_ in range(IGNORED):
        decided = await browse_round(deployment, [ignorer, control], round_)
        assert "outcome" not in decided[ignorer], f"round {round_}: pushed"
        assert decided[control]["outcome"] == "holdout"
        async with EventProducer.from_settings(settings) as producer:
            for user in (ignorer, control):
                outcome = {"kind": "dismissed", "decision_id": decided[user]["decision_id"], "user_id": user}
                await (await producer.report_outcome(outcome))
        await wait_for(
            worker,
            lambda m, n=round_ + 1: sum(v for k, v in m.items()
                                        if k.startswith("nudgestream_push_outcomes_total") and 'outcome="dismissed"' in k) == 2 * n,
            "the dismissals are recorded",
        )
    decided = await browse_round(deployment, [ignorer, control], IGNORED)
    assert (decided[ignorer]["outcome"], decided[ignorer]["reason"]) == ("suppressed", "fatigue")
    assert decided[control]["outcome"] == "holdout", "the control group is never steered"
    values = worker.metrics()
    assert values['nudgestream_learning_suppressed_total{policy="fatigue",trigger="browse_interest"}'] == 1
    assert values['nudgestream_suppressed_total{reason="fatigue"}'] == 1


async def test_bandit_counts_reach_redis_from_pushes_and_attributed_buys(deployment: Deployment) -> None:
    worker = start(deployment, "bandit")
    settings = deployment.settings
    treated, control = users(False, 8, "bnd"), users(True, 2, "bct")
    await popular_lamps(deployment, worker)
    decided = await browse_round(deployment, treated + control, 0)
    pushes = [r for r in decided.values() if "outcome" not in r]
    # Until the first sync, and then with a uniform prior, most pushes go.
    assert pushes, decided
    buys = [Event(f"buy-{p['decision_id']}", EventType.BUY, str(p["user_id"]), str(p["items"][0]["item_id"]),
                  time.time(), "lamps") for p in pushes]
    await produce_events(settings, buys)

    client = aioredis.from_url(settings.redis_url)
    key = RedisKeys.of_app(settings.app_id).learning_arms
    deadline = time.monotonic() + 40
    try:
        while (arms := await client.hgetall(key)).get(b"browse_interest:conversions") != str(len(pushes)).encode():
            assert time.monotonic() < deadline, f"{arms}\n{worker.log_tail()}"
            await asyncio.sleep(0.5)
    finally:
        await client.aclose()
    # Exposures of pushed decisions only: the control group's records teach nothing.
    assert arms[b"browse_interest:exposures"] == str(len(pushes)).encode()
    assert worker.metrics()["nudgestream_learning_bandit_active"] == 1
