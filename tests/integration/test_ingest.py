"""Events in from real Kafka: profiles kept in the changelog, every bad event dead-lettered."""

from __future__ import annotations

import base64
import json
import time

import jsonschema
import pytest

from models.events import Event, EventType
from models.profile import Profile
from tests.conftest import PROJECT_ROOT
from tests.integration.conftest import (
    Deployment,
    decode_json,
    latest_values,
    produce,
    read_topic,
)

pytestmark = pytest.mark.integration


def _event(n: int, user: str, kind: EventType, item: str, ts: float, **extra: object) -> Event:
    return Event(f"{user}-e{n}", kind, user, item, ts, **extra)  # type: ignore[arg-type]


async def test_valid_events_build_profiles_and_bad_events_reach_the_dlq(
    deployment: Deployment,
) -> None:
    worker = deployment.start_worker()
    worker.wait_ready()
    topics = deployment.settings.topics
    bootstrap = deployment.env["NUDGESTREAM_KAFKA_BOOTSTRAP"]
    now = time.time()

    valid = [
        _event(1, "alice", EventType.VIEW, "phone-1", now - 30, category="electronics.smartphone", price=300.0),
        _event(2, "alice", EventType.CLICK, "phone-1", now - 20, category="electronics.smartphone", price=300.0),
        _event(3, "alice", EventType.BUY, "phone-1", now - 10, category="electronics.smartphone", price=300.0, quantity=1),
        _event(1, "bob", EventType.VIEW, "kettle-7", now - 5, category="appliances.kitchen"),
    ]
    messages: list[tuple[str, bytes | None, bytes | None]] = [
        (topics.event(e.type), e.user_id.encode(), e.to_bytes()) for e in valid
    ]
    # The same event again (a producer retry): processed once.
    messages.append((topics.event(EventType.VIEW), b"bob", valid[3].to_bytes()))
    # A valid event with the wrong key is re-keyed, not processed on the wrong partition;
    # sent again with the right key (another producer's retry), it is applied once.
    carol = _event(1, "carol", EventType.VIEW, "book-3", now - 1, category="books")
    messages.append((topics.event(EventType.VIEW), b"not-carol", carol.to_bytes()))
    messages.append((topics.event(EventType.VIEW), b"carol", carol.to_bytes()))

    future = _event(9, "bob", EventType.VIEW, "x", now + 3600)
    malformed: dict[str, tuple[str, bytes | None]] = {
        "bad_json": (topics.event(EventType.VIEW), b'{"schema": 1, '),
        "not_utf8": (topics.event(EventType.VIEW), b'{"schema":1,"type":"view\\xff\xfe"}'),
        "missing_field": (topics.event(EventType.CLICK), b'{"schema":1,"type":"click"}'),
        "topic_mismatch": (topics.event(EventType.VIEW), valid[2].to_bytes()),
        "future_timestamp": (topics.event(EventType.VIEW), future.to_bytes()),
        "oversized": (topics.event(EventType.BUY), b"{" + b" " * 10_000 + b"}"),
        "not_object": (topics.event(EventType.BUY), b"[1, 2, 3]"),
    }
    messages += [(topic, b"mallory", value) for topic, value in malformed.values()]
    await produce(bootstrap, messages)

    dead = await read_topic(bootstrap, topics.dlq, until=len(malformed))
    records = [decode_json(value) for _, value in dead]
    assert sorted(r["reason"] for r in records) == sorted(malformed)
    dlq_schema = json.loads((PROJECT_ROOT / "schemas" / "dlq.v1.json").read_text())
    for record in records:
        jsonschema.Draft202012Validator(dlq_schema).validate(record)
        topic, original = malformed[str(record["reason"])]
        assert record["topic"] == topic
        assert base64.b64decode(str(record["value_b64"])) == original
        assert isinstance(record["offset"], int) and isinstance(record["partition"], int)
        assert record["detail"]

    changelog = f"{deployment.env['NUDGESTREAM_APP_ID']}-profiles-changelog"
    expected_events = {b"alice": 3, b"bob": 1, b"carol": 1}

    def all_profiles_complete(latest: dict[bytes, bytes | None]) -> bool:
        return all(
            latest.get(user) is not None and Profile.from_bytes(latest[user]).events == n  # type: ignore[arg-type]
            for user, n in expected_events.items()
        )

    latest = await latest_values(bootstrap, changelog, done=all_profiles_complete)
    assert all_profiles_complete(latest), {k: v for k, v in latest.items()}
    alice = Profile.from_bytes(latest[b"alice"])  # type: ignore[arg-type]
    assert alice.top_categories(1) == ["electronics.smartphone"]
    assert alice.bought == ["phone-1"]
    assert b"mallory" not in latest
    # Re-keyed through the internal topic: readers of events.view see the event as sent,
    # never a second time under the new key.
    views = await read_topic(bootstrap, topics.event(EventType.VIEW), until=10**6, timeout_s=3)
    assert sorted(key or b"" for key, value in views if value == carol.to_bytes()) == [b"carol", b"not-carol"]
    assert await read_topic(bootstrap, topics.rekeyed, until=2, timeout_s=3) == [(b"carol", carol.to_bytes())]

    metrics = worker.metrics()
    assert metrics['nudgestream_events_consumed_total{type="view"}'] == 3
    assert metrics['nudgestream_events_consumed_total{type="click"}'] == 1
    assert metrics['nudgestream_events_consumed_total{type="buy"}'] == 1
    assert metrics["nudgestream_events_duplicate_total"] == 2  # bob's retry, carol's second copy
    for reason in malformed:
        assert metrics[f'nudgestream_events_rejected_total{{reason="{reason}"}}'] == 1


async def test_a_restarted_worker_recovers_its_profiles_from_the_changelog(
    deployment: Deployment,
) -> None:
    """Runs after the test above in the same deployment: its users' profiles come back."""
    deployment.stop_all()
    worker = deployment.start_worker()
    worker.wait_ready(timeout_s=60)
    deadline = time.monotonic() + 15  # the gauge is refreshed every 5 s
    while worker.metrics()["nudgestream_profiles"] != 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert worker.metrics()["nudgestream_profiles"] == 3  # alice, bob, carol
    assert "Error in recovery" not in worker.log_tail(1_000_000)
