"""The write-behind cache: each changed key written once per checkpoint, after its batch's
side effects and before its batch is acknowledged; nothing of a released batch written."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

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

    def write(self, key: str, value: int, event: Event) -> None:
        self.log.append("write")
        self.rows[key] = value
        self.writes.append((key, value, event))


def make(max_held: int = 1000) -> tuple[WriteBehind[str, int, Event, int], FakeTable, FakeAcks]:
    table, acks = FakeTable(), FakeAcks()
    acks.log = table.log
    return WriteBehind(table.rows.get, table.write, acks, max_held), table, acks


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


puts = st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 9)), max_size=4)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), puts),
        st.tuples(st.just("checkpoint"), st.just([])),
        st.tuples(st.just("rebalance"), st.just([])),
    ),
    max_size=30,
)


@given(operations, st.integers(1, 8))
def test_what_is_written_is_the_latest_value_of_each_acknowledged_key(
    ops: list[tuple[str, list[tuple[str, int]]]], max_held: int
) -> None:
    cache, table, acks = make(max_held)
    # The reference: batches since the last checkpoint, applied or dropped all at once.
    expected: dict[str, int] = {}
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
        else:
            acks.overlapped.update(b for b, _ in held)
            overlapped.update(b for b, _ in held)
            cache.forget()
        for key in "abcd":  # a read sees the latest value, written or not
            pending = [v for _, p in held for k, v in p if k == key]
            assert cache.get(key) == (pending[-1] if pending else expected.get(key))
    assert table.rows == expected
    assert {key: event for key, _, event in table.writes} == writer
    assert acks.acked == acked and acks.released == released
    # Nothing of a released or still held batch was ever written.
    assert {event[0] for _, _, event in table.writes} <= set(acked)
