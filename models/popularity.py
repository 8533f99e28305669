"""Time-decayed item popularity (overall, per category, per segment): the cold-start fallback.

Two pieces live here:

* :class:`DecayedCounter` — bounded, exponentially decayed weights per key. The
  co-occurrence rows (:mod:`models.cooccurrence`) use it for their neighbours too.
* :class:`Popularity` — one counter for all items, one per category and one per segment
  id, each bounded, with :meth:`Popularity.top` as the fallback list of items.

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

>>> from models.events import Event, EventType
>>> pop = Popularity(PopularityConfig(half_life_s=3600.0))
>>> for n, (item, cat) in enumerate([("a", "toys"), ("b", "toys"), ("b", "toys"), ("c", "tea")]):
...     pop.learn_one(Event(f"e{n}", EventType.VIEW, "u1", item, 1000.0 + n, cat), segment=7)
>>> [item for item, _ in pop.top(2)]  # "c" is as frequent as "a" but more recent
['b', 'c']
>>> [item for item, _ in pop.top(3, category="tea", exclude={"b"})]
['c', 'a']
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from models.events import Event, EventType
from models.profile import DEFAULT_EVENT_WEIGHTS

#: Move the landmark after this many half-lives: boosts stay below 2**64.
REBASE_HALF_LIVES: Final = 64.0
#: At a rebase, keys whose decayed weight fell below this are forgotten.
FORGET_BELOW: Final = 1e-6
#: A full counter is pruned down to this share of its capacity.
KEEP_SHARE: Final = 0.75
_NOTHING: Final[frozenset[str]] = frozenset()


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


@dataclass(frozen=True, slots=True)
class PopularityConfig:
    half_life_s: float = 3600.0
    #: Items kept overall, per category and per segment.
    max_items: int = 1000
    max_items_per_category: int = 100
    max_items_per_segment: int = 200
    #: Categories and segments tracked (the weakest are dropped with their lists).
    max_categories: int = 500
    max_segments: int = 64
    event_weights: Mapping[EventType, float] = field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS)
    )

    def bound(self, capacity: int) -> Bound:
        return Bound(capacity, self.half_life_s)


class _Groups:
    """Item counters for a bounded set of groups (categories or segments).

    The groups' own decayed weights decide which groups are tracked: when a group is
    pruned from ``weights``, its item counter goes too.
    """

    __slots__ = ("counters", "groups_bound", "items_bound", "weights")

    def __init__(self, groups_bound: Bound, items_bound: Bound) -> None:
        self.groups_bound = groups_bound
        self.items_bound = items_bound
        self.weights = DecayedCounter()
        self.counters: dict[str, DecayedCounter] = {}

    def add_boosted(self, group: str, item: str, boosted: float, landmark: float) -> None:
        for gone in self.weights.add_boosted(group, boosted, self.groups_bound):
            self.counters.pop(gone, None)
        if group not in self.weights.weights:
            return  # the group itself is too weak to be tracked
        counter = self.counters.get(group)
        if counter is None:
            counter = self.counters[group] = DecayedCounter(landmark)
        counter.add_boosted(item, boosted, self.items_bound)

    def all_counters(self) -> list[DecayedCounter]:
        return [self.weights, *self.counters.values()]

    def to_list(self) -> list[Any]:
        return [self.weights.to_list(), {k: c.to_list() for k, c in self.counters.items()}]

    def load(self, data: list[Any]) -> None:
        self.weights = DecayedCounter.from_list(data[0])
        self.counters = {k: DecayedCounter.from_list(v) for k, v in data[1].items()}


class Popularity:
    """Decayed popularity of items overall, per category and per segment id.

    All counters share one landmark, so an event costs one decay factor however many
    counters it feeds. Memory bound: ``max_items + max_categories *
    max_items_per_category + max_segments * max_items_per_segment`` item weights plus
    the category and segment weights (about 63,000 entries with the defaults).
    """

    def __init__(self, config: PopularityConfig | None = None) -> None:
        self.config = config or PopularityConfig()
        cfg = self.config
        self._overall_bound = cfg.bound(cfg.max_items)
        self.landmark = math.nan
        self.overall = DecayedCounter()
        self.categories = _Groups(
            cfg.bound(cfg.max_categories), cfg.bound(cfg.max_items_per_category)
        )
        #: Segment ids are kept as text, like every key on the wire.
        self.segments = _Groups(cfg.bound(cfg.max_segments), cfg.bound(cfg.max_items_per_segment))
        #: The latest event time seen: the default "now" of :meth:`top`.
        self.last_ts = -math.inf

    def learn_one(self, event: Event, segment: int | None = None) -> None:
        """Count one event for its item (and its category and the user's segment)."""
        boosted = self.config.event_weights[event.type] * self._boost(event.ts)
        self.last_ts = max(self.last_ts, event.ts)
        item = event.item_id
        self.overall.add_boosted(item, boosted, self._overall_bound)
        if event.category:
            self.categories.add_boosted(event.category, item, boosted, self.landmark)
        if segment is not None:
            self.segments.add_boosted(str(segment), item, boosted, self.landmark)

    def _boost(self, ts: float) -> float:
        half_life = self.config.half_life_s
        if math.isnan(self.landmark):
            self._set_landmark(ts)
        elif ts - self.landmark > REBASE_HALF_LIVES * half_life:
            for counter in self._counters():
                counter.rebase(ts, half_life)
            self._set_landmark(ts)
        return math.exp2((ts - self.landmark) / half_life)

    def _set_landmark(self, ts: float) -> None:
        self.landmark = ts
        for counter in self._counters():
            counter.landmark = ts

    def _counters(self) -> list[DecayedCounter]:
        return [self.overall, *self.categories.all_counters(), *self.segments.all_counters()]

    def top(
        self,
        n: int,
        category: str | None = None,
        segment: int | None = None,
        exclude: Collection[str] = (),
        *,
        fill: bool = True,
        now: float | None = None,
    ) -> list[tuple[str, float]]:
        """The ``n`` most popular items not in ``exclude``, heaviest first.

        With ``category`` or ``segment`` (not both) the list comes from that group; if it
        has fewer than ``n`` items and ``fill`` is true it is topped up from the overall
        list, so a cold-start caller always gets ``n`` items once enough were seen.
        Weights are decayed to ``now`` (default: the latest event time seen).
        """
        if category is not None and segment is not None:
            raise ValueError("pass a category or a segment, not both")
        at = self.last_ts if now is None else now
        half_life = self.config.half_life_s
        if category is None and segment is None:
            return self.overall.top(n, at, half_life, exclude)
        group = self._group(category, segment)
        picked = group.top(n, at, half_life, exclude) if group is not None else []
        if fill and len(picked) < n:
            taken = {item for item, _ in picked}
            picked.extend(self.overall.top(n - len(picked), at, half_life, taken.union(exclude)))
        return picked

    def _group(self, category: str | None, segment: int | None) -> DecayedCounter | None:
        if category is not None:
            return self.categories.counters.get(category)
        return self.segments.counters.get(str(segment)) if segment is not None else None

    def to_bytes(self) -> bytes:
        last_ts = self.last_ts if math.isfinite(self.last_ts) else None
        return orjson.dumps(
            [1, last_ts, self.overall.to_list(), self.categories.to_list(), self.segments.to_list()]
        )

    @classmethod
    def from_bytes(cls, raw: bytes, config: PopularityConfig | None = None) -> Popularity:
        data: list[Any] = orjson.loads(raw)
        if data[0] != 1:
            raise ValueError(f"unsupported popularity encoding {data[0]!r}")
        pop = cls(config)
        pop.last_ts = -math.inf if data[1] is None else data[1]
        pop.overall = DecayedCounter.from_list(data[2])
        pop.landmark = pop.overall.landmark
        pop.categories.load(data[3])
        pop.segments.load(data[4])
        return pop
