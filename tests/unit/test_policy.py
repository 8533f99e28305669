"""The push policy: when triggers fire, what a decision holds, and the control group."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from referencing import Registry, Resource

from models.candidates import CandidateData, decide, needs
from models.decision import AUDIT_SCHEMA_VERSION, Decision, Outcome
from models.events import Event, EventType
from models.limits import LimitResult, Verdict
from models.policy import PolicyConfig, Trigger, TriggerKind, still_valid, triggers_for
from models.profile import Profile, ProfileConfig, update
from models.routing import in_holdout, release_at, route
from models.segments import Segment
from tests.conftest import PROJECT_ROOT

T0 = 1_700_000_000.0
DELAY = PolicyConfig().abandon_delay_s
SCHEMAS = {p.name: json.loads(p.read_text()) for p in (PROJECT_ROOT / "schemas").glob("*.json")}
REGISTRY: Registry[Any] = Registry().with_resources(
    (doc["$id"], Resource.from_contents(doc)) for doc in SCHEMAS.values()
)


def schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(SCHEMAS[name], registry=REGISTRY)


def event(
    n: int,
    item: str,
    ts: float,
    kind: EventType = EventType.VIEW,
    category: str | None = "phones",
    user: str = "u1",
) -> Event:
    return Event(f"e{n}", kind, user, item, ts, category)


class User:
    """A user's profile, updated event by event, remembering the triggers each fired."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.profile: Profile | None = None
        self.fired: list[list[Trigger]] = []
        self.n = 0

    def does(
        self,
        item: str,
        at: float,
        kind: EventType = EventType.VIEW,
        category: str | None = "phones",
    ) -> list[Trigger]:
        ev = event(self.n, item, T0 + at, kind, category)
        self.n += 1
        before = self.profile
        self.profile, applied = update(self.profile, ev, ev.ts, ProfileConfig())
        assert applied
        fired = triggers_for(before, self.profile, ev, self.config)
        self.fired.append(fired)
        return fired

    @property
    def current(self) -> Profile:
        assert self.profile is not None
        return self.profile


def kinds(triggers: Sequence[Trigger]) -> list[str]:
    return [t.kind.value for t in triggers]


def browsed(*items: str, gap: float = 60.0, category: str = "phones") -> User:
    user = User()
    for n, item in enumerate(items):
        user.does(item, n * gap, category=category)
    return user


# -- triggers -------------------------------------------------------------------------


def test_the_second_distinct_item_of_a_category_in_a_session_fires_both_browse_triggers() -> None:
    user = browsed("p1", "p2")
    assert user.fired[0] == []
    assert kinds(user.fired[1]) == ["browse_interest", "browse_abandoned"]
    interest, abandoned = user.fired[1]
    assert interest.due_at == interest.event_ts == T0 + 60
    assert abandoned.due_at == abandoned.event_ts + DELAY
    assert (interest.item_id, interest.category) == ("p2", "phones")


def test_browse_triggers_fire_once_per_category_and_session() -> None:
    user = browsed("p1", "p2", "p3", "p1")
    assert [kinds(f) for f in user.fired[2:]] == [[], []]


def test_viewing_the_same_item_again_is_not_more_interest() -> None:
    assert browsed("p1", "p1", "p1").fired == [[], [], []]


def test_items_of_other_categories_or_other_sessions_do_not_count_together() -> None:
    assert browsed("p1", "t1", category="phones").fired[1] != []  # same category: fires
    user = User()
    user.does("p1", 0.0, category="phones")
    assert user.does("t1", 60.0, category="toys") == []
    # A gap longer than the session gap starts a new session: p2 is the first again.
    assert user.does("p2", 60.0 + ProfileConfig().session_gap_s + 1) == []


def test_events_without_a_category_fire_no_browse_trigger() -> None:
    user = User()
    user.does("p1", 0.0, category=None)
    assert user.does("p2", 60.0, category=None) == []


def test_the_threshold_is_configurable() -> None:
    user = User(PolicyConfig(browse_min_items=3))
    assert [kinds(user.does(item, n * 60.0)) for n, item in enumerate(["a", "b", "c"])] == [
        [],
        [],
        ["browse_interest", "browse_abandoned"],
    ]


def test_a_purchase_fires_an_immediate_post_purchase_trigger() -> None:
    user = User()
    (trigger,) = user.does("p1", 0.0, EventType.BUY)
    assert trigger.kind is TriggerKind.POST_PURCHASE
    assert trigger.due_at == trigger.event_ts
    assert not trigger.transactional


def test_transactional_kinds_are_configured() -> None:
    user = User(PolicyConfig(transactional=frozenset({TriggerKind.POST_PURCHASE})))
    assert user.does("p1", 0.0, EventType.BUY)[0].transactional


def test_disabled_triggers_never_fire() -> None:
    user = User(PolicyConfig(triggers=frozenset({TriggerKind.BROWSE_ABANDONED})))
    user.does("p1", 0.0)
    assert kinds(user.does("p2", 60.0)) == ["browse_abandoned"]
    assert user.does("p3", 120.0, EventType.BUY) == []


def test_triggers_survive_a_round_trip_through_json() -> None:
    for trigger in browsed("p1", "p2").fired[1]:
        assert Trigger.from_dict(orjson.loads(orjson.dumps(trigger.to_dict()))) == trigger


def test_an_abandoned_browse_is_still_valid_at_its_due_time_unless_the_user_bought() -> None:
    user = browsed("p1", "p2")
    abandoned = user.fired[1][1]
    assert still_valid(abandoned, user.current, abandoned.due_at, user.config)
    user.does("p2", 600.0, EventType.BUY)
    assert not still_valid(abandoned, user.current, abandoned.due_at, user.config)


def test_triggers_expire() -> None:
    user = browsed("p1", "p2")
    interest = user.fired[1][0]
    expiry = interest.event_ts + user.config.expiry_s
    assert still_valid(interest, user.current, expiry - 1, user.config)
    assert not still_valid(interest, user.current, expiry, user.config)


# -- decision ids and the control group -----------------------------------------------


def test_decision_ids_depend_only_on_trigger_kind_and_event() -> None:
    interest, abandoned = browsed("p1", "p2").fired[1]
    again = browsed("p1", "p2").fired[1][0]
    assert interest.decision_id == again.decision_id
    assert interest.decision_id != abandoned.decision_id
    assert interest.deferred_to(interest.due_at + 3600).decision_id == interest.decision_id
    other_event = replace(interest, event_id="e-other")
    assert other_event.decision_id != interest.decision_id


@pytest.mark.parametrize("percent", [1.0, 5.0, 20.0])
def test_the_holdout_holds_about_percent_of_users(percent: float) -> None:
    users = [f"user-{n}" for n in range(20_000)]
    share = sum(in_holdout(u, percent) for u in users) / len(users) * 100
    assert share == pytest.approx(percent, abs=max(0.5, percent * 0.1))


def test_holdout_membership_is_stable_and_salted() -> None:
    users = [f"user-{n}" for n in range(2000)]
    first = {u for u in users if in_holdout(u, 10.0)}
    assert first == {u for u in users if in_holdout(u, 10.0)}
    assert first != {u for u in users if in_holdout(u, 10.0, salt="experiment-2")}
    # Raising the percentage only adds users: the control group does not reshuffle.
    assert first <= {u for u in users if in_holdout(u, 20.0)}


def test_deferred_decisions_are_released_spread_over_the_configured_time() -> None:
    config = PolicyConfig(release_spread_s=1800.0)
    releases = [release_at(f"user-{n}", T0, config) for n in range(500)]
    assert all(T0 <= r < T0 + 1800 for r in releases)
    assert max(releases) - min(releases) > 1500
    assert release_at("u1", T0, config) == release_at("u1", T0, config)


# -- candidates -----------------------------------------------------------------------


def interest_of(user: User) -> Trigger:
    return next(t for fired in user.fired for t in fired if t.kind is TriggerKind.BROWSE_INTEREST)


def decide_for(
    user: User, data: CandidateData, trigger: Trigger | None = None, **overrides: Any
) -> Decision | None:
    trigger = trigger or interest_of(user)
    config = replace(user.config, **overrides)
    return decide(trigger, user.current, data, None, None, trigger.due_at, config)


def items(decision: Decision | None) -> list[str]:
    assert decision is not None
    return [item for item, _ in decision.items]


def test_related_and_category_candidates_are_blended_and_overlap_ranks_first() -> None:
    user = browsed("p1", "p2")
    data = CandidateData(
        related={"p2": [("r1", 9.0), ("both", 3.0)]},
        popular_by_category={"phones": [("c1", 100.0), ("both", 99.0)]},
    )
    # r1 and c1 are each the best of their list, and tie.
    assert items(decide_for(user, data)) == ["both", "c1", "r1"]


def test_items_the_user_touched_or_bought_are_never_pushed() -> None:
    user = browsed("p1", "p2")
    user.does("p3", 200.0, EventType.BUY)
    touched = {"p1", "p2", "p3"}
    data = CandidateData(
        related={item: [(other, 5.0) for other in ["p1", "p2", "p3", "new"]] for item in touched},
        popular_by_category={"phones": [("p3", 10.0), ("p1", 9.0), ("new2", 8.0)]},
    )
    assert set(items(decide_for(user, data))) == {"new", "new2"}
    # Viewed items may be allowed back (retargeting); bought ones never.
    assert set(items(decide_for(user, data, exclude_touched=False, items_per_push=4))) == {
        "p1",
        "p2",
        "new",
        "new2",
    }


def test_cold_users_get_popular_items_when_their_own_data_yields_nothing() -> None:
    user = browsed("p1", "p2")
    decision = decide_for(
        user, CandidateData(popular=[("top", 20.0), ("p1", 19.0), ("next", 18.0)])
    )
    assert items(decision) == ["top", "next"]
    assert decision is not None and "popular" in decision.explanation


def test_segment_categories_stand_in_before_overall_popularity() -> None:
    user = browsed("p1", "p2")
    segment = Segment(3, 0.2, (0.0,), (("gadgets", 0.6),), "gadgets · browsing")
    data = CandidateData(popular=[("top", 20.0)], popular_by_category={"gadgets": [("g1", 5.0)]})
    trigger = interest_of(user)
    decision = decide(trigger, user.current, data, 3, segment, trigger.due_at, user.config)
    assert items(decision) == ["g1"] and decision is not None and decision.segment == 3
    assert "gadgets" in needs(trigger, user.current, user.config, segment).categories


def test_a_purchase_without_related_items_is_not_worth_a_push() -> None:
    user = User()
    (trigger,) = user.does("p1", 0.0, EventType.BUY)
    popular_only = CandidateData(
        popular=[("top", 20.0)], popular_by_category={"phones": [("c1", 5.0)]}
    )
    assert decide_for(user, popular_only, trigger) is None
    assert items(decide_for(user, CandidateData(related={"p1": [("case", 4.0)]}), trigger)) == [
        "case"
    ]


def test_nothing_at_all_means_no_decision() -> None:
    assert decide_for(browsed("p1", "p2"), CandidateData()) is None


def test_items_per_push_and_the_relative_score_floor_bound_a_push() -> None:
    user = browsed("p1", "p2")
    data = CandidateData(related={"p2": [("a", 10.0), ("b", 9.0), ("c", 1.0), ("d", 0.5)]})
    assert items(decide_for(user, data, items_per_push=2)) == ["a", "b"]
    assert items(decide_for(user, data, items_per_push=4, min_relative_score=0.5)) == ["a", "b"]


def test_the_explanation_says_where_each_item_comes_from() -> None:
    user = browsed("p1", "p2")
    data = CandidateData(
        related={"p2": [("r1", 9.0)]}, popular_by_category={"phones": [("c1", 1.0)]}
    )
    decision = decide_for(user, data, overlap_bonus=0.0)
    assert decision is not None
    assert "r1: often seen with p2, which you viewed" in decision.explanation
    assert "c1: popular in phones" in decision.explanation


def test_needs_lists_what_decide_reads() -> None:
    user = browsed("p1", "p2")
    user.does("x", 120.0, category=None)
    trigger = interest_of(user)
    need = needs(trigger, user.current, user.config)
    assert need.related_items[0] == "p2"  # the trigger's item first
    assert set(need.related_items) == {"p1", "p2", "x"}
    assert need.categories == ("phones",)  # items without a category add none
    assert need.n_popular >= user.config.popular_per_list + 3  # room for the excluded items


def test_a_decision_is_not_made_once_the_trigger_expired() -> None:
    user = browsed("p1", "p2")
    trigger = interest_of(user)
    data = CandidateData(popular=[("top", 1.0)])
    late = trigger.event_ts + user.config.expiry_s
    assert decide(trigger, user.current, data, None, None, late, user.config) is None


@given(
    related=st.lists(st.tuples(st.sampled_from("abcdefp"), st.floats(0.01, 100.0)), max_size=8),
    popular=st.lists(st.tuples(st.sampled_from("abcdefp"), st.floats(-50.0, 50.0)), max_size=8),
    per_push=st.integers(1, 5),
)
def test_decisions_hold_distinct_new_items_best_first(
    related: list[tuple[str, float]], popular: list[tuple[str, float]], per_push: int
) -> None:
    user = browsed("p1", "p2")
    ranked = sorted(popular, key=lambda kv: -kv[1])
    data = CandidateData(
        related={"p2": sorted(related, key=lambda kv: -kv[1])},
        popular=ranked,
        popular_by_category={"phones": ranked},
    )
    decision = decide_for(user, data, items_per_push=per_push)
    if decision is None:
        return
    chosen = items(decision)
    assert len(chosen) == len(set(chosen)) <= per_push
    assert not {"p1", "p2"} & set(chosen)
    scores = [score for _, score in decision.items]
    assert scores == sorted(scores, reverse=True)


# -- contracts ------------------------------------------------------------------------


def a_decision() -> Decision:
    user = browsed("p1", "p2")
    decision = decide_for(user, CandidateData(related={"p2": [("r1", 9.0), ("r2", 3.0)]}))
    assert decision is not None
    return decision


def test_decisions_validate_against_the_published_schema() -> None:
    decision = a_decision()
    schema("decision.v1.json").validate(orjson.loads(orjson.dumps(decision.to_dict())))
    assert decision.decided_at < decision.expires_at


@pytest.mark.parametrize(
    "outcome, reason",
    [
        (Outcome.SUPPRESSED, "min_gap"),
        (Outcome.HOLDOUT, "holdout"),
        (Outcome.DEFERRED, "quiet_hours"),
    ],
)
def test_audit_records_validate_against_the_published_schema(outcome: Outcome, reason: str) -> None:
    record = a_decision().to_audit_dict(outcome, reason)
    assert record["schema"] == AUDIT_SCHEMA_VERSION
    schema(f"audit.v{AUDIT_SCHEMA_VERSION}.json").validate(orjson.loads(orjson.dumps(record)))


def test_a_decision_becomes_a_limit_request_and_keeps_only_allowed_items() -> None:
    decision = a_decision()
    request = decision.limit_request("Europe/Berlin")
    assert (request.decision_id, request.user_id, request.now) == (
        decision.decision_id,
        "u1",
        decision.decided_at,
    )
    assert request.items == ("r1", "r2") and request.expires_at == decision.expires_at
    assert items(decision.restricted_to(["r2"])) == ["r2"]


def test_invalid_configurations_are_refused() -> None:
    with pytest.raises(ValueError):
        PolicyConfig(items_per_push=0)
    with pytest.raises(ValueError):
        PolicyConfig(abandon_delay_s=PolicyConfig().expiry_s)
    with pytest.raises(ValueError):
        PolicyConfig(holdout_percent=101.0)


def test_a_steered_release_time_is_the_one_the_deferred_trigger_gets() -> None:
    """A learning policy's send time (``release``) moves the quiet-hours release only."""
    decision = a_decision()
    trigger = Trigger(
        decision.trigger, decision.user_id, "e-1", decision.event_ts, decision.event_ts, False, "p2", "phones"
    )
    config = PolicyConfig()
    default = release_at(decision.user_id, decision.decided_at + 600, config)
    deferred = LimitResult(Verdict.DEFERRED, defer_until=decision.decided_at + 600)
    plain = route(trigger, decision, deferred, config)
    steered = route(trigger, decision, deferred, config, release=lambda at: at + 3600)
    assert plain is not None and plain.retry is not None and plain.retry.due_at == default
    assert steered is not None and steered.retry is not None and steered.retry.due_at == default + 3600
    allowed = route(trigger, decision, LimitResult(Verdict.ALLOWED, items=("r1",)), config, release=lambda at: 0.0)
    assert allowed == route(trigger, decision, LimitResult(Verdict.ALLOWED, items=("r1",)), config)
