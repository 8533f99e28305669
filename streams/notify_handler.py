"""What the notification worker does with one record: parse, drop, send, remember.

A duplicate (its ``decision_id`` already sent), an expired decision or a record that is
not a decision is *settled* without sending; a sender error leaves the record unsettled,
to be retried. Every outcome is counted in :class:`NotifyMetrics`.

>>> import asyncio, orjson
>>> class Collect:
...     def __init__(self): self.sent = []
...     async def send(self, decision): self.sent.append(decision["decision_id"])
>>> sender = Collect()
>>> handler = DecisionHandler(sender, NotifyMetrics(), clock=lambda: 50.0)
>>> record = orjson.dumps({"decision_id": "d1", "decided_at": 49.0, "expires_at": 60.0})
>>> asyncio.run(handler.handle(record)), asyncio.run(handler.handle(record)), sender.sent
(True, True, ['d1'])
>>> handler.metrics.duplicates._value.get()
1.0
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram

from models.outcomes import OutcomeKind
from streams.metrics import LATENCY_BUCKETS
from streams.notify_dedupe import SeenDecisions
from streams.notify_outcomes import OutcomeReporter, OutcomeReports
from streams.notify_parse import parse_decision

log = logging.getLogger("nudgestream.notify")

Clock = Callable[[], float]


class DecisionSender(Protocol):
    """Delivers one decision (the decoded ``notifications.push`` value); raises on failure."""

    async def send(self, decision: dict[str, Any]) -> None: ...


class JsonLinesSender:
    """Writes each decision as one JSON line to stdout, or appends it to ``path``."""

    def __init__(self, path: Path | None = None) -> None:
        self._out: IO[bytes] = path.open("ab") if path is not None else sys.stdout.buffer
        self._owned = path is not None

    async def send(self, decision: dict[str, Any]) -> None:
        self._out.write(orjson.dumps(decision) + b"\n")
        # Flushed per line: "sent" must mean the line left this process.
        self._out.flush()

    def close(self) -> None:
        if self._owned:
            self._out.close()


class NotifyMetrics:
    """The worker's own Prometheus metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"nudgestream_notify_{name}_total", doc, registry=self.registry)

        self.received = counter("received", "Records read from the push topic (retries included).")
        self.sent = counter("sent", "Decisions the sender accepted.")
        self.duplicates = counter("duplicates", "Decisions dropped: their decision_id was already sent.")
        self.expired = counter("expired", "Decisions skipped because they were past expires_at.")
        self.invalid = counter("invalid", "Records skipped: not a decision this worker can act on.")
        self.sender_errors = counter("sender_errors", "Failed sender calls (each is retried).")
        self.outcomes = counter("outcomes", "Outcomes (sent, failed) reported on the outcomes topic.")
        self.latency = Histogram(
            "nudgestream_notify_latency_seconds",
            "Time from a decision's decided_at to the sender's success.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


class DecisionHandler:
    """What happens to one record: parse, drop duplicates and expired, send, remember."""

    def __init__(
        self,
        sender: DecisionSender,
        metrics: NotifyMetrics,
        seen: SeenDecisions | None = None,
        clock: Clock = time.time,
        reporter: OutcomeReporter | None = None,
    ) -> None:
        self.sender = sender
        self.metrics = metrics
        self.seen = seen or SeenDecisions()
        self.clock = clock
        #: A reporter of None: outcomes are not reported (a sender used on its own).
        self.outcomes = OutcomeReports(reporter, metrics.outcomes, clock)

    async def handle(self, value: bytes | None) -> bool:
        """True when the record is settled (its offset may be committed), False to retry."""
        self.metrics.received.inc()
        decision = parse_decision(value)
        if decision is None:
            # Retrying cannot fix it; holding the partition on it would stop every push.
            self.metrics.invalid.inc()
            return True
        now = self.clock()
        if self.seen.contains(decision.decision_id, now):
            self.metrics.duplicates.inc()
            return True
        report = self.outcomes.report
        user_id = decision.doc.get("user_id")
        if now > decision.expires_at:
            self.metrics.expired.inc()
            await report(
                decision.decision_id, user_id, OutcomeKind.FAILED, "expired",
                f"past expires_at {decision.expires_at}",
            )
            return True
        try:
            await self.sender.send(decision.doc)
        except Exception as exc:
            self.metrics.sender_errors.inc()
            log.warning("sender failed for decision %s; will retry", decision.decision_id, exc_info=True)
            await report(
                decision.decision_id, user_id, OutcomeKind.FAILED, "sender_error",
                f"{type(exc).__name__}: {exc}",
            )
            return False
        self.seen.add(decision.decision_id, decision.expires_at)
        self.metrics.sent.inc()
        self.metrics.latency.observe(max(0.0, self.clock() - decision.decided_at))
        await report(decision.decision_id, user_id, OutcomeKind.SENT)
        return True

    async def flush(self) -> None:
        """Wait until the broker has every outcome reported so far."""
        await self.outcomes.flush()
