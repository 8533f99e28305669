"""One bench run: every phase in order, returning the figures."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load.bench.backlog import build_backlog, generator_config, new_users, produce_all
from load.bench.common import BenchConfig, say
from load.bench.kafka_state import GroupLag, clean_up, messages_per_event, table_state
from load.bench.latency import measure_latency
from load.bench.peers import faust_passthrough, raw_passthrough
from load.bench.report import goals, machine_facts, versions
from load.bench.worker import BenchWorker, measure_pipeline, wait_handled
from load.generator import GeneratedEvent, SyntheticWorld
from streams.admin import create_topics
from streams.settings import Settings, load


async def run_bench(
    settings_env: Mapping[str, str],
    *,
    events: int,
    users: int,
    seed: int,
    latency_s: float = 25.0,
    load_share: float = 0.5,
    profile: Path | None = None,
    worker_env: Mapping[str, str] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Run every phase (see the module doc) and return the figures as a JSON-able dict."""
    config = BenchConfig(events, users, seed, latency_s, load_share, profile, worker_env or {})
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix=f"nudgestream-{tag}-"))
    env = isolated_env(settings_env, tag, scratch)
    settings = load(env)
    say(f"namespace {tag} on {','.join(settings.kafka_bootstrap)}; worker log in {scratch}")
    result: dict[str, Any] = {}
    try:
        await create_topics(settings)
        result = await _measure(settings, env, config, scratch)
    finally:
        await clean_up(settings)
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        **result,
        "app_id": settings.app_id,
        "topic_prefix": settings.topic_prefix,
        "profile": str(profile) if profile else None,
        "machine": machine_facts(),
        "versions": versions(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
    }


def isolated_env(base: Mapping[str, str], tag: str, scratch: Path) -> dict[str, str]:
    """``base`` with this run's own app id, topic prefix, web port and data folder."""
    return {
        **base,
        "NUDGESTREAM_APP_ID": tag,
        "NUDGESTREAM_TOPIC_PREFIX": f"{tag}.",
        "NUDGESTREAM_WEB_PORT": str(free_port()),
        "NUDGESTREAM_DATA_DIR": str(scratch / "data"),
    }


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Marginal:
    """RSS after a second backlog of new users, and its growth per user of that backlog."""

    rss_after: int
    per_user: float


async def _second_cohort(
    settings: Settings, worker: BenchWorker, lag: GroupLag, backlog: list[GeneratedEvent],
    rss_before: int,
) -> Marginal:
    cohort = new_users(backlog, "~2")
    users = len({record.key for record in cohort})
    say(f"second cohort: the backlog again by {users:,} new users, for RSS per added user ...")
    await produce_all(settings, cohort)
    await wait_handled(worker, 2 * len(backlog))
    await lag.wait_drained()
    rss_after = worker.rss_bytes()
    return Marginal(rss_after, (rss_after - rss_before) / users)


async def _measure(
    settings: Settings, env: dict[str, str], config: BenchConfig, scratch: Path
) -> dict[str, Any]:
    world = SyntheticWorld.build(generator_config(config, start_ts=0.0))
    backlog = build_backlog(settings, config, world)
    active_users = len({record.key for record in backlog})
    say(f"producing the backlog: {len(backlog):,} events of {active_users:,} users ...")
    await produce_all(settings, backlog)
    say("raw aiokafka passthrough ...")
    raw = await raw_passthrough(settings, len(backlog))
    say(f"raw passthrough: {raw.eps:,.0f} events/s; Faust batch peer ...")
    faust_peer = await faust_passthrough(settings, env, len(backlog), scratch)
    say(f"Faust batch peer: {faust_peer.eps:,.0f} events/s")
    worker = BenchWorker(settings, scratch / "worker.log")
    worker.launch({**env, **config.worker_env}, config.profile)
    try:
        async with GroupLag(settings) as lag:
            worker.wait_ready()
            rss_ready = worker.rss_bytes()
            say(f"worker ready (pid {worker.pid}, VmRSS {rss_ready / 2**20:,.0f} MiB); draining the backlog ...")
            cpu, wall = worker.cpu_seconds(), time.monotonic()
            pipeline = await measure_pipeline(worker, lag, len(backlog))
            pipeline_cpu = (worker.cpu_seconds() - cpu) / (time.monotonic() - wall)
            rss_drained = worker.rss_bytes()
            tables = await table_state(settings)
            written = await messages_per_event(settings, len(backlog))
            marginal = await _second_cohort(settings, worker, lag, backlog, rss_drained)
            offered = pipeline.full.eps * config.load_share
            say(f"latency: offering {offered:,.0f} events/s for {config.latency_s:.0f}s ...")
            latency = await measure_latency(settings, worker, config, world, offered)
            lag_end = await lag.settled()
    finally:
        worker.stop()
    memory = (rss_drained - rss_ready) / active_users
    ratio = pipeline.full.eps / raw.eps
    ratio_vs_faust = pipeline.full.eps / faust_peer.eps
    encoded_per_user = sum(t["bytes"] for t in tables.values()) / active_users
    latency_cpu = latency.pop("worker_cpu")
    return {
        "events": len(backlog),
        "users": config.users,
        "active_users": active_users,
        "seed": config.seed,
        "raw_passthrough_eps": round(raw.eps, 1),
        "pipeline_eps": round(pipeline.full.eps, 1),
        "ingest_eps": round(pipeline.ingest.eps, 1),
        "ratio": round(ratio, 3),
        "faust_passthrough_eps": round(faust_peer.eps, 1),
        "ratio_vs_faust": round(ratio_vs_faust, 3),
        "offered_eps": round(offered, 1),
        # CPU seconds per second of the worker process (1.0 = one core fully busy).
        "worker_cpu": {"pipeline": round(pipeline_cpu, 2), "latency": latency_cpu},
        **latency,
        # RSS growth per active user; bytes_per_user is its older name.
        "rss_bytes_per_user": round(memory, 1),
        "bytes_per_user": round(memory, 1),
        # RSS growth per user of a second, equal backlog by new users (judged by the goal).
        "rss_marginal_bytes_per_user": round(marginal.per_user, 1),
        "rss_second_cohort_bytes": marginal.rss_after,
        "tables": tables,
        # The name and the older one, for reports that compare with earlier runs.
        "encoded_bytes_per_user": round(encoded_per_user, 1),
        "table_bytes_per_user": round(encoded_per_user, 1),
        "rss_ready_bytes": rss_ready,
        "rss_drained_bytes": rss_drained,
        "messages_per_event": written,
        "lag_end": sum(lag_end.values()),
        "lag_end_by_topic": lag_end,
        "seconds": {
            "raw_passthrough": round(raw.seconds, 2),
            "faust_passthrough": round(faust_peer.seconds, 2),
            "ingest": round(pipeline.ingest.seconds, 2),
            "pipeline": round(pipeline.full.seconds, 2),
        },
        "worker_env": dict(config.worker_env),
        "goals": goals(
            ratio, ratio_vs_faust, latency["latency_ms"]["p99"], marginal.per_user, encoded_per_user
        ),
    }
