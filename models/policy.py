"""The push decision policy, part one: when to push (triggers) and whether still to.

Pure functions of profiles and events; the streaming agent and the offline replay
(:mod:`models.push_replay`) call exactly these, in this order, through the per-event
step (:func:`models.step.step`) and the decision path:

1. :func:`triggers_for` after a profile update (every event: a few microseconds). A
   :class:`Trigger` is either immediate (``due_at == event_ts``) or delayed (the caller
   holds it until ``due_at``).
2. :func:`still_valid` at ``due_at`` (e.g. false once the user bought something).
3. :mod:`models.candidates` says what to fetch (:func:`~models.candidates.needs`) and
   picks the items (:func:`~models.candidates.decide`), giving a
   :class:`~models.decision.Decision` or None;
4. :func:`models.routing.route` turns the rate limits' verdict into what becomes of it
   (pushed, control group, suppressed or deferred by quiet hours).

**Triggers** (:class:`TriggerKind`, all configurable in :class:`PolicyConfig`):

* ``browse_interest`` — immediate: a view or click brings the items the user looked at
  in one category during the current session to ``browse_min_items`` distinct items;
* ``browse_abandoned`` — the same moment, delayed by ``abandon_delay_s``, and only if
  the user bought nothing in between;
* ``post_purchase`` — immediate on a buy: items related to what was just bought.

``docs/PUSH.md`` gives the measurements behind each choice.

>>> from models.events import Event, EventType
>>> from models.profile import ProfileConfig, update
>>> config = PolicyConfig(browse_min_items=2)
>>> profile, before = None, None
>>> for n, item in enumerate(["p1", "p2"]):
...     event = Event(f"e{n}", EventType.VIEW, "u1", item, 1000.0 + n, "phones")
...     before, (profile, _) = profile, update(profile, event, event.ts, ProfileConfig())
>>> [t.kind.value for t in triggers_for(before, profile, event, config)]
['browse_interest', 'browse_abandoned']
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from models.events import Event, EventType
from models.profile import UNKNOWN_CATEGORY, Profile


class TriggerKind(StrEnum):
    """The rule that fired (the ``trigger`` field of a decision; a metric label)."""

    BROWSE_INTEREST = "browse_interest"
    BROWSE_ABANDONED = "browse_abandoned"
    POST_PURCHASE = "post_purchase"


_BROWSE_KINDS: Final = (TriggerKind.BROWSE_INTEREST, TriggerKind.BROWSE_ABANDONED)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    #: The triggers that fire.
    triggers: frozenset[TriggerKind] = frozenset(TriggerKind)
    #: Browse triggers: distinct items viewed or clicked in one category in one session.
    browse_min_items: int = 2
    #: ``browse_abandoned`` fires this long after the browsing if nothing was bought; at
    #: least ``LimitConfig.min_gap_s``, or the ``browse_interest`` push suppresses it.
    abandon_delay_s: float = 3600.0
    #: Kinds whose pushes are transactional (skip the marketing limits): none by default;
    #: a shop that sends the post-purchase push as part of its order confirmation adds
    #: ``post_purchase`` here.
    transactional: frozenset[TriggerKind] = frozenset()
    #: Most items in one push, and the least score an item needs relative to the best one.
    items_per_push: int = 3
    min_relative_score: float = 0.0
    #: A decision expires this long after its triggering event.
    expiry_s: float = 24 * 3600.0
    #: Decisions deferred by quiet hours are sent over this long after the quiet hours
    #: end, spread by user, so a night's backlog does not reach the senders at once.
    release_spread_s: float = 1800.0
    #: Share of users (percent) in the control group, and the salt of its hash.
    holdout_percent: float = 5.0
    holdout_salt: str = ""
    #: Never push items the user touched recently (bought items are never pushed).
    exclude_touched: bool = True
    #: Recent items whose related lists are read, the i-th most recent weighted recency**i.
    query_items: int = 5
    recency: float = 0.5
    #: Strongest recent categories whose popular items are candidates, their recent
    #: items weighted category_recency**i for the category shares.
    categories: int = 2
    category_recency: float = 0.7
    category_weight: float = 1.0
    #: Added to an item both related to a recent item and popular in a recent category.
    overlap_bonus: float = 1.0
    #: Popular items fetched per list (before the user's own items are left out).
    popular_per_list: int = 20

    def __post_init__(self) -> None:
        if self.browse_min_items < 1 or self.items_per_push < 1:
            raise ValueError("browse_min_items and items_per_push must be >= 1")
        if self.query_items < 1 or self.categories < 0 or self.popular_per_list < 1:
            raise ValueError("need query_items >= 1, categories >= 0, popular_per_list >= 1")
        if self.abandon_delay_s <= 0 or self.expiry_s <= self.abandon_delay_s:
            raise ValueError("need 0 < abandon_delay_s < expiry_s")
        if self.release_spread_s < 0:
            raise ValueError("release_spread_s must be >= 0")
        if not 0 <= self.holdout_percent <= 100 or not 0 <= self.min_relative_score <= 1:
            raise ValueError("need 0 <= holdout_percent <= 100 and 0 <= min_relative_score <= 1")
        for name in ("recency", "category_recency"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class Trigger:
    kind: TriggerKind
    user_id: str
    event_id: str
    event_ts: float
    #: When to decide: the event time for immediate triggers, later for delayed ones.
    due_at: float
    transactional: bool
    #: The triggering event's item and category.
    item_id: str
    category: str
    #: The user's latest purchase when the trigger was made (to see a later one).
    last_bought: str | None = None

    @property
    def decision_id(self) -> str:
        """Deterministic: every retry of this trigger decides under the same id."""
        digest = hashlib.blake2b(f"{self.kind}\x1f{self.event_id}".encode(), digest_size=10)
        return f"d-{digest.hexdigest()}"

    def deferred_to(self, due_at: float) -> Trigger:
        """The same trigger, to be decided again at ``due_at`` (e.g. after quiet hours)."""
        return replace(self, due_at=due_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "user_id": self.user_id,
            "event_id": self.event_id,
            "event_ts": self.event_ts,
            "due_at": self.due_at,
            "transactional": self.transactional,
            "item_id": self.item_id,
            "category": self.category,
            "last_bought": self.last_bought,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trigger:
        return cls(**{**data, "kind": TriggerKind(data["kind"])})


# -- triggers -------------------------------------------------------------------------


def triggers_for(
    before: Profile | None, after: Profile, event: Event, config: PolicyConfig
) -> list[Trigger]:
    """The triggers an applied event fires; ``before`` is the profile before it."""
    enabled = config.triggers
    if event.type is EventType.BUY:
        if TriggerKind.POST_PURCHASE not in enabled:
            return []
        return [_trigger(TriggerKind.POST_PURCHASE, event, event.ts, after, config)]
    browse = [kind for kind in _BROWSE_KINDS if kind in enabled]
    if not browse or not _reaches_browse_threshold(before, after, event, config):
        return []
    delay = {TriggerKind.BROWSE_INTEREST: 0.0, TriggerKind.BROWSE_ABANDONED: config.abandon_delay_s}
    return [_trigger(kind, event, event.ts + delay[kind], after, config) for kind in browse]


def _reaches_browse_threshold(
    before: Profile | None, after: Profile, event: Event, config: PolicyConfig
) -> bool:
    """This event is the ``browse_min_items``-th distinct item of its category this session."""
    category = event.category or UNKNOWN_CATEGORY
    if category == UNKNOWN_CATEGORY:
        return False
    seen = set()
    if before is not None and before.session_id == after.session_id:
        seen = {
            r.item_id
            for r in before.recent
            if r.category == category and r.ts >= after.session_start
        }
    if event.item_id in seen or len(seen) + 1 != config.browse_min_items:
        return False
    # The profile keeps a bounded recent list: count what is really there now.
    now = {
        r.item_id for r in after.recent if r.category == category and r.ts >= after.session_start
    }
    return len(now) >= config.browse_min_items


def _trigger(
    kind: TriggerKind, event: Event, due_at: float, profile: Profile, config: PolicyConfig
) -> Trigger:
    return Trigger(
        kind=kind,
        user_id=event.user_id,
        event_id=event.event_id,
        event_ts=event.ts,
        due_at=due_at,
        transactional=kind in config.transactional,
        item_id=event.item_id,
        category=event.category or UNKNOWN_CATEGORY,
        last_bought=_last_bought(profile),
    )


def _last_bought(profile: Profile | None) -> str | None:
    return profile.bought[-1] if profile is not None and profile.bought else None


def still_valid(
    trigger: Trigger, profile: Profile | None, now: float, config: PolicyConfig
) -> bool:
    """Whether a trigger still deserves a decision at ``now`` (its due time or later)."""
    if profile is None or now >= trigger.event_ts + config.expiry_s:
        return False
    if trigger.kind is TriggerKind.BROWSE_ABANDONED:
        bought_since = any(
            r.type is EventType.BUY and r.ts >= trigger.event_ts for r in profile.recent
        )
        return not bought_since and _last_bought(profile) == trigger.last_bought
    return True
