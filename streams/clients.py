"""The clients a worker connects with: its Faust app and its Redis client.

Both take their security settings from :class:`streams.settings.Settings`, as the
aiokafka clients do (``Settings.aiokafka_kwargs``).
"""

from __future__ import annotations

import socket
from typing import Any

import faust
import redis.asyncio as aioredis

from streams.faust_internals import set_fetch_max_wait, set_producer_buffer_limit
from streams.settings import Settings


def redis_client(settings: Settings) -> aioredis.Redis:
    """Short timeouts: a dead Redis must fail a decision fast (closed), not stall a stream."""
    return aioredis.from_url(
        settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0,
        health_check_interval=10, retry_on_timeout=False,
    )


def faust_app(settings: Settings) -> faust.App:
    store = "rocksdb://" if settings.store == "rocksdb" else "memory://"
    app = faust.App(
        settings.app_id,
        broker=settings.broker_urls,
        broker_credentials=credentials(settings),
        store=store,
        datadir=str(settings.data_dir),
        autodiscover=False,
        web_enabled=True,
        # Bind where configured; advertise the host name, so each worker has its own URL.
        web_bind=settings.web_host,
        web_host=socket.gethostname(),
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        processing_guarantee=settings.processing_guarantee,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 10),
        table_standby_replicas=0,
        web_in_thread=False,
        # aiokafka keeps one request in flight per broker and waits, message by message,
        # for a full batch of a partition to be sent: with Faust's 16 KiB, a few 1 KiB
        # profile writes fill it and hold every other write up for a round trip.
        producer_max_batch_size=settings.producer_max_batch_bytes,
    )

    async def raise_producer_buffer_limit() -> None:
        # Table writes queue in Faust's ProducerBuffer; past max_messages (100) the
        # conductor waits for it to drain before it hands *any* stream its next message
        # ("producer buffer full"): under load that stopped the worker for 40 % of the
        # time (docs/BENCHMARKS.md). The buffer is still drained before every commit.
        set_producer_buffer_limit(app, settings.producer_buffer_max_messages)

    async def shorten_fetch_wait(sender: Any, assigned: Any, **kwargs: Any) -> None:
        # Faust holds a fetch up to 1.5 s; with aiokafka's one fetch in flight, events
        # waited that long behind a fetch of quiet partitions (docs/BENCHMARKS.md, #14).
        set_fetch_max_wait(app, settings.fetch_max_wait_ms)

    app.task(raise_producer_buffer_limit)
    app.on_partitions_assigned.connect(shorten_fetch_wait)  # type: ignore[arg-type]
    return app


def credentials(settings: Settings) -> Any:
    """Faust's form of the same security settings the aiokafka clients use."""
    kwargs = settings.aiokafka_kwargs()
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(kwargs["ssl_context"])
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=kwargs.get("ssl_context"),
    )
