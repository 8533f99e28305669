"""``nudgestream bench`` end to end on the real services, at a size that proves the harness.

The figures of so small a run say nothing about speed, so nothing here judges them: the
test checks that every figure is there, consistent with the others and plausible, that
the output ends with one JSON line, and that the run leaves no topic or Redis key behind.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from typing import Any

import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from load import services
from load.bench import add_bench_arguments, run_bench_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 3000
USERS = 300
QUANTILE_KEYS = {"p50", "p95", "p99"}


@pytest.fixture
def bench_output(
    local_services: services.LocalServices,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> list[str]:
    monkeypatch.setenv("NUDGESTREAM_KAFKA_BOOTSTRAP", local_services.kafka_bootstrap)
    monkeypatch.setenv("NUDGESTREAM_REDIS_URL", local_services.redis_url)
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    args = parser.parse_args(
        ["--events", str(EVENTS), "--users", str(USERS), "--latency-seconds", "4", "--json"]
    )
    assert run_bench_command(args) == 0
    lines: list[str] = capsys.readouterr().out.strip().splitlines()
    return lines


def test_a_small_run_reports_consistent_figures_and_leaves_nothing_behind(
    bench_output: list[str], local_services: services.LocalServices
) -> None:
    result = json.loads(bench_output[-1])
    assert any(line.strip().startswith("raw aiokafka passthrough") for line in bench_output[:-1])
    assert any(line.strip().startswith("Faust batch peer") for line in bench_output[:-1])

    assert (result["events"], result["users"]) == (EVENTS, USERS)
    assert 0 < result["active_users"] <= USERS
    _check_throughput(result)
    _check_latency(result)
    _check_memory(result)
    assert result["lag_end"] == sum(result["lag_end_by_topic"].values()) == 0
    _check_context(result)
    asyncio.run(_assert_no_topics_left(local_services.kafka_bootstrap, result))
    _assert_no_redis_keys_left(local_services.redis_url, result["app_id"])


def _check_throughput(result: dict[str, Any]) -> None:
    raw, pipeline, ingest = (
        result[k] for k in ("raw_passthrough_eps", "pipeline_eps", "ingest_eps")
    )
    assert raw > 0 and pipeline > 0
    # The same events, and the ingest agent finishes no later than the whole worker.
    assert ingest >= pipeline
    assert result["ratio"] == pytest.approx(pipeline / raw, abs=1e-3)
    # The Faust peer really ran: its rate is its own timed count, not a constant.
    faust_peer, faust_seconds = result["faust_passthrough_eps"], result["seconds"]["faust_passthrough"]
    assert faust_peer > 0 and faust_seconds > 0
    assert faust_peer == pytest.approx(result["events"] / faust_seconds, rel=1e-2)
    assert result["ratio_vs_faust"] == pytest.approx(pipeline / faust_peer, abs=1e-3)
    assert result["goals"]["ratio_vs_faust"]["met"] == (pipeline / faust_peer >= 0.8)
    assert result["offered_eps"] == pytest.approx(0.5 * pipeline, rel=1e-2)
    assert result["goals"]["throughput_ratio"]["met"] == (pipeline / raw >= 0.5)
    assert result["worker_cpu"]["pipeline"] > 0 and result["worker_cpu"]["latency"] > 0
    # Every active user's profile is written back, at most once per event (a user with
    # several events in one batch costs one write).
    profile_writes = result["messages_per_event"]["profiles-changelog"]
    assert result["active_users"] / result["events"] <= profile_writes <= 1.0


def _check_latency(result: dict[str, Any]) -> None:
    assert result["latency_events"] > 0
    decisions = result["latency_ms"]
    assert set(decisions) == QUANTILE_KEYS
    if result["decisions"] == 0:
        assert all(v is None for v in decisions.values())
        assert result["latency_note"]
    else:
        assert 0 <= decisions["p50"] <= decisions["p95"] <= decisions["p99"]
        assert sum(result["decisions_by_topic"].values()) == result["decisions"]
    lag = result["event_lag_ms"]
    assert set(lag) == QUANTILE_KEYS
    assert 0 <= lag["p50"] <= lag["p95"] <= lag["p99"]


def _check_memory(result: dict[str, Any]) -> None:
    ready, drained = result["rss_ready_bytes"], result["rss_drained_bytes"]
    assert ready > 0 and drained > 0
    assert result["rss_bytes_per_user"] == pytest.approx((drained - ready) / result["active_users"], abs=0.1)
    assert result["bytes_per_user"] == result["rss_bytes_per_user"]
    second = result["rss_second_cohort_bytes"]
    added_users = result["active_users"]  # the second backlog renames every user once
    assert result["rss_marginal_bytes_per_user"] == pytest.approx((second - drained) / added_users, abs=0.1)
    assert result["goals"]["rss_bytes_per_user"]["met"] == (result["rss_marginal_bytes_per_user"] <= 4096)
    tables = result["tables"]
    # Read once the backlog is drained: one profile per user of the backlog.
    assert tables["profiles"]["keys"] == result["active_users"]
    assert all(t["bytes"] > 0 for t in tables.values())
    encoded = sum(t["bytes"] for t in tables.values()) / result["active_users"]
    assert encoded > 0
    assert result["encoded_bytes_per_user"] == pytest.approx(encoded, abs=0.1)
    assert result["table_bytes_per_user"] == result["encoded_bytes_per_user"]
    assert result["goals"]["encoded_bytes_per_user"]["met"] == (result["encoded_bytes_per_user"] <= 1024)


def _check_context(result: dict[str, Any]) -> None:
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"]
    assert {"python", "faust-streaming", "aiokafka", "river", "kafka"} <= set(result["versions"])
    taken = dt.datetime.fromisoformat(result["date"])
    assert abs((dt.datetime.now(dt.UTC) - taken).total_seconds()) < 600
    assert f"nudgestream bench --events {EVENTS} --users {USERS}" in result["command"]


async def _assert_no_topics_left(bootstrap: str, result: dict[str, Any]) -> None:
    prefixes = (result["topic_prefix"], f"{result['app_id']}-")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # Deletion is asynchronous on the broker: give it a moment to show.
        deadline = time.monotonic() + 15
        left = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            left = [t for t in await admin.list_topics() if t.startswith(prefixes)]
    finally:
        await admin.close()
    assert left == []


def _assert_no_redis_keys_left(url: str, app_id: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        assert list(client.scan_iter(match=f"{app_id}:*", count=1000)) == []
    finally:
        client.close()

