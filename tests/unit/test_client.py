"""The producer client: what it sends for an event, and what it refuses to send."""

from __future__ import annotations

import doctest
import subprocess
import sys
import uuid

import orjson
import pytest

import streams.client
from models.events import DEFAULT_MAX_FUTURE_SKEW_S, Event, EventType, RejectReason
from models.outcomes import OutcomeKind, PushOutcome, decode_outcome
from streams.client import EventProducer, InvalidEvent, MessageBuilder
from streams.topics import Topics
from tests.conftest import PROJECT_ROOT

NOW = 1_700_000_000.0
BUILDER = MessageBuilder(Topics("shop."))


def minimal(**fields: object) -> dict[str, object]:
    return {"type": "view", "user_id": "u-42", "item_id": "sku-1", **fields}


@pytest.mark.parametrize("event_type", list(EventType))
def test_each_event_goes_to_its_types_topic_under_the_prefix_keyed_by_user(
    event_type: EventType,
) -> None:
    message = BUILDER.build(minimal(type=event_type.value), now=NOW)
    assert message.topic == Topics("shop.").event(event_type)
    assert message.key == b"u-42"


def test_missing_event_id_and_ts_are_filled_with_a_uuid4_and_now() -> None:
    first = BUILDER.build(minimal(), now=NOW)
    second = BUILDER.build(minimal(), now=NOW)
    sent = orjson.loads(first.value)
    assert uuid.UUID(sent["event_id"]).version == 4
    assert first.event.event_id != second.event.event_id
    assert sent["ts"] == NOW and sent["schema"] == 1


def test_given_event_id_and_ts_are_kept() -> None:
    message = BUILDER.build(minimal(event_id="e-7", ts=NOW - 60.0), now=NOW)
    assert (message.event.event_id, message.event.ts) == ("e-7", NOW - 60.0)


def test_the_sent_bytes_carry_the_optional_fields_given() -> None:
    fields = minimal(type="buy", price=19.5, quantity=2, category="books", session_id="s-1", tz="Europe/Berlin")
    sent = orjson.loads(BUILDER.build(fields, now=NOW).value)
    assert {k: sent[k] for k in fields} == fields


def test_an_event_object_is_sent_in_its_wire_form() -> None:
    event = Event("e-1", EventType.CLICK, "u-1", "sku-9", NOW - 1.0, price=3.0)
    message = BUILDER.build(event, now=NOW)
    assert message.event == event
    assert orjson.loads(message.value) == event.to_dict()


@pytest.mark.parametrize(
    ("fields", "reason", "named"),
    [
        (minimal(user_id=None), RejectReason.MISSING_FIELD, "user_id"),
        ({"type": "view", "user_id": "u-1"}, RejectReason.MISSING_FIELD, "item_id"),
        (minimal(item_id=17), RejectReason.WRONG_TYPE, "item_id"),
        (minimal(item_id=""), RejectReason.BAD_VALUE, "item_id"),
        (minimal(price=-1.0), RejectReason.BAD_VALUE, "price"),
        (minimal(type="like"), RejectReason.UNKNOWN_EVENT_TYPE, "like"),
        (minimal(schema=2), RejectReason.UNSUPPORTED_SCHEMA, "schema"),
        (minimal(ts=NOW + DEFAULT_MAX_FUTURE_SKEW_S + 1), RejectReason.FUTURE_TIMESTAMP, "ts"),
        (minimal(ts=1.0), RejectReason.PAST_TIMESTAMP, "ts"),
        (minimal(category="c" * 5000), RejectReason.OVERSIZED, "bytes"),
        (minimal(price={1, 2}), RejectReason.WRONG_TYPE, "set"),
        (minimal(categroy="books"), "unknown_field", "categroy"),
    ],
)
def test_a_bad_event_raises_invalid_event_naming_the_reason_and_field(
    fields: dict[str, object], reason: str, named: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        BUILDER.build(fields, now=NOW)
    assert caught.value.reason == reason
    assert named in str(caught.value)


def test_the_limits_of_the_deployment_apply() -> None:
    strict = MessageBuilder(Topics(), max_event_bytes=300, max_future_skew_s=1.0)
    with pytest.raises(InvalidEvent, match="future_timestamp"):
        strict.build(minimal(ts=NOW + 2.0), now=NOW)
    with pytest.raises(InvalidEvent, match="oversized"):
        strict.build(minimal(category="c" * 250), now=NOW)


def test_durability_options_cannot_be_weakened() -> None:
    with pytest.raises(ValueError, match="acks"):
        EventProducer("127.0.0.1:9092", acks=1)


async def test_sending_before_start_is_an_error_not_a_silent_drop() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await EventProducer("127.0.0.1:9092").send(minimal())


def test_the_client_imports_without_faust() -> None:
    code = "import sys, streams.client; assert 'faust' not in sys.modules, 'faust imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_module_examples_run() -> None:
    assert doctest.testmod(streams.client).failed == 0


# --- push outcomes ---------------------------------------------------------------------


def test_an_outcome_gets_its_schema_and_time_and_goes_to_the_outcomes_topic_by_user() -> None:
    message = MessageBuilder(Topics("p.")).build_outcome(
        {"kind": "clicked", "decision_id": "d-1", "user_id": "u-9"}, now=NOW
    )
    assert message.topic == "p.notifications.outcomes" and message.key == b"u-9"
    assert orjson.loads(message.value) == {
        "kind": "clicked", "decision_id": "d-1", "user_id": "u-9", "schema": 1, "ts": NOW,
    }
    assert decode_outcome(message.value, now=NOW) == message.outcome


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        ({"kind": "liked", "decision_id": "d-1", "user_id": "u"}, "unknown_outcome"),
        ({"kind": "sent", "user_id": "u"}, "missing_field"),
        ({"kind": "sent", "decision_id": "d-1", "user_id": "u", "button": "x"}, "unknown_field"),
        ({"kind": "sent", "decision_id": "d-1", "user_id": "u", "ts": NOW + 3600}, "future_timestamp"),
    ],
)
def test_a_bad_outcome_raises_in_the_caller(outcome: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        MessageBuilder().build_outcome(outcome, now=NOW)
    assert raised.value.reason == reason


def test_a_push_outcome_object_is_sent_as_it_is() -> None:
    outcome = PushOutcome(OutcomeKind.DISMISSED, "d-1", "u-9", NOW - 1, detail="swiped")
    assert MessageBuilder().build_outcome(outcome, now=NOW).outcome == outcome
