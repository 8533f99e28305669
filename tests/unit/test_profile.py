"""The profile update: decay, bounds, duplicates, late events, sessions, encoding."""

from __future__ import annotations

import math
import struct

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.events import Event, EventType
from models.profile import Profile, ProfileConfig, RecentItem, event_fingerprint, update

CONFIG = ProfileConfig(half_life_s=3600.0, max_categories=4, max_recent=3, max_bought=2, dedupe_window=5)
T0 = 1_600_000_000.0


def ev(n: int, kind: EventType = EventType.VIEW, item: str = "i", ts: float = T0, cat: str | None = "c",
       price: float | None = None, session: str | None = None) -> Event:
    return Event(f"e{n}", kind, "u", item, ts, cat, price, session)


def apply(*events: Event, config: ProfileConfig = CONFIG) -> Profile:
    profile = None
    for event in events:
        profile, _ = update(profile, event, event.ts, config)
    assert profile is not None
    return profile


def test_interest_halves_every_half_life() -> None:
    profile = apply(ev(1, cat="phones"), ev(2, cat="books", ts=T0 + 3600))
    assert math.isclose(profile.categories["phones"], 0.5)
    assert math.isclose(profile.categories["books"], 1.0)
    assert math.isclose(profile.activity, 1.5)


def test_buys_weigh_more_than_clicks_more_than_views() -> None:
    profile = apply(ev(1, EventType.VIEW, cat="a"), ev(2, EventType.CLICK, cat="b"), ev(3, EventType.BUY, cat="c"))
    assert profile.categories["c"] > profile.categories["b"] > profile.categories["a"]
    assert profile.buys == 1.0 and profile.clicks == 1.0
    assert profile.top_categories(1) == ["c"]


def test_a_duplicate_event_id_is_not_applied_twice() -> None:
    first = apply(ev(1, cat="a"))
    again, applied = update(first, ev(1, cat="a"), T0, CONFIG)
    assert not applied and again.events == 1 and again.categories == {"a": 1.0}


def test_update_returns_a_new_profile_and_leaves_the_given_one_alone() -> None:
    first = apply(ev(1, cat="a"), ev(2, EventType.BUY, item="i2", cat="a"))
    kept = first.to_bytes()
    second, applied = update(first, ev(3, EventType.CLICK, item="i3", cat="b", ts=T0 + 60), T0 + 60, CONFIG)
    assert applied and second is not first and second.events == 3
    assert first.to_bytes() == kept, "the profile before the event is still what it was"


def test_a_copy_has_every_field_and_containers_of_its_own() -> None:
    profile = apply(ev(1, cat="a", price=9.5, session="s1"), ev(2, EventType.BUY, item="i2", ts=T0 + 5))
    profile.positions["v0"], profile.tz = 7, "Europe/Paris"
    copy = profile.copy()
    assert copy == profile
    assert copy.categories is not profile.categories and copy.recent is not profile.recent
    assert copy.positions is not profile.positions and copy.seen is not profile.seen


def test_the_duplicate_window_is_bounded() -> None:
    profile = apply(*(ev(n, ts=T0 + n) for n in range(10)))
    assert len(profile.seen) == CONFIG.dedupe_window
    _, applied = update(profile, ev(0, ts=T0 + 20), T0 + 20, CONFIG)
    assert applied, "an id older than the window is treated as new"


def test_a_late_event_counts_with_its_decayed_weight_and_does_not_move_time_back() -> None:
    profile = apply(ev(1, cat="a", ts=T0 + 3600), ev(2, cat="b", ts=T0))
    assert profile.last_ts == T0 + 3600 and profile.first_ts == T0
    assert math.isclose(profile.categories["b"], 0.5)


def test_event_time_is_capped_by_now() -> None:
    profile, _ = update(None, ev(1, ts=T0 + 100), T0, CONFIG)
    assert profile.last_ts == T0


def test_recent_items_keep_one_entry_per_item_with_the_strongest_type() -> None:
    profile = apply(ev(1, EventType.CLICK, "x"), ev(2, EventType.VIEW, "y", ts=T0 + 1), ev(3, EventType.VIEW, "x", ts=T0 + 2))
    assert [(r.item_id, r.type) for r in profile.recent] == [("y", EventType.VIEW), ("x", EventType.CLICK)]


def test_sessions_split_on_inactivity_or_on_a_new_session_id() -> None:
    gap = CONFIG.session_gap_s
    profile = apply(ev(1), ev(2, ts=T0 + 60))
    assert profile.session_events == 2
    profile, _ = update(profile, ev(3, ts=T0 + 60 + gap + 1), T0 + 60 + gap + 1, CONFIG)
    assert profile.session_events == 1 and profile.session_start == T0 + 60 + gap + 1
    profile, _ = update(profile, ev(4, ts=T0 + 60 + gap + 2, session="s2"), T0 + 60 + gap + 2, CONFIG)
    assert profile.session_id == "s2" and profile.session_events == 1


def test_mean_price_is_a_weighted_log_price() -> None:
    profile = apply(ev(1, price=10.0), ev(2, price=1000.0))
    mean = profile.mean_log_price()
    assert mean is not None and math.isclose(mean, 2.0)


events_strategy = st.lists(
    st.builds(
        ev,
        n=st.integers(0, 40),
        kind=st.sampled_from(list(EventType)),
        item=st.sampled_from([f"i{k}" for k in range(12)]),
        ts=st.floats(T0, T0 + 5 * 86400),
        cat=st.sampled_from([None, "a", "b", "c", "d", "e", "f"]),
        price=st.none() | st.floats(0, 1e6),
    ),
    max_size=60,
)


@given(events_strategy)
def test_state_stays_within_its_bounds_and_survives_encoding(events: list[Event]) -> None:
    profile = None
    for event in events:
        profile, _ = update(profile, event, T0 + 10 * 86400, CONFIG)
    if profile is None:
        return
    assert len(profile.categories) <= CONFIG.max_categories
    assert len(profile.recent) <= CONFIG.max_recent
    assert len(profile.bought) <= CONFIG.max_bought
    assert len(profile.seen) <= CONFIG.dedupe_window
    assert all(w >= 0 for w in profile.categories.values())
    assert [r.ts for r in profile.recent] == sorted(r.ts for r in profile.recent)
    assert Profile.from_bytes(profile.to_bytes()) == profile


@given(events_strategy)
def test_replaying_the_same_events_changes_nothing(events: list[Event]) -> None:
    """At-least-once delivery re-sends recent events after a crash: they must be no-ops."""
    profile = None
    for event in events:
        profile, _ = update(profile, event, T0 + 10 * 86400, CONFIG)
    if profile is None:
        return
    snapshot = profile.to_bytes()
    replayed = [e for e in events if event_fingerprint(e.event_id) in profile.seen]
    for event in replayed:
        profile, applied = update(profile, event, T0 + 10 * 86400, CONFIG)
        assert not applied
    assert profile.to_bytes() == snapshot


def test_a_replay_is_recognised_by_its_source_position_and_time() -> None:
    profile = apply(ev(1, ts=T0), ev(2, ts=T0 + 10))
    profile.positions["events.view/0"] = 41
    assert profile.replayed("events.view/0", 41, T0 + 10)
    assert profile.replayed("events.view/0", 7, T0)
    assert not profile.replayed("events.view/0", 42, T0 + 10), "a later position is new"
    assert not profile.replayed("events.click/0", 3, T0), "another source has its own positions"
    assert not profile.replayed("events.view/0", 5, T0 + 60), "a newer event after a topic re-creation"
    assert Profile.from_bytes(profile.to_bytes()).positions == {"events.view/0": 41}


def json_fields(profile: Profile, version: int, seen: list[int]) -> bytes:
    """The positional JSON array of versions 1 and 2."""
    return orjson.dumps([
        version, profile.user_id, profile.first_ts, profile.last_ts, profile.categories,
        [profile.activity, profile.clicks, profile.buys, profile.price_log_sum, profile.price_weight],
        [[r.item_id, r.category, r.ts, r.type.value] for r in profile.recent],
        profile.bought, seen, profile.events,
        [profile.session_id, profile.session_start, profile.session_events], profile.tz, profile.positions,
    ])


def version_1(profile: Profile) -> bytes:
    """The encoding of the profiles table before the fingerprints were packed."""
    return json_fields(profile, 1, profile.seen)


def version_2(profile: Profile) -> bytes:
    """The encoding before version 3: the fingerprints packed, then the JSON array."""
    count = len(profile.seen)
    packed = struct.pack("<H", count) + struct.pack(f">{count}Q", *profile.seen)
    return b"\x02" + packed + json_fields(profile, 2, [])


finite = st.floats(allow_nan=False, allow_infinity=False)
#: Any profile the fields allow, not only those ``update`` makes: times with any digits.
profiles = st.builds(
    Profile,
    user_id=st.text(),
    first_ts=finite,
    last_ts=finite,
    categories=st.dictionaries(st.text(), finite, max_size=20),
    activity=finite,
    clicks=finite,
    buys=finite,
    price_log_sum=finite,
    price_weight=finite,
    recent=st.lists(st.builds(RecentItem, st.text(), st.text(), finite, st.sampled_from(EventType)), max_size=12),
    bought=st.lists(st.text(), max_size=12),
    seen=st.lists(st.integers(0, 2**63 - 1), max_size=40),
    events=st.integers(0, 2**40),
    session_id=st.text(),
    session_start=finite,
    session_events=st.integers(0, 2**40),
    tz=st.none() | st.text(),
    positions=st.dictionaries(st.text(), st.integers(-1, 2**62), max_size=12),
)


@given(profiles)
def test_every_field_reads_back_exactly(profile: Profile) -> None:
    """Exact, not within a precision: every decision made from a decoded profile (the
    stream decodes and encodes it on every event) is the one made from the original."""
    assert Profile.from_bytes(profile.to_bytes()) == profile


@given(profiles)
def test_older_versions_still_decode(profile: Profile) -> None:
    assert Profile.from_bytes(version_1(profile)) == profile
    assert Profile.from_bytes(version_2(profile)) == profile


@given(events_strategy)
def test_a_version_1_profile_made_by_update_still_decodes(events: list[Event]) -> None:
    profile = None
    for event in events:
        profile, _ = update(profile, event, T0 + 10 * 86400, CONFIG)
    if profile is None:
        return
    assert Profile.from_bytes(version_1(profile)) == profile


def test_version_3_is_less_than_half_of_version_2_for_a_busy_user() -> None:
    categories = ["electronics.smartphone", "appliances.kitchen.refrigerators", "kids.toys"]
    events = [
        ev(n, kind=list(EventType)[n % 3], item=f"i{n % 12}", ts=T0 + 37.129 * n,
           cat=categories[n % 3], price=99.0)
        for n in range(40)
    ]
    profile = apply(*events)
    profile.positions = {"v0": 123_456, "c0": 23_456, "b0": 3_456}
    assert len(profile.to_bytes()) < len(version_2(profile)) / 2


def test_seen_fingerprints_are_packed_in_8_bytes_each() -> None:
    config = ProfileConfig(dedupe_window=32)
    profile = apply(*(ev(n, ts=T0 + n) for n in range(40)), config=config)
    assert len(profile.seen) == 32

    assert len(version_1(profile)) - len(version_2(profile)) > 32 * (19 - 8)


def test_an_unknown_profile_encoding_is_an_error() -> None:
    with pytest.raises(ValueError, match="unsupported profile encoding"):
        Profile.from_bytes(b"\x09")
    with pytest.raises(ValueError, match="dedupe_window"):
        ProfileConfig(dedupe_window=70_000)
