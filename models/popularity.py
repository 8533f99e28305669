"""Item popularity: bounded decayed counters, and the one popularity scorer.

Two pieces live here:

* :class:`DecayedCounter` — bounded, exponentially decayed weights per key. The
  co-occurrence rows (:mod:`models.cooccurrence`) use it for their neighbours.
* :func:`popularity_score` and :class:`ServedPopularity` — popularity (the cold-start
  fallback) is an item's co-occurrence row's own decayed occurrence count, ranked by a
  time-invariant score. The workers serve it from Redis (``streams/cooccurrence.py``),
  the replays and the evaluation from :class:`ServedPopularity`: one scorer everywhere.

**Decay** uses *forward decay*: a weight ``w`` added at time ``t`` is stored as
``w * 2 ** ((t - landmark) / half_life)``, so an addition costs O(1) however many
keys the counter holds and late additions land with exactly the weight they have today.
Decay scales every key by the same factor, so it never changes the ranking; the
landmark is moved forward (one O(size) pass) only every :data:`REBASE_HALF_LIVES`
half-lives, which keeps the stored numbers finite.

**Pruning** is the weighted Misra-Gries "frequent items" summary, applied in batches:
when a new key arrives at a full counter (``capacity`` keys), the weight ``theta`` of
the ``(capacity + 1 - keep)``-th weakest key (the newcomer included) is subtracted from
every key and keys that reach zero are dropped, leaving at most ``keep`` keys. Each
prune removes at least ``(keep + 1) * theta`` of mass, so over any history every stored
weight is *below* its true decayed weight by at most ``mass / (keep + 1)``, where
``mass`` is the decayed total ever added, and every key whose true weight exceeds that
bound is guaranteed to be present. A counter never holds more than ``capacity`` keys;
pruning in batches (``keep`` is 3/4 of the capacity) makes it amortised O(1).

>>> pop = ServedPopularity(half_life_s=3600.0)
>>> for item, category, count, ts in [("a", "toys", 2.0, 0.0), ("b", "toys", 1.0, 3600.0), ("c", "tea", 1.5, 0.0)]:
...     pop.learn(item, category, count, ts)
>>> [item for item, _ in pop.top(2)]  # b's 1.0 an hour later equals a's 2.0
['a', 'b']
>>> [item for item, _ in pop.top(3, category="tea")]
['c']
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final

#: Move the landmark after this many half-lives: boosts stay below 2**64.
REBASE_HALF_LIVES: Final = 64.0
#: At a rebase, keys whose decayed weight fell below this are forgotten.
FORGET_BELOW: Final = 1e-6
#: A full counter is pruned down to this share of its capacity.
KEEP_SHARE: Final = 0.75
_NOTHING: Final[frozenset[str]] = frozenset()
#: Items kept in the served popular lists: overall, and per category.
POPULAR_KEPT: Final = 5000
POPULAR_KEPT_PER_CATEGORY: Final = 500


@dataclass(frozen=True, slots=True)
class Bound:
    """How a :class:`DecayedCounter` decays and how many keys it may hold."""

    capacity: int
    half_life_s: float

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("capacity must be >= 1")
        if self.half_life_s <= 0:
            raise ValueError("half_life_s must be > 0")

    @property
    def keep(self) -> int:
        """Most keys left after a prune (the newcomer included)."""
        return math.ceil(self.capacity * KEEP_SHARE)


class DecayedCounter:
    """Decayed weights per key, at most ``bound.capacity`` keys (see the module doc).

    The counter holds data only; the :class:`Bound` is passed to each call so that the
    serialised form stays small and one configuration object governs every counter.
    """

    __slots__ = ("landmark", "mass", "weights")

    def __init__(
        self, landmark: float = math.nan, mass: float = 0.0, weights: dict[str, float] | None = None
    ) -> None:
        #: Time at which a stored weight equals its decayed value; NaN until the first add.
        self.landmark = landmark
        #: Boosted total of everything ever added (pruned mass included).
        self.mass = mass
        #: Boosted weight per key.
        self.weights: dict[str, float] = weights if weights is not None else {}

    def __len__(self) -> int:
        return len(self.weights)

    def boost(self, ts: float, bound: Bound) -> float:
        """The factor that stores a weight added at ``ts`` (rebasing first if needed)."""
        if math.isnan(self.landmark):
            self.landmark = ts
        elif ts - self.landmark > REBASE_HALF_LIVES * bound.half_life_s:
            self.rebase(ts, bound.half_life_s)
        return math.exp2((ts - self.landmark) / bound.half_life_s)

    def add(self, key: str, weight: float, ts: float, bound: Bound) -> AbstractSet[str]:
        """Add ``weight`` to ``key`` at time ``ts``; return the keys pruned to make room."""
        return self.add_boosted(key, weight * self.boost(ts, bound), bound)

    def add_boosted(self, key: str, boosted: float, bound: Bound) -> AbstractSet[str]:
        """Add a weight already multiplied by :meth:`boost`; return the keys pruned."""
        self.mass += boosted
        weights = self.weights
        if key in weights:
            weights[key] += boosted
            return _NOTHING
        if len(weights) < bound.capacity:
            weights[key] = boosted
            return _NOTHING
        return self._prune_for(key, boosted, bound.keep)

    def value(self, key: str, now: float, half_life_s: float) -> float:
        """The decayed weight of ``key`` at ``now`` (0 if absent)."""
        boosted = self.weights.get(key, 0.0)
        return boosted * math.exp2((self.landmark - now) / half_life_s) if boosted else 0.0

    def total(self, now: float, half_life_s: float) -> float:
        """The decayed mass of everything ever added, seen at ``now``."""
        return self.mass * math.exp2((self.landmark - now) / half_life_s) if self.mass else 0.0

    def error_bound(self, now: float, bound: Bound) -> float:
        """Most a stored weight can be below its true decayed weight (Misra-Gries)."""
        return self.total(now, bound.half_life_s) / (bound.keep + 1)

    def top(
        self, n: int, now: float, half_life_s: float, exclude: Collection[str] = ()
    ) -> list[tuple[str, float]]:
        """The ``n`` heaviest keys not in ``exclude`` with their weights at ``now``.

        Ties are broken by key so that every replay ranks identically.
        """
        if n <= 0 or not self.weights:
            return []
        factor = math.exp2((self.landmark - now) / half_life_s)
        # Excluded keys can take at most len(exclude) of the best places.
        best = heapq.nsmallest(n + len(exclude), self.weights.items(), key=_heaviest_first)
        picked = [(key, boosted * factor) for key, boosted in best if key not in exclude]
        return picked[:n]

    def to_list(self) -> list[Any]:
        return [self.landmark, self.mass, self.weights]

    @classmethod
    def from_list(cls, data: list[Any]) -> DecayedCounter:
        landmark, mass, weights = data
        return cls(math.nan if landmark is None else landmark, mass, weights)

    def rebase(self, ts: float, half_life_s: float) -> None:
        """Move the landmark to ``ts``, forgetting keys that decayed to nothing."""
        factor = math.exp2((self.landmark - ts) / half_life_s)
        self.weights = {
            k: w * factor for k, w in self.weights.items() if w * factor >= FORGET_BELOW
        }
        self.mass *= factor
        self.landmark = ts

    def _prune_for(self, newcomer: str, boosted: float, keep: int) -> AbstractSet[str]:
        """Batched weighted Misra-Gries decrement; the newcomer takes part in it."""
        weights = self.weights
        weights[newcomer] = boosted
        theta = sorted(weights.values())[len(weights) - keep - 1]
        self.weights = {k: w - theta for k, w in weights.items() if w > theta}
        return weights.keys() - self.weights.keys()


def _heaviest_first(kv: tuple[str, float]) -> tuple[float, str]:
    return -kv[1], kv[0]


def popularity_score(count: float, ts: float, half_life_s: float) -> float:
    """A time-invariant rank of a decayed count: log2(count) + ts / half-life.

    Decay multiplies every count by the same factor, so ranking by the count seen at
    its own time, shifted by elapsed half-lives, equals ranking by the count now.

    >>> popularity_score(4.0, 3600.0, 3600.0) == popularity_score(2.0, 0.0, 3600.0) + 2.0
    True
    """
    return math.log2(count) + ts / half_life_s


class _TopScores:
    """The ``capacity`` best items of a set whose scores only ever rise (exact).

    Ranked by score, ties by item id, so the kept items are those a full ranking puts first.
    """

    __slots__ = ("capacity", "scores", "worst")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.scores: dict[str, float] = {}
        #: The rank key (-score, item) of the last kept item, once the set is full.
        self.worst: tuple[float, str] | None = None

    def offer(self, item: str, score: float) -> None:
        scores = self.scores
        if item in scores or len(scores) < self.capacity:
            scores[item] = score
        elif self.worst is not None and (-score, item) < self.worst:
            del scores[self.worst[1]]
            scores[item] = score
        else:
            return
        full = len(scores) == self.capacity
        self.worst = max((-s, i) for i, s in scores.items()) if full else None

    def top(self, n: int) -> list[tuple[str, float]]:
        return heapq.nsmallest(n, self.scores.items(), key=_rank)


def _rank(pair: tuple[str, float]) -> tuple[float, str]:
    return -pair[1], pair[0]


class ServedPopularity:
    """The popular lists, overall and per category, kept as the workers keep them.

    An item's score is :func:`popularity_score` of its co-occurrence row's own decayed
    count: the same order as the count now, and it only rises, so the best ``kept``
    (``kept_per_category`` per category) are kept exactly. Per category, an item counts
    in the category its latest event carried. The workers keep the same lists in Redis
    sorted sets (``streams/cooccurrence.py``); the replays keep them here.
    """

    def __init__(
        self,
        half_life_s: float,
        kept: int = POPULAR_KEPT,
        kept_per_category: int = POPULAR_KEPT_PER_CATEGORY,
    ) -> None:
        if kept < 1 or kept_per_category < 1:
            raise ValueError("kept and kept_per_category must be >= 1")
        self.half_life_s = half_life_s
        self.kept_per_category = kept_per_category
        self.overall = _TopScores(kept)
        self.by_category: dict[str, _TopScores] = {}

    def learn(self, item: str, category: str | None, count: float, ts: float) -> None:
        """Record an item's row count (``count`` as of ``ts``) after it changed."""
        if count <= 0:
            return
        score = popularity_score(count, ts, self.half_life_s)
        self.overall.offer(item, score)
        if category:
            top = self.by_category.get(category)
            if top is None:
                top = self.by_category[category] = _TopScores(self.kept_per_category)
            top.offer(item, score)

    def top(self, n: int, category: str | None = None) -> list[tuple[str, float]]:
        ranked = self.overall if category is None else self.by_category.get(category)
        return ranked.top(n) if ranked is not None else []
