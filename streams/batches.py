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
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import cast

from faust.streams import Stream
from faust.types import AppT, EventT, StreamT

from streams.faust_internals import release_unacked
from streams.refetch import Refetcher

#: Batches of the agents off the event path (rows, delayed triggers, segment samples):
#: their work shows only at the next publication of related items (every 2 s), at a due
#: time, or in the next snapshot, so they wait longer and cost less per message. The
#: ingest agent's bounds are settings (``NUDGESTREAM_BATCH_MAX_EVENTS``, ``_BATCH_WAIT_MS``).
BACKGROUND_BATCH = (500, 0.1)


async def batches(
    stream: StreamT[bytes], refetcher: Refetcher, bounds: tuple[int, float]
) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """The stream's events in batches of at most ``bounds[0]`` events, after at most ``bounds[1]`` s.

    Messages the stream skipped are put back in front (:class:`streams.refetch.Refetcher`).
    Each batch is acknowledged when the loop body asks for the next one, never if the
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
        for event in events:
            await concrete.ack(event)
        for event in fetched:
            refetcher.app.consumer.ack(event.message)  # a no-op once released


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
