"""The learning policy on a replayed log, and the lift of pushes against the control group.

:class:`Learner` closes the loop in a :class:`~models.push_replay.PushReplay`: pushes
and holdout records open attribution exposures (:mod:`models.attribution`); the log's
own events are the outcomes: a push **converts** when its user touches (views, clicks
or buys) a pushed item within ``horizon_s`` after it was sent, as the push-precision
scorer counts a hit. From those outcomes it learns

* fatigue (:mod:`models.fatigue`) — a user's ignore streak pauses their pushes;
* send time (:mod:`models.sendtime`) — a deferred push waits for the user's preferred
  hour, learnt from the times their pushes converted;
* a bandit over trigger kinds (:mod:`models.bandit`) — kinds that keep missing are
  pushed less — and one over candidate sources (:class:`~models.candidates.Source`: related
  items, category or segment popularity, overall popularity), rewarded per pushed item —
  items from sources that keep missing are left out of the push (``source_arms``, off
  by default);

and uses them as :class:`~models.push_replay.Steering`: a decision it stops (fatigue,
its kind's draw, or no item's source drawn) is audited as ``suppressed`` with the
reason ``fatigue`` or ``bandit``. **No peeking**: the learner
sees an event only after the replay has made every decision due by then, a conversion
counts from the moment it happened, and a miss only once the push's whole window lies
before the latest event seen (at the end of the log, windows still open are never
counted as misses). **The control group is never touched**: a holdout user's decision
is neither gated nor learnt from, so the holdout keeps measuring the static policy.

:func:`holdout_lift` measures a replay's pushes against its holdout records the same way
(conversion = a pushed item touched within the horizon), per trigger kind and overall.
Offline, no push was ever delivered, so treated and control users touch "their" items
only as the log says they did: the true lift is 1 there, and an interval that covers
1 checks the measurement, not the effect.

>>> from models.events import Event, EventType
>>> from models.limits import LimitConfig
>>> from datetime import time
>>> config = PushReplayConfig(limits=LimitConfig(quiet_start=time(0), quiet_end=time(0)))
>>> views = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c")]
>>> log = [Event(f"e{n}", EventType.VIEW, u, i, 1000.0 + n, "toys") for n, (u, i) in enumerate(views)]
>>> records = []
>>> learner = learning_replay(log, config, LearningConfig(horizon_s=600.0), records.append)
>>> [(r.outcome, r.reason, r.decision.user_id) for r in records]  # doctest: +NORMALIZE_WHITESPACE
[('no_candidates', 'no_candidates', 'u1'), ('no_candidates', 'no_candidates', 'u2'),
 ('pushed', None, 'u3'), ('pushed', None, 'u1'), ('pushed', None, 'u2'),
 ('suppressed', 'bandit', 'u3')]
>>> learner.stats()["skipped"]  # nothing learnt yet: untried arms are drawn from the prior
{'bandit': 1}
>>> off = LearningConfig(horizon_s=600.0, bandit=BanditConfig(enabled=False))
>>> records = []
>>> _ = learning_replay(log, config, off, records.append)
>>> [(r.outcome, r.decision.user_id) for r in records if r.decision.items]  # the static replay's
[('pushed', 'u3'), ('pushed', 'u1'), ('pushed', 'u2'), ('suppressed', 'u3')]
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from models.attribution import AttributionConfig, Attributor, Closed, Exposure, Scope, Signal
from models.bandit import Bandit, BanditConfig
from models.decision import Decision, Outcome
from models.events import Event
from models.fatigue import FatigueConfig, UserFatigue
from models.lift import Group, Tally, summary
from models.logfile import BadRow
from models.push_replay import PUSHED, PushReplay, PushReplayConfig, Record
from models.replay import ReplayStats
from models.routing import in_holdout
from models.sendtime import SendTimeConfig, UserSendTime
from models.steering import BANDIT, gate, release_time

#: The offline outcome: a pushed item touched (the scorer's hit).
SIGNAL: Final = Signal.TOUCH
ALL: Final = "all"


@dataclass(frozen=True, slots=True)
class LearningConfig:
    #: The conversion window (the scorer's horizon).
    horizon_s: float = 24 * 3600.0
    fatigue: FatigueConfig = field(default_factory=FatigueConfig)
    bandit: BanditConfig = field(default_factory=BanditConfig)
    sendtime: SendTimeConfig = field(default_factory=SendTimeConfig)
    #: Gate items by their candidate source too (off: on REES46 it lowered precision,
    #: see docs/PUSH.md).
    source_arms: bool = False
    #: Seed of the bandit's draws: a replay repeats itself.
    seed: int = 0
    #: Zone of users whose events carry none (for send times).
    default_tz: str = "UTC"

    def attribution(self) -> AttributionConfig:
        return AttributionConfig(
            window_s=self.horizon_s, signals=frozenset({SIGNAL}), categories=False,
            retention_s=0.0,
        )


class Learner:
    """Outcomes in, steering out (see the module doc)."""

    def __init__(self, replay_config: PushReplayConfig, config: LearningConfig) -> None:
        self.policy = replay_config.policy
        self.config = config
        self.attributor = Attributor(config.attribution())
        self.bandit = Bandit(config.bandit)
        #: Arms of candidate sources, rewarded per pushed item.
        self.sources = Bandit(config.bandit)
        self.item_attributor = Attributor(config.attribution())
        self.narrowed = 0
        self.fatigue: dict[str, UserFatigue] = {}
        self.sendtime: dict[str, UserSendTime] = {}
        self.tz: dict[str, str] = {}
        self.rng = random.Random(config.seed)
        #: The latest event time seen: what the learner knows is what happened by then.
        self.clock = float("-inf")
        self.categories: dict[str, str] = {}
        self.skipped: Counter[str] = Counter()
        self.exposed: Counter[str] = Counter()

    # -- Steering --------------------------------------------------------------------

    def steer(self, decision: Decision) -> Decision | str:
        if self._holdout(decision.user_id) or decision.transactional:
            return decision
        reason = gate(decision, False, self.fatigue.get(decision.user_id), self.bandit,
                      self.rng, self.config.fatigue)
        if reason is not None:
            return self._skip(reason)
        if not self.config.source_arms:
            return decision
        sources = dict(decision.sources)
        kept = [item for item, _ in decision.items
                if self.sources.plays(sources.get(item, ""), self.rng)]
        if not kept:
            return self._skip(BANDIT)
        self.narrowed += len(kept) < len(decision.items)
        return decision.restricted_to(kept)

    def _skip(self, reason: str) -> str:
        self.skipped[reason] += 1
        return reason

    def release_at(self, decision: Decision, default: float, tz: str | None) -> float:
        user = self.sendtime.get(decision.user_id)
        if user is None or self._holdout(decision.user_id):
            return default
        return release_time(user, decision, default, tz or self.config.default_tz, self.config.sendtime)

    # -- outcomes --------------------------------------------------------------------

    def record(self, record: Record) -> None:
        """A replay decision: pushes and holdout records open an exposure."""
        if record.outcome not in (Outcome.HOLDOUT.value, PUSHED):
            return
        decision = record.decision
        group = Group.CONTROL if record.outcome == Outcome.HOLDOUT.value else Group.TREATMENT
        items = tuple(item for item, _ in decision.items)
        categories = tuple(sorted({self.categories.get(i, "") for i in items} - {""}))
        exposure = Exposure(decision.decision_id, decision.user_id, group, decision.decided_at,
                            items, categories, decision.trigger.value, decision.segment)
        if self.attributor.expose(exposure, decision.decided_at):
            self.exposed[group.value] += 1
            if group is Group.TREATMENT and self.config.source_arms:
                # One exposure per item, its source as the arm (in the trigger field).
                sources = dict(decision.sources)
                for item in items:
                    self.item_attributor.expose(Exposure(
                        f"{decision.decision_id}/{item}", decision.user_id, group,
                        decision.decided_at, (item,), (), sources.get(item, "")),
                        decision.decided_at)

    def observe(self, event: Event) -> None:
        """An event of the log, seen after every decision due by its time."""
        if event.category:
            self.categories[event.item_id] = event.category
        self.clock = max(self.clock, event.ts)
        for credit in self.attributor.observe(event):
            if credit.scope is Scope.ITEM and credit.exposure.group is Group.TREATMENT:
                self._engaged(credit.exposure.user_id, credit.at, event.tz)
        for closed in self.attributor.close(self.clock):
            if closed.exposure.group is Group.TREATMENT:
                self._resolved(closed)
        self.item_attributor.observe(event)
        for closed in self.item_attributor.close(self.clock):
            self.sources.reward(closed.exposure.trigger, closed.earned(SIGNAL))

    def _engaged(self, user: str, at: float, tz: str | None) -> None:
        """A push converted at ``at``: known from that moment on."""
        if tz:
            self.tz[user] = tz
        self.fatigue.setdefault(user, UserFatigue()).engaged()
        zone = self.tz.get(user, self.config.default_tz)
        self.sendtime.setdefault(user, UserSendTime()).learn(at, zone, self.config.sendtime)

    def _resolved(self, closed: Closed) -> None:
        """A push's window ended. The bandit learns only here, converted or not:
        counting conversions as they come and misses only at the end would flatter
        the arms with many pushes still open."""
        exposure = closed.exposure
        converted = closed.earned(SIGNAL)
        self.bandit.reward(exposure.trigger, converted)
        if not converted:
            end = exposure.ends_at(self.attributor.config)
            self.fatigue.setdefault(exposure.user_id, UserFatigue()).ignored(end, self.config.fatigue)

    def _holdout(self, user_id: str) -> bool:
        return in_holdout(user_id, self.policy.holdout_percent, self.policy.holdout_salt)

    def stats(self) -> dict[str, Any]:
        return {
            "exposures": dict(sorted(self.exposed.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "narrowed": self.narrowed,
            "bandit": self.bandit.to_dict(),
            "sources": self.sources.to_dict(),
            "fatigued_users": sum(1 for f in self.fatigue.values() if f.streak > 0),
            "users_with_send_hour": sum(
                1 for u in self.sendtime.values()
                if u.preferred_hour(self.clock, self.config.sendtime) is not None
            ),
        }


def learning_replay(
    records: Iterable[Event | BadRow],
    replay_config: PushReplayConfig,
    config: LearningConfig,
    sink: Callable[[Record], None] | None = None,
    progress: Callable[[ReplayStats], None] | None = None,
) -> Learner:
    """Replay a log with the learning policy; every record goes to ``sink``."""
    learner = Learner(replay_config, config)
    out = sink

    def both(record: Record) -> None:
        learner.record(record)
        if out is not None:
            out(record)

    push_replay = PushReplay(replay_config, both, learner)
    for event in push_replay.replay.feed(records, progress):
        push_replay.process(event)
        learner.observe(event)
    push_replay.finish()
    return learner


def holdout_lift(
    events: Iterable[Event | BadRow], records: Iterable[Mapping[str, Any]], horizon_s: float
) -> dict[str, Any]:
    """Conversion (a pushed item touched within the horizon) of pushes and of holdout
    records with the lift and its interval: overall, per trigger kind and per segment.

    ``records`` are pushes (decision schema) and audit records (the ``holdout`` ones
    count, the others are ignored), as a replay writes them."""
    config = AttributionConfig(window_s=horizon_s, signals=frozenset({SIGNAL}),
                               categories=False, retention_s=0.0)
    attributor = Attributor(config)
    for record in records:
        outcome = record.get("outcome")
        if outcome is None or outcome == Outcome.HOLDOUT.value:
            group = Group.TREATMENT if outcome is None else Group.CONTROL
            items = tuple(str(x["item_id"]) for x in record["items"])
            attributor.expose(Exposure(str(record["decision_id"]), str(record["user_id"]), group,
                                       float(record["decided_at"]), items, (),
                                       str(record["trigger"]), record.get("segment")), 0.0)
    for event in sorted((e for e in events if isinstance(e, Event)), key=lambda e: e.ts):
        attributor.observe(event)
    overall, by_trigger, by_segment = Tally(), Tally(), Tally()
    for closed in attributor.close(float("inf")):
        exposure, converted = closed.exposure, closed.earned(SIGNAL)
        for tally, key in ((overall, ALL), (by_trigger, exposure.trigger),
                           (by_segment, exposure.segment)):
            tally.expose(exposure.group, key)
            if converted:
                tally.convert(exposure.group, key)
    return {
        ALL: summary(overall).get(ALL),
        "by_trigger": summary(by_trigger),
        "by_segment": summary(by_segment),
    }
