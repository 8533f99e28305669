"""The per-event step the ingest agent and the replay share (``models/step.py``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from models.events import Event, EventType
from models.policy import PolicyConfig, TriggerKind
from models.replay import LOG_SOURCE, Replay
from models.step import StepConfig, step

T0 = 1_700_000_000.0
CONFIG = StepConfig(policy=PolicyConfig(browse_min_items=2, abandon_delay_s=600.0, expiry_s=3600.0))


def view(n: int, item: str, ts: float = T0, user: str = "u1") -> Event:
    return Event(f"e{n}", EventType.VIEW, user, item, ts + n, "toys")


def test_a_redelivered_position_changes_nothing() -> None:
    first = step(None, view(1, "a"), "v0", 5, T0 + 1, CONFIG)
    again = step(first.profile, view(1, "a"), "v0", 5, T0 + 1, CONFIG)
    assert again.replayed and not again.applied and not again.duplicate
    assert again.profile is first.profile and again.increments == () and again.due == ()


def test_a_duplicate_event_id_only_records_its_position() -> None:
    first = step(None, view(1, "a"), "v0", 5, T0 + 1, CONFIG)
    again = step(first.profile, view(1, "a"), "v1", 9, T0 + 1, CONFIG)
    assert again.duplicate and again.increments == () and not again.sample
    assert again.profile.events == 1 and again.profile.positions == {"v0": 5, "v1": 9}
    assert first.profile.positions == {"v0": 5}, "the stored profile is left alone"


def test_an_applied_event_pairs_with_the_items_before_it_and_fires_its_triggers() -> None:
    first = step(None, view(1, "a"), "v0", 1, T0 + 1, CONFIG)
    second = step(first.profile, view(2, "b"), "v0", 2, T0 + 2, CONFIG)
    assert second.applied and second.profile.positions == {"v0": 2}
    assert {inc.item_id for inc in second.increments} == {"a", "b"}
    assert [t.kind for t in second.due] == [TriggerKind.BROWSE_INTEREST]
    assert [(t.kind, t.due_at) for t in second.later] == [(TriggerKind.BROWSE_ABANDONED, T0 + 602)]
    assert [r.item_id for r in first.profile.recent] == ["a"], "the stored profile is left alone"


def test_a_trigger_already_due_by_the_clock_is_decided_now() -> None:
    first = step(None, view(1, "a"), "v0", 1, T0 + 1, CONFIG)
    late = step(first.profile, view(2, "b"), "v0", 2, T0 + 2000, CONFIG)
    assert {t.kind for t in late.due} == {TriggerKind.BROWSE_INTEREST, TriggerKind.BROWSE_ABANDONED}
    assert late.later == ()


def test_samples_are_the_1st_2nd_4th_and_8th_events() -> None:
    profile, sampled = None, []
    for n in range(1, 10):
        result = step(profile, view(n, f"i{n}"), "v0", n, T0 + n, CONFIG)
        profile = result.profile
        sampled += [n] if result.sample else []
    assert sampled == [1, 2, 4, 8]


@given(st.lists(st.tuples(st.sampled_from("uvw"), st.sampled_from("abcde"), st.integers(0, 5)), max_size=30))
def test_the_replay_holds_exactly_the_profiles_the_step_makes(log: list[tuple[str, str, int]]) -> None:
    replay = Replay()
    profiles: dict[str, object] = {}
    for n, (user, item, dup) in enumerate(log):
        event = Event(f"e{dup}-{user}" if dup else f"e{n}", EventType.VIEW, user, item, T0 + n, "toys")
        replay.process(event)
        result = step(profiles.get(user), event, LOG_SOURCE, n + 1, T0 + n, replay.step_config)  # type: ignore[arg-type]
        profiles[user] = result.profile
    assert {u: p.to_bytes() for u, p in replay.profiles.items()} == {
        u: p.to_bytes() for u, p in profiles.items()  # type: ignore[attr-defined]
    }
