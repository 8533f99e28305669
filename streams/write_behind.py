"""A write-behind cache for a changelogged table: one changelog record per key per checkpoint.

Every ``Table.__setitem__`` is one changelog record, and Faust drains its producer buffer
one message at a time: an agent that rewrites the same rows batch after batch pays for
each rewrite. The cache keeps the latest value of each key in memory and writes each
changed key **once per checkpoint**, however many batches changed it since the last one.

The guarantee of docs/RELIABILITY.md stays: the state that marks an event applied is
written before the event's offset can be committed. So the cache *holds the
acknowledgements* of the batches it has seen; a checkpoint

1. checks that no held event overlapped a rebalance or a recovery (:meth:`Acks.settled`);
   if one did, every held batch is released (delivered again) and the values they
   produced are forgotten — none of them was written;
2. otherwise writes each dirty key once, acting for the latest event that changed it
   (the event names the changelog partition), and only then
3. acknowledges every held batch: Faust flushes the writes before it commits those offsets.

Checkpoints run when enough events are held (:attr:`max_held`) and from a timer, well
under the commit interval. Values are kept decoded, so a read costs no decode. Values
as the table holds them (*clean*: read, or written by a checkpoint) are kept for at most
``max_clean`` keys, the least recently used evicted first; changed values (*dirty*) are
never evicted: they are the only copy until a checkpoint writes them. Clean values are
dropped by :meth:`forget` (on a rebalance: their partitions may have moved, and a
recovery may rewrite them).

Example, with a dict for the table and a list of acknowledged batches:

>>> import asyncio
>>> table: dict[str, int] = {}
>>> class ListAcks:
...     def __init__(self) -> None:
...         self.acked: list[str] = []
...     def settled(self, held: list[str]) -> bool:
...         return True
...     async def ack(self, held: list[str]) -> None:
...         self.acked.extend(held)
...     def release(self, held: list[str]) -> None:
...         raise AssertionError("nothing overlapped a rebalance")
>>> acks = ListAcks()
>>> cache: WriteBehind[str, int, str, str] = WriteBehind(
...     table.get, lambda key, value, event: table.__setitem__(key, value), acks, max_held=100,
...     max_clean=1000,
... )
>>> for batch in ["b1", "b2", "b3"]:
...     cache.put("clicks", (cache.get("clicks") or 0) + 1, event=batch)
...     asyncio.run(cache.hold(batch, events=1))
>>> table, acks.acked  # nothing written, nothing acknowledged yet
({}, [])
>>> asyncio.run(cache.checkpoint())
>>> table, acks.acked  # one write for three updates, then the three batches
({'clicks': 3}, ['b1', 'b2', 'b3'])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
E = TypeVar("E")  # the event a write acts for
H = TypeVar("H")  # what acknowledges one batch


class Acks(Protocol[H]):
    """How held batches are checked, acknowledged or released (Faust's: streams.batches)."""

    def settled(self, held: list[H]) -> bool:
        """Whether no held batch overlapped a rebalance or a table recovery."""

    async def ack(self, held: list[H]) -> None:
        """Acknowledge the batches: their offsets may be committed."""

    def release(self, held: list[H]) -> None:
        """Let go of the batches unacknowledged: they will be delivered again."""


class WriteBehind(Generic[K, V, E, H]):
    """The latest value of each key; changed keys written once per :meth:`checkpoint`.

    ``load`` reads a key's stored value (decoded), ``write`` stores one (encoded, acting
    for the event given). Between two checkpoints, :meth:`put` only changes memory.
    At most ``max_clean`` unchanged values are kept (0: none, every read loads).
    """

    def __init__(
        self,
        load: Callable[[K], V | None],
        write: Callable[[K, V, E], None],
        acks: Acks[H],
        max_held: int,
        max_clean: int,
    ) -> None:
        if max_clean < 0:
            raise ValueError(f"max_clean must be at least 0, not {max_clean}")
        self._load = load
        self._write = write
        self._acks = acks
        #: A checkpoint runs as soon as this many events are held.
        self.max_held = max_held
        self.max_clean = max_clean
        #: Values as the table holds them (read, or written by a checkpoint), least
        #: recently used first.
        self._clean: OrderedDict[K, V] = OrderedDict()
        #: Values changed since the last checkpoint, with the latest event changing each.
        self._dirty: dict[K, tuple[V, E]] = {}
        self._held: list[H] = []
        self._held_events = 0
        #: Records written by checkpoints, and updates they replaced (for the bench).
        self.written = 0
        self.updates = 0

    def get(self, key: K) -> V | None:
        """The key's latest value: changed since the checkpoint, else as stored."""
        if key in self._dirty:
            return self._dirty[key][0]
        if key in self._clean:
            self._clean.move_to_end(key)
            return self._clean[key]
        value = self._load(key)
        if value is not None:
            self._keep(key, value)
        return value

    def _keep(self, key: K, value: V) -> None:
        """Keep a clean value, evicting the least recently used beyond ``max_clean``."""
        self._clean[key] = value
        self._clean.move_to_end(key)
        while len(self._clean) > self.max_clean:
            self._clean.popitem(last=False)

    def put(self, key: K, value: V, event: E) -> None:
        """Set the key's value; written at the next checkpoint, acting for ``event``."""
        self._clean.pop(key, None)
        self._dirty[key] = (value, event)
        self.updates += 1

    async def hold(self, batch: H, events: int) -> None:
        """Hold a batch's acknowledgement until a checkpoint; run one if enough are held.

        Call it once the batch's :meth:`put` calls are made: its values are written
        before it is acknowledged.
        """
        self._held.append(batch)
        self._held_events += events
        if self._held_events >= self.max_held:
            await self.checkpoint()

    @property
    def held(self) -> int:
        """How many events wait for a checkpoint to be acknowledged."""
        return self._held_events

    async def checkpoint(self) -> None:
        """Write each changed key once, then acknowledge the held batches (or release them).

        What is written and acknowledged is taken before the first ``await``: batches
        held while the acknowledgements run belong to the next checkpoint.
        """
        held, dirty = self._held, self._dirty
        if not held and not dirty:
            return
        self._held, self._dirty, self._held_events = [], {}, 0
        if not self._acks.settled(held):
            # Every value in ``dirty`` may derive from an unsettled batch: none is
            # written, and the next read of those keys goes back to the table.
            self._acks.release(held)
            return
        for key, (value, event) in dirty.items():
            self._write(key, value, event)
            self._keep(key, value)
        self.written += len(dirty)
        await self._acks.ack(held)

    def forget(self) -> None:
        """Drop the values read from the table: after a rebalance they may be stale.

        Changed values stay: the next checkpoint finds their batches unsettled (they
        overlapped the rebalance) and releases them.
        """
        self._clean.clear()
