"""Prometheus rules and configuration in deploy/prometheus, checked with promtool.

The rules must load (``promtool check rules``), behave as their unit tests say
(``promtool test rules``), only query metrics a worker really exports, and point every
alert at its section of docs/OPERATIONS.md.

The helpers ``require_tool``, ``exported_metric_names`` and ``metric_names_in`` are
shared with the other deploy tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from streams.metrics import REGISTRY
from tests.conftest import PROJECT_ROOT, in_ci

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
OPERATIONS_DOC = PROJECT_ROOT / "docs" / "OPERATIONS.md"
PROMTOOL_INSTALL = "apt-get install -y prometheus"
#: Series Prometheus makes itself for every scrape target.
PROMETHEUS_SERIES = frozenset({"up"})

#: Names of the samples each metric type exposes, from the family name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def require_tool(name: str, install: str) -> str:
    """Path of an external tool; skips without it, except in CI where it must be there."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed; install it with: {install}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def exported_metric_names() -> frozenset[str]:
    """Every sample name a worker's /metrics can show, labelled children or not."""
    return frozenset(
        family.name + suffix for family in REGISTRY.collect() for suffix in _SUFFIXES[family.type]
    )


def metric_names_in(expr: str) -> set[str]:
    """Names of the series a PromQL expression selects."""
    names: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=collect)
    return names


def _rules() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=120
    )


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", PROMTOOL_INSTALL)


def test_rule_files_and_their_tests_exist() -> None:
    assert RULE_FILES, "no rule files in deploy/prometheus/rules"
    assert RULE_TEST_FILES, "no promtool tests in deploy/prometheus/tests"


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = _run(promtool, "check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = _run(promtool, "test", "rules", *RULE_TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_prometheus_config_passes_promtool_check(promtool: str) -> None:
    result = _run(promtool, "check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_both_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in _alerts()}
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - silent == set(), "alerts never shown silent"


def test_rules_query_only_metrics_the_workers_export() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    known = exported_metric_names() | recorded | PROMETHEUS_SERIES
    for rule in _rules():
        unknown = metric_names_in(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')} uses unknown {unknown}"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    anchors = _heading_anchors(OPERATIONS_DOC)
    for alert in _alerts():
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
        doc, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert PROJECT_ROOT / doc == OPERATIONS_DOC, alert["alert"]
        assert anchor in anchors, f"{alert['alert']}: no section #{anchor} in {doc}"


def _heading_anchors(markdown: Path) -> set[str]:
    """Anchors of the headings, as a Markdown renderer makes them (GitHub's rule)."""
    anchors = set()
    for line in markdown.read_text().splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors
