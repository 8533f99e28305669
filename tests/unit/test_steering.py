"""The learning gate shared by the replay and the worker: fatigue from the decided record,
send time from engaged pushes, the bandit from shared counts; the control group untouched."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from models.attribution import Scope, Signal
from models.bandit import BanditConfig
from models.decided import DecidedPush, DecisionLog
from models.decision import Decision
from models.fatigue import FatigueConfig
from models.lift import Group
from models.outcomes import OutcomeKind
from models.policy import TriggerKind
from models.sendtime import SendTimeConfig
from models.steering import BANDIT, FATIGUE, bandit_of, fatigue_of, gate, release_time, sendtime_of

WINDOW = 600.0
CONFIG = FatigueConfig(free_ignores=1, cooldown_s=3600.0)
# Each push: (engaged?, dismissed?, group)
pushes = st.lists(st.tuples(st.booleans(), st.booleans(), st.sampled_from(Group)), max_size=6)


def entry(n: int, engaged: bool = False, dismissed: bool = False, group: Group = Group.TREATMENT,
          ts: float | None = None) -> DecidedPush:
    return DecidedPush(
        f"d{n}", 1000.0 * (n + 1) if ts is None else ts, ("p1",), ("toys",),
        TriggerKind.BROWSE_INTEREST, None, group,
        seen=frozenset({OutcomeKind.DISMISSED}) if dismissed else frozenset(),
        credited=frozenset({(Signal.BUY, Scope.ITEM)}) if engaged else frozenset(),
    )


def decision(at: float, user: str = "u1", trigger: TriggerKind = TriggerKind.BROWSE_INTEREST,
             transactional: bool = False) -> Decision:
    return Decision(f"x-{at}", user, (("p2", 1.0),), trigger, None, "", at, at, at + 86400.0,
                    transactional)


def test_a_user_who_ignored_two_pushes_is_stopped_and_an_engaged_one_is_not() -> None:
    ignored = DecisionLog([entry(0), entry(1)])
    later = decision(5000.0)  # within the hour after the second ignore (2600)
    fatigue = fatigue_of(ignored, later.decided_at, WINDOW, CONFIG)
    assert gate(later, False, fatigue, None, random.Random(0), CONFIG) == FATIGUE
    listening = DecisionLog([entry(0), entry(1, engaged=True)])
    fatigue = fatigue_of(listening, later.decided_at, WINDOW, CONFIG)
    assert gate(later, False, fatigue, None, random.Random(0), CONFIG) is None


def test_pushes_still_in_their_window_count_neither_way() -> None:
    log = DecisionLog([entry(0), entry(1)])
    assert fatigue_of(log, 1500.0, WINDOW, CONFIG).streak == 0  # both windows open
    assert fatigue_of(log, 1600.0, WINDOW, CONFIG).streak == 1


def test_a_dismissed_push_is_ignored_at_once() -> None:
    log = DecisionLog([entry(0, dismissed=True), entry(1, dismissed=True)])
    assert fatigue_of(log, 2000.0, WINDOW, CONFIG).streak == 2


@given(pushes, st.floats(0, 1e6))
def test_control_records_never_change_the_fatigue(history: list[tuple[bool, bool, Group]], now: float) -> None:
    log = DecisionLog([entry(n, e, d, g) for n, (e, d, g) in enumerate(history)])
    treated = DecisionLog([e for e in log.entries if e.group is Group.TREATMENT])
    assert fatigue_of(log, now, WINDOW, CONFIG) == fatigue_of(treated, now, WINDOW, CONFIG)


@given(pushes, st.floats(0, 1e6))
def test_the_control_group_and_transactional_pushes_are_never_stopped(
    history: list[tuple[bool, bool, Group]], now: float
) -> None:
    log = DecisionLog([entry(n, e, d, g) for n, (e, d, g) in enumerate(history)])
    fatigue = fatigue_of(log, now, WINDOW, CONFIG)
    never = bandit_of({"browse_interest": (1000, 0), "post_purchase": (1000, 900)}, BanditConfig())
    assert gate(decision(now), True, fatigue, never, random.Random(1), CONFIG) is None
    assert gate(decision(now, transactional=True), False, fatigue, never, random.Random(1), CONFIG) is None


@given(pushes, st.floats(10_000.0, 1e6))  # decided after the user's recorded pushes
def test_an_engaged_last_push_always_lets_the_next_one_through(
    history: list[tuple[bool, bool, Group]], now: float
) -> None:
    log = DecisionLog([entry(n, e, d, g) for n, (e, d, g) in enumerate(history)] + [entry(9, engaged=True)])
    assert fatigue_of(log, now, WINDOW, CONFIG).allows(now, CONFIG)


def test_the_bandit_stops_a_kind_that_never_converts_and_its_draw_is_seeded() -> None:
    bandit = bandit_of({"browse_abandoned": (500, 0), "browse_interest": (500, 100)}, BanditConfig())
    reminder = decision(5000.0, trigger=TriggerKind.BROWSE_ABANDONED)
    verdicts = [gate(reminder, False, None, bandit, random.Random(reminder.decision_id), CONFIG)
                for _ in range(3)]
    assert verdicts == [BANDIT] * 3
    browse = decision(5000.0)
    assert gate(browse, False, None, bandit, random.Random(browse.decision_id), CONFIG) is None


@given(st.dictionaries(st.sampled_from(["a", "b"]), st.tuples(st.integers(0, 100), st.integers(0, 200))))
def test_bandit_counts_never_give_negative_misses(counts: dict[str, tuple[int, int]]) -> None:
    bandit = bandit_of(counts, BanditConfig())
    assert all(arm.misses >= 0 and arm.conversions >= 0 for arm in bandit.arms.values())


def test_a_deferred_push_goes_at_the_hour_the_users_pushes_converted() -> None:
    at_19h = datetime(2026, 1, 5, 19, 0, tzinfo=UTC).timestamp()
    log = DecisionLog([entry(n, engaged=True, ts=at_19h + n * 3600 * 24) for n in range(3)]
                      + [entry(5, ts=at_19h + 4 * 86400 - 6 * 3600)])  # not engaged: not learnt
    config = SendTimeConfig(min_engagements=2)
    user = sendtime_of(log, "UTC", config)
    morning = datetime(2026, 1, 9, 8, 0, tzinfo=UTC).timestamp()
    deferred = decision(morning - 3600)
    released = release_time(user, deferred, morning, "UTC", config)
    assert datetime.fromtimestamp(released, UTC).hour == 19
    assert release_time(None, deferred, morning, "UTC", config) == morning
