"""What becomes of a decision: the user's segment, then the verdict's route.

Both decision paths, the streaming worker (:mod:`streams.decisions`) and the offline
replay (:mod:`models.push_replay`), call these, so a decision made in a replay goes
where the same decision goes in the stream:

* :func:`segment_of` — the user's segment in a snapshot, with its description (the
  popular categories :func:`models.candidates.decide` falls back to);
* :func:`route` — the rate limits' verdict on a decision turned into one
  :class:`Route`: pushed (only the items the limiter let through), held back for the
  control group (:func:`in_holdout`, drawn *after* the limits so control users face the
  same limits as the others), suppressed with the limiter's reason, or deferred by
  quiet hours, with the trigger to decide again when they end (:func:`release_at`, or
  when a learning policy moves it: ``release``);
* :func:`unfilled` — a trigger :func:`models.candidates.decide` found nothing for (cold
  start), audited as ``no_candidates`` with no items.

>>> from models.decision import Decision
>>> from models.limits import LimitResult, Verdict
>>> from models.policy import PolicyConfig, Trigger, TriggerKind
>>> trigger = Trigger(TriggerKind.BROWSE_INTEREST, "u1", "e1", 1000.0, 1000.0, False, "p1", "toys")
>>> decision = Decision(trigger.decision_id, "u1", (("p2", 2.0), ("p3", 1.0)),
...                     trigger.kind, None, "", 1000.0, 1000.0, 87400.0, False)
>>> config = PolicyConfig(holdout_percent=0.0)
>>> pushed = route(trigger, decision, LimitResult(Verdict.ALLOWED, items=("p3",)), config)
>>> pushed.outcome, [item for item, _ in pushed.decision.items]
(None, ['p3'])
>>> later = route(trigger, decision, LimitResult(Verdict.DEFERRED, defer_until=5000.0), config)
>>> later.outcome.value, later.reason, later.retry.due_at >= 5000.0
('deferred', 'quiet_hours', True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from models.candidates import without_candidates
from models.decision import Decision, Outcome
from models.features import profile_vector
from models.limits import LimitResult, Verdict
from models.policy import PolicyConfig, Trigger
from models.profile import Profile
from models.segments import Segment, SegmentSnapshot

#: The audit reason of a decision deferred by the user's quiet hours.
QUIET_HOURS: Final = "quiet_hours"
HOLDOUT: Final = "holdout"
NO_CANDIDATES: Final = "no_candidates"
#: The reason of a suppression the limiter gave none for (it always does today).
UNKNOWN_REASON: Final = "unknown"


@dataclass(frozen=True, slots=True)
class Route:
    """Where one decision goes: pushed when ``outcome`` is None, else audited."""

    #: For a push, restricted to the items the limiter allowed.
    decision: Decision
    outcome: Outcome | None = None
    reason: str | None = None
    #: Deferred decisions: the trigger to decide again (at its new ``due_at``).
    retry: Trigger | None = None

    @property
    def pushed(self) -> bool:
        return self.outcome is None


def route(
    trigger: Trigger,
    decision: Decision,
    result: LimitResult,
    config: PolicyConfig,
    release: Callable[[float], float] | None = None,
) -> Route | None:
    """Where ``decision`` goes after the limits said ``result``; None when nowhere: an
    allowed decision the limiter saw published before (a replay after a crash).

    ``release`` maps the default release time of a deferred decision (:func:`release_at`)
    to the one to use (a learning policy's send time, :class:`models.push_replay.Steering`).
    """
    if result.verdict is Verdict.ALLOWED:
        if result.replayed and result.published:
            return None  # published before a crash: never twice
        if in_holdout(decision.user_id, config.holdout_percent, config.holdout_salt):
            return Route(decision, Outcome.HOLDOUT, HOLDOUT)
        return Route(decision.restricted_to(result.items))
    if result.verdict is Verdict.DEFERRED:
        assert result.defer_until is not None  # the limiter sets it on every deferral
        at = release_at(decision.user_id, result.defer_until, config)
        if release is not None:
            at = release(at)
        return Route(decision, Outcome.DEFERRED, QUIET_HOURS, trigger.deferred_to(at))
    reason = result.reason.value if result.reason is not None else UNKNOWN_REASON
    return Route(decision, Outcome.SUPPRESSED, reason)


def unfilled(
    trigger: Trigger, segment: int | None, now: float, config: PolicyConfig
) -> Route | None:
    """The audit route of a trigger that found no candidates; None once it has expired
    (it waited past its expiry: nothing was looked for)."""
    empty = without_candidates(trigger, segment, now, config)
    if empty is None:
        return None
    return Route(empty, Outcome.NO_CANDIDATES, NO_CANDIDATES)


def segment_of(
    snapshot: SegmentSnapshot | None, profile: Profile, now: float
) -> tuple[int | None, Segment | None]:
    """The user's segment in ``snapshot`` and its description; (None, None) while no
    snapshot exists (warm-up)."""
    if snapshot is None:
        return None, None
    segment_id = snapshot.assign(profile_vector(profile, now, snapshot.features))
    info = next((s for s in snapshot.segments if s.id == segment_id), None)
    return segment_id, info


def release_at(user_id: str, defer_until: float, config: PolicyConfig) -> float:
    """When to decide again a decision deferred until ``defer_until`` (quiet hours' end).

    >>> config = PolicyConfig(release_spread_s=600.0)
    >>> 1000.0 <= release_at("u1", 1000.0, config) < 1600.0
    True
    """
    return defer_until + _unit_hash("release", user_id) * config.release_spread_s


def in_holdout(user_id: str, percent: float, salt: str = "") -> bool:
    """Whether the user is in the control group: a stable hash, ``percent`` % of users.

    >>> in_holdout("u1", 100.0), in_holdout("u1", 0.0)
    (True, False)
    """
    return _unit_hash(salt, user_id) < percent / 100.0


def _unit_hash(salt: str, user_id: str) -> float:
    """A stable number in [0, 1) per (salt, user)."""
    digest = hashlib.blake2b(f"{salt}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
