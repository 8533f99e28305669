"""What the notification worker reports back: one outcome record per thing it did.

``sent`` after the sender succeeded, ``failed`` with reason ``expired`` for a decision
skipped as too late, ``failed`` with reason ``sender_error`` for each failed sender call.
Reports are at-least-once (a retry or a re-read poll reports again): the worker counts
each ``decision_id`` and kind once, so the repeats are harmless.

>>> import asyncio
>>> from prometheus_client import CollectorRegistry, Counter
>>> class Collect:
...     def __init__(self): self.outcomes = []
...     async def report_outcome(self, outcome): self.outcomes.append(outcome)
...     async def flush(self): pass
>>> reporter = Collect()
>>> counter = Counter("example_outcomes", "doc", registry=CollectorRegistry())
>>> reports = OutcomeReports(reporter, counter, clock=lambda: 50.0)
>>> asyncio.run(reports.report("d1", "u1", OutcomeKind.SENT))
>>> reporter.outcomes
[{'kind': 'sent', 'decision_id': 'd1', 'user_id': 'u1', 'ts': 50.0}]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from prometheus_client import Counter

from models.outcomes import OutcomeKind
from streams.client import InvalidEvent

log = logging.getLogger("nudgestream.notify")

#: Longest ``detail`` reported (a sender's exception text can be long).
MAX_DETAIL = 256


class OutcomeReporter(Protocol):
    """Where outcomes go (:class:`streams.client.EventProducer` is one)."""

    async def report_outcome(self, outcome: Mapping[str, Any]) -> Any: ...

    async def flush(self) -> None: ...


class OutcomeReports:
    """Reports outcomes to ``reporter`` (None: not reported) and counts them."""

    def __init__(
        self, reporter: OutcomeReporter | None, counter: Counter, clock: Callable[[], float]
    ) -> None:
        self.reporter = reporter
        self.counter = counter
        self.clock = clock

    async def report(
        self, decision_id: str, user_id: Any, kind: OutcomeKind,
        reason: str | None = None, detail: str | None = None,
    ) -> None:
        """Queue the outcome; :meth:`flush` waits for it before the offset is committed."""
        if self.reporter is None:
            return
        outcome: dict[str, Any] = {
            "kind": kind.value, "decision_id": decision_id, "user_id": user_id, "ts": self.clock(),
        }
        if reason is not None:
            outcome["reason"] = reason
        if detail is not None:
            outcome["detail"] = detail[:MAX_DETAIL]
        try:
            await self.reporter.report_outcome(outcome)
        except InvalidEvent as exc:
            # A decision without a usable user_id: the push matters more than its report.
            log.warning("cannot report %s of decision %s: %s", kind, decision_id, exc)
            return
        self.counter.inc()

    async def flush(self) -> None:
        """Wait until the broker has every outcome reported so far."""
        if self.reporter is not None:
            await self.reporter.flush()
