"""Specification of the offline replay: same core functions, event-time clock, dirty data."""

from __future__ import annotations

from pathlib import Path

from models.cooccurrence import Row
from models.events import Event, EventType
from models.logfile import BadRow, open_events
from models.popularity import ServedPopularity
from models.profile import Profile
from models.replay import LOG_SOURCE, Replay, ReplayConfig, ReplayStats
from models.step import StepConfig, step

DAY = 86400.0


def view(user: str, item: str, ts: float, event_id: str | None = None) -> Event:
    return Event(event_id or f"{user}-{item}-{ts}", EventType.VIEW, user, item, ts, "cat")


def sessions(start: float = 1000.0) -> list[Event]:
    log = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c")]
    return [view(user, item, start + n) for n, (user, item) in enumerate(log)]


def test_the_replay_runs_exactly_the_streaming_core_functions() -> None:
    """The ingest agent's step (profile, pairs from the recent items before it), then
    rows and the served popularity of each event's row."""
    events = sessions()
    replay = Replay()
    replay.run(events)

    cfg = ReplayConfig()
    profiles: dict[str, Profile] = {}
    rows: dict[str, Row] = {}
    popularity = ServedPopularity(cfg.cooc.half_life_s)
    for n, ev in enumerate(events, 1):
        result = step(profiles.get(ev.user_id), ev, LOG_SOURCE, n, ev.ts, StepConfig(cfg.profile, cfg.cooc))
        profiles[ev.user_id] = result.profile
        for inc in result.increments:
            rows.setdefault(inc.item_id, Row()).apply(inc, cfg.cooc)
        popularity.learn(ev.item_id, ev.category, rows[ev.item_id].value, rows[ev.item_id].ts)

    assert {u: p.to_bytes() for u, p in replay.profiles.items()} == {
        u: p.to_bytes() for u, p in profiles.items()
    }
    assert {i: r.to_bytes() for i, r in replay.rows.items()} == {
        i: r.to_bytes() for i, r in rows.items()
    }
    assert replay.popularity.top(10) == popularity.top(10)
    assert replay.popularity.top(10, "cat") == popularity.top(10, "cat")


def test_related_items_follow_the_evidence() -> None:
    replay = Replay()
    replay.run(sessions())
    assert [item for item, _ in replay.related("a")] == ["b", "c"]
    assert replay.related("a", k=1) == replay.related("a")[:1]
    assert replay.related("never-seen") == []


def test_changed_rows_are_rescored_on_read() -> None:
    replay = Replay()
    replay.run(sessions()[:2])
    assert [item for item, _ in replay.related("a")] == ["b"]
    replay.process(view("u9", "a", 2000.0))
    replay.process(view("u9", "z", 2001.0))
    assert "z" in [item for item, _ in replay.related("a")]


def test_rescoring_waits_for_the_interval_like_the_periodic_flush() -> None:
    replay = Replay(ReplayConfig(rescore_interval_s=60.0))
    replay.run(sessions()[:2])
    first = replay.related("a")
    replay.process(view("u9", "a", 1010.0))
    replay.process(view("u9", "z", 1011.0))
    assert replay.related("a") == first  # scored 10 s ago: still the old list
    replay.process(view("u8", "y", 1070.0))
    assert "z" in [item for item, _ in replay.related("a")]


def test_out_of_order_events_are_processed_and_counted() -> None:
    replay = Replay()
    replay.process(view("u1", "a", 1000.0))
    result = replay.process(view("u2", "b", 900.0))
    assert result is not None and result.applied
    assert replay.stats.out_of_order == 1
    assert replay.clock == 1000.0
    assert replay.row("b") is not None


def test_events_later_than_max_lateness_are_dropped_as_stale() -> None:
    replay = Replay(ReplayConfig(max_lateness_s=DAY))
    replay.process(view("u1", "a", 10 * DAY))
    assert replay.process(view("u1", "old", 8 * DAY)) is None
    assert replay.stats.stale == 1
    assert replay.row("old") is None
    assert replay.profile("u1") is not None
    assert [r.item_id for r in replay.profile("u1").recent] == ["a"]  # type: ignore[union-attr]


def test_duplicates_are_counted_and_change_nothing() -> None:
    replay = Replay()
    replay.process(view("u1", "a", 1.0, event_id="same"))
    before = replay.row("a").to_bytes()  # type: ignore[union-attr]
    result = replay.process(view("u1", "a", 2.0, event_id="same"))
    assert result is not None and result.duplicate
    assert replay.stats.duplicates == 1
    assert replay.row("a").to_bytes() == before  # type: ignore[union-attr]


def test_screening_drops_a_dirty_leading_timestamp_and_counts_it() -> None:
    """A time-sorted log puts a single far-too-early timestamp first."""
    dirty = view("u1", "x", 1.0 * DAY)
    log = [dirty, *sessions(start=75 * DAY)]
    replay = Replay()
    stats = replay.run(log)
    assert stats.outliers == 1
    assert stats.events == len(log) - 1
    assert replay.profile("u1").first_ts == 75 * DAY  # type: ignore[union-attr]


def test_screening_drops_a_lone_timestamp_far_from_both_neighbours() -> None:
    log = sessions()
    log.insert(3, view("u7", "future", 400 * DAY))
    stats = Replay().run(log)
    assert stats.outliers == 1
    assert stats.stale == 0


def test_screening_keeps_real_gaps_in_a_log() -> None:
    log = [*sessions(start=0.0), *sessions(start=5 * DAY)]
    stats = Replay().run(log)
    assert stats.outliers == 0
    assert stats.applied == len(log)


def test_bad_rows_are_counted_and_the_totals_add_up() -> None:
    log: list[Event | BadRow] = [BadRow(2, "oops"), *sessions(), BadRow(9, "oops")]
    stats = Replay().run(log)
    assert stats.bad_rows == 2
    assert stats.records == stats.bad_rows + stats.outliers + stats.events


def test_progress_is_reported_during_and_once_at_the_end_of_a_run() -> None:
    seen: list[int] = []
    Replay().run(sessions(), progress=lambda s: seen.append(s.records), progress_every=4)
    assert seen == [4, len(sessions())]
    seen.clear()
    Replay().run(sessions(), progress=lambda s: seen.append(s.records), progress_every=100)
    assert seen == [len(sessions())]


def test_stats_are_plain_counters() -> None:
    assert set(ReplayStats().to_dict().values()) == {0}


def test_the_dirty_taobao_row_is_screened_out(shared_data: Path) -> None:
    """One row of the 9-day Taobao log is dated 2017-09-11, two months early."""
    replay = Replay()
    stats = replay.run(open_events(shared_data / "taobao-9days-43users.csv"))
    assert stats.outliers == 1
    assert stats.stale == 0
    assert stats.bad_rows == 0
    earliest = min(p.first_ts for p in replay.profiles.values())
    assert earliest > 1_510_000_000  # November 2017, not September
