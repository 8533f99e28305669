"""Batched agents: how many events an agent takes at once, and table writes from a batch.

Agents take events in batches so that per-message costs — pair messages, changelog
writes, Redis round trips, waits for acknowledgements — are paid once per batch rather
than once per event.

A batch is acknowledged only once the loop body that handled it has returned. Faust's
own ``take_events`` acknowledges a batch in a ``finally`` clause, that is also when the
body raised or was cancelled — a worker stopped mid-batch (a rebalance, a shutdown)
would then commit offsets of events it never finished, and they would be lost (seen:
28 of 4,000 events in a rebalance test). :func:`batches` takes without acknowledging
and acknowledges after the body.

A batch whose processing overlapped a rebalance is *released* instead (:func:`release`):
its state is not written and its offsets are not committed, so its events are delivered
again — from the committed offsets, to whichever worker owns their partitions now — and
processed from state that the rebalance's recovery cannot have overwritten. (Without
this, a rebalance test lost blocks of about seven events per partition.)

An agent with a write-behind cache (:mod:`streams.write_behind`) passes ``hold``: its
batches are acknowledged by the cache's checkpoints, through :class:`HeldAcks`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

from faust.streams import Stream
from faust.types import AppT, EventT, StreamT

from streams import metrics
from streams.faust_internals import release_unacked
from streams.refetch import Refetcher

#: Batches of the agents off the event path (rows, delayed triggers, segment samples):
#: their work shows only at the next publication of related items (every 2 s), at a due
#: time, or in the next snapshot, so they wait longer and cost less per message. The
#: ingest agent's bounds are settings (``NUDGESTREAM_BATCH_MAX_EVENTS``, ``_BATCH_WAIT_MS``).
BACKGROUND_BATCH = (500, 0.1)


@dataclass(frozen=True)
class Taken:
    """One batch as :func:`batches` yielded it, and what acknowledging it means."""

    stream: Stream[bytes]
    refetcher: Refetcher
    #: The batch as the loop body saw it (refetched messages in front).
    filled: Sequence[EventT[bytes]]
    #: The stream's own events, and those the refetcher fetched again.
    events: Sequence[EventT[bytes]]
    fetched: Sequence[EventT[bytes]]

    async def ack(self) -> None:
        for event in self.events:
            await self.stream.ack(event)
        for event in self.fetched:
            self.refetcher.app.consumer.ack(event.message)  # a no-op once released


async def batches(
    stream: StreamT[bytes],
    refetcher: Refetcher,
    bounds: tuple[int, float],
    hold: Callable[[Taken, int], Awaitable[None]] | None = None,
) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """The stream's events in batches of at most ``bounds[0]`` events, after at most ``bounds[1]`` s.

    Messages the stream skipped are put back in front (:class:`streams.refetch.Refetcher`).
    Each batch is acknowledged when the loop body asks for the next one — or, with
    ``hold``, handed to it then, with its size, to be acknowledged later — never if the
    body raises or is cancelled.
    """
    # StreamT does not declare noack_take; the Stream every agent receives has it.
    concrete = cast(Stream[bytes], stream)
    taken = cast(
        AsyncIterator[Sequence[EventT[bytes]]],  # noack_take yields events, not values
        concrete.noack_take(bounds[0], within=bounds[1]),
    )
    async for events in taken:
        filled, fetched = await refetcher.fill(events)
        yield filled
        batch = Taken(concrete, refetcher, filled, events, fetched)
        if hold is None:
            await batch.ack()
        else:
            await hold(batch, len(filled))


def unsettled(app: AppT, events: Sequence[EventT[bytes]], recovered_generation: int) -> bool:
    """Whether the batch overlapped a rebalance or the table recovery that follows it.

    A recovery re-reads the changelogs into the tables (the in-memory store reads all of
    them again): a value written while it runs can be overwritten by an older one, so a
    batch persisted then would be lost. ``recovered_generation`` is the consumer
    generation whose recovery completed last.
    """
    current = app.consumer_generation_id
    return (
        bool(app.rebalancing)
        or bool(app.in_recovery)
        or current != recovered_generation
        or any(e.message.generation_id != current for e in events)
    )


def release(refetcher: Refetcher, events: Sequence[EventT[bytes]]) -> None:
    """Let go of events without marking them processed: they will be delivered again.

    Either Faust delivers them again (it seeks to the committed offsets after a
    rebalance) or, if it has moved on, the refetcher finds the hole they leave.
    Faust has no public call for this; the consumer's bookkeeping is what ``ack`` would
    touch, minus the offset it would record for the next commit.
    """
    # Marked acknowledged, so the batch's own acknowledgement leaves them alone.
    release_unacked(refetcher.app.consumer, (event.message for event in events))
    refetcher.rewind(events)


class HeldAcks:
    """The :class:`streams.write_behind.Acks` of an agent's held batches.

    A checkpoint writes their state only if none of them overlapped a rebalance or a
    recovery (:func:`unsettled`, over every held event), else releases them all.
    """

    def __init__(self, app: AppT, recovered_generation: Callable[[], int], agent: str) -> None:
        self.app = app
        self.recovered_generation = recovered_generation
        self.agent = agent

    def settled(self, held: list[Taken]) -> bool:
        events = [event for taken in held for event in taken.filled]
        return not unsettled(self.app, events, self.recovered_generation())

    async def ack(self, held: list[Taken]) -> None:
        for taken in held:
            await taken.ack()

    def release(self, held: list[Taken]) -> None:
        for taken in held:
            release(taken.refetcher, taken.filled)
        metrics.BATCHES_RELEASED.labels(agent=self.agent).inc(len(held))
