"""Push quality over a log: did users touch what they were pushed, next to two baselines?

Protocol (the same as the independent scorer ``push_precision.py`` of the shared tools,
whose figures :func:`evaluate_pushes` reproduces exactly). For each push (user, time
``t`` = its ``decided_at``, items):

* a pushed item is **new** if the user had not touched it at or before ``t``;
* it is a **hit** if the user views, clicks or buys it in ``(t, t + horizon]``;
* **precision_new** = hits among new pushed items / new pushed items (``precision_any``
  counts every pushed item); **buy_rate_new** = new pushed items bought in the horizon /
  new pushed items.

Two baselines fill **the same slots** (user, time, number of items) from the events up
to ``t`` (inclusive), with items new to the user:

* ``baseline`` (popularity) — the most frequent items of the trailing 7 days, the list
  refreshed hourly;
* ``coview`` — a naive item-to-item recommender: raw counts of items co-occurring within
  a user's last 5 events, the user's last 3 events' top-20 co-items summed, topped up
  from the popularity list.

Reach: pushes per active user and the share of active users pushed (active: at least one
event in the log). Given the audit records, unsent decisions are counted by outcome and
reason. Events are every parsable row of the log (a replay's outlier screening does not
apply: the scorer judges against what users really did).

>>> from models.events import Event, EventType
>>> log = [Event(f"e{n}", EventType.VIEW, u, i, 100.0 + n) for n, (u, i) in
...        enumerate([("u1", "a"), ("u2", "a"), ("u2", "b"), ("u1", "b")])]
>>> pushes = [{"user_id": "u1", "decided_at": 100.5, "items": [{"item_id": "b"}]}]
>>> report = evaluate_pushes(log, pushes, horizon_s=3600.0)
>>> report["precision_new"], report["baseline_precision_new"]
(1.0, 0.0)
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from models.evaluate import share
from models.events import Event, EventType
from models.logfile import BadRow

DEFAULT_HORIZON_S: Final = 24 * 3600.0
#: The popularity baseline: trailing window, refresh period, list length.
POPULAR_WINDOW_S: Final = 7 * 86400.0
POPULAR_REFRESH_S: Final = 3600.0
POPULAR_SIZE: Final = 500
#: The co-view baseline: pair window (events), query (latest events), fan-out per item.
COVIEW_WINDOW: Final = 5
COVIEW_QUERY: Final = 3
COVIEW_FANOUT: Final = 20
#: Figures are rounded as the shared scorer rounds them, so both print the same.
DIGITS: Final = 5


@dataclass(frozen=True, slots=True)
class Push:
    decided_at: float
    user_id: str
    items: tuple[str, ...]
    trigger: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Push:
        items = tuple(str(x["item_id"] if isinstance(x, Mapping) else x) for x in data["items"])
        return cls(
            float(data["decided_at"]), str(data["user_id"]), items, str(data.get("trigger", ""))
        )

    def order(self) -> tuple[float, str, tuple[str, ...]]:
        return self.decided_at, self.user_id, self.items


class _History:
    """Every user's events in time order, to see what they did before and after a push."""

    def __init__(self, events: Sequence[tuple[float, str, str, EventType]]) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.items: dict[str, list[tuple[str, EventType]]] = defaultdict(list)
        for ts, user, item, kind in events:
            self.times[user].append(ts)
            self.items[user].append((item, kind))

    def before(self, user: str, t: float) -> set[str]:
        """Items touched at or before ``t``."""
        end = bisect.bisect_right(self.times.get(user, []), t)
        return {item for item, _ in self.items[user][:end]} if end else set()

    def within(self, user: str, t: float, horizon: float) -> tuple[set[str], set[str]]:
        """Items touched, and items bought, in ``(t, t + horizon]``."""
        times = self.times.get(user, [])
        start, end = bisect.bisect_right(times, t), bisect.bisect_right(times, t + horizon)
        window = self.items[user][start:end]
        return {i for i, _ in window}, {i for i, kind in window if kind is EventType.BUY}


class _Baselines:
    """Both baselines, fed the events up to each slot's time in order."""

    def __init__(self, events: Sequence[tuple[float, str, str, EventType]]) -> None:
        self.events = events
        self.next = 0
        self.window: deque[tuple[float, str]] = deque()
        self.counts: Counter[str] = Counter()
        self.top: list[str] = []
        self.top_at = -float("inf")
        self.pairs: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.recent: defaultdict[str, list[str]] = defaultdict(list)

    def advance(self, t: float) -> None:
        events = self.events
        while self.next < len(events) and events[self.next][0] <= t:
            ts, user, item, _ = events[self.next]
            for other in self.recent[user][-COVIEW_WINDOW:]:
                if other != item:
                    self.pairs[item][other] += 1
                    self.pairs[other][item] += 1
            self.recent[user].append(item)
            self.window.append((ts, item))
            self.counts[item] += 1
            self.next += 1
        while self.window and self.window[0][0] < t - POPULAR_WINDOW_S:
            _, item = self.window.popleft()
            self.counts[item] -= 1
            if self.counts[item] <= 0:
                del self.counts[item]
        if t - self.top_at >= POPULAR_REFRESH_S or not self.top:
            self.top = [item for item, _ in self.counts.most_common(POPULAR_SIZE)]
            self.top_at = t

    def popular(self, k: int, exclude: set[str]) -> list[str]:
        return [item for item in self.top if item not in exclude][:k]

    def coview(self, user: str, k: int, exclude: set[str], popular: list[str]) -> list[str]:
        candidates: Counter[str] = Counter()
        for item in self.recent[user][-COVIEW_QUERY:]:
            for other, count in self.pairs[item].most_common(COVIEW_FANOUT):
                if other not in exclude:
                    candidates[other] += count
        chosen = [item for item, _ in candidates.most_common(k)]
        chosen += [item for item in popular if item not in chosen][: k - len(chosen)]
        return chosen


@dataclass(slots=True)
class _Tally:
    """Pushed items and hits: of all pushed items, of new ones, and bought new ones."""

    items: int = 0
    hits: int = 0
    new: int = 0
    new_hits: int = 0
    new_bought: int = 0
    decisions: int = 0
    users: set[str] = field(default_factory=set)
    distinct: set[str] = field(default_factory=set)

    def add(self, push: Push, before: set[str], touched: set[str], bought: set[str]) -> None:
        self.decisions += 1
        self.users.add(push.user_id)
        for item in push.items:
            self.items += 1
            self.hits += item in touched
            self.distinct.add(item)
            if item not in before:
                self.new += 1
                self.new_hits += item in touched
                self.new_bought += item in bought

    @property
    def precision_new(self) -> float:
        return share(self.new_hits, self.new)


def evaluate_pushes(
    events: Iterable[Event | BadRow],
    decisions: Iterable[Mapping[str, Any]],
    audit: Iterable[Mapping[str, Any]] = (),
    horizon_s: float = DEFAULT_HORIZON_S,
) -> dict[str, Any]:
    """Push metrics of ``decisions`` (pushes) against ``events`` (see the module doc)."""
    log = sorted((e.ts, e.user_id, e.item_id, e.type) for e in events if isinstance(e, Event))
    history = _History(log)
    baselines = _Baselines(log)
    ours, popular, coview = _Tally(), _Tally(), _Tally()
    by_trigger: dict[str, _Tally] = defaultdict(_Tally)
    for push in sorted((Push.from_dict(d) for d in decisions), key=Push.order):
        baselines.advance(push.decided_at)
        before = history.before(push.user_id, push.decided_at)
        touched, bought = history.within(push.user_id, push.decided_at, horizon_s)
        ours.add(push, before, touched, bought)
        by_trigger[push.trigger].add(push, before, touched, bought)
        k = len(push.items)
        top = baselines.popular(k, before)
        popular.add(_slot(push, top), before, touched, bought)
        coview.add(
            _slot(push, baselines.coview(push.user_id, k, before, top)), before, touched, bought
        )
    active = len(history.times)
    return {
        **_reference_figures(ours, popular, coview),
        "horizon_h": horizon_s / 3600.0,
        "hits_new": ours.new_hits,
        "baseline_hits_new": popular.new_hits,
        "coview_hits_new": coview.new_hits,
        "buy_rate_new": round(share(ours.new_bought, ours.new), DIGITS),
        "active_users": active,
        "share_users_pushed": round(share(len(ours.users), active), DIGITS),
        "pushes_per_active_user": round(share(ours.decisions, active), DIGITS),
        "by_trigger": {
            name: {
                "decisions": t.decisions,
                "pushed_new": t.new,
                "precision_new": round(t.precision_new, DIGITS),
            }
            for name, t in sorted(by_trigger.items())
        },
        "unsent": _unsent(audit),
    }


def _slot(push: Push, items: list[str]) -> Push:
    return Push(push.decided_at, push.user_id, tuple(items), push.trigger)


def _reference_figures(ours: _Tally, popular: _Tally, coview: _Tally) -> dict[str, Any]:
    """The figures the shared scorer prints, named and rounded as it does."""
    p_new, p_base, p_coview = ours.precision_new, popular.precision_new, coview.precision_new
    return {
        "decisions": ours.decisions,
        "users_pushed": len(ours.users),
        "distinct_items_pushed": len(ours.distinct),
        "pushed_items": ours.items,
        "precision_any": round(share(ours.hits, ours.items), DIGITS),
        "pushed_new": ours.new,
        "precision_new": round(p_new, DIGITS),
        "baseline_precision_new": round(p_base, DIGITS),
        "coview_precision_new": round(p_coview, DIGITS),
        "ratio_vs_coview": round(p_new / p_coview, 3) if p_coview else None,
        "ratio": round(p_new / p_base, 3) if p_base else None,
    }


def _unsent(audit: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Unsent decisions by outcome, then by reason."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for record in audit:
        counts[str(record["outcome"])][str(record["reason"])] += 1
    return {outcome: dict(sorted(c.items())) for outcome, c in sorted(counts.items())}
