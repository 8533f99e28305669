"""Outages of Kafka and Redis under a running worker, which must ride them out alone.

These tests stop and restart services, so they run on a Kafka broker and a Redis server
of their own (same code and jars as the shared ones, other ports and folders): other
tests, and other people's runs on this machine, never see the outage. The module's
``local_services`` fixture replaces the shared pair, so the ``deployment`` fixture of
``conftest.py`` deploys onto it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from load import services
from models.cooccurrence import CoocConfig
from models.events import Event, EventType
from streams.cooccurrence import RelatedItemsStore
from tests.integration.conftest import Deployment, WorkerProcess, throwaway_services
from tests.integration.test_reliability import (
    offline,
    profiles_in_changelog,
    report,
    send,
    synthetic_stream,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The longest a worker may take to process events sent after a broker restart.
BROKER_RECOVERY_BOUND_S = 90.0


@pytest.fixture(scope="module")
def local_services(
    local_services: services.LocalServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[services.LocalServices]:
    """A Kafka broker and a Redis server for this module alone (the shared pair's jars)."""
    with throwaway_services(local_services, tmp_path_factory, "outage-services") as own:
        yield own


async def broker_answers(deployment: Deployment, timeout_s: float = 60.0) -> float:
    """Wait until the broker serves metadata again; return the seconds it took."""
    started = time.monotonic()
    while True:
        admin = AIOKafkaAdminClient(**deployment.settings.aiokafka_kwargs(), request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return time.monotonic() - started
        except KafkaError:
            if time.monotonic() - started > timeout_s:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


def alive(worker: WorkerProcess) -> bool:
    return worker.process is not None and worker.process.poll() is None


async def test_the_worker_reconnects_by_itself_after_a_broker_restart(
    deployment: Deployment, local_services: services.LocalServices
) -> None:
    before = synthetic_stream(400, users=60, seed=31, user_prefix="pre-outage-")
    after = synthetic_stream(400, users=60, seed=32, user_prefix="post-outage-")
    worker = deployment.start_worker()
    try:
        worker.wait_ready()
        await send(deployment, before)
        expected = offline(before).profiles
        await profiles_in_changelog(deployment, {u: p.events for u, p in expected.items()})

        services.stop_service(local_services, "kafka")
        await asyncio.sleep(10)  # long enough for every client of the worker to notice
        assert alive(worker), worker.log_tail()
        restarted_at = time.monotonic()
        services.up(local_services, say=lambda message: None)
        # `up` may return early: the broker's log holds "started" from its first start.
        await broker_answers(deployment)
        broker_s = time.monotonic() - restarted_at
        await send(deployment, after)
        expected = offline([*before, *after]).profiles
        found = await profiles_in_changelog(
            deployment, {u: p.events for u, p in expected.items()}, timeout_s=BROKER_RECOVERY_BOUND_S
        )
        processed_s = time.monotonic() - restarted_at
        assert {u: p.events for u, p in found.items()} == {u: p.events for u, p in expected.items()}
        assert alive(worker)
        worker.wait_ready(timeout_s=30)
        report(
            "broker outage",
            outage_s=10,
            broker_restart_to_serving_s=round(broker_s, 1),
            restart_to_events_processed_s=round(processed_s, 1),
        )
    finally:
        services.up(local_services, say=lambda message: None)
        worker.stop()


async def test_consumption_goes_on_without_redis_and_redis_is_used_again_when_back(
    deployment: Deployment, local_services: services.LocalServices
) -> None:
    worker = deployment.start_worker()
    try:
        worker.wait_ready()
        await wait_for(lambda: redis_up(worker) == 1, timeout_s=30, what="the first Redis check")
        errors_before = redis_errors(worker)

        services.stop_service(local_services, "redis")
        stopped_at = time.monotonic()
        # Thirty shoppers each look at a phone and then its case while Redis is down.
        ts = time.time() - 600
        events = [
            Event(f"redisless-{n}-{step}", EventType.VIEW, f"redisless-{n}", item, ts + n + step, "tech")
            for n in range(30)
            for step, item in enumerate(("phone-9", "case-9"))
        ]
        await send(deployment, events)
        expected = offline(events).profiles
        found = await profiles_in_changelog(deployment, {u: p.events for u, p in expected.items()})
        assert {u: p.events for u, p in found.items()} == {u: p.events for u, p in expected.items()}
        noticed_s = await wait_for(lambda: redis_up(worker) == 0, timeout_s=30, what="redis_up to drop")
        assert redis_errors(worker) > errors_before

        services.up(local_services, say=lambda message: None)
        restarted_at = time.monotonic()
        back_s = await wait_for(lambda: redis_up(worker) == 1, timeout_s=30, what="redis_up to return")
        # Related items computed during the outage are published once Redis is back.
        settings = deployment.settings
        client = aioredis.from_url(settings.redis_url)
        try:
            store = RelatedItemsStore(client, settings.app_id, CoocConfig())
            deadline = time.monotonic() + 30
            related: list[tuple[str, float]] = []
            while not related and time.monotonic() < deadline:
                related = (await store.related(["phone-9"]))["phone-9"]
                await asyncio.sleep(0.5)
        finally:
            await client.aclose()
        assert [item for item, _ in related] == ["case-9"]
        assert alive(worker)
        report(
            "redis outage",
            outage_s=round(restarted_at - stopped_at, 1),
            redis_up_dropped_after_s=round(noticed_s, 1),
            redis_up_back_after_restart_s=round(back_s, 1),
            ping_errors_counted=redis_errors(worker) - errors_before,
        )
    finally:
        services.up(local_services, say=lambda message: None)
        worker.stop()


def redis_up(worker: WorkerProcess) -> float | None:
    return worker.metrics().get("nudgestream_redis_up")


def redis_errors(worker: WorkerProcess) -> float:
    return worker.metrics().get('nudgestream_redis_errors_total{operation="ping"}', 0.0)
