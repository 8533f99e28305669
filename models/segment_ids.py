"""Stable segment ids across snapshots: a minimum-cost match of new centres to known ones.

The matching is the Hungarian algorithm (scipy's ``linear_sum_assignment``) on Euclidean
distance; a centre farther than ``max_distance`` from every free known centre gets a new
id, the smallest one not remembered. See :class:`SegmentIds` for an example.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from scipy.optimize import linear_sum_assignment

#: Cost of an impossible match in the assignment problem (finite, as scipy requires).
_FORBIDDEN: Final = 1e9


class SegmentIds:
    """Stable segment ids: new centres inherit the id of the nearest known centre.

    Remembers at most ``capacity`` segments (live ones first, then the most recently
    retired), so ids stay below ``capacity`` plus the largest number of centres ever
    matched, and a segment that comes back after a short absence gets its old id.

    >>> ids = SegmentIds(max_distance=0.5, capacity=4)
    >>> ids.match([[0.0, 0.0], [1.0, 1.0]])
    [0, 1]
    >>> ids.match([[1.1, 1.0], [0.0, 0.1], [5.0, 5.0]])
    [1, 0, 2]
    """

    def __init__(self, max_distance: float, capacity: int) -> None:
        self.max_distance = max_distance
        self.capacity = capacity
        #: id -> centre, least recently live first.
        self.known: dict[int, list[float]] = {}

    def match(self, centres: list[list[float]]) -> list[int]:
        known_ids = list(self.known)
        matched = self._assign(centres, [self.known[i] for i in known_ids])
        ids = [known_ids[j] if j is not None else -1 for j in matched]
        for position, seg_id in enumerate(ids):
            if seg_id < 0:
                ids[position] = self._free_id(ids)
        self.remember(ids, centres)
        return ids

    def _assign(self, centres: list[list[float]], known: list[list[float]]) -> list[int | None]:
        """For each centre, the index of its known match, or None for a new segment."""
        if not known:
            return [None] * len(centres)
        distances = np.linalg.norm(np.array(centres)[:, None, :] - np.array(known)[None], axis=2)
        costs = np.where(distances < self.max_distance, distances, _FORBIDDEN)
        # One private "new segment" column per centre, at the threshold cost, so a centre
        # takes a known id only when that is closer than the threshold.
        new_segment = np.full((len(centres), len(centres)), _FORBIDDEN)
        np.fill_diagonal(new_segment, self.max_distance)
        rows, cols = linear_sum_assignment(np.hstack([costs, new_segment]))
        result: list[int | None] = [None] * len(centres)
        for row, col in zip(rows, cols, strict=True):
            result[row] = int(col) if col < len(known) else None
        return result

    def _free_id(self, taken: list[int]) -> int:
        candidate = 0
        while candidate in self.known or candidate in taken:
            candidate += 1
        return candidate

    def remember(self, ids: list[int], centres: list[list[float]]) -> None:
        for seg_id, centre in zip(ids, centres, strict=True):
            self.known.pop(seg_id, None)
            self.known[seg_id] = list(centre)
        while len(self.known) > max(self.capacity, len(ids)):
            del self.known[next(iter(self.known))]

    def to_list(self) -> list[list[Any]]:
        return [[seg_id, centre] for seg_id, centre in self.known.items()]

    @classmethod
    def from_list(cls, max_distance: float, capacity: int, known: list[list[Any]]) -> SegmentIds:
        ids = cls(max_distance, capacity)
        ids.known = {int(seg_id): list(centre) for seg_id, centre in known}
        return ids
