"""Batched agents: how many events an agent takes at once, and table writes from a batch.

Agents take events in batches (``stream.take_events``) so that per-message costs — pair
messages, changelog writes, Redis round trips, producer flushes — are paid once per batch
rather than once per event.

A batch is acknowledged only once the loop body that handled it has returned. Faust's
own ``take_events`` acknowledges a batch in a ``finally`` clause, that is also when the
body raised or was cancelled — a worker stopped mid-batch (a rebalance, a shutdown)
would then commit offsets of events it never finished, and they would be lost (seen:
28 of 4,000 events in a rebalance test). :func:`batches` takes without acknowledging
and acknowledges after the body.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import cast

from faust.streams import Stream, _current_event
from faust.types import EventT, StreamT

#: At most this many events per batch ...
BATCH_MAX_EVENTS = 500
#: ... and a batch waits at most this long for more (the latency a quiet stream pays).
BATCH_WITHIN_S = 0.005


async def batches(stream: StreamT[bytes]) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """The stream's events in batches of at most ``BATCH_MAX_EVENTS``, ``BATCH_WITHIN_S`` apart.

    Each batch is acknowledged when the loop body asks for the next one, never if the
    body raises or is cancelled.
    """
    # StreamT does not declare noack_take; the Stream every agent receives has it.
    concrete = cast(Stream[bytes], stream)
    taken = cast(
        AsyncIterator[Sequence[EventT[bytes]]],  # noack_take yields events, not values
        concrete.noack_take(BATCH_MAX_EVENTS, within=BATCH_WITHIN_S),
    )
    async for events in taken:
        yield events
        for event in events:
            await concrete.ack(event)


@contextmanager
def acting_for(event: EventT[bytes]) -> Iterator[None]:
    """Make ``event`` the current event while a table is written.

    A Faust table writes each key to the changelog partition of the *current event*, and
    its RocksDB store picks its database the same way. Inside ``take_events`` there is no
    current event (the stream is consumed in another task), so a write must name the
    event it belongs to: one from the partition that owns the key.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
