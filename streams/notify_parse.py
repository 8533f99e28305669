"""A push decision as the notification worker reads it: the few fields it acts on.

A record that is not JSON, or lacks a non-empty ``decision_id`` or finite ``decided_at``
and ``expires_at``, is not a decision (None); the rest of the record goes to the sender
unchanged (``schemas/decision.v1.json``).

>>> parse_decision(b'{"decision_id": "d1", "decided_at": 10, "expires_at": 70.5}')
ReceivedPush(decision_id='d1', decided_at=10.0, expires_at=70.5, doc={'decision_id': 'd1', 'decided_at': 10, 'expires_at': 70.5})
>>> parse_decision(b'{"decision_id": "d1", "decided_at": NaN}') is None
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ReceivedPush:
    """The fields this worker acts on, and the whole decoded record for the sender."""

    decision_id: str
    decided_at: float
    expires_at: float
    doc: dict[str, Any]


def parse_decision(raw: bytes | None) -> ReceivedPush | None:
    """The decision in a record's value, or None if it lacks what this worker needs."""
    try:
        doc = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    decision_id = doc.get("decision_id")
    decided_at = _finite_number(doc.get("decided_at"))
    expires_at = _finite_number(doc.get("expires_at"))
    if not isinstance(decision_id, str) or not decision_id:
        return None
    if decided_at is None or expires_at is None:
        return None
    return ReceivedPush(decision_id, decided_at, expires_at, doc)


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
