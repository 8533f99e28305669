"""Scenarios of the push rate limits, one table for both limiters.

``tests/unit/test_limits.py`` runs every case against the in-memory
:class:`models.limits.Limiter`; ``tests/integration/test_limiter_redis.py`` runs the
same cases against :class:`streams.limiter.RedisLimiter` on a real Redis. A case is a
sequence of steps applied in order to a fresh limiter; each step states the verdict the
rules require. Expected times are worked out from the rules by hand, in UTC.

It also holds the strategies of *random* cases, from which the unit tests derive
properties and the integration test compares the two limiters verdict for verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time

from hypothesis import strategies as st

from models.limits import LimitConfig, LimitRequest, LimitResult, SuppressReason, Verdict, Window


def utc(year: int, month: int, day: int, hour: int) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


#: Tuesday 2024-03-05 12:00 UTC: outside the default quiet hours (22:00-08:00 UTC),
#: 07:00 in New York (UTC-5) and 21:00 in Tokyo (UTC+9), days before any DST change.
T0 = utc(2024, 3, 5, 12)
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


@dataclass(frozen=True)
class Check:
    at: float
    decision: str
    expect: LimitResult
    user: str = "u1"
    items: tuple[str, ...] = ()
    tz: str | None = None
    expires_at: float | None = None
    transactional: bool = False

    def request(self) -> LimitRequest:
        return LimitRequest(
            self.decision, self.user, self.at, self.items, self.tz, self.expires_at,
            self.transactional,
        )


@dataclass(frozen=True)
class MarkPublished:
    at: float
    decision: str
    expect: bool
    user: str = "u1"


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Check | MarkPublished, ...]
    config: LimitConfig = field(default_factory=LimitConfig)


def allowed(*items: str) -> LimitResult:
    return LimitResult(Verdict.ALLOWED, items=items)


def refused(reason: SuppressReason) -> LimitResult:
    return LimitResult(Verdict.SUPPRESSED, reason)


def deferred(until: float) -> LimitResult:
    return LimitResult(Verdict.DEFERRED, defer_until=until)


def replayed(result: LimitResult, *, published: bool = False) -> LimitResult:
    return replace(result, replayed=True, published=published)


MAX = SuppressReason.MAX_PER_WINDOW
GAP = SuppressReason.MIN_GAP
COOLDOWN = SuppressReason.ITEM_COOLDOWN
BUDGET = SuppressReason.GLOBAL_BUDGET
EXPIRED = SuppressReason.EXPIRED_IN_QUIET_HOURS

CASES: tuple[Case, ...] = (
    Case("a replayed decision gets its first verdict and is not counted again", (
        Check(T0, "d1", allowed("a"), items=("a",)),
        Check(T0 + 2 * HOUR, "d1", replayed(allowed("a")), items=("a",)),
        # Had the replay counted, the window (2) or the gap would refuse d2.
        Check(T0 + 2 * HOUR, "d2", allowed("b"), items=("b",)),
    ), LimitConfig(max_per_window=2)),
    Case("a replayed suppression stays suppressed after the limit frees up", (
        Check(T0, "d1", allowed()),
        Check(T0 + HOUR, "d2", refused(MAX)),
        Check(T0 + 25 * HOUR, "d2", replayed(refused(MAX))),
        Check(T0 + 25 * HOUR, "d3", allowed()),
    ), LimitConfig(max_per_window=1)),
    Case("a replay says whether the decision was already published", (
        Check(T0, "d1", allowed("a"), items=("a",)),
        Check(T0 + MINUTE, "d1", replayed(allowed("a")), items=("a",)),
        MarkPublished(T0 + MINUTE, "d1", True),
        Check(T0 + 2 * MINUTE, "d1", replayed(allowed("a"), published=True), items=("a",)),
        Check(T0 + 2 * MINUTE, "d2", refused(GAP)),
        MarkPublished(T0 + 2 * MINUTE, "d2", False),
        MarkPublished(T0 + 2 * MINUTE, "never-checked", False),
        MarkPublished(T0 + 2 * MINUTE, "d1", False, user="someone-else"),
    )),
    Case("a verdict is remembered for decision_ttl_s, then the decision is new", (
        Check(T0, "d1", allowed()),
        Check(T0 + 2 * DAY - 1, "d1", replayed(allowed())),
        MarkPublished(T0 + 2 * DAY, "d1", False),
        Check(T0 + 2 * DAY, "d1", allowed()),
    ), LimitConfig(decision_ttl_s=2 * DAY)),
    Case("at most max_per_window pushes in any rolling window", (
        Check(T0, "d1", allowed()),
        Check(T0 + HOUR, "d2", allowed()),
        Check(T0 + 2 * HOUR, "d3", allowed()),
        Check(T0 + 3 * HOUR, "d4", refused(MAX)),
        Check(T0 + DAY - 1, "d5", refused(MAX)),
        # d1 is exactly a window old: it no longer counts.
        Check(T0 + DAY, "d6", allowed()),
        # d2, d3 and d6 are in the window; the window rule comes before the gap rule.
        Check(T0 + DAY + 30 * MINUTE, "d7", refused(MAX)),
    )),
    Case("a calendar-day window starts at local midnight of the user's zone", (
        Check(T0, "d1", allowed(), tz="America/New_York"),  # 07:00 in New York
        Check(T0 + 16 * HOUR + 59 * MINUTE, "d2", refused(MAX), tz="America/New_York"),
        Check(T0 + 17 * HOUR, "d3", allowed(), tz="America/New_York"),  # midnight
        Check(T0 + 17 * HOUR + DAY - MINUTE, "d4", refused(MAX), tz="America/New_York"),
        Check(T0 + 17 * HOUR + DAY, "d5", allowed(), tz="America/New_York"),
        # Without a zone (or with an unknown one) the configured zone, Tokyo, applies.
        Check(T0, "d6", allowed(), user="u2"),  # 21:00 in Tokyo
        Check(T0 + 2 * HOUR + 59 * MINUTE, "d7", refused(MAX), user="u2"),
        Check(T0 + 3 * HOUR, "d8", allowed(), user="u2"),
        Check(T0, "d9", allowed(), user="u3", tz="Not/AZone"),
        Check(T0 + 3 * HOUR, "d10", allowed(), user="u3", tz="Not/AZone"),
    ), LimitConfig(max_per_window=1, window=Window.CALENDAR_DAY, default_tz="Asia/Tokyo",
                   quiet_start=time(0), quiet_end=time(0))),  # no quiet hours
    Case("pushes to a user are at least min_gap_s apart", (
        Check(T0, "d1", allowed()),
        Check(T0 + HOUR - 1, "d2", refused(GAP)),
        Check(T0 + HOUR, "d3", allowed()),
        Check(T0 + HOUR, "d4", allowed(), user="u2"),
    )),
    Case("an item is not pushed to a user again within its cooldown", (
        Check(T0, "d1", allowed("a", "b"), items=("a", "b")),
        Check(T0 + 2 * HOUR, "d2", allowed("c"), items=("a", "c")),
        Check(T0 + 4 * HOUR, "d3", refused(COOLDOWN), items=("a", "b", "c")),
        Check(T0 + 4 * HOUR, "d4", allowed()),  # a decision without items
        Check(T0 + 4 * HOUR, "d5", allowed("a"), user="u2", items=("a",)),
        Check(T0 + 7 * DAY - 1, "d6", refused(COOLDOWN), items=("a",)),
        Check(T0 + 7 * DAY, "d7", allowed("b", "a"), items=("b", "a")),
        Check(T0 + 7 * DAY + HOUR, "d8", refused(COOLDOWN), items=("c",)),
        Check(T0 + 7 * DAY + 2 * HOUR, "d9", allowed("x"), items=("x", "x")),
    )),
    Case("quiet hours defer a decision to their end, or suppress it if it expires first", (
        Check(T0 + 10 * HOUR - 1, "d1", allowed()),  # 21:59:59 UTC
        Check(T0 + 10 * HOUR, "d2", deferred(T0 + 20 * HOUR)),  # 22:00 -> 08:00
        Check(T0 + 15 * HOUR, "d2", replayed(deferred(T0 + 20 * HOUR))),
        Check(T0 + 20 * HOUR - 1, "d2", replayed(deferred(T0 + 20 * HOUR))),
        Check(T0 + 20 * HOUR, "d2", allowed()),  # re-checked when the deferral ends
        Check(T0 + 14 * HOUR, "d3", refused(EXPIRED), user="u2", expires_at=T0 + 20 * HOUR),
        Check(T0 + 14 * HOUR, "d4", deferred(T0 + 20 * HOUR), user="u2",
              expires_at=T0 + 20 * HOUR + 1),
    )),
    Case("quiet hours are those of the user's zone, across a DST change", (
        Check(T0, "d1", allowed(), tz="Asia/Tokyo"),  # 21:00
        Check(T0 + HOUR, "d2", deferred(T0 + 11 * HOUR), user="u2", tz="Asia/Tokyo"),
        Check(T0, "d3", deferred(T0 + HOUR), user="u3", tz="America/New_York"),  # 07:00
        # 23:00 CET on 30 March 2024; 08:00 the next morning is CEST (UTC+2).
        Check(utc(2024, 3, 30, 22), "d4", deferred(utc(2024, 3, 31, 6)), user="u4",
              tz="Europe/Berlin"),
    )),
    Case("a transactional push skips marketing limits and quiet hours but is counted", (
        Check(T0, "d1", allowed("a"), items=("a",)),
        Check(T0 + HOUR, "d2", allowed("b"), items=("b",)),
        Check(T0 + HOUR + MINUTE, "t1", allowed("a"), items=("a",), transactional=True),
        Check(T0 + 10 * HOUR, "t2", allowed(), transactional=True),  # 22:00
        Check(T0 + 10 * HOUR, "t2", replayed(allowed()), transactional=True),
        Check(T0, "t3", allowed("x"), user="u2", items=("x",), transactional=True),
        Check(T0 + 30 * MINUTE, "d3", refused(GAP), user="u2", items=("y",)),
        Check(T0 + 2 * HOUR, "d4", refused(COOLDOWN), user="u2", items=("x",)),
        Check(T0 + 2 * HOUR, "d5", allowed("y"), user="u2", items=("y",)),
        Check(T0 + 4 * HOUR, "d6", refused(MAX), user="u2", items=("z",)),
    ), LimitConfig(max_per_window=2)),
    Case("the global budget is a token bucket that transactional pushes may overdraw", (
        Check(T0, "d1", allowed(), user="u1"),
        Check(T0, "d2", allowed(), user="u2"),
        Check(T0, "d3", refused(BUDGET), user="u3"),
        Check(T0, "t1", allowed(), user="u4", transactional=True),  # 1 token in debt
        Check(T0 + 1, "d4", refused(BUDGET), user="u5"),
        Check(T0 + 2, "d5", allowed(), user="u6"),
        # Refused by a per-user rule first: no token is taken, u7 gets the next one.
        Check(T0 + 3, "d6", refused(GAP), user="u1"),
        Check(T0 + 3, "d7", allowed(), user="u7"),
        Check(T0 + 5, "d3", replayed(refused(BUDGET)), user="u3"),
        # However long the pause, at most a burst is saved up.
        Check(T0 + 100, "d8", allowed(), user="u8"),
        Check(T0 + 100, "d9", allowed(), user="u9"),
        Check(T0 + 100, "d10", refused(BUDGET), user="u10"),
    ), LimitConfig(global_rate_per_s=1.0, global_burst=2)),
)


# --- random cases -----------------------------------------------------------------------

USERS = ("u1", "u2", "u3")
ITEMS = ("a", "b", "c", "d")
ZONES = (None, "Asia/Tokyo", "America/New_York")
#: Small limits, so that every rule refuses often; an unlimited global budget (tests of
#: the budget set their own).
configs = st.builds(
    LimitConfig,
    max_per_window=st.integers(1, 3),
    window=st.sampled_from(Window),
    window_s=st.sampled_from([6 * HOUR, DAY]),
    min_gap_s=st.sampled_from([0.0, 600.0, HOUR]),
    item_cooldown_s=st.sampled_from([0.0, 2 * HOUR, 7 * DAY]),
    quiet_start=st.sampled_from([time(22), time(0)]),
    quiet_end=st.sampled_from([time(8), time(0)]),
    global_rate_per_s=st.just(1e6),
    global_burst=st.just(1_000_000),
)


@st.composite
def request_streams(draw: st.DrawFn, transactional: bool = False) -> list[LimitRequest]:
    """Requests in time order (whole seconds), with decision ids that repeat; each user
    keeps one time zone (a calendar day is only defined within one)."""
    zone_of = {user: draw(st.sampled_from(ZONES)) for user in USERS}
    steps = draw(st.lists(st.tuples(
        st.sampled_from([0, 1, 60, 599, 600, 1800, 3599, 3600, 7200, 6 * 3600, 86399, 86400]),
        st.sampled_from(USERS),
        st.integers(0, 9),
        st.lists(st.sampled_from(ITEMS), max_size=3),
        st.booleans() if transactional else st.just(False),
    ), max_size=40))
    now, out = T0, []  # times stay whole numbers of seconds: exact differences
    for gap, user, decision, items, is_transactional in steps:
        now += gap
        out.append(LimitRequest(f"{user}-{decision}", user, now, tuple(items), zone_of[user],
                                transactional=is_transactional))
    return out
