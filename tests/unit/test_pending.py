"""Waiting triggers: a compact record that re-makes each trigger exactly, and a due index."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.pending import DueIndex, decode_pending, encode_pending, entry_id
from models.policy import Trigger, TriggerKind

NOW = 1_700_000_000.0
texts = st.text(min_size=1, max_size=40)
times = st.floats(NOW - 86400, NOW + 86400, allow_nan=False)

triggers = st.builds(
    Trigger,
    kind=st.sampled_from(TriggerKind),
    user_id=st.just("u-1"),
    event_id=texts,
    event_ts=times,
    due_at=times,
    transactional=st.booleans(),
    item_id=texts,
    category=st.text(max_size=40),
    last_bought=st.none() | texts,
)


def abandoned(event_id: str = "e-1", due_at: float = NOW + 3600) -> Trigger:
    return Trigger(TriggerKind.BROWSE_ABANDONED, "u-1", event_id, NOW, due_at, False, "sku-1", "phones", "sku-0")


@given(st.lists(triggers, max_size=5))
def test_a_record_gives_back_the_triggers_it_was_made_of(stored: list[Trigger]) -> None:
    assert decode_pending(encode_pending(stored), "u-1") == stored


@given(st.lists(triggers, max_size=5))
def test_a_version_1_record_still_decodes(stored: list[Trigger]) -> None:
    legacy = orjson.dumps({entry_id(t): t.to_dict() for t in stored})

    assert {entry_id(t): t for t in decode_pending(legacy, "u-1")} == {entry_id(t): t for t in stored}


def test_an_entry_is_a_fraction_of_its_json() -> None:
    trigger = abandoned("5d1c0f6e-8a3b-4b7e-9a51-0c2d2a7f5e11")
    legacy = orjson.dumps({entry_id(trigger): trigger.to_dict()})

    assert len(encode_pending([trigger])) * 3 < len(legacy)


@pytest.mark.parametrize("raw", [b"\x07", b"\x02\x01\x00", encode_pending([abandoned()])[:-1]])
def test_an_unknown_or_cut_record_is_an_error_not_a_guess(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_pending(raw, "u-1")


def test_the_index_gives_what_is_due_by_user_and_keeps_the_rest() -> None:
    index = DueIndex()
    index.add(0, b"u-1", NOW + 10)
    index.add(0, b"u-1", NOW + 5)
    index.add(1, b"u-2", NOW + 5)
    index.add(1, b"u-2", NOW + 99)

    assert index.pop_due(NOW + 10) == {b"u-1": {NOW + 5, NOW + 10}, b"u-2": {NOW + 5}}
    assert index.pop_due(NOW + 10) == {}
    assert index.pop_due(NOW + 99) == {b"u-2": {NOW + 99}}


def test_a_revoked_partition_leaves_the_index() -> None:
    index = DueIndex()
    index.add(0, b"u-1", NOW)
    index.add(3, b"u-2", NOW)

    index.drop([3])

    assert len(index) == 1 and index.pop_due(NOW) == {b"u-1": {NOW}}


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([b"a", b"b", b"c"]), times)), times)
def test_each_due_time_pops_once_and_none_early(added: list[tuple[int, bytes, float]], now: float) -> None:
    index = DueIndex()
    for partition, key, due_at in added:
        index.add(partition, key, due_at)

    popped = index.pop_due(now)

    expected: dict[bytes, set[float]] = {}
    for _, key, due_at in added:
        if due_at <= now:
            expected.setdefault(key, set()).add(due_at)
    assert popped == expected
    assert len(index) == sum(1 for *_, due_at in added if due_at > now)
