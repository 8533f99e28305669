"""Real Kafka (KRaft) and Redis for integration tests, started by the project's own code.

The services are started once per test session (idempotently: a running pair is reused).
Each test module gets its own topic prefix and application id, so tests sharing the broker
never see each other's events, consumer groups or changelogs. When ``CI=true`` a service
that cannot be started fails the run; elsewhere the integration tests are skipped with
the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from load import services
from models.events import Event
from streams import settings
from streams.admin import create_topics
from tests.conftest import PROJECT_ROOT, in_ci

pytestmark = pytest.mark.integration


def _unavailable(message: str) -> NoReturn:
    """Services that cannot start: a failure when ``CI=true``, a skip with the reason elsewhere."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def local_services() -> services.LocalServices:
    local = services.LocalServices.from_env()
    try:
        services.up(local, say=lambda message: None)
    except services.ServiceError as exc:
        _unavailable(f"cannot start the local Kafka broker and Redis server: {exc}")
    return local


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every socket stays bound until all are chosen."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


#: Start-up errors that mean "a port was taken before the service bound it": worth new ports.
_PORT_TAKEN = ("already used by another program", "Address already in use", "BindException")


@contextlib.contextmanager
def throwaway_services(
    shared: services.LocalServices,
    tmp_path_factory: pytest.TempPathFactory,
    label: str,
    *,
    attempts: int = 3,
    **options: Any,
) -> Iterator[services.LocalServices]:
    """A Kafka broker and a Redis server of their own, on free ports, for one test module.

    For tests that stop, restart or reconfigure (SASL, passwords) the services they run
    on: doing that to the shared pair (``local_services``, also used by the other modules
    and by other people's runs on this machine) would disturb everyone else's tests. These
    run the shared pair's cached jars (``shared.cache_dir``) on ports and in a state folder
    (``<basetemp>/<label>N``) of their own; ``options`` are further
    :class:`~load.services.LocalServices` fields (``kafka_sasl_users``, ``redis_password``).

    A port that someone takes between being chosen here and being bound by the service is
    retried on new ports (up to ``attempts`` starts). A pair that still cannot start fails
    the test when ``CI=true`` and skips it elsewhere, like ``local_services``. On the way
    out, whether the tests passed, failed or never ran, both processes are stopped and
    waited for and the state folder is removed (kept only if a process would not stop).
    """
    own: services.LocalServices | None = None
    try:
        for attempt in range(1, attempts + 1):
            kafka_port, controller_port, redis_port = free_ports(3)
            own = services.LocalServices(
                state_dir=tmp_path_factory.mktemp(label),
                kafka_port=kafka_port,
                controller_port=controller_port,
                redis_port=redis_port,
                cache_dir=shared.cache_dir,
                kafka_heap="512m",
                **options,
            )
            try:
                services.up(own, say=lambda message: None)
                break
            except services.ServiceError as exc:
                detail = f"{exc}{_log_tails(own)}"
                _stop_for_good(own)  # `up` may have started one of the two before failing
                if attempt == attempts or not any(s in detail for s in _PORT_TAKEN):
                    _unavailable(f"cannot start the {label} Kafka broker and Redis server: {detail}")
        assert own is not None
        yield own
    finally:
        if own is not None:
            _stop_for_good(own)


def _stop_for_good(own: services.LocalServices, timeout_s: float = 30.0) -> None:
    """Stop both services by PID, wait until they are gone, then remove the state folder."""
    pids = {}
    for name in ("kafka", "redis"):
        with contextlib.suppress(FileNotFoundError, ValueError):
            pids[name] = int(own.pid_file(name).read_text().strip())
    for name in pids:
        # ProcessLookupError: it exited just as it was being killed, which is what we want.
        with contextlib.suppress(ProcessLookupError):
            services.stop_service(own, name)
    deadline = time.monotonic() + timeout_s
    left = {name: pid for name, pid in pids.items() if _still_running(pid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = {name: pid for name, pid in left.items() if _still_running(pid)}
    if left:
        raise AssertionError(f"throwaway services would not stop: {left} (state in {own.state_dir})")
    shutil.rmtree(own.state_dir, ignore_errors=True)


def _still_running(pid: int) -> bool:
    """Whether ``pid`` runs (a child of ours that exited is reaped, so it no longer counts)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _log_tails(own: services.LocalServices, chars: int = 2000) -> str:
    """The end of each service's log, for a start-up error (the folder is removed after)."""
    tails = []
    for name in ("kafka", "redis"):
        log = own.log_file(name)
        if log.exists():
            tails.append(f"\n--- {log.name} ---\n{log.read_text(errors='replace')[-chars:]}")
    return "".join(tails)


@dataclass
class Deployment:
    """One isolated nudgestream deployment on the shared broker: env, settings, helpers."""

    env: dict[str, str]
    state_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def settings(self) -> settings.Settings:
        return settings.load(self.env)

    def start_worker(self, **extra_env: str) -> WorkerProcess:
        env = {**self.env, "NUDGESTREAM_WEB_PORT": str(free_port()), **extra_env}
        index = len(self.workers)
        env.setdefault("NUDGESTREAM_DATA_DIR", str(self.state_dir / f"worker-{index}"))
        worker = WorkerProcess(env, self.state_dir / f"worker-{index}.log")
        worker.start()
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.env["NUDGESTREAM_WEB_PORT"])

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env={**os.environ, **self.env},
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout_s}s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return parse_metrics(text)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (labels as written)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.fixture(scope="module")
def deployment(
    local_services: services.LocalServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    tag = uuid.uuid4().hex[:8]
    env = {
        "NUDGESTREAM_KAFKA_BOOTSTRAP": local_services.kafka_bootstrap,
        "NUDGESTREAM_REDIS_URL": local_services.redis_url,
        "NUDGESTREAM_APP_ID": f"it-{tag}",
        "NUDGESTREAM_TOPIC_PREFIX": f"it-{tag}.",
        "NUDGESTREAM_PARTITIONS": "4",
        "NUDGESTREAM_LOG_LEVEL": "info",
        # Workers decide with real clocks; the default quiet hours (22:00-08:00) would make a
        # test's pushes depend on the hour the suite runs at. Tests of quiet hours set them.
        "NUDGESTREAM_QUIET_HOURS": "off",
        # The static policy: what a test's pushes are must not depend on the outcomes of the
        # tests before it. tests/integration/test_learning.py turns the policies on.
        "NUDGESTREAM_LEARNING": "off",
    }
    deployment = Deployment(env, tmp_path_factory.mktemp(f"deploy-{tag}"))
    asyncio.run(create_topics(deployment.settings))
    yield deployment
    deployment.stop_all()
    asyncio.run(delete_topics(deployment.settings))


async def delete_topics(config: settings.Settings) -> None:
    """Delete a finished deployment's topics, its own and its workers' internal ones.

    Without this the shared broker gathers thousands of partitions over a suite run, and
    every later topic creation, rebalance and restart of that broker gets slower.
    """
    admin = AIOKafkaAdminClient(**config.aiokafka_kwargs())
    await admin.start()
    try:
        ours = [
            name
            for name in await admin.list_topics()
            if name.startswith((config.topic_prefix, f"{config.app_id}-"))
        ]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


async def produce_events(config: settings.Settings, events: Iterable[Event]) -> None:
    """Send events to their topics, keyed by user as upstream producers do; wait for acks."""
    await produce(
        config.kafka_bootstrap,
        [(config.topics.event(e.type), e.user_id.encode(), e.to_bytes()) for e in events],
    )


async def wait_for_related_rows(worker: WorkerProcess, rows: int, timeout_s: float = 30.0) -> None:
    """Wait until the worker has written ``rows`` related-item rows: a catalogue to push from."""
    deadline = time.monotonic() + timeout_s
    while worker.metrics().get("nudgestream_related_items_writes_total", 0) < rows:
        assert time.monotonic() < deadline, f"fewer than {rows} related-item rows in {timeout_s:.0f}s"
        await asyncio.sleep(0.5)


async def produce(
    bootstrap: str, messages: list[tuple[str, bytes | None, bytes | None]]
) -> None:
    """Send (topic, key, value) messages and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(t, key=k, value=v) for t, k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, *, until: int, timeout_s: float = 60.0
) -> list[tuple[bytes | None, bytes | None]]:
    """Read (key, value) pairs from the start of every partition until ``until`` arrived."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    out: list[tuple[bytes | None, bytes | None]] = []
    try:
        partitions = await _partitions(consumer, topic, timeout_s)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while len(out) < until and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend((r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return out


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, timeout_s: float
) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        await consumer._client.force_metadata_update()  # the topic may be created just now
        await asyncio.sleep(0.2)
    raise AssertionError(f"topic {topic} does not exist")


async def latest_values(
    bootstrap: str, topic: str, *, done: Callable[[dict[bytes, bytes | None]], bool],
    timeout_s: float = 60.0,
) -> dict[bytes, bytes | None]:
    """Follow a (changelog) topic, keeping the latest value per key, until ``done``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    latest: dict[bytes, bytes | None] = {}
    try:
        partitions = await _partitions(consumer, topic, timeout_s)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while not done(latest) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    assert record.key is not None
                    latest[record.key] = record.value
    finally:
        await consumer.stop()
    return latest


def decode_json(value: bytes | None) -> dict[str, object]:
    assert value is not None
    doc: dict[str, object] = orjson.loads(value)
    return doc
