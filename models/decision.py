"""A push decision: what to send whom and why, in its wire forms.

One record for every path: :func:`models.candidates.decide` makes it, the rate limits
check it (:meth:`Decision.limit_request`), :func:`models.routing.route` says what
becomes of it, and it is published in the decision schema (``schemas/decision.v1.json``)
or, when not pushed, in the audit schema (``schemas/audit.v2.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from models.limits import LimitRequest
from models.policy import TriggerKind

SCHEMA_VERSION: Final = 1
#: ``schemas/audit.v2.json``: schema 2 added the outcome ``no_candidates`` (empty items).
AUDIT_SCHEMA_VERSION: Final = 2


class Outcome(StrEnum):
    """What became of a decision that was not pushed (the audit topic's ``outcome``)."""

    SUPPRESSED = "suppressed"
    HOLDOUT = "holdout"
    DEFERRED = "deferred"
    #: A trigger that found nothing to recommend (cold start): audited with no items.
    NO_CANDIDATES = "no_candidates"


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
    #: (item id, :class:`~models.candidates.Source`) of each item, for learning in
    #: process; not part of the topic contract (``to_dict`` leaves it out).
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
        return {
            **self.to_dict(),
            "schema": AUDIT_SCHEMA_VERSION,
            "outcome": outcome.value,
            "reason": reason,
        }

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
