"""Delayed triggers waiting for their due time: the compact record and the due-time index.

**The record.** A user's waiting triggers are one value of the ``pending`` table (keyed
by the user). Each entry is the trigger's event id and due time, plus what the profile
may no longer hold when it is due and the decision needs to be made again exactly as it
would have been: the kind, the event's time, item and category, and the user's last
purchase then (:func:`models.policy.still_valid` compares it). The profile's recent
items cannot stand in for them: ten later views push the triggering item out of it. The
user id is the table key and is not repeated. Version 2 is binary, about 70 bytes per
entry instead of the 250 of version 1 (a JSON object of whole triggers by entry id),
which :func:`decode_pending` still reads.

**The index.** :class:`DueIndex` keeps the due time of every entry of the worker's
partitions in memory, so the timer that fires due entries pops those due instead of
decoding the whole table every second. It is a heap per partition with lazy deletion:
an entry handled (or erased) stays in the heap until its time and is then found gone
from the table, which stays the one source of truth.

>>> from models.policy import TriggerKind
>>> t = Trigger(TriggerKind.BROWSE_ABANDONED, "u1", "e1", 10.0, 3610.0, False, "i1", "phones")
>>> decode_pending(encode_pending([t]), "u1") == [t], entry_id(t)
(True, 'browse_abandoned:e1:3610.000')
>>> index = DueIndex()
>>> index.add(0, b"u1", 3610.0); index.add(1, b"u2", 20.0)
>>> index.pop_due(100.0), len(index)
({b'u2': {20.0}}, 1)
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable, Sequence
from typing import Final

import orjson

from models.policy import Trigger, TriggerKind

#: First byte of a version-2 record (version 1 is JSON, whose first byte is ``{``).
FORMAT_VERSION: Final = 2
#: Stable codes of the trigger kinds in version-2 records (never renumber one).
_KIND_CODES: Final = {
    TriggerKind.BROWSE_INTEREST: 0,
    TriggerKind.BROWSE_ABANDONED: 1,
    TriggerKind.POST_PURCHASE: 2,
}
_KINDS: Final = {code: kind for kind, code in _KIND_CODES.items()}
#: kind code, flags, event time, due time.
_HEADER: Final = struct.Struct("<BBdd")
_LENGTH: Final = struct.Struct("<H")
_TRANSACTIONAL: Final = 1
_HAS_LAST_BOUGHT: Final = 2


def entry_id(trigger: Trigger) -> str:
    """The id of a waiting trigger (its due message names it): unique per user."""
    return f"{trigger.kind.value}:{trigger.event_id}:{trigger.due_at:.3f}"


def encode_pending(triggers: Iterable[Trigger]) -> bytes:
    """A user's waiting triggers as a version-2 record (an empty iterable: one byte)."""
    parts = [bytes((FORMAT_VERSION,))]
    for trigger in triggers:
        flags = (_TRANSACTIONAL if trigger.transactional else 0) | (
            _HAS_LAST_BOUGHT if trigger.last_bought is not None else 0
        )
        parts.append(_HEADER.pack(_KIND_CODES[trigger.kind], flags, trigger.event_ts, trigger.due_at))
        texts = [trigger.event_id, trigger.item_id, trigger.category]
        if trigger.last_bought is not None:
            texts.append(trigger.last_bought)
        for text in texts:
            raw = text.encode()
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
    return b"".join(parts)


def decode_pending(raw: bytes, user_id: str) -> list[Trigger]:
    """The triggers of a record of either version, in the order they were stored."""
    if raw[:1] == b"{":
        return [Trigger.from_dict(stored) for stored in orjson.loads(raw).values()]
    if raw[:1] != bytes((FORMAT_VERSION,)):
        raise ValueError(f"unsupported pending encoding {raw[:1]!r}")
    try:
        return _decode_entries(memoryview(raw)[1:], user_id)
    except (struct.error, KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt pending record: {exc}") from exc


def _decode_entries(view: memoryview, user_id: str) -> list[Trigger]:
    triggers = []
    at = 0
    while at < len(view):
        code, flags, event_ts, due_at = _HEADER.unpack_from(view, at)
        at += _HEADER.size
        texts = []
        for _ in range(4 if flags & _HAS_LAST_BOUGHT else 3):
            (length,) = _LENGTH.unpack_from(view, at)
            at += _LENGTH.size
            if at + length > len(view):
                raise struct.error("text runs past the end")
            texts.append(bytes(view[at : at + length]).decode())
            at += length
        triggers.append(
            Trigger(
                kind=_KINDS[code], user_id=user_id, event_id=texts[0], event_ts=event_ts,
                due_at=due_at, transactional=bool(flags & _TRANSACTIONAL), item_id=texts[1],
                category=texts[2], last_bought=texts[3] if len(texts) > 3 else None,
            )
        )
    return triggers


class DueIndex:
    """Due times of the waiting triggers, by partition: (due time, user key) heaps.

    Adding the same (key, due time) twice, or keeping one whose entry is gone, is safe:
    what pops is checked against the table (a due message for an entry already handled
    is ignored there).
    """

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[float, bytes]]] = {}

    def __len__(self) -> int:
        return sum(len(heap) for heap in self._heaps.values())

    def add(self, partition: int, key: bytes, due_at: float) -> None:
        heapq.heappush(self._heaps.setdefault(partition, []), (due_at, key))

    def pop_due(self, now: float) -> dict[bytes, set[float]]:
        """Remove and return the due times up to ``now``, by user key."""
        due: dict[bytes, set[float]] = {}
        for heap in self._heaps.values():
            while heap and heap[0][0] <= now:
                due_at, key = heapq.heappop(heap)
                due.setdefault(key, set()).add(due_at)
        return due

    def drop(self, partitions: Sequence[int]) -> None:
        """Forget the entries of partitions this worker no longer owns."""
        for partition in partitions:
            self._heaps.pop(partition, None)

    def clear(self) -> None:
        self._heaps.clear()
