"""The segment trainer's own process, with a real Redis: crashes, restarts, stops."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from load.trainer_stall import synthetic_records
from models.segments import SegmentSnapshot
from streams import metrics, services, settings
from streams.segmentation import SegmentTrainerService

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(local_services: services.LocalServices) -> AsyncIterator[SegmentTrainerService]:
    config = settings.load({
        "NUDGESTREAM_APP_ID": f"it-trainer-{uuid.uuid4().hex[:8]}",
        "NUDGESTREAM_REDIS_URL": local_services.redis_url,
        "NUDGESTREAM_KAFKA_BOOTSTRAP": local_services.kafka_bootstrap,
    })
    redis = Redis.from_url(local_services.redis_url)
    trainer = SegmentTrainerService(config, redis)
    try:
        yield trainer
    finally:
        await trainer.stop()
        await redis.delete(trainer.checkpoint_key)
        await redis.aclose()


def crashes() -> float:
    return metrics.REGISTRY.get_sample_value("nudgestream_segment_trainer_crashes_total") or 0.0


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


async def next_snapshot(
    trainer: SegmentTrainerService, records: Iterator[bytes], timeout_s: float = 60.0
) -> SegmentSnapshot:
    """Feed samples until the trainer has a new snapshot; checkpoint it as the worker does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await trainer.learn([next(records) for _ in range(200)])
        await asyncio.sleep(0.2)
        snapshot = await trainer.snapshot()
        if snapshot is not None:
            await trainer.checkpoint()
            return snapshot
    raise AssertionError("no new snapshot")


async def test_a_killed_trainer_process_is_counted_and_restarted_from_its_checkpoint(
    service: SegmentTrainerService,
) -> None:
    records = iter(synthetic_records(20_000, seed=3))
    await service.start(None)
    before = [await next_snapshot(service, records) for _ in range(2)]
    assert [s.version for s in before] == [1, 2]
    assert service.process is not None and service.process.pid is not None
    killed = service.process.pid
    crashes_before = crashes()

    os.kill(killed, signal.SIGKILL)
    after = await next_snapshot(service, records)

    assert crashes() == crashes_before + 1
    assert service.process is not None and service.process.pid not in (None, killed)
    assert not alive(killed), "the killed process was reaped"
    assert after.version == 3, "the version sequence continues"
    assert after.learned > before[-1].learned, "its state came back from the checkpoint"
    assert [s.id for s in after.segments] == [s.id for s in before[-1].segments]


async def test_stopping_the_trainer_ends_its_process(service: SegmentTrainerService) -> None:
    await service.start(None)
    assert service.process is not None and service.process.pid is not None
    pid = service.process.pid
    await service.learn(synthetic_records(100))
    await service.stop()
    assert not alive(pid)
    assert not service.started and await service.snapshot() is None
