"""The pair increments on the wire: what the ingest agent sends to ``cooc.pairs``.

The ingest agent (partitioned by user) turns each applied event into row increments
(:func:`models.step.step`) and sends them **grouped by the partition of each item**
(the standard murmur2 partitioner), so one event costs one message per partition
touched rather than one per item. Each event's increments keep the name of its source
partition (:func:`source_id`) and its position there, so the row owner
(:class:`streams.cooccurrence.CoocRows`) applies them at most once per row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson
from aiokafka.partitioner import murmur2

from models.cooccurrence import ENCODING_VERSION, Increment
from models.events import EventType

#: Version 2 messages carry each event's source and position (version 1 did not).
PAIRS_ENCODING_VERSION = 2


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the standard (murmur2) partitioner gives ``key``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class PairEntry(NamedTuple):
    """The increments one event sends to one item partition, with where the event was."""

    #: The user-side stream partition of the event (:func:`source_id`); ``None`` for
    #: entries of the version-1 format, which carried no position (never deduplicated).
    source: str | None
    position: int
    #: The category of the event's own item, when its occurrence increment is here.
    category: str | None
    increments: list[Increment]


class PairBatch:
    """The pair increments of one batch of events, one message per item partition.

    Increments go to the partition of their item (the standard murmur2 partitioner), so
    a batch costs one message per partition touched rather than one per event or item.
    Each event's increments keep its source and position: the row owner applies them
    at most once per row (:meth:`models.cooccurrence.Row.applied`), which makes a replay
    of the batch harmless.
    """

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._entries: dict[int, list[bytes]] = {}

    def add(
        self, source: str, position: int, increments: Iterable[Increment], category: str | None
    ) -> None:
        grouped: dict[int, list[bytes]] = {}
        own: int | None = None
        for increment in increments:
            partition = partition_of(increment.item_id.encode(), self.partitions)
            grouped.setdefault(partition, []).append(increment.to_bytes())
            if increment.occurrences:
                own = partition
        for partition, parts in grouped.items():
            head = orjson.dumps([source, position, category if partition == own else None])
            entry = head[:-1] + b",[" + b",".join(parts) + b"]]"
            self._entries.setdefault(partition, []).append(entry)

    def messages(self) -> dict[int, bytes]:
        """Message values by item partition: ``[2, [[source, position, category, [increment, ...]], ...]]``."""
        return {
            p: b"[" + str(PAIRS_ENCODING_VERSION).encode() + b",[" + b",".join(entries) + b"]]"
            for p, entries in self._entries.items()
        }


def decode_pairs(raw: bytes) -> list[PairEntry]:
    """Inverse of :meth:`PairBatch.messages` (one parse for the whole message).

    Also reads the version-1 form ``[category, [increment, ...]]`` that workers wrote
    before rows were deduplicated, so a rolling upgrade loses nothing on the topic.
    """
    data = orjson.loads(raw)
    if data[0] == PAIRS_ENCODING_VERSION:
        return [PairEntry(s, p, c, _increments(incs)) for s, p, c, incs in data[1]]
    if data[0] is None or isinstance(data[0], str):
        return [PairEntry(None, -1, data[0], _increments(data[1]))]
    raise ValueError(f"unsupported pairs encoding {data[0]!r}")


def _increments(encoded: Iterable[Any]) -> list[Increment]:
    out = []
    for version, item_id, ts, occurrences, neighbours in encoded:
        if version != ENCODING_VERSION:
            raise ValueError(f"unsupported increment encoding {version!r}")
        out.append(Increment(item_id, ts, occurrences, tuple((k, w) for k, w in neighbours)))
    return out


#: The source letter of the re-keyed events' topic (unlike any event type's initial).
REKEYED_SOURCE = "r"


def source_id(event_type: EventType, partition: int, *, rekeyed: bool = False) -> str:
    """A short, stable name of an event-topic partition: ``v3`` is ``events.view`` partition 3.

    Stored in every profile and row that a source touched, so it is kept short. The
    re-keyed events (``ingest.rekeyed``, every type in one offset sequence) are ``r3``.
    """
    return f"{REKEYED_SOURCE if rekeyed else event_type.value[0]}{partition}"
