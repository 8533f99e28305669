"""The push rate limits on the in-memory limiter: the shared table, then properties."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.limits import (
    LimitConfig,
    Limiter,
    LimitRequest,
    LimitResult,
    Window,
    local_midnight,
    quiet_until,
)
from tests.limits_cases import (
    CASES,
    HOUR,
    T0,
    Case,
    Check,
    MarkPublished,
    configs,
    request_streams,
    utc,
)


def run(limiter: Limiter, step: Check | MarkPublished) -> LimitResult | bool:
    if isinstance(step, Check):
        return limiter.check(step.request())
    return limiter.mark_published(step.user, step.decision, step.at)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_shared_case(case: Case) -> None:
    limiter = Limiter(case.config)
    for n, step in enumerate(case.steps):
        assert run(limiter, step) == step.expect, f"step {n}: {step}"


def test_quiet_hours_may_lie_within_one_day() -> None:
    utc_zone = ZoneInfo("UTC")
    siesta = (time(13), time(15))
    assert quiet_until(T0 + HOUR, utc_zone, *siesta) == T0 + 3 * HOUR
    assert quiet_until(T0 + 3 * HOUR, utc_zone, *siesta) is None
    assert quiet_until(T0, utc_zone, *siesta) is None


def test_quiet_hours_ending_in_a_repeated_hour_end_at_its_second_reading() -> None:
    # Berlin, 27 October 2024: 03:00 CEST became 02:00 CET at 01:00 UTC. At 02:15 CET
    # (01:15 UTC) the 02:30 that ends the quiet hours is 02:30 CET, not 02:30 CEST.
    berlin = ZoneInfo("Europe/Berlin")
    now = utc(2024, 10, 27, 1) + 15 * 60
    assert quiet_until(now, berlin, time(22), time(2, 30)) == utc(2024, 10, 27, 1) + 30 * 60


def test_a_calendar_day_without_midnight_starts_when_the_clocks_jump() -> None:
    # Havana skipped 00:00-01:00 on 10 March 2024 (UTC-5 -> UTC-4, at 05:00 UTC).
    havana = ZoneInfo("America/Havana")
    assert local_midnight(utc(2024, 3, 10, 12), havana) == utc(2024, 3, 10, 5)


def test_request_items_are_deduplicated_in_order() -> None:
    assert LimitRequest("d", "u", T0, items=("b", "a", "b")).items == ("b", "a")


@pytest.mark.parametrize("bad", [
    {"max_per_window": 0}, {"window_s": 0.0}, {"min_gap_s": -1.0}, {"global_burst": 0},
    {"global_rate_per_s": 0.0}, {"decision_ttl_s": 0.0}, {"default_tz": "Not/AZone"},
])
def test_an_unusable_config_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LimitConfig(**bad)  # type: ignore[arg-type]


def test_forget_user_erases_every_trace_of_the_user() -> None:
    limiter = Limiter(LimitConfig(max_per_window=1))
    limiter.check(LimitRequest("d1", "u1", T0, items=("a",)))
    assert limiter.forget_user("u1") and not limiter.forget_user("u1")
    again = limiter.check(LimitRequest("d1", "u1", T0 + HOUR, items=("a",)))
    assert again.allowed and not again.replayed and again.items == ("a",)


# --- properties -----------------------------------------------------------------------

def fresh_pushes(config: LimitConfig, requests: list[LimitRequest]) -> dict[str, list[tuple[float, tuple[str, ...], str | None]]]:
    """user -> (time, items, zone) of every push allowed for the first time."""
    limiter = Limiter(config)
    pushes = defaultdict(list)
    for request in requests:
        result = limiter.check(request)
        if result.allowed and not result.replayed:
            pushes[request.user_id].append((request.now, result.items, request.tz))
    return pushes


def in_quiet_hours(clock: time, config: LimitConfig) -> bool:
    start, end = config.quiet_start, config.quiet_end
    return start <= clock < end if start <= end else clock >= start or clock < end


def local(ts: float, tz: str | None, config: LimitConfig) -> datetime:
    return datetime.fromtimestamp(ts, ZoneInfo(tz or config.default_tz))


@given(configs, request_streams())
def test_allowed_pushes_never_break_a_limit(config: LimitConfig, requests: list[LimitRequest]) -> None:
    for pushes in fresh_pushes(config, requests).values():
        times = [t for t, _, _ in pushes]
        n = config.max_per_window
        if config.window is Window.ROLLING:
            # Of any n + 1 consecutive pushes, the first is out of the last one's window.
            assert all(last - first >= config.window_s for first, last in zip(times, times[n:], strict=False))
        else:
            days = [local(t, tz, config).date() for t, _, tz in pushes]
            assert all(days.count(day) <= n for day in days)
        assert all(later - first >= config.min_gap_s for first, later in itertools.pairwise(times))
        last_pushed: dict[str, float] = {}
        for t, items, tz in pushes:
            for item in items:
                assert t - last_pushed.get(item, -math.inf) >= config.item_cooldown_s
                last_pushed[item] = t
            assert not in_quiet_hours(local(t, tz, config).time(), config)


@given(configs, request_streams(transactional=True),
       st.sampled_from([(1e6, 1_000_000), (0.001, 2)]))
def test_replaying_every_decision_changes_nothing(
    config: LimitConfig, requests: list[LimitRequest], budget: tuple[float, int]
) -> None:
    config = replace(config, global_rate_per_s=budget[0], global_burst=budget[1])
    once, twice = Limiter(config), Limiter(config)
    for request in requests:
        first = once.check(request)
        assert twice.check(request) == first
        assert twice.check(request) == replace(first, replayed=True)


@given(st.lists(st.integers(0, 3), max_size=60), st.sampled_from([(0.5, 1), (2.0, 3)]))
def test_the_global_budget_never_exceeds_its_rate_plus_burst(
    gaps: list[int], budget: tuple[float, int]
) -> None:
    rate, burst = budget
    limiter = Limiter(LimitConfig(global_rate_per_s=rate, global_burst=burst))
    times, now = [], T0
    for n, gap in enumerate(gaps):
        now += gap
        if limiter.check(LimitRequest(f"d{n}", f"user{n}", now)).allowed:
            times.append(now)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - start)
