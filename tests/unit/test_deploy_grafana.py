"""The Grafana dashboard and its provisioning in deploy/grafana.

Every panel must query the provisioned Prometheus datasource, by the uid the
provisioning gives it, and only metrics a worker really exports; the dashboard must
cover what an operator looks at first (see docs/OPERATIONS.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT_ROOT
from tests.unit.test_deploy_prometheus import (
    PROMETHEUS_SERIES,
    exported_metric_names,
    metric_names_in,
)

GRAFANA_DIR = PROJECT_ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
#: Grafana's own variables, given a value of the right type so the query parses as PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def _provisioned(kind: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for path in sorted((GRAFANA_DIR / "provisioning" / kind).glob("*.yml")):
        document = yaml.safe_load(path.read_text())
        assert document["apiVersion"] == 1, path
        items.extend(document[kind if kind == "datasources" else "providers"])
    return items


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(where, datasource, PromQL) of every panel target and query variable."""
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target.get("datasource", panel["datasource"]), target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"${variable['name']}", variable["datasource"], variable["query"]["query"]


def _as_promql(query: str, dashboard: dict[str, Any]) -> str:
    """The query with Grafana's variables replaced, and label_values() by its selector."""
    for name, value in GRAFANA_VARIABLES.items():
        query = query.replace(name, value)
    for variable in dashboard["templating"]["list"]:
        query = query.replace(f"${variable['name']}", ".*")
    if query.startswith("label_values("):
        query = query.removeprefix("label_values(").rsplit(",", 1)[0]
    return query


@pytest.fixture(scope="module", params=DASHBOARDS, ids=lambda path: Path(path).name)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(Path(request.param).read_text())
    return loaded


def test_there_is_a_dashboard_and_one_prometheus_datasource() -> None:
    assert DASHBOARDS
    datasources = _provisioned("datasources")
    assert [d["type"] for d in datasources] == ["prometheus"]


def test_panels_query_the_provisioned_datasource_by_uid(dashboard: dict[str, Any]) -> None:
    (datasource,) = _provisioned("datasources")
    for where, used, _ in _queries(dashboard):
        assert used == {"type": "prometheus", "uid": datasource["uid"]}, where


def test_panels_query_only_metrics_the_workers_export(dashboard: dict[str, Any]) -> None:
    known = exported_metric_names() | PROMETHEUS_SERIES
    for where, _, query in _queries(dashboard):
        names = metric_names_in(_as_promql(query, dashboard))
        assert names, f"{where}: selects no metric"
        assert names <= known, f"{where}: unknown {names - known}"


def test_dashboard_shows_what_an_operator_checks_first(dashboard: dict[str, Any]) -> None:
    queried = set().union(
        *(metric_names_in(_as_promql(q, dashboard)) for _, _, q in _queries(dashboard))
    )
    assert {
        "nudgestream_events_consumed_total",
        "nudgestream_event_lag_seconds_bucket",
        "nudgestream_decision_latency_seconds_bucket",
        "nudgestream_push_exposures_total",
        "nudgestream_push_conversions_total",
        "nudgestream_consumer_lag_messages",
        "nudgestream_events_rejected_total",
        "nudgestream_decisions_total",
        "nudgestream_suppressed_total",
        "nudgestream_segment_users",
        "nudgestream_cooc_rows",
        "nudgestream_redis_up",
    } <= queried


def test_panels_have_unique_ids_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    panels = list(_panels(dashboard))
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    mounts = dict(
        reversed(volume.split(":")[:2]) for volume in compose["services"]["grafana"]["volumes"]
    )
    for provider in _provisioned("dashboards"):
        source = mounts[provider["options"]["path"]]
        assert (PROJECT_ROOT / source).resolve() == GRAFANA_DIR / "dashboards"
