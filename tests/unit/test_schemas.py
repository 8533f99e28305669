"""The published JSON Schemas: valid, self-consistent, and true to what the code writes."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource

from models.decision import Outcome
from models.events import EventType, Rejection, RejectReason
from models.policy import TriggerKind
from streams.client import InvalidEvent, MessageBuilder
from streams.codecs import dlq_record
from streams.notify import parse_decision
from streams.topics import DAY_MS, Topics, TopicSpec
from tests.conftest import PROJECT_ROOT

SCHEMA_DIR = PROJECT_ROOT / "schemas"
SCHEMAS: dict[str, dict[str, Any]] = {
    path.name: json.loads(path.read_text()) for path in sorted(SCHEMA_DIR.glob("*.json"))
}
# Schemas refer to each other by relative $ref (audit -> decision), resolved against $id.
REGISTRY: Registry[Any] = Registry().with_resources(
    (doc["$id"], Resource.from_contents(doc)) for doc in SCHEMAS.values()
)
NOW = 1_700_000_000.0


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(SCHEMAS[name], registry=REGISTRY)


def test_the_contracts_of_this_release_are_all_published() -> None:
    assert {"event.v1.json", "dlq.v1.json", "decision.v1.json", "audit.v1.json"} <= set(SCHEMAS)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_each_schema_is_a_valid_draft_2020_12_schema_named_after_its_file(name: str) -> None:
    schema = SCHEMAS[name]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith("/" + name)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_each_schema_is_versioned_by_a_schema_const_matching_its_file(name: str) -> None:
    version = int(name.rsplit(".v", 1)[1].removesuffix(".json"))
    for example in SCHEMAS[name]["examples"]:
        assert example["schema"] == version
        assert not validator(name).is_valid({**example, "schema": version + 1})


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_each_schema_has_examples_and_they_validate(name: str) -> None:
    examples = SCHEMAS[name]["examples"]
    assert examples
    for example in examples:
        validator(name).validate(example)


# --- dead letters ----------------------------------------------------------------------


def test_the_dlq_schema_lists_exactly_the_fields_and_reasons_the_worker_writes() -> None:
    record = orjson.loads(
        dlq_record(Rejection(RejectReason.BAD_JSON, "x"), value=b"{", key=b"u", topic="t",
                   partition=0, offset=0, rejected_at=NOW)
    )
    schema = SCHEMAS["dlq.v1.json"]
    assert set(schema["required"]) == set(schema["properties"]) == set(record)
    assert set(schema["properties"]["reason"]["enum"]) == {r.value for r in RejectReason}


@given(
    reason=st.sampled_from(RejectReason),
    detail=st.text(max_size=200),
    key=st.none() | st.binary(max_size=64),
    value=st.none() | st.binary(max_size=512),
    partition=st.integers(0, 1023),
    offset=st.integers(0, 2**62),
)
@settings(max_examples=200)
def test_every_dead_letter_record_validates_and_keeps_the_original_bytes(
    reason: RejectReason, detail: str, key: bytes | None, value: bytes | None, partition: int,
    offset: int,
) -> None:
    record = orjson.loads(
        dlq_record(Rejection(reason, detail), value=value, key=key, topic="events.view",
                   partition=partition, offset=offset, rejected_at=NOW)
    )
    validator("dlq.v1.json").validate(record)
    assert _unbase64(record["key_b64"]) == key
    assert _unbase64(record["value_b64"]) == value


def _unbase64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


# --- decisions and audit records -------------------------------------------------------


def test_the_notification_worker_can_act_on_every_decision_example() -> None:
    for example in SCHEMAS["decision.v1.json"]["examples"]:
        assert parse_decision(orjson.dumps(example)) is not None


@pytest.mark.parametrize(
    "change",
    [
        {"items": []},
        {"items": [{"item_id": "sku-1"}]},
        {"segment": "3"},
        {"decision_id": ""},
        {"expires_at": "tomorrow"},
        {"transactional": "yes"},
    ],
)
def test_a_malformed_decision_is_invalid(change: dict[str, Any]) -> None:
    example = SCHEMAS["decision.v1.json"]["examples"][0]
    assert not validator("decision.v1.json").is_valid({**example, **change})


def test_an_audit_record_is_a_decision_with_an_outcome_and_a_reason() -> None:
    decision = SCHEMAS["decision.v1.json"]["examples"][0]
    audit = validator("audit.v1.json")
    assert audit.is_valid({**decision, "outcome": "suppressed", "reason": "daily_cap"})
    assert not audit.is_valid(decision)
    assert not audit.is_valid({**decision, "outcome": "pushed", "reason": "daily_cap"})
    without_items = {k: v for k, v in decision.items() if k != "items"}
    assert not audit.is_valid({**without_items, "outcome": "suppressed", "reason": "daily_cap"})


def test_a_holdout_record_has_the_reason_holdout() -> None:
    decision = SCHEMAS["decision.v1.json"]["examples"][0]
    audit = validator("audit.v1.json")
    assert audit.is_valid({**decision, "outcome": "holdout", "reason": "holdout"})
    assert not audit.is_valid({**decision, "outcome": "holdout", "reason": "daily_cap"})


# --- what the producer client sends ----------------------------------------------------



def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values three times in four: enough events pass to test what is sent."""
    return st.integers(0, 3).flatmap(lambda i: bad if i == 3 else good)


identifiers = mostly(st.text(min_size=1, max_size=128), st.just("") | st.text(min_size=129, max_size=140))
texts = mostly(st.none() | st.text(max_size=256), st.text(min_size=257, max_size=300))
any_number = st.none() | st.floats() | st.integers(-5, 10**12) | st.booleans() | st.text(max_size=3)
producer_input = st.fixed_dictionaries(
    {
        "type": mostly(st.sampled_from([t.value for t in EventType]), st.text(max_size=6)),
        "user_id": identifiers,
        "item_id": identifiers,
    },
    optional={
        "event_id": st.none() | identifiers,
        "ts": mostly(st.none() | st.floats(NOW - 10**9, NOW + 10**3), any_number),
        "category": texts,
        "price": mostly(st.none() | st.floats(0, 10**6) | st.integers(0, 10**6), any_number),
        "quantity": mostly(st.none() | st.integers(1, 100), any_number),
        "session_id": texts,
        "tz": texts,
        "schema": mostly(st.just(1), st.sampled_from([2, None, "1", True])),
    },
)


@given(producer_input)
@settings(max_examples=500)
def test_every_event_the_producer_would_send_validates_against_the_event_schema(
    fields: dict[str, Any],
) -> None:
    try:
        message = MessageBuilder(Topics("p.")).build(fields, now=NOW)
    except InvalidEvent:
        return
    sent = orjson.loads(message.value)
    validator("event.v1.json").validate(sent)
    assert message.topic == f"p.events.{sent['type']}"
    assert message.key == sent["user_id"].encode()


def test_every_published_schema_is_linked_from_the_topics_document() -> None:
    topics_doc = (PROJECT_ROOT / "docs" / "TOPICS.md").read_text()
    for name in SCHEMAS:
        assert f"../schemas/{name}" in topics_doc, name


def _summary_rows() -> dict[str, list[str]]:
    """Topic name -> cells of the summary table in docs/TOPICS.md."""
    rows = {}
    for line in (PROJECT_ROOT / "docs" / "TOPICS.md").read_text().splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    return rows


def _documented(spec: TopicSpec) -> tuple[str, str, str]:
    partitions = "app" if spec.partitions is None else str(spec.partitions)
    if spec.retention_ms is None:
        retention = "latest per key"
    else:
        days = spec.retention_ms / DAY_MS
        retention = f"{days:g} day" + ("s" if days != 1 else "")
    return partitions, retention, "compact" if spec.compacted else "delete"


def test_the_topics_document_states_the_partitions_retention_and_cleanup_really_used() -> None:
    rows = _summary_rows()
    for spec in Topics().specs():
        assert spec.name in rows, f"{spec.name} is missing from docs/TOPICS.md"
        assert tuple(rows[spec.name][3:6]) == _documented(spec), spec.name
    for table in ("profiles", "cooc"):
        assert rows[f"<app_id>-{table}-changelog"][3:6] == ["app", "latest per key", "compact"]


def documented_records() -> list[dict[str, Any]]:
    """Every JSON example of a decision or audit record in docs/TOPICS.md."""
    blocks = re.findall(r"```json\n(.*?)```", (PROJECT_ROOT / "docs" / "TOPICS.md").read_text(), re.S)
    records = [json.loads(block) for block in blocks]
    return [r for r in records if isinstance(r, dict) and "decision_id" in r]


def test_the_topics_document_shows_decisions_and_audit_records() -> None:
    kinds = {"audit" if "outcome" in r else "decision" for r in documented_records()}
    assert kinds == {"decision", "audit"}


@pytest.mark.parametrize("record", documented_records(), ids=lambda r: str(r["decision_id"]))
def test_every_documented_record_validates_against_its_schema(record: dict[str, Any]) -> None:
    validator("audit.v1.json" if "outcome" in record else "decision.v1.json").validate(record)


def test_the_decision_and_audit_enums_are_the_codes() -> None:
    """Examples and contracts name the triggers and outcomes the worker really emits."""
    trigger = SCHEMAS["decision.v1.json"]["properties"]["trigger"]["enum"]
    outcome = SCHEMAS["audit.v1.json"]["properties"]["outcome"]["enum"]
    assert sorted(trigger) == sorted(kind.value for kind in TriggerKind)
    assert sorted(outcome) == sorted(o.value for o in Outcome)
    examples = SCHEMAS["decision.v1.json"]["examples"] + SCHEMAS["audit.v1.json"]["examples"]
    assert {e["trigger"] for e in examples} == set(trigger), "an example of every trigger"
