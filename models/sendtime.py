"""Send time: a per-user preferred hour, learnt from when the user engaged before.

Each engagement (a credited push, or any event the caller counts as engagement) adds
one to the user's **local hour** of that moment, the older ones decayed with
``half_life_s``; once the user's decayed total reaches ``min_engagements`` the
preferred hour is the strongest one (ties: the earliest hour). When a push must wait
(quiet hours), :func:`send_at` sends it at the user's next preferred hour instead of
the end of the quiet hours, if that is still before the decision expires; otherwise,
or without a preference, it keeps the default time.

>>> from datetime import datetime, timezone
>>> config = SendTimeConfig(min_engagements=2)
>>> user = UserSendTime()
>>> at_19h = datetime(2026, 1, 5, 19, 10, tzinfo=timezone.utc).timestamp()
>>> for day in range(3):
...     user.learn(at_19h + day * 86400, "UTC", config)
>>> user.preferred_hour(at_19h + 3 * 86400, config)
19
>>> morning = datetime(2026, 1, 9, 8, 0, tzinfo=timezone.utc).timestamp()
>>> sent = send_at(morning, 19, "UTC", morning + 86400)
>>> datetime.fromtimestamp(sent, timezone.utc).strftime("%H:%M")
'19:00'
>>> send_at(morning, 19, "UTC", morning + 3600) == morning  # would expire first
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

HOURS = 24


@dataclass(frozen=True, slots=True)
class SendTimeConfig:
    #: Decayed engagements a user needs before their preferred hour is used.
    min_engagements: float = 3.0
    half_life_s: float = 14 * 86400.0
    #: Off: deferred pushes keep the default release time.
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.min_engagements <= 0 or self.half_life_s <= 0:
            raise ValueError("need min_engagements > 0 and half_life_s > 0")


@dataclass(slots=True)
class UserSendTime:
    """Decayed engagement counts per local hour, as of ``ts``."""

    hours: list[float] = field(default_factory=lambda: [0.0] * HOURS)
    ts: float | None = None

    def learn(self, at: float, tz: str, config: SendTimeConfig) -> None:
        """The user engaged at ``at`` (epoch seconds), living in zone ``tz``."""
        if not config.enabled:
            return
        self._decay_to(at, config)
        self.hours[local_hour(at, tz)] += 1.0

    def preferred_hour(self, now: float, config: SendTimeConfig) -> int | None:
        """The strongest local hour as of ``now``, or None without enough engagement."""
        if not config.enabled or self.ts is None:
            return None
        factor = _decay(now - self.ts, config) if now > self.ts else 1.0
        weights = [w * factor for w in self.hours]
        if sum(weights) < config.min_engagements:
            return None
        return max(range(HOURS), key=lambda h: (weights[h], -h))

    def _decay_to(self, at: float, config: SendTimeConfig) -> None:
        # Events may come late: a late one is added undecayed to the current state.
        if self.ts is not None and at > self.ts:
            factor = _decay(at - self.ts, config)
            self.hours = [w * factor for w in self.hours]
        if self.ts is None or at > self.ts:
            self.ts = at

    def to_dict(self) -> dict[str, Any]:
        return {"hours": list(self.hours), "ts": self.ts}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserSendTime:
        return cls([float(w) for w in data["hours"]], data["ts"])


def _decay(elapsed: float, config: SendTimeConfig) -> float:
    return math.exp2(-elapsed / config.half_life_s)


def local_hour(at: float, tz: str) -> int:
    return datetime.fromtimestamp(at, ZoneInfo(tz)).hour


def send_at(default: float, hour: int | None, tz: str, expires_at: float) -> float:
    """The first moment at or after ``default`` that is ``hour``:00 local time, if that
    comes before ``expires_at``; else (or with no preferred hour) ``default``."""
    if hour is None:
        return default
    zone = ZoneInfo(tz)
    start = datetime.fromtimestamp(default, zone)
    candidate = start.replace(hour=hour, minute=0, second=0, microsecond=0)
    if candidate.timestamp() < default:
        candidate = (candidate + timedelta(days=1)).replace(hour=hour)
    at = candidate.timestamp()
    return at if at < expires_at else default
