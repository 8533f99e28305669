"""Event schema (version 1) and a decoder that never raises.

Upstream services send one JSON object per Kafka message on ``events.view``,
``events.click`` or ``events.buy``, keyed by ``user_id``. The published contract is
``schemas/event.v1.json``; this module is its executable twin and the tests check
that the two agree.

:func:`decode_event` turns *any* bytes into either an :class:`Event` or a
:class:`Rejection` carrying a machine-readable :class:`RejectReason`, so the ingest
agent can route every bad message to the dead-letter topic instead of crashing.

>>> ev = decode_event(b'{"schema":1,"event_id":"e1","type":"view","user_id":"u1",'
...                   b'"item_id":"i9","ts":1700000000.5}', now=1700000001.0)
>>> ev.type.value, ev.user_id, ev.item_id
('view', 'u1', 'i9')
>>> decode_event(b'{"schema":1}', now=0.0).reason
<RejectReason.MISSING_FIELD: 'missing_field'>
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson

SCHEMA_VERSION: Final = 1
#: Larger messages are rejected before parsing: a real event is ~200 bytes.
DEFAULT_MAX_EVENT_BYTES: Final = 4096
#: Producers' clocks drift; beyond this an event time is treated as a bug upstream.
DEFAULT_MAX_FUTURE_SKEW_S: Final = 300.0
#: Identifiers longer than this are rejected (they bloat state and metrics).
MAX_ID_CHARS: Final = 128
MAX_TEXT_CHARS: Final = 256
#: 2000-01-01: anything earlier is a corrupt timestamp, not a late event.
MIN_TS: Final = 946_684_800.0


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    BUY = "buy"


class RejectReason(StrEnum):
    """Why a message was sent to the dead-letter topic (a bounded label set)."""

    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    BAD_JSON = "bad_json"
    NOT_OBJECT = "not_object"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_VALUE = "bad_value"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    TOPIC_MISMATCH = "topic_mismatch"
    FUTURE_TIMESTAMP = "future_timestamp"
    PAST_TIMESTAMP = "past_timestamp"
    #: Push outcomes (``models.outcomes``): a kind not in the contract, and a decision
    #: id the worker never issued to that user (or no longer remembers).
    UNKNOWN_OUTCOME = "unknown_outcome"
    UNKNOWN_DECISION = "unknown_decision"


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    type: EventType
    user_id: str
    item_id: str
    ts: float
    category: str | None = None
    price: float | None = None
    session_id: str | None = None
    quantity: int | None = None
    #: IANA time-zone name of the user, when the upstream service knows it.
    tz: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form (schema 1); optional fields are omitted when empty."""
        out: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "event_id": self.event_id,
            "type": self.type.value,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "ts": self.ts,
        }
        for name in ("category", "price", "session_id", "quantity", "tz"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str


class FieldError(Exception):
    """A field breaks the contract; decoders turn it into their :class:`Rejection`."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


_TYPES: Final = {t.value: t for t in EventType}


def decode_event(
    raw: bytes,
    *,
    now: float,
    expected_type: EventType | None = None,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
) -> Event | Rejection:
    """Decode and validate one message; return the event or why it was rejected.

    ``now`` is the caller's clock (wall time in a worker, event time in a replay), used
    only to reject timestamps too far in the future. ``expected_type`` is the type the
    source topic carries, if any.
    """
    doc = parse_object(raw, max_bytes)
    if isinstance(doc, Rejection):
        return doc
    try:
        return _validate(doc, now, expected_type, max_future_skew_s)
    except FieldError as exc:
        return exc.rejection


def parse_object(raw: bytes, max_bytes: int) -> dict[str, Any] | Rejection:
    """The JSON object in ``raw``, or why it is none (shared by every decoder of a contract)."""
    if len(raw) > max_bytes:
        return Rejection(RejectReason.OVERSIZED, f"{len(raw)} bytes > {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc):
            return Rejection(RejectReason.NOT_UTF8, _utf8_problem(raw, str(exc)))
        return Rejection(RejectReason.BAD_JSON, str(exc)[:200])
    if not isinstance(doc, dict):
        return Rejection(RejectReason.NOT_OBJECT, f"top level is {type(doc).__name__}")
    return doc


def _utf8_problem(raw: bytes, decoder_message: str) -> str:
    """Where and why ``raw`` is not UTF-8, in a producer's developer's words (orjson's
    own message names a "surrogate" at "line 1 column 1" whatever the bad byte is).

    >>> _utf8_problem(b'{"user_id": "caf\\xe9"}', "")
    'the message is not UTF-8 text: byte 0xe9 at offset 16 (invalid continuation byte); encode it as UTF-8'
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"the message is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            f"({exc.reason}); encode it as UTF-8"
        )
    return f"the message is not UTF-8 text ({decoder_message[:160]}); encode it as UTF-8"


def _validate(
    doc: dict[str, Any], now: float, expected: EventType | None, max_skew: float
) -> Event:
    schema = required(doc, "schema", int)
    if schema != SCHEMA_VERSION:
        raise FieldError(RejectReason.UNSUPPORTED_SCHEMA, f"schema {schema!r} (supported: 1)")
    type_name = required(doc, "type", str)
    event_type = _TYPES.get(type_name)
    if event_type is None:
        raise FieldError(RejectReason.UNKNOWN_EVENT_TYPE, f"type {type_name[:40]!r}")
    if expected is not None and event_type is not expected:
        raise FieldError(RejectReason.TOPIC_MISMATCH, f"{type_name} event on the {expected} topic")
    ts = timestamp(doc, now, max_skew)
    price = _optional_number(doc, "price")
    quantity = _optional(doc, "quantity", int)
    if quantity is not None and quantity < 1:
        raise FieldError(RejectReason.BAD_VALUE, "quantity must be >= 1")
    return Event(
        event_id=identifier(doc, "event_id"),
        type=event_type,
        user_id=identifier(doc, "user_id"),
        item_id=identifier(doc, "item_id"),
        ts=ts,
        category=optional_text(doc, "category"),
        price=price,
        session_id=optional_text(doc, "session_id"),
        quantity=quantity,
        tz=optional_text(doc, "tz"),
    )


def required(doc: dict[str, Any], name: str, kind: type) -> Any:
    if name not in doc or doc[name] is None:
        raise FieldError(RejectReason.MISSING_FIELD, f"missing {name}")
    value = doc[name]
    # bool is an int subclass in Python but not a number in JSON Schema.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FieldError(RejectReason.WRONG_TYPE, f"{name} must be {kind.__name__}")
    return value


def _optional(doc: dict[str, Any], name: str, kind: type) -> Any:
    if doc.get(name) is None:
        return None
    return required(doc, name, kind)


def identifier(doc: dict[str, Any], name: str) -> str:
    value: str = required(doc, name, str)
    if not value or len(value) > MAX_ID_CHARS:
        raise FieldError(RejectReason.BAD_VALUE, f"{name} must have 1..{MAX_ID_CHARS} characters")
    return value


def optional_text(doc: dict[str, Any], name: str) -> str | None:
    value: str | None = _optional(doc, name, str)
    if value is not None and len(value) > MAX_TEXT_CHARS:
        raise FieldError(RejectReason.BAD_VALUE, f"{name} longer than {MAX_TEXT_CHARS} characters")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(RejectReason.WRONG_TYPE, f"{name} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise FieldError(RejectReason.BAD_VALUE, f"{name} must be finite")
    return number


def _optional_number(doc: dict[str, Any], name: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    number = _number(value, name)
    if number < 0:
        raise FieldError(RejectReason.BAD_VALUE, f"{name} must be >= 0")
    return number


def timestamp(doc: dict[str, Any], now: float, max_skew: float) -> float:
    if doc.get("ts") is None:
        raise FieldError(RejectReason.MISSING_FIELD, "missing ts")
    ts = _number(doc["ts"], "ts")
    if ts > now + max_skew:
        raise FieldError(RejectReason.FUTURE_TIMESTAMP, f"ts {ts:.0f} is {ts - now:.0f}s ahead")
    if ts < MIN_TS:
        raise FieldError(RejectReason.PAST_TIMESTAMP, f"ts {ts:.0f} is before 2000-01-01")
    return ts
