"""Which decisions the notification worker already sent: ids kept until they expire.

See :mod:`streams.notify` for how far this de-duplication reaches (in memory, per
process; a restart relies on committed offsets).

>>> seen = SeenDecisions(capacity=2)
>>> seen.add("d1", expires_at=100.0)
>>> seen.contains("d1", now=99.0), seen.contains("d1", now=101.0), seen.contains("d2", now=99.0)
(True, False, False)
"""

from __future__ import annotations

import heapq
from typing import Final

#: Sent ids remembered at most; beyond it the ones expiring soonest are forgotten first.
DEFAULT_DEDUPE_CAPACITY: Final = 200_000


class SeenDecisions:
    """Ids of decisions already sent, each remembered until its decision expires.

    A copy arriving later is dropped by the expiry check instead, so forgetting then is
    safe. Both forgetting rules pop the id expiring soonest from one heap.
    """

    def __init__(self, capacity: int = DEFAULT_DEDUPE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def contains(self, decision_id: str, now: float) -> bool:
        self._forget_expired(now)
        return decision_id in self._expiry

    def add(self, decision_id: str, expires_at: float) -> None:
        if decision_id in self._expiry:
            return
        while len(self._expiry) >= self.capacity:
            self._forget_soonest()
        self._expiry[decision_id] = expires_at
        heapq.heappush(self._heap, (expires_at, decision_id))

    def _forget_expired(self, now: float) -> None:
        # Strictly earlier than now, like the expiry check (now > expires_at): at the
        # boundary a copy is still caught here.
        while self._heap and self._heap[0][0] < now:
            self._forget_soonest()

    def _forget_soonest(self) -> None:
        _, decision_id = heapq.heappop(self._heap)
        del self._expiry[decision_id]
