"""Attribution across a crash: kill -9 a worker while it credits clicks and buys, restart it,
and find every expected conversion exactly once.

The expectation is computed offline with :class:`models.attribution.Attributor` from the
decisions the worker published (pushes, and holdout records for the control group) and the
same events. What the killed worker had persisted is read from the ``decided`` changelog
right after the kill; the restarted worker recovers exactly that, so it must count the rest
and nothing else: persisted + counted after the restart = expected, per label, with no
(decision, signal) twice. ``nudgestream report --json`` must agree with the counters.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.request
from collections import Counter
from contextlib import redirect_stdout
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from models.attribution import AttributionConfig, Attributor, Exposure
from models.decided import DecisionLog
from models.events import Event, EventType
from models.lift import Group
from streams.cli import main
from tests.integration.conftest import (
    Deployment,
    WorkerProcess,
    _partitions,
    decode_json,
    produce_events,
    read_topic,
    wait_for_related_rows,
)
from tests.integration.test_decisions_crash import DETERMINISTIC

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTINGS = {**DETERMINISTIC, "NUDGESTREAM_HOLDOUT_PERCENT": "30", "NUDGESTREAM_ATTRIBUTION_WINDOW_S": "3600"}
USERS = 500
#: (decision id, signal) -> (trigger, segment, group), as the counters label them.
Labels = tuple[str, str, str]


def counted(worker: WorkerProcess, name: str) -> Counter[tuple[str, ...]]:
    """The worker's samples of ``name`` by label values, in the declared label order."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: Counter[tuple[str, ...]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.value:
                order = ("trigger", "segment", "group", "signal")
                out[tuple(sample.labels[k] for k in order if k in sample.labels)] += int(sample.value)
    return out


async def decided_changelog(deployment: Deployment) -> dict[bytes, bytes]:
    """The latest record of every user in the ``decided`` changelog, read to its end."""
    settings = deployment.settings
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    latest: dict[bytes, bytes] = {}
    try:
        topic = f"{settings.app_id}-decided-changelog"
        tps = await _partitions(consumer, topic, 30.0)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    assert record.key is not None and record.value is not None
                    latest[record.key] = record.value
    finally:
        await consumer.stop()
    return latest


def credited(changelog: dict[bytes, bytes]) -> set[tuple[str, str]]:
    """(decision id, signal) of every conversion stored in the records."""
    return {
        (entry.decision_id, signal.value)
        for raw in changelog.values()
        for entry in DecisionLog.from_bytes(raw).entries
        for signal, _ in entry.credited
    }


def exposures_of(records: list[dict[str, Any]], group: Group) -> list[Exposure]:
    return [
        Exposure(str(r["decision_id"]), str(r["user_id"]), group, float(r["decided_at"]),
                 tuple(i["item_id"] for i in r["items"]), ("phones",), str(r["trigger"]),
                 r["segment"])
        for r in records
    ]


def shopping(exposures: list[Exposure], ts: float) -> list[Event]:
    """Per user: buys and clicks of pushed items, buys in the category, clicks elsewhere."""
    events = []
    for n, exposure in enumerate(exposures):
        user, item = exposure.user_id, exposure.items[0]
        mix = [
            (EventType.CLICK, item, "phones"), (EventType.BUY, item, "phones"),
            (EventType.BUY, f"z{n}", "phones"), (EventType.CLICK, f"lamp{n}", "lamps"),
            (EventType.VIEW, item, "phones"),
        ]
        for k, (kind, item_id, category) in enumerate(mix[: 1 + n % len(mix)] + mix[n % 2 :: 2]):
            events.append(Event(f"{user}-p2-{k}", kind, user, item_id, ts + n * 1e-4, category))
    return events


def expected(exposures: list[Exposure], events: list[Event], window_s: float) -> dict[tuple[str, str], Labels]:
    attributor = Attributor(AttributionConfig(window_s=window_s))
    for exposure in exposures:
        assert attributor.expose(exposure, exposure.sent_at)
    by_id = {e.decision_id: e for e in exposures}
    out: dict[tuple[str, str], Labels] = {}
    for event in events:
        for credit in attributor.observe(event):
            exposure = by_id[credit.exposure.decision_id]
            segment = "none" if exposure.segment is None else str(exposure.segment)
            out[exposure.decision_id, credit.signal.value] = (exposure.trigger, segment, exposure.group.value)
    return out


def by_labels(conversions: dict[tuple[str, str], Labels], only: set[tuple[str, str]]) -> Counter[tuple[str, ...]]:
    return Counter((*labels, signal) for (decision, signal), labels in conversions.items() if (decision, signal) in only)


async def test_a_killed_worker_credits_every_expected_conversion_exactly_once(deployment: Deployment) -> None:
    settings = deployment.settings
    worker = deployment.start_worker(**SETTINGS)
    worker.wait_ready()
    now = time.time() - 60
    seed = [Event(f"s{n}", EventType.VIEW, f"seed{n}", f"pop{n % 5}", now - 100, "phones") for n in range(50)]
    await produce_events(settings, seed)
    await wait_for_related_rows(worker, 5)

    # Phase 1: one browse decision per user, pushed or held back for the control group.
    browsing = [Event(f"u{u}-{k}", EventType.VIEW, f"u{u}", f"{item}{u % 7}", now + u * 1e-3, "phones")
                for u in range(USERS) for k, item in enumerate("ab")]
    await produce_events(settings, browsing)
    deadline = time.monotonic() + 90
    while True:
        pushes = [decode_json(v) for _, v in await read_topic(settings.kafka_bootstrap, settings.topics.push, until=10**6, timeout_s=2)]
        audit = [decode_json(v) for _, v in await read_topic(settings.kafka_bootstrap, settings.topics.suppressed, until=10**6, timeout_s=2)]
        holdout = [r for r in audit if r["outcome"] == "holdout"]
        recorded = sum(counted(worker, "nudgestream_push_exposures_total").values())
        if len({r["user_id"] for r in pushes + holdout}) == USERS and recorded == USERS:
            break
        assert time.monotonic() < deadline, f"{len(pushes)} pushes, {len(holdout)} holdout, {recorded} recorded"
        await asyncio.sleep(1)
    exposures = exposures_of(pushes, Group.TREATMENT) + exposures_of(holdout, Group.CONTROL)
    assert len(exposures) == USERS and holdout and pushes
    assert counted(worker, "nudgestream_push_exposures_total") == Counter(
        (e.trigger, "none" if e.segment is None else str(e.segment), e.group.value) for e in exposures
    )

    # Phase 2: after every decision, before any later one could be credited; each sent twice.
    await asyncio.sleep(1.0)
    events = shopping(exposures, time.time() - 0.5)
    want = expected(exposures, events, 3600.0)
    assert {s for _, s in want} == {"click", "buy"} and len(want) > USERS
    await produce_events(settings, [twice for e in events for twice in (e, e)])
    deadline = time.monotonic() + 60
    while sum(counted(worker, "nudgestream_push_conversions_total").values()) < len(want) // 10:
        assert time.monotonic() < deadline, "no conversion before the kill"
        await asyncio.sleep(0.02)
    worker.kill()
    persisted = credited(await decided_changelog(deployment))
    assert persisted <= set(want), "nothing credited that the events do not call for"

    restarted = deployment.start_worker(**SETTINGS)
    restarted.wait_ready(timeout_s=90)
    rest = set(want) - persisted
    deadline = time.monotonic() + 60
    while sum(counted(restarted, "nudgestream_push_conversions_total").values()) < len(rest):
        assert time.monotonic() < deadline, f"{len(rest)} conversions left to count"
        await asyncio.sleep(0.5)
    await asyncio.sleep(5)  # a late double count would show by now
    after = counted(restarted, "nudgestream_push_conversions_total")
    final = credited(await decided_changelog(deployment))
    print(f"expected {len(want)}, persisted before the kill {len(persisted)}, counted after {sum(after.values())}")
    assert final == set(want), f"{len(set(want) - final)} lost, {len(final - set(want))} unexpected"
    assert after == by_labels(want, rest), "each conversion not persisted before the crash counted once"
    assert sum(counted(restarted, "nudgestream_push_exposures_total").values()) == 0, "no decision recorded twice"

    # The report sums the same counters.
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["report", "--url", f"http://127.0.0.1:{restarted.port}/metrics", "--json"]) == 0
    report = json.loads(out.getvalue())["by_trigger"]
    for group in Group:
        figures = report.get("browse_interest", {}).get(group.value, {})
        buys = sum(n for labels, n in after.items() if labels[2] == group.value and labels[3] == "buy")
        clicks = sum(n for labels, n in after.items() if labels[2] == group.value and labels[3] == "click")
        assert (figures.get("conversions", 0), figures.get("clicks", 0)) == (buys, clicks)
