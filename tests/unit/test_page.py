"""The worker's page: reading counters by name, the rings it keeps, the JSON it serves."""

from __future__ import annotations

import re

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from models.cluster_quality import ClusterScores
from models.decision import Decision
from models.features import FeatureConfig
from models.lift import Lift, Rate
from models.policy import TriggerKind
from models.segment_snapshot import Segment, SegmentSnapshot
from streams import page
from streams.page import (
    CONVERSIONS,
    EXPOSURES,
    OUTCOMES,
    SEGMENT_USERS,
    CtrHistory,
    Dashboard,
    LatestDecisions,
    Totals,
    dashboard,
    metric_sums,
)
from streams.privacy import Pseudonymizer

NOW = 1_700_000_000.0


def decision(decision_id: str, user: str = "alice", explanation: str = "tv2: often seen with tv1") -> Decision:
    return Decision(decision_id, user, (("tv2", 1.5), ("tv3", 0.75)), TriggerKind.BROWSE_INTEREST, 2,
                    explanation, NOW - 1, NOW, NOW + 3600, False)


def snapshot() -> SegmentSnapshot:
    segments = (
        Segment(1, 0.6, (0.0,), (("electronics.tv", 0.7), ("electronics.audio", 0.2)), "tv lovers"),
        Segment(2, 0.4, (1.0,), (("apparel.shoes", 0.9),), "shoe shoppers"),
    )
    return SegmentSnapshot(7, NOW - 60, 2, segments, ClusterScores(0.5, 10.0, 0.7), FeatureConfig(), 900)


# --- reading counters by name -----------------------------------------------------------


def test_metric_sums_adds_up_a_counter_family_over_the_labels_left_out() -> None:
    registry = CollectorRegistry()
    exposures = Counter(EXPOSURES, "", ["trigger", "segment", "group"], registry=registry)
    exposures.labels("browse_interest", "1", "treatment").inc(3)
    exposures.labels("browse_interest", "2", "treatment").inc(4)
    exposures.labels("browse_interest", "1", "control").inc(1)
    exposures.labels("post_purchase", "1", "treatment").inc(2)

    assert metric_sums(registry, EXPOSURES, ["trigger", "group"]) == {
        ("browse_interest", "treatment"): 7.0,
        ("browse_interest", "control"): 1.0,
        ("post_purchase", "treatment"): 2.0,
    }
    assert metric_sums(registry, EXPOSURES, []) == {(): 10.0}


def test_metric_sums_reads_gauges_and_ignores_other_families_and_created_samples() -> None:
    registry = CollectorRegistry()
    users = Gauge(SEGMENT_USERS, "", ["segment"], registry=registry)
    users.labels("1").set(40)
    Counter("nudgestream_other_total", "", ["segment"], registry=registry).labels("1").inc(99)

    assert metric_sums(registry, SEGMENT_USERS, ["segment"]) == {("1",): 40.0}


def test_a_metric_not_registered_is_no_data_rather_than_zero() -> None:
    registry = CollectorRegistry()
    assert metric_sums(registry, EXPOSURES, ["trigger"]) is None
    Counter(EXPOSURES, "", ["trigger"], registry=registry)  # registered, never incremented
    assert metric_sums(registry, EXPOSURES, ["trigger"]) is None
    assert metric_sums(registry, CONVERSIONS, ["trigger"]) is None


def test_samples_without_a_wanted_label_are_not_counted() -> None:
    registry = CollectorRegistry()
    Counter(OUTCOMES, "", ["outcome"], registry=registry).labels("sent").inc()
    assert metric_sums(registry, OUTCOMES, ["outcome", "group"]) == {}


# --- the latest decisions ----------------------------------------------------------------


def test_latest_decisions_are_newest_first_bounded_and_without_user_ids() -> None:
    latest = LatestDecisions(Pseudonymizer(b"k" * 32), size=3)
    for n in range(5):
        latest.add(decision(f"d-{n}", user=f"user-{n}"), "pushed")

    entries = latest.entries()
    assert [e["explanation"] for e in entries] == ["tv2: often seen with tv1"] * 3
    assert [e["user"] for e in entries] == [Pseudonymizer(b"k" * 32)(f"user-{n}") for n in (4, 3, 2)]
    assert "user-" not in orjson.dumps(entries).decode()
    assert entries[0]["items"] == [{"item_id": "tv2", "score": 1.5}, {"item_id": "tv3", "score": 0.75}]


def test_a_decision_made_again_replaces_its_entry() -> None:
    latest = LatestDecisions(Pseudonymizer(b"k" * 32))
    latest.add(decision("d-1"), "deferred", "quiet_hours")
    latest.add(decision("d-2"), "pushed")
    latest.add(decision("d-1"), "pushed")

    entries = latest.entries()
    assert [(e["outcome"], e["reason"]) for e in entries] == [("pushed", None), ("pushed", None)]
    assert len(entries) == 2


# --- CTR over time ------------------------------------------------------------------------


def test_ctr_points_are_per_minute_differences_of_the_totals() -> None:
    history = CtrHistory(minutes=10)
    history.sample(NOW, Totals(sent=4.0, clicked=0.0))
    history.sample(NOW + 20, Totals(sent=10.0, clicked=1.0))  # same minute: the later totals
    history.sample(NOW + 80, Totals(sent=30.0, clicked=5.0))
    history.sample(NOW + 200, Totals(sent=30.0, clicked=6.0))

    points = history.points()
    minute = NOW - NOW % 60
    assert [p["minute"] for p in points] == [minute, minute + 60, minute + 180]
    assert [(p["sent"], p["clicked"]) for p in points] == [(10.0, 1.0), (20.0, 4.0), (0.0, 1.0)]
    assert [p["ctr"] for p in points] == [0.1, 0.2, None]


def test_ctr_history_keeps_its_last_minutes_and_the_baseline_before_them() -> None:
    history = CtrHistory(minutes=3)
    for n in range(6):
        history.sample(NOW + 60 * n, Totals(sent=10.0 * (n + 1), clicked=float(n)))

    points = history.points()
    assert len(points) == 3
    assert [(p["sent"], p["clicked"]) for p in points] == [(10.0, 1.0)] * 3


# --- the document -------------------------------------------------------------------------


def build(**overrides: object) -> dict[str, object]:
    inputs: dict[str, object] = {
        "now": NOW, "snapshot": None, "segment_users": None, "exposures": None,
        "conversions": None, "outcomes": None, "ctr": [], "decisions": [],
    }
    inputs.update(overrides)
    return dashboard(**inputs)  # type: ignore[arg-type]


def test_without_any_data_every_section_says_so() -> None:
    doc = build()
    assert doc["schema"] == "nudgestream.dashboard.v1"
    assert doc["generated_at"] == NOW
    assert doc["segments"] == {"available": False, "version": 0, "segments": []}
    assert doc["lift"] == {"available": False, "rows": []}
    assert doc["ctr"] == {"available": False, "interval_s": 60, "totals": {"sent": 0.0, "clicked": 0.0},
                          "points": []}
    assert doc["decisions"] == []
    orjson.dumps(doc)  # serialisable as served


def test_segments_carry_label_share_top_categories_and_this_workers_users() -> None:
    doc = build(snapshot=snapshot(), segment_users={("1",): 40.0})
    segments = doc["segments"]
    assert isinstance(segments, dict)
    assert segments["available"] is True and segments["version"] == 7 and segments["k"] == 2
    assert segments["segments"] == [
        {"id": 1, "label": "tv lovers", "share": 0.6, "users": 40.0,
         "top_categories": [{"category": "electronics.tv", "share": 0.7},
                            {"category": "electronics.audio", "share": 0.2}]},
        {"id": 2, "label": "shoe shoppers", "share": 0.4, "users": None,
         "top_categories": [{"category": "apparel.shoes", "share": 0.9}]},
    ]


def test_lift_rows_per_trigger_and_signal_use_both_groups_rates() -> None:
    exposures = {("browse_interest", "treatment"): 1000.0, ("browse_interest", "control"): 1000.0,
                 ("post_purchase", "treatment"): 50.0}
    conversions = {("browse_interest", "treatment", "buy"): 60.0, ("browse_interest", "control", "buy"): 20.0,
                   ("browse_interest", "treatment", "click"): 5.0}
    lift = build(exposures=exposures, conversions=conversions)["lift"]
    assert isinstance(lift, dict) and lift["available"] is True
    rows = {(r["trigger"], r["signal"]): r for r in lift["rows"]}
    assert sorted(rows) == [("browse_interest", "buy"), ("browse_interest", "click"),
                            ("post_purchase", "buy"), ("post_purchase", "click")]

    buy = rows["browse_interest", "buy"]
    assert buy["treatment"] == Rate(60, 1000).to_dict()
    assert buy["control"] == Rate(20, 1000).to_dict()
    expected = Lift.of(Rate(60, 1000), Rate(20, 1000))
    assert expected is not None and buy["lift"] == expected.to_dict() and buy["hurts"] is False
    assert rows["browse_interest", "click"]["lift"]["corrected"] is True  # no control click
    # No control exposure: nothing to compare against.
    assert rows["post_purchase", "buy"]["lift"] is None
    assert rows["post_purchase", "buy"]["control"]["trials"] == 0


def test_a_lift_whose_interval_is_below_one_is_flagged() -> None:
    exposures = {("browse_interest", "treatment"): 2000.0, ("browse_interest", "control"): 2000.0}
    conversions = {("browse_interest", "treatment", "buy"): 10.0, ("browse_interest", "control", "buy"): 80.0}
    rows = build(exposures=exposures, conversions=conversions)["lift"]["rows"]  # type: ignore[index]
    assert rows[0]["hurts"] is True


def test_conversions_beyond_exposures_are_capped_not_an_error() -> None:
    # The two counters are read one after the other: a conversion may be counted first.
    exposures = {("post_purchase", "treatment"): 2.0, ("post_purchase", "control"): 1.0}
    conversions = {("post_purchase", "treatment", "buy"): 3.0}
    rows = build(exposures=exposures, conversions=conversions)["lift"]["rows"]  # type: ignore[index]
    assert rows[0]["treatment"]["successes"] == 2


def test_ctr_section_reports_treatment_totals_and_the_history() -> None:
    outcomes = {("sent", "treatment"): 30.0, ("clicked", "treatment"): 3.0, ("sent", "control"): 9.0}
    points = [{"minute": NOW, "sent": 30.0, "clicked": 3.0, "ctr": 0.1}]
    ctr = build(outcomes=outcomes, ctr=points)["ctr"]
    assert ctr == {"available": True, "interval_s": 60, "totals": {"sent": 30.0, "clicked": 3.0},
                   "points": points}


# --- the worker side ----------------------------------------------------------------------


async def test_the_dashboard_reads_its_registry_and_samples_on_its_clock() -> None:
    registry = CollectorRegistry()
    outcomes = Counter(OUTCOMES, "", ["outcome", "trigger", "group"], registry=registry)
    outcomes.labels("sent", "post_purchase", "treatment").inc(8)
    outcomes.labels("clicked", "post_purchase", "treatment").inc(2)
    latest = LatestDecisions(Pseudonymizer(b"k" * 32))
    latest.add(decision("d-1"), "holdout", "holdout")
    now = [NOW]
    board = Dashboard(snapshot, latest, registry, clock=lambda: now[0])

    await board.sample_ctr()
    doc = board.document()
    assert doc["generated_at"] == NOW
    assert doc["ctr"]["points"] == [{"minute": NOW - NOW % 60, "sent": 8.0, "clicked": 2.0, "ctr": 0.25}]
    assert doc["segments"]["version"] == 7
    assert doc["lift"]["available"] is False  # no exposure counters in this registry
    assert [d["outcome"] for d in doc["decisions"]] == ["holdout"]


def test_the_page_is_self_contained_and_only_its_own_script_may_run() -> None:
    html, policy = page.page()
    text = html.decode()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "no external resources"
    assert "innerHTML" not in text
    for section in ("segments", "lift", "ctr", "decisions"):
        assert f'id="{section}"' in text
    assert "fetch(\"dashboard.json\"" in text
    assert re.fullmatch(r".*script-src 'sha256-[A-Za-z0-9+/]+=*';.*connect-src 'self';.*", policy)

