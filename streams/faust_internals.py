"""Every use of faust-streaming's private internals, in one place to re-check on an upgrade.

Faust has no public call for a few things the worker needs: the committed offset of a
partition (consumer lag, :mod:`streams.refetch`), letting go of messages without
acknowledging them (:func:`streams.batches.release`), naming the event a table write
belongs to outside the agent's own task (:func:`acting_for`), whether table recovery
has completed (``/readyz``), the size of the producer's buffer of table writes
(:func:`set_producer_buffer_limit`) and how long the broker may hold a fetch
(:func:`set_fetch_max_wait`). Each is a named function here; nothing else in the project
reads a private Faust attribute. ``tests/unit/test_faust_internals.py`` checks each
assumption against the installed Faust, and :func:`check_faust_version` stops a worker
at start on a release they were not checked against.

>>> check_faust_version("0.15.3")
>>> check_faust_version("0.16.0")
Traceback (most recent call last):
...
RuntimeError: faust-streaming 0.16.0 is installed, but streams/faust_internals.py was checked against 0.15.3 only: re-check its private attribute uses (tests/unit/test_faust_internals.py) before changing the pin in pyproject.toml
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata

from faust.streams import _current_event
from faust.types import TP, AppT, ConsumerT, EventT, Message
from mode.utils.futures import notify

#: The faust-streaming releases whose internals this module was checked against; the pin in
#: ``pyproject.toml`` must be one of them (a unit test checks that).
CHECKED_VERSIONS = frozenset({"0.15.3"})


def check_faust_version(installed: str | None = None) -> None:
    """Stop at start, naming both versions, if the installed Faust was not checked."""
    version = metadata.version("faust-streaming") if installed is None else installed
    if version not in CHECKED_VERSIONS:
        raise RuntimeError(
            f"faust-streaming {version} is installed, but streams/faust_internals.py was "
            f"checked against {', '.join(sorted(CHECKED_VERSIONS))} only: re-check its private "
            "attribute uses (tests/unit/test_faust_internals.py) before changing the pin "
            "in pyproject.toml"
        )


def committed_offset(consumer: ConsumerT, tp: TP) -> int | None:
    """The offset the consumer group last committed for ``tp`` (None: not known yet).

    ``Consumer._committed_offset`` is filled from the broker on assignment and on each
    commit; there is no public accessor.
    """
    committed: int | None = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
    return committed


def release_unacked(consumer: ConsumerT, messages: Iterable[Message]) -> None:
    """Drop messages from the consumer's wait list without recording their offsets.

    What ``Consumer.ack`` does minus the offset it would commit next: the messages stop
    holding up a rebalance (which waits for ``_unacked_messages`` to empty, woken through
    ``_waiting_for_ack``), and they count as acknowledged so a later ``ack`` leaves them
    alone — their offsets are never committed, so they are delivered again.
    """
    unacked = consumer._unacked_messages  # type: ignore[attr-defined]
    for message in messages:
        message.acked = True
        unacked.discard(message)
    notify(consumer._waiting_for_ack)  # type: ignore[attr-defined]


@contextmanager
def acting_for(event: EventT[bytes]) -> Iterator[None]:
    """Make ``event`` the current event while a table is written.

    A Faust table writes each key to the changelog partition of the *current event*, and
    its RocksDB store picks its database the same way. Inside ``take_events`` there is no
    current event (the stream is consumed in another task), so a write must name the
    event it belongs to: one from the partition that owns the key. Faust reads the current
    event from the private context variable ``faust.streams._current_event``.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def recovery_completed(app: AppT) -> bool:
    """Whether the tables' recovery from their changelogs has completed (``/readyz``).

    ``TableManager.recovery`` is not declared on the typed interface ``TableManagerT``.
    """
    return bool(app.tables.recovery.completed.is_set())  # type: ignore[attr-defined]


def set_producer_buffer_limit(app: AppT, max_messages: int) -> None:
    """How many table writes Faust's producer buffer holds before it stops every stream.

    ``Producer.buffer`` (a ``ProducerBuffer``) is no setting: its ``max_messages`` is 100
    in the class and read on each write. It exists only once the app has built its
    producer, so call this from a task the started app runs.
    """
    app.producer.buffer.max_messages = max_messages


def set_fetch_max_wait(app: AppT, max_wait_ms: int) -> None:
    """How long the broker may hold the worker's fetch requests for data (Faust: 1,500 ms).

    aiokafka keeps one fetch in flight per broker, and leaves out of it every partition
    whose records the consumer has not taken yet. Such a fetch can cover only quiet
    partitions: the broker then holds it for the whole wait, and events arriving meanwhile
    on the partitions left out wait with it (issue #14: the stream got nothing for up to
    1.3 s at a time). Faust hard-codes the wait when it builds the consumer; the fetcher
    reads it for each request, so the consumer must have started (call this once the
    partitions are assigned).
    """
    consumer = app.consumer._thread._consumer  # type: ignore[attr-defined]
    consumer._fetcher._fetch_max_wait_ms = max_wait_ms
