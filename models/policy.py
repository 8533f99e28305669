"""The push decision policy: when to push (triggers), what to push (candidates), and why.

Pure functions of profiles, events and prefetched data; the streaming agent and the
offline replay (:mod:`models.push_replay`) call exactly these, in this order:

1. :func:`triggers_for` after a profile update (every event: a few microseconds). A
   :class:`Trigger` is either immediate (``due_at == event_ts``) or delayed (the caller
   holds it until ``due_at``).
2. :func:`still_valid` at ``due_at`` (e.g. false once the user bought something).
3. :func:`needs` says which served data to fetch in one round trip into a
   :class:`CandidateData`: related lists of items, popular lists of categories and the
   overall popular list.
4. :func:`decide` turns trigger, profile and data into a :class:`Decision` (or None
   when nothing is worth pushing); the caller applies the rate limits
   (:meth:`Decision.limit_request`) and the control group (:func:`in_holdout`).

**Triggers** (:class:`TriggerKind`, all configurable in :class:`PolicyConfig`):

* ``browse_interest`` — immediate: a view or click brings the items the user looked at
  in one category during the current session to ``browse_min_items`` distinct items;
* ``browse_abandoned`` — the same moment, delayed by ``abandon_delay_s``, and only if
  the user bought nothing in between;
* ``post_purchase`` — immediate on a buy: items related to what was just bought.

**Candidates.** Items related to the user's recent items (the co-occurrence table's
related lists, the i-th most recent item weighted ``recency ** i``, each list scaled by
its best score) plus the most popular items of the user's strongest recent categories
(weighted by the category's share of the user's recent items); an item found by both
gets ``overlap_bonus`` on top. Items the user bought, and by default those they touched
recently, are never pushed. When the user's own data yields nothing, the popular items
of their segment's categories, then the overall popular items, stand in (browse
triggers only: a post-purchase push without a related item is not worth sending).
``docs/PUSH.md`` gives the measurements behind each choice.

>>> from models.events import Event, EventType
>>> from models.profile import ProfileConfig, update
>>> config = PolicyConfig(browse_min_items=2)
>>> profile, before = None, None
>>> for n, item in enumerate(["p1", "p2"]):
...     before = copy_profile(profile)
...     event = Event(f"e{n}", EventType.VIEW, "u1", item, 1000.0 + n, "phones")
...     profile, _ = update(profile, event, event.ts, ProfileConfig())
>>> [t.kind.value for t in triggers_for(before, profile, event, config)]
['browse_interest', 'browse_abandoned']
>>> trigger = triggers_for(before, profile, event, config)[0]
>>> data = CandidateData(related={"p2": [("p3", 4.0), ("p1", 2.0)]},
...                      popular_by_category={"phones": [("p3", 10.0), ("p4", 9.0)]})
>>> decision = decide(trigger, profile, data, None, None, event.ts, config)
>>> [item for item, _ in decision.items], decision.decision_id == trigger.decision_id
(['p3', 'p4'], True)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

from models.events import Event, EventType
from models.limits import LimitRequest
from models.profile import UNKNOWN_CATEGORY, Profile
from models.segments import Segment

SCHEMA_VERSION: Final = 1
#: ``schemas/audit.v2.json``: schema 2 added the outcome ``no_candidates`` (empty items).
AUDIT_SCHEMA_VERSION: Final = 2
#: The audit reason of a decision deferred by the user's quiet hours.
QUIET_HOURS: Final = "quiet_hours"
HOLDOUT: Final = "holdout"
NO_CANDIDATES: Final = "no_candidates"
#: The explanations of the popularity fallbacks (no related or category items).
POPULAR_NOW: Final = "popular right now"
POPULAR_LIKE_YOU: Final = "popular with shoppers like you in"
_VERBS: Final = {EventType.VIEW: "viewed", EventType.CLICK: "clicked", EventType.BUY: "bought"}


class TriggerKind(StrEnum):
    """The rule that fired (the ``trigger`` field of a decision; a metric label)."""

    BROWSE_INTEREST = "browse_interest"
    BROWSE_ABANDONED = "browse_abandoned"
    POST_PURCHASE = "post_purchase"


_BROWSE_KINDS: Final = (TriggerKind.BROWSE_INTEREST, TriggerKind.BROWSE_ABANDONED)


class Source(StrEnum):
    """Where a pushed item came from (its strongest contribution)."""

    RELATED = "related"
    CATEGORY = "category"
    SEGMENT = "segment"
    POPULAR = "popular"


class Outcome(StrEnum):
    """What became of a decision that was not pushed (the audit topic's ``outcome``)."""

    SUPPRESSED = "suppressed"
    HOLDOUT = "holdout"
    DEFERRED = "deferred"
    #: A trigger that found nothing to recommend (cold start): audited with no items.
    NO_CANDIDATES = "no_candidates"


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


@dataclass(frozen=True, slots=True)
class Needs:
    """What :func:`decide` will read, to be fetched in one round trip."""

    #: Items whose related lists are needed.
    related_items: tuple[str, ...]
    #: Categories whose popular lists are needed.
    categories: tuple[str, ...]
    #: Length of each popular list (overall and per category), best first.
    n_popular: int


@dataclass(frozen=True, slots=True)
class CandidateData:
    """The served data a decision reads; what is missing counts as empty.

    Popular lists carry any score that is a *time-invariant log2 of the count* (the
    served form: ``log2(count) + ts / half_life``): only differences between the scores
    of one list are used. Related lists carry the co-occurrence scores.
    """

    related: Mapping[str, Sequence[tuple[str, float]]] = field(default_factory=dict)
    popular: Sequence[tuple[str, float]] = ()
    popular_by_category: Mapping[str, Sequence[tuple[str, float]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    user_id: str
    #: (item id, score), best first.
    items: tuple[tuple[str, float], ...]
    trigger: TriggerKind
    segment: int | None
    explanation: str
    event_ts: float
    decided_at: float
    expires_at: float
    transactional: bool
    #: (item id, :class:`Source`) of each item, for learning in process; not part of the
    #: topic contract (``to_dict`` leaves it out).
    sources: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The ``schemas/decision.v1.json`` form."""
        return {
            "schema": SCHEMA_VERSION,
            "decision_id": self.decision_id,
            "user_id": self.user_id,
            "items": [{"item_id": item, "score": round(score, 6)} for item, score in self.items],
            "trigger": self.trigger.value,
            "segment": self.segment,
            "explanation": self.explanation,
            "event_ts": self.event_ts,
            "decided_at": self.decided_at,
            "expires_at": self.expires_at,
            "transactional": self.transactional,
        }

    def to_audit_dict(self, outcome: Outcome, reason: str) -> dict[str, Any]:
        """The ``schemas/audit.v2.json`` form: a decision that was not pushed, and why."""
        return {**self.to_dict(), "schema": AUDIT_SCHEMA_VERSION, "outcome": outcome.value, "reason": reason}

    def limit_request(self, tz: str | None) -> LimitRequest:
        """The rate-limit check of this decision for a user in zone ``tz``."""
        return LimitRequest(
            self.decision_id,
            self.user_id,
            self.decided_at,
            items=tuple(item for item, _ in self.items),
            tz=tz,
            expires_at=self.expires_at,
            transactional=self.transactional,
        )

    def restricted_to(self, item_ids: Sequence[str]) -> Decision:
        """The decision with only ``item_ids`` (what the limiter let through)."""
        keep = set(item_ids)
        return replace(self, items=tuple(pair for pair in self.items if pair[0] in keep))


def copy_profile(profile: Profile | None) -> Profile | None:
    """A copy that later updates cannot change: :func:`models.profile.update` works in
    place, and :func:`triggers_for` needs the profile as it was before the event."""
    if profile is None:
        return None
    return replace(
        profile,
        categories=dict(profile.categories),
        recent=list(profile.recent),
        bought=list(profile.bought),
        seen=list(profile.seen),
    )


# -- triggers -------------------------------------------------------------------------


def triggers_for(
    before: Profile | None, after: Profile, event: Event, config: PolicyConfig
) -> list[Trigger]:
    """The triggers an applied event fires; ``before`` is a copy (:func:`copy_profile`)."""
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


# -- candidates -----------------------------------------------------------------------


def needs(
    trigger: Trigger, profile: Profile, config: PolicyConfig, segment_info: Segment | None = None
) -> Needs:
    """The data :func:`decide` reads for this trigger (fetch it in one round trip)."""
    categories: list[str] = []
    if _uses_categories(trigger):
        categories = [c for c, _ in _category_shares(profile, config)]
        if segment_info is not None:
            categories += [key for key, _ in segment_info.top_categories if key not in categories]
    return Needs(
        related_items=tuple(_query_items(trigger, profile, config)),
        categories=tuple(categories),
        n_popular=config.popular_per_list + len(_excluded(profile, config)),
    )


def _uses_categories(trigger: Trigger) -> bool:
    # More of the category just bought is a poor follow-up to a purchase.
    return trigger.kind is not TriggerKind.POST_PURCHASE


def _query_items(trigger: Trigger, profile: Profile, config: PolicyConfig) -> dict[str, float]:
    """Items whose related lists count, with their weights: the trigger's item first."""
    latest_first = [trigger.item_id] + [r.item_id for r in reversed(profile.recent)]
    ordered = list(dict.fromkeys(latest_first))[: config.query_items]
    return {item: config.recency**age for age, item in enumerate(ordered)}


def _category_shares(profile: Profile, config: PolicyConfig) -> list[tuple[str, float]]:
    """The strongest recent categories with their share of the user's recent items."""
    weights: dict[str, float] = {}
    for age, recent in enumerate(reversed(profile.recent)):
        weights[recent.category] = weights.get(recent.category, 0.0) + config.category_recency**age
    total = sum(weights.values())
    weights.pop(UNKNOWN_CATEGORY, None)
    ranked = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[: config.categories]
    return [(category, weight / total) for category, weight in ranked]


def _excluded(profile: Profile, config: PolicyConfig) -> set[str]:
    excluded = set(profile.bought)
    if config.exclude_touched:
        excluded.update(r.item_id for r in profile.recent)
    return excluded


@dataclass(slots=True)
class _Candidate:
    related: float = 0.0
    popular: float = 0.0
    #: The source that contributed most, for the explanation, and its kind (:class:`Source`).
    reason: str = ""
    reason_weight: float = 0.0
    source: str = ""

    @property
    def score(self) -> float:
        return self.related + self.popular

    def add(self, related: float, popular: float, reason: str, source: str) -> None:
        self.related += related
        self.popular += popular
        if related + popular > self.reason_weight:
            self.reason, self.reason_weight, self.source = reason, related + popular, source


class _Pool:
    """Candidates with their scores; items in ``excluded`` never enter."""

    def __init__(self, excluded: set[str]) -> None:
        self.excluded = excluded
        self.items: dict[str, _Candidate] = {}

    def add_related(self, related: Sequence[tuple[str, float]], weight: float, reason: str) -> None:
        for item, scaled in _scaled(related, _linear):
            if item not in self.excluded:
                self._candidate(item).add(weight * scaled, 0.0, reason, Source.RELATED)

    def add_popular(
        self, popular: Sequence[tuple[str, float]], weight: float, reason: str, source: Source
    ) -> None:
        for item, scaled in _scaled(popular, _from_log2):
            if item not in self.excluded:
                self._candidate(item).add(0.0, weight * scaled, reason, source)

    def _candidate(self, item: str) -> _Candidate:
        candidate = self.items.get(item)
        if candidate is None:
            candidate = self.items[item] = _Candidate()
        return candidate


def _linear(score: float, best: float) -> float:
    return score / best if best > 0 else 0.0


def _from_log2(score: float, best: float) -> float:
    # Popular lists score log2(count) plus a shared offset: 2**difference is the count ratio.
    return math.exp2(score - best)


def _scaled(
    ranked: Sequence[tuple[str, float]], scale: Callable[[float, float], float]
) -> Iterator[tuple[str, float]]:
    """Each item's score relative to the list's best (``ranked`` is best first), the
    user's own items included: a list led by them is a weaker list for the rest."""
    if ranked:
        best = ranked[0][1]
        for item, score in ranked:
            yield item, scale(score, best)


def decide(
    trigger: Trigger,
    profile: Profile,
    data: CandidateData,
    segment: int | None,
    segment_info: Segment | None,
    now: float,
    config: PolicyConfig,
) -> Decision | None:
    """The push for ``trigger`` from ``data`` (fetched as :func:`needs` said), or None."""
    expires_at = trigger.event_ts + config.expiry_s
    if now >= expires_at:
        return None
    pool = _Pool(_excluded(profile, config))
    for item, weight in _query_items(trigger, profile, config).items():
        verb = _verb(profile, item, trigger)
        pool.add_related(
            data.related.get(item, ()), weight, f"often seen with {item}, which you {verb}"
        )
    if _uses_categories(trigger):
        _add_categories(pool, profile, data, config)
        if not pool.items and segment_info is not None:
            for key, share in segment_info.top_categories:
                pool.add_popular(
                    data.popular_by_category.get(key, ()),
                    share,
                    f"{POPULAR_LIKE_YOU} {key}",
                    Source.SEGMENT,
                )
        if not pool.items:
            pool.add_popular(data.popular, 1.0, POPULAR_NOW, Source.POPULAR)
    chosen = _best(pool, config)
    if not chosen:
        return None
    items = tuple((item, candidate.score) for item, candidate in chosen)
    sources = tuple((item, candidate.source) for item, candidate in chosen)
    return _decision(trigger, items, segment, _explain(chosen), now, expires_at, sources)


def without_candidates(
    trigger: Trigger, segment: int | None, now: float, config: PolicyConfig
) -> Decision | None:
    """The audit form (no items) of a trigger :func:`decide` found nothing for.

    None once the trigger has expired: then nothing was looked for.
    """
    expires_at = trigger.event_ts + config.expiry_s
    if now >= expires_at:
        return None
    return _decision(trigger, (), segment, NOTHING_TO_RECOMMEND, now, expires_at)


NOTHING_TO_RECOMMEND: Final = "no related, category or popular items yet"


def is_popularity_fallback(explanation: str) -> bool:
    """Whether a decision's explanation (:func:`_explain`) names only the fallbacks:
    popular lists, because the user's items had no related ones nor categories."""
    reasons = [part.rpartition(": ")[2] for part in explanation.split("; ")]
    return all(r == POPULAR_NOW or r.startswith(POPULAR_LIKE_YOU) for r in reasons)


def _decision(
    trigger: Trigger, items: tuple[tuple[str, float], ...], segment: int | None,
    explanation: str, now: float, expires_at: float,
    sources: tuple[tuple[str, str], ...] = (),
) -> Decision:
    return Decision(
        decision_id=trigger.decision_id,
        user_id=trigger.user_id,
        items=items,
        sources=sources,
        trigger=trigger.kind,
        segment=segment,
        explanation=explanation,
        event_ts=trigger.event_ts,
        decided_at=now,
        expires_at=expires_at,
        transactional=trigger.transactional,
    )


def _add_categories(
    pool: _Pool, profile: Profile, data: CandidateData, config: PolicyConfig
) -> None:
    for category, share in _category_shares(profile, config):
        popular = data.popular_by_category.get(category, ())
        pool.add_popular(
            popular,
            share * config.category_weight,
            f"popular in {category}, which you browsed",
            Source.CATEGORY,
        )
    for candidate in pool.items.values():
        if candidate.related > 0 and candidate.popular > 0:
            candidate.related += config.overlap_bonus


def _verb(profile: Profile, item: str, trigger: Trigger) -> str:
    for recent in profile.recent:
        if recent.item_id == item:
            return _VERBS[recent.type]
    return "bought" if trigger.kind is TriggerKind.POST_PURCHASE else "viewed"


def _best(pool: _Pool, config: PolicyConfig) -> list[tuple[str, _Candidate]]:
    ranked = sorted(pool.items.items(), key=lambda pair: (-pair[1].score, pair[0]))
    ranked = ranked[: config.items_per_push]
    if not ranked or ranked[0][1].score <= 0:
        return []
    floor = ranked[0][1].score * config.min_relative_score
    return [pair for pair in ranked if pair[1].score >= floor]


def _explain(chosen: list[tuple[str, _Candidate]]) -> str:
    """``"a, b: often seen with x, which you viewed; c: popular in phones, ..."``."""
    by_reason: dict[str, list[str]] = {}
    for item, candidate in chosen:
        by_reason.setdefault(candidate.reason, []).append(item)
    return "; ".join(f"{', '.join(items)}: {reason}" for reason, items in by_reason.items())


# -- quiet hours and control group -----------------------------------------------------


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
