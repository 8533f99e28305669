"""Offline push replay: the streaming decision path driven by a time-ordered log.

:class:`PushReplay` advances the same core the workers run, one event at a time, on a
simulated clock taken from event times:

1. :class:`~models.replay.Replay` — profiles, co-occurrence rows, related lists;
2. :class:`~models.popularity.ServedPopularity` (kept by the replay) — the popular
   lists the workers serve: items ranked by their co-occurrence row's own decayed
   count, overall and per category;
3. segments — a :class:`~models.segments.SegmentTrainer` fed the profile vectors the
   workers would sample (a user's 1st, 2nd, 4th, 8th and then every 16th event), a
   snapshot every ``snapshot_every`` applied events, users assigned with the latest one;
4. the policy — triggers after each event (the step of :mod:`models.step`, as in the
   ingest agent), candidates (:mod:`models.candidates`); delayed triggers (and
   decisions deferred by quiet hours) wait in a queue and are decided when the clock
   passes their due time (before the next event, and at the end of the log); each
   decision reads the state **as it stood at that moment**;
5. the rate limits — the pure :class:`~models.limits.Limiter` on the simulated clock,
   then :func:`models.routing.route`, the verdict routing the workers run (the control
   group among allowed decisions, quiet-hours deferrals decided again later).

Every decision is recorded (:class:`Record`): pushes in the decision schema, the others
(suppressed, holdout, deferred, and triggers that found no candidates) in the audit
schema. A learning policy may steer decisions (:class:`Steering`) before the limits. ``decided_at`` is the simulated
time the decision was made; a decision deferred by quiet hours is recorded as deferred
when it is made and decided again when the quiet hours end, so a push's ``decided_at``
is when it is sent.

>>> from models.events import Event, EventType
>>> from models.limits import LimitConfig
>>> from datetime import time
>>> config = PushReplayConfig(limits=LimitConfig(quiet_start=time(0), quiet_end=time(0)))
>>> views = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c")]
>>> log = [Event(f"e{n}", EventType.VIEW, u, i, 1000.0 + n, "toys") for n, (u, i) in enumerate(views)]
>>> records = []
>>> stats = PushReplay(config, records.append).run(log)
>>> [(r.outcome, r.decision.trigger.value, r.decision.user_id, [i for i, _ in r.decision.items])
...  for r in records]  # doctest: +NORMALIZE_WHITESPACE
[('no_candidates', 'browse_interest', 'u1', []),
 ('no_candidates', 'browse_interest', 'u2', []),
 ('pushed', 'browse_interest', 'u3', ['b']),
 ('pushed', 'browse_abandoned', 'u1', ['c']),
 ('pushed', 'browse_abandoned', 'u2', ['c']),
 ('suppressed', 'browse_abandoned', 'u3', ['b'])]
>>> records[-1].reason, stats.empty  # b was pushed to u3 an hour ago; u1, u2 first had nothing
('item_cooldown', 2)
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Final, Protocol

import orjson

from models.candidates import CandidateData, Needs, decide, needs
from models.decision import Decision, Outcome
from models.events import Event
from models.features import FeatureConfig, profile_vector
from models.limits import LimitConfig, Limiter
from models.logfile import BadRow
from models.policy import PolicyConfig, Trigger, still_valid
from models.profile import Profile
from models.replay import DEFAULT_PROGRESS_EVERY, Replay, ReplayConfig, ReplayStats
from models.routing import Route, route, segment_of, unfilled
from models.segments import SegmenterConfig, SegmentSnapshot, SegmentTrainer
from models.step import Step

PUSHED: Final = "pushed"


@dataclass(frozen=True, slots=True)
class PushReplayConfig:
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    limits: LimitConfig = field(default_factory=LimitConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    #: Applied events between segment snapshots (the workers take one every few seconds).
    snapshot_every: int = 1000

    def __post_init__(self) -> None:
        if self.snapshot_every < 1:
            raise ValueError("snapshot_every must be >= 1")


@dataclass(frozen=True, slots=True)
class Record:
    """One decision and what became of it: ``pushed`` or an audit :class:`Outcome`."""

    decision: Decision
    outcome: str = PUSHED
    reason: str | None = None

    @property
    def pushed(self) -> bool:
        return self.outcome == PUSHED

    def to_dict(self) -> dict[str, Any]:
        """The decision schema for a push, the audit schema otherwise."""
        if self.pushed:
            return self.decision.to_dict()
        return self.decision.to_audit_dict(Outcome(self.outcome), self.reason or self.outcome)


@dataclass(slots=True)
class PushReplayStats:
    triggers: Counter[str] = field(default_factory=Counter)
    #: Triggers no longer valid at their due time (e.g. the user bought meanwhile).
    invalid: int = 0
    #: Valid triggers with nothing worth pushing.
    empty: int = 0
    #: Decisions by outcome (``pushed`` or an audit outcome), and unsent ones by reason.
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    segment_snapshots: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "triggers": dict(sorted(self.triggers.items())),
            "invalid": self.invalid,
            "empty": self.empty,
            "outcomes": dict(sorted(self.outcomes.items())),
            "reasons": dict(sorted(self.reasons.items())),
            "segment_snapshots": self.segment_snapshots,
        }


class Steering(Protocol):
    """What a learning policy (:mod:`models.push_learning`) may change before the rate
    limits: keep a decision, narrow its items, or stop it (the reason it returns is
    audited as ``suppressed``); and move the release of a deferred one."""

    def steer(self, decision: Decision) -> Decision | str: ...

    def release_at(self, decision: Decision, default: float, tz: str | None) -> float: ...


class _Segments:
    """The trainer, its latest snapshot and the assignment of users, as in the workers."""

    def __init__(self, config: PushReplayConfig) -> None:
        self.trainer = SegmentTrainer(config.segmenter, config.features)
        self.every = config.snapshot_every
        self.snapshot: SegmentSnapshot | None = None
        self.applied = 0

    def learn(self, profile: Profile, sample: bool, now: float) -> bool:
        """Learn the profile if it is a ``sample``; True when a new snapshot was taken."""
        if sample:
            vector = profile_vector(profile, now, self.trainer.features)
            self.trainer.learn_one(vector, profile.categories)
        self.applied += 1
        if self.applied % self.every:
            return False
        previous = self.snapshot
        self.snapshot = self.trainer.snapshot(now)
        return self.snapshot is not previous


class PushReplay:
    """The decision path on a simulated clock (see the module doc)."""

    def __init__(
        self,
        config: PushReplayConfig | None = None,
        sink: Callable[[Record], None] | None = None,
        steer: Steering | None = None,
    ) -> None:
        self.config = config or PushReplayConfig()
        self.steer = steer
        self.replay = Replay(self.config.replay, self.config.policy)
        self.segments = _Segments(self.config)
        self.limiter = Limiter(self.config.limits)
        self.stats = PushReplayStats()
        self.sink = sink or _ignore
        #: (due time, sequence, trigger): delayed triggers in due order, ties in arrival order.
        self._pending: list[tuple[float, int, Trigger]] = []
        self._sequence = itertools.count()

    def run(
        self,
        records: Iterable[Event | BadRow],
        progress: Callable[[ReplayStats], None] | None = None,
        progress_every: int = DEFAULT_PROGRESS_EVERY,
    ) -> PushReplayStats:
        """Replay a whole log, then decide every trigger still pending."""
        for event in self.replay.feed(records, progress, progress_every):
            self.process(event)
        self.finish()
        return self.stats

    def process(self, event: Event) -> None:
        self._decide_due(until=event.ts)
        result = self.replay.process(event)
        if result is None or not result.applied:
            return
        self._learn(event, result)
        for trigger in result.due:
            self.stats.triggers[trigger.kind.value] += 1
            self._decide(trigger)
        for trigger in result.later:
            self.stats.triggers[trigger.kind.value] += 1
            self._schedule(trigger)

    def finish(self) -> None:
        """Decide what is still pending, as if the clock ran on after the log."""
        self._decide_due(until=math.inf)

    def _learn(self, event: Event, result: Step) -> None:
        learned = self.segments.learn(result.profile, result.sample, self.replay.clock)
        self.stats.segment_snapshots += learned

    def _schedule(self, trigger: Trigger) -> None:
        heapq.heappush(self._pending, (trigger.due_at, next(self._sequence), trigger))

    def _decide_due(self, until: float) -> None:
        while self._pending and self._pending[0][0] <= until:
            _, _, trigger = heapq.heappop(self._pending)
            self._decide(trigger)

    def _decide(self, trigger: Trigger) -> None:
        # The simulated present: a trigger is never decided before the latest event seen.
        now = max(trigger.due_at, self.replay.clock)
        policy = self.config.policy
        profile = self.replay.profile(trigger.user_id)
        if profile is None or not still_valid(trigger, profile, now, policy):
            self.stats.invalid += 1
            return
        segment, info = segment_of(self.segments.snapshot, profile, now)
        data = self.fetch(needs(trigger, profile, policy, info))
        decision = decide(trigger, profile, data, segment, info, now, policy)
        if decision is None:
            self.stats.empty += 1
            self._route(unfilled(trigger, segment, now, policy))
            return
        if self.steer is not None:
            steered = self.steer.steer(decision)
            if isinstance(steered, str):
                self._emit(Record(decision, Outcome.SUPPRESSED.value, steered))
                return
            decision = steered
        verdict = self.limiter.check(decision.limit_request(profile.tz))
        self._route(route(trigger, decision, verdict, policy, self._release(decision, profile.tz)))

    def fetch(self, need: Needs) -> CandidateData:
        """What the workers fetch from Redis, read from the replay's state."""
        popularity = self.replay.popularity
        return CandidateData(
            related={item: self.replay.related(item) for item in need.related_items},
            popular=popularity.top(need.n_popular),
            popular_by_category={c: popularity.top(need.n_popular, c) for c in need.categories},
        )

    def _release(self, decision: Decision, tz: str | None) -> Callable[[float], float] | None:
        """The steering's release time of ``decision`` if it is deferred."""
        steer = self.steer
        if steer is None:
            return None
        return lambda default: steer.release_at(decision, default, tz)

    def _route(self, routed: Route | None) -> None:
        # None: a push marked published before a crash (nothing is marked offline), or
        # a trigger that expired before it found candidates (nothing was decided).
        if routed is None:
            return
        if routed.retry is not None:
            self._schedule(routed.retry)
        outcome = PUSHED if routed.outcome is None else routed.outcome.value
        self._emit(Record(routed.decision, outcome, routed.reason))

    def _emit(self, record: Record) -> None:
        self.stats.outcomes[record.outcome] += 1
        if record.reason is not None:
            self.stats.reasons[record.reason] += 1
        self.sink(record)


def _ignore(record: Record) -> None:
    """A sink that keeps nothing."""


def replay_pushes(
    records: Iterable[Event | BadRow],
    decisions_out: IO[bytes] | None = None,
    audit_out: IO[bytes] | None = None,
    config: PushReplayConfig | None = None,
    progress: Callable[[ReplayStats], None] | None = None,
) -> dict[str, Any]:
    """Replay a log; write pushes (decision schema) and unsent decisions (audit schema)
    as JSON lines; return the counters (JSON-serialisable)."""

    def write(record: Record) -> None:
        out = decisions_out if record.pushed else audit_out
        if out is not None:
            out.write(orjson.dumps(record.to_dict()) + b"\n")

    push_replay = PushReplay(config, write)
    stats = push_replay.run(records, progress)
    return {"decisions": stats.to_dict(), "replay": push_replay.replay.stats.to_dict()}
