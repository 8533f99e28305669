"""A real Prometheus server scrapes a running worker and loads the project's rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT, in_ci
from tests.integration.conftest import Deployment, free_port

pytestmark = pytest.mark.integration

RULES = sorted((PROJECT_ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
KEY_SERIES = (
    "nudgestream_events_consumed_total",
    "nudgestream_events_rejected_total",
    "nudgestream_event_lag_seconds_bucket",
    "nudgestream_profiles",
    "nudgestream_redis_up",
    "nudgestream_consumer_lag_messages",
)


def api(port: int, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}{query}", timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "prometheus is not installed (Debian: apt-get install prometheus)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_prometheus_scrapes_the_worker_and_loads_the_rules(
    deployment: Deployment, prometheus_binary: str, tmp_path: Path
) -> None:
    worker = deployment.start_worker()
    worker.wait_ready()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: {json.dumps([str(r) for r in RULES])}\n"
        "scrape_configs:\n  - job_name: nudgestream\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{worker.port}']\n"
    )
    server = subprocess.Popen(
        [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 60
        missing: set[str] = set(KEY_SERIES)
        while missing and time.monotonic() < deadline:
            time.sleep(1)
            try:
                names = set(api(port, "label/__name__/values"))
            except OSError:
                continue
            missing = set(KEY_SERIES) - names
        assert not missing, f"series not scraped: {missing}"

        targets = api(port, "targets")["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]
        groups = api(port, "rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert any(r["type"] == "alerting" for r in rules)
        assert any(r["type"] == "recording" for r in rules)
        assert all(r["health"] in ("ok", "unknown") for r in rules), [
            (r["name"], r.get("lastError")) for r in rules if r["health"] == "err"
        ]
        up = api(port, "query", query="nudgestream_redis_up")["result"]
        assert up and up[0]["value"][1] == "1"
    finally:
        server.terminate()
        server.wait(timeout=30)
