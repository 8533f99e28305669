"""Streaming item co-occurrence: pair increments, decayed bounded rows, scoring, top-K.

The pipeline, as the streaming agents run it (and :mod:`models.replay` offline):

1. **Pairs** (user-partitioned side). After a user's event, :func:`pair_increments`
   pairs the new item with the user's recent items that fall inside a window bounded
   both in time (``window_s``) and in count (the last ``window_items`` items). It
   returns :class:`Increment` records, one per row they change: the new item's row
   gets its own *occurrence* weight plus one neighbour weight per recent item, and each
   recent item's row gets the new item as a neighbour, so pairs are counted in both
   directions and every row is owned by the partition of its item (the Kafka key).
2. **Rows** (item-partitioned side). :meth:`Row.apply` folds an increment into the
   item's :class:`Row`: a decayed occurrence count and at most ``max_neighbours`` (M)
   decayed neighbour weights, pruned with the sound Misra-Gries rule of
   :class:`~models.popularity.DecayedCounter`. A row encodes (:meth:`Row.to_bytes`) in
   at most about ``M * (len(item_id) + 9)`` bytes.
3. **Scores**. :func:`score_row` ranks a row's neighbours by log-likelihood ratio
   (default), cosine or Jaccard, and keeps the top ``top_k`` (K) for Redis. The scores
   need the neighbours' own occurrence counts, which live on other partitions, so they
   are an input mapping; ``total`` (all occurrences, for the likelihood ratio) is one too.

**Weights.** An interaction weighs what the profile gives its event type (view 1,
click 3, buy 5: intent grows along the funnel). A pair weighs the *smaller* of its two
interactions' weights, a fuzzy set intersection: a pair's weight never exceeds either
item's occurrence weight, which keeps the 2x2 contingency tables of the likelihood
ratio consistent. It is then halved (``pair_decay``) for every item that came between
the two, so the next item a user looks at counts most. A user contributes each pair
once per window: re-visiting an item that is still in the window adds nothing, unless
the event type is stronger than before (a view then a buy), in which case only the
difference is added. ``docs/COOCCURRENCE.md`` gives the measurements behind these
choices.

>>> from models.events import Event, EventType
>>> from models.profile import RecentItem
>>> cfg = CoocConfig()
>>> before = [RecentItem("phone", "tech", 100.0, EventType.VIEW)]
>>> incs = pair_increments(before, Event("e2", EventType.BUY, "u1", "case", 160.0), cfg)
>>> [(i.item_id, i.occurrences, i.neighbours) for i in incs]
[('case', 5.0, (('phone', 1.0),)), ('phone', 0.0, (('case', 1.0),))]
>>> rows = {i.item_id: Row() for i in incs}
>>> for inc in incs:
...     rows[inc.item_id].apply(inc, cfg)
>>> score_row(rows["case"], 160.0, {"phone": 1.0}, total=10.0, config=cfg)[0][0]
'phone'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, NamedTuple

import orjson

from models.association import cosine, jaccard, log_likelihood_ratio
from models.binary import Reader, Writer
from models.events import Event, EventType
from models.popularity import Bound, DecayedCounter
from models.profile import DEFAULT_EVENT_WEIGHTS, RecentItem, decay

ENCODING_VERSION: Final = 1
#: Version 3 rows are binary; 2 and 1 were orjson arrays (1 without the source positions
#: a row has applied, see :meth:`Row.applied`).
ROW_ENCODING_VERSION: Final = 3


class Scoring(StrEnum):
    """How a neighbour's co-occurrence is turned into a relatedness score."""

    #: Dunning's G2 on the 2x2 table (items A, B; with and without), positive only.
    LLR = "llr"
    #: c(A,B) / sqrt(n(A) n(B)).
    COSINE = "cosine"
    #: c(A,B) / (n(A) + n(B) - c(A,B)).
    JACCARD = "jaccard"


@dataclass(frozen=True, slots=True)
class CoocConfig:
    #: The pair window: recent items at most this far apart in time ...
    window_s: float = 30 * 60.0
    #: ... and among the user's last this many items (the profile keeps at most
    #: ``ProfileConfig.max_recent`` of them, which caps this).
    window_items: int = 5
    #: A pair's weight is multiplied by this for every item between the two: the next
    #: item a user looks at says more about the current one than the one after.
    pair_decay: float = 0.5
    event_weights: Mapping[EventType, float] = field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS)
    )
    #: Decay of occurrence and pair weights (event time).
    half_life_s: float = 7 * 86400.0
    #: M: neighbours kept per row.
    max_neighbours: int = 50
    #: K: related items written per item.
    top_k: int = 20
    scoring: Scoring = Scoring.LLR
    neighbour_bound: Bound = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.window_items < 1:
            raise ValueError("the pair window needs window_s > 0 and window_items >= 1")
        if not 0 < self.pair_decay <= 1:
            raise ValueError("pair_decay must be in (0, 1]")
        if self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        missing = set(EventType) - set(self.event_weights)
        if missing:
            raise ValueError(f"event_weights lacks {sorted(missing)}")
        # Validates max_neighbours and half_life_s too.
        object.__setattr__(self, "neighbour_bound", Bound(self.max_neighbours, self.half_life_s))


class Increment(NamedTuple):
    """A change to one item's row; sent on the pairs topic keyed by ``item_id``.

    A named tuple rather than a dataclass: one event makes up to ``2 * window_items + 1``
    of them and a tuple is built twice as fast.
    """

    item_id: str
    ts: float
    #: Added to the item's own occurrence count (0 for the reverse direction).
    occurrences: float
    #: ``(neighbour item id, pair weight)``.
    neighbours: tuple[tuple[str, float], ...]

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            [ENCODING_VERSION, self.item_id, self.ts, self.occurrences, self.neighbours]
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Increment:
        version, item_id, ts, occurrences, neighbours = orjson.loads(raw)
        _check_version(version, "increment")
        return cls(item_id, ts, occurrences, tuple((k, w) for k, w in neighbours))


def pair_increments(
    recent_before: Sequence[RecentItem], event: Event, config: CoocConfig
) -> list[Increment]:
    """The row increments one event causes (see the module doc for the weights).

    ``recent_before`` is the user's recent items *before* this event (oldest first, as
    :class:`~models.profile.Profile` keeps them), and this is called only if the
    update was applied (a duplicate event must not count twice): :func:`models.step.step`
    does both. Out-of-order events pair with
    the items within ``window_s`` on either side of them.
    """
    weights = config.event_weights
    weight = weights[event.type]
    item, ts, span = event.item_id, event.ts, config.window_s
    # A re-visit inside the window adds only what the stronger interaction adds on top of
    # the previous one: a first visit is a re-visit with previous weight 0.
    previous = 0.0
    window: list[tuple[str, float]] = []
    for recent in recent_before[-config.window_items :]:
        if -span <= ts - recent.ts <= span:
            if recent.item_id == item:
                previous = weights[recent.type]
            else:
                window.append((recent.item_id, weights[recent.type]))
    if weight <= previous:
        return []
    # Walk from the nearest recent item back: each step away scales the pair by pair_decay.
    pairs: list[tuple[str, float]] = []
    scale = 1.0
    for other, other_weight in reversed(window):
        if other_weight > previous:
            pair_weight = min(weight, other_weight) - min(previous, other_weight)
            pairs.append((other, pair_weight * scale))
        scale *= config.pair_decay
    increments = [Increment(item, ts, weight - previous, tuple(pairs))]
    for other, pair_weight in pairs:
        increments.append(Increment(other, ts, 0.0, ((item, pair_weight),)))
    return increments


class DecayedValue:
    """One decayed number (an item's occurrence count, a partition's total), as of ``ts``."""

    __slots__ = ("ts", "value")

    def __init__(self, value: float = 0.0, ts: float = -math.inf) -> None:
        self.value = value
        self.ts = ts

    def add(self, weight: float, ts: float, half_life_s: float) -> None:
        """Add ``weight`` at ``ts``; a late addition counts with its decayed weight."""
        if ts >= self.ts:
            self.value = self.value * decay(ts - self.ts, half_life_s) + weight
            self.ts = ts
        else:
            self.value += weight * decay(self.ts - ts, half_life_s)

    def at(self, now: float, half_life_s: float) -> float:
        return self.value * decay(now - self.ts, half_life_s) if self.value else 0.0


class Row(DecayedValue):
    """One item's co-occurrence state: its decayed occurrence count and its neighbours.

    The row *is* the item's occurrence count (``value`` as of ``ts``, see
    :class:`DecayedValue`) plus ``neighbours``: at most ``max_neighbours`` decayed pair
    weights (see :class:`~models.popularity.DecayedCounter` for the pruning guarantee).

    ``positions`` maps a source (a partition of the user-side stream) to the last
    position whose increments the row holds. It is stored *in* the row, so a row and the
    mark that makes a re-delivered increment harmless are written together, atomically:

    >>> cfg = CoocConfig()
    >>> row, inc = Row(), Increment("case", 10.0, 1.0, ())
    >>> for _ in range(2):  # the second delivery is a replay
    ...     if not row.applied("v0", 41):
    ...         row.apply(inc, cfg)
    ...         row.mark("v0", 41)
    >>> row.value
    1.0
    """

    __slots__ = ("neighbours", "positions")

    def __init__(
        self,
        value: float = 0.0,
        ts: float = -math.inf,
        neighbours: DecayedCounter | None = None,
        positions: dict[str, int] | None = None,
    ) -> None:
        # No super().__init__(): a replay creates a row for almost every item it meets.
        self.value = value
        self.ts = ts
        self.neighbours = neighbours if neighbours is not None else DecayedCounter()
        self.positions = positions if positions is not None else {}

    def apply(self, increment: Increment, config: CoocConfig) -> None:
        """Fold one increment in (late increments count with their decayed weight)."""
        _, ts, occurrences, neighbours = increment
        if occurrences:
            self.add(occurrences, ts, config.half_life_s)
        if neighbours:
            bound = config.neighbour_bound
            counter = self.neighbours
            boost = counter.boost(ts, bound)
            for other, weight in neighbours:
                counter.add_boosted(other, weight * boost, bound)

    def applied(self, source: str, position: int) -> bool:
        """Whether the increments of ``source`` at ``position`` are already in the row."""
        return position <= self.positions.get(source, -1)

    def mark(self, source: str, position: int) -> None:
        """Record that the row holds the increments of ``source`` up to ``position``."""
        self.positions[source] = position

    def to_bytes(self) -> bytes:
        """Binary form (version 3, see :mod:`models.binary`): at most about
        ``M * (len(item_id) + 9)`` bytes, less as the neighbours' ids share prefixes.

        The neighbours are written in id order (nothing reads a row's order: pruning
        and ranking compare weights, then ids) so that an id costs only what it does
        not share with the one before. Exact: weights are doubles, times exact,
        positions varints. Float32 neighbour
        weights would save 4 bytes each, but the rounding, compounded over the writes
        of a row, changed the related lists of 18 of 1,449 items of the bench's backlog
        (the pruning keeps or drops a neighbour on exact comparisons; docs/BENCHMARKS.md).
        """
        w = Writer(ROW_ENCODING_VERSION)
        w.f64(self.value)
        w.time(self.ts, base=0.0)
        w.uint(len(self.positions))
        for source, position in self.positions.items():
            w.text(source)
            w.sint(position)
        w.time(self.neighbours.landmark, base=self.ts)
        w.f64(self.neighbours.mass)
        w.sorted_text_doubles(self.neighbours.weights)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Row:
        """Any version: 3 (:meth:`to_bytes`), 2 or 1 (orjson arrays, 1 without positions)."""
        if raw[:1] == bytes((ROW_ENCODING_VERSION,)):
            return cls._from_binary(Reader(raw, 1))
        data: list[Any] = orjson.loads(raw)
        ts = -math.inf if data[2] is None else data[2]
        if data[0] == 2:
            return cls(data[1], ts, DecayedCounter.from_list(data[4:]), data[3])
        _check_version(data[0], "row")  # version 1: written before rows had positions
        return cls(data[1], ts, DecayedCounter.from_list(data[3:]))

    @staticmethod
    def is_encoded(raw: bytes) -> bool:
        """Whether ``raw`` starts as a row of some version does (JSON or the version byte)."""
        return raw[:1] in (b"[", bytes((ROW_ENCODING_VERSION,)))

    @classmethod
    def _from_binary(cls, r: Reader) -> Row:
        value = r.f64()
        ts = r.time(base=0.0)
        positions = {r.text(): r.sint() for _ in range(r.uint())}
        landmark = r.time(base=ts)
        mass = r.f64()
        weights = r.sorted_text_doubles()
        r.end()
        return cls(value, ts, DecayedCounter(landmark, mass, weights), positions)


def score_row(
    row: Row,
    now: float,
    counts: Mapping[str, float],
    total: float,
    config: CoocConfig,
) -> list[tuple[str, float]]:
    """The row's top ``config.top_k`` related items with their scores, best first.

    ``counts`` maps neighbour item ids to their occurrence counts decayed to ``now``
    (the streaming side reads them from Redis, the replay from its rows); a neighbour
    missing from it is taken to occur only where it co-occurs. ``total`` is the decayed
    sum of all occurrence weights (only the likelihood ratio uses it). Neighbours that
    score 0 (no positive association) are left out; ties are broken by item id.
    """
    half_life = config.half_life_s
    own = row.at(now, half_life)
    factor = math.exp2((row.neighbours.landmark - now) / half_life)
    score = _SCORERS[config.scoring]
    scored: list[tuple[str, float]] = []
    for other, boosted in row.neighbours.weights.items():
        both = boosted * factor
        value = score(both, max(own, both), max(counts.get(other, 0.0), both), total)
        if value > 0:
            scored.append((other, value))
    scored.sort(key=lambda kv: (-kv[1], kv[0]))
    return scored[: config.top_k]


_SCORERS: Final = {
    Scoring.LLR: log_likelihood_ratio,
    Scoring.COSINE: cosine,
    Scoring.JACCARD: jaccard,
}


def blend_related(
    sources: Iterable[tuple[Sequence[tuple[str, float]], float]],
    n: int,
    exclude: Iterable[str] = (),
) -> list[str]:
    """Candidates for a user from the related lists of their recent items.

    ``sources`` pairs each recent item's related list (as :func:`score_row` returns it)
    with a weight (e.g. higher for more recent items). Scores are scaled by their list's
    best score, so that one very popular item cannot drown the others, weighted and
    summed; the ``n`` best items not in ``exclude`` are returned.
    """
    skip = set(exclude)
    totals: dict[str, float] = {}
    for related, weight in sources:
        if not related:
            continue
        scale = weight / related[0][1]
        for item, score in related:
            if item not in skip:
                totals[item] = totals.get(item, 0.0) + score * scale
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return [item for item, _ in ranked[:n]]


def _check_version(version: object, what: str) -> None:
    if version != ENCODING_VERSION:
        raise ValueError(f"unsupported {what} encoding {version!r}")
