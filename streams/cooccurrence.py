"""Co-occurrence in the stream: pair increments, item-partitioned rows, Redis serving.

* The ingest agent (partitioned by user) sends each applied event's row increments to
  ``cooc.pairs``, one message per item partition (the wire format: :mod:`streams.pairs`).
* The ``cooc`` agent owns the rows of its partitions in a changelog-backed table and
  marks changed rows dirty. Every message holds only items of its partition, so a row's
  changelog partition is always its item's partition and recovery puts it back on the
  worker that owns it.
* Every ``FLUSH_INTERVAL_S`` the dirty rows are scored (they need their neighbours'
  occurrence counts and the total, which other partitions own: all of that is shared
  through Redis) and their top-K related items are written to Redis in two pipelined
  round trips. Popularity (the cold-start fallback) is the rows' own decayed occurrence
  count (:func:`models.popularity.popularity_score`), kept in Redis sorted sets.

The Redis keys (``related:``, ``cooc:``, ``popular``, ``item:category``) are laid out
in :mod:`streams.keys`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from models.candidates import CandidateData, Needs
from models.cooccurrence import (
    CoocConfig,
    DecayedValue,
    Row,
    score_row,
)
from models.popularity import POPULAR_KEPT, POPULAR_KEPT_PER_CATEGORY, popularity_score
from streams import metrics
from streams.keys import RedisKeys
from streams.pairs import PairEntry, decode_pairs

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 2.0
#: Rows scored per flush: bounds the work of one flush.
MAX_ROWS_PER_FLUSH = 2000
#: Rows scored between two yields to the event loop (about 2 ms of scoring).
ROWS_BETWEEN_YIELDS = 50
RELATED_TTL_S = 7 * 86400
TOTAL_KEY_PREFIX = b"\x00total:"
#: Popular lists kept in process (the overall one and one per category read).
POPULAR_CACHE_LISTS = 4096

#: A ranked list: (item_id, score), best first.
Ranked = list[tuple[str, float]]

def encode_decayed(value: DecayedValue) -> bytes:
    return f"{value.value!r},{value.ts!r}".encode()


def decode_decayed(raw: bytes | str | None) -> DecayedValue:
    if not raw:
        return DecayedValue()
    text = raw.decode() if isinstance(raw, bytes) else raw
    value, ts = text.split(",", 1)
    return DecayedValue(float(value), float(ts))


@dataclass(frozen=True, slots=True)
class _CachedList:
    ranked: Ranked
    #: How many items were asked for: a shorter list is the whole set.
    asked: int
    expires_at: float


class PopularCache:
    """Popular lists (by Redis key) read in the last ``ttl_s`` seconds, at most ``max_lists``.

    The lists change only when related items are published (every ``FLUSH_INTERVAL_S``),
    yet every decision read and parsed them again: a tenth of a worker's CPU. The oldest
    list is dropped first, so a long tail of categories cannot grow the cache. A worker's
    own publication clears it (:meth:`clear`), so only other workers' publications can
    be up to ``ttl_s`` late — a decision never reads lists older than the ones its own
    worker wrote (a reminder would otherwise see other items than the push before it).
    """

    def __init__(
        self,
        ttl_s: float = FLUSH_INTERVAL_S,
        max_lists: int = POPULAR_CACHE_LISTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_lists = max_lists
        self.clock = clock
        #: Insertion order is age order: put() moves a refreshed list to the end.
        self._lists: dict[str, _CachedList] = {}

    def get(self, key: str, n: int) -> Ranked | None:
        """The cached list holding the top ``n`` (maybe more), or None if expired or too short."""
        cached = self._lists.get(key)
        if cached is None or cached.expires_at <= self.clock():
            return None
        if cached.asked < n and len(cached.ranked) == cached.asked:
            return None  # the set may hold more than was read
        return cached.ranked

    def clear(self) -> None:
        self._lists.clear()

    def put(self, key: str, ranked: Ranked, asked: int) -> None:
        self._lists.pop(key, None)
        self._lists[key] = _CachedList(ranked, asked, self.clock() + self.ttl_s)
        while len(self._lists) > self.max_lists:
            del self._lists[next(iter(self._lists))]


class RelatedItemsStore:
    """The Redis side of the co-occurrence table: shared counts, served top-K lists."""

    def __init__(
        self,
        redis: aioredis.Redis,
        app_id: str,
        config: CoocConfig,
        popular_cache: PopularCache | None = None,
    ) -> None:
        self.redis = redis
        self.keys = RedisKeys.of_app(app_id)
        self.config = config
        self.popular_cache = popular_cache or PopularCache()

    async def publish(
        self,
        rows: Mapping[str, Row],
        totals: Mapping[int, DecayedValue],
        now: float,
        categories: Mapping[str, str] | None = None,
    ) -> int:
        """Score ``rows`` against shared counts and write their related lists (2 round trips)."""
        neighbours = sorted({n for row in rows.values() for n in row.neighbours.weights})
        async with self.redis.pipeline(transaction=False) as pipe:
            if rows:
                pipe.hset(self.keys.cooc_counts, mapping={i: encode_decayed(r) for i, r in rows.items()})
            if totals:
                pipe.hset(self.keys.cooc_totals, mapping={str(p): encode_decayed(t) for p, t in totals.items()})
            pipe.hmget(self.keys.cooc_counts, neighbours) if neighbours else pipe.echo("")
            pipe.hgetall(self.keys.cooc_totals)
            if categories:
                category_map: dict[Any, Any] = dict(categories)
                pipe.hset(self.keys.item_category, mapping=category_map)
            pipe.hmget(self.keys.item_category, list(rows)) if rows else pipe.echo("")
            *_, raw_counts, raw_totals, _, raw_categories = await pipe.execute()
        item_categories = {
            item: _text(c) for item, c in zip(rows, raw_categories or [], strict=False) if c
        }
        half_life = self.config.half_life_s
        counts = {
            item: decode_decayed(raw).at(now, half_life)
            for item, raw in zip(neighbours, raw_counts or [], strict=False)
        }
        total = sum(decode_decayed(raw).at(now, half_life) for raw in raw_totals.values())
        async with self.redis.pipeline(transaction=False) as pipe:
            for n, (item_id, row) in enumerate(rows.items(), 1):
                if n % ROWS_BETWEEN_YIELDS == 0:
                    # Scoring is CPU work on the event loop: let the agents run between
                    # slices, so a flush delays an event by milliseconds, not a whole flush.
                    await asyncio.sleep(0)
                related = score_row(row, now, counts, max(total, 1.0), self.config)
                pipe.set(self.keys.related(item_id), orjson.dumps(related), ex=RELATED_TTL_S)
                own = row.at(now, half_life)
                if own > 0:
                    score = {item_id: popularity_score(own, now, half_life)}
                    pipe.zadd(self.keys.popular, score)
                    if item_id in item_categories:
                        pipe.zadd(self.keys.popular_in(item_categories[item_id]), score)
            # Keep the popularity sets bounded: only the head is ever read.
            pipe.zremrangebyrank(self.keys.popular, 0, -POPULAR_KEPT - 1)
            for category in set(item_categories.values()):
                pipe.zremrangebyrank(self.keys.popular_in(category), 0, -POPULAR_KEPT_PER_CATEGORY - 1)
            await pipe.execute()
        self.popular_cache.clear()
        return len(rows)

    async def fetch_many(self, wanted: Sequence[Needs]) -> list[CandidateData]:
        """The candidate data of several decisions, in one pipelined round trip.

        Related lists are read once for the union of the items; popular lists only when
        :attr:`popular_cache` lacks them, each as long as the longest the batch needs.
        """
        if not wanted:
            return []
        items = list(dict.fromkeys(item for need in wanted for item in need.related_items))
        lengths = self._popular_lengths(wanted)
        lists = {
            key: ranked
            for key, n in lengths.items()
            if (ranked := self.popular_cache.get(key, n)) is not None
        }
        missing = [key for key in lengths if key not in lists]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.mget([self.keys.related(i) for i in items])
            for key in missing:
                pipe.zrevrange(key, 0, lengths[key] - 1, withscores=True)
            raw_related, *raw_popular = await pipe.execute()
        related = {item: _related_list(raw) for item, raw in zip(items, raw_related, strict=True)}
        for key, reply in zip(missing, raw_popular, strict=True):
            lists[key] = _ranked(reply)
            self.popular_cache.put(key, lists[key], lengths[key])
        return [self._candidates(need, related, lists) for need in wanted]

    def _popular_lengths(self, wanted: Sequence[Needs]) -> dict[str, int]:
        """The keys of the popular lists a batch reads, with the longest length needed."""
        lengths: dict[str, int] = {}
        for need in wanted:
            for key in (self.keys.popular, *map(self.keys.popular_in, need.categories)):
                lengths[key] = max(lengths.get(key, 0), need.n_popular)
        return lengths

    def _candidates(
        self, need: Needs, related: Mapping[str, Ranked], lists: Mapping[str, Ranked]
    ) -> CandidateData:
        """One decision's part of a batch's data, popular lists cut to its own length
        (:func:`models.policy.decide` reads every item it is given)."""
        n = need.n_popular
        return CandidateData(
            related={item: related[item] for item in need.related_items},
            popular=lists[self.keys.popular][:n],
            popular_by_category={c: lists[self.keys.popular_in(c)][:n] for c in need.categories},
        )

    async def related(self, item_ids: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        """Related items of several items in one round trip (missing: empty list)."""
        if not item_ids:
            return {}
        raws = await self.redis.mget([self.keys.related(i) for i in item_ids])
        return {item_id: _related_list(raw) for item_id, raw in zip(item_ids, raws, strict=True)}

    async def popular(self, n: int) -> list[tuple[str, float]]:
        ranked: list[Any] = await self.redis.zrevrange(self.keys.popular, 0, n - 1, withscores=True)
        return _ranked(ranked)


def _related_list(raw: bytes | str | None) -> Ranked:
    return [(str(other), float(score)) for other, score in orjson.loads(raw)] if raw else []


def _ranked(reply: Iterable[tuple[Any, Any]]) -> Ranked:
    """A ``ZREVRANGE ... WITHSCORES`` reply as (member, score) pairs."""
    return [(_text(member), float(score)) for member, score in reply]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CoocRows:
    """The row owner's work on a batch of pair messages, kept apart from Faust for tests."""

    def __init__(self, config: CoocConfig) -> None:
        self.config = config
        self.dirty: set[str] = set()
        #: Categories seen since the last flush (written to Redis there).
        self.categories: dict[str, str] = {}

    def apply_batch(
        self, messages: Iterable[tuple[int, bytes]], load: Callable[[bytes], bytes | None]
    ) -> dict[bytes, tuple[int, bytes]]:
        """Fold ``(partition, message value)`` pairs into their rows and partition totals.

        ``load`` reads a stored row. Returns what to store: key -> (partition, encoded
        row), each changed row once, however many increments it received. Rows that a
        replayed message leaves as they were are not returned: rewriting them would only
        refill the changelog, and Faust holds back *every* stream of the worker while its
        producer buffer is full (a restart's replay then crawled at ~300 events/s).
        """
        loaded: dict[bytes, tuple[int, Row]] = {}
        changed: set[int] = set()  # id() of the loaded rows that an increment changed

        def row_for(key: bytes, partition: int) -> Row:
            if key not in loaded:
                raw = load(key)
                loaded[key] = (partition, decode_row(raw) if raw else Row())
            return loaded[key][1]

        for partition, raw in messages:
            for entry in decode_pairs(raw):
                changed.update(id(row) for row in self._apply_entry(entry, partition, row_for))
        return {
            key: (partition, row.to_bytes())
            for key, (partition, row) in loaded.items()
            if id(row) in changed
        }

    def _apply_entry(
        self, entry: PairEntry, partition: int, row_for: Callable[[bytes, int], Row]
    ) -> list[Row]:
        """Apply one message entry; the rows it changed."""
        # Rows, the partition total among them, are stored separately, so a crash can
        # keep some of a batch's writes and lose others: each row decides for itself.
        source, position = entry.source, entry.position
        touched: list[Row] = []
        occurrences, latest = 0.0, -math.inf
        for increment in entry.increments:
            if increment.occurrences:
                occurrences += increment.occurrences
                latest = max(latest, increment.ts)
                if entry.category:
                    self.categories[increment.item_id] = entry.category
            row = row_for(increment.item_id.encode(), partition)
            if source is not None and row.applied(source, position):
                continue  # re-delivered: this row holds it already
            row.apply(increment, self.config)
            touched.append(row)
            self.dirty.add(increment.item_id)
            metrics.COOC_PAIRS.inc(len(increment.neighbours))
        if occurrences:
            total = row_for(total_key(partition), partition)
            if source is None or not total.applied(source, position):
                total.add(occurrences, latest, self.config.half_life_s)
                touched.append(total)
        if source is not None:
            for row in touched:
                row.mark(source, position)
        return touched

    def take_categories(self) -> dict[str, str]:
        taken, self.categories = self.categories, {}
        return taken

    def take_dirty(self) -> list[str]:
        batch: list[str] = []
        while self.dirty and len(batch) < MAX_ROWS_PER_FLUSH:
            batch.append(self.dirty.pop())
        return batch


def decode_row(raw: bytes) -> Row:
    """A stored row, or a partition total (stored as ``"<value>,<ts>"`` before version 2)."""
    if Row.is_encoded(raw):
        return Row.from_bytes(raw)
    total = decode_decayed(raw)
    return Row(total.value, total.ts)


def total_key(partition: int) -> bytes:
    return TOTAL_KEY_PREFIX + str(partition).encode()

