"""The offline push replay: the streaming decision path on a simulated clock."""

from __future__ import annotations

import io
import itertools
import json
import random
from collections import defaultdict
from datetime import UTC, datetime, time
from typing import Any

import jsonschema
import orjson
from referencing import Registry, Resource

from models.decision import AUDIT_SCHEMA_VERSION
from models.events import Event, EventType
from models.features import should_sample
from models.limits import LimitConfig
from models.policy import PolicyConfig, TriggerKind
from models.push_replay import (
    PushReplay,
    PushReplayConfig,
    Record,
    replay_pushes,
)
from models.segments import SegmenterConfig
from tests.conftest import PROJECT_ROOT

NOON = 1_700_049_600.0  # 2023-11-15 12:00 UTC
DAY = 86400.0
NO_QUIET = LimitConfig(quiet_start=time(0), quiet_end=time(0))
AUDIT = f"audit.v{AUDIT_SCHEMA_VERSION}.json"
SCHEMAS = {p.name: json.loads(p.read_text()) for p in (PROJECT_ROOT / "schemas").glob("*.json")}
REGISTRY: Registry[Any] = Registry().with_resources(
    (doc["$id"], Resource.from_contents(doc)) for doc in SCHEMAS.values()
)


def shop_log(users: int = 30, days: int = 3, seed: int = 7) -> list[Event]:
    """Sessions of views in one category each, some ending in a purchase, over days."""
    rng = random.Random(seed)
    events: list[Event] = []
    for user in range(users):
        for day in range(days):
            start = NOON + day * DAY + rng.uniform(-3 * 3600, 3 * 3600)
            category = rng.choice("ABC")
            for step in range(rng.randint(1, 6)):
                kind = EventType.BUY if step == 5 else EventType.VIEW
                item = f"{category}{rng.randint(0, 9)}"
                events.append(Event("", kind, f"u{user}", item, start + 60 * step, category))
    events.sort(key=lambda e: (e.ts, e.user_id))
    return [
        Event(f"e{n}", e.type, e.user_id, e.item_id, e.ts, e.category) for n, e in enumerate(events)
    ]


def run(log: list[Event], **overrides: Any) -> list[Record]:
    records: list[Record] = []
    config = PushReplayConfig(**{"limits": NO_QUIET, **overrides})
    PushReplay(config, records.append).run(log)
    return records


def pushes(records: list[Record]) -> list[Record]:
    return [r for r in records if r.pushed]


def browse(
    user: str, at: float, items: tuple[str, ...] = ("a", "b"), category: str = "A", first: int = 0
) -> list[Event]:
    return [
        Event(f"{user}-{first + n}", EventType.VIEW, user, item, at + 60 * n, category)
        for n, item in enumerate(items)
    ]


def popular_elsewhere(at: float) -> list[Event]:
    """Other users make "c" popular in category A, so browsers of A have a candidate."""
    return [Event(f"o{n}", EventType.VIEW, f"other{n}", "c", at + n, "A") for n in range(3)]


def test_the_same_log_gives_the_same_records_byte_for_byte() -> None:
    outputs = []
    for _ in range(2):
        decisions, audit = io.BytesIO(), io.BytesIO()
        replay_pushes(shop_log(), decisions, audit, PushReplayConfig(limits=NO_QUIET))
        outputs.append((decisions.getvalue(), audit.getvalue()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] and outputs[0][1]


def test_decisions_only_see_the_past() -> None:
    log = shop_log()
    cut = log[len(log) // 2].ts
    before_cut = [e for e in log if e.ts <= cut]
    early = [r.to_dict() for r in run(before_cut) if r.decision.decided_at < cut]
    full = [r.to_dict() for r in run(log) if r.decision.decided_at < cut]
    assert early and early == full


def test_an_abandoned_browse_is_decided_when_due_on_the_simulated_clock() -> None:
    log = popular_elsewhere(NOON - 600) + browse("u1", NOON)
    abandoned = [r for r in run(log) if r.decision.trigger is TriggerKind.BROWSE_ABANDONED]
    delay = PolicyConfig().abandon_delay_s
    assert [r.decision.decided_at for r in abandoned] == [NOON + 60 + delay]


def test_a_purchase_before_the_due_time_cancels_the_abandoned_browse() -> None:
    buy = Event("buy", EventType.BUY, "u1", "b", NOON + 600, "A")
    records: list[Record] = []
    replay = PushReplay(PushReplayConfig(limits=NO_QUIET), records.append)
    replay.run([*popular_elsewhere(NOON - 600), *browse("u1", NOON), buy])
    assert not [r for r in records if r.decision.trigger is TriggerKind.BROWSE_ABANDONED]
    assert replay.stats.invalid == 1


def test_a_decision_in_quiet_hours_is_deferred_then_sent_after_them() -> None:
    night = NOON + 11 * 3600  # 23:00 UTC, inside the default quiet hours
    records = run(popular_elsewhere(night - 600) + browse("u1", night), limits=LimitConfig())
    interest = [r for r in records if r.decision.trigger is TriggerKind.BROWSE_INTEREST]
    assert [r.outcome for r in interest] == ["deferred", "pushed"]
    deferred, sent = interest
    assert deferred.reason == "quiet_hours" and deferred.decision.decided_at == night + 60
    assert sent.decision.decision_id == deferred.decision.decision_id
    morning = NOON + 20 * 3600  # 08:00 UTC next day
    spread = PolicyConfig().release_spread_s
    assert morning <= sent.decision.decided_at < morning + spread


def test_pushes_respect_the_rate_limits() -> None:
    limits = LimitConfig(quiet_start=time(0), quiet_end=time(0))
    sent: dict[str, list[float]] = defaultdict(list)
    for record in pushes(run(shop_log(users=10, days=6), limits=limits)):
        sent[record.decision.user_id].append(record.decision.decided_at)
    assert sent
    for times in sent.values():
        times.sort()
        assert all(b - a >= limits.min_gap_s for a, b in itertools.pairwise(times))
        for start in times:
            assert sum(start <= t < start + limits.window_s for t in times) <= limits.max_per_window


def test_holdout_users_get_audit_records_and_no_push() -> None:
    records = run(shop_log(), policy=PolicyConfig(holdout_percent=100.0))
    assert records and not pushes(records)
    assert {(r.outcome, r.reason) for r in records} <= {
        ("holdout", "holdout"),
        ("no_candidates", "no_candidates"),  # cold start, before the holdout draw
        ("suppressed", "min_gap"),
        ("suppressed", "item_cooldown"),
        ("suppressed", "max_per_window"),
    }
    assert any(r.outcome == "holdout" for r in records)


def test_written_records_follow_the_topic_schemas() -> None:
    decisions, audit = io.BytesIO(), io.BytesIO()
    summary = replay_pushes(shop_log(), decisions, audit, PushReplayConfig(limits=LimitConfig()))
    validators = {
        name: jsonschema.Draft202012Validator(SCHEMAS[name], registry=REGISTRY)
        for name in ("decision.v1.json", AUDIT)
    }
    for out, name in ((decisions, "decision.v1.json"), (audit, AUDIT)):
        lines = out.getvalue().splitlines()
        assert lines
        for line in lines:
            validators[name].validate(orjson.loads(line))
    outcomes = summary["decisions"]["outcomes"]
    assert outcomes["pushed"] == len(decisions.getvalue().splitlines())
    assert sum(outcomes.values()) - outcomes["pushed"] == len(audit.getvalue().splitlines())


def test_pushes_never_fall_in_the_users_quiet_hours() -> None:
    for record in pushes(run(shop_log(), limits=LimitConfig())):
        assert 8 <= datetime.fromtimestamp(record.decision.decided_at, UTC).hour < 22


def test_segments_are_assigned_once_the_trainer_has_warmed_up() -> None:
    segmenter = SegmenterConfig(
        k_max=3, max_micro_clusters=10, warmup=10, sample_size=20, max_known_segments=5
    )
    records: list[Record] = []
    replay = PushReplay(
        PushReplayConfig(limits=NO_QUIET, segmenter=segmenter, snapshot_every=20), records.append
    )
    replay.run(shop_log())
    assert replay.stats.segment_snapshots > 0
    assert {r.decision.segment for r in records} - {None}


def test_progress_is_reported() -> None:
    seen: list[int] = []
    PushReplay(PushReplayConfig(limits=NO_QUIET)).run(
        shop_log(), lambda s: seen.append(s.records), progress_every=100
    )
    assert seen and seen[-1] == len(shop_log())


def test_profiles_are_sampled_on_events_1_2_4_8_and_every_16th() -> None:
    assert [n for n in range(1, 50) if should_sample(n)] == [1, 2, 4, 8, 16, 32, 48]


