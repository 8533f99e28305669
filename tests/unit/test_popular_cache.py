"""The in-process cache of popular lists that decisions read (streams.cooccurrence)."""

from __future__ import annotations

from streams.cooccurrence import PopularCache

TOP3 = [("a", 3.0), ("b", 2.0), ("c", 1.0)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(clock: Clock, max_lists: int = 10) -> PopularCache:
    return PopularCache(ttl_s=2.0, max_lists=max_lists, clock=clock)


def test_a_list_is_served_until_it_expires() -> None:
    clock = Clock()
    popular = cache(clock)
    assert popular.get("k", 3) is None
    popular.put("k", TOP3, asked=3)
    clock.now += 1.9
    assert popular.get("k", 3) == TOP3
    clock.now += 0.1
    assert popular.get("k", 3) is None


def test_a_shorter_request_is_served_from_a_longer_list() -> None:
    popular = cache(Clock())
    popular.put("k", TOP3, asked=3)
    assert popular.get("k", 2) == TOP3  # the caller cuts it to its own length


def test_a_longer_request_needs_a_new_read_unless_the_set_was_exhausted() -> None:
    popular = cache(Clock())
    popular.put("full", TOP3, asked=3)
    popular.put("exhausted", TOP3, asked=10)
    assert popular.get("full", 4) is None, "the set may hold a fourth item"
    assert popular.get("exhausted", 20) == TOP3, "the set had only three"


def test_the_oldest_list_is_dropped_first_and_a_refresh_makes_a_list_young() -> None:
    clock = Clock()
    popular = cache(clock, max_lists=2)
    popular.put("a", TOP3, asked=3)
    popular.put("b", TOP3, asked=3)
    popular.put("a", TOP3, asked=3)
    popular.put("c", TOP3, asked=3)
    assert popular.get("b", 3) is None
    assert popular.get("a", 3) == TOP3
    assert popular.get("c", 3) == TOP3


def test_clearing_forgets_every_list() -> None:
    popular = cache(Clock())
    popular.put("k", TOP3, asked=3)
    popular.clear()
    assert popular.get("k", 3) is None
