"""The segment trainer's own process, with a real Redis: crashes, restarts, stops."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis

from load import services
from load.generator import GeneratorConfig, generate_events
from load.producer import produce
from load.trainer_stall import synthetic_records
from models.segments import SegmentSnapshot
from streams import metrics, settings
from streams.segmentation import SegmentTrainerService, read_latest_snapshot
from tests.integration.conftest import Deployment

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


def trainer_children(worker_pid: int) -> list[int]:
    """The worker's trainer processes (children running streams.trainer_process)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (OSError, ValueError):
            continue  # it exited meanwhile
        if ppid == worker_pid and b"streams.trainer_process" in command:
            found.append(int(entry))
    return found


async def send_events(deployment: Deployment, count: int, seed: int) -> None:
    config = GeneratorConfig(
        users=800, seed=seed, malformed_share=0.0, events_per_second=200.0,
        start_ts=time.time() - count / 200.0, event_id_prefix=f"trainer-{seed}-",
    )
    prefix = deployment.settings.topic_prefix
    source = (
        record._replace(topic=prefix + record.topic)
        for record in itertools.islice(generate_events(config), count)
    )
    assert (await produce(source, bootstrap=deployment.settings.kafka_bootstrap)).sent == count


async def newer_snapshot(deployment: Deployment, than: int, timeout_s: float = 120.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        snapshot = await read_latest_snapshot(deployment.settings)
        if snapshot is not None and snapshot.version > than:
            return snapshot.version
        await asyncio.sleep(1.0)
    raise AssertionError(f"no snapshot newer than version {than}")


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.5)


async def test_a_worker_whose_trainer_process_is_killed_keeps_publishing_snapshots(
    deployment: Deployment,
) -> None:
    worker = deployment.start_worker()
    worker.wait_ready()
    assert worker.process is not None
    await send_events(deployment, 6000, seed=11)
    version = await newer_snapshot(deployment, than=0)
    (child,) = trainer_children(worker.process.pid)
    learned = worker.metrics()["nudgestream_segment_vectors_learned_total"]

    os.kill(child, signal.SIGKILL)
    await send_events(deployment, 6000, seed=12)
    assert await newer_snapshot(deployment, than=version) > version

    shown = worker.metrics()
    assert shown["nudgestream_segment_trainer_crashes_total"] == 1
    assert shown["nudgestream_segment_vectors_learned_total"] > learned
    assert worker.process.poll() is None, "the worker survived its trainer"
    (restarted,) = trainer_children(worker.process.pid)
    assert restarted != child

    worker.stop()
    await wait_for(lambda: not alive(restarted), "the trainer process outlived its worker")
