"""The ``deferred`` agent: per-user commands, co-partitioned with the events.

Two kinds of command come through the ``deferred`` topic keyed by user: delayed triggers
(decided by :meth:`streams.decisions.DecisionEngine.on_deferred` against the user's
profile) and erasure (``forget`` / ``expire``, applied by :class:`streams.erasure.Eraser`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import faust
import orjson
import redis.asyncio as aioredis
from faust.types import TableT, TopicT

from models.profile import Profile
from streams.batches import BACKGROUND_BATCH, batches
from streams.decisions import DecisionEngine
from streams.erasure import EXPIRE, FORGET, Eraser
from streams.faust_internals import acting_for
from streams.refetch import Refetcher
from streams.settings import Settings

log = logging.getLogger(__name__)


class CommandAgent:
    """The ``deferred`` agent and the eraser whose commands it carries."""

    def __init__(
        self,
        settings: Settings,
        topic: TopicT,
        redis: aioredis.Redis,
        profiles: TableT[bytes, bytes],
        others: Mapping[str, TableT[bytes, bytes]],
        decisions: DecisionEngine,
        refetcher: Refetcher,
    ) -> None:
        self.topic = topic
        self.profiles = profiles
        self.decisions = decisions
        self.refetcher = refetcher
        self.eraser = Eraser(settings, redis, profiles, others, self.send)

    async def consume(self, stream: faust.StreamT[bytes]) -> None:
        async for events in batches(stream, self.refetcher, BACKGROUND_BATCH):
            for event in events:
                with acting_for(event):
                    await self._run(event.message.key, orjson.loads(event.value))

    async def send(self, key: bytes, value: bytes) -> None:
        await self.topic.send(key=key, value=value)

    async def _run(self, key: bytes | None, message: dict[str, Any]) -> None:
        if key is None:
            log.warning("ignored a %s command without a user key", message.get("kind"))
            return
        if message["kind"] in (FORGET, EXPIRE):
            await self.eraser.handle(key, message)
            return
        stored = self.profiles.get(key)
        profile = Profile.from_bytes(stored) if stored is not None else None
        await self.decisions.on_deferred(key, message, profile)
