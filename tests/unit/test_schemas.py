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

from models.candidates import is_popularity_fallback, without_candidates
from models.decision import AUDIT_SCHEMA_VERSION, Outcome
from models.events import EventType, Rejection, RejectReason
from models.outcomes import OutcomeKind, PushOutcome, decode_outcome
from models.policy import PolicyConfig, Trigger, TriggerKind
from models.routing import NO_CANDIDATES
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
#: The audit contract the worker writes now (older versions stay published for old records).
AUDIT = f"audit.v{AUDIT_SCHEMA_VERSION}.json"


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(SCHEMAS[name], registry=REGISTRY)


def test_the_contracts_of_this_release_are_all_published() -> None:
    published = {"event.v1.json", "dlq.v1.json", "decision.v1.json", "audit.v1.json", AUDIT, "outcome.v1.json"}
    assert published <= set(SCHEMAS)


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


@pytest.mark.parametrize("name", ["audit.v1.json", AUDIT])
def test_an_audit_record_is_a_decision_with_an_outcome_and_a_reason(name: str) -> None:
    version = int(name.split(".v")[1].removesuffix(".json"))
    decision = {**SCHEMAS["decision.v1.json"]["examples"][0], "schema": version}
    audit = validator(name)
    assert audit.is_valid({**decision, "outcome": "suppressed", "reason": "daily_cap"})
    assert not audit.is_valid(decision)
    assert not audit.is_valid({**decision, "outcome": "pushed", "reason": "daily_cap"})
    without_items = {k: v for k, v in decision.items() if k != "items"}
    assert not audit.is_valid({**without_items, "outcome": "suppressed", "reason": "daily_cap"})
    assert not audit.is_valid({**decision, "items": [], "outcome": "suppressed", "reason": "daily_cap"})
    assert audit.is_valid({**decision, "outcome": "holdout", "reason": "holdout"})
    assert not audit.is_valid({**decision, "outcome": "holdout", "reason": "daily_cap"})


TRIGGER = Trigger(TriggerKind.BROWSE_INTEREST, "u-1", "e-1", NOW, NOW, False, "sku-1", "phones")


def test_a_trigger_without_candidates_is_audited_with_no_items_and_its_own_reason() -> None:
    unfilled = without_candidates(TRIGGER, None, NOW + 1, PolicyConfig())
    assert unfilled is not None and unfilled.items == ()
    record = unfilled.to_audit_dict(Outcome.NO_CANDIDATES, NO_CANDIDATES)
    validator(AUDIT).validate(record)
    assert record["decision_id"] == TRIGGER.decision_id  # a replay audits the same id
    # Only that outcome may have no items, and it has items never and one reason only.
    assert not validator(AUDIT).is_valid({**record, "outcome": "suppressed", "reason": "daily_cap"})
    assert not validator(AUDIT).is_valid({**record, "reason": "daily_cap"})
    assert not validator(AUDIT).is_valid({**record, "items": [{"item_id": "sku-2", "score": 1.0}]})
    # Schema 1 readers never see it: the version says what changed.
    assert not validator("audit.v1.json").is_valid({**record, "schema": 1})


def test_an_expired_trigger_is_not_audited_as_without_candidates() -> None:
    config = PolicyConfig()
    assert without_candidates(TRIGGER, None, NOW + config.expiry_s, config) is None


@pytest.mark.parametrize(
    ("explanation", "fallback"),
    [
        ("a, b: popular right now", True),
        ("a: popular with shoppers like you in phones; b: popular with shoppers like you in audio", True),
        ("a: often seen with x, which you viewed", False),
        ("a: popular in phones, which you browsed", False),
        ("a: often seen with x, which you viewed; b: popular right now", False),
    ],
)
def test_a_popularity_fallback_is_told_by_its_explanation(explanation: str, fallback: bool) -> None:
    assert is_popularity_fallback(explanation) is fallback


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
    """Every JSON example of a decision, audit or outcome record in docs/TOPICS.md."""
    blocks = re.findall(r"```json\n(.*?)```", (PROJECT_ROOT / "docs" / "TOPICS.md").read_text(), re.S)
    records = [json.loads(block) for block in blocks]
    return [r for r in records if isinstance(r, dict) and "decision_id" in r]


def contract_of(record: dict[str, Any]) -> str:
    """The schema a documented record claims: outcomes have a kind, audits an outcome."""
    if "kind" in record:
        return "outcome.v1.json"
    return f"audit.v{record['schema']}.json" if "outcome" in record else "decision.v1.json"


def test_the_topics_document_shows_decisions_audit_records_and_outcomes() -> None:
    kinds = {contract_of(r) for r in documented_records()}
    assert kinds == {"decision.v1.json", AUDIT, "outcome.v1.json"}


@pytest.mark.parametrize(
    "record", documented_records(), ids=lambda r: f"{r['decision_id']}-{r.get('kind', '')}"
)
def test_every_documented_record_validates_against_its_schema(record: dict[str, Any]) -> None:
    validator(contract_of(record)).validate(record)


def test_the_decision_and_audit_enums_are_the_codes() -> None:
    """Examples and contracts name the triggers and outcomes the worker really emits."""
    trigger = SCHEMAS["decision.v1.json"]["properties"]["trigger"]["enum"]
    outcome = SCHEMAS[AUDIT]["properties"]["outcome"]["enum"]
    assert sorted(trigger) == sorted(kind.value for kind in TriggerKind)
    assert sorted(outcome) == sorted(o.value for o in Outcome)
    examples = SCHEMAS["decision.v1.json"]["examples"] + SCHEMAS[AUDIT]["examples"]
    assert {e["trigger"] for e in examples} == set(trigger), "an example of every trigger"
    assert {e["outcome"] for e in SCHEMAS[AUDIT]["examples"]} == set(outcome), "and of every outcome"


# --- push outcomes ---------------------------------------------------------------------


def outcome_examples() -> list[dict[str, Any]]:
    documented = [r for r in documented_records() if contract_of(r) == "outcome.v1.json"]
    return [*SCHEMAS["outcome.v1.json"]["examples"], *documented]


def test_the_outcome_contract_lists_the_kinds_the_code_knows() -> None:
    schema = SCHEMAS["outcome.v1.json"]
    assert schema["properties"]["kind"]["enum"] == [k.value for k in OutcomeKind]
    assert set(schema["properties"]) == {"schema", *PushOutcome.__dataclass_fields__}
    assert {e["kind"] for e in schema["examples"]} >= {"sent", "failed", "clicked"}


@pytest.mark.parametrize("example", outcome_examples(), ids=lambda e: f"{e['decision_id']}-{e['kind']}")
def test_every_outcome_example_is_accepted_by_the_worker_and_round_trips(example: dict[str, Any]) -> None:
    # The examples' clock: the failed one is reported after its decision expired.
    decoded = decode_outcome(orjson.dumps(example), now=NOW + 3600)
    assert isinstance(decoded, PushOutcome), decoded
    assert decoded.to_dict() == example


@given(
    kind=st.sampled_from(OutcomeKind),
    ids=st.tuples(st.text(min_size=1, max_size=128), st.text(min_size=1, max_size=128)),
    ts=st.floats(946_684_800, NOW),
    reason=st.none() | st.text(min_size=1, max_size=64),
    detail=st.none() | st.text(max_size=256),
)
def test_every_outcome_the_worker_accepts_validates_against_the_contract(
    kind: OutcomeKind, ids: tuple[str, str], ts: float, reason: str | None, detail: str | None
) -> None:
    outcome = PushOutcome(kind, ids[0], ids[1], ts, reason, detail)
    assert decode_outcome(outcome.to_bytes(), now=NOW) == outcome
    validator("outcome.v1.json").validate(outcome.to_dict())


@pytest.mark.parametrize(
    "change",
    [{"kind": "liked"}, {"decision_id": ""}, {"user_id": None}, {"ts": "now"}, {"reason": ""}],
)
def test_a_malformed_outcome_breaks_the_contract_and_the_decoder(change: dict[str, Any]) -> None:
    example = {**SCHEMAS["outcome.v1.json"]["examples"][0], **change}
    assert not validator("outcome.v1.json").is_valid(example)
    assert isinstance(decode_outcome(orjson.dumps(example), now=NOW), Rejection)
