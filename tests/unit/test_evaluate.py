"""Specification of the next-item evaluator, and the quality goal on real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.evaluate import CoviewBaseline, EvalConfig, Fallback, evaluate
from models.events import Event, EventType
from models.logfile import open_events
from streams.cli import main


def log(*pairs: tuple[str, str]) -> list[Event]:
    """Views ``(user, item)``, one second apart, in the given order."""
    return [
        Event(f"e{n}", EventType.VIEW, user, item, 1000.0 + n)
        for n, (user, item) in enumerate(pairs)
    ]


def test_the_table_is_used_as_it_stood_before_each_target() -> None:
    """u1 goes a -> b before anyone else did; u2 repeats it afterwards.

    When u1 moves to b nothing yet links a to b, so the table cannot have it: a peeking
    evaluator (using the final table) would count a hit for both users.
    """
    report = evaluate(log(("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")))
    cooc = report["recommenders"]["cooccurrence"]
    assert report["targets"] == 2
    assert cooc["hr@10_without_fallback"] == 0.5


def test_the_future_never_leaks_through_the_fallback_either() -> None:
    """Popularity at u1's target knows only a, which u1 touched: nothing to recommend."""
    report = evaluate(log(("u1", "a"), ("u1", "b"), ("u2", "b")), EvalConfig(k=1))
    assert report["targets"] == 1
    assert {r["hr@1"] for r in report["recommenders"].values()} == {0.0}


def test_targets_are_the_next_items_new_to_the_user() -> None:
    """A user's first event, repeats and returns to a touched item are not targets."""
    report = evaluate(
        log(("u1", "a"), ("u1", "a"), ("u1", "b"), ("u1", "a"), ("u1", "c"), ("u2", "z"))
    )
    assert report["targets"] == 2  # b and c
    assert report["users"] == 2
    assert report["items"] == 4


def test_items_the_user_touched_are_never_recommended() -> None:
    """Everyone views "hit"; a user who already did must get other items."""
    events = log(*[(f"u{n}", "hit") for n in range(5)], ("u9", "hit"), ("u9", "other"))
    report = evaluate(events, EvalConfig(k=1))
    assert report["recommenders"]["popularity"]["hr@1"] == 0.0
    assert report["recommenders"]["popularity"]["coverage"] == 0.0


def test_mrr_rewards_the_rank_of_the_hit() -> None:
    """With k=2 the target ranks second for the popularity baseline."""
    events = log(("u1", "b"), ("u2", "c"), ("u3", "c"), ("u4", "x"), ("u4", "b"))
    pop = evaluate(events, EvalConfig(k=2))["recommenders"]["popularity"]
    assert pop["hr@2"] == 1.0
    assert pop["mrr@2"] == 0.5


def test_the_category_fallback_fills_from_the_users_latest_category() -> None:
    events = [
        Event("e1", EventType.VIEW, "u1", "tv", 1.0, "electronics"),
        Event("e2", EventType.VIEW, "u2", "bread", 2.0, "food"),
        Event("e3", EventType.VIEW, "u2", "bread", 3.0, "food"),
        Event("e4", EventType.VIEW, "u3", "phone", 4.0, "electronics"),
        Event("e5", EventType.VIEW, "u3", "tv", 5.0, "electronics"),
    ]
    overall = evaluate(events, EvalConfig(k=1))["recommenders"]
    by_category = evaluate(events, EvalConfig(k=1, fallback=Fallback.CATEGORY))["recommenders"]
    assert overall["cooccurrence"]["hr@1"] == 0.0  # bread is the most popular
    assert by_category["cooccurrence"]["hr@1"] == 1.0
    assert by_category["cooccurrence"]["fallback_share"] == 1.0
    assert by_category["category_popularity"]["hr@1"] == 1.0


def test_the_coview_peer_counts_raw_repeats() -> None:
    coview = CoviewBaseline()
    for ev in log(("u1", "a"), ("u1", "b"), ("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c")):
        coview.learn_one(ev)
    coview.learn_one(Event("q", EventType.VIEW, "u3", "a", 99.0))
    assert coview.recommend("u3", 2, exclude={"a"}) == ["b", "c"]


def test_the_report_is_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "tiny.csv"
    csv.write_text(
        "ts,user_id,event,item_id,category,price\n"
        "1,u1,view,a,c,\n2,u1,view,b,c,\nbroken,u1,view,a,,\n3,u2,view,a,c,\n4,u2,buy,b,c,9.5\n"
    )
    assert main(["evaluate", "--events", str(csv), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["next_item"]
    assert report["replay"]["bad_rows"] == 1
    assert set(report["recommenders"]) == {
        "cooccurrence",
        "popularity",
        "category_popularity",
        "coview",
    }
    assert report["config"]["replay"]["cooc"]["scoring"] == "llr"


def test_progress_is_reported_while_evaluating() -> None:
    seen: list[int] = []
    evaluate(log(("u1", "a"), ("u1", "b")), progress=lambda stats: seen.append(stats.records))
    assert seen == [2]


@pytest.mark.slow
def test_cooccurrence_beats_popularity_twice_and_the_naive_coview_table(
    shared_data: Path,
) -> None:
    """The quality goal on REES46 (first 3 hours of October 2019, half of the users)."""
    report = evaluate(open_events(shared_data / "rees46-3h-dev.csv"))
    hr = {name: r["hr@10"] for name, r in report["recommenders"].items()}
    assert report["targets"] > 1000
    assert hr["cooccurrence"] >= 2 * hr["popularity"] > 0
    assert hr["cooccurrence"] > hr["coview"]
    # The table itself, not the fallback, must carry the win over the co-view table.
    without = {n: r["hr@10_without_fallback"] for n, r in report["recommenders"].items()}
    assert without["cooccurrence"] > without["coview"]
