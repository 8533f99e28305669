"""Reference notification worker: each live push decision handed to a sender once.

``nudgestream notify`` reads ``notifications.push`` (``schemas/decision.v1.json``) in a
consumer group with ``isolation_level="read_committed"`` (decisions of aborted
transactions are never seen) and, for each decision:

1. drops it if its ``decision_id`` was already sent (counted as a duplicate);
2. skips it if it is past ``expires_at`` (counted as expired): a late push is worse
   than none;
3. hands it to a :class:`DecisionSender` (default :class:`JsonLinesSender`: JSON lines
   on stdout or appended to a file; a real deployment plugs in its push provider);
4. reports what it did on ``notifications.outcomes`` (``schemas/outcome.v1.json``):
   ``sent``, or ``failed`` with reason ``expired`` or ``sender_error``
   (:mod:`streams.notify_outcomes`);
5. commits the offset only after the sender succeeded and its outcomes were
   acknowledged by the broker. On a sender error the record's
   partition is rewound to it and retried with exponential backoff; no offset past it
   is committed, so a restart delivers it again. The worker keeps polling while it
   retries, so it stays in its consumer group however long the sender is down.

**Why duplicates happen and how far the de-duplication reaches.** The decision engine
is at-least-once: after a crash it replays events and re-publishes the same decisions
under the same deterministic ``decision_id`` (same key, so same partition), usually
seconds after the first copy. This worker itself re-reads, after a crash or a
rebalance, the records of at most one poll (``--batch``) that were sent but not yet
committed. :class:`SeenDecisions` remembers sent ids *in memory*, each until its
decision expires: after that the expiry check drops any copy anyway, so memory stays
proportional to the decisions live at once (and a hard capacity bounds it). A restart,
or a partition moving to another worker, starts with an empty set and relies on the
committed offsets: only the uncommitted tail of one poll can be sent twice (or a copy
from the engine that straddles the move). Persisting the set in Redis would not close that
window (a crash between the push and the write still duplicates) and would put a
second dependency on the last hop; a push provider that takes ``decision_id`` as its
idempotency key closes it, so the id is passed through unchanged in every decision.

The pieces: :mod:`streams.notify_parse` (the fields acted on),
:mod:`streams.notify_dedupe` (:class:`SeenDecisions`), :mod:`streams.notify_handler`
(one record; the senders and metrics) and :mod:`streams.notify_loop` (polling,
commits, retries); this module is the command and exports them all.

Metrics (own registry, own port, default 6067, ``/metrics``):
``nudgestream_notify_{received,sent,duplicates,expired,invalid,sender_errors,outcomes}_total``
and ``nudgestream_notify_latency_seconds`` (``decided_at`` to the sender's success).

>>> seen = SeenDecisions(capacity=2)
>>> seen.add("d1", expires_at=100.0)
>>> seen.contains("d1", now=99.0), seen.contains("d1", now=101.0), seen.contains("d2", now=99.0)
(True, False, False)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import sys
from pathlib import Path
from typing import Final

from aiokafka.errors import KafkaConnectionError
from prometheus_client import start_http_server

from streams.notify_dedupe import DEFAULT_DEDUPE_CAPACITY, SeenDecisions
from streams.notify_handler import DecisionHandler, DecisionSender, JsonLinesSender, NotifyMetrics
from streams.notify_loop import (
    DEFAULT_BATCH,
    Backoff,
    BatchOutcome,
    RunLimits,
    consume,
    process_batch,
    run_notifier,
)
from streams.notify_parse import ReceivedPush, parse_decision
from streams.settings import Settings

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_DEDUPE_CAPACITY",
    "DEFAULT_METRICS_PORT",
    "Backoff",
    "BatchOutcome",
    "DecisionHandler",
    "DecisionSender",
    "JsonLinesSender",
    "NotifyMetrics",
    "ReceivedPush",
    "RunLimits",
    "SeenDecisions",
    "add_notify_arguments",
    "consume",
    "parse_decision",
    "process_batch",
    "run_notifier",
    "run_notify",
]

log = logging.getLogger("nudgestream.notify")

DEFAULT_METRICS_PORT: Final = 6067


def add_notify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group", default=None, help="consumer group (default: NUDGESTREAM_APP_ID + '-notify')"
    )
    parser.add_argument(
        "--out", metavar="FILE", type=Path, default=None,
        help="append decisions as JSON lines to FILE (default: stdout)",
    )
    parser.add_argument(
        "--max-messages", metavar="N", type=_positive_int, default=None,
        help="exit after N records are settled (sent, duplicate, expired or invalid)",
    )
    parser.add_argument(
        "--idle-exit", metavar="S", type=_positive_float, default=None,
        help="exit after S seconds without a record (the start counts as one)",
    )
    parser.add_argument(
        "--batch", metavar="N", type=_positive_int, default=DEFAULT_BATCH,
        help="records per poll and commit; a crash can re-send at most this many",
    )
    parser.add_argument(
        "--metrics-port", metavar="PORT", type=int, default=DEFAULT_METRICS_PORT,
        help=f"port of /metrics on NUDGESTREAM_WEB_HOST (default {DEFAULT_METRICS_PORT}; 0: off)",
    )


def run_notify(args: argparse.Namespace, settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    group = args.group or f"{settings.app_id}-notify"
    metrics = NotifyMetrics()
    server = None
    if args.metrics_port:
        server, _ = start_http_server(args.metrics_port, settings.web_host, metrics.registry)
    sender = JsonLinesSender(args.out)
    try:
        settled = asyncio.run(_serve(settings, sender, group, metrics, args))
    except KafkaConnectionError as exc:
        print(f"nudgestream notify: cannot reach Kafka: {exc}", file=sys.stderr)
        return 1
    finally:
        sender.close()
        if server is not None:
            server.shutdown()
            server.server_close()
    log.info("notify: %d records settled, group %s", settled, group)
    return 0


async def _serve(
    settings: Settings, sender: DecisionSender, group: str, metrics: NotifyMetrics,
    args: argparse.Namespace,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available off the main thread; Ctrl-C then still interrupts, less gracefully.
        with contextlib.suppress(ValueError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    limits = RunLimits(args.max_messages, args.idle_exit, stop)
    return await run_notifier(
        settings, sender, group=group, limits=limits, metrics=metrics, batch=args.batch
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value
