"""The building blocks of the compact binary table records (profiles, co-occurrence rows).

Unsigned integers are LEB128 varints (one byte below 128), signed ones zigzag varints,
strings a varint byte length then UTF-8. Times are exact: an event time with at most
millisecond digits (what producers send) is written as its difference in milliseconds
from a base time of the same record, a varint of two to four bytes, and any other value
(sub-millisecond digits, infinities, NaN) as a tagged 8-byte double, so every time reads
back as the same float and comparisons of times (replay detection, pair windows,
session gaps) cannot change. Weights are 8-byte doubles, exact too.

>>> w = Writer()
>>> w.uint(300); w.text("café"); w.time(1700000000.125, base=0.0); w.time(float("-inf"), base=0.0)
>>> r = Reader(w.getvalue())
>>> r.uint(), r.text(), r.time(base=0.0), r.time(base=0.0)
(300, 'café', 1700000000.125, -inf)
>>> r.end()
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Final

_F64: Final = struct.Struct("<d")
#: A length nibble of :meth:`Writer.sorted_text_doubles` that says a varint follows.
_NIBBLE: Final = 15
#: The low bit of a time's varint: set when an 8-byte double follows instead.
_TIME_IS_DOUBLE: Final = 1


def _zigzag(n: int) -> int:
    return n << 1 if n >= 0 else (-n << 1) - 1


def _unzigzag(n: int) -> int:
    return n >> 1 if not n & 1 else -((n + 1) >> 1)


def millis(ts: float) -> int | None:
    """``ts`` in whole milliseconds if that is exact (it reads back as the same float)."""
    scaled = ts * 1000
    if not math.isfinite(scaled):
        return None
    ms = round(scaled)
    # -0.0 would read back as 0.0: equal, but not the same float.
    if ms / 1000 != ts or (ms == 0 and math.copysign(1.0, ts) < 0):
        return None
    return ms


class Writer:
    """Appends the fields of one record; :meth:`getvalue` is the encoded record."""

    __slots__ = ("_buf",)

    def __init__(self, version: int | None = None) -> None:
        self._buf = bytearray() if version is None else bytearray((version,))

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def uint(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"a varint cannot hold {n}")
        buf = self._buf
        while n >= 0x80:
            buf.append((n & 0x7F) | 0x80)
            n >>= 7
        buf.append(n)

    def sint(self, n: int) -> None:
        self.uint(_zigzag(n))

    def text(self, value: str) -> None:
        raw = value.encode()
        self.uint(len(raw))
        self._buf += raw

    def optional_text(self, value: str | None) -> None:
        """``None`` is one zero byte; a string has its length plus one."""
        if value is None:
            self.uint(0)
        else:
            raw = value.encode()
            self.uint(len(raw) + 1)
            self._buf += raw

    def f64(self, value: float) -> None:
        self._buf += _F64.pack(value)

    def raw(self, data: bytes) -> None:
        self._buf += data

    def sorted_text_doubles(self, mapping: Mapping[str, float]) -> None:
        """A count, the keys in order, each as the length of the prefix it shares with the
        previous key and the rest (both in one byte when below 15), then the values as
        doubles in one block. Similar ids (``i1692``, ``i1697``) cost their tail."""
        keys = sorted(mapping)  # code point order, which is also UTF-8 byte order
        self.uint(len(keys))
        buf = self._buf
        previous = b""
        for key in keys:
            raw = key.encode()
            shared, limit = 0, min(len(previous), len(raw))
            while shared < limit and previous[shared] == raw[shared]:
                shared += 1
            rest = len(raw) - shared
            buf.append(min(shared, _NIBBLE) << 4 | min(rest, _NIBBLE))
            if shared >= _NIBBLE:
                self.uint(shared - _NIBBLE)
            if rest >= _NIBBLE:
                self.uint(rest - _NIBBLE)
            buf += raw[shared:]
            previous = raw
        buf += struct.pack(f"<{len(keys)}d", *[mapping[key] for key in keys])

    def time(self, ts: float, base: float) -> None:
        """``ts`` exactly, in few bytes when it and ``base`` are whole milliseconds."""
        ms, base_ms = millis(ts), millis(base)
        if ms is None or base_ms is None:
            self.uint(_TIME_IS_DOUBLE)
            self.f64(ts)
        else:
            self.uint(_zigzag(ms - base_ms) << 1)


class Reader:
    """Reads back what a :class:`Writer` wrote, field by field, in the same order."""

    __slots__ = ("_pos", "_raw")

    def __init__(self, raw: bytes, offset: int = 0) -> None:
        self._raw = raw
        self._pos = offset

    def end(self) -> None:
        """Check that the record has been read to its last byte."""
        if self._pos != len(self._raw):
            raise ValueError(f"{len(self._raw) - self._pos} bytes left after the record")

    def uint(self) -> int:
        raw, pos = self._raw, self._pos
        n = shift = 0
        while True:
            byte = raw[pos]
            pos += 1
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                self._pos = pos
                return n
            shift += 7

    def sint(self) -> int:
        return _unzigzag(self.uint())

    def text(self) -> str:
        return self._bytes(self.uint()).decode()

    def optional_text(self) -> str | None:
        size = self.uint()
        return None if size == 0 else self._bytes(size - 1).decode()

    def f64(self) -> float:
        (value,) = _F64.unpack_from(self._raw, self._pos)
        self._pos += _F64.size
        return float(value)

    def raw(self, size: int) -> bytes:
        return self._bytes(size)

    def sorted_text_doubles(self) -> dict[str, float]:
        """What :meth:`Writer.sorted_text_doubles` wrote (in key order)."""
        count = self.uint()
        raw = self._raw
        keys: list[bytes] = []
        previous = b""
        for _ in range(count):
            head = raw[self._pos]
            self._pos += 1
            shared, rest = head >> 4, head & _NIBBLE
            if shared == _NIBBLE:
                shared += self.uint()
            if rest == _NIBBLE:
                rest += self.uint()
            previous = previous[:shared] + self._bytes(rest)
            keys.append(previous)
        values = struct.unpack_from(f"<{count}d", raw, self._pos)
        self._pos += 8 * count
        # Decoded whole: a shared prefix may end inside a character.
        return dict(zip([key.decode() for key in keys], values, strict=True))

    def time(self, base: float) -> float:
        code = self.uint()
        if code & _TIME_IS_DOUBLE:
            return self.f64()
        base_ms = millis(base)
        if base_ms is None:
            raise ValueError("a millisecond time needs a millisecond base")
        return (base_ms + _unzigzag(code >> 1)) / 1000

    def _bytes(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._raw):
            raise ValueError("the record ends inside a field")
        data = self._raw[self._pos : end]
        self._pos = end
        return data
