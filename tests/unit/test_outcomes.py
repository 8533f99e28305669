"""The outcome decoder: every input is either a valid PushOutcome or a Rejection with a reason."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.events import DEFAULT_MAX_FUTURE_SKEW_S, Rejection, RejectReason
from models.outcomes import (
    DEFAULT_MAX_OUTCOME_BYTES,
    OutcomeKind,
    PushOutcome,
    decode_outcome,
)

NOW = 1_700_000_000.0


def valid_doc(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schema": 1, "kind": "clicked", "decision_id": "d-1", "user_id": "u-1", "ts": NOW - 5,
    }
    doc.update(overrides)
    return doc


def decode(doc: object) -> PushOutcome | Rejection:
    return decode_outcome(orjson.dumps(doc), now=NOW)


def test_a_valid_outcome_round_trips() -> None:
    outcome = decode(valid_doc(kind="failed", reason="expired", detail="too late"))
    assert outcome == PushOutcome(OutcomeKind.FAILED, "d-1", "u-1", NOW - 5, "expired", "too late")
    assert decode_outcome(outcome.to_bytes(), now=NOW) == outcome


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert isinstance(decode(valid_doc(device="ios")), PushOutcome)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", RejectReason.BAD_JSON),
        (b"", RejectReason.BAD_JSON),
        (b'{"kind": "sent", "user_id": "caf\xe9"}', RejectReason.NOT_UTF8),
        (b'["sent"]', RejectReason.NOT_OBJECT),
        (b" " * (DEFAULT_MAX_OUTCOME_BYTES + 1), RejectReason.OVERSIZED),
    ],
)
def test_bytes_that_are_not_an_outcome_object_are_rejected(raw: bytes, reason: RejectReason) -> None:
    result = decode_outcome(raw, now=NOW)
    assert isinstance(result, Rejection) and result.reason is reason and result.detail


@pytest.mark.parametrize(
    ("overrides", "reason", "named"),
    [
        ({"schema": 2}, RejectReason.UNSUPPORTED_SCHEMA, "schema"),
        ({"kind": "liked"}, RejectReason.UNKNOWN_OUTCOME, "liked"),
        ({"kind": None}, RejectReason.MISSING_FIELD, "kind"),
        ({"decision_id": None}, RejectReason.MISSING_FIELD, "decision_id"),
        ({"decision_id": 7}, RejectReason.WRONG_TYPE, "decision_id"),
        ({"user_id": ""}, RejectReason.BAD_VALUE, "user_id"),
        ({"user_id": "u" * 129}, RejectReason.BAD_VALUE, "user_id"),
        ({"ts": None}, RejectReason.MISSING_FIELD, "ts"),
        ({"ts": True}, RejectReason.WRONG_TYPE, "ts"),
        ({"ts": NOW + DEFAULT_MAX_FUTURE_SKEW_S + 60}, RejectReason.FUTURE_TIMESTAMP, "ahead"),
        ({"ts": 1.0}, RejectReason.PAST_TIMESTAMP, "2000"),
        ({"reason": ""}, RejectReason.BAD_VALUE, "reason"),
        ({"reason": "r" * 65}, RejectReason.BAD_VALUE, "reason"),
        ({"detail": "d" * 257}, RejectReason.BAD_VALUE, "detail"),
    ],
)
def test_each_broken_field_is_rejected_with_its_reason_naming_it(
    overrides: dict[str, Any], reason: RejectReason, named: str
) -> None:
    result = decode(valid_doc(**overrides))
    assert isinstance(result, Rejection)
    assert result.reason is reason and named in result.detail


def test_an_unknown_kind_is_explained_with_the_kinds_that_exist() -> None:
    result = decode(valid_doc(kind="read"))
    assert isinstance(result, Rejection)
    assert all(kind.value in result.detail for kind in OutcomeKind)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@given(st.binary(max_size=3000))
@settings(max_examples=300)
def test_any_bytes_decode_to_an_outcome_or_a_rejection(raw: bytes) -> None:
    result = decode_outcome(raw, now=NOW)
    assert isinstance(result, PushOutcome | Rejection)


@given(st.dictionaries(st.sampled_from(list(valid_doc())), json_values, max_size=6))
@settings(max_examples=500)
def test_any_object_is_decoded_exactly_when_it_keeps_the_contract(doc: dict[str, Any]) -> None:
    # The standard library writes what orjson refuses to (huge integers, NaN).
    result = decode_outcome(json.dumps(doc).encode(), now=NOW)
    if isinstance(result, PushOutcome):
        assert result.to_dict() == {k: v for k, v in doc.items() if v is not None} | {"ts": float(doc["ts"])}
    else:
        assert result.reason in RejectReason and result.detail


@given(kind=st.sampled_from(OutcomeKind), skew=st.floats(0, DEFAULT_MAX_FUTURE_SKEW_S))
def test_a_timestamp_within_the_allowed_skew_is_accepted(kind: OutcomeKind, skew: float) -> None:
    assert isinstance(decode(valid_doc(kind=kind.value, ts=NOW + skew)), PushOutcome)
