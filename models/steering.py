"""The learning policies' verdict on one decision, shared by the replay and the worker.

:func:`gate` says whether a decision is stopped — by fatigue (the user's ignore streak,
:mod:`models.fatigue`) or by the bandit's draw for its trigger kind
(:mod:`models.bandit`) — and :func:`release_time` when a deferred one is released
(:mod:`models.sendtime`). The offline :class:`models.push_learning.Learner` and the
stream (:mod:`streams.learning`) both call them, so what is evaluated is what ships;
they differ only in where the state comes from:

* offline, from the log's simulated outcomes (the Learner's own attribution);
* in the stream, from the user's ``decided`` record (:class:`models.decided.DecisionLog`):
  :func:`fatigue_of` and :func:`sendtime_of` rebuild the state from its entries, and the
  bandit's arms come from the shared counts (:func:`bandit_of`).

The control group is never steered: a holdout user's (or a transactional) decision
passes unchanged.

>>> from models.decided import DecidedPush, DecisionLog
>>> from models.lift import Group
>>> from models.policy import TriggerKind
>>> log = DecisionLog([DecidedPush(f"d{n}", 1000.0 * n, ("p1",), ("toys",),
...                                TriggerKind.BROWSE_INTEREST, None, Group.TREATMENT)
...                    for n in range(1, 4)])
>>> user = fatigue_of(log, now=3500.0, window_s=600.0, config=FatigueConfig())
>>> user.streak, user.allows(3500.0, FatigueConfig())  # two ignored, one still open
(2, False)
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Final

from models.bandit import Arm, Bandit, BanditConfig
from models.decided import DecidedPush, DecisionLog
from models.decision import Decision
from models.fatigue import FatigueConfig, UserFatigue
from models.lift import Group
from models.outcomes import OutcomeKind
from models.sendtime import SendTimeConfig, UserSendTime, send_at

#: Audit reasons (and policy names) of a stopped decision.
FATIGUE: Final = "fatigue"
BANDIT: Final = "bandit"
SENDTIME: Final = "sendtime"
POLICIES: Final = (FATIGUE, SENDTIME, BANDIT)


def gate(
    decision: Decision,
    holdout: bool,
    fatigue: UserFatigue | None,
    bandit: Bandit | None,
    rng: random.Random,
    config: FatigueConfig,
) -> str | None:
    """The reason ``decision`` is stopped (:data:`FATIGUE`, :data:`BANDIT`), or None.

    ``fatigue`` None: no state (or the policy is off); ``bandit`` None: off, or its
    arms are unknown (the static policy applies). The draw comes from ``rng``.
    """
    if holdout or decision.transactional:
        return None
    if fatigue is not None and not fatigue.allows(decision.decided_at, config):
        return FATIGUE
    if bandit is not None and not bandit.plays(decision.trigger.value, rng):
        return BANDIT
    return None


def release_time(
    user: UserSendTime | None, decision: Decision, default: float, tz: str, config: SendTimeConfig
) -> float:
    """When a deferred ``decision`` is released: the user's preferred hour if it comes
    before the decision expires, else ``default``."""
    if user is None:
        return default
    return send_at(default, user.preferred_hour(default, config), tz, decision.expires_at)


def engaged(entry: DecidedPush) -> bool:
    """A click or buy was credited to the push, or its notification was clicked."""
    return bool(entry.credited) or OutcomeKind.CLICKED in entry.seen


def fatigue_of(log: DecisionLog, now: float, window_s: float, config: FatigueConfig) -> UserFatigue:
    """The user's ignore streak as of ``now`` from their recent pushes, oldest first.

    A push is **ignored** once its attribution window (``window_s``) closed without
    engagement, or at once when the user dismissed it; an engaged push ends the streak;
    one still in its window counts neither way. Control-group records never count.
    """
    user = UserFatigue()
    for entry in log.entries:
        if entry.group is not Group.TREATMENT:
            continue
        if engaged(entry):
            user.engaged()
        elif OutcomeKind.DISMISSED in entry.seen:
            user.ignored(entry.ts, config)
        elif entry.ts + window_s <= now:
            user.ignored(entry.ts + window_s, config)
    return user


def sendtime_of(log: DecisionLog, tz: str, config: SendTimeConfig) -> UserSendTime:
    """Engagement per local hour from the user's engaged pushes (the hour they were
    sent: the record keeps no credit times, and a push that converted was sent then)."""
    user = UserSendTime()
    for entry in log.entries:
        if entry.group is Group.TREATMENT and engaged(entry):
            user.learn(entry.ts, tz, config)
    return user


def bandit_of(counts: Mapping[str, tuple[int, int]], config: BanditConfig) -> Bandit:
    """A bandit whose arms are (exposures, conversions) per trigger kind; every
    exposure not converted counts as a miss, including those still in their window."""
    arms = {arm: Arm(conversions, max(0, exposures - conversions))
            for arm, (exposures, conversions) in counts.items()}
    return Bandit(config, arms)
