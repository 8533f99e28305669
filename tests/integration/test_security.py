"""Authentication to Kafka (SASL/PLAIN) and Redis (AUTH), and what a worker's log shows.

A throwaway broker with a SASL_PLAINTEXT listener and a throwaway Redis with a password
are started for this module (same jars and binaries as the shared pair). The clients are
built exactly as the worker builds them: ``Settings.aiokafka_kwargs()`` for aiokafka,
``streams.clients.credentials`` for Faust, ``streams.clients.redis_client`` and
:class:`~streams.limiter.RedisLimiter` for Redis. Passwords are random per run, so a
password found in a log can only have come from this run's settings.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import time as dt_time

import faust
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.exceptions import AuthenticationError

from load import services
from models.events import Event, EventType
from models.limits import LimitConfig, LimitRequest, SuppressReason
from streams.clients import credentials, redis_client
from streams.limiter import LimiterUnavailableError, RedisLimiter
from streams.settings import Settings
from tests.integration.conftest import Deployment, throwaway_services
from tests.integration.test_reliability import (
    new_deployment,
    offline,
    profiles_in_changelog,
    send,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENT_USER = "nudgestream"
#: The limiter checks below are about credentials, not the time of day they run at.
ANY_HOUR = LimitConfig(quiet_start=dt_time(0), quiet_end=dt_time(0))


class Secrets:
    """This run's passwords: hex, so no character needs escaping anywhere."""

    broker = secrets.token_hex(12)
    client = secrets.token_hex(12)
    redis = secrets.token_hex(12)
    pseudonym_key = secrets.token_hex(16)


@pytest.fixture(scope="module")
def secured(
    local_services: services.LocalServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[services.LocalServices]:
    started = time.monotonic()
    with throwaway_services(
        local_services,
        tmp_path_factory,
        "secured-services",
        kafka_sasl_users=(("broker", Secrets.broker), (CLIENT_USER, Secrets.client)),
        redis_password=Secrets.redis,
    ) as own:
        print(f"\n[security] SASL broker and AUTH Redis up in {time.monotonic() - started:.1f}s")
        yield own


def sasl_env(password: str) -> dict[str, str]:
    return {
        "NUDGESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "NUDGESTREAM_KAFKA_SASL_MECHANISM": "PLAIN",
        "NUDGESTREAM_KAFKA_SASL_USERNAME": CLIENT_USER,
        "NUDGESTREAM_KAFKA_SASL_PASSWORD": password,
        "NUDGESTREAM_PSEUDONYM_KEY": Secrets.pseudonym_key,
    }


@pytest.fixture(scope="module")
def deployment(
    secured: services.LocalServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A deployment on the secured pair: its topics are created over SASL."""
    deployment = new_deployment(secured, tmp_path_factory.mktemp("secured"), **sasl_env(Secrets.client))
    yield deployment
    deployment.stop_all()


def with_env(deployment: Deployment, **env: str) -> Settings:
    return Deployment({**deployment.env, **env}, deployment.state_dir).settings


async def list_topics(settings: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs(), request_timeout_ms=5000)
    try:
        await admin.start()
        topics: list[str] = await admin.list_topics()
        return topics
    finally:
        await admin.close()


async def test_kafka_clients_connect_with_the_right_password_only(deployment: Deployment) -> None:
    settings = deployment.settings
    assert settings.topics.dlq in await list_topics(settings)
    faust_credentials = credentials(settings)
    assert isinstance(faust_credentials, faust.SASLCredentials)
    assert (faust_credentials.username, faust_credentials.password) == (CLIENT_USER, Secrets.client)

    for wrong in (
        with_env(deployment, NUDGESTREAM_KAFKA_SASL_PASSWORD=secrets.token_hex(12)),
        with_env(deployment, NUDGESTREAM_KAFKA_SECURITY_PROTOCOL="PLAINTEXT"),
    ):
        with pytest.raises(KafkaError):
            await list_topics(wrong)


async def test_redis_clients_work_with_the_password_and_say_why_they_fail_without(
    deployment: Deployment, secured: services.LocalServices
) -> None:
    settings = deployment.settings
    client = redis_client(settings)
    assert await client.ping()
    await client.aclose()
    anonymous = with_env(deployment, NUDGESTREAM_REDIS_URL=f"redis://127.0.0.1:{secured.redis_port}/0")
    client = redis_client(anonymous)
    with pytest.raises(AuthenticationError):
        await client.ping()
    await client.aclose()

    prefix = f"security-{uuid.uuid4().hex}:"
    limiter = RedisLimiter(settings.redis_url, ANY_HOUR, prefix=prefix)
    try:
        assert (await limiter.check(LimitRequest("d1", "u1", time.time()))).allowed
        await limiter.forget_user("u1")
    finally:
        await limiter.aclose()
    limiter = RedisLimiter(anonymous.redis_url, ANY_HOUR, prefix=prefix)
    try:
        refused = await limiter.check(LimitRequest("d2", "u2", time.time()))
        assert refused.reason is SuppressReason.LIMITER_UNAVAILABLE
        with pytest.raises(LimiterUnavailableError, match=r"(?i)auth"):
            await limiter.forget_user("u2")
    finally:
        await limiter.aclose()


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_a_worker_on_sasl_and_redis_auth_logs_no_secret_and_no_user_id(
    deployment: Deployment, level: str
) -> None:
    """Also at debug level: an operator chasing a problem must not leak credentials."""
    worker = deployment.start_worker(NUDGESTREAM_LOG_LEVEL=level)
    worker.wait_ready()
    people = [f"person-{uuid.uuid4().hex[:12]}" for _ in range(20)]
    ts = time.time() - 600
    events = [
        Event(f"{person}-{n}", kind, person, f"item-{n}", ts + n, "books")
        for person in people
        for n, kind in enumerate((EventType.VIEW, EventType.CLICK, EventType.BUY))
    ]
    await send(deployment, events)
    # A malformed event and a wrongly keyed one take the dead-letter and re-keying paths.
    settings = deployment.settings
    producer = AIOKafkaProducer(**settings.aiokafka_kwargs(), acks="all")
    await producer.start()
    try:
        view = settings.topics.event(EventType.VIEW)
        await producer.send_and_wait(view, key=people[0].encode(), value=b'{"user_id": "' + people[0].encode())
        rekeyed = Event(f"{people[1]}-late", EventType.VIEW, people[1], "item-x", ts + 10, "books")
        await producer.send_and_wait(view, key=b"someone-else", value=rekeyed.to_bytes())
        events.append(rekeyed)
    finally:
        await producer.stop()
    expected = offline(events).profiles
    await profiles_in_changelog(deployment, {u: p.events for u, p in expected.items()})
    await wait_for(lambda: worker.metrics().get("nudgestream_redis_up") == 1, timeout_s=30,
                   what="the worker's Redis client to authenticate")
    worker.stop()

    log = worker.log_path.read_text(errors="replace")
    leaked = [name for name in ("client", "broker", "redis", "pseudonym_key") if getattr(Secrets, name) in log]
    named = [person for person in people if person in log]
    assert (leaked, named) == ([], []), "secrets / user ids in the worker's log"


async def test_a_worker_with_a_wrong_kafka_password_says_so_and_never_gets_ready(
    deployment: Deployment,
) -> None:
    wrong = secrets.token_hex(12)
    worker = deployment.start_worker(NUDGESTREAM_KAFKA_SASL_PASSWORD=wrong)
    try:
        await wait_for(
            lambda: "Authentication failed" in worker.log_path.read_text(errors="replace"),
            timeout_s=30, what="the worker to log the failed authentication",
        )
        with pytest.raises(AssertionError):
            worker.wait_ready(timeout_s=5)
    finally:
        worker.stop()
    assert wrong not in worker.log_path.read_text(errors="replace")
