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
import sys
from array import array
from collections.abc import Iterable, Mapping
from typing import Final

_F64: Final = struct.Struct("<d")
#: A length nibble of :meth:`Writer.sorted_text_doubles` that says a varint follows.
_NIBBLE: Final = 15
#: The low bit of a time's varint: set when an 8-byte double follows instead.
_TIME_IS_DOUBLE: Final = 1
#: Blocks of doubles go through ``array('d')`` (one C loop) and are little-endian.
_SWAP: Final = sys.byteorder != "little"


def _zigzag(n: int) -> int:
    return n << 1 if n >= 0 else (-n << 1) - 1


def _unzigzag(n: int) -> int:
    return n >> 1 if not n & 1 else -((n + 1) >> 1)


def millis(ts: float) -> int | None:
    """``ts`` in whole milliseconds if that is exact (it reads back as the same float)."""
    try:
        ms = round(ts * 1000)
    except (OverflowError, ValueError):  # infinities, NaN
        return None
    # -0.0 would read back as 0.0: equal, but not the same float.
    if ms / 1000 != ts or (not ms and math.copysign(1.0, ts) < 0):
        return None
    return ms


def _doubles_to_bytes(values: Iterable[float]) -> bytes:
    block = array("d", values)
    if _SWAP:
        block.byteswap()
    return block.tobytes()


class _Base:
    """The base time of the last :meth:`time` call and its milliseconds: a record
    writes or reads most of its times against one base, converted once."""

    __slots__ = ("_base", "_base_ms")

    def __init__(self) -> None:
        self._base: float | None = None
        self._base_ms: int | None = None

    def _millis_of_base(self, base: float) -> int | None:
        # Identity, not equality: -0.0 == 0.0 but only 0.0 is a millisecond time.
        if base is not self._base:
            self._base, self._base_ms = base, millis(base)
        return self._base_ms


class Writer(_Base):
    """Appends the fields of one record; :meth:`getvalue` is the encoded record.

    The methods write one-byte varints (most counts, lengths and time deltas' first
    byte) without entering the general loop: a record is a few dozen such fields and
    their per-call cost is most of its encoding time.
    """

    __slots__ = ("_buf",)

    def __init__(self, version: int | None = None) -> None:
        super().__init__()
        self._buf = bytearray() if version is None else bytearray((version,))

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def uint(self, n: int) -> None:
        buf = self._buf
        if 0 <= n < 0x80:
            buf.append(n)
            return
        if n < 0:
            raise ValueError(f"a varint cannot hold {n}")
        while n >= 0x80:
            buf.append((n & 0x7F) | 0x80)
            n >>= 7
        buf.append(n)

    def sint(self, n: int) -> None:
        self.uint(n << 1 if n >= 0 else (-n << 1) - 1)

    def text(self, value: str) -> None:
        raw = value.encode()
        size = len(raw)
        if size < 0x80:
            self._buf.append(size)
        else:
            self.uint(size)
        self._buf += raw

    def optional_text(self, value: str | None) -> None:
        """``None`` is one zero byte; a string has its length plus one."""
        if value is None:
            self._buf.append(0)
        else:
            raw = value.encode()
            self.uint(len(raw) + 1)
            self._buf += raw

    def f64(self, value: float) -> None:
        self._buf += _F64.pack(value)

    def f64s(self, values: Iterable[float]) -> None:
        """Doubles one after the other, as :meth:`f64` writes each."""
        self._buf += _doubles_to_bytes(values)

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
        for raw in [key.encode() for key in keys]:
            size = len(raw)
            shared, limit = 0, min(len(previous), size)
            while shared < limit and previous[shared] == raw[shared]:
                shared += 1
            rest = size - shared
            if shared < _NIBBLE and rest < _NIBBLE:
                buf.append(shared << 4 | rest)
            else:
                buf.append(min(shared, _NIBBLE) << 4 | min(rest, _NIBBLE))
                if shared >= _NIBBLE:
                    self.uint(shared - _NIBBLE)
                if rest >= _NIBBLE:
                    self.uint(rest - _NIBBLE)
            buf += raw[shared:]
            previous = raw
        buf += _doubles_to_bytes([mapping[key] for key in keys])

    def time(self, ts: float, base: float) -> None:
        """``ts`` exactly, in few bytes when it and ``base`` are whole milliseconds."""
        ms, base_ms = millis(ts), self._millis_of_base(base)
        if ms is None or base_ms is None:
            self._buf.append(_TIME_IS_DOUBLE)
            self._buf += _F64.pack(ts)
        else:
            delta = ms - base_ms
            self.uint((delta << 2) if delta >= 0 else ((-delta << 1) - 1) << 1)


class Reader(_Base):
    """Reads back what a :class:`Writer` wrote, field by field, in the same order."""

    __slots__ = ("_pos", "_raw")

    def __init__(self, raw: bytes, offset: int = 0) -> None:
        super().__init__()
        self._raw = raw
        self._pos = offset

    def end(self) -> None:
        """Check that the record has been read to its last byte."""
        if self._pos != len(self._raw):
            raise ValueError(f"{len(self._raw) - self._pos} bytes left after the record")

    def uint(self) -> int:
        raw, pos = self._raw, self._pos
        byte = raw[pos]
        if byte < 0x80:
            self._pos = pos + 1
            return byte
        n, shift = byte & 0x7F, 7
        while True:
            pos += 1
            byte = raw[pos]
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                self._pos = pos + 1
                return n
            shift += 7

    def sint(self) -> int:
        return _unzigzag(self.uint())

    def text(self) -> str:
        raw, pos = self._raw, self._pos
        size = raw[pos]
        if size < 0x80:
            pos += 1
        else:
            size = self.uint()
            pos = self._pos
        end = pos + size
        if end > len(raw):
            raise ValueError("the record ends inside a field")
        self._pos = end
        return raw[pos:end].decode()

    def optional_text(self) -> str | None:
        size = self.uint()
        return None if size == 0 else self._bytes(size - 1).decode()

    def f64(self) -> float:
        (value,) = _F64.unpack_from(self._raw, self._pos)
        self._pos += 8
        return value  # type: ignore[no-any-return]

    def f64s(self, count: int) -> list[float]:
        """``count`` doubles, as :meth:`Writer.f64s` wrote them."""
        block = array("d")
        block.frombytes(self._bytes(8 * count))
        if _SWAP:
            block.byteswap()
        return block.tolist()

    def raw(self, size: int) -> bytes:
        return self._bytes(size)

    def sorted_text_doubles(self) -> dict[str, float]:
        """What :meth:`Writer.sorted_text_doubles` wrote (in key order)."""
        count = self.uint()
        raw, pos = self._raw, self._pos
        keys: list[bytes] = []
        previous = b""
        for _ in range(count):
            head = raw[pos]
            pos += 1
            shared, rest = head >> 4, head & _NIBBLE
            if _NIBBLE in (shared, rest):
                self._pos = pos
                if shared == _NIBBLE:
                    shared += self.uint()
                if rest == _NIBBLE:
                    rest += self.uint()
                pos = self._pos
            # A slice past the end is short, not an error: checked once, below.
            previous = previous[:shared] + raw[pos : pos + rest]
            pos += rest
            keys.append(previous)
        if pos > len(raw):
            raise ValueError("the record ends inside a field")
        self._pos = pos
        # Decoded whole: a shared prefix may end inside a character.
        return dict(zip([key.decode() for key in keys], self.f64s(count), strict=True))

    def time(self, base: float) -> float:
        code = self.uint()
        if code & _TIME_IS_DOUBLE:
            return self.f64()
        base_ms = self._millis_of_base(base)
        if base_ms is None:
            raise ValueError("a millisecond time needs a millisecond base")
        code >>= 1
        return (base_ms + (code >> 1 if not code & 1 else -((code + 1) >> 1))) / 1000

    def _bytes(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._raw):
            raise ValueError("the record ends inside a field")
        data = self._raw[self._pos : end]
        self._pos = end
        return data
