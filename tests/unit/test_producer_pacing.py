"""Pacing of the load producer, driven by a fake clock: no broker, no wall-clock timing."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from load.generator import GeneratedEvent
from load.producer import (
    MAX_CHUNK,
    MAX_IDLE_SLEEP_S,
    MIN_SLEEP_S,
    LogReplay,
    ReplaySchedule,
    TokenBucket,
    paced_chunks,
    partition_for,
    produce,
)
from models.events import EventType, decode_event
from models.logfile import read_events


class FakeClock:
    """A monotonic clock whose sleeps advance it, optionally overshooting like a busy loop."""

    def __init__(self, now: float = 5000.0, overshoot_s: float = 0.0) -> None:
        self.now = now
        self.overshoot_s = overshoot_s
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.overshoot_s


def endless() -> Iterator[GeneratedEvent]:
    for n in itertools.count():
        yield GeneratedEvent("events.view", b"u", str(n).encode())


async def sent_within(
    chunks: AsyncIterator[list[GeneratedEvent]], clock: FakeClock, span: float
) -> int:
    started, total = clock(), 0
    async for chunk in chunks:
        if clock() - started > span:
            break
        total += len(chunk)
    return total


# ---- the token bucket -------------------------------------------------------------------


@given(
    rate=st.floats(min_value=1.0, max_value=100_000.0),
    steps=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=200),
)
def test_grants_add_up_to_rate_times_elapsed_however_irregular_the_polling(
    rate: float, steps: list[float]
) -> None:
    bucket = TokenBucket(rate, now=0.0)
    # Each poll comes before the bucket could overflow (at most burst - 1 tokens later).
    max_step = (bucket.burst - 1) / rate
    now, granted = 0.0, 0
    for fraction in steps:
        now += fraction * max_step
        granted += bucket.take(now, limit=10**9)
    assert math.floor(rate * now) - 1 <= granted <= math.floor(rate * now) + 1


def test_idle_time_banks_at_most_one_burst() -> None:
    bucket = TokenBucket(1000.0, now=0.0)
    assert bucket.take(now=60.0, limit=10**9) == bucket.burst == 100.0
    assert bucket.take(now=60.0, limit=10**9) == 0


def test_a_limited_take_keeps_the_rest_for_later() -> None:
    bucket = TokenBucket(1000.0, now=0.0)
    assert bucket.take(now=0.05, limit=20) == 20
    assert bucket.take(now=0.05, limit=10**9) == 30


@given(
    rate=st.floats(min_value=0.5, max_value=100_000.0),
    want=st.integers(min_value=1, max_value=10_000),
    start=st.floats(min_value=0.0, max_value=0.2),
)
def test_waiting_the_advised_time_yields_the_tokens_wanted(
    rate: float, want: int, start: float
) -> None:
    bucket = TokenBucket(rate, now=0.0)
    bucket.take(now=start, limit=10**9)
    now = start + bucket.wait_s(start, want)
    # want is capped at one burst: more can never be banked.
    expected = min(want, int(bucket.burst))
    assert bucket.take(now=now + 1e-9, limit=10**9) >= expected


@pytest.mark.parametrize("rate", [0.0, -5.0, math.inf, math.nan])
def test_a_bucket_needs_a_positive_finite_rate(rate: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, now=0.0)


# ---- paced chunks -----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1000.0, 20_000.0, 50_000.0])
@pytest.mark.parametrize("overshoot_s", [0.0, 0.004])
async def test_paced_chunks_keep_the_target_rate(rate: float, overshoot_s: float) -> None:
    clock = FakeClock(overshoot_s=overshoot_s)
    chunks = paced_chunks(endless(), rate, clock=clock, sleep=clock.sleep)
    total = await sent_within(chunks, clock, span=10.0)
    # Exact to within one pacing slice, even when every sleep overshoots by 4 ms.
    assert abs(total - rate * 10.0) <= rate * 0.01


async def test_unpaced_chunks_take_the_whole_source_without_sleeping() -> None:
    clock = FakeClock()
    source = itertools.islice(endless(), 2500)
    chunks = [chunk async for chunk in paced_chunks(source, None, clock=clock, sleep=clock.sleep)]
    assert [len(c) for c in chunks] == [MAX_CHUNK, MAX_CHUNK, 500]
    assert clock.sleeps == []


async def test_a_slow_rate_still_wakes_the_sender_to_check_its_limits() -> None:
    clock = FakeClock()
    chunks = paced_chunks(endless(), 0.5, clock=clock, sleep=clock.sleep)
    sizes = [len(await anext(chunks)) for _ in range(30)]
    assert 0 in sizes
    assert max(clock.sleeps) <= MAX_IDLE_SLEEP_S


async def test_limits_are_checked_before_connecting() -> None:
    # Port 1 is closed: a ValueError (not a connection error) proves nothing was dialled.
    with pytest.raises(ValueError, match="duration"):
        await produce([], bootstrap="127.0.0.1:1", duration=0.0)
    with pytest.raises(ValueError, match="count"):
        await produce([], bootstrap="127.0.0.1:1", count=-1)


# ---- time-scaled replay -----------------------------------------------------------------


def test_log_time_runs_speed_times_faster() -> None:
    schedule = ReplaySchedule(speed=60.0)
    assert [schedule.due_s(ts) for ts in (1000.0, 1060.0, 1600.0)] == [0.0, 1.0, 10.0]


def test_a_late_event_is_due_at_once_and_does_not_rewind_the_replay() -> None:
    schedule = ReplaySchedule(speed=10.0)
    assert [schedule.due_s(ts) for ts in (100.0, 200.0, 150.0, 210.0)] == [0.0, 10.0, 10.0, 11.0]


def test_a_long_silence_in_the_log_is_shortened_to_the_maximum_gap() -> None:
    schedule = ReplaySchedule(speed=1.0, max_gap_s=60.0)
    # A dirty first row months before the rest must not stall the replay.
    assert [schedule.due_s(ts) for ts in (1.0e9, 1.0e9 + 7e6, 1.0e9 + 7e6 + 5)] == [0, 60, 65]


@pytest.mark.parametrize("speed", [0.0, -1.0, math.inf])
def test_a_schedule_needs_a_positive_finite_speed(speed: float) -> None:
    with pytest.raises(ValueError):
        ReplaySchedule(speed)


LOG = """ts,user_id,event,item_id,category,price
1700000000,u1,view,i1,phones,10
1700000000.5,u2,view,i2,phones,12
oops,u3,view,i3,,
1700000030,u1,click,i1,phones,10
1700000060,u1,buy,i1,phones,10
1700000090,u2,view,i9,,
"""
LOG_START = 1_700_000_000.0


def log_replay(**options: object) -> LogReplay:
    return LogReplay(read_events(io.StringIO(LOG), source="demo"), **options)  # type: ignore[arg-type]


async def test_a_time_scaled_replay_sends_each_event_when_it_falls_due() -> None:
    clock = FakeClock()
    replay = log_replay()
    started, sent_at = clock(), []
    async for chunk in replay.chunks(ReplaySchedule(speed=30.0), clock=clock, sleep=clock.sleep):
        sent_at += [clock() - started] * len(chunk)
    due = [0.0, 0.5 / 30, 1.0, 2.0, 3.0]
    assert len(sent_at) == len(due)
    # Sent once due, and at most one pacing slice late.
    assert all(d - 1e-9 <= s <= d + MIN_SLEEP_S for s, d in zip(sent_at, due, strict=True))
    assert replay.skipped == 1


async def test_rewritten_timestamps_are_the_wall_clock_at_sending() -> None:
    clock, wall = FakeClock(), FakeClock(now=1_800_000_000.0)
    replay = log_replay(rewrite_ts=True, topic_prefix="t.")
    records = []
    async for chunk in replay.chunks(
        ReplaySchedule(speed=30.0), clock=clock, wall_clock=wall, sleep=clock.sleep
    ):
        records += chunk
    assert [r.topic for r in records] == [
        "t.events.view",
        "t.events.view",
        "t.events.click",
        "t.events.buy",
        "t.events.view",
    ]
    events = [decode_event(r.value, now=wall.now) for r in records]
    assert all(getattr(e, "ts", None) == wall.now for e in events)


def test_an_unscheduled_replay_keeps_log_order_and_time() -> None:
    replay = log_replay()
    events = [decode_event(r.value, now=LOG_START) for r in replay.records()]
    offsets = [getattr(e, "ts", 0.0) - LOG_START for e in events]
    assert offsets == [0.0, 0.5, 30.0, 60.0, 90.0]
    assert [getattr(e, "type", None) for e in events][2:4] == [EventType.CLICK, EventType.BUY]
    assert replay.skipped == 1


# ---- partitioning -----------------------------------------------------------------------


@given(key=st.binary(min_size=1, max_size=40), partitions=st.integers(min_value=1, max_value=64))
def test_keys_land_where_the_standard_partitioner_puts_them(key: bytes, partitions: int) -> None:
    ids = list(range(partitions))
    assert partition_for(key, ids) == DefaultPartitioner()(key, ids, ids)
