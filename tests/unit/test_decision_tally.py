"""Counting decisions read back from the topics: each decision_id once, cold start shown."""

from __future__ import annotations

from typing import Any

import orjson

from load.decisions import PUSHED, DecisionTally, DecisionWatcher
from models.decision import Outcome
from streams.settings import load


def record(decision_id: str, outcome: str | None, explanation: str = "a: often seen with x, which you viewed") -> dict[str, Any]:
    items = [] if outcome == "no_candidates" else [{"item_id": "a", "score": 1.0}]
    audit = {"outcome": outcome, "reason": outcome} if outcome else {}
    return {"decision_id": decision_id, "event_ts": 100.0, "items": items, "explanation": explanation, **audit}


def test_a_holdout_record_repeated_after_a_crash_is_counted_once() -> None:
    tally = DecisionTally()
    assert tally.add(record("d-1", "holdout"), pushed=False)
    assert not tally.add(record("d-1", "holdout"), pushed=False)
    assert tally.add(record("d-2", "holdout"), pushed=False)
    assert tally.count(Outcome.HOLDOUT) == 2


def test_a_deferred_decision_pushed_later_counts_under_both_outcomes() -> None:
    tally = DecisionTally()
    tally.add(record("d-1", "deferred"), pushed=False)
    tally.add(record("d-1", None), pushed=True)
    assert (tally.count(Outcome.DEFERRED), tally.count(PUSHED)) == (1, 1)


def test_the_fallback_share_is_of_the_decisions_that_found_items() -> None:
    tally = DecisionTally()
    assert tally.fallback_share() is None
    tally.add(record("d-1", None, "a, b: popular right now"), pushed=True)
    tally.add(record("d-1", None, "a, b: popular right now"), pushed=True)  # a repeat
    tally.add(record("d-2", "suppressed"), pushed=False)
    tally.add(record("d-3", "no_candidates", "no related, category or popular items yet"), pushed=False)
    assert tally.count(Outcome.NO_CANDIDATES) == 1
    assert tally.fallback_share() == 0.5


def test_the_watcher_times_each_decision_once_and_only_from_its_start() -> None:
    settings = load({})
    watcher = DecisionWatcher(settings, since=50.0)
    repeated = orjson.dumps(record("d-1", "holdout"))
    old = orjson.dumps({**record("d-0", "holdout"), "event_ts": 10.0})
    watcher.record(settings.topics.suppressed, 101.0, [repeated, repeated, old])
    assert watcher.latencies_s == {settings.topics.suppressed: [1.0]}
    assert watcher.tally.count(Outcome.HOLDOUT) == 1
