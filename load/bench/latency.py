"""Event→decision latency: decisions read back and timed (each ``decision_id`` once,
:mod:`load.decisions`), and the worker's own histogram."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from load.bench.backlog import generator_config, producer_options, stamped_now
from load.bench.common import EVENT_LAG_METRIC, QUANTILES, BenchConfig
from load.bench.worker import BenchWorker, handled, wait_handled
from load.cli import with_prefix
from load.decisions import DECISION_GRACE_S, DecisionWatcher
from load.demo import Snapshot
from load.generator import SyntheticWorld, generate_events
from load.producer import produce
from streams.settings import Settings


async def measure_latency(
    settings: Settings, worker: BenchWorker, config: BenchConfig, world: SyntheticWorld,
    offered_eps: float,
) -> dict[str, Any]:
    before = await worker.scrape()
    started = time.time()
    watcher = DecisionWatcher(settings, since=started)
    watching = await watcher.start()
    live = dataclasses.replace(
        generator_config(config, start_ts=started), seed=config.seed + 1
    )
    cpu, wall = worker.cpu_seconds(), time.monotonic()
    summary = await produce(
        stamped_now(with_prefix(generate_events(live, world), settings.topic_prefix)),
        bootstrap=settings.kafka_bootstrap, rate=offered_eps, duration=config.latency_s,
        producer_options=producer_options(settings),
    )
    cpu_share = (worker.cpu_seconds() - cpu) / (time.monotonic() - wall)
    after = await wait_handled(worker, handled(before) + summary.sent)
    await asyncio.sleep(DECISION_GRACE_S)
    watcher.stop()
    await watching
    figures = latency_figures(watcher.latencies_s, before, after, summary.sent, settings)
    return {**figures, "worker_cpu": round(cpu_share, 2)}


def latency_figures(
    latencies_s: Mapping[str, list[float]], before: Snapshot, after: Snapshot, sent: int,
    settings: Settings,
) -> dict[str, Any]:
    every = [s for values in latencies_s.values() for s in values]
    pushed = latencies_s.get(settings.topics.push, [])
    note = None
    if not every:
        note = (
            "no decision arrived for the offered events (is the decision path in this "
            "build?): decision latencies are null"
        )
    return {
        "latency_events": sent,
        "decisions": len(every),
        "decisions_by_topic": {topic: len(values) for topic, values in latencies_s.items()},
        "latency_ms": _quantiles_ms(every),
        "push_latency_ms": _quantiles_ms(pushed),
        "latency_note": note,
        "event_lag_ms": {
            name: _ms(histogram_delta_quantile(before, after, EVENT_LAG_METRIC, q))
            for name, q in QUANTILES.items()
        },
    }


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _quantiles_ms(values_s: list[float]) -> dict[str, float | None]:
    return {name: _ms(percentile(values_s, q)) for name, q in QUANTILES.items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def histogram_delta_quantile(
    before: Snapshot, after: Snapshot, metric: str, q: float
) -> float | None:
    """The q-quantile of what a histogram observed between two scrapes.

    Interpolated linearly inside the bucket, as Prometheus' ``histogram_quantile`` does;
    None when nothing was observed, the last finite bound when the rank is beyond it.

    >>> before = Snapshot({'lag_bucket{le="0.1"}': 5.0, 'lag_bucket{le="0.5"}': 5.0,
    ...                    'lag_bucket{le="+Inf"}': 5.0}, at=0.0)
    >>> after = Snapshot({'lag_bucket{le="0.1"}': 7.0, 'lag_bucket{le="0.5"}': 9.0,
    ...                   'lag_bucket{le="+Inf"}': 9.0}, at=1.0)
    >>> [round(histogram_delta_quantile(before, after, "lag", q), 3) for q in (0.5, 0.75)]
    [0.1, 0.3]
    >>> histogram_delta_quantile(after, after, "lag", 0.5) is None
    True
    """
    buckets = sorted(
        (_bucket_bound(name), value - before.get(name))
        for name, value in after.values.items()
        if name.startswith(f"{metric}_bucket{{")
    )
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def _bucket_bound(series: str) -> float:
    return float(series.split('le="', 1)[1].split('"', 1)[0])
