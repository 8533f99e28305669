"""Topic administration: create every nudgestream topic idempotently."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings
from streams.topics import changelog_specs


async def create_topics(settings: Settings) -> dict[str, str]:
    """Create every topic of ``settings.topics``; return name -> created|exists."""
    specs = settings.topics.specs() + changelog_specs(settings.app_id)
    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions or settings.partitions,
                replication_factor=settings.replication,
                topic_configs=spec.kafka_config(),
            )
            for spec in specs
            if spec.name not in existing
        ]
        if wanted:
            # Another worker may create a topic between list and create: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
        return {spec.name: "exists" if spec.name in existing else "created" for spec in specs}
    finally:
        await admin.close()
