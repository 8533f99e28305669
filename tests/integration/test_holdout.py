"""The control group on real Kafka + Redis: decisions are audited as holdout, never pushed."""

from __future__ import annotations

import asyncio
import time

import pytest

from models.events import Event, EventType
from tests.integration.conftest import (
    Deployment,
    decode_json,
    produce_events,
    read_topic,
    wait_for_related_rows,
)

pytestmark = pytest.mark.integration


async def test_control_group_users_get_holdout_records_and_no_push(deployment: Deployment) -> None:
    worker = deployment.start_worker(NUDGESTREAM_QUIET_HOURS="off", NUDGESTREAM_HOLDOUT_PERCENT="50")
    worker.wait_ready()
    settings = deployment.settings
    now = time.time()
    catalogue = [Event(f"c{n}", EventType.VIEW, f"reader{n}", f"book{n % 4}", now - 60, "books") for n in range(12)]
    users = [f"ivy{n}" for n in range(40)]
    browsing = [
        Event(f"{user}-{k}", EventType.VIEW, user, f"book{k}", now - 5 + k, "books")
        for user in users for k in range(2)
    ]
    await produce_events(settings, catalogue)
    await wait_for_related_rows(worker, 4)
    await produce_events(settings, browsing)

    deadline = time.monotonic() + 40
    while True:
        audit = [decode_json(v) for _, v in await read_topic(settings.kafka_bootstrap, settings.topics.suppressed, until=10**6, timeout_s=2)]
        pushes = [decode_json(v) for _, v in await read_topic(settings.kafka_bootstrap, settings.topics.push, until=10**6, timeout_s=2)]
        decided = {str(r["user_id"]) for r in audit + pushes} & set(users)
        if decided == set(users) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    held_out = {str(r["user_id"]) for r in audit if r["outcome"] == "holdout"}
    pushed = {str(p["user_id"]) for p in pushes}
    assert decided == set(users)
    assert held_out and pushed & set(users), "a 50 % control group splits 40 users"
    assert not held_out & pushed, "a control-group user is never pushed"
    assert all(r["reason"] == "holdout" for r in audit if r["outcome"] == "holdout")
    # Counted by decision id, as the contract says (the audit is written at least once).
    holdout_decisions = {str(r["decision_id"]) for r in audit if r["outcome"] == "holdout"}
    assert len(holdout_decisions) == len(held_out), "one browse trigger per control user"
    metric = 'nudgestream_decisions_total{outcome="holdout",trigger="browse_interest"}'
    assert worker.metrics()[metric] == len(holdout_decisions)
