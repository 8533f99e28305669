"""Co-occurrence in the stream: pair increments, item-partitioned rows, Redis serving.

* The ingest agent (partitioned by user) turns each applied event into row increments
  (:func:`models.cooccurrence.pair_increments`) and sends them to ``cooc.pairs``,
  **grouped by the partition of each item** (the standard murmur2 partitioner), so one
  event costs one message per partition touched rather than one per item.
* The ``cooc`` agent owns the rows of its partitions in a changelog-backed table and
  marks changed rows dirty. Every message holds only items of its partition, so a row's
  changelog partition is always its item's partition and recovery puts it back on the
  worker that owns it.
* Every ``FLUSH_INTERVAL_S`` the dirty rows are scored (they need their neighbours'
  occurrence counts and the total, which other partitions own: all of that is shared
  through Redis) and their top-K related items are written to Redis in two pipelined
  round trips. Popularity (the cold-start fallback) is the rows' own decayed occurrence
  count, kept in a Redis sorted set.

Redis layout (prefix ``<app_id>:``; TTLs refresh at every write):

=================================  ===========  ==============================================
key                                type         value
=================================  ===========  ==============================================
``related:<item_id>``              string       JSON ``[[item_id, score], ...]`` best first (7 d)
``cooc:counts``                    hash         item_id -> ``"<count>,<as-of ts>"``
``cooc:totals``                    hash         partition -> ``"<total>,<as-of ts>"``
``popular``                        sorted set   item_id -> log2(count) + ts / half-life (top 5,000)
``popular:cat:<category>``         sorted set   the same, per item category (top 500)
``item:category``                  hash         item_id -> category
=================================  ===========  ==============================================
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka.partitioner import murmur2

from models.cooccurrence import (
    ENCODING_VERSION,
    CoocConfig,
    DecayedValue,
    Increment,
    Row,
    score_row,
)
from streams import metrics

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 2.0
#: Rows scored per flush: bounds the time one flush holds the event loop.
MAX_ROWS_PER_FLUSH = 2000
RELATED_TTL_S = 7 * 86400
POPULAR_KEPT = 5000
POPULAR_KEPT_PER_CATEGORY = 500
TOTAL_KEY_PREFIX = b"\x00total:"


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the standard (murmur2) partitioner gives ``key``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def group_by_partition(
    increments: Iterable[Increment], partitions: int, category: str | None = None
) -> dict[int, bytes]:
    """One message value per partition: ``[category, [increment, ...]]``.

    ``category`` is the category of the event's own item (the increment that carries
    occurrences); the row owner uses it for per-category popularity.
    """
    grouped: dict[int, list[bytes]] = {}
    categories: dict[int, str | None] = {}
    for increment in increments:
        partition = partition_of(increment.item_id.encode(), partitions)
        grouped.setdefault(partition, []).append(increment.to_bytes())
        if increment.occurrences:
            categories[partition] = category
    return {
        p: b"[" + orjson.dumps(categories.get(p)) + b",[" + b",".join(parts) + b"]]"
        for p, parts in grouped.items()
    }


def decode_increments(raw: bytes) -> tuple[str | None, list[Increment]]:
    """Inverse of :func:`group_by_partition` (one parse for the whole message)."""
    category, encoded = orjson.loads(raw)
    out = []
    for version, item_id, ts, occurrences, neighbours in encoded:
        if version != ENCODING_VERSION:
            raise ValueError(f"unsupported increment encoding {version!r}")
        out.append(Increment(item_id, ts, occurrences, tuple((k, w) for k, w in neighbours)))
    return category, out


def encode_decayed(value: DecayedValue) -> bytes:
    return f"{value.value!r},{value.ts!r}".encode()


def decode_decayed(raw: bytes | str | None) -> DecayedValue:
    if not raw:
        return DecayedValue()
    text = raw.decode() if isinstance(raw, bytes) else raw
    value, ts = text.split(",", 1)
    return DecayedValue(float(value), float(ts))


class RelatedItemsStore:
    """The Redis side of the co-occurrence table: shared counts, served top-K lists."""

    def __init__(self, redis: aioredis.Redis, prefix: str, config: CoocConfig) -> None:
        self.redis = redis
        self.prefix = prefix
        self.config = config
        self.counts_key = f"{prefix}:cooc:counts"
        self.totals_key = f"{prefix}:cooc:totals"
        self.popular_key = f"{prefix}:popular"
        self.category_key = f"{prefix}:item:category"

    def popular_in_key(self, category: str) -> str:
        return f"{self.popular_key}:cat:{category}"

    def related_key(self, item_id: str) -> str:
        return f"{self.prefix}:related:{item_id}"

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
                pipe.hset(self.counts_key, mapping={i: encode_decayed(r) for i, r in rows.items()})
            if totals:
                pipe.hset(self.totals_key, mapping={str(p): encode_decayed(t) for p, t in totals.items()})
            pipe.hmget(self.counts_key, neighbours) if neighbours else pipe.echo("")
            pipe.hgetall(self.totals_key)
            if categories:
                category_map: dict[Any, Any] = dict(categories)
                pipe.hset(self.category_key, mapping=category_map)
            pipe.hmget(self.category_key, list(rows)) if rows else pipe.echo("")
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
            for item_id, row in rows.items():
                related = score_row(row, now, counts, max(total, 1.0), self.config)
                pipe.set(self.related_key(item_id), orjson.dumps(related), ex=RELATED_TTL_S)
                own = row.at(now, half_life)
                if own > 0:
                    score = {item_id: popularity_score(own, now, half_life)}
                    pipe.zadd(self.popular_key, score)
                    if item_id in item_categories:
                        pipe.zadd(self.popular_in_key(item_categories[item_id]), score)
            # Keep the popularity sets bounded: only the head is ever read.
            pipe.zremrangebyrank(self.popular_key, 0, -POPULAR_KEPT - 1)
            for category in set(item_categories.values()):
                pipe.zremrangebyrank(self.popular_in_key(category), 0, -POPULAR_KEPT_PER_CATEGORY - 1)
            await pipe.execute()
        return len(rows)

    async def fetch(
        self,
        related_items: Sequence[str],
        categories: Sequence[str],
        items_needing_category: Sequence[str],
        n_popular: int,
    ) -> tuple[
        dict[str, list[tuple[str, float]]],
        list[tuple[str, float]],
        dict[str, list[tuple[str, float]]],
        dict[str, str],
    ]:
        """Everything a decision reads, in one pipelined round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.mget([self.related_key(i) for i in related_items]) if related_items else pipe.echo("")
            pipe.zrevrange(self.popular_key, 0, n_popular - 1, withscores=True)
            for category in categories:
                pipe.zrevrange(self.popular_in_key(category), 0, n_popular - 1, withscores=True)
            if items_needing_category:
                pipe.hmget(self.category_key, list(items_needing_category))
            else:
                pipe.echo("")
            replies = await pipe.execute()
        raw_related, raw_popular, *raw_by_category, raw_categories = replies
        related = {
            item: _related_list(raw) for item, raw in zip(related_items, raw_related or [], strict=False)
        }
        by_category = {
            c: [(_text(m), float(s)) for m, s in ranked]
            for c, ranked in zip(categories, raw_by_category, strict=True)
        }
        item_category = {
            item: _text(c)
            for item, c in zip(items_needing_category, raw_categories or [], strict=False)
            if c
        }
        popular = [(_text(m), float(s)) for m, s in raw_popular]
        return related, popular, by_category, item_category

    async def related(self, item_ids: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        """Related items of several items in one round trip (missing: empty list)."""
        if not item_ids:
            return {}
        raws = await self.redis.mget([self.related_key(i) for i in item_ids])
        return {item_id: _related_list(raw) for item_id, raw in zip(item_ids, raws, strict=True)}

    async def popular(self, n: int) -> list[tuple[str, float]]:
        ranked: list[Any] = await self.redis.zrevrange(self.popular_key, 0, n - 1, withscores=True)
        return [(_text(member), float(score)) for member, score in ranked]


def _related_list(raw: bytes | str | None) -> list[tuple[str, float]]:
    return [(str(other), float(score)) for other, score in orjson.loads(raw)] if raw else []


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def popularity_score(count: float, ts: float, half_life_s: float) -> float:
    """A time-invariant rank of a decayed count: log2(count) + ts / half-life.

    Decay multiplies every count by the same factor, so ranking by the count seen at
    its own time, shifted by elapsed half-lives, equals ranking by the count now.
    """
    return math.log2(count) + ts / half_life_s


class CoocRows:
    """The row-owner's per-event work, kept apart from Faust for clarity and tests."""

    def __init__(self, config: CoocConfig) -> None:
        self.config = config
        self.dirty: set[str] = set()
        #: Categories seen since the last flush (written to Redis there).
        self.categories: dict[str, str] = {}

    def apply(self, raw_row: bytes | None, increment: Increment) -> bytes:
        row = Row.from_bytes(raw_row) if raw_row else Row()
        row.apply(increment, self.config)
        self.dirty.add(increment.item_id)
        metrics.COOC_PAIRS.inc(len(increment.neighbours))
        return row.to_bytes()

    def take_categories(self) -> dict[str, str]:
        taken, self.categories = self.categories, {}
        return taken

    def take_dirty(self) -> list[str]:
        batch: list[str] = []
        while self.dirty and len(batch) < MAX_ROWS_PER_FLUSH:
            batch.append(self.dirty.pop())
        return batch


def total_key(partition: int) -> bytes:
    return TOTAL_KEY_PREFIX + str(partition).encode()

