"""The write-behind cache: each changed key written once per checkpoint, after its batch's
side effects and before its batch is acknowledged; nothing of a released batch written;
at most ``max_clean`` unchanged values kept, and a changed one never evicted unwritten."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.write_behind import WriteBehind

Event = tuple[int, int]  # (batch, index in the batch)


@dataclass
class FakeAcks:
    """Acknowledges held batches; batches marked by a 'rebalance' are not settled."""

    acked: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    overlapped: set[int] = field(default_factory=set)
    log: list[str] = field(default_factory=list)

    def settled(self, held: list[int]) -> bool:
        return not self.overlapped.intersection(held)

    async def ack(self, held: list[int]) -> None:
        self.log.append("ack")
        self.acked.extend(held)

    def release(self, held: list[int]) -> None:
        self.released.extend(held)


@dataclass
class FakeTable:
    rows: dict[str, int] = field(default_factory=dict)
    writes: list[tuple[str, int, Event]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)

    def load(self, key: str) -> int | None:
        self.loads.append(key)
        return self.rows.get(key)

    def write(self, key: str, value: int, event: Event) -> None:
        self.log.append("write")
        self.rows[key] = value
        self.writes.append((key, value, event))


def make(
    max_held: int = 1000, max_clean: int = 1000
) -> tuple[WriteBehind[str, int, Event, int], FakeTable, FakeAcks]:
    table, acks = FakeTable(), FakeAcks()
    acks.log = table.log
    return WriteBehind(table.load, table.write, acks, max_held, max_clean), table, acks


def run(cache: WriteBehind[str, int, Event, int], batch: int, puts: list[tuple[str, int]]) -> None:
    for index, (key, value) in enumerate(puts):
        cache.put(key, value, (batch, index))
    asyncio.run(cache.hold(batch, len(puts)))


def test_a_key_changed_by_many_batches_is_written_once_per_checkpoint() -> None:
    cache, table, acks = make()
    for batch in range(5):
        run(cache, batch, [("row", batch), ("total", batch * 10)])
    assert table.writes == [] and acks.acked == []
    asyncio.run(cache.checkpoint())
    assert table.writes == [("row", 4, (4, 0)), ("total", 40, (4, 1))]
    assert acks.acked == [0, 1, 2, 3, 4]
    assert table.log == ["write", "write", "ack"]
    assert (cache.written, cache.updates) == (2, 10)


def test_reads_see_unwritten_values_then_the_table_once_a_release_forgot_them() -> None:
    cache, table, acks = make()
    table.rows["row"] = 1
    run(cache, 0, [("row", 2)])
    assert cache.get("row") == 2
    acks.overlapped.add(0)
    asyncio.run(cache.checkpoint())
    assert acks.released == [0] and table.writes == []
    assert cache.get("row") == 1


def test_forget_drops_values_read_from_the_table() -> None:
    cache, table, _ = make()
    table.rows["row"] = 1
    assert cache.get("row") == 1
    table.rows["row"] = 7  # another worker's recovery, say
    assert cache.get("row") == 1
    cache.forget()
    assert cache.get("row") == 7


def test_enough_held_events_start_a_checkpoint() -> None:
    cache, table, acks = make(max_held=3)
    run(cache, 0, [("a", 1), ("b", 1)])
    assert acks.acked == []
    run(cache, 1, [("a", 2)])
    assert acks.acked == [0, 1] and table.rows == {"a": 2, "b": 1}
    assert cache.held == 0


def test_an_empty_checkpoint_does_nothing() -> None:
    cache, table, acks = make()
    asyncio.run(cache.checkpoint())
    assert table.log == [] and acks.acked == [] and acks.released == []


def test_the_least_recently_used_clean_value_is_evicted_first() -> None:
    cache, table, _ = make(max_clean=2)
    table.rows.update(a=1, b=2, c=3)
    for key in ["a", "b", "a", "c"]:  # "b" is the least recently used when "c" comes
        cache.get(key)
    table.loads.clear()
    assert [cache.get(key) for key in ["a", "c", "b"]] == [1, 3, 2]
    assert table.loads == ["b"]


def test_a_changed_value_outlives_any_number_of_reads_until_written() -> None:
    cache, table, acks = make(max_clean=1)
    table.rows.update(a=1, b=2, c=3)
    run(cache, 0, [("a", 10)])
    for key in ["b", "c", "b", "c"]:
        cache.get(key)
    assert cache.get("a") == 10 and "a" not in table.loads
    asyncio.run(cache.checkpoint())
    assert table.rows["a"] == 10 and acks.acked == [0]


def test_with_no_room_every_unchanged_read_loads() -> None:
    cache, table, _ = make(max_clean=0)
    table.rows["a"] = 1
    run(cache, 0, [("b", 5)])
    assert [cache.get("a"), cache.get("a"), cache.get("b")] == [1, 1, 5]
    assert table.loads == ["a", "a"]


def test_a_negative_bound_is_refused() -> None:
    table, acks = FakeTable(), FakeAcks()
    with pytest.raises(ValueError, match=re.escape("max_clean must be at least 0, not -1")):
        WriteBehind(table.load, table.write, acks, max_held=1, max_clean=-1)


puts = st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 9)), max_size=4)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), puts),
        st.tuples(st.just("checkpoint"), st.just([])),
        st.tuples(st.just("rebalance"), st.just([])),
        st.tuples(st.just("read"), st.lists(st.tuples(st.sampled_from("abcdefgh"), st.just(0)))),
    ),
    max_size=30,
)


@given(operations, st.integers(1, 8), st.integers(0, 3), st.dictionaries(st.sampled_from("efgh"), st.integers(0, 9)))
def test_what_is_written_is_the_latest_value_of_each_acknowledged_key(
    ops: list[tuple[str, list[tuple[str, int]]]], max_held: int, max_clean: int, stored: dict[str, int]
) -> None:
    """Whatever the bound and reads evict, the table ends as without a cache (batches
    applied in order, a released one's values dropped), and reads always see the latest."""
    cache, table, acks = make(max_held, max_clean)
    table.rows.update(stored)
    # The reference: batches since the last checkpoint, applied or dropped all at once.
    expected: dict[str, int] = dict(stored)
    writer: dict[str, Event] = {}
    held: list[tuple[int, list[tuple[str, int]]]] = []
    overlapped: set[int] = set()
    acked: list[int] = []
    released: list[int] = []

    def reference_checkpoint() -> None:
        if not held:
            return
        if overlapped.intersection(b for b, _ in held):
            released.extend(b for b, _ in held)
        else:
            for batch, batch_puts in held:
                for index, (key, value) in enumerate(batch_puts):
                    expected[key] = value
                    writer[key] = (batch, index)
            acked.extend(b for b, _ in held)
        held.clear()

    held_events = 0
    for batch, (kind, batch_puts) in enumerate(ops):
        if kind == "batch":
            run(cache, batch, batch_puts)
            held.append((batch, batch_puts))
            held_events += len(batch_puts)
            if held_events >= max_held:
                reference_checkpoint()
                held_events = 0
        elif kind == "checkpoint":
            written_before = len(table.writes)
            asyncio.run(cache.checkpoint())
            new_keys = [key for key, _, _ in table.writes[written_before:]]
            assert len(new_keys) == len(set(new_keys))  # once per key per checkpoint
            reference_checkpoint()
            held_events = 0
        elif kind == "read":
            for key, _ in batch_puts:
                cache.get(key)
        else:
            acks.overlapped.update(b for b, _ in held)
            overlapped.update(b for b, _ in held)
            cache.forget()
        # Only unchanged values may be evicted, and never more than the bound is kept.
        assert len(cache._clean) <= max_clean
        for key in "abcdefgh":  # a read sees the latest value, written or not
            pending = [v for _, p in held for k, v in p if k == key]
            assert cache.get(key) == (pending[-1] if pending else expected.get(key))
    assert table.rows == expected
    assert {key: event for key, _, event in table.writes} == writer
    assert acks.acked == acked and acks.released == released
    # Nothing of a released or still held batch was ever written.
    assert {event[0] for _, _, event in table.writes} <= set(acked)
