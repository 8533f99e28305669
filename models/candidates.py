"""The push decision policy, part two: what to push (candidates), and why.

:func:`needs` says which served data to fetch in one round trip into a
:class:`CandidateData` (related lists of items, popular lists of categories and the
overall popular list); :func:`decide` turns trigger, profile and data into a
:class:`~models.decision.Decision`, or None when nothing is worth pushing.

**Candidates.** Items related to the user's recent items (the co-occurrence table's
related lists, the i-th most recent weighted ``recency ** i``, each list scaled by
its best score) plus the most popular items of the user's strongest recent categories
(weighted by the category's share of the user's recent items); an item found by both
gets ``overlap_bonus`` on top. Items the user bought, and by default those they touched
recently, are never pushed. When the user's own data yields nothing, the popular items
of their segment's categories, then the overall popular items, stand in (browse
triggers only: a post-purchase push without a related item is not worth sending).
``docs/PUSH.md`` gives the measurements behind each choice.

>>> from models.events import Event, EventType
>>> from models.step import StepConfig, step
>>> config = PolicyConfig(browse_min_items=2)
>>> views = [Event(f"e{n}", EventType.VIEW, "u1", f"p{n + 1}", 1000.0 + n, "phones") for n in range(2)]
>>> first = step(None, views[0], "v0", 0, 1000.0, StepConfig(policy=config))
>>> second = step(first.profile, views[1], "v0", 1, 1001.0, StepConfig(policy=config))
>>> trigger, profile = second.due[0], second.profile
>>> data = CandidateData(related={"p2": [("p3", 4.0), ("p1", 2.0)]},
...                      popular_by_category={"phones": [("p3", 10.0), ("p4", 9.0)]})
>>> decision = decide(trigger, profile, data, None, None, 1001.0, config)
>>> [item for item, _ in decision.items], decision.decision_id == trigger.decision_id
(['p3', 'p4'], True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from models.decision import Decision
from models.events import EventType
from models.policy import PolicyConfig, Trigger, TriggerKind
from models.profile import UNKNOWN_CATEGORY, Profile
from models.segments import Segment

_VERBS: Final = {EventType.VIEW: "viewed", EventType.CLICK: "clicked", EventType.BUY: "bought"}
#: The explanations of the popularity fallbacks (no related or category items).
POPULAR_NOW: Final = "popular right now"
POPULAR_LIKE_YOU: Final = "popular with shoppers like you in"
#: The explanation of a trigger's audit record when nothing was found.
NOTHING_TO_RECOMMEND: Final = "no related, category or popular items yet"


class Source(StrEnum):
    """Where a pushed item came from (its strongest contribution)."""

    RELATED = "related"
    CATEGORY = "category"
    SEGMENT = "segment"
    POPULAR = "popular"


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


def is_popularity_fallback(explanation: str) -> bool:
    """Whether a decision's explanation (:func:`_explain`) names only the fallbacks:
    popular lists, because the user's items had no related ones nor categories."""
    reasons = [part.rpartition(": ")[2] for part in explanation.split("; ")]
    return all(r == POPULAR_NOW or r.startswith(POPULAR_LIKE_YOU) for r in reasons)


def _decision(
    trigger: Trigger,
    items: tuple[tuple[str, float], ...],
    segment: int | None,
    explanation: str,
    now: float,
    expires_at: float,
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
