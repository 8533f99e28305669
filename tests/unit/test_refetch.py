"""Specification of how a worker finds the messages a stream skipped (streams.refetch).

The fetching itself runs against a real broker in the rebalance test; here a stand-in
``_fetch`` records which holes were asked for."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.refetch import Refetcher
from streams.settings import load

VIEW0, VIEW1 = TP("events.view", 0), TP("events.view", 1)


class RecordingRefetcher(Refetcher):
    """A Refetcher whose fetches only record the hole they were asked to fill."""

    def __init__(self, committed: dict[TP, int]) -> None:
        app = SimpleNamespace(consumer=SimpleNamespace(_committed_offset=committed), consumer_generation_id=1)
        super().__init__(app, load({}))  # type: ignore[arg-type]
        self.holes: list[tuple[TP, int, int]] = []

    async def _fetch(self, tp: TP, start: int, end: int) -> list[Any]:
        self.holes.append((tp, start, end))
        return [event(tp, offset) for offset in range(start, end)]


def event(tp: TP, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))


def offsets(events: list[Any]) -> list[tuple[int, int]]:
    return [(e.message.tp.partition, e.message.offset) for e in events]


async def test_a_partition_that_resumes_at_its_committed_offset_needs_nothing() -> None:
    fetcher = RecordingRefetcher({VIEW0: 10})
    batch, fetched = await fetcher.fill([event(VIEW0, 10), event(VIEW0, 11)])
    assert (offsets(batch), fetched, fetcher.holes) == ([(0, 10), (0, 11)], [], [])


async def test_a_partition_that_resumes_past_its_committed_offset_gets_the_hole_first() -> None:
    fetcher = RecordingRefetcher({VIEW0: 10, VIEW1: 3})
    batch, fetched = await fetcher.fill([event(VIEW1, 3), event(VIEW0, 11), event(VIEW0, 12)])
    assert fetcher.holes == [(VIEW0, 10, 11)]
    assert offsets(batch) == [(1, 3), (0, 10), (0, 11), (0, 12)]
    assert offsets(fetched) == [(0, 10)]


async def test_a_hole_inside_a_partition_is_found_too() -> None:
    fetcher = RecordingRefetcher({})
    await fetcher.fill([event(VIEW0, 0), event(VIEW0, 1)])
    batch, _ = await fetcher.fill([event(VIEW0, 5)])
    assert fetcher.holes == [(VIEW0, 2, 5)]
    assert offsets(batch) == [(0, 2), (0, 3), (0, 4), (0, 5)]


async def test_replays_behind_the_expected_offset_are_passed_through() -> None:
    fetcher = RecordingRefetcher({VIEW0: 10})
    await fetcher.fill([event(VIEW0, 10), event(VIEW0, 11)])
    batch, fetched = await fetcher.fill([event(VIEW0, 4)])
    assert (offsets(batch), fetched, fetcher.holes) == ([(0, 4)], [], [])


async def test_released_events_are_expected_again() -> None:
    fetcher = RecordingRefetcher({VIEW0: 10})
    released = [event(VIEW0, 10), event(VIEW0, 11)]
    await fetcher.fill(released)
    fetcher.rewind(released)
    batch, _ = await fetcher.fill([event(VIEW0, 12)])
    assert fetcher.holes == [(VIEW0, 10, 12)]
    assert offsets(batch) == [(0, 10), (0, 11), (0, 12)]


async def test_after_a_rebalance_the_committed_offset_is_expected_again() -> None:
    fetcher = RecordingRefetcher({VIEW0: 10})
    await fetcher.fill([event(VIEW0, 10), event(VIEW0, 11)])
    fetcher.forget([VIEW0])
    fetcher.app.consumer._committed_offset[VIEW0] = 11  # type: ignore[attr-defined]
    _, fetched = await fetcher.fill([event(VIEW0, 11)])
    assert (fetched, fetcher.holes) == ([], [])
