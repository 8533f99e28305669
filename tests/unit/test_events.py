"""The event decoder: every input is either a valid Event or a Rejection with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.events import (
    DEFAULT_MAX_FUTURE_SKEW_S,
    Event,
    EventType,
    Rejection,
    RejectReason,
    decode_event,
)

NOW = 1_700_000_000.0
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "event.v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def valid_doc(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schema": 1, "event_id": "e-1", "type": "view", "user_id": "u-1", "item_id": "i-1",
        "ts": NOW - 5, "category": "electronics.smartphone", "price": 99.5, "session_id": "s",
    }
    doc.update(overrides)
    return doc


def decode(doc: object, **kwargs: object) -> Event | Rejection:
    return decode_event(orjson.dumps(doc), now=NOW, **kwargs)  # type: ignore[arg-type]


def test_a_valid_event_round_trips() -> None:
    event = decode(valid_doc(type="buy", quantity=2, tz="Europe/Berlin"))
    assert isinstance(event, Event)
    assert event.type is EventType.BUY and event.quantity == 2 and event.tz == "Europe/Berlin"
    assert decode_event(event.to_bytes(), now=NOW) == event


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", RejectReason.BAD_JSON),
        (b"", RejectReason.BAD_JSON),
        (b'{"a": "\xff"}', RejectReason.NOT_UTF8),
        (b"[1]", RejectReason.NOT_OBJECT),
        (b"[" * 5000 + b"]" * 5000, RejectReason.OVERSIZED),
        (b" " * 5000, RejectReason.OVERSIZED),
    ],
)
def test_bytes_that_are_not_an_event_object_are_rejected(raw: bytes, reason: RejectReason) -> None:
    result = decode_event(raw, now=NOW)
    assert isinstance(result, Rejection) and result.reason is reason and result.detail


def test_text_that_is_not_utf8_is_rejected_naming_the_byte_and_its_offset() -> None:
    result = decode_event(b'{"user_id": "caf\xe9 au lait"}', now=NOW)
    assert isinstance(result, Rejection) and result.reason is RejectReason.NOT_UTF8
    assert "byte 0xe9 at offset 16" in result.detail and "UTF-8" in result.detail
    assert "surrogate" not in result.detail and "line 1 column" not in result.detail


def test_deeply_nested_json_is_rejected_without_recursion_errors() -> None:
    raw = b'{"x":' * 2000 + b"1" + b"}" * 2000
    result = decode_event(raw, now=NOW, max_bytes=1 << 20)
    assert isinstance(result, Rejection) and result.reason is RejectReason.BAD_JSON


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"schema": 2}, RejectReason.UNSUPPORTED_SCHEMA),
        ({"schema": None}, RejectReason.MISSING_FIELD),
        ({"user_id": None}, RejectReason.MISSING_FIELD),
        ({"ts": None}, RejectReason.MISSING_FIELD),
        ({"user_id": 42}, RejectReason.WRONG_TYPE),
        ({"ts": "yesterday"}, RejectReason.WRONG_TYPE),
        ({"ts": True}, RejectReason.WRONG_TYPE),
        ({"price": "cheap"}, RejectReason.WRONG_TYPE),
        ({"quantity": 1.5}, RejectReason.WRONG_TYPE),
        ({"type": "like"}, RejectReason.UNKNOWN_EVENT_TYPE),
        ({"item_id": ""}, RejectReason.BAD_VALUE),
        ({"item_id": "x" * 129}, RejectReason.BAD_VALUE),
        ({"price": -1}, RejectReason.BAD_VALUE),
        ({"quantity": 0}, RejectReason.BAD_VALUE),
        ({"category": "c" * 257}, RejectReason.BAD_VALUE),
        ({"ts": NOW + DEFAULT_MAX_FUTURE_SKEW_S + 1}, RejectReason.FUTURE_TIMESTAMP),
        ({"ts": 12.0}, RejectReason.PAST_TIMESTAMP),
    ],
)
def test_each_schema_violation_has_its_reason(overrides: dict[str, object], reason: RejectReason) -> None:
    doc = valid_doc(**overrides)
    if overrides.get("schema", 1) is None or any(v is None for v in overrides.values()):
        doc = {k: v for k, v in doc.items() if v is not None}
    result = decode(doc)
    assert isinstance(result, Rejection), result
    assert result.reason is reason


def test_an_event_on_another_types_topic_is_rejected() -> None:
    result = decode(valid_doc(type="buy"), expected_type=EventType.VIEW)
    assert isinstance(result, Rejection) and result.reason is RejectReason.TOPIC_MISMATCH


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert isinstance(decode(valid_doc(referrer="newsletter")), Event)


@given(st.binary(max_size=600))
@settings(max_examples=400)
def test_any_bytes_give_an_event_or_a_reason_never_an_exception(raw: bytes) -> None:
    result = decode_event(raw, now=NOW)
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert isinstance(result.reason, RejectReason)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
field_values = st.one_of(json_values, st.sampled_from(["view", "click", "buy", "u", "", NOW, 1, None]))


@given(st.dictionaries(st.sampled_from([*list(valid_doc()), "quantity", "tz"]), field_values))
@settings(max_examples=500)
def test_the_decoder_and_the_published_json_schema_agree(doc: dict[str, object]) -> None:
    """Whatever the decoder accepts validates against schemas/event.v1.json, and vice versa
    (apart from the clock-dependent future-timestamp rule, which a schema cannot express)."""
    result = decode(doc)
    schema_ok = VALIDATOR.is_valid(doc)
    if isinstance(result, Event):
        assert schema_ok, doc
    elif result.reason is not RejectReason.FUTURE_TIMESTAMP:
        assert not schema_ok, (doc, result)


@given(st.builds(valid_doc, ts=st.floats(min_value=946_684_800, max_value=NOW)))
def test_generated_valid_events_are_accepted(doc: dict[str, object]) -> None:
    assert isinstance(decode(doc), Event)
