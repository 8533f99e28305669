"""The private faust-streaming internals the worker relies on exist and behave as assumed.

One test per function of :mod:`streams.faust_internals`, each against the installed Faust's
real objects (an app that never connects: nothing here needs a broker). When one fails
after an upgrade, fix that function and add the new release to ``CHECKED_VERSIONS``.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import faust
import pytest
from faust.events import Event
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams import faust_internals
from streams.faust_internals import (
    CHECKED_VERSIONS,
    acting_for,
    check_faust_version,
    committed_offset,
    recovery_completed,
    release_unacked,
    set_fetch_max_wait,
)
from tests.conftest import PROJECT_ROOT

TOPIC = "internals.view"
PARTITION = TP(TOPIC, 0)


@pytest.fixture
def app() -> Iterator[faust.App]:
    # Never started: the consumer and table manager are built, no connection is made.
    yield faust.App("internals-check", broker="kafka://127.0.0.1:1", store="memory://")


def message(offset: int) -> ConsumerMessage:
    return ConsumerMessage(TOPIC, 0, offset, 0.0, 0, [], b"k", b"v", None)


def test_the_pinned_faust_is_a_checked_release() -> None:
    dependencies = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [re.fullmatch(r"faust-streaming==(\S+)", d) for d in dependencies]
    pinned = [m.group(1) for m in pins if m]
    assert len(pinned) == 1 and pinned[0] in CHECKED_VERSIONS
    assert metadata.version("faust-streaming") in CHECKED_VERSIONS
    check_faust_version()


def test_another_faust_release_stops_the_worker_naming_both_versions() -> None:
    with pytest.raises(RuntimeError, match=r"faust-streaming 0\.16\.0 .* checked against 0\.15\.3"):
        check_faust_version("0.16.0")


def test_the_worker_checks_the_faust_version_before_it_builds_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streams import worker
    from streams.settings import load

    monkeypatch.setattr(faust_internals, "CHECKED_VERSIONS", frozenset({"0.0.1"}))
    with pytest.raises(RuntimeError, match="faust-streaming"):
        worker.run_worker(load({}))


async def test_committed_offset_is_what_faust_read_from_the_group(
    app: faust.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = app.consumer
    assert committed_offset(consumer, PARTITION) is None  # unknown before an assignment

    async def committed_by_the_group() -> dict[TP, int]:
        return {PARTITION: 7}

    # What Faust does on every assignment: seek to, and remember, the committed offsets.
    monkeypatch.setattr(consumer, "seek_to_committed", committed_by_the_group)
    await consumer.perform_seek()
    assert committed_offset(consumer, PARTITION) == 7


async def test_released_messages_stop_holding_up_a_rebalance_and_are_never_committed(
    app: faust.App,
) -> None:
    consumer: Any = app.consumer
    # An agent's topic acknowledges its messages (what subscribing does at start).
    app.topics.add(app.topic(TOPIC))
    await app.topics._update_indices()  # type: ignore[attr-defined]
    released, kept = message(3), message(4)
    consumer.track_message(released)
    consumer.track_message(kept)
    # A rebalance waits for the unacknowledged messages; a release must wake it.
    waiting = asyncio.ensure_future(consumer._wait_for_ack(timeout=5.0))
    await asyncio.sleep(0)
    release_unacked(consumer, [released])
    await asyncio.wait_for(waiting, timeout=1.0)
    assert set(consumer.unacked) == {kept}
    assert released.acked
    # The offset is not recorded for the next commit: acknowledging now is a no-op.
    assert consumer.ack(released) is False
    assert consumer.ack(kept) is True


def test_acting_for_makes_the_event_current_for_table_writes(app: faust.App) -> None:
    event = Event(app, b"k", b"v", [], message(5))
    assert faust.current_event() is None
    with acting_for(event):
        assert faust.current_event() is event
    assert faust.current_event() is None


def test_recovery_completed_follows_the_table_recovery(app: faust.App) -> None:
    assert recovery_completed(app) is False
    app.tables.recovery.completed.set()  # type: ignore[attr-defined]  # as Recovery does when done
    assert recovery_completed(app) is True


async def test_the_fetch_wait_faust_hard_codes_is_replaced_on_the_running_fetcher(app: faust.App) -> None:
    from aiokafka.consumer.fetcher import Fetcher

    thread = app.consumer._thread  # type: ignore[attr-defined]
    thread._consumer = thread._create_consumer(loop=asyncio.get_running_loop())
    consumer = thread._consumer
    assert consumer._fetch_max_wait_ms == 1500  # what Faust builds its consumer with
    # What AIOKafkaConsumer.start() creates, minus the connection it makes first.
    consumer._fetcher = Fetcher(
        consumer._client, consumer._subscription, fetch_max_wait_ms=consumer._fetch_max_wait_ms
    )
    try:
        set_fetch_max_wait(app, 20)
        assert consumer._fetcher._fetch_max_wait_ms == 20
    finally:
        await consumer._fetcher.close()
        await consumer._client.close()
