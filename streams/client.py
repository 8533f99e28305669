"""Producer client for upstream services: validated events to the right topic, by user.

An upstream service hands over an event as a mapping in the wire form of
``schemas/event.v1.json`` (or as a :class:`models.events.Event`). The client fills
``schema``, ``event_id`` (a uuid4) and ``ts`` (now) when they are absent, validates the
exact bytes it will send with the same decoder the workers run
(:func:`models.events.decode_event`), and sends them to ``<prefix>events.<type>`` keyed
by the user id, so every event of a user lands on one partition. A bad event raises
:class:`InvalidEvent` in the caller instead of becoming a dead letter downstream.

Delivery: idempotent producer with ``acks="all"`` (no loss, no duplicates from the
producer's own retries, order kept per partition); sends are batched for ``linger_ms``.

Only aiokafka, orjson and the transport-free core are imported (no Faust), so any
service can use it. Building the message is pure and usable on its own:

>>> builder = MessageBuilder(Topics("shop."))
>>> msg = builder.build({"type": "view", "user_id": "u-42", "item_id": "sku-1"}, now=1700000000.0)
>>> msg.topic, msg.key, msg.event.ts
('shop.events.view', b'u-42', 1700000000.0)
>>> builder.build({"type": "like", "user_id": "u-42", "item_id": "sku-1"}, now=1700000000.0)
Traceback (most recent call last):
...
streams.client.InvalidEvent: unknown_event_type: type 'like'

The same producer reports push outcomes (``schemas/outcome.v1.json``) for the
decisions it received — what the app saw the user do with a push — validated the same
way and sent to ``<prefix>notifications.outcomes`` keyed by the user id:

>>> builder.build_outcome({"kind": "clicked", "decision_id": "d-1", "user_id": "u-42"},
...                       now=1700000000.0).topic
'shop.notifications.outcomes'

From synchronous code, :class:`SyncEventProducer` runs the same client on its own event
loop in a background thread::

    with SyncEventProducer(EventProducer("127.0.0.1:19092")) as producer:
        producer.send({"type": "buy", "user_id": "u-42", "item_id": "sku-1", "price": 9.5})
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import orjson
from aiokafka import AIOKafkaProducer

from models.events import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_FUTURE_SKEW_S,
    SCHEMA_VERSION,
    Event,
    Rejection,
    RejectReason,
    decode_event,
)
from models.outcomes import SCHEMA_VERSION as OUTCOME_SCHEMA_VERSION
from models.outcomes import PushOutcome, decode_outcome
from streams.settings import Settings
from streams.topics import Topics

T = TypeVar("T")

#: Fields of schema 1. The decoder ignores others (forward compatibility), but a producer
#: sending one is almost always a typo, which is better caught here than lost silently.
KNOWN_FIELDS: Final = frozenset({"schema"} | {f.name for f in dataclasses.fields(Event)})
OUTCOME_FIELDS: Final = frozenset({"schema"} | {f.name for f in dataclasses.fields(PushOutcome)})
#: Durability settings the client guarantees; callers may not weaken them.
FIXED_PRODUCER_OPTIONS: Final[Mapping[str, Any]] = {"acks": "all", "enable_idempotence": True}
DEFAULT_LINGER_MS: Final = 10


class InvalidEvent(ValueError):  # noqa: N818  # the name the published client API uses
    """The event breaks ``schemas/event.v1.json`` (an outcome: ``schemas/outcome.v1.json``);
    ``reason`` and ``detail`` say how.

    ``reason`` is the :class:`~models.events.RejectReason` the worker would have
    dead-lettered it with, or ``"unknown_field"``; ``detail`` names the field.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class EventMessage:
    """One Kafka message ready to send, and the event it carries."""

    topic: str
    key: bytes
    value: bytes
    event: Event


@dataclass(frozen=True, slots=True)
class OutcomeMessage:
    """One outcome message ready to send, and the outcome it carries."""

    topic: str
    key: bytes
    value: bytes
    outcome: PushOutcome


@dataclass(frozen=True, slots=True)
class MessageBuilder:
    """Turns an event mapping into a validated :class:`EventMessage` (pure apart from uuid4)."""

    topics: Topics = field(default_factory=Topics)
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S

    def build(self, event: Mapping[str, Any] | Event, *, now: float) -> EventMessage:
        """Fill the missing ``schema``/``event_id``/``ts`` and validate; raise InvalidEvent."""
        doc = event.to_dict() if isinstance(event, Event) else dict(event)
        _check_fields(doc, KNOWN_FIELDS)
        doc.setdefault("schema", SCHEMA_VERSION)
        if doc.get("event_id") is None:
            doc["event_id"] = str(uuid.uuid4())
        if doc.get("ts") is None:
            doc["ts"] = now
        value = _encode(doc)
        decoded = decode_event(
            value, now=now, max_bytes=self.max_event_bytes, max_future_skew_s=self.max_future_skew_s
        )
        if isinstance(decoded, Rejection):
            raise InvalidEvent(decoded.reason, decoded.detail)
        # The bytes that were validated are the bytes that are sent.
        return EventMessage(
            self.topics.event(decoded.type), decoded.user_id.encode(), value, decoded
        )


    def build_outcome(self, outcome: Mapping[str, Any] | PushOutcome, *, now: float) -> OutcomeMessage:
        """Fill the missing ``schema``/``ts`` of an outcome and validate; raise InvalidEvent."""
        doc = outcome.to_dict() if isinstance(outcome, PushOutcome) else dict(outcome)
        _check_fields(doc, OUTCOME_FIELDS)
        doc.setdefault("schema", OUTCOME_SCHEMA_VERSION)
        if doc.get("ts") is None:
            doc["ts"] = now
        value = _encode(doc)
        decoded = decode_outcome(value, now=now, max_future_skew_s=self.max_future_skew_s)
        if isinstance(decoded, Rejection):
            raise InvalidEvent(decoded.reason, decoded.detail)
        return OutcomeMessage(self.topics.outcomes, decoded.user_id.encode(), value, decoded)


def _check_fields(doc: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InvalidEvent("unknown_field", f"not in schema 1: {', '.join(unknown)}")


def _encode(doc: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError as exc:  # a value JSON cannot carry (a set, a datetime, a huge int...)
        raise InvalidEvent(RejectReason.WRONG_TYPE, str(exc)) from None


class EventProducer:
    """Async producer of validated events (use as ``async with EventProducer(...) as p``).

    ``options`` go to :class:`aiokafka.AIOKafkaProducer` (security settings, compression,
    ``client_id``...), except ``acks`` and ``enable_idempotence``, which are fixed.
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        *,
        topic_prefix: str = "",
        linger_ms: int = DEFAULT_LINGER_MS,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
        **options: Any,
    ) -> None:
        fixed = sorted(set(options) & set(FIXED_PRODUCER_OPTIONS))
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot be changed: the client relies on them")
        self.builder = MessageBuilder(Topics(topic_prefix), max_event_bytes, max_future_skew_s)
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "linger_ms": linger_ms,
            "client_id": "nudgestream-client",
            **options,
            **FIXED_PRODUCER_OPTIONS,
        }
        # aiokafka binds a producer to the running loop, so it is created in start().
        self._producer: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Self:
        """A producer for the deployment ``settings`` describe (prefix, limits, security)."""
        connection = settings.aiokafka_kwargs()
        return cls(
            connection.pop("bootstrap_servers"),
            topic_prefix=settings.topic_prefix,
            max_event_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
            **{**connection, **options},
        )

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        """Send what is buffered, wait for the acknowledgements and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def send(self, event: Mapping[str, Any] | Event) -> asyncio.Future[Any]:
        """Validate and queue ``event``; the returned future resolves when Kafka has it.

        Raises :class:`InvalidEvent` at once for a bad event. The future's result is
        aiokafka's ``RecordMetadata`` (topic, partition, offset).
        """
        if self._producer is None:
            raise RuntimeError("EventProducer is not started (use `async with` or start())")
        message = self.builder.build(event, now=time.time())
        delivery: asyncio.Future[Any] = await self._producer.send(
            message.topic, key=message.key, value=message.value
        )
        return delivery

    async def report_outcome(self, outcome: Mapping[str, Any] | PushOutcome) -> asyncio.Future[Any]:
        """Validate and queue a push outcome (``kind``, ``decision_id``, ``user_id``...).

        Like :meth:`send`: raises :class:`InvalidEvent` at once for a bad outcome and
        returns a future resolved when Kafka has it. Reporting one twice is harmless: the
        worker counts each (``decision_id``, ``kind``) once.
        """
        if self._producer is None:
            raise RuntimeError("EventProducer is not started (use `async with` or start())")
        message = self.builder.build_outcome(outcome, now=time.time())
        delivery: asyncio.Future[Any] = await self._producer.send(
            message.topic, key=message.key, value=message.value
        )
        return delivery

    async def send_and_wait(self, event: Mapping[str, Any] | Event) -> Any:
        """Send ``event`` and wait for the broker's acknowledgement (its RecordMetadata)."""
        return await (await self.send(event))

    async def flush(self) -> None:
        """Wait until every queued event is acknowledged."""
        if self._producer is not None:
            await self._producer.flush()


class SyncEventProducer:
    """Runs an (unstarted) :class:`EventProducer` on an event loop in its own thread.

    Thread-safe. ``send`` blocks only until the event is queued and raises
    :class:`InvalidEvent` in the caller; it returns a future resolved on delivery.
    The producer is started here and stopped by :meth:`close`. Each ``send`` waits for
    one hop to the loop thread, which caps it at a few thousand events/s; services that
    need more use :class:`EventProducer` on their own loop.
    """

    def __init__(self, producer: EventProducer) -> None:
        self._async = producer
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="nudgestream-producer", daemon=True
        )
        self._thread.start()
        try:
            self._run(self._async.start())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def send(self, event: Mapping[str, Any] | Event) -> concurrent.futures.Future[Any]:
        delivered: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._run(self._queue(event, delivered))
        return delivered

    async def _queue(
        self, event: Mapping[str, Any] | Event, delivered: concurrent.futures.Future[Any]
    ) -> None:
        delivery = await self._async.send(event)
        delivery.add_done_callback(lambda done: _copy_outcome(done, delivered))

    def flush(self) -> None:
        self._run(self._async.flush())

    def close(self) -> None:
        """Flush, disconnect and end the background thread (idempotent)."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._async.stop())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _copy_outcome(source: asyncio.Future[Any], target: concurrent.futures.Future[Any]) -> None:
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())
