"""Command-line glue for ``nudgestream produce`` and ``nudgestream demo``."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections.abc import Iterable, Iterator

from load.generator import GeneratedEvent, GeneratorConfig, generate_events
from load.producer import ProduceSummary, ProgressReport, produce, replay_log
from streams.settings import Settings


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events", metavar="FILE.csv", default=None,
        help="replay a real log in the CSV format ts,user_id,event,item_id,category,price "
        "instead of the synthetic generator",
    )
    parser.add_argument(
        "--speed", type=float, default=None,
        help="with --events: play the log this many times faster than real time "
        "(default: as fast as --rate allows)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic generator")
    parser.add_argument("--users", type=int, default=5000, help="synthetic users")
    parser.add_argument(
        "--malformed", type=float, default=0.02, help="share of malformed synthetic events"
    )


def add_produce_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s (0: as fast as possible)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--count", type=int, default=None, help="stop after this many events")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    # One worker sustains a few hundred events/s with the full pipeline (docs/BENCHMARKS.md).
    parser.add_argument("--rate", type=float, default=200.0, help="events/s offered to the worker")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of events")
    parser.add_argument("--forever", action="store_true", help="keep producing until Ctrl-C")


def synthetic_source(args: argparse.Namespace, rate: float, prefix: str) -> Iterator[GeneratedEvent]:
    config = GeneratorConfig(
        users=args.users,
        seed=args.seed,
        malformed_share=args.malformed,
        # Event time follows the wall clock so the worker sees a live stream.
        start_ts=time.time(),
        events_per_second=rate if rate > 0 else 1000.0,
    )
    return with_prefix(generate_events(config), prefix)


def with_prefix(source: Iterable[GeneratedEvent], prefix: str) -> Iterator[GeneratedEvent]:
    if not prefix:
        yield from source
        return
    for record in source:
        yield record._replace(topic=prefix + record.topic)


def print_progress(report: ProgressReport) -> None:
    print(
        f"  sent {report.sent:>9,}  {report.recent_rate:>8,.0f} ev/s  errors {report.errors}",
        file=sys.stderr,
        flush=True,
    )


async def send(
    args: argparse.Namespace, settings: Settings, *, duration: float | None, count: int | None,
    progress: bool,
) -> ProduceSummary:
    rate = args.rate if args.rate > 0 else None
    options = {k: v for k, v in settings.aiokafka_kwargs().items() if k != "bootstrap_servers"}
    callback = print_progress if progress else None
    if args.events:
        return await replay_log(
            args.events, bootstrap=settings.kafka_bootstrap, speed=args.speed,
            rate=None if args.speed else rate, rewrite_ts=True, topic_prefix=settings.topic_prefix,
            duration=duration, count=count, progress=callback, producer_options=options,
        )
    source = synthetic_source(args, args.rate, settings.topic_prefix)
    if count is not None:
        source = itertools.islice(source, count)
    return await produce(
        source, bootstrap=settings.kafka_bootstrap, rate=rate, duration=duration, count=count,
        progress=callback, producer_options=options,
    )


def run_produce(args: argparse.Namespace, settings: Settings) -> int:
    summary = asyncio.run(send(args, settings, duration=args.duration, count=args.count, progress=True))
    print(
        f"sent {summary.sent:,} events in {summary.elapsed_s:.1f}s "
        f"({summary.achieved_rate:,.0f}/s), {summary.malformed_sent:,} malformed on purpose, "
        f"{summary.errors} errors, {summary.skipped} unparsable rows skipped",
    )
    for topic, n in sorted(summary.per_topic.items()):
        print(f"  {topic:28} {n:>10,}")
    return 0 if summary.errors == 0 else 1



