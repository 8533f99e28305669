"""Fatigue, send time and the bandit: each learns from outcomes only, and can be switched off."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from models.bandit import Bandit, BanditConfig
from models.fatigue import FatigueConfig, UserFatigue
from models.sendtime import SendTimeConfig, UserSendTime, local_hour, send_at

FATIGUE = FatigueConfig(free_ignores=1, cooldown_s=100.0, growth=2.0, max_cooldown_s=1000.0)
outcomes = st.lists(st.booleans(), max_size=30)  # True: engaged, False: ignored


def replay_fatigue(history: list[bool], config: FatigueConfig = FATIGUE) -> UserFatigue:
    user = UserFatigue()
    for n, engaged in enumerate(history):
        if engaged:
            user.engaged()
        else:
            user.ignored(float(n), config)
    return user


@given(outcomes, st.floats(0, 5000), st.floats(0, 5000))
def test_fatigue_never_blocks_a_later_push_it_allowed_earlier(history: list[bool], t: float, dt: float) -> None:
    user = replay_fatigue(history)
    if user.allows(t, FATIGUE):
        assert user.allows(t + dt, FATIGUE)


@given(outcomes)
def test_another_ignore_never_shortens_the_cooldown(history: list[bool]) -> None:
    user = replay_fatigue(history)
    before = user.cooldown_s(FATIGUE)
    user.ignored(float(len(history)), FATIGUE)
    assert FATIGUE.max_cooldown_s >= user.cooldown_s(FATIGUE) >= before


@given(outcomes)
def test_engagement_lifts_the_cooldown_at_once(history: list[bool]) -> None:
    user = replay_fatigue(history)
    user.engaged()
    assert user.allows(float(len(history)), FATIGUE)
    assert UserFatigue.from_dict(user.to_dict()) == user


def test_the_cooldown_doubles_with_each_ignore_after_the_free_ones() -> None:
    user = UserFatigue()
    cooldowns = []
    for n in range(6):
        user.ignored(float(n), FATIGUE)
        cooldowns.append(user.cooldown_s(FATIGUE))
    assert cooldowns == [0.0, 100.0, 200.0, 400.0, 800.0, 1000.0]
    assert not user.allows(5.0 + 999.0, FATIGUE) and user.allows(5.0 + 1000.0, FATIGUE)


@given(outcomes, st.floats(0, 100))
def test_switched_off_fatigue_allows_every_push(history: list[bool], t: float) -> None:
    off = FatigueConfig(enabled=False)
    assert replay_fatigue(history, off).allows(t, off)


DAY0 = datetime(2026, 3, 2, tzinfo=UTC).timestamp()
SENDTIME = SendTimeConfig(min_engagements=2.0, half_life_s=7 * 86400.0)


@given(st.lists(st.tuples(st.integers(0, 13), st.integers(0, 23)), min_size=1, max_size=30))
def test_the_preferred_hour_is_one_the_user_engaged_in(moments: list[tuple[int, int]]) -> None:
    user = UserSendTime()
    for day, hour in sorted(moments):
        user.learn(DAY0 + day * 86400 + hour * 3600 + 60, "UTC", SENDTIME)
    preferred = user.preferred_hour(DAY0 + 14 * 86400, SENDTIME)
    assert preferred is None or preferred in {h for _, h in moments}
    assert UserSendTime.from_dict(user.to_dict()) == user


def test_recent_engagement_outweighs_old_habits() -> None:
    user = UserSendTime()
    for day in range(3):  # three mornings four weeks ago, then three evenings
        user.learn(DAY0 + day * 86400 + 9 * 3600, "UTC", SENDTIME)
    for day in range(28, 31):
        user.learn(DAY0 + day * 86400 + 20 * 3600, "UTC", SENDTIME)
    assert user.preferred_hour(DAY0 + 31 * 86400, SENDTIME) == 20


def test_hours_are_the_users_local_hours() -> None:
    at = datetime(2026, 7, 1, 12, 30, tzinfo=UTC).timestamp()
    assert local_hour(at, "Europe/Berlin") == 14
    user = UserSendTime()
    for day in range(3):
        user.learn(at + day * 86400, "Europe/Berlin", SENDTIME)
    assert user.preferred_hour(at + 3 * 86400, SENDTIME) == 14


def test_without_enough_engagement_or_switched_off_there_is_no_preference() -> None:
    user = UserSendTime()
    user.learn(DAY0, "UTC", SENDTIME)
    assert user.preferred_hour(DAY0, SENDTIME) is None
    off = SendTimeConfig(enabled=False)
    for day in range(5):
        user.learn(DAY0 + day * 86400, "UTC", off)
    assert user.preferred_hour(DAY0 + 5 * 86400, off) is None


@given(st.floats(0, 30 * 86400), st.integers(0, 23), st.floats(0, 3 * 86400))
def test_send_at_never_sends_early_nor_after_expiry(offset: float, hour: int, life: float) -> None:
    default = DAY0 + offset
    expires = default + life
    at = send_at(default, hour, "Europe/Paris", expires)
    assert at == default or (default <= at < expires and local_hour(at, "Europe/Paris") == hour)
    assert at - default < 86400 + 3600  # at most a day later (a DST day has 25 hours)


def test_no_preferred_hour_keeps_the_default_time() -> None:
    assert send_at(DAY0 + 5.0, None, "UTC", DAY0 + 86400) == DAY0 + 5.0


arms = st.sampled_from(["browse_interest", "browse_abandoned", "post_purchase"])
rewards = st.lists(st.tuples(arms, st.booleans()), max_size=60)


@given(rewards, arms, st.integers(0, 2**32))
def test_the_bandit_is_deterministic_for_a_seed(history: list[tuple[str, bool]], arm: str, seed: int) -> None:
    def plays() -> list[bool]:
        bandit = Bandit(BanditConfig())
        for name, converted in history:
            bandit.reward(name, converted)
        rng = random.Random(seed)
        return [bandit.plays(arm, rng) for _ in range(5)]

    assert plays() == plays()


@settings(max_examples=30)
@given(rewards, arms)
def test_a_conversion_never_makes_an_arm_less_likely_to_play(history: list[tuple[str, bool]], arm: str) -> None:
    def share(extra: bool) -> float:
        bandit = Bandit(BanditConfig())
        for name, converted in history:
            bandit.reward(name, converted)
        if extra:
            bandit.reward(arm, True)
        rng = random.Random(1)
        return sum(bandit.plays(arm, rng) for _ in range(400)) / 400

    assert share(True) >= share(False) - 0.1  # Monte Carlo slack of the 400 draws


def test_an_arm_that_keeps_missing_is_played_rarely_but_the_others_are_not_throttled() -> None:
    bandit = Bandit(BanditConfig(tolerance=0.5))
    for n in range(300):
        bandit.reward("browse_interest", n % 20 == 0)
        bandit.reward("browse_abandoned", False)
    bandit.reward("post_purchase", True)  # one lucky new arm must not silence the rest
    rng = random.Random(3)
    plays = {arm: sum(bandit.plays(arm, rng) for _ in range(500)) for arm in sorted(bandit.arms)}
    assert plays["browse_abandoned"] < 25
    assert plays["browse_interest"] > 475
    assert plays["post_purchase"] > 400


@given(rewards, arms)
def test_a_switched_off_bandit_plays_everything_and_learns_nothing(history: list[tuple[str, bool]], arm: str) -> None:
    bandit = Bandit(BanditConfig(enabled=False))
    for name, converted in history:
        bandit.reward(name, converted)
    assert bandit.arms == {}
    assert bandit.plays(arm, random.Random(0))
