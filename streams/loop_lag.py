"""How late the event loop runs what is ready: ``nudgestream_event_loop_lag_seconds``.

Everything of a worker shares one event loop: a callback that computes for 200 ms
(a scan of a table, a model decoded in one go) holds every event for 200 ms, and shows
nowhere else. The probe sleeps :data:`LOOP_LAG_INTERVAL_S` at a time and records how
much later than asked it woke: a few tenths of a millisecond on an idle loop, the length
of the callback that ran in its place otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from streams import metrics

#: Often enough to see a stall of tens of milliseconds; 20 wake-ups a second cost the
#: loop about 1 ms per second.
LOOP_LAG_INTERVAL_S = 0.05

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


async def loop_lag_once(
    interval_s: float, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
) -> float:
    """Sleep ``interval_s`` and return how much longer it took (never negative)."""
    start = clock()
    await sleep(interval_s)
    return max(0.0, clock() - start - interval_s)


async def watch_loop_lag() -> None:
    """A task of the worker: observe the loop's lateness until cancelled.

    No parameters: Faust passes the app to a task that takes any.
    """
    while True:
        metrics.EVENT_LOOP_LAG.observe(await loop_lag_once(LOOP_LAG_INTERVAL_S))
