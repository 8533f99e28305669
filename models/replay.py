"""Offline replay: drive a time-ordered event log through the streaming core, without Kafka.

:class:`Replay` runs, for every event, the very functions the streaming agents run,
in the same order, with the clock taken from event times:

1. :meth:`Replay.accept` — the clock (the latest event time seen) and lateness rules;
2. :func:`models.step.step` — the step the ingest agent runs: the profile (duplicates
   stop here), the pair increments and the triggers;
3. :meth:`models.cooccurrence.Row.apply` of the increments — what the item-partitioned
   agent does with what the user-partitioned one sends;
4. :meth:`models.popularity.ServedPopularity.learn` of the event's row — the popular
   lists (the cold-start fallback) as the workers serve them.

Later stages (segments, push decisions) add steps to :meth:`Replay.process`. Related
items are scored lazily: a row changed since it was last scored is re-scored when read,
at most once per ``rescore_interval_s`` of event time (the streaming side scores dirty
rows periodically; the interval mimics that staleness).

**Time.** An event older than the clock is *out of order* and is still processed (the
profile, rows and popularity all fold late events in with their decayed weight); one
more than ``max_lateness_s`` older is *stale* and dropped, as a stream processor drops
data past its grace period. Reading a file (:meth:`Replay.screen`) also drops *outlier*
timestamps: an event far (``max_lateness_s``) from the next event while its previous
event is close to that next one, or the very first event when it is far from the
second — in a time-sorted log a single dirty early timestamp sorts to the front (the
Taobao logs have one, dated 2017-09-11 among events of November 2017).

>>> from models.events import Event, EventType
>>> replay = Replay()
>>> log = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c")]
>>> for n, (user, item) in enumerate(log):
...     _ = replay.process(Event(f"e{n}", EventType.VIEW, user, item, 1000.0 + n))
>>> [item for item, _ in replay.related("a")]
['b', 'c']
>>> replay.stats.applied, replay.stats.increments
(6, 9)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Final

from models.cooccurrence import CoocConfig, DecayedValue, Increment, Row, score_row
from models.events import Event
from models.logfile import BadRow
from models.policy import PolicyConfig
from models.popularity import ServedPopularity
from models.profile import Profile, ProfileConfig
from models.step import Step, StepConfig, step

DEFAULT_PROGRESS_EVERY: Final = 10_000
#: The source name of a replayed log's positions (the record number).
LOG_SOURCE: Final = "log"


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    cooc: CoocConfig = field(default_factory=CoocConfig)
    #: Events this much older than the clock are dropped as stale.
    max_lateness_s: float = 86400.0
    #: A changed row is re-scored on read once its scores are this old (event time).
    rescore_interval_s: float = 0.0


@dataclass(slots=True)
class ReplayStats:
    """Counters of a replay; ``records`` = ``bad_rows + outliers + events``."""

    records: int = 0
    bad_rows: int = 0
    outliers: int = 0
    #: Events offered to :meth:`Replay.process`; of those:
    events: int = 0
    stale: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    applied: int = 0
    #: Row increments produced (each is one message on the pairs topic).
    increments: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Replay:
    """The streaming pipeline's state, advanced one event at a time (see the module doc)."""

    def __init__(
        self, config: ReplayConfig | None = None, policy: PolicyConfig | None = None
    ) -> None:
        self.config = config or ReplayConfig()
        #: ``policy`` decides the triggers of each step (only a push replay reads them).
        self.step_config = StepConfig(self.config.profile, self.config.cooc, policy or PolicyConfig())
        self.stats = ReplayStats()
        #: The simulated clock: the latest accepted event time.
        self.clock = -math.inf
        self.profiles: dict[str, Profile] = {}
        self.rows: dict[str, Row] = {}
        self.popularity = ServedPopularity(self.config.cooc.half_life_s)
        #: Decayed sum of all occurrence weights: N of the likelihood ratio.
        self.occurrences = DecayedValue()
        self._dirty: set[str] = set()
        #: item -> (event time it was scored at, related items).
        self._related: dict[str, tuple[float, list[tuple[str, float]]]] = {}

    # -- driving ---------------------------------------------------------------------

    def run(
        self,
        records: Iterable[Event | BadRow],
        progress: Callable[[ReplayStats], None] | None = None,
        progress_every: int = DEFAULT_PROGRESS_EVERY,
    ) -> ReplayStats:
        """Process a whole log; call ``progress(stats)`` every ``progress_every`` records."""
        for event in self.feed(records, progress, progress_every):
            self.process(event)
        return self.stats

    def feed(
        self,
        records: Iterable[Event | BadRow],
        progress: Callable[[ReplayStats], None] | None = None,
        progress_every: int = DEFAULT_PROGRESS_EVERY,
    ) -> Iterator[Event]:
        """:meth:`screen` with progress reports, for callers that process events themselves.

        ``progress(stats)`` is called after the caller has handled an event once
        ``progress_every`` more records were read, and once at the end.
        """
        reported = 0
        for event in self.screen(records):
            yield event
            if progress is not None and self.stats.records - reported >= progress_every:
                reported = self.stats.records
                progress(self.stats)
        if progress is not None and self.stats.records != reported:
            progress(self.stats)

    def screen(self, records: Iterable[Event | BadRow]) -> Iterator[Event]:
        """The events of a log worth processing: bad rows and outlier times are counted.

        Looks one event ahead, so each event is yielded when the next one is read.
        """
        lateness = self.config.max_lateness_s
        previous: float | None = None
        pending: Event | None = None
        for record in records:
            self.stats.records += 1
            if isinstance(record, BadRow):
                self.stats.bad_rows += 1
                continue
            if pending is not None:
                if _is_outlier(pending.ts, previous, record.ts, lateness):
                    self.stats.outliers += 1
                else:
                    previous = pending.ts
                    yield pending
            pending = record
        if pending is not None:
            yield pending

    def process(self, event: Event) -> Step | None:
        """Advance every piece of state by one event; what the step did (None: stale).

        The event's position is its number in the log (:data:`LOG_SOURCE`), so the
        replay check of the step runs here as in the stream (and never fires: a log is
        read once).
        """
        self.stats.events += 1
        if not self.accept(event):
            return None
        result = step(self.profiles.get(event.user_id), event, LOG_SOURCE, self.stats.events, self.clock, self.step_config)
        self.profiles[event.user_id] = result.profile
        if not result.applied:
            self.stats.duplicates += 1
            return result
        self.stats.applied += 1
        self._apply_increments(result.increments)
        row = self.rows.get(event.item_id)
        if row is not None:
            self.popularity.learn(event.item_id, event.category, row.value, row.ts)
        return result

    def accept(self, event: Event) -> bool:
        """Move the clock; count late events and refuse stale ones."""
        if event.ts >= self.clock:
            self.clock = event.ts
            return True
        if self.clock - event.ts > self.config.max_lateness_s:
            self.stats.stale += 1
            return False
        self.stats.out_of_order += 1
        return True

    def _apply_increments(self, increments: Sequence[Increment]) -> None:
        cooc = self.config.cooc
        rows = self.rows
        dirty = self._dirty
        self.stats.increments += len(increments)
        for inc in increments:
            row = rows.get(inc.item_id)
            if row is None:
                row = rows[inc.item_id] = Row()
            row.apply(inc, cooc)
            if inc.occurrences:
                self.occurrences.add(inc.occurrences, inc.ts, cooc.half_life_s)
            dirty.add(inc.item_id)

    # -- reading ---------------------------------------------------------------------

    def profile(self, user_id: str) -> Profile | None:
        return self.profiles.get(user_id)

    def row(self, item_id: str) -> Row | None:
        return self.rows.get(item_id)

    def related(self, item_id: str, k: int | None = None) -> list[tuple[str, float]]:
        """Up to ``k`` (at most ``top_k``) related items of ``item_id`` as of the clock."""
        limit = self.config.cooc.top_k if k is None else k
        cached = self._related.get(item_id)
        stale = cached is None or self.clock - cached[0] >= self.config.rescore_interval_s
        if item_id in self._dirty and stale:
            cached = (self.clock, self._score(item_id))
            self._related[item_id] = cached
            self._dirty.discard(item_id)
        return cached[1][:limit] if cached is not None else []

    def _score(self, item_id: str) -> list[tuple[str, float]]:
        cooc = self.config.cooc
        now, half_life = self.clock, cooc.half_life_s
        row = self.rows[item_id]
        counts = {other: self.rows[other].at(now, half_life) for other in row.neighbours.weights}
        return score_row(row, now, counts, self.occurrences.at(now, half_life), cooc)


def _is_outlier(ts: float, previous: float | None, following: float, gap: float) -> bool:
    """A lone timestamp far from its neighbours, which are close to each other."""
    if abs(following - ts) <= gap:
        return False
    return previous is None or (abs(ts - previous) > gap and abs(following - previous) <= gap)
