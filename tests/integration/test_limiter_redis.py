"""The rate limiter on a real Redis: the shared table, racing workers, failing closed.

Every test uses its own key prefix (and deletes its keys afterwards), so tests never
share limiter state with each other or with a running deployment.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from load import services
from models.limits import (
    LimitConfig,
    Limiter,
    LimitRequest,
    LimitResult,
    SuppressReason,
    Verdict,
)
from streams import metrics
from streams.limiter import UNAVAILABLE, LimiterUnavailableError, RedisLimiter
from tests.integration.conftest import free_port
from tests.limits_cases import CASES, T0, Case, Check, MarkPublished, configs, request_streams

pytestmark = pytest.mark.integration

MakeLimiter = Callable[[LimitConfig], RedisLimiter]


async def delete_prefix(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def make_limiter(local_services: services.LocalServices) -> AsyncIterator[MakeLimiter]:
    """Limiters (each with its own connection pool) sharing one fresh key prefix."""
    prefix = f"test-limiter-{uuid.uuid4().hex}:"
    made: list[RedisLimiter] = []

    def make(config: LimitConfig) -> RedisLimiter:
        made.append(RedisLimiter(local_services.redis_url, config, prefix=prefix))
        return made[-1]

    yield make
    for limiter in made:
        await limiter.aclose()
    await delete_prefix(local_services.redis_url, prefix)


async def run(limiter: RedisLimiter, step: Check | MarkPublished) -> LimitResult | bool:
    if isinstance(step, Check):
        return await limiter.check(step.request())
    return await limiter.mark_published(step.user, step.decision, step.at)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
async def test_shared_case(case: Case, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(case.config)
    for n, step in enumerate(case.steps):
        assert await run(limiter, step) == step.expect, f"step {n}: {step}"


async def test_forget_user_deletes_every_key_of_the_user_and_only_those(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(LimitConfig(max_per_window=1))
    assert (await limiter.check(LimitRequest("d1", "u1", T0, items=("a",)))).allowed
    assert (await limiter.check(LimitRequest("d2", "u2", T0, items=("a",)))).allowed
    assert await limiter.forget_user("u1") == 4  # pushes, items, records, decided
    assert await limiter.forget_user("u1") == 0
    again = await limiter.check(LimitRequest("d1", "u1", T0 + 1, items=("a",)))
    assert again.allowed and not again.replayed
    other = await limiter.check(LimitRequest("d3", "u2", T0 + 1))
    assert other.reason is SuppressReason.MAX_PER_WINDOW


async def test_every_key_expires_once_its_content_is_irrelevant(
    make_limiter: MakeLimiter, local_services: services.LocalServices
) -> None:
    config = LimitConfig(item_cooldown_s=2 * 86400.0, decision_ttl_s=3 * 86400.0)
    limiter = make_limiter(config)
    await limiter.check(LimitRequest("d1", "u1", T0, items=("a",)))
    await limiter.check(LimitRequest("d2", "u1", T0 + 1, items=("b",)))  # refused: gap
    longest_s = {
        "pushes": config.retention_s, "items": config.item_cooldown_s,
        "records": config.decision_ttl_s, "decided": config.decision_ttl_s,
        "global": config.global_burst / config.global_rate_per_s,
    }
    client = Redis.from_url(local_services.redis_url, decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter(match=limiter.keys.prefix + "*")]
        assert {key.rpartition(":")[2] for key in keys} >= {"pushes", "items", "records", "decided"}
        for key in keys:
            ttl_ms = await client.pttl(key)  # -2: expired since the scan, -1: never expires
            assert ttl_ms == -2 or 0 < ttl_ms <= longest_s[key.rpartition(":")[2]] * 1000, key
    finally:
        await client.aclose()


async def test_a_batch_gives_the_verdicts_of_one_by_one_checks(make_limiter: MakeLimiter) -> None:
    config = LimitConfig(max_per_window=2, min_gap_s=0.0)
    limiter, pure = make_limiter(config), Limiter(config)
    earlier = LimitRequest("d0", "u1", T0 - 3600, items=("y",))
    assert await limiter.check(earlier) == pure.check(earlier)
    batch = [
        LimitRequest("d1", "u1", T0, items=("x",)),
        LimitRequest("d2", "u2", T0),
        # Checked alone before d1, d3 would be refused for its item; after d1, the window.
        LimitRequest("d3", "u1", T0, items=("y",)),
        LimitRequest("d1", "u1", T0, items=("x",)),
        LimitRequest("d4", "u2", T0 + 23 * 3600),
    ]
    assert await limiter.check_many(batch) == [pure.check(r) for r in batch]


async def test_concurrent_workers_allow_exactly_max_per_window(
    make_limiter: MakeLimiter, local_services: services.LocalServices
) -> None:
    # A slow refill, so the budget seen afterwards is what the race left.
    config = LimitConfig(max_per_window=3, min_gap_s=0.0, global_rate_per_s=0.01)
    workers = [make_limiter(config) for _ in range(20)]
    attempts = [
        worker.check(LimitRequest(f"w{w}-d{n}", "contested", T0, items=(f"i{w}-{n}",)))
        for w, worker in enumerate(workers)
        for n in range(10)
    ]
    results = await asyncio.gather(*attempts)
    assert sum(r.allowed for r in results) == 3
    assert {r.reason for r in results if not r.allowed} == {SuppressReason.MAX_PER_WINDOW}
    # Tokens taken by the losers of the race were given back.
    assert await tokens_left(local_services.redis_url, workers[0]) == config.global_burst - 3


async def test_racing_replays_of_one_decision_count_it_once(
    make_limiter: MakeLimiter, local_services: services.LocalServices
) -> None:
    config = LimitConfig(global_rate_per_s=0.01)
    workers = [make_limiter(config) for _ in range(20)]
    request = LimitRequest("same-decision", "u1", T0, items=("a",))
    results = await asyncio.gather(*(worker.check(request) for worker in workers for _ in range(5)))
    assert all(r.allowed and r.items == ("a",) for r in results)
    assert sum(not r.replayed for r in results) == 1
    assert await tokens_left(local_services.redis_url, workers[0]) == config.global_burst - 1


async def tokens_left(url: str, limiter: RedisLimiter) -> float:
    client = Redis.from_url(url, decode_responses=True)
    try:
        tokens = await client.hget(limiter.keys.limiter_budget, "tokens")
        assert tokens is not None, "the global budget key has expired"
        return float(tokens)
    finally:
        await client.aclose()


# --- the same verdicts as the in-memory limiter, for random request streams ------------

def compare_with_pure(url: str, config: LimitConfig, requests: list[LimitRequest],
                      batch_sizes: list[int]) -> None:
    """Checks the requests in batches of the given sizes (cycled) on Redis and one by one
    on the in-memory limiter: the verdicts must be equal."""
    async def compare() -> None:
        prefix = f"test-limiter-{uuid.uuid4().hex}:"
        limiter, pure = RedisLimiter(url, config, prefix=prefix), Limiter(config)
        sizes, start = itertools.cycle(batch_sizes), 0
        try:
            while start < len(requests):
                batch = requests[start:start + next(sizes)]
                assert await limiter.check_many(batch) == [pure.check(r) for r in batch]
                start += len(batch)
        finally:
            await limiter.aclose()
            await delete_prefix(url, prefix)

    asyncio.run(compare())


@settings(max_examples=25)
@given(configs, request_streams(transactional=True), st.lists(st.integers(1, 6), min_size=1))
def test_redis_gives_the_verdicts_of_the_in_memory_limiter(
    local_services: services.LocalServices, config: LimitConfig,
    requests: list[LimitRequest], batch_sizes: list[int],
) -> None:
    compare_with_pure(local_services.redis_url, config, requests, batch_sizes)


@settings(max_examples=15)
@given(configs, request_streams(transactional=True))
def test_redis_spends_a_scarce_budget_like_the_in_memory_limiter(
    local_services: services.LocalServices, config: LimitConfig, requests: list[LimitRequest],
) -> None:
    # One by one: within a batch a scarce budget is shared approximately (documented).
    scarce = replace(config, global_rate_per_s=0.0005, global_burst=2)
    compare_with_pure(local_services.redis_url, scarce, requests, [1])


# --- failing closed ----------------------------------------------------------------------

class ThrowawayRedis:
    """A redis-server of our own on a free port, without persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [services.redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=services.real_clock_env(),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case a test paused it
            self.process.terminate()
            self.process.wait(timeout=10)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def error_count(operation: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "nudgestream_redis_errors_total", {"operation": operation}
    )
    return value or 0.0


def redis_up() -> float | None:
    return metrics.REGISTRY.get_sample_value("nudgestream_redis_up")


async def test_nothing_listening_means_no_push() -> None:
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", prefix="nowhere:")
    try:
        requests = [LimitRequest(f"d{n}", f"u{n}", T0) for n in range(3)]
        assert await limiter.check_many(requests) == [UNAVAILABLE] * 3
        assert redis_up() == 0
    finally:
        await limiter.aclose()


async def test_the_limiter_fails_closed_and_recovers_by_itself(
    throwaway_redis: ThrowawayRedis,
) -> None:
    limiter = RedisLimiter(throwaway_redis.url, prefix="fail-closed:")
    try:
        assert (await limiter.check(LimitRequest("d1", "u1", T0))).allowed
        errors_before = error_count("limiter_check")

        throwaway_redis.stop()
        down = await limiter.check(LimitRequest("d2", "u2", T0))
        assert down.verdict is Verdict.SUPPRESSED
        assert down.reason is SuppressReason.LIMITER_UNAVAILABLE
        assert redis_up() == 0 and error_count("limiter_check") > errors_before
        assert not await limiter.mark_published("u1", "d1", T0)
        with pytest.raises(LimiterUnavailableError):
            await limiter.forget_user("u1")

        # A new, empty server: the pooled connections are dead and the script is unknown.
        throwaway_redis.start()
        assert (await limiter.check(LimitRequest("d3", "u3", T0))).allowed
        assert redis_up() == 1
    finally:
        await limiter.aclose()


async def test_a_stalled_redis_times_out_into_no_push_and_is_used_again_after(
    throwaway_redis: ThrowawayRedis,
) -> None:
    limiter = RedisLimiter(throwaway_redis.url, prefix="stalled:", timeout_s=0.3)
    try:
        assert (await limiter.check(LimitRequest("d1", "u1", T0))).allowed
        throwaway_redis.pause()
        stalled = await asyncio.gather(
            *(limiter.check(LimitRequest(f"d{n}", f"u{n}", T0)) for n in range(2, 6))
        )
        assert stalled == [UNAVAILABLE] * 4
        throwaway_redis.resume()
        assert (await limiter.check(LimitRequest("d9", "u9", T0))).allowed
    finally:
        throwaway_redis.resume()
        await limiter.aclose()
