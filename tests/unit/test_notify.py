"""The notification worker's rules: each live decision sent once, offsets only after success."""

from __future__ import annotations

import argparse
import asyncio
import doctest
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

import streams.notify
from models.outcomes import PushOutcome
from streams import notify_dedupe, notify_handler, notify_loop, notify_parse
from streams.client import MessageBuilder
from streams.notify import (
    Backoff,
    DecisionHandler,
    JsonLinesSender,
    NotifyMetrics,
    RunLimits,
    SeenDecisions,
    add_notify_arguments,
    consume,
    parse_decision,
)

NOW = 1_700_000_000.0


def decision(decision_id: str, *, expires_in: float = 600.0, decided_ago: float = 2.0) -> dict[str, Any]:
    return {
        "schema": 1, "decision_id": decision_id, "user_id": "u-1",
        "items": [{"item_id": "sku-1", "score": 1.0}], "trigger": "browse_interest",
        "segment": None, "explanation": "x", "event_ts": NOW - decided_ago - 0.1,
        "decided_at": NOW - decided_ago, "expires_at": NOW + expires_in,
    }


def raw(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


@dataclass
class FakeSender:
    """Records what it was given; fails for the ids in ``failing`` (``failures`` times each)."""

    failing: dict[str, int] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)

    async def send(self, decision: dict[str, Any]) -> None:
        decision_id = decision["decision_id"]
        self.attempts.append(decision_id)
        if self.failing.get(decision_id, 0) > 0:
            self.failing[decision_id] -= 1
            raise ConnectionError("push provider unavailable")
        self.sent.append(decision_id)


def count(metrics: NotifyMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(f"nudgestream_notify_{name}_total")
    assert value is not None, name
    return value


def handler_for(
    sender: FakeSender, *, now: float = NOW, reporter: FakeReporter | None = None
) -> DecisionHandler:
    return DecisionHandler(sender, NotifyMetrics(), SeenDecisions(), clock=lambda: now, reporter=reporter)


@dataclass
class FakeReporter:
    """Validates each outcome as the producer client would; ``flushed`` counts what was acknowledged."""

    queued: list[PushOutcome] = field(default_factory=list)
    flushed: int = 0

    async def report_outcome(self, outcome: Mapping[str, Any]) -> None:
        self.queued.append(MessageBuilder().build_outcome(outcome, now=NOW).outcome)

    async def flush(self) -> None:
        self.flushed = len(self.queued)

    def reported(self) -> list[tuple[str, str, str | None]]:
        return [(o.decision_id, o.kind.value, o.reason) for o in self.queued]


# --- the per-record rules --------------------------------------------------------------


async def test_a_live_decision_is_sent_and_its_latency_observed() -> None:
    sender = FakeSender()
    handler = handler_for(sender)
    assert await handler.handle(raw(decision("d1", decided_ago=2.0)))
    assert sender.sent == ["d1"]
    metrics = handler.metrics
    assert count(metrics, "received") == count(metrics, "sent") == 1
    assert metrics.registry.get_sample_value("nudgestream_notify_latency_seconds_sum") == 2.0


async def test_a_repeated_decision_id_is_dropped_as_a_duplicate() -> None:
    sender = FakeSender()
    handler = handler_for(sender)
    for _ in range(3):
        assert await handler.handle(raw(decision("d1")))
    assert sender.sent == ["d1"]
    assert count(handler.metrics, "duplicates") == 2


async def test_an_expired_decision_is_skipped_and_counted() -> None:
    sender = FakeSender()
    handler = handler_for(sender)
    assert await handler.handle(raw(decision("late", expires_in=-1.0)))
    assert sender.sent == []
    assert count(handler.metrics, "expired") == 1


async def test_a_decision_is_still_sent_at_its_expiry_instant() -> None:
    sender = FakeSender()
    assert await handler_for(sender).handle(raw(decision("edge", expires_in=0.0)))
    assert sender.sent == ["edge"]


@pytest.mark.parametrize(
    "value",
    [None, b"", b"{", b"[]", raw({"decision_id": "d"}), raw({**decision("d"), "expires_at": "soon"}),
     raw({**decision("d"), "decision_id": ""}), raw({**decision("d"), "decided_at": True})],
)
async def test_a_record_that_is_not_a_decision_is_skipped_not_retried(value: bytes | None) -> None:
    sender = FakeSender()
    handler = handler_for(sender)
    assert await handler.handle(value)
    assert sender.attempts == []
    assert count(handler.metrics, "invalid") == 1


async def test_a_sender_error_leaves_the_record_unsettled_and_unremembered() -> None:
    sender = FakeSender(failing={"d1": 1})
    handler = handler_for(sender)
    assert not await handler.handle(raw(decision("d1")))
    assert count(handler.metrics, "sender_errors") == 1
    assert await handler.handle(raw(decision("d1")))
    assert sender.sent == ["d1"]


async def test_each_handled_push_reports_exactly_what_was_done_with_it() -> None:
    reporter = FakeReporter()
    handler = handler_for(FakeSender(failing={"flaky": 1}), reporter=reporter)
    await handler.handle(raw(decision("ok")))
    await handler.handle(raw(decision("ok")))  # a duplicate: nothing more was done
    await handler.handle(raw(decision("late", expires_in=-1.0)))
    await handler.handle(raw(decision("flaky")))
    await handler.handle(raw(decision("flaky")))
    await handler.handle(b"{")  # not a decision: nothing to report on
    assert reporter.reported() == [
        ("ok", "sent", None),
        ("late", "failed", "expired"),
        ("flaky", "failed", "sender_error"),
        ("flaky", "sent", None),
    ]
    assert all(o.user_id == "u-1" and o.ts == NOW for o in reporter.queued)
    assert "ConnectionError: push provider unavailable" in (reporter.queued[2].detail or "")
    assert count(handler.metrics, "outcomes") == 4


async def test_a_decision_without_a_user_id_is_still_sent_but_not_reported() -> None:
    reporter = FakeReporter()
    sender = FakeSender()
    handler = handler_for(sender, reporter=reporter)
    assert await handler.handle(raw({**decision("anon"), "user_id": None}))
    assert sender.sent == ["anon"] and reporter.queued == []


async def test_offsets_are_committed_only_once_the_outcomes_are_acknowledged() -> None:
    reporter = FakeReporter()
    consumer = FakeConsumer([raw(decision(f"d{i}")) for i in range(3)])
    flushed_at_commit: list[int] = []
    commit = consumer.commit

    async def checked_commit(offsets: Mapping[Any, int] | None = None) -> None:
        flushed_at_commit.append(reporter.flushed)
        await commit(offsets)

    consumer.commit = checked_commit  # type: ignore[method-assign]
    handler = handler_for(FakeSender(), reporter=reporter)
    await consume(consumer, handler, RunLimits(max_messages=3), batch=2, sleep=no_sleep)
    assert consumer.commits == [2, 3]
    assert flushed_at_commit == [2, 3]


def test_parse_decision_keeps_the_whole_record_for_the_sender() -> None:
    doc = {**decision("d1"), "future_field": [1]}
    parsed = parse_decision(raw(doc))
    assert parsed is not None and parsed.doc == doc


# --- the bounded memory of sent ids ----------------------------------------------------


def test_seen_ids_are_forgotten_once_their_decision_expired() -> None:
    seen = SeenDecisions()
    seen.add("d1", expires_at=NOW + 10)
    seen.add("d2", expires_at=NOW + 20)
    assert seen.contains("d1", now=NOW + 10)
    assert not seen.contains("d1", now=NOW + 11)
    assert seen.contains("d2", now=NOW + 11)
    assert len(seen) == 1


def test_at_capacity_the_id_expiring_soonest_is_forgotten_first() -> None:
    seen = SeenDecisions(capacity=2)
    seen.add("long", expires_at=NOW + 100)
    seen.add("short", expires_at=NOW + 1)
    seen.add("new", expires_at=NOW + 50)
    assert len(seen) == 2
    assert seen.contains("long", NOW) and seen.contains("new", NOW)
    assert not seen.contains("short", NOW)


async def test_memory_stays_bounded_by_the_live_decisions() -> None:
    sender = FakeSender()
    clock = [NOW]
    handler = DecisionHandler(sender, NotifyMetrics(), SeenDecisions(), clock=lambda: clock[0])
    for i in range(1000):
        clock[0] = NOW + i
        await handler.handle(raw({**decision(f"d{i}"), "expires_at": NOW + i + 10}))
    assert len(handler.seen) <= 11


# --- the consume loop: commits follow successes ----------------------------------------


@dataclass(frozen=True)
class FakeRecord:
    offset: int
    value: bytes | None


@dataclass
class FakeConsumer:
    """One partition ("p") served from a list; remembers commits and seeks like Kafka."""

    log: list[bytes]
    position: int = 0
    commits: list[int] = field(default_factory=list)

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[Any, Sequence[FakeRecord]]:
        end = len(self.log) if max_records is None else min(len(self.log), self.position + max_records)
        records = [FakeRecord(o, self.log[o]) for o in range(self.position, end)]
        self.position = end
        return {"p": records} if records else {}

    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None:
        assert offsets is not None
        self.commits.append(offsets["p"])

    def seek(self, partition: Any, offset: int) -> None:
        self.position = offset


async def no_sleep(seconds: float) -> None:
    return None


async def test_offsets_are_committed_only_up_to_the_last_successful_send() -> None:
    log = [raw(decision(f"d{i}")) for i in range(5)]
    sender = FakeSender(failing={"d2": 2})
    consumer = FakeConsumer(log)
    settled = await consume(
        consumer, handler_for(sender), RunLimits(max_messages=5), batch=10, sleep=no_sleep
    )
    assert settled == 5
    assert sender.sent == ["d0", "d1", "d2", "d3", "d4"]
    assert sender.attempts.count("d2") == 3
    # Two polls stop at d2 (offset 2): nothing past it is committed until it succeeds.
    assert consumer.commits == [2, 5]


async def test_a_sender_that_keeps_failing_never_gets_its_record_committed() -> None:
    sender = FakeSender(failing={"d1": 10**9})
    consumer = FakeConsumer([raw(decision("d0")), raw(decision("d1")), raw(decision("d2"))])
    delays: list[float] = []
    stop = asyncio.Event()

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 6:
            stop.set()

    await consume(consumer, handler_for(sender), RunLimits(stop=stop), sleep=record_sleep)
    assert max(consumer.commits) == 1
    assert "d2" not in sender.attempts
    assert delays == sorted(delays) and delays[-1] > delays[0]


async def test_idle_exit_ends_the_loop_when_no_record_arrives() -> None:
    ticks = iter(range(100))
    settled = await consume(
        FakeConsumer([]), handler_for(FakeSender()), RunLimits(idle_exit_s=3.0),
        clock=lambda: float(next(ticks)),
    )
    assert settled == 0


def test_backoff_doubles_up_to_its_ceiling_and_resets() -> None:
    backoff = Backoff(initial_s=1.0, max_s=5.0)
    assert [backoff.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0


# --- the default sender and the command line --------------------------------------------


async def test_the_json_lines_sender_appends_one_line_per_decision(tmp_path: Path) -> None:
    out = tmp_path / "pushes.jsonl"
    out.write_text('{"earlier": true}\n')
    sender = JsonLinesSender(out)
    await sender.send(decision("d1"))
    await sender.send(decision("d2"))
    sender.close()
    lines = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert lines == [{"earlier": True}, decision("d1"), decision("d2")]


def test_the_command_line_options_parse() -> None:
    parser = argparse.ArgumentParser()
    add_notify_arguments(parser)
    args = parser.parse_args(["--group", "g", "--out", "x.jsonl", "--max-messages", "3", "--idle-exit", "1.5"])
    assert (args.group, args.out, args.max_messages, args.idle_exit) == ("g", Path("x.jsonl"), 3, 1.5)
    assert parser.parse_args([]).metrics_port == streams.notify.DEFAULT_METRICS_PORT
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-messages", "0"])


@pytest.mark.parametrize(
    "module",
    [streams.notify, notify_parse, notify_dedupe, notify_handler, notify_loop],
    ids=lambda m: m.__name__,
)
def test_the_module_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
