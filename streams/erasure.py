"""Right to erasure and retention: forget a user everywhere nudgestream keeps state.

Where a user's data lives, and how it is erased:

* **profile** (table ``profiles``) and **pending triggers** (table ``pending``): only the
  worker that owns the user's partition may change them, so ``nudgestream forget`` sends a
  ``forget`` command on the user-keyed ``notifications.deferred`` topic; that worker
  deletes both keys, which writes *tombstones* to their changelogs (compaction then drops
  every older value), and acknowledges in Redis.
* **recent decisions and their outcomes** (table ``decided``): deleted with the profile,
  the same way.
* **rate-limit and decision records** in Redis: deleted directly by the command.
* Not user data: co-occurrence rows, related items and popularity (item ids and counts
  only), segment snapshots (centres of many users).
* Kafka *event* and *decision* topics keep raw records until their retention ends (7 to
  30 days, see docs/TOPICS.md); they are append-only logs and are not rewritten.

Inactive users expire the same way: a timer sends ``expire`` commands for profiles whose
last event is older than the retention (default 90 days); the owner deletes them only if
the user is still inactive when the command arrives.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from faust.types import TableT

from models.profile import Profile
from streams.keys import RedisKeys
from streams.limiter import RedisLimiter
from streams.settings import Settings

FORGET = "forget"
EXPIRE = "expire"
ACK_TTL_S = 3600
#: Profiles looked at per retention sweep (bounds the time a sweep holds the event loop).
SWEEP_LIMIT = 20_000


class Eraser:
    """Worker side: applies forget/expire commands to the tables of its partitions."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        profiles: TableT[bytes, bytes],
        others: Mapping[str, TableT[bytes, bytes]],
        send_command: Callable[[bytes, bytes], Any],
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.profiles = profiles
        #: The user's other tables by the name the acknowledgement reports them under.
        self.tables = {"profile": profiles, **others}
        self.send_command = send_command
        self.retention_s = settings.retention_days * 86400.0

    async def handle(self, key: bytes, message: dict[str, Any]) -> None:
        if message["kind"] == EXPIRE:
            raw = self.profiles.get(key)
            if raw is not None and Profile.from_bytes(raw).last_ts < message["cutoff"]:
                self._delete(key)
            return
        removed = self._delete(key)
        await self.redis.set(
            RedisKeys.of_app(self.settings.app_id).forgotten(message["request"]), orjson.dumps(removed), ex=ACK_TTL_S
        )

    def _delete(self, key: bytes) -> dict[str, bool]:
        removed = {name: key in table for name, table in self.tables.items()}
        for name, table in self.tables.items():
            if removed[name]:
                del table[key]  # a tombstone in the changelog
        return removed

    async def sweep(self) -> int:
        """Timer: ask for the deletion of profiles inactive for longer than the retention."""
        cutoff = time.time() - self.retention_s
        expired = []
        for seen, (key, raw) in enumerate(self.profiles.items()):
            if seen >= SWEEP_LIMIT:
                break
            if Profile.from_bytes(raw).last_ts < cutoff:
                expired.append(key)
        command = orjson.dumps({"kind": EXPIRE, "cutoff": cutoff})
        for key in expired:
            await self.send_command(key, command)
        return len(expired)


async def forget_user(settings: Settings, user_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Erase ``user_id`` everywhere (idempotent); report what was removed.

    Raises TimeoutError when no worker acknowledged the table deletion in time (the
    command stays on the topic and is applied when a worker runs).
    """
    limiter = RedisLimiter(settings.redis_url, settings.limits, prefix=f"{settings.app_id}:")
    redis = aioredis.from_url(settings.redis_url)
    producer = AIOKafkaProducer(**settings.aiokafka_kwargs(), acks="all")
    request_id = uuid.uuid4().hex
    try:
        limiter_keys = await limiter.forget_user(user_id)
        await producer.start()
        command = orjson.dumps({"kind": FORGET, "request": request_id})
        await producer.send_and_wait(settings.topics.deferred, command, key=user_id.encode())
        deadline = time.monotonic() + timeout_s
        while (ack := await redis.get(RedisKeys.of_app(settings.app_id).forgotten(request_id))) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no worker acknowledged the erasure (is a worker running?)")
            await asyncio.sleep(0.2)
    finally:
        await producer.stop()
        await limiter.aclose()
        await redis.aclose()
    tables: dict[str, bool] = orjson.loads(ack)
    return {"user_id": user_id, "rate_limit_keys": limiter_keys, **tables}
