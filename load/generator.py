"""Synthetic, deterministic e-commerce event streams for load tests and demos.

The stream has the structure the pipeline is meant to find, so its output can be judged:

* **Segments** - every user belongs to one of a few latent *interest types*; a type favours
  a handful of core categories, and each user's own interest mix is a Dirichlet draw around
  the type's mix.
* **Popularity** - items belong to one category and are picked within it with Zipf
  weights, so a few items per category take most of the traffic.
* **Co-occurrence** - within a session the next view is often an item *related* to the
  previous one (same category or the category's companion), so items are viewed together.
* **Funnel** - a view may be followed by a click on the same item, a click by a buy.
* **Time** - valid events advance an event-time clock from ``start_ts`` as a Poisson
  process at ``events_per_second``; many sessions run at once, so users interleave.
* **Dirt** - a share of extra messages is malformed in a known way, each of which
  :func:`models.events.decode_event` must reject for the reason in :data:`EXPECTED_REJECTION`.

Everything is drawn from one seeded :class:`random.Random`, so a configuration always yields
the same bytes; malformed messages use a second generator, so the valid stream is the same
whatever ``malformed_share`` is. Nothing here touches Kafka or the wall clock.

>>> from itertools import islice
>>> from models.events import decode_event
>>> config = GeneratorConfig(users=50, items=40, concurrent_sessions=5, seed=7)
>>> first = list(islice(generate_events(config), 3))
>>> first == list(islice(generate_events(config), 3))
True
>>> record = first[0]
>>> record.topic, record.malformed_reason
('events.view', None)
>>> decode_event(record.value, now=config.start_ts + 60).user_id == record.key.decode()
True
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, NamedTuple

import orjson

from models.events import DEFAULT_MAX_EVENT_BYTES, Event, EventType, RejectReason

#: Twenty dotted categories in the style of large multi-category stores.
DEFAULT_CATEGORIES: Final = (
    "electronics.smartphone",
    "electronics.audio.headphone",
    "electronics.video.tv",
    "electronics.clocks",
    "computers.notebook",
    "computers.peripherals.mouse",
    "appliances.kitchen.refrigerators",
    "appliances.kitchen.washer",
    "appliances.environment.vacuum",
    "furniture.living_room.sofa",
    "furniture.bedroom.bed",
    "apparel.shoes",
    "apparel.costume",
    "kids.toys",
    "sport.bicycle",
    "auto.accessories.player",
    "construction.tools.drill",
    "accessories.bag",
    "medicine.tools.tonometer",
    "country_yard.lawn_mower",
)
DEFAULT_TIME_ZONES: Final = (
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Shanghai",
    "Asia/Kolkata",
)
#: A year of 365.25 days, to push timestamps far beyond any clock-skew tolerance.
_YEAR_S: Final = 365.25 * 86400
#: Deeper than the JSON parser's depth limit (1024), yet small enough to reach the parser.
_NESTING_DEPTH: Final = 1100


class GeneratedEvent(NamedTuple):
    """One Kafka message: valid events go to ``events.<type>`` keyed by user id."""

    topic: str
    key: bytes | None
    value: bytes
    #: The :class:`MalformedKind` value for deliberately broken messages, else None.
    malformed_reason: str | None = None


class MalformedKind(StrEnum):
    BAD_JSON = "bad_json"
    NOT_UTF8 = "not_utf8"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_TOPIC = "wrong_topic"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    NEGATIVE_PRICE = "negative_price"
    OVERSIZED = "oversized"
    FAR_FUTURE_TS = "far_future_ts"
    ANCIENT_TS = "ancient_ts"
    DEEPLY_NESTED = "deeply_nested"


#: What the decoder must answer for each kind (when given the topic's expected type).
EXPECTED_REJECTION: Final = {
    MalformedKind.BAD_JSON: RejectReason.BAD_JSON,
    MalformedKind.NOT_UTF8: RejectReason.NOT_UTF8,
    MalformedKind.NOT_OBJECT: RejectReason.NOT_OBJECT,
    MalformedKind.MISSING_FIELD: RejectReason.MISSING_FIELD,
    MalformedKind.WRONG_TYPE: RejectReason.WRONG_TYPE,
    MalformedKind.UNKNOWN_TYPE: RejectReason.UNKNOWN_EVENT_TYPE,
    MalformedKind.WRONG_TOPIC: RejectReason.TOPIC_MISMATCH,
    MalformedKind.UNSUPPORTED_SCHEMA: RejectReason.UNSUPPORTED_SCHEMA,
    MalformedKind.NEGATIVE_PRICE: RejectReason.BAD_VALUE,
    MalformedKind.OVERSIZED: RejectReason.OVERSIZED,
    MalformedKind.FAR_FUTURE_TS: RejectReason.FUTURE_TIMESTAMP,
    MalformedKind.ANCIENT_TS: RejectReason.PAST_TIMESTAMP,
    # The parser gives up on nesting deeper than its limit: that is malformed JSON to us.
    MalformedKind.DEEPLY_NESTED: RejectReason.BAD_JSON,
}


def topic_for(event_type: EventType) -> str:
    return f"events.{event_type.value}"


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    users: int = 5000
    items: int = 2000
    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    #: Latent user segments; each favours ``core_categories_per_type`` categories.
    interest_types: int = 5
    core_categories_per_type: int = 3
    #: Share of a type's interest on its core categories (the rest spreads evenly).
    core_share: float = 0.85
    #: Dirichlet concentration around the type's mix: larger means users are more alike.
    interest_concentration: float = 20.0
    #: Zipf exponent of item popularity within a category.
    zipf_exponent: float = 1.1
    #: Related items per item; a quarter come from the category's companion category.
    related_per_item: int = 8
    #: Chance that the next view in a session is related to the previous one.
    related_view_share: float = 0.5
    views_per_session: float = 6.0
    concurrent_sessions: int = 200
    click_probability: float = 0.15
    #: Chance that a click is followed by a buy of the same item.
    buy_probability: float = 0.3
    #: Rate of valid events in event time (malformed messages take no event time).
    events_per_second: float = 100.0
    start_ts: float = 1_700_000_000.0
    #: Share of all messages that are malformed (at most one follows each valid event).
    malformed_share: float = 0.02
    malformed_kinds: tuple[MalformedKind, ...] = tuple(MalformedKind)
    seed: int = 0
    #: Event ids are ``<prefix><n>``; the default derives it from seed and start time so
    #: two runs with different start times never collide in the consumer's de-duplication.
    event_id_prefix: str | None = None

    def __post_init__(self) -> None:
        _check(self.users >= 2, "users must be >= 2")
        _check(len(self.categories) >= 2, "need at least 2 categories")
        _check(self.items >= len(self.categories), "need at least one item per category")
        _check(self.interest_types >= 1, "interest_types must be >= 1")
        _check(
            1 <= self.core_categories_per_type <= len(self.categories),
            "core_categories_per_type must be between 1 and the number of categories",
        )
        _check(1 <= self.concurrent_sessions <= self.users // 2, "concurrent_sessions: 1..users/2")
        for name in ("core_share", "related_view_share", "click_probability", "buy_probability"):
            _check(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        _check(0.0 <= self.malformed_share <= 0.5, "malformed_share must be in [0, 0.5]")
        _check(bool(self.malformed_kinds), "malformed_kinds must not be empty")
        for name in ("interest_concentration", "zipf_exponent", "events_per_second"):
            _check(getattr(self, name) > 0, f"{name} must be > 0")
        _check(self.views_per_session >= 1, "views_per_session must be >= 1")
        _check(self.related_per_item >= 1, "related_per_item must be >= 1")

    @property
    def id_prefix(self) -> str:
        if self.event_id_prefix is not None:
            return self.event_id_prefix
        return f"g{self.seed}-{int(self.start_ts)}-"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class WeightedChoice:
    """O(log n) draws from fixed weights (cumulative sums + bisection)."""

    __slots__ = ("_cumulative", "_options", "_total")

    def __init__(self, options: Sequence[Any], weights: Sequence[float]) -> None:
        self._options = list(options)
        self._cumulative = list(itertools.accumulate(weights))
        self._total = self._cumulative[-1]

    def draw(self, rng: random.Random) -> Any:
        index = bisect.bisect_right(self._cumulative, rng.random() * self._total)
        return self._options[min(index, len(self._options) - 1)]


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    category: str
    price: float


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    interest_type: int
    tz: str
    #: The user's latent interest mix over categories (sums to 1).
    interests: dict[str, float]


@dataclass(slots=True)
class SyntheticWorld:
    """The latent truth behind a stream: users, items, popularity and related items.

    Exposed so quality tests can compare what the pipeline learns with what was planted.
    """

    users: list[User]
    items: dict[str, Item]
    #: Items of each category, most popular first.
    category_items: dict[str, list[str]]
    related: dict[str, list[str]]
    companion: dict[str, str]
    _user_choice: WeightedChoice = field(repr=False)
    _interest_choice: dict[str, WeightedChoice] = field(repr=False)
    _item_choice: dict[str, WeightedChoice] = field(repr=False)

    @classmethod
    def build(cls, config: GeneratorConfig) -> SyntheticWorld:
        rng = random.Random(f"world:{config.seed}")
        items, category_items = _make_items(config, rng)
        companion = _companions(config.categories, rng)
        users = _make_users(config, rng)
        item_choice = {
            category: WeightedChoice(ids, _zipf_weights(len(ids), config.zipf_exponent))
            for category, ids in category_items.items()
        }
        related = {
            item_id: _related_items(item, config, item_choice, companion, rng)
            for item_id, item in items.items()
        }
        # Some users are far more active than others (log-normal activity).
        activity = [rng.lognormvariate(0.0, 1.0) for _ in users]
        return cls(
            users=users,
            items=items,
            category_items=category_items,
            related=related,
            companion=companion,
            _user_choice=WeightedChoice(users, activity),
            _interest_choice={
                u.user_id: WeightedChoice(list(u.interests), list(u.interests.values()))
                for u in users
            },
            _item_choice=item_choice,
        )

    def draw_user(self, rng: random.Random) -> User:
        user: User = self._user_choice.draw(rng)
        return user

    def draw_item_for(self, user: User, rng: random.Random) -> Item:
        category: str = self._interest_choice[user.user_id].draw(rng)
        return self.items[self._item_choice[category].draw(rng)]


def _zipf_weights(count: int, exponent: float) -> list[float]:
    return [1.0 / rank**exponent for rank in range(1, count + 1)]


def _make_items(
    config: GeneratorConfig, rng: random.Random
) -> tuple[dict[str, Item], dict[str, list[str]]]:
    # Every category gets one item first, the rest land at random: sizes vary like in a shop.
    categories = list(config.categories)
    assigned = categories + [rng.choice(categories) for _ in range(config.items - len(categories))]
    # Typical price per category, from 5 to 2000 on a log scale.
    price_level = {c: 5.0 * 400.0 ** rng.random() for c in categories}
    items: dict[str, Item] = {}
    category_items: dict[str, list[str]] = {c: [] for c in categories}
    for number, category in enumerate(assigned):
        item_id = f"i{number}"
        price = round(price_level[category] * rng.lognormvariate(0.0, 0.4), 2)
        items[item_id] = Item(item_id, category, price)
        category_items[category].append(item_id)
    for ids in category_items.values():
        rng.shuffle(ids)  # popularity rank is unrelated to the item number
    return items, category_items


def _companions(categories: Sequence[str], rng: random.Random) -> dict[str, str]:
    """Each category's complementary category (phones go with headphones)."""
    return {c: rng.choice([o for o in categories if o != c]) for c in categories}


def _make_users(config: GeneratorConfig, rng: random.Random) -> list[User]:
    categories = config.categories
    type_mixes = [_type_mix(config, rng) for _ in range(config.interest_types)]
    users = []
    for number in range(config.users):
        interest_type = number % config.interest_types
        alphas = [config.interest_concentration * w for w in type_mixes[interest_type]]
        draws = [rng.gammavariate(a, 1.0) for a in alphas]
        total = sum(draws) or 1.0
        interests = {c: d / total for c, d in zip(categories, draws, strict=True) if d > 0}
        if not interests:  # every draw underflowed: fall back to the type's mix
            interests = dict(zip(categories, type_mixes[interest_type], strict=True))
        tz = DEFAULT_TIME_ZONES[rng.randrange(len(DEFAULT_TIME_ZONES))]
        users.append(User(f"u{number}", interest_type, tz, interests))
    return users


def _type_mix(config: GeneratorConfig, rng: random.Random) -> list[float]:
    count = len(config.categories)
    core = set(rng.sample(range(count), config.core_categories_per_type))
    rest = count - len(core)
    core_weight = config.core_share / len(core) if rest else 1.0 / len(core)
    rest_weight = (1.0 - config.core_share) / rest if rest else 0.0
    return [core_weight if i in core else rest_weight for i in range(count)]


def _related_items(
    item: Item,
    config: GeneratorConfig,
    item_choice: dict[str, WeightedChoice],
    companion: dict[str, str],
    rng: random.Random,
) -> list[str]:
    related: list[str] = []
    # Popular items are more often related to others; a bounded number of tries keeps
    # tiny categories from looping forever.
    for _ in range(config.related_per_item * 4):
        if len(related) == config.related_per_item:
            break
        category = companion[item.category] if rng.random() < 0.25 else item.category
        other: str = item_choice[category].draw(rng)
        if other != item.item_id and other not in related:
            related.append(other)
    return related


@dataclass(slots=True)
class _Session:
    session_id: str
    user: User
    views_left: int
    last_item: Item | None = None
    #: The funnel step owed next: a click or buy of ``last_item``.
    pending: EventType | None = None


class _Simulation:
    """Interleaves concurrent sessions and emits valid events in event-time order."""

    def __init__(self, config: GeneratorConfig, world: SyntheticWorld) -> None:
        self.config = config
        self.world = world
        self.rng = random.Random(f"events:{config.seed}")
        self.clock = config.start_ts
        self.id_prefix = config.id_prefix
        self.event_numbers = itertools.count()
        self.session_numbers = itertools.count()
        self.active_users: set[str] = set()
        self.sessions = [self._new_session() for _ in range(config.concurrent_sessions)]

    def _new_session(self) -> _Session:
        user = self.world.draw_user(self.rng)
        while user.user_id in self.active_users:  # one session per user at a time
            user = self.world.draw_user(self.rng)
        self.active_users.add(user.user_id)
        # Geometric number of views with the configured mean.
        stop = 1.0 / self.config.views_per_session
        views = 1
        while self.rng.random() > stop:
            views += 1
        return _Session(f"s{self.config.seed}-{next(self.session_numbers)}", user, views)

    def next_event(self) -> Event:
        slot = self.rng.randrange(len(self.sessions))
        session = self.sessions[slot]
        event_type, item = self._step(session)
        if session.pending is None and session.views_left == 0:
            self.active_users.discard(session.user.user_id)
            self.sessions[slot] = self._new_session()
        self.clock += self.rng.expovariate(self.config.events_per_second)
        return Event(
            event_id=f"{self.id_prefix}{next(self.event_numbers)}",
            type=event_type,
            user_id=session.user.user_id,
            item_id=item.item_id,
            ts=round(self.clock, 3),
            category=item.category,
            price=item.price,
            session_id=session.session_id,
            quantity=self._quantity() if event_type is EventType.BUY else None,
            tz=session.user.tz,
        )

    def _step(self, session: _Session) -> tuple[EventType, Item]:
        if session.pending is not None and session.last_item is not None:
            event_type, item = session.pending, session.last_item
        else:
            event_type, item = EventType.VIEW, self._next_view(session)
            session.views_left -= 1
            session.last_item = item
        session.pending = self._follow_up(event_type)
        return event_type, item

    def _next_view(self, session: _Session) -> Item:
        previous = session.last_item
        if previous is not None and self.rng.random() < self.config.related_view_share:
            related = self.world.related[previous.item_id]
            if related:
                return self.world.items[self.rng.choice(related)]
        return self.world.draw_item_for(session.user, self.rng)

    def _follow_up(self, event_type: EventType) -> EventType | None:
        if event_type is EventType.VIEW and self.rng.random() < self.config.click_probability:
            return EventType.CLICK
        if event_type is EventType.CLICK and self.rng.random() < self.config.buy_probability:
            return EventType.BUY
        return None

    def _quantity(self) -> int:
        return 1 if self.rng.random() < 0.8 else self.rng.randint(2, 3)


def generate_events(
    config: GeneratorConfig, world: SyntheticWorld | None = None
) -> Iterator[GeneratedEvent]:
    """An endless stream of messages; cut it with :func:`itertools.islice`."""
    simulation = _Simulation(config, world or SyntheticWorld.build(config))
    dirt = random.Random(f"malformed:{config.seed}")
    # One malformed message after a valid one with probability r gives a share r / (1 + r).
    follow_probability = config.malformed_share / (1.0 - config.malformed_share)
    while True:
        event = simulation.next_event()
        yield GeneratedEvent(topic_for(event.type), event.user_id.encode(), event.to_bytes())
        if config.malformed_share and dirt.random() < follow_probability:
            kind = config.malformed_kinds[dirt.randrange(len(config.malformed_kinds))]
            malformed_id = f"{event.event_id}-bad"
            yield make_malformed(kind, event, malformed_id, dirt)


def make_malformed(
    kind: MalformedKind, event: Event, event_id: str, rng: random.Random
) -> GeneratedEvent:
    """A broken message modelled on ``event``, on the topic a buggy upstream would use."""
    doc = event.to_dict() | {"event_id": event_id}
    topic = topic_for(event.type)
    value = _MALFORMERS[kind](doc, rng)
    if kind is MalformedKind.WRONG_TOPIC:
        others = [t for t in EventType if t is not event.type]
        topic = topic_for(others[rng.randrange(len(others))])
    return GeneratedEvent(topic, event.user_id.encode(), value, kind.value)


def _truncated(doc: dict[str, Any], rng: random.Random) -> bytes:
    raw = orjson.dumps(doc)
    # Any proper prefix of a JSON object is incomplete, hence invalid.
    return raw[: rng.randint(1, len(raw) - 1)]


def _not_utf8(doc: dict[str, Any], rng: random.Random) -> bytes:
    return orjson.dumps(doc).replace(b'"item_id":"', b'"item_id":"\xff\xfe', 1)


def _missing_field(doc: dict[str, Any], rng: random.Random) -> bytes:
    name = rng.choice(("schema", "event_id", "type", "user_id", "item_id", "ts"))
    return orjson.dumps({k: v for k, v in doc.items() if k != name})


def _wrong_type(doc: dict[str, Any], rng: random.Random) -> bytes:
    name = rng.choice(("ts", "user_id", "item_id", "type", "price"))
    wrong: Any = str(doc[name]) if isinstance(doc[name], float) else [doc[name]]
    return orjson.dumps(doc | {name: wrong})


def _unknown_type(doc: dict[str, Any], rng: random.Random) -> bytes:
    return orjson.dumps(doc | {"type": rng.choice(("hover", "wishlist", "VIEW", ""))})


def _oversized(doc: dict[str, Any], rng: random.Random) -> bytes:
    return orjson.dumps(doc | {"comment": "x" * (DEFAULT_MAX_EVENT_BYTES + rng.randint(1, 4096))})


def _deeply_nested(doc: dict[str, Any], rng: random.Random) -> bytes:
    # Built by hand: the encoder itself refuses this depth.
    nested = b"[" * _NESTING_DEPTH + b"]" * _NESTING_DEPTH
    return orjson.dumps(doc)[:-1] + b',"attributes":' + nested + b"}"


def _not_object(doc: dict[str, Any], rng: random.Random) -> bytes:
    return orjson.dumps([doc])


def _unchanged(doc: dict[str, Any], rng: random.Random) -> bytes:
    return orjson.dumps(doc)


def _unsupported_schema(doc: dict[str, Any], rng: random.Random) -> bytes:
    return orjson.dumps(doc | {"schema": rng.choice((0, 2, 99))})


def _negative_price(doc: dict[str, Any], rng: random.Random) -> bytes:
    return orjson.dumps(doc | {"price": -(doc["price"] + 1.0)})


def _far_future_ts(doc: dict[str, Any], rng: random.Random) -> bytes:
    return orjson.dumps(doc | {"ts": doc["ts"] + 100 * _YEAR_S})


def _ancient_ts(doc: dict[str, Any], rng: random.Random) -> bytes:
    return orjson.dumps(doc | {"ts": rng.randint(0, 10**8)})


_Malformer = Callable[[dict[str, Any], random.Random], bytes]
_MALFORMERS: Final[dict[MalformedKind, _Malformer]] = {
    MalformedKind.BAD_JSON: _truncated,
    MalformedKind.NOT_UTF8: _not_utf8,
    MalformedKind.NOT_OBJECT: _not_object,
    MalformedKind.MISSING_FIELD: _missing_field,
    MalformedKind.WRONG_TYPE: _wrong_type,
    MalformedKind.UNKNOWN_TYPE: _unknown_type,
    # The message itself is fine; make_malformed sends it to another type's topic.
    MalformedKind.WRONG_TOPIC: _unchanged,
    MalformedKind.UNSUPPORTED_SCHEMA: _unsupported_schema,
    MalformedKind.NEGATIVE_PRICE: _negative_price,
    MalformedKind.OVERSIZED: _oversized,
    MalformedKind.FAR_FUTURE_TS: _far_future_ts,
    MalformedKind.ANCIENT_TS: _ancient_ts,
    MalformedKind.DEEPLY_NESTED: _deeply_nested,
}
