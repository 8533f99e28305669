"""The learning policies in the worker: fatigue, send time and a shared bandit.

The stream calls the same pure functions as the offline replay (:mod:`models.steering`),
each switched on by ``NUDGESTREAM_LEARNING`` (default ``fatigue,sendtime,bandit``, the
combination ``nudgestream evaluate`` measured; ``off``: the static policy):

* **fatigue** — :meth:`LiveLearning.steer`, called by the decision path for each
  decision before the rate limits, rebuilds the user's ignore streak from their
  ``decided`` record (:func:`models.steering.fatigue_of`: a push ignored once its
  attribution window closed without a credited click or buy, or when it was dismissed)
  and stops the decision while the user cools down — audited ``suppressed`` with reason
  ``fatigue``. The record is the state: nothing else is kept per user.
* **send time** — :meth:`LiveLearning.release` moves a deferred decision's release to
  the user's preferred hour, learnt from the hours their engaged pushes were sent.
* **bandit** — Thompson sampling over trigger kinds, the draw seeded with the decision
  id (a replayed event draws the same, given the same counts). Its state is shared by
  all workers in Redis: the hash ``learning:arms`` (:mod:`streams.keys`) holds
  ``<trigger>:exposures`` and ``<trigger>:conversions``. Exposures are noted when the
  ``decided`` record takes a pushed decision and conversions when
  :mod:`streams.attribution` stores a decision's first credit (each once); the worker
  keeps the increments in memory and a timer (``NUDGESTREAM_LEARNING_SYNC_S``) writes
  them and reads the totals back in **one pipelined round trip**, so the event path
  never waits on Redis for it.

**Failure mode.** While the counts cannot be read (Redis down, or before the first
sync) the bandit gates nothing: the static policy applies, and
``nudgestream_learning_bandit_active`` is 0. Increments that could not be written are
kept and written at the next sync; those of a worker that dies before it syncs are lost
(at most ``NUDGESTREAM_LEARNING_SYNC_S`` of one worker's counts: the arms learn a little
less, nothing is counted twice). Fatigue and send time need nothing but the record.

**The control group is never steered**: holdout users' decisions pass unchanged and
their records neither count as exposures nor as conversions of an arm.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from faust.types import TableT

from models.attribution import Signal
from models.bandit import Bandit, BanditConfig
from models.decided import DecidedPush, DecisionLog
from models.decision import Decision
from models.fatigue import FatigueConfig
from models.lift import Group
from models.routing import in_holdout
from models.sendtime import SendTimeConfig
from models.steering import (
    BANDIT,
    FATIGUE,
    SENDTIME,
    bandit_of,
    fatigue_of,
    gate,
    release_time,
    sendtime_of,
)
from streams import metrics
from streams.attribution import AttributionTracker
from streams.decisions import DecisionEngine
from streams.keys import RedisKeys
from streams.outcomes import OutcomeTracker
from streams.settings import Settings

log = logging.getLogger(__name__)

EXPOSURES = "exposures"
CONVERSIONS = "conversions"


class LiveLearning:
    """One worker's learning policies (see the module doc)."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, decided: TableT[bytes, bytes]) -> None:
        self.policies = settings.learning
        self.policy = settings.policy
        self.window_s = settings.attribution_window_s
        self.default_tz = settings.default_tz
        self.sync_s = settings.learning_sync_s
        self.redis = redis
        self.decided = decided
        self.key = RedisKeys.of_app(settings.app_id).learning_arms
        self.fatigue = FatigueConfig()
        self.sendtime = SendTimeConfig()
        self.bandit_config = BanditConfig()
        #: The shared arms as last read; None: not (yet) readable, the static policy applies.
        self.bandit: Bandit | None = None
        #: Increments not yet written to Redis.
        self.unsynced: Counter[str] = Counter()
        metrics.LEARNING_BANDIT_ACTIVE.set(0)

    def install(
        self, decisions: DecisionEngine, outcomes: OutcomeTracker, attribution: AttributionTracker,
        every: Callable[[float, Callable[[], Awaitable[Any]]], None],
    ) -> None:
        """Hook the policies into the decision path and the outcomes (none when off)."""
        if not self.policies:
            return
        decisions.steer = self.steer
        decisions.release = self.release
        if BANDIT in self.policies:
            outcomes.on_recorded = self.exposed
            attribution.on_converted = self.converted
            every(self.sync_s, self.sync)

    # --- the decision path ----------------------------------------------------------

    def steer(self, decision: Decision) -> str | None:
        """Why ``decision`` is stopped (``fatigue``, ``bandit``), or None: it goes on."""
        holdout = in_holdout(decision.user_id, self.policy.holdout_percent, self.policy.holdout_salt)
        if holdout or decision.transactional:
            return None
        fatigue = None
        if FATIGUE in self.policies:
            fatigue = fatigue_of(self._log(decision.user_id), decision.decided_at, self.window_s, self.fatigue)
        bandit = self.bandit if BANDIT in self.policies else None
        rng = random.Random(decision.decision_id)
        reason = gate(decision, holdout, fatigue, bandit, rng, self.fatigue)
        if reason is not None:
            metrics.LEARNING_SUPPRESSED_BY_LABELS[(reason, decision.trigger)].inc()
        return reason

    def release(self, decision: Decision, tz: str | None) -> Callable[[float], float] | None:
        """The send-time policy's release time of ``decision`` if it is deferred."""
        if SENDTIME not in self.policies:
            return None
        if in_holdout(decision.user_id, self.policy.holdout_percent, self.policy.holdout_salt):
            return None
        zone = tz or self.default_tz

        def at(default: float) -> float:
            user = sendtime_of(self._log(decision.user_id), zone, self.sendtime)
            moved = release_time(user, decision, default, zone, self.sendtime)
            if moved != default:
                metrics.LEARNING_RELEASE_MOVED_BY_TRIGGER[decision.trigger].inc()
            return moved

        return at

    def _log(self, user_id: str) -> DecisionLog:
        return DecisionLog.from_bytes(self.decided.get(user_id.encode()))

    # --- outcomes (called where they are stored, each once) -------------------------

    def exposed(self, entries: Sequence[DecidedPush]) -> None:
        if BANDIT in self.policies:
            for entry in entries:
                if entry.group is Group.TREATMENT:
                    self.unsynced[f"{entry.trigger.value}:{EXPOSURES}"] += 1

    def converted(self, conversions: Sequence[tuple[DecidedPush, Signal]]) -> None:
        """A decision converts for the bandit at its first credit (click or buy)."""
        if BANDIT not in self.policies:
            return
        first = {entry.decision_id: entry for entry, _ in conversions if not entry.credited}
        for entry in first.values():
            if entry.group is Group.TREATMENT:
                self.unsynced[f"{entry.trigger.value}:{CONVERSIONS}"] += 1

    # --- the timer ------------------------------------------------------------------

    async def sync(self) -> None:
        """Write the increments and read every worker's totals, in one round trip."""
        if BANDIT not in self.policies:
            return
        pending, self.unsynced = self.unsynced, Counter()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for field, count in sorted(pending.items()):
                    pipe.hincrby(self.key, field, count)
                pipe.hgetall(self.key)
                replies = await pipe.execute()
        except Exception:
            self.unsynced.update(pending)  # written at the next sync
            self.bandit = None
            metrics.LEARNING_BANDIT_ACTIVE.set(0)
            metrics.REDIS_ERRORS.labels(operation="learning").inc()
            log.warning("bandit counts unavailable; the static policy applies", exc_info=True)
            return
        self.bandit = bandit_of(arm_counts(replies[-1]), self.bandit_config)
        metrics.LEARNING_BANDIT_ACTIVE.set(1)


def arm_counts(raw: dict[bytes, bytes]) -> dict[str, tuple[int, int]]:
    """(exposures, conversions) per arm from the hash's fields.

    >>> arm_counts({b"browse_interest:exposures": b"10", b"browse_interest:conversions": b"2"})
    {'browse_interest': (10, 2)}
    """
    counts: dict[str, list[int]] = {}
    for field, value in raw.items():
        arm, _, kind = field.decode().rpartition(":")
        if kind in (EXPOSURES, CONVERSIONS):
            counts.setdefault(arm, [0, 0])[kind == CONVERSIONS] += int(value)
    return {arm: (exposures, conversions) for arm, (exposures, conversions) in sorted(counts.items())}
