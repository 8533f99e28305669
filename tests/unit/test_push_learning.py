"""The learning policy on a replayed log: it beats the static one where there is something
to learn, learns only from the past, never touches the control group, and switches off."""

from __future__ import annotations

from datetime import time
from functools import cache

from models.bandit import BanditConfig
from models.candidates import CandidateData, Source, decide
from models.decision import Decision
from models.events import Event, EventType
from models.fatigue import FatigueConfig
from models.lift import Group
from models.limits import LimitConfig
from models.policy import PolicyConfig, TriggerKind, triggers_for
from models.profile import ProfileConfig, update
from models.push_evaluate import evaluate_pushes
from models.push_learning import ALL, Learner, LearningConfig, holdout_lift, learning_replay
from models.push_replay import PushReplay, PushReplayConfig, Record
from models.routing import in_holdout
from models.sendtime import SendTimeConfig

HORIZON = 1800.0
CONFIG = PushReplayConfig(
    policy=PolicyConfig(items_per_push=1),
    limits=LimitConfig(quiet_start=time(0), quiet_end=time(0)),
)
OFF = LearningConfig(
    horizon_s=HORIZON,
    fatigue=FatigueConfig(enabled=False),
    bandit=BanditConfig(enabled=False),
    sendtime=SendTimeConfig(enabled=False),
)


def synthetic_log(users: int = 120, every: float = 600.0) -> list[Event]:
    """A user every 10 minutes views a and b in one category (both browse triggers fire);
    every other user comes back five minutes later to c, the category's most popular
    item, which is what the immediate push offers; nobody returns an hour later, when
    the abandoned-browse reminder comes. Regulars keep c..l popular."""
    rows: list[tuple[float, str, str]] = []
    for n in range(users):
        t, user = n * every, f"u{n}"
        rows += [(t, user, "a"), (t + 60, user, "b")]
        if n % 2:
            rows.append((t + 300, user, "c"))
        rows += [(t + 10 + k, f"p-{item}", item) for k, item in enumerate("cdefghijkl")]
    rows.sort()
    return [Event(f"e{k}", EventType.VIEW, u, i, 1e6 + t, "toys") for k, (t, u, i) in enumerate(rows)]


def static(log: list[Event]) -> list[Record]:
    records: list[Record] = []
    PushReplay(CONFIG, records.append).run(log)
    return records


def learning(log: list[Event], config: LearningConfig | None = None) -> list[Record]:
    records: list[Record] = []
    learning_replay(log, CONFIG, config or LearningConfig(horizon_s=HORIZON), records.append)
    return records


@cache
def default_run() -> tuple[list[Event], list[Record], list[Record]]:
    """The synthetic log with its static and learning replays (shared: each takes a second)."""
    log = synthetic_log()
    return log, static(log), learning(log)


def scored(log: list[Event], records: list[Record]) -> dict[str, float]:
    report = evaluate_pushes(log, [r.to_dict() for r in records if r.pushed], [], HORIZON)
    return {"precision": report["precision_new"], "per_user": report["pushes_per_active_user"]}


def test_the_learning_policy_beats_the_static_one_where_reminders_never_work() -> None:
    log, static_records, learning_records = default_run()
    before, after = scored(log, static_records), scored(log, learning_records)
    assert before["precision"] > 0
    assert after["precision"] >= 1.2 * before["precision"]
    assert after["per_user"] <= before["per_user"]


def test_switched_off_the_learning_replay_is_the_static_replay() -> None:
    log = synthetic_log(40)
    assert [r.to_dict() for r in learning(log, OFF)] == [r.to_dict() for r in static(log)]


def test_the_control_group_is_never_steered() -> None:
    _, static_records, learning_records = default_run()
    holdout = [[r.to_dict() for r in records if r.outcome == "holdout"]
               for records in (static_records, learning_records)]
    assert holdout[0] and holdout[0] == holdout[1]


def test_the_learner_only_learns_from_the_past() -> None:
    """A log cut short makes the same decisions up to the cut: nothing later was used."""
    log, _, learning_records = default_run()
    cut = log[len(log) // 2].ts
    full = [r.to_dict() for r in learning_records if r.decision.decided_at < cut]
    short = [r.to_dict() for r in learning([e for e in log if e.ts <= cut])
             if r.decision.decided_at < cut]
    assert full and full == short


def test_skips_are_audited_as_suppressed_with_the_learnt_reason() -> None:
    reasons = {r.reason for r in default_run()[2] if r.outcome == "suppressed"}
    assert "bandit" in reasons


def test_holdout_lift_measures_pushes_against_the_control_groups_would_be_pushes() -> None:
    log, static_records, _ = default_run()
    lift = holdout_lift(log, [r.to_dict() for r in static_records], HORIZON)
    overall = lift[ALL]
    assert overall[Group.TREATMENT.value]["trials"] > overall[Group.CONTROL.value]["trials"] > 0
    assert overall["lift"] is None or overall["lift"]["low"] <= overall["lift"]["lift"]
    assert set(lift["by_trigger"]) == {"browse_interest", "browse_abandoned"}
    assert sum(v["treatment"]["trials"] for v in lift["by_trigger"].values()) == (
        overall["treatment"]["trials"])
    assert sum(v["control"]["trials"] for v in lift["by_segment"].values()) == (
        overall["control"]["trials"])


def test_decisions_name_each_items_source_outside_the_topic_contract() -> None:
    profile = None
    before = None
    for n, item in enumerate(["p1", "p2"]):
        before = profile
        event = Event(f"e{n}", EventType.VIEW, "u1", item, 1000.0 + n, "phones")
        profile, _ = update(profile, event, event.ts, ProfileConfig())
    trigger = triggers_for(before, profile, event, PolicyConfig())[0]
    data = CandidateData(related={"p2": [("p3", 4.0)]},
                         popular_by_category={"phones": [("p4", 10.0), ("p3", 9.0)]})
    decision = decide(trigger, profile, data, None, None, event.ts, PolicyConfig())
    assert decision is not None
    assert dict(decision.sources) == {"p3": Source.RELATED, "p4": Source.CATEGORY}
    assert "sources" not in decision.to_dict()


def test_source_arms_leave_out_items_of_sources_that_keep_missing() -> None:
    learner = Learner(CONFIG, LearningConfig(horizon_s=HORIZON, source_arms=True))
    for n in range(300):
        learner.sources.reward(Source.POPULAR, False)
        learner.sources.reward(Source.RELATED, n % 5 == 0)
        learner.bandit.reward(TriggerKind.BROWSE_INTEREST, n % 5 == 0)
    decision = Decision("d-1", "u-not-in-holdout", (("x", 2.0), ("y", 1.0)),
                        TriggerKind.BROWSE_INTEREST, None, "", 0.0, 0.0, 100.0, False,
                        sources=(("x", Source.POPULAR), ("y", Source.RELATED)))
    assert not in_holdout(decision.user_id, CONFIG.policy.holdout_percent)
    kept = [learner.steer(decision) for _ in range(50)]
    items = [[i for i, _ in d.items] for d in kept if isinstance(d, Decision)]
    assert sum("x" in i for i in items) < 5
    assert sum("y" in i for i in items) > 40
    off = Learner(CONFIG, LearningConfig(horizon_s=HORIZON, bandit=BanditConfig(enabled=False),
                                         source_arms=True))
    assert off.steer(decision) == decision
