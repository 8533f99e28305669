"""Attribution: which later clicks and buys does a push (or a would-be push) get credit for?

A push to a user opens an :class:`Exposure` for ``window_s`` after it is sent; a holdout
record (the push the control group would have received) opens one too, in the control
:class:`~models.lift.Group`, so both groups are measured alike. An event of the same
user in ``(sent_at, sent_at + window_s]`` is **attributed** to the exposure:

* scope ``item`` when the event's item is one of the pushed items;
* scope ``category`` when its category is one of the pushed items' categories (a pushed
  item is in its own category, so the category rate includes the item rate);
* signal ``click`` for a click, ``buy`` for a buy, and ``touch`` for any event (view,
  click or buy: the proxy an offline replay uses, as the push-precision scorer does).

**Exactly once.** Each (decision id, signal, scope) is attributed at most once however
many matching events come and however often an event or an exposure is delivered
again: an exposure is keyed by its decision id (a second one is ignored) and remembers
what it was credited with. An event matching several open exposures (two pushes in one
window) is credited to each: each decision's rate is its own. All of a user's state is
one :class:`UserAttribution` (JSON-able), so a user-partitioned worker keeps it in a
table and a replay of its input finds the credits already given. A closed exposure's
id is remembered for ``retention_s`` more, so a late duplicate is still recognised;
older exposures are refused (:meth:`UserAttribution.expose` returns False): nothing can
be attributed to them any more without risking a double count.

Time is the caller's (event times, or a worker's clock): nothing here reads a clock.

>>> from models.events import Event, EventType
>>> from models.lift import Group
>>> config = AttributionConfig(window_s=3600.0)
>>> user = UserAttribution()
>>> push = Exposure("d-1", "u1", Group.TREATMENT, 100.0, ("a",), ("toys",), "browse_interest")
>>> user.expose(push, 100.0, config), user.expose(push, 100.0, config)  # a replay: ignored
(True, False)
>>> buy = Event("e1", EventType.BUY, "u1", "a", 200.0, "toys")
>>> [(a.signal.value, a.scope.value) for a in user.observe(buy, config)]
[('buy', 'item'), ('buy', 'category')]
>>> user.observe(buy, config)  # the same buy delivered again: already credited
[]
>>> [(c.exposure.decision_id, sorted(k.value for k, _ in c.credited)) for c in user.close(4000.0, config)]
[('d-1', ['buy', 'buy'])]
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from models.events import Event, EventType
from models.lift import Group


class Signal(StrEnum):
    """What the user did after the push."""

    CLICK = "click"
    BUY = "buy"
    #: Any event on the item or category: the offline proxy of an engaged push.
    TOUCH = "touch"


class Scope(StrEnum):
    ITEM = "item"
    CATEGORY = "category"


_SIGNALS: dict[EventType, tuple[Signal, ...]] = {
    EventType.VIEW: (Signal.TOUCH,),
    EventType.CLICK: (Signal.CLICK, Signal.TOUCH),
    EventType.BUY: (Signal.BUY, Signal.TOUCH),
}

Credit = tuple[Signal, Scope]


@dataclass(frozen=True, slots=True)
class AttributionConfig:
    #: How long after a push its user's actions are credited to it.
    window_s: float = 24 * 3600.0
    signals: frozenset[Signal] = frozenset({Signal.CLICK, Signal.BUY})
    #: Credit events in a pushed item's category too (scope ``category``).
    categories: bool = True
    #: How long a closed exposure's id is kept to recognise a late duplicate.
    retention_s: float = 24 * 3600.0
    #: Off: nothing is exposed or attributed.
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.retention_s < 0:
            raise ValueError("need window_s > 0 and retention_s >= 0")


@dataclass(frozen=True, slots=True)
class Exposure:
    """A push (treatment) or a holdout record (control) open for attribution."""

    decision_id: str
    user_id: str
    group: Group
    sent_at: float
    items: tuple[str, ...]
    #: The pushed items' categories (the caller knows them; decisions do not carry them).
    categories: tuple[str, ...] = ()
    trigger: str = ""
    segment: int | None = None

    def ends_at(self, config: AttributionConfig) -> float:
        return self.sent_at + config.window_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id, "user_id": self.user_id, "group": self.group.value,
            "sent_at": self.sent_at, "items": list(self.items),
            "categories": list(self.categories), "trigger": self.trigger, "segment": self.segment,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Exposure:
        return cls(
            str(data["decision_id"]), str(data["user_id"]), Group(data["group"]),
            float(data["sent_at"]), tuple(data["items"]), tuple(data["categories"]),
            str(data["trigger"]), data["segment"],
        )


@dataclass(frozen=True, slots=True)
class Attribution:
    """One credit, given once: ``exposure`` earned ``signal`` in ``scope`` from an event."""

    exposure: Exposure
    signal: Signal
    scope: Scope
    event_id: str
    at: float


@dataclass(frozen=True, slots=True)
class Closed:
    """An exposure whose window ended, with every credit it earned."""

    exposure: Exposure
    credited: frozenset[Credit]

    def earned(self, signal: Signal, scope: Scope = Scope.ITEM) -> bool:
        return (signal, scope) in self.credited


@dataclass(slots=True)
class UserAttribution:
    """One user's open exposures, their credits, and recently closed ids (see module doc)."""

    open: dict[str, Exposure] = field(default_factory=dict)
    credited: dict[str, set[Credit]] = field(default_factory=dict)
    #: decision id -> when it may be forgotten.
    closed: dict[str, float] = field(default_factory=dict)

    def expose(self, exposure: Exposure, now: float, config: AttributionConfig) -> bool:
        """Open ``exposure``; False if disabled, already known, or too old to credit once."""
        if not config.enabled:
            return False
        known = exposure.decision_id in self.open or exposure.decision_id in self.closed
        if known or exposure.ends_at(config) + config.retention_s < now:
            return False
        self.open[exposure.decision_id] = exposure
        self.credited[exposure.decision_id] = set()
        return True

    def observe(self, event: Event, config: AttributionConfig) -> list[Attribution]:
        """The credits ``event`` gives for the first time (none for a repeated event)."""
        signals = [s for s in _SIGNALS[event.type] if s in config.signals]
        if not config.enabled or not signals:
            return []
        credits: list[Attribution] = []
        for decision_id, exposure in self.open.items():
            if not exposure.sent_at < event.ts <= exposure.ends_at(config):
                continue
            scopes = _scopes(exposure, event, config)
            given = self.credited[decision_id]
            for signal in signals:
                for scope in scopes:
                    if (signal, scope) not in given:
                        given.add((signal, scope))
                        credits.append(Attribution(exposure, signal, scope, event.event_id, event.ts))
        return credits

    def close(self, now: float, config: AttributionConfig) -> list[Closed]:
        """Close the exposures whose window ended by ``now``; forget old closed ids."""
        ended = [d for d, e in self.open.items() if e.ends_at(config) <= now]
        result = []
        for decision_id in ended:
            exposure = self.open.pop(decision_id)
            result.append(Closed(exposure, frozenset(self.credited.pop(decision_id))))
            self.closed[decision_id] = exposure.ends_at(config) + config.retention_s
        for decision_id in [d for d, until in self.closed.items() if until < now]:
            del self.closed[decision_id]
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "open": [e.to_dict() for e in self.open.values()],
            "credited": {d: sorted([s.value, c.value] for s, c in given)
                         for d, given in self.credited.items()},
            "closed": dict(self.closed),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserAttribution:
        exposures = [Exposure.from_dict(e) for e in data["open"]]
        return cls(
            open={e.decision_id: e for e in exposures},
            credited={d: {(Signal(s), Scope(c)) for s, c in given}
                      for d, given in data["credited"].items()},
            closed={d: float(t) for d, t in data["closed"].items()},
        )


def _scopes(exposure: Exposure, event: Event, config: AttributionConfig) -> list[Scope]:
    scopes = []
    if event.item_id in exposure.items:
        scopes.append(Scope.ITEM)
    if config.categories and event.category and event.category in exposure.categories:
        scopes.append(Scope.CATEGORY)
    return scopes


class Attributor:
    """Every user's :class:`UserAttribution`, for a single process (e.g. a replay)."""

    def __init__(self, config: AttributionConfig | None = None) -> None:
        self.config = config or AttributionConfig()
        self.users: dict[str, UserAttribution] = {}
        #: (window end, user id) of open exposures, so closing visits only due users.
        self._ends: list[tuple[float, str]] = []

    def expose(self, exposure: Exposure, now: float) -> bool:
        user = self.users.setdefault(exposure.user_id, UserAttribution())
        opened = user.expose(exposure, now, self.config)
        if opened:
            heapq.heappush(self._ends, (exposure.ends_at(self.config), exposure.user_id))
        return opened

    def observe(self, event: Event) -> list[Attribution]:
        user = self.users.get(event.user_id)
        return user.observe(event, self.config) if user is not None else []

    def close(self, now: float) -> list[Closed]:
        """Close every exposure whose window ended by ``now``, in window-end order."""
        closed: list[Closed] = []
        while self._ends and self._ends[0][0] <= now:
            _, user_id = heapq.heappop(self._ends)
            user = self.users.get(user_id)
            if user is not None:
                closed += user.close(now, self.config)
        return closed
