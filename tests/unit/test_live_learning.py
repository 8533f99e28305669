"""The worker's learning policies: what they stop, what they count for the shared bandit, and
the static policy while Redis cannot be reached."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from models.attribution import Scope, Signal
from models.decided import DecidedPush, DecisionLog
from models.decision import Decision
from models.lift import Group
from models.outcomes import OutcomeKind
from models.policy import TriggerKind
from models.routing import in_holdout
from streams.learning import LiveLearning, arm_counts
from streams.settings import load

NOW = 1_700_000_000.0


class FakePipeline:
    """Records the commands; answers HGETALL from ``store`` (a hash), or fails."""

    def __init__(self, store: dict[bytes, bytes] | None) -> None:
        self.store = store
        self.calls: list[tuple[str, str, int]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *_: Any) -> None:
        return None

    def hincrby(self, key: str, field: str, count: int) -> None:
        self.calls.append((key, field, count))

    def hgetall(self, key: str) -> None:
        return None

    async def execute(self) -> list[Any]:
        if self.store is None:
            raise ConnectionError("Redis is down")
        for _, field, count in self.calls:
            self.store[field.encode()] = str(int(self.store.get(field.encode(), b"0")) + count).encode()
        return [1] * len(self.calls) + [dict(self.store)]


class FakeRedis:
    def __init__(self, store: dict[bytes, bytes] | None) -> None:
        self.store = store
        self.round_trips = 0

    def pipeline(self, transaction: bool) -> FakePipeline:
        self.round_trips += 1
        return FakePipeline(self.store)


def entry(n: int, group: Group = Group.TREATMENT, dismissed: bool = True, credited: bool = False) -> DecidedPush:
    return DecidedPush(
        f"d{n}", NOW + n, ("p1",), ("toys",), TriggerKind.BROWSE_INTEREST, None, group,
        seen=frozenset({OutcomeKind.DISMISSED}) if dismissed else frozenset(),
        credited=frozenset({(Signal.BUY, Scope.ITEM)}) if credited else frozenset(),
    )


def decision(user: str, trigger: TriggerKind = TriggerKind.BROWSE_INTEREST) -> Decision:
    return Decision(f"x-{user}", user, (("p2", 1.0),), trigger, None, "", NOW + 10, NOW + 10, NOW + 86400, False)


def learning(env: dict[str, str], table: dict[bytes, bytes], redis: FakeRedis | None = None) -> LiveLearning:
    return LiveLearning(load(env), redis or FakeRedis({}), table)  # type: ignore[arg-type]


def user(holdout: bool) -> str:
    return next(u for u in (f"u{n}" for n in range(100)) if in_holdout(u, 50.0) == holdout)


def test_fatigue_stops_a_user_who_dismissed_their_pushes_but_never_a_control_user() -> None:
    treated, control = user(False), user(True)
    log = DecisionLog([entry(0), entry(1)]).to_bytes()
    live = learning({"NUDGESTREAM_LEARNING": "fatigue", "NUDGESTREAM_HOLDOUT_PERCENT": "50"},
                    {treated.encode(): log, control.encode(): log})
    assert live.steer(decision(treated)) == "fatigue"
    assert live.steer(decision(control)) is None


def test_off_policies_stop_nothing() -> None:
    live = learning({"NUDGESTREAM_LEARNING": "sendtime", "NUDGESTREAM_HOLDOUT_PERCENT": "0"},
                    {b"ann": DecisionLog([entry(0), entry(1)]).to_bytes()})
    assert live.steer(decision("ann")) is None


def test_the_bandit_counts_treated_exposures_and_first_conversions_in_one_round_trip() -> None:
    redis = FakeRedis({})
    live = learning({"NUDGESTREAM_LEARNING": "bandit"}, {}, redis)
    live.exposed([entry(0, dismissed=False), entry(1, Group.CONTROL, dismissed=False), entry(2, dismissed=False)])
    first = entry(0, dismissed=False)
    again = entry(2, dismissed=False, credited=True)  # a second signal of a converted decision
    live.converted([(first, Signal.CLICK), (first, Signal.BUY), (again, Signal.CLICK),
                    (entry(3, Group.CONTROL, dismissed=False), Signal.BUY)])
    asyncio.run(live.sync())
    assert redis.round_trips == 1
    assert arm_counts(redis.store or {}) == {"browse_interest": (2, 1)}
    assert live.bandit is not None and live.bandit.arms["browse_interest"].misses == 1


def test_while_redis_is_down_the_static_policy_applies_and_nothing_is_lost() -> None:
    redis = FakeRedis(None)
    live = learning({"NUDGESTREAM_LEARNING": "bandit", "NUDGESTREAM_HOLDOUT_PERCENT": "0"}, {}, redis)
    live.exposed([entry(n, dismissed=False) for n in range(50)])
    asyncio.run(live.sync())
    assert live.bandit is None and live.steer(decision("ann")) is None
    redis.store = {}
    asyncio.run(live.sync())
    assert arm_counts(redis.store) == {"browse_interest": (50, 0)}, "kept and written at the next sync"


@pytest.mark.parametrize("converting", [True, False])
def test_a_bandit_draw_is_the_same_for_the_same_decision_and_follows_the_counts(converting: bool) -> None:
    live = learning({"NUDGESTREAM_LEARNING": "bandit", "NUDGESTREAM_HOLDOUT_PERCENT": "0"}, {},
                    FakeRedis({b"browse_interest:exposures": b"100",
                               b"browse_interest:conversions": b"30" if converting else b"0",
                               b"post_purchase:exposures": b"100", b"post_purchase:conversions": b"30"}))
    asyncio.run(live.sync())
    verdicts = [live.steer(decision(f"u{n}")) for n in range(20)]
    assert verdicts == [live.steer(decision(f"u{n}")) for n in range(20)], "seeded by the decision id"
    # 30 % against a pooled 15 %: always played; 0 of 100 against it: (almost) never.
    assert set(verdicts) == ({None} if converting else {"bandit"})
