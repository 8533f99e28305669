"""Right to erasure and retention on real Kafka + Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from models.events import Event, EventType
from streams.erasure import forget_user
from streams.settings import Settings
from tests.integration.conftest import Deployment, latest_values, produce

pytestmark = pytest.mark.integration


async def user_keys(url: str, prefix: str, user: str) -> list[bytes]:
    client = aioredis.from_url(url)
    try:
        return [k async for k in client.scan_iter(match=f"{prefix}*{{{user}}}*")]
    finally:
        await client.aclose()


async def send(settings: Settings, events: list[Event]) -> None:
    await produce(
        settings.kafka_bootstrap,
        [(settings.topics.event(e.type), e.user_id.encode(), e.to_bytes()) for e in events],
    )


async def test_forget_erases_the_user_everywhere_and_is_idempotent(deployment: Deployment) -> None:
    worker = deployment.start_worker(NUDGESTREAM_QUIET_HOURS="off", NUDGESTREAM_HOLDOUT_PERCENT="0")
    worker.wait_ready()
    settings = deployment.settings
    now = time.time()
    # Another reader first makes popular books for Erin's push to offer.
    frank = [Event(f"frank-{n}", EventType.VIEW, "frank", f"i{n}", now - 30 + n, "books") for n in range(5, 9)]
    erin = [Event(f"erin-{n}", EventType.VIEW, "erin", f"i{n}", now - 10 + n, "books") for n in range(3)]
    await send(settings, frank)
    deadline = time.monotonic() + 20
    while worker.metrics().get("nudgestream_related_items_writes_total", 0) < 4:
        assert time.monotonic() < deadline, "popularity never reached Redis"
        await asyncio.sleep(0.5)
    await send(settings, erin)
    changelog = f"{settings.app_id}-profiles-changelog"
    await latest_values(
        settings.kafka_bootstrap, changelog, done=lambda seen: {b"erin", b"frank"} <= set(seen)
    )
    # Erin's browsing led to a push decision checked by the limiter: she has Redis keys.
    deadline = time.monotonic() + 20
    while not await user_keys(settings.redis_url, settings.app_id, "erin") and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert await user_keys(settings.redis_url, settings.app_id, "erin")

    report = await forget_user(settings, "erin")
    assert report["profile"] is True and report["rate_limit_keys"] >= 1
    assert await user_keys(settings.redis_url, settings.app_id, "erin") == []
    latest = await latest_values(
        settings.kafka_bootstrap, changelog, done=lambda seen: seen.get(b"erin", b"") is None
    )
    assert latest[b"erin"] is None, "a tombstone, so compaction removes her profile"
    assert latest[b"frank"] is not None, "other users are untouched"
    # Her push is in her record of recent decisions, erased the same way.
    assert report["decided"] is True
    decided = await latest_values(
        settings.kafka_bootstrap, f"{settings.app_id}-decided-changelog",
        done=lambda seen: b"erin" in seen and seen[b"erin"] is None,
    )
    assert decided[b"erin"] is None

    again = await forget_user(settings, "erin")
    assert again["profile"] is again["decided"] is False and again["rate_limit_keys"] == 0


async def test_inactive_users_expire_after_the_retention(deployment: Deployment) -> None:
    deployment.stop_all()  # this test needs a worker with another retention
    # A retention of ~4 s; the sweep then runs every ~0.4 s.
    worker = deployment.start_worker(NUDGESTREAM_RETENTION_DAYS=str(4 / 86400))
    worker.wait_ready()
    settings = deployment.settings
    old = Event("gina-1", EventType.VIEW, "gina", "i9", time.time() - 60, "toys")
    await produce(settings.kafka_bootstrap, [(settings.topics.event(old.type), b"gina", old.to_bytes())])
    changelog = f"{settings.app_id}-profiles-changelog"
    latest = await latest_values(
        settings.kafka_bootstrap, changelog, done=lambda seen: b"gina" in seen and seen[b"gina"] is None
    )
    assert b"gina" in latest and latest[b"gina"] is None
