"""Rates with Wilson intervals and lift with the Katz interval, zero counts included."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.lift import Group, Lift, Rate, lift_by, summary, tally_of


def test_wilson_interval_matches_the_textbook_example() -> None:
    # Wilson (1927) / Newcombe (1998) example: 81 of 263 -> 0.2553 to 0.3662.
    low, high = Rate(81, 263).interval()
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_a_rate_without_trials_knows_nothing() -> None:
    assert Rate(0, 0).value == 0.0
    assert Rate(0, 0).interval() == (0.0, 1.0)


def test_a_rate_refuses_more_successes_than_trials() -> None:
    with pytest.raises(ValueError, match="successes <= trials"):
        Rate(3, 2)


@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_the_wilson_interval_holds_the_rate_and_stays_in_the_unit_interval(k: int, n: int) -> None:
    k = min(k, n)
    low, high = Rate(k, n).interval()
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_katz_interval_of_a_risk_ratio() -> None:
    lift = Lift.of(Rate(60, 1000), Rate(20, 1000))
    assert lift is not None and not lift.corrected
    assert lift.value == pytest.approx(3.0)
    se = math.sqrt(1 / 60 - 1 / 1000 + 1 / 20 - 1 / 1000)
    assert lift.interval == pytest.approx((3 * math.exp(-1.959964 * se), 3 * math.exp(1.959964 * se)))


def test_zero_conversions_in_one_group_are_corrected_not_infinite() -> None:
    lift = Lift.of(Rate(5, 100), Rate(0, 100))
    assert lift is not None and lift.corrected
    assert lift.value == pytest.approx(11.0)
    assert 0 < lift.interval[0] < 11.0 < lift.interval[1] < math.inf
    no_effect = Lift.of(Rate(0, 100), Rate(5, 100))
    assert no_effect is not None and no_effect.hurts is False  # wide: not proven harmful


def test_no_lift_without_exposures_or_without_any_conversion() -> None:
    assert Lift.of(Rate(0, 0), Rate(1, 10)) is None
    assert Lift.of(Rate(1, 10), Rate(0, 0)) is None
    assert Lift.of(Rate(0, 10), Rate(0, 10)) is None


def test_a_lift_whose_upper_bound_is_below_one_hurts() -> None:
    lift = Lift.of(Rate(10, 1000), Rate(60, 1000))
    assert lift is not None and lift.hurts


@given(st.integers(0, 500), st.integers(1, 500), st.integers(0, 500), st.integers(1, 500))
def test_the_lift_interval_holds_the_estimate(a: int, n1: int, c: int, n2: int) -> None:
    lift = Lift.of(Rate(min(a, n1), n1), Rate(min(c, n2), n2))
    if lift is not None:
        assert 0 < lift.interval[0] <= lift.value <= lift.interval[1] < math.inf


def test_lift_per_key_from_a_tally() -> None:
    records = (
        [(Group.TREATMENT, "browse", n < 30) for n in range(100)]
        + [(Group.CONTROL, "browse", n < 10) for n in range(100)]
        + [(Group.TREATMENT, "post", False)]
    )
    tally = tally_of(records)
    lifts = lift_by(tally)
    browse = lifts["browse"]
    assert browse is not None and browse.value == pytest.approx(3.0)
    assert lifts["post"] is None  # no control exposure of that kind
    report = summary(tally)
    assert report["browse"]["treatment"]["successes"] == 30
    assert report["browse"]["control"]["trials"] == 100
    assert report["post"]["lift"] is None
