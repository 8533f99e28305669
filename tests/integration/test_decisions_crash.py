"""Push decisions across a crash: kill -9 a worker mid-stream, restart it, and count every
expected decision on notifications.push.

In the default at_least_once mode every expected decision is published exactly once: a
batch's pushes are acknowledged before the profiles that mark its events applied are
written, so a crash either replays an event (and re-makes the same decision, which the
limiter's records and the reconciliation on assignment keep from being published twice)
or finds its push on the topic already (docs/RELIABILITY.md)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from models.events import Event, EventType
from models.policy import PolicyConfig, TriggerKind, triggers_for
from models.profile import ProfileConfig, update
from tests.integration.conftest import (
    Deployment,
    decode_json,
    produce_events,
    read_topic,
    wait_for_related_rows,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Limits and timing out of the way, so the set of decisions depends only on the events.
DETERMINISTIC = {
    "NUDGESTREAM_QUIET_HOURS": "off",
    "NUDGESTREAM_HOLDOUT_PERCENT": "0",
    "NUDGESTREAM_TRIGGERS": "browse_interest",
    "NUDGESTREAM_PUSH_MIN_GAP_S": "0",
    "NUDGESTREAM_PUSH_ITEM_COOLDOWN_S": "0",
    "NUDGESTREAM_PUSH_MAX_PER_WINDOW": "1000",
    "NUDGESTREAM_PUSH_GLOBAL_RATE": "100000",
    "NUDGESTREAM_PUSH_GLOBAL_BURST": "100000",
}


def stream(users: int, start: float) -> list[Event]:
    """Each user browses four phones in two sessions: two browse triggers per user."""
    events = []
    for u in range(users):
        for n, item in enumerate(("a", "b", "c", "d")):
            ts = start + u * 0.01 + n * (3600 if n >= 2 else 1)
            events.append(Event(f"u{u}-{n}", EventType.VIEW, f"u{u}", f"{item}{u % 7}", min(ts, start + 5), "phones"))
    return events


def expected_decisions(events: list[Event]) -> set[str]:
    config = PolicyConfig(triggers=frozenset({TriggerKind.BROWSE_INTEREST}))
    profiles: dict[str, object] = {}
    ids = set()
    for event in sorted(events, key=lambda e: e.ts):
        profile = profiles.get(event.user_id)
        before = profile
        profile, applied = update(profile, event, event.ts, ProfileConfig())  # type: ignore[arg-type]
        profiles[event.user_id] = profile
        if applied:
            ids |= {t.decision_id for t in triggers_for(before, profile, event, config)}
    return ids


async def test_a_killed_worker_publishes_every_expected_push_exactly_once(
    deployment: Deployment,
) -> None:
    settings = deployment.settings
    worker = deployment.start_worker(**DETERMINISTIC)
    worker.wait_ready()
    now = time.time() - 60
    # A catalogue first, so every trigger finds popular items to push.
    seed = [Event(f"s{n}", EventType.VIEW, f"seed{n}", f"pop{n % 5}", now - 100, "phones") for n in range(50)]
    await produce_events(settings, seed)
    await wait_for_related_rows(worker, 5)

    events = stream(600, now)
    expected = expected_decisions(events)
    assert len(expected) >= 600
    await produce_events(settings, events)
    # Kill it mid-stream: after some decisions went out, before all did.
    deadline = time.monotonic() + 60
    while worker.metrics().get('nudgestream_decisions_total{outcome="pushed",trigger="browse_interest"}', 0) < 150:
        assert time.monotonic() < deadline, "no decisions before the kill"
        await asyncio.sleep(0.05)
    worker.kill()
    deployment.start_worker(**DETERMINISTIC).wait_ready(timeout_s=90)

    pushes: list[dict[str, object]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        raw = await read_topic(settings.kafka_bootstrap, settings.topics.push, until=10**6, timeout_s=3)
        pushes = [decode_json(v) for _, v in raw]
        if expected <= {str(p["decision_id"]) for p in pushes}:
            await asyncio.sleep(5)  # let any late duplicate arrive before counting
            raw = await read_topic(settings.kafka_bootstrap, settings.topics.push, until=10**6, timeout_s=3)
            pushes = [decode_json(v) for _, v in raw]
            break
        await asyncio.sleep(2)
    counts = Counter(str(p["decision_id"]) for p in pushes if not str(p["user_id"]).startswith("seed"))
    missing = expected - set(counts)
    duplicated = {d: n for d, n in counts.items() if n > 1}
    print(f"expected {len(expected)}, found {len(set(counts) & expected)}, "
          f"missing {len(missing)}, duplicated {len(duplicated)}")
    assert not duplicated, f"{len(duplicated)} decisions published twice"
    assert not missing, f"{len(missing)} decisions lost"
    assert set(counts) <= expected, "no decision that the events do not call for"
