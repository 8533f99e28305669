"""The event-loop lag probe: how much later than asked a sleep ends, from an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from streams import metrics
from streams.loop_lag import loop_lag_once


class HeldLoop:
    """A clock and a sleep whose sleeps end ``held_s`` after they were due."""

    def __init__(self, held_s: float) -> None:
        self.now = 1_000.0
        self.held_s = held_s
        self.asked: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        self.now += seconds + self.held_s


@pytest.mark.parametrize("held_s", [0.0, 0.004, 0.75])
def test_the_lag_is_the_time_past_the_asked_interval(held_s: float) -> None:
    loop = HeldLoop(held_s)
    lag = asyncio.run(loop_lag_once(0.05, clock=loop.clock, sleep=loop.sleep))
    assert loop.asked == [0.05]
    assert lag == pytest.approx(held_s)


def test_a_clock_that_seems_early_gives_no_negative_lag() -> None:
    loop = HeldLoop(-0.01)
    assert asyncio.run(loop_lag_once(0.05, clock=loop.clock, sleep=loop.sleep)) == 0.0


def test_the_histogram_is_exported_with_millisecond_buckets() -> None:
    text = metrics.exposition().decode()
    assert 'nudgestream_event_loop_lag_seconds_bucket{le="0.001"}' in text
    assert 'nudgestream_event_loop_lag_seconds_bucket{le="2.5"}' in text
