"""Facts about the run (machine, versions, goals) and the table printed for it."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from load.bench.common import (
    GOAL_ENCODED_BYTES_PER_USER,
    GOAL_P99_DECISION_MS,
    GOAL_RATIO_VS_FAUST,
    GOAL_RSS_BYTES_PER_USER,
    GOAL_THROUGHPUT_RATIO,
    QUANTILES,
)
from load.services import KAFKA_VERSION


def machine_facts() -> dict[str, Any]:
    cpu_model = _proc_field("/proc/cpuinfo", "model name")
    mem_kib = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_bytes": int(mem_kib.split()[0]) * 1024 if mem_kib else None,
        "platform": platform.platform(),
    }


def _proc_field(path: str, name: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == name:
                return value.strip()
    return None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "kafka": KAFKA_VERSION}
    for package in ("faust-streaming", "aiokafka", "river", "redis", "orjson"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def goals(
    ratio: float, ratio_vs_faust: float, p99_ms: float | None, rss_per_user: float,
    encoded_per_user: float,
) -> dict[str, Any]:
    return {
        "throughput_ratio": {"goal": f">= {GOAL_THROUGHPUT_RATIO}", "met": ratio >= GOAL_THROUGHPUT_RATIO},
        "ratio_vs_faust": {"goal": f">= {GOAL_RATIO_VS_FAUST}", "met": ratio_vs_faust >= GOAL_RATIO_VS_FAUST},
        "p99_decision_ms": {
            "goal": f"<= {GOAL_P99_DECISION_MS:.0f}",
            "met": None if p99_ms is None else p99_ms <= GOAL_P99_DECISION_MS,
        },
        "rss_bytes_per_user": {
            "goal": f"<= {GOAL_RSS_BYTES_PER_USER:.0f}", "met": rss_per_user <= GOAL_RSS_BYTES_PER_USER,
        },
        "encoded_bytes_per_user": {
            "goal": f"<= {GOAL_ENCODED_BYTES_PER_USER:.0f}",
            "met": encoded_per_user <= GOAL_ENCODED_BYTES_PER_USER,
        },
    }


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT MET", None: "not measured"}[met]


def _triple(figures: Mapping[str, float | None]) -> str:
    return " / ".join("-" if figures[k] is None else f"{figures[k]:,.1f}" for k in QUANTILES)


def _split(result: Mapping[str, Any]) -> str:
    users = result["active_users"]
    return ", ".join(
        f"{name} {table['bytes'] / users:,.0f} ({table['keys']:,} keys)"
        for name, table in sorted(result["tables"].items())
    )


def render_table(result: Mapping[str, Any]) -> str:
    goal = result["goals"]
    machine, ver = result["machine"], result["versions"]
    rows = [
        ("raw aiokafka passthrough", f"{result['raw_passthrough_eps']:,.0f} events/s", ""),
        ("Faust batch peer", f"{result['faust_passthrough_eps']:,.0f} events/s",
         "take_events(500, 5 ms), decode, one send per event"),
        ("pipeline, one worker", f"{result['pipeline_eps']:,.0f} events/s",
         "until its internal topics are drained too"),
        ("  ingest agent alone", f"{result['ingest_eps']:,.0f} events/s", "until /metrics counts every event"),
        ("  ratio", f"{result['ratio']:.3f}",
         f"goal {goal['throughput_ratio']['goal']}: {_verdict(goal['throughput_ratio']['met'])}"),
        ("  ratio vs Faust peer", f"{result['ratio_vs_faust']:.3f}",
         f"goal {goal['ratio_vs_faust']['goal']}: {_verdict(goal['ratio_vs_faust']['met'])}"),
        ("  worker CPU", f"{result['worker_cpu']['pipeline']:.0%} of a core", ""),
        ("offered load", f"{result['offered_eps']:,.0f} events/s",
         f"{result['latency_events']:,} events; worker CPU {result['worker_cpu']['latency']:.0%} of a core"),
        ("event→decision p50/p95/p99", f"{_triple(result['latency_ms'])} ms",
         f"{result['decisions']:,} decisions; goal p99 {goal['p99_decision_ms']['goal']} ms: "
         f"{_verdict(goal['p99_decision_ms']['met'])}"),
        ("  pushed only", f"{_triple(result['push_latency_ms'])} ms", ""),
        ("event→processed (histogram)", f"{_triple(result['event_lag_ms'])} ms", "worker's event-lag histogram"),
        ("RSS growth per active user", f"{result['rss_bytes_per_user']:,.0f} B",
         "first backlog: includes the buffers and caches it grew"),
        ("  per added user", f"{result['rss_marginal_bytes_per_user']:,.0f} B",
         f"second backlog by new users; goal {goal['rss_bytes_per_user']['goal']} B: "
         f"{_verdict(goal['rss_bytes_per_user']['met'])}"),
        ("  tables, encoded", f"{result['encoded_bytes_per_user']:,.0f} B",
         f"goal {goal['encoded_bytes_per_user']['goal']} B: "
         f"{_verdict(goal['encoded_bytes_per_user']['met'])}; {_split(result)}"),
        ("Kafka messages per event", f"{sum(result['messages_per_event'].values()):.2f}",
         "written by the worker, all topics"),
        ("consumer lag at the end", f"{result['lag_end']:,}", ""),
    ]
    lines = [
        f"nudgestream bench: {result['events']:,} events, {result['users']:,} users "
        f"({result['active_users']:,} active), {result['date']}",
        f"machine: {machine['cores']} cores, {machine['cpu_model']}; Python {ver['python']}, "
        f"faust-streaming {ver['faust-streaming']}, aiokafka {ver['aiokafka']}, "
        f"river {ver['river']}, Kafka {ver['kafka']}",
        "",
        *(f"  {name:<30} {value:>24}  {note}".rstrip() for name, value, note in rows),
    ]
    if result["latency_note"]:
        lines.append(f"  note: {result['latency_note']}")
    if result["worker_env"]:
        lines.append(f"  worker environment: {result['worker_env']}")
    if result["profile"]:
        lines.append(f"  profiled worker (figures include the profiler's overhead): {result['profile']}")
    return "\n".join(lines)
