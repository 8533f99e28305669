"""The building blocks of the binary table records read back exactly what was written."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.binary import Reader, Writer, millis

#: A millisecond event time of 2026.
T0 = 1_796_317_852.129


def same_float(a: float, b: float) -> bool:
    """Bit for bit (NaN included)."""
    return struct.pack("<d", a) == struct.pack("<d", b)


@given(st.lists(st.integers(0, 2**70)), st.lists(st.integers(-(2**70), 2**70)))
def test_integers_round_trip(unsigned: list[int], signed: list[int]) -> None:
    w = Writer()
    for n in unsigned:
        w.uint(n)
    for n in signed:
        w.sint(n)
    r = Reader(w.getvalue())
    assert [r.uint() for _ in unsigned] == unsigned
    assert [r.sint() for _ in signed] == signed
    r.end()


def test_small_integers_take_one_byte_and_negative_ones_need_sint() -> None:
    w = Writer()
    w.uint(127)
    w.sint(-64)
    assert len(w.getvalue()) == 2
    with pytest.raises(ValueError, match="varint"):
        w.uint(-1)


@given(st.lists(st.text()), st.lists(st.none() | st.text()))
def test_strings_round_trip(texts: list[str], optional: list[str | None]) -> None:
    w = Writer(7)
    for text in texts:
        w.text(text)
    for maybe in optional:
        w.optional_text(maybe)
    raw = w.getvalue()
    assert raw[0] == 7
    r = Reader(raw, 1)
    assert [r.text() for _ in texts] == texts
    assert [r.optional_text() for _ in optional] == optional
    r.end()


@given(st.dictionaries(st.text(), st.floats()))
def test_sorted_keys_and_doubles_round_trip(mapping: dict[str, float]) -> None:
    w = Writer()
    w.sorted_text_doubles(mapping)
    r = Reader(w.getvalue())
    back = r.sorted_text_doubles()
    r.end()
    assert list(back) == sorted(mapping, key=str.encode)
    assert {k: struct.pack("<d", v) for k, v in back.items()} == {
        k: struct.pack("<d", v) for k, v in mapping.items()
    }


def test_a_key_costs_what_it_does_not_share_with_the_previous_one() -> None:
    ids = {f"item-{n:06d}": 1.0 for n in range(100, 140)}
    w = Writer()
    w.sorted_text_doubles(ids)
    # The first id whole; then "item-0001" is shared and one digit or two are new.
    assert len(w.getvalue()) <= 1 + (1 + 11 + 8) + 39 * (1 + 2 + 8)
    long_ids = {"x" * 40 + "a": 1.0, "x" * 40 + "b" * 20: 2.0}
    w = Writer()
    w.sorted_text_doubles(long_ids)
    assert Reader(w.getvalue()).sorted_text_doubles() == long_ids


@given(st.floats(), st.floats())
def test_any_time_reads_back_as_the_same_float(ts: float, base: float) -> None:
    w = Writer()
    w.time(ts, base)
    w.f64(ts)
    r = Reader(w.getvalue())
    assert same_float(r.time(base), ts)
    assert same_float(r.f64(), ts)
    r.end()


@given(st.integers(-9 * 3_600_000, 9 * 3_600_000))
def test_a_millisecond_time_within_nine_hours_of_its_base_takes_at_most_four_bytes(delta_ms: int) -> None:
    ts = (round(T0 * 1000) + delta_ms) / 1000
    w = Writer()
    w.time(ts, base=T0)
    assert millis(ts) is not None
    assert len(w.getvalue()) <= 4
    assert Reader(w.getvalue()).time(base=T0) == ts


def test_a_time_with_finer_digits_or_a_sign_of_zero_is_kept_whole() -> None:
    w = Writer()
    w.time(T0 + 0.0001, base=T0)
    w.time(T0, base=math.nan)
    w.time(-0.0, base=0.0)
    r = Reader(w.getvalue())
    assert (r.time(base=T0), r.time(base=math.nan)) == (T0 + 0.0001, T0)
    assert same_float(r.time(base=0.0), -0.0)


def test_a_truncated_or_overlong_record_is_an_error() -> None:
    w = Writer()
    w.text("phones")
    raw = w.getvalue()
    with pytest.raises(ValueError, match="ends inside"):
        Reader(raw[:-1]).text()
    r = Reader(raw + b"\x00")
    r.text()
    with pytest.raises(ValueError, match="1 bytes left"):
        r.end()
