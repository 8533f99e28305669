"""Co-occurrence on real Kafka + Redis: pairs flow through the repartition topic into the
item-partitioned table, and Redis serves each item's related items."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from models.cooccurrence import CoocConfig, Row
from models.events import Event, EventType
from streams.cooccurrence import RelatedItemsStore
from tests.integration.conftest import Deployment, latest_values, produce

pytestmark = pytest.mark.integration


async def test_pairs_reach_the_table_and_redis_serves_the_neighbours(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    worker.wait_ready()
    settings = deployment.settings
    now = time.time() - 600
    # Thirty shoppers look at a phone and then its case; ten look at a kettle then a mug.
    journeys = [("phone", "case")] * 30 + [("kettle", "mug")] * 10
    events = []
    category = {"phone": "tech", "case": "tech", "kettle": "kitchen", "mug": "kitchen"}
    for n, (first, second) in enumerate(journeys):
        user = f"shopper-{n}"
        events.append(Event(f"{user}-1", EventType.VIEW, user, first, now + n, category[first]))
        events.append(Event(f"{user}-2", EventType.VIEW, user, second, now + n + 5, category[second]))
    await produce(
        settings.kafka_bootstrap,
        [(settings.topics.event(e.type), e.user_id.encode(), e.to_bytes()) for e in events],
    )

    changelog = f"{settings.app_id}-cooc-changelog"

    def rows_complete(latest: dict[bytes, bytes | None]) -> bool:
        # Both rows: rows of different partitions may land in different checkpoints.
        phone, mug = latest.get(b"phone"), latest.get(b"mug")
        return (
            phone is not None and mug is not None
            and Row.from_bytes(phone).neighbours.weights.keys() == {"case"}
            and round(Row.from_bytes(phone).value) == 30
            and Row.from_bytes(mug).neighbours.weights.keys() == {"kettle"}
        )

    latest = await latest_values(settings.kafka_bootstrap, changelog, done=rows_complete)
    assert rows_complete(latest)

    client = aioredis.from_url(settings.redis_url)
    store = RelatedItemsStore(client, settings.app_id, CoocConfig())
    deadline = time.monotonic() + 30
    related: dict[str, list[tuple[str, float]]] = {}
    while time.monotonic() < deadline:
        related = await store.related(["phone", "case", "kettle", "mug"])
        if all(related.values()):
            break
        await asyncio.sleep(0.5)
    assert [item for item, _ in related["phone"]] == ["case"]
    assert [item for item, _ in related["case"]] == ["phone"]
    assert [item for item, _ in related["kettle"]] == ["mug"]
    popular = [item for item, _ in await store.popular(4)]
    assert set(popular) == {"phone", "case", "kettle", "mug"}
    assert popular.index("phone") < popular.index("kettle")
    in_kitchen = await client.zrevrange(store.keys.popular_in("kitchen"), 0, -1)
    assert {m.decode() for m in in_kitchen} == {"kettle", "mug"}
    await client.aclose()

