"""Fatigue: users who ignore pushes get fewer of them.

Each user has an **ignore streak**: the pushes in a row that earned nothing in their
attribution window (:class:`models.attribution.Closed` without credit). Up to
``free_ignores`` ignored pushes cost nothing; after that, each further ignore doubles
(``growth``) a **cool-down** counted from the latest ignore, capped at
``max_cooldown_s``: the user gets no marketing push until it has passed. Any
engagement (a credited push) ends the streak at once. The state is two numbers per
user, updated only from outcomes already known: a push still in its window counts
neither way.

>>> config = FatigueConfig(free_ignores=1, cooldown_s=3600.0)
>>> user = UserFatigue()
>>> user.ignored(100.0, config); user.allows(200.0, config)  # the first ignore is free
True
>>> user.ignored(300.0, config); user.allows(3000.0, config), user.allows(3900.0, config)
(False, True)
>>> user.cooldown_s(config)  # a third ignore would double it
3600.0
>>> user.engaged(); user.allows(3000.0, config)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FatigueConfig:
    #: Ignored pushes in a row tolerated before the cool-down starts.
    free_ignores: int = 1
    #: The first cool-down, multiplied by ``growth`` at each further ignore, up to the cap.
    cooldown_s: float = 6 * 3600.0
    growth: float = 2.0
    max_cooldown_s: float = 7 * 86400.0
    #: Off: every push is allowed.
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.free_ignores < 0 or self.cooldown_s < 0 or self.growth < 1:
            raise ValueError("need free_ignores >= 0, cooldown_s >= 0 and growth >= 1")
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError("max_cooldown_s must be >= cooldown_s")


@dataclass(slots=True)
class UserFatigue:
    """One user's ignore streak and when the latest ignore became known."""

    streak: int = 0
    last_ignored_at: float | None = None

    def ignored(self, at: float, config: FatigueConfig) -> None:
        """A push's window closed at ``at`` with nothing credited."""
        if config.enabled:
            self.streak += 1
            last = self.last_ignored_at
            self.last_ignored_at = at if last is None else max(last, at)

    def engaged(self) -> None:
        """A push earned a credit: the user is listening again."""
        self.streak = 0

    def cooldown_s(self, config: FatigueConfig) -> float:
        """The pause after the latest ignore (0 within the free ignores)."""
        excess = self.streak - config.free_ignores
        if excess <= 0:
            return 0.0
        # Capped before the power overflows: the cap is reached long before.
        return min(config.max_cooldown_s, config.cooldown_s * config.growth ** min(excess - 1, 64))

    def allows(self, now: float, config: FatigueConfig) -> bool:
        """Whether a marketing push may go to this user at ``now``."""
        if not config.enabled or self.last_ignored_at is None:
            return True
        return now >= self.last_ignored_at + self.cooldown_s(config)

    def to_dict(self) -> dict[str, Any]:
        return {"streak": self.streak, "last_ignored_at": self.last_ignored_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserFatigue:
        last = data["last_ignored_at"]
        return cls(int(data["streak"]), None if last is None else float(last))
