"""Push outcome schema (version 1) and a decoder that never raises.

Notification workers and apps report what became of a push on
``notifications.outcomes``, keyed by ``user_id`` (co-partitioned with the events): one
JSON object per message, ``schemas/outcome.v1.json``. This module is its executable
twin; the tests check that the two agree.

Delivery is at-least-once: the same (``decision_id``, ``kind``) may arrive more than
once, and the worker counts it once.

>>> outcome = decode_outcome(b'{"schema":1,"kind":"clicked","decision_id":"d-1",'
...                          b'"user_id":"u1","ts":1700000000.5}', now=1700000001.0)
>>> outcome.kind.value, outcome.decision_id
('clicked', 'd-1')
>>> decode_outcome(b'{"schema":1,"kind":"liked"}', now=0.0).reason
<RejectReason.UNKNOWN_OUTCOME: 'unknown_outcome'>
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson

from models.events import (
    DEFAULT_MAX_FUTURE_SKEW_S,
    FieldError,
    Rejection,
    RejectReason,
    identifier,
    optional_text,
    parse_object,
    required,
    timestamp,
)

SCHEMA_VERSION: Final = 1
#: A real outcome is ~150 bytes; the longest legal one (ids, reason, detail) is ~800.
DEFAULT_MAX_OUTCOME_BYTES: Final = 2048
#: ``reason`` is a short machine-readable code (``expired``, ``sender_error``...).
MAX_REASON_CHARS: Final = 64


class OutcomeKind(StrEnum):
    """What became of a push (a metric label). ``sent``/``failed`` come from the
    notification worker, ``opened``/``clicked``/``dismissed`` from the user's device."""

    SENT = "sent"
    FAILED = "failed"
    OPENED = "opened"
    CLICKED = "clicked"
    DISMISSED = "dismissed"


_KINDS: Final = {k.value: k for k in OutcomeKind}


@dataclass(frozen=True, slots=True)
class PushOutcome:
    kind: OutcomeKind
    decision_id: str
    user_id: str
    ts: float
    reason: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form (schema 1); optional fields are omitted when empty."""
        out: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "kind": self.kind.value,
            "decision_id": self.decision_id,
            "user_id": self.user_id,
            "ts": self.ts,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.detail is not None:
            out["detail"] = self.detail
        return out

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())


def decode_outcome(
    raw: bytes,
    *,
    now: float,
    max_bytes: int = DEFAULT_MAX_OUTCOME_BYTES,
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
) -> PushOutcome | Rejection:
    """Decode and validate one outcome message; return it or why it was rejected.

    ``now`` is the caller's clock, used only to reject timestamps too far ahead.
    """
    doc = parse_object(raw, max_bytes)
    if isinstance(doc, Rejection):
        return doc
    try:
        return _validate(doc, now, max_future_skew_s)
    except FieldError as exc:
        return exc.rejection


def _validate(doc: dict[str, Any], now: float, max_skew: float) -> PushOutcome:
    schema = required(doc, "schema", int)
    if schema != SCHEMA_VERSION:
        raise FieldError(RejectReason.UNSUPPORTED_SCHEMA, f"schema {schema!r} (supported: 1)")
    kind_name = required(doc, "kind", str)
    kind = _KINDS.get(kind_name)
    if kind is None:
        known = ", ".join(_KINDS)
        raise FieldError(
            RejectReason.UNKNOWN_OUTCOME, f"kind {kind_name[:40]!r} is not one of {known}"
        )
    reason = optional_text(doc, "reason")
    if reason is not None and not 1 <= len(reason) <= MAX_REASON_CHARS:
        raise FieldError(RejectReason.BAD_VALUE, f"reason must have 1..{MAX_REASON_CHARS} characters")
    return PushOutcome(
        kind=kind,
        decision_id=identifier(doc, "decision_id"),
        user_id=identifier(doc, "user_id"),
        ts=timestamp(doc, now, max_skew),
        reason=reason,
        detail=optional_text(doc, "detail"),
    )
