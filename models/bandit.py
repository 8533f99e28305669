"""A Thompson-sampling bandit: which trigger kinds and candidate sources deserve a push?

Each **arm** (a trigger kind, a candidate source: any name) has a Beta posterior of its
conversion rate, ``Beta(prior_alpha + conversions, prior_beta + misses)``, updated once
per push when its attribution is known (:meth:`Bandit.reward`). Arms do not exclude each
other (one event fires several triggers), so the bandit does not pick one arm: it
**gates** each push of an arm. :meth:`Bandit.plays` draws the arm's rate from its
posterior and the rate of all pushes (every arm pooled) from theirs, and lets the push
go when the arm's draw is at least ``tolerance`` times the pooled draw. An arm with
little data draws widely and is still tried; an arm that keeps missing while the others
convert is played less and less, never quite zero. (Against the pooled rate, not the
best arm's draw: one new arm's wide draws would otherwise throttle every other arm.)

The caller keeps the control group away from it: a holdout user's would-be push is
neither gated nor rewarded (the lift it measures is the static policy's). Draws come
from the caller's seeded :class:`random.Random`, so a replay repeats itself.

>>> import random
>>> bandit = Bandit(BanditConfig(tolerance=0.5))
>>> for n in range(200):
...     bandit.reward("browse_interest", n % 10 == 0)   # converts 1 in 10
...     bandit.reward("browse_abandoned", False)          # never converts
>>> rng = random.Random(7)
>>> sum(bandit.plays("browse_abandoned", rng) for _ in range(100))  # rarely, not never
1
>>> sum(bandit.plays("browse_interest", rng) for _ in range(100))
100
>>> bandit.plays("new_kind", rng) in (True, False)  # unknown arms start from the prior
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class BanditConfig:
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    #: A push goes when its arm's draw is at least this share of the best arm's draw.
    tolerance: float = 0.5
    #: Off: every push goes, nothing is learnt.
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.prior_alpha <= 0 or self.prior_beta <= 0:
            raise ValueError("the Beta prior needs prior_alpha > 0 and prior_beta > 0")
        if not 0 <= self.tolerance <= 1:
            raise ValueError("tolerance must be in [0, 1]")


@dataclass(slots=True)
class Arm:
    conversions: int = 0
    misses: int = 0

    def draw(self, config: BanditConfig, rng: random.Random) -> float:
        return rng.betavariate(config.prior_alpha + self.conversions, config.prior_beta + self.misses)

    def mean(self, config: BanditConfig) -> float:
        alpha = config.prior_alpha + self.conversions
        return alpha / (alpha + config.prior_beta + self.misses)


@dataclass(slots=True)
class Bandit:
    config: BanditConfig = field(default_factory=BanditConfig)
    arms: dict[str, Arm] = field(default_factory=dict)

    def reward(self, arm: str, converted: bool) -> None:
        """One push of ``arm`` is resolved: it converted, or its window closed without."""
        if not self.config.enabled:
            return
        state = self.arms.setdefault(arm, Arm())
        if converted:
            state.conversions += 1
        else:
            state.misses += 1

    def plays(self, arm: str, rng: random.Random) -> bool:
        """Whether a push of ``arm`` goes now (a Thompson draw of it and of all arms)."""
        if not self.config.enabled:
            return True
        pooled = Arm(sum(a.conversions for a in self.arms.values()),
                     sum(a.misses for a in self.arms.values()))
        own = self.arms.get(arm, Arm()).draw(self.config, rng)
        return own >= self.config.tolerance * pooled.draw(self.config, rng)

    def to_dict(self) -> dict[str, Any]:
        return {name: {"conversions": a.conversions, "misses": a.misses,
                       "mean": a.mean(self.config)} for name, a in sorted(self.arms.items())}
