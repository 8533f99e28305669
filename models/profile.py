"""A user's time-decayed interest profile and its pure update function.

The profile is what every later stage reads: segmentation turns it into a feature
vector, co-occurrence pairs the new item with ``recent``, the push policy looks at
categories, recent items and purchases. It is updated by :func:`update`, a pure
function of ``(profile, event, now)`` that returns a new profile and leaves the one it
is given alone (callers keep the state before the event for triggers and pairs), so
the streaming worker and the offline replay compute exactly the same state.

Decay uses *event time*: weights are stored as of ``last_ts`` and multiplied by
``2 ** (-dt / half_life)`` when a newer event arrives. Late events are folded in with
the weight they would have had, without moving ``last_ts`` backwards.

Memory is bounded per user (see :class:`ProfileConfig`): at most ``max_categories``
category weights, ``max_recent`` recent items, ``max_bought`` bought items and
``dedupe_window`` event-id fingerprints. Encoded (version 3, binary) the profiles of the
bench's synthetic backlog take 396 bytes on average and 797 at most, less than half of
version 2 (868 and 1,553 bytes), which wrote everything but the fingerprints as JSON.

>>> from models.events import Event, EventType
>>> cfg = ProfileConfig()
>>> p, applied = update(None, Event("e1", EventType.VIEW, "u1", "i1", 1000.0, "phones"), 1000.0, cfg)
>>> p, applied = update(p, Event("e1", EventType.VIEW, "u1", "i1", 1000.0, "phones"), 1000.0, cfg)
>>> applied, p.events, p.top_categories(1)
(False, 1, ['phones'])
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson

from models.binary import Reader, Writer
from models.events import Event, EventType

#: Interest weight added per event type: intent grows along the funnel.
DEFAULT_EVENT_WEIGHTS: Final = {EventType.VIEW: 1.0, EventType.CLICK: 3.0, EventType.BUY: 5.0}
UNKNOWN_CATEGORY: Final = ""
#: The first byte of :meth:`Profile.to_bytes` (version 1 is JSON, whose first byte is ``[``).
PROFILE_ENCODING_VERSION: Final = 3
#: The number of packed ``seen`` fingerprints that starts a version-2 encoding.
_SEEN_COUNT: Final = struct.Struct("<H")
#: Stable codes of the event types in version-3 records (never renumber one).
_TYPE_CODES: Final = {EventType.VIEW: 0, EventType.CLICK: 1, EventType.BUY: 2}
_TYPES: Final = {code: kind for kind, code in _TYPE_CODES.items()}


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    half_life_s: float = 6 * 3600.0
    max_categories: int = 16
    max_recent: int = 10
    max_bought: int = 10
    dedupe_window: int = 32
    #: A gap longer than this starts a new session when the event carries no session_id.
    session_gap_s: float = 30 * 60.0

    def __post_init__(self) -> None:
        if self.half_life_s <= 0:
            raise ValueError("half_life_s must be > 0")
        for name in ("max_categories", "max_recent", "max_bought", "dedupe_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.dedupe_window > 0xFFFF:  # the count of packed fingerprints is 16 bits
            raise ValueError("dedupe_window must be <= 65535")


@dataclass(slots=True)
class RecentItem:
    item_id: str
    category: str
    ts: float
    type: EventType


@dataclass(slots=True)
class Profile:
    user_id: str
    first_ts: float
    last_ts: float
    #: Decayed interest per category, as of ``last_ts``.
    categories: dict[str, float] = field(default_factory=dict)
    #: Decayed count of events, of clicks and of buys, as of ``last_ts``.
    activity: float = 0.0
    clicks: float = 0.0
    buys: float = 0.0
    #: Decayed sums for the mean log10 price of what the user touched.
    price_log_sum: float = 0.0
    price_weight: float = 0.0
    #: Oldest first; at most ``max_recent``.
    recent: list[RecentItem] = field(default_factory=list)
    bought: list[str] = field(default_factory=list)
    #: 64-bit fingerprints of the last event ids, for duplicate detection.
    seen: list[int] = field(default_factory=list)
    events: int = 0
    session_id: str = ""
    session_start: float = 0.0
    session_events: int = 0
    tz: str | None = None
    #: Last applied position per source (e.g. a Kafka topic's offset), set by the caller:
    #: a replay after a crash is recognised by position, however busy the user was.
    positions: dict[str, int] = field(default_factory=dict)

    def replayed(self, source: str, position: int, ts: float) -> bool:
        """Whether an event at ``position`` of ``source`` was already applied.

        The event time must agree (not newer than the profile), so a source whose
        positions restart (a re-created topic) cannot silence new events.
        """
        return position <= self.positions.get(source, -1) and ts <= self.last_ts

    def copy(self) -> Profile:
        """A copy whose containers are its own (the recent items are shared: nothing
        changes a :class:`RecentItem` once it is in a profile)."""
        # Spelled out: dataclasses.replace costs twice as much, on every event.
        return Profile(
            self.user_id, self.first_ts, self.last_ts, dict(self.categories),
            self.activity, self.clicks, self.buys, self.price_log_sum, self.price_weight,
            list(self.recent), list(self.bought), list(self.seen), self.events,
            self.session_id, self.session_start, self.session_events, self.tz,
            dict(self.positions),
        )

    def at_position(self, source: str, position: int) -> Profile:
        """A copy that records ``position`` of ``source`` as applied (see :meth:`replayed`)."""
        return replace(self, positions={**self.positions, source: position})

    def decayed(self, value: float, at: float, half_life_s: float) -> float:
        """``value`` (stored as of ``last_ts``) seen from time ``at``."""
        return value * decay(at - self.last_ts, half_life_s)

    def top_categories(self, n: int) -> list[str]:
        ranked = sorted(self.categories.items(), key=lambda kv: (-kv[1], kv[0]))
        return [name for name, _ in ranked[:n]]

    def mean_log_price(self) -> float | None:
        return self.price_log_sum / self.price_weight if self.price_weight > 1e-9 else None

    def to_bytes(self) -> bytes:
        """Compact wire/table form (version 3, binary; see :mod:`models.binary`).

        Times are exact millisecond varints relative to ``last_ts``, weights 8-byte
        doubles (the profile is decoded and encoded again on every event, so rounding
        would compound and could reorder interests or move a policy threshold), each
        category name is written once (recent items refer to it by number), the
        ``seen`` fingerprints are packed in 8 bytes each and positions are varints.
        """
        w = Writer(PROFILE_ENCODING_VERSION)
        w.text(self.user_id)
        last = self.last_ts
        w.time(last, base=0.0)
        w.time(self.first_ts, base=last)
        names = list(self.categories)
        number = {name: k for k, name in enumerate(names)}
        for r in self.recent:
            if r.category not in number:
                number[r.category] = len(names)
                names.append(r.category)
        w.uint(len(names))
        for name in names:
            w.text(name)
        w.uint(len(self.categories))
        w.f64s([
            *self.categories.values(),
            self.activity, self.clicks, self.buys, self.price_log_sum, self.price_weight,
        ])
        w.uint(len(self.recent))
        for r in self.recent:
            w.text(r.item_id)
            w.uint(number[r.category] * len(_TYPE_CODES) + _TYPE_CODES[r.type])
            w.time(r.ts, base=last)
        w.uint(len(self.bought))
        for item in self.bought:
            w.text(item)
        w.uint(len(self.seen))
        w.raw(struct.pack(f">{len(self.seen)}Q", *self.seen))
        w.uint(self.events)
        w.text(self.session_id)
        w.time(self.session_start, base=last)
        w.uint(self.session_events)
        w.optional_text(self.tz)
        w.uint(len(self.positions))
        for source, position in self.positions.items():
            w.text(source)
            w.sint(position)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Profile:
        """Any version: 3 (:meth:`to_bytes`), 2 (packed fingerprints, then a JSON array)
        or 1 (all JSON, the fingerprints as numbers)."""
        if raw[:1] == b"[":
            data: list[Any] = orjson.loads(raw)
            if data[0] != 1:
                raise ValueError(f"unsupported profile encoding {data[0]!r}")
            return cls._from_fields(data, data[8])
        if raw[:1] == bytes((PROFILE_ENCODING_VERSION,)):
            return cls._from_binary(Reader(raw, 1))
        if raw[:1] != bytes((2,)):
            raise ValueError(f"unsupported profile encoding {raw[:1]!r}")
        (count,) = _SEEN_COUNT.unpack_from(raw, 1)
        body = 1 + _SEEN_COUNT.size + 8 * count
        seen = list(struct.unpack_from(f">{count}Q", raw, 1 + _SEEN_COUNT.size))
        return cls._from_fields(orjson.loads(memoryview(raw)[body:]), seen)

    @classmethod
    def _from_binary(cls, r: Reader) -> Profile:
        user_id = r.text()
        last = r.time(base=0.0)
        first = r.time(base=last)
        names = [r.text() for _ in range(r.uint())]
        count = r.uint()
        if count > len(names):
            raise ValueError(f"{count} category weights for {len(names)} names")
        *weights, activity, clicks, buys, price_log_sum, price_weight = r.f64s(count + 5)
        # The recent items' own categories follow the weighted ones in ``names``.
        categories = dict(zip(names, weights, strict=False))
        recent = []
        for _ in range(r.uint()):
            item_id = r.text()
            category, type_code = divmod(r.uint(), len(_TYPE_CODES))
            recent.append(RecentItem(item_id, names[category], r.time(base=last), _TYPES[type_code]))
        bought = [r.text() for _ in range(r.uint())]
        count = r.uint()
        seen = list(struct.unpack(f">{count}Q", r.raw(8 * count)))
        profile = cls(
            user_id, first, last, categories, activity, clicks, buys, price_log_sum,
            price_weight, recent, bought, seen, events=r.uint(), session_id=r.text(),
            session_start=r.time(base=last), session_events=r.uint(), tz=r.optional_text(),
            positions={r.text(): r.sint() for _ in range(r.uint())},
        )
        r.end()
        return profile

    @classmethod
    def _from_fields(cls, data: list[Any], seen: list[int]) -> Profile:
        activity, clicks, buys, price_log_sum, price_weight = data[5]
        session_id, session_start, session_events = data[10]
        return cls(
            user_id=data[1],
            first_ts=data[2],
            last_ts=data[3],
            categories=data[4],
            activity=activity,
            clicks=clicks,
            buys=buys,
            price_log_sum=price_log_sum,
            price_weight=price_weight,
            recent=[RecentItem(i, c, t, EventType(k)) for i, c, t, k in data[6]],
            bought=data[7],
            seen=seen,
            events=data[9],
            session_id=session_id,
            session_start=session_start,
            session_events=session_events,
            tz=data[11],
            positions=data[12] if len(data) > 12 else {},
        )


def decay(dt: float, half_life_s: float) -> float:
    """What a value stored ``dt`` seconds ago is worth now (1 for a later time): the
    decay every time-decayed value of the core uses (profiles, co-occurrence rows)."""
    return math.exp2(-dt / half_life_s) if dt > 0 else 1.0


def event_fingerprint(event_id: str) -> int:
    """A stable 63-bit fingerprint (fits JSON and Redis integers)."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def update(
    profile: Profile | None,
    event: Event,
    now: float,
    config: ProfileConfig,
    weights: dict[EventType, float] = DEFAULT_EVENT_WEIGHTS,
) -> tuple[Profile, bool]:
    """Fold ``event`` into ``profile``; return the profile and whether it was applied.

    ``profile`` itself is never changed: the result is a new profile (its containers
    copied: a few dozen entries at most, cheaper than keeping a copy of the state before
    for the callers that need it). An event whose id is among the user's last
    ``dedupe_window`` ids is a duplicate: ``profile`` is returned as it is and
    ``applied`` is False. ``now`` bounds event time from above so a skewed producer
    clock cannot push the profile into the future.
    """
    ts = min(event.ts, now)
    fingerprint = event_fingerprint(event.event_id)
    if profile is None:
        profile = Profile(user_id=event.user_id, first_ts=ts, last_ts=ts)
    elif fingerprint in profile.seen:
        return profile, False
    else:
        profile = profile.copy()
    _remember(profile.seen, fingerprint, config.dedupe_window)
    _track_session(profile, event, ts, config.session_gap_s)
    if ts > profile.last_ts:
        _advance_clock(profile, ts, config.half_life_s)
    # A late event counts with the weight it has today.
    weight = weights[event.type] * decay(profile.last_ts - ts, config.half_life_s)
    category = event.category or UNKNOWN_CATEGORY
    _add_interest(profile, category, weight, config.max_categories)
    profile.activity += decay(profile.last_ts - ts, config.half_life_s)
    if event.type is EventType.CLICK:
        profile.clicks += weight / weights[EventType.CLICK]
    elif event.type is EventType.BUY:
        profile.buys += weight / weights[EventType.BUY]
        _remember(profile.bought, event.item_id, config.max_bought)
    if event.price is not None and event.price > 0:
        profile.price_log_sum += weight * math.log10(event.price)
        profile.price_weight += weight
    _add_recent(profile, RecentItem(event.item_id, category, ts, event.type), config.max_recent)
    profile.first_ts = min(profile.first_ts, ts)
    profile.events += 1
    if event.tz:
        profile.tz = event.tz
    return profile, True


def _advance_clock(profile: Profile, ts: float, half_life_s: float) -> None:
    factor = decay(ts - profile.last_ts, half_life_s)
    for name in profile.categories:
        profile.categories[name] *= factor
    profile.activity *= factor
    profile.clicks *= factor
    profile.buys *= factor
    profile.price_log_sum *= factor
    profile.price_weight *= factor
    profile.last_ts = ts


def _add_interest(profile: Profile, category: str, weight: float, bound: int) -> None:
    cats = profile.categories
    cats[category] = cats.get(category, 0.0) + weight
    if len(cats) > bound:
        # Evict the weakest interest; ties broken by name for determinism.
        weakest = min(cats.items(), key=lambda kv: (kv[1], kv[0]))[0]
        del cats[weakest]


def _add_recent(profile: Profile, item: RecentItem, bound: int) -> None:
    recent = profile.recent
    # Keep one entry per item: a re-visit moves it to the end with the strongest type.
    for i, old in enumerate(recent):
        if old.item_id == item.item_id:
            if _funnel_rank(old.type) > _funnel_rank(item.type):
                item.type = old.type
            item.ts = max(item.ts, old.ts)
            del recent[i]
            break
    recent.append(item)
    recent.sort(key=lambda r: r.ts)
    del recent[:-bound]


def _funnel_rank(event_type: EventType) -> int:
    return (EventType.VIEW, EventType.CLICK, EventType.BUY).index(event_type)


def _remember(values: list[Any], value: Any, bound: int) -> None:
    if value in values:
        values.remove(value)
    values.append(value)
    del values[:-bound]


def _track_session(profile: Profile, event: Event, ts: float, gap_s: float) -> None:
    """Called before the clock advances, so ``last_ts`` is the previous event's time."""
    if event.session_id is not None:
        is_new = event.session_id != profile.session_id
        session_id = event.session_id
    else:
        is_new = (
            profile.session_events == 0
            or ts - profile.last_ts > gap_s
            or ts < profile.session_start
        )
        session_id = f"auto:{int(ts)}" if is_new else profile.session_id
    if is_new:
        profile.session_id = session_id
        profile.session_start = ts
        profile.session_events = 0
    profile.session_events += 1
