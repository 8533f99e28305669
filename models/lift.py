"""Rates and lift with 95 % intervals: how much better do pushed users do than the control group?

A **rate** is a share of exposures that converted (CTR: clicks per push; conversion:
buys per push), with a Wilson score interval, which stays inside [0, 1] and is sane for
small counts and for rates near 0, where pushes live (the normal approximation gives
negative lower bounds there).

**Lift** = treatment rate / control rate (a risk ratio), with the Katz log interval:
``log(lift) ± z · sqrt(1/a - 1/n₁ + 1/c - 1/n₂)`` for ``a`` of ``n₁`` treated and ``c``
of ``n₂`` control exposures converted. **Zero counts**: when either group has no
conversion, the Haldane-Anscombe correction adds ½ to every cell of the 2 x 2 table (the
conversions and the non-conversions of both groups: ``a + ½`` of ``n₁ + 1``), so the
estimate and its interval stay finite and wide rather than 0 or infinite; when neither
group converted, or a group has no exposure at all, there is nothing to compare and the
lift is ``None``. A lift whose upper bound is below 1 means pushes hurt.

:class:`Tally` counts exposures and conversions per group and per key (a trigger kind, a
segment): :func:`lift_by` gives the lift of every key seen in both groups.

>>> treated, control = Rate(60, 1000), Rate(20, 1000)
>>> round(treated.value, 3), [round(x, 3) for x in treated.interval()]
(0.06, [0.047, 0.076])
>>> lift = Lift.of(treated, control)
>>> round(lift.value, 2), [round(x, 2) for x in lift.interval]
(3.0, [1.82, 4.94])
>>> Lift.of(Rate(5, 100), Rate(0, 100)).value  # corrected: 5.5/101 over 0.5/101
11.0
>>> Lift.of(Rate(0, 100), Rate(0, 100)) is None
True
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

#: The normal quantile of a two-sided 95 % interval.
Z95: Final = 1.959963984540054


class Group(StrEnum):
    """Who an exposure belongs to: pushed users, or the control group's would-be pushes."""

    TREATMENT = "treatment"
    CONTROL = "control"


@dataclass(frozen=True, slots=True)
class Rate:
    """``successes`` of ``trials`` (e.g. pushes clicked of pushes)."""

    successes: int
    trials: int

    def __post_init__(self) -> None:
        if not 0 <= self.successes <= self.trials:
            raise ValueError(f"need 0 <= successes <= trials, got {self.successes}/{self.trials}")

    @property
    def value(self) -> float:
        """The observed share; 0 without trials."""
        return self.successes / self.trials if self.trials else 0.0

    def interval(self, z: float = Z95) -> tuple[float, float]:
        """The Wilson score interval; (0, 1) without trials (nothing is known)."""
        n = self.trials
        if n == 0:
            return 0.0, 1.0
        p = self.successes / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        # At 0 and n successes the bounds are exactly 0 and 1; rounding would move them.
        low = 0.0 if self.successes == 0 else max(0.0, centre - half)
        high = 1.0 if self.successes == n else min(1.0, centre + half)
        return low, high

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval()
        return {"successes": self.successes, "trials": self.trials, "rate": self.value,
                "low": low, "high": high}


@dataclass(frozen=True, slots=True)
class Lift:
    """Treatment rate / control rate and its 95 % Katz interval (see the module doc)."""

    value: float
    interval: tuple[float, float]
    #: Whether the zero-count correction was applied.
    corrected: bool

    @classmethod
    def of(cls, treatment: Rate, control: Rate, z: float = Z95) -> Lift | None:
        """None when a group has no exposure or neither group converted."""
        if treatment.trials == 0 or control.trials == 0:
            return None
        if treatment.successes == 0 and control.successes == 0:
            return None
        a, n1 = float(treatment.successes), float(treatment.trials)
        c, n2 = float(control.successes), float(control.trials)
        corrected = a == 0 or c == 0
        if corrected:
            a, c, n1, n2 = a + 0.5, c + 0.5, n1 + 1, n2 + 1
        ratio = (a / n1) / (c / n2)
        spread = z * math.sqrt(max(0.0, 1 / a - 1 / n1 + 1 / c - 1 / n2))
        log_ratio = math.log(ratio)
        return cls(ratio, (math.exp(log_ratio - spread), math.exp(log_ratio + spread)), corrected)

    @property
    def hurts(self) -> bool:
        """The whole interval is below 1: pushes lower the rate."""
        return self.interval[1] < 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"lift": self.value, "low": self.interval[0], "high": self.interval[1],
                "corrected": self.corrected}


@dataclass(slots=True)
class Tally:
    """Exposures and conversions per (group, key); keys are e.g. trigger kinds or segments."""

    exposures: Counter[tuple[Group, Hashable]] = field(default_factory=Counter)
    conversions: Counter[tuple[Group, Hashable]] = field(default_factory=Counter)

    def expose(self, group: Group, key: Hashable = None) -> None:
        self.exposures[group, key] += 1

    def convert(self, group: Group, key: Hashable = None) -> None:
        self.conversions[group, key] += 1

    def rate(self, group: Group, key: Hashable = None) -> Rate:
        return Rate(self.conversions[group, key], self.exposures[group, key])

    def labels(self) -> list[Hashable]:
        return sorted({key for _, key in self.exposures}, key=repr)


def lift_by(tally: Tally) -> dict[Hashable, Lift | None]:
    """The lift of every key (None where it cannot be estimated, see :meth:`Lift.of`)."""
    return {
        key: Lift.of(tally.rate(Group.TREATMENT, key), tally.rate(Group.CONTROL, key))
        for key in tally.labels()
    }


def summary(tally: Tally) -> dict[str, Any]:
    """Both groups' rates and the lift per key, JSON-serialisable (keys as strings)."""
    out: dict[str, Any] = {}
    for key, lift in lift_by(tally).items():
        out[str(key)] = {
            "treatment": tally.rate(Group.TREATMENT, key).to_dict(),
            "control": tally.rate(Group.CONTROL, key).to_dict(),
            "lift": lift.to_dict() if lift is not None else None,
        }
    return out


def tally_of(records: Iterable[tuple[Group, Hashable, bool]]) -> Tally:
    """A tally of (group, key, converted) exposures."""
    tally = Tally()
    for group, key, converted in records:
        tally.expose(group, key)
        if converted:
            tally.convert(group, key)
    return tally
