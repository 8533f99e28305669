"""Push rate limits: the rules, and an in-memory limiter that applies them.

Every push decision passes :meth:`Limiter.check` before it is published. The rules, in
the order they are applied (the first that refuses gives the reason):

1. **Idempotency.** A ``decision_id`` checked before returns its previous verdict
   (``replayed=True``) without counting again; the record is kept ``decision_ttl_s``. A
   *deferred* record is only replayed until its ``defer_until``; after that the
   decision is evaluated afresh.
2. **Quiet hours** (a pure time rule, no state): a decision made between
   ``quiet_start`` and ``quiet_end`` in the user's zone is deferred to the end of the
   quiet period, or suppressed as ``expired_in_quiet_hours`` if it expires by then.
3. **At most** ``max_per_window`` **pushes per window**, rolling (the last
   ``window_s``) or the user's calendar day.
4. **Minimum gap** ``min_gap_s`` since the user's previous push.
5. **Item cooldown**: an item pushed to the user less than ``item_cooldown_s`` ago is
   removed from the decision; if none of its items remain it is suppressed.
6. **Global budget**: a token bucket (``global_rate_per_s``, ``global_burst``) shared by
   every worker, protecting the notification senders.

A **transactional** decision skips rules 2-5 but not 1 and 6: it always takes a token,
even into debt (the bucket may go negative, so marketing pushes wait until the debt is
repaid), and it is recorded like any push, so it counts towards the window, the gap
and the item cooldown of later marketing pushes. Only an *allowed* verdict records a
push. See ``docs/RATE_LIMITS.md`` for the reasoning behind each choice.

The same rules run in Redis as one atomic script (``streams/limiter.lua``) for the
workers; this module is the single definition of the time arithmetic both use
(:func:`timing`) and the reference implementation the offline replay runs. Times are
compared as *a stored time against a cutoff* ``now - period``, with the same
floating-point operations as the script, so both give identical verdicts; the shared
table ``tests/limits_cases.py`` checks that.

>>> limiter = Limiter(LimitConfig(max_per_window=1))
>>> noon = 1_700_049_600.0  # 2023-11-15 12:00 UTC
>>> limiter.check(LimitRequest("d1", "u1", noon, items=("i1",))).items
('i1',)
>>> limiter.check(LimitRequest("d2", "u1", noon + 7200, items=("i2",))).reason
<SuppressReason.MAX_PER_WINDOW: 'max_per_window'>
>>> again = limiter.check(LimitRequest("d1", "u1", noon + 7200, items=("i1",)))
>>> again.verdict, again.replayed
(<Verdict.ALLOWED: 'allowed'>, True)
>>> limiter.check(LimitRequest("d3", "u1", noon + 11 * 3600)).defer_until == noon + 20 * 3600
True
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_S: Final = 86400.0
#: How long a calendar window's pushes are kept: a calendar day lasts at most 25 h
#: (a fall-back DST day), so two days cover any day in any zone.
CALENDAR_RETENTION_S: Final = 2 * DAY_S


class Verdict(StrEnum):
    ALLOWED = "allowed"
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"


class SuppressReason(StrEnum):
    """Why a decision was not pushed (a bounded label set)."""

    MAX_PER_WINDOW = "max_per_window"
    MIN_GAP = "min_gap"
    ITEM_COOLDOWN = "item_cooldown"
    GLOBAL_BUDGET = "global_budget"
    EXPIRED_IN_QUIET_HOURS = "expired_in_quiet_hours"
    #: Only the Redis limiter gives this: it fails closed when Redis cannot be reached.
    LIMITER_UNAVAILABLE = "limiter_unavailable"


class Window(StrEnum):
    #: The last ``window_s`` seconds, whatever the time zone.
    ROLLING = "rolling"
    #: Since the last local midnight in the user's time zone.
    CALENDAR_DAY = "calendar_day"


@dataclass(frozen=True, slots=True)
class LimitConfig:
    max_per_window: int = 3
    window: Window = Window.ROLLING
    #: Length of a rolling window (unused by a calendar-day window).
    window_s: float = DAY_S
    min_gap_s: float = 3600.0
    item_cooldown_s: float = 7 * DAY_S
    #: Local wall-clock times; equal times disable quiet hours.
    quiet_start: time = time(22, 0)
    quiet_end: time = time(8, 0)
    #: Zone of users whose events carry none (or an unknown one).
    default_tz: str = "UTC"
    global_rate_per_s: float = 200.0
    #: Pushes the senders absorb at once after a quiet spell (two seconds' worth).
    global_burst: int = 400
    #: How long a verdict is remembered for replays of the same decision_id.
    decision_ttl_s: float = 7 * DAY_S

    def __post_init__(self) -> None:
        if self.max_per_window < 1:
            raise ValueError("max_per_window must be >= 1")
        for name in ("window_s", "decision_ttl_s", "global_rate_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("min_gap_s", "item_cooldown_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if self.global_burst < 1:
            raise ValueError("global_burst must be >= 1")
        if self.quiet_start.tzinfo is not None or self.quiet_end.tzinfo is not None:
            raise ValueError("quiet hours are local wall-clock times without tzinfo")
        if _known_zone(self.default_tz) is None:
            raise ValueError(f"unknown time zone {self.default_tz!r}")

    @property
    def retention_s(self) -> float:
        """How long a push stays relevant to the window and gap rules."""
        window = self.window_s if self.window is Window.ROLLING else CALENDAR_RETENTION_S
        return max(window, self.min_gap_s)


@dataclass(frozen=True, slots=True)
class LimitRequest:
    decision_id: str
    user_id: str
    #: Decision time: wall time in a worker, the simulated clock in a replay.
    now: float
    #: Items the push would show; duplicates are dropped, order is kept.
    items: tuple[str, ...] = ()
    #: The user's IANA zone, when the triggering event carried one.
    tz: str | None = None
    #: After this time the push is pointless (e.g. a flash sale ends).
    expires_at: float | None = None
    #: Order confirmations and the like: no marketing limits, no quiet hours.
    transactional: bool = False

    def __post_init__(self) -> None:
        if not self.decision_id or not self.user_id:
            raise ValueError("decision_id and user_id must not be empty")
        if not math.isfinite(self.now):
            raise ValueError("now must be finite")
        object.__setattr__(self, "items", tuple(dict.fromkeys(self.items)))


@dataclass(frozen=True, slots=True)
class LimitResult:
    verdict: Verdict
    reason: SuppressReason | None = None
    #: The items to push (allowed verdicts only): the request's minus those in cooldown.
    items: tuple[str, ...] = ()
    defer_until: float | None = None
    #: This decision_id was checked before and this is its recorded verdict.
    replayed: bool = False
    #: A replayed allowed decision was already marked published: do not send it again.
    published: bool = False

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOWED


def suppressed(reason: SuppressReason) -> LimitResult:
    return LimitResult(Verdict.SUPPRESSED, reason)


@dataclass(frozen=True, slots=True)
class Timing:
    """What the clock alone says about a request; computed in Python for both limiters
    because the Redis script has no time zones."""

    #: A push counts towards the window if it happened strictly after this time.
    window_start: float
    #: End of the quiet period ``now`` falls in (None outside quiet hours).
    defer_until: float | None
    #: In quiet hours, and the decision expires by their end.
    expired: bool


def timing(request: LimitRequest, config: LimitConfig) -> Timing:
    zone = _known_zone(request.tz or "") or ZoneInfo(config.default_tz)
    if config.window is Window.ROLLING:
        window_start = request.now - config.window_s
    else:
        # The window is [midnight, now]: "strictly after" the float just below midnight.
        window_start = math.nextafter(local_midnight(request.now, zone), -math.inf)
    if request.transactional:
        return Timing(window_start, None, False)
    until = quiet_until(request.now, zone, config.quiet_start, config.quiet_end)
    expired = until is not None and request.expires_at is not None and request.expires_at <= until
    return Timing(window_start, until, expired)


def local_midnight(now: float, zone: ZoneInfo) -> float:
    """Start of the local calendar day containing ``now``.

    >>> local_midnight(1_700_049_600.0, ZoneInfo("Asia/Tokyo")) == 1_700_049_600.0 - 21 * 3600
    True
    """
    local = datetime.fromtimestamp(now, zone)
    return datetime.combine(local.date(), time(0), tzinfo=zone).timestamp()


def quiet_until(now: float, zone: ZoneInfo, start: time, end: time) -> float | None:
    """End of the quiet period containing ``now``, or None outside quiet hours.

    ``start <= local time < end``, where a period with ``start > end`` spans midnight.

    >>> utc = ZoneInfo("UTC")
    >>> quiet_until(1_700_049_600.0, utc, time(22), time(8)) is None  # 12:00
    True
    >>> quiet_until(1_700_049_600.0, utc, time(11), time(13)) - 1_700_049_600.0
    3600.0
    """
    if start == end:
        return None
    local = datetime.fromtimestamp(now, zone)
    clock = local.time()
    if start < end:
        quiet, end_date = start <= clock < end, local.date()
    elif clock >= start:
        quiet, end_date = True, local.date() + timedelta(days=1)
    else:
        quiet, end_date = clock < end, local.date()
    if not quiet:
        return None
    end_at = datetime.combine(end_date, end, tzinfo=zone)
    if end_at.timestamp() <= now:
        # On a fall-back night ``end`` is read twice, and now is past the first reading.
        end_at = end_at.replace(fold=1)
    return end_at.timestamp()


@functools.lru_cache(maxsize=4096)
def _known_zone(name: str) -> ZoneInfo | None:
    # Zone names come from events unvalidated: an unknown one falls back to the default.
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@dataclass(slots=True)
class TokenBucket:
    """The global send budget: ``rate`` tokens a second, at most ``burst`` saved up.

    A missing bucket is a full one, so Redis may expire the key once it has refilled.

    >>> bucket = TokenBucket()
    >>> [bucket.take(0.0, rate=1.0, burst=2) for _ in range(3)], bucket.take(1.0, 1.0, 2)
    ([True, True, False], True)
    """

    tokens: float | None = None
    ts: float = 0.0

    def take(self, now: float, rate: float, burst: int, *, force: bool = False) -> bool:
        """Take one token if there is one; ``force`` takes it anyway, into debt."""
        tokens, ts = (float(burst), now) if self.tokens is None else (self.tokens, self.ts)
        if now > ts:
            tokens, ts = min(float(burst), tokens + (now - ts) * rate), now
        granted = force or tokens >= 1
        if granted:
            tokens -= 1
        self.tokens, self.ts = tokens, ts
        return granted


@dataclass(slots=True)
class _Record:
    result: LimitResult
    checked_at: float
    published: bool = False


@dataclass(slots=True)
class _UserState:
    """One user's limiter state; mirrors the user's Redis keys (see the script)."""

    #: decision_id -> push time of the allowed pushes still relevant.
    pushes: dict[str, float] = field(default_factory=dict)
    #: item_id -> last time it was pushed, while in cooldown.
    items: dict[str, float] = field(default_factory=dict)
    #: decision_id -> verdict, in the order they were (re)checked.
    records: dict[str, _Record] = field(default_factory=dict)

    def prune(self, now: float, config: LimitConfig) -> None:
        cutoff = now - config.retention_s
        self.pushes = {d: t for d, t in self.pushes.items() if t > cutoff}
        cooldown_cutoff = now - config.item_cooldown_s
        self.items = {i: t for i, t in self.items.items() if t > cooldown_cutoff}
        # Oldest first, up to the first live record (lookups check the age anyway).
        ttl_cutoff = now - config.decision_ttl_s
        while self.records:
            decision_id, record = next(iter(self.records.items()))
            if record.checked_at > ttl_cutoff:
                break
            del self.records[decision_id]

    def previous(self, decision_id: str, now: float, config: LimitConfig) -> LimitResult | None:
        record = self.records.get(decision_id)
        if record is None or record.checked_at <= now - config.decision_ttl_s:
            return None
        result = record.result
        if result.defer_until is not None and now >= result.defer_until:
            return None  # a deferral ended: the decision is evaluated afresh
        return replace(result, replayed=True, published=record.published)

    def remember(self, decision_id: str, result: LimitResult, now: float) -> None:
        self.records.pop(decision_id, None)  # a re-evaluated record moves to the end
        self.records[decision_id] = _Record(result, now)

    def refusal(self, now: float, window_start: float, config: LimitConfig) -> SuppressReason | None:
        """The window or gap rule that refuses a push now, if any."""
        if sum(t > window_start for t in self.pushes.values()) >= config.max_per_window:
            return SuppressReason.MAX_PER_WINDOW
        if self.pushes and max(self.pushes.values()) > now - config.min_gap_s:
            return SuppressReason.MIN_GAP
        return None

    def eligible(self, items: tuple[str, ...]) -> tuple[str, ...]:
        # prune() has dropped every item whose cooldown is over.
        return tuple(i for i in items if i not in self.items)

    def record_push(self, decision_id: str, now: float, items: tuple[str, ...]) -> None:
        self.pushes[decision_id] = now
        self.items.update(dict.fromkeys(items, now))


class Limiter:
    """The rules on in-memory state, with time passed in (for replays and tests).

    A user's state is pruned when the user is checked, as Redis prunes inside a key; a
    user never checked again keeps their last records (Redis would expire the keys).
    """

    def __init__(self, config: LimitConfig | None = None) -> None:
        self.config = config or LimitConfig()
        self.budget = TokenBucket()
        self._users: dict[str, _UserState] = {}

    def check(self, request: LimitRequest) -> LimitResult:
        """The verdict for one decision; an allowed verdict records the push."""
        state = self._users.setdefault(request.user_id, _UserState())
        state.prune(request.now, self.config)
        result = state.previous(request.decision_id, request.now, self.config)
        if result is None:
            result = self._decide(state, request, timing(request, self.config))
            state.remember(request.decision_id, result, request.now)
        return result

    def mark_published(self, user_id: str, decision_id: str, now: float) -> bool:
        """Note that an allowed decision was sent; False if there is no such record."""
        state = self._users.get(user_id)
        record = state.records.get(decision_id) if state else None
        if record is None or record.checked_at <= now - self.config.decision_ttl_s:
            return False
        if record.result.verdict is not Verdict.ALLOWED:
            return False
        record.published = True
        return True

    def forget_user(self, user_id: str) -> bool:
        """Erase everything kept about a user; True if there was anything."""
        return self._users.pop(user_id, None) is not None

    def _decide(self, state: _UserState, request: LimitRequest, when: Timing) -> LimitResult:
        config, now, items = self.config, request.now, request.items
        if not request.transactional:
            if when.defer_until is not None:
                if when.expired:
                    return suppressed(SuppressReason.EXPIRED_IN_QUIET_HOURS)
                return LimitResult(Verdict.DEFERRED, defer_until=when.defer_until)
            refusal = state.refusal(now, when.window_start, config)
            if refusal is not None:
                return suppressed(refusal)
            items = state.eligible(items)
            if request.items and not items:
                return suppressed(SuppressReason.ITEM_COOLDOWN)
        rate, burst = config.global_rate_per_s, config.global_burst
        if not self.budget.take(now, rate, burst, force=request.transactional):
            return suppressed(SuppressReason.GLOBAL_BUDGET)
        state.record_push(request.decision_id, now, items)
        return LimitResult(Verdict.ALLOWED, items=items)
