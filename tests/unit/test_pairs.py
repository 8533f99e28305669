"""Specification of the pair messages between the user side and the row owner, and of
the row owner's at-most-once application of them (which makes replays harmless)."""

from __future__ import annotations

import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from models.cooccurrence import CoocConfig, Increment, Row, pair_increments
from models.events import Event, EventType
from models.profile import RecentItem
from streams.cooccurrence import CoocRows, decode_row, total_key
from streams.pairs import PairBatch, decode_pairs, partition_of, source_id

PARTITIONS = 4
CONFIG = CoocConfig()


def increments_of(user_items: list[str], item: str, ts: float) -> list[Increment]:
    before = [RecentItem(i, "c", ts - 10.0 * (len(user_items) - n), EventType.VIEW) for n, i in enumerate(user_items)]
    return pair_increments(before, Event(f"e-{item}-{ts}", EventType.VIEW, "u", item, ts, "c"), CONFIG)


def messages_of(entries: list[tuple[str, int, list[Increment], str | None]]) -> list[tuple[int, bytes]]:
    batch = PairBatch(PARTITIONS)
    for source, position, increments, category in entries:
        batch.add(source, position, increments, category)
    return sorted(batch.messages().items())


def test_a_batch_sends_one_message_per_item_partition_with_every_event_in_it() -> None:
    first = increments_of(["a", "b"], "c", 1000.0)
    second = increments_of(["c"], "d", 1001.0)
    messages = messages_of([("v0", 7, first, "phones"), ("v0", 8, second, None)])
    touched = {partition_of(i.item_id.encode(), PARTITIONS) for i in first + second}
    assert [p for p, _ in messages] == sorted(touched)
    decoded = [(p, e) for p, raw in messages for e in decode_pairs(raw)]
    for partition, entry in decoded:
        assert all(partition_of(i.item_id.encode(), PARTITIONS) == partition for i in entry.increments)
    by_position = sorted((e.position, i) for _, e in decoded for i in e.increments)
    assert by_position == sorted([(7, i) for i in first] + [(8, i) for i in second])


def test_the_category_travels_only_with_the_events_own_item() -> None:
    increments = increments_of(["a", "b", "x"], "c", 1000.0)
    for partition, raw in messages_of([("v1", 3, increments, "phones")]):
        (entry,) = decode_pairs(raw)
        own = any(i.occurrences for i in entry.increments)
        assert entry.category == ("phones" if own else None), partition


def test_version_one_messages_are_still_read_and_never_deduplicated() -> None:
    increment = Increment("a", 10.0, 1.0, (("b", 1.0),))
    raw = b"[" + orjson.dumps("phones") + b",[" + increment.to_bytes() + b"]]"
    assert decode_pairs(raw)[0].source is None
    store: dict[bytes, bytes] = {}
    for _ in range(2):
        writes = CoocRows(CONFIG).apply_batch([(0, raw)], store.get)
        store.update({key: row for key, (_, row) in writes.items()})
    assert Row.from_bytes(store[b"a"]).value == 2.0


def test_a_source_name_is_short_and_names_type_and_partition() -> None:
    assert source_id(EventType.VIEW, 3) == "v3"
    assert source_id(EventType.BUY, 11) == "b11"
    # Re-keyed events of every type share one topic, so one offset sequence: a name of
    # their own, that no event type's partition can take.
    assert source_id(EventType.VIEW, 3, rekeyed=True) == "r3"
    assert all(source_id(t, 3) != "r3" for t in EventType)


def test_partition_totals_written_before_rows_had_positions_are_read() -> None:
    assert decode_row(b"12.5,1000.0").value == 12.5
    assert decode_row(b"12.5,1000.0").positions == {}


def test_re_delivering_a_batch_changes_no_row_and_no_total_and_writes_nothing() -> None:
    entries = [("v0", n, increments_of(["a", "b"], item, 1000.0 + n), "c") for n, item in enumerate("cdef")]
    messages = messages_of(entries)
    store: dict[bytes, bytes] = {}
    rows = CoocRows(CONFIG)
    after: list[dict[bytes, bytes]] = []
    written: list[int] = []
    for _ in range(3):
        writes = rows.apply_batch(messages, store.get)
        written.append(len(writes))
        store.update({key: row for key, (_, row) in writes.items()})
        after.append(dict(store))
    assert after[0] == after[1] == after[2]
    assert written[0] == len(store) and written[1:] == [0, 0]  # a replay rewrites no row
    totals = [decode_row(raw).at(1003.0, CONFIG.half_life_s) for key, raw in store.items() if key.startswith(total_key(0)[:-1])]
    assert math.isclose(sum(totals), 4.0, rel_tol=1e-4)  # one view of each new item, counted once


#: A user's events: (item, seconds after the previous event).
events = st.lists(st.tuples(st.sampled_from("abcdefgh"), st.floats(1.0, 120.0)), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(events=events, data=st.data())
def test_a_crash_that_keeps_any_subset_of_a_batchs_rows_then_replays_counts_everything_once(
    events: list[tuple[str, float]], data: st.DataObject
) -> None:
    # One message list per event (a batch of one), as the user side sends them in order.
    entries, recent, ts = [], [], 1000.0
    for position, (item, gap) in enumerate(events):
        ts += gap
        entries.append(messages_of([("v0", position, increments_of(recent[-5:], item, ts), "c")]))
        recent = [i for i in recent if i != item] + [item]
    clean: dict[bytes, bytes] = {}
    for messages in entries:
        clean.update({k: v for k, (_, v) in CoocRows(CONFIG).apply_batch(messages, clean.get).items()})

    # The crash: after ``crash_at`` batches, only a drawn subset of the last batch's row
    # writes reached the changelog; the replay starts from an earlier committed batch.
    crash_at = data.draw(st.integers(1, len(entries)))
    resume = data.draw(st.integers(0, crash_at - 1))
    store: dict[bytes, bytes] = {}
    for n, messages in enumerate(entries[:crash_at]):
        writes = CoocRows(CONFIG).apply_batch(messages, store.get)
        kept = writes if n < crash_at - 1 else {k: w for k, w in writes.items() if data.draw(st.booleans())}
        store.update({k: v for k, (_, v) in kept.items()})
    for messages in entries[resume:]:
        store.update({k: v for k, (_, v) in CoocRows(CONFIG).apply_batch(messages, store.get).items()})

    assert store.keys() == clean.keys()
    for key, raw in clean.items():
        want, got = decode_row(raw), decode_row(store[key])
        assert math.isclose(got.value, want.value, rel_tol=1e-9), key
        assert got.neighbours.weights.keys() == want.neighbours.weights.keys(), key
        for other, weight in want.neighbours.weights.items():
            assert math.isclose(got.neighbours.weights[other], weight, rel_tol=1e-9), (key, other)
