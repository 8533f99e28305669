"""Kubernetes manifests in deploy/k8s, rendered by kustomize as an operator would.

Both the base and the example overlay must render, every resource must be valid against
the Kubernetes API schemas (strict: no unknown fields) of the oldest and newest versions
we support, and the manifests must agree with the application: settings that exist,
secrets only from the Secret, probes on the web port, CLI commands that exist.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streams.settings import describe
from tests.conftest import PROJECT_ROOT, nudgestream
from tests.unit.test_deploy_prometheus import require_tool

K8S_DIR = PROJECT_ROOT / "deploy" / "k8s"
RENDERED_DIRS = ("base", "overlays/example")
KUSTOMIZE_INSTALL = "GOBIN=/usr/local/bin go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1"
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
SECRET_NAME = "nudgestream-secrets"
#: Settings whose values are secrets (a Redis URL carries the Redis password).
SECRET_SETTINGS = {
    "NUDGESTREAM_KAFKA_SASL_PASSWORD",
    "NUDGESTREAM_PSEUDONYM_KEY",
    "NUDGESTREAM_REDIS_URL",
}
WORKLOAD_KINDS = {"StatefulSet", "Deployment", "Job"}
Resource = dict[str, Any]


@pytest.fixture(scope="module")
def kustomize() -> str:
    return require_tool("kustomize", KUSTOMIZE_INSTALL)


@pytest.fixture(scope="module", params=RENDERED_DIRS)
def resources(request: pytest.FixtureRequest, kustomize: str) -> list[Resource]:
    result = subprocess.run(
        [kustomize, "build", str(K8S_DIR / request.param)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _one(resources: list[Resource], kind: str, name: str) -> Resource:
    (found,) = (r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name)
    return found


def _workloads(resources: list[Resource]) -> Iterator[Resource]:
    return (r for r in resources if r["kind"] in WORKLOAD_KINDS)


def _containers(resources: list[Resource]) -> Iterator[tuple[str, Resource]]:
    for workload in _workloads(resources):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield f"{workload['metadata']['name']}/{container['name']}", container


def _settings_map(resources: list[Resource]) -> dict[str, str]:
    (config,) = (r for r in resources if r["kind"] == "ConfigMap")
    data: dict[str, str] = config["data"]
    return data


def _worker(resources: list[Resource]) -> Resource:
    return _one(resources, "StatefulSet", "nudgestream-worker")


def _worker_container(resources: list[Resource]) -> Resource:
    containers: list[Resource] = _worker(resources)["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def _port(container: Resource, name: str) -> int:
    (port,) = (p["containerPort"] for p in container["ports"] if p["name"] == name)
    return int(port)


def test_every_resource_is_valid_for_the_supported_kubernetes_versions(
    resources: list[Resource],
) -> None:
    for resource in resources:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(resource, version, strict=True)


def test_no_secret_values_are_rendered(resources: list[Resource]) -> None:
    assert [r for r in resources if r["kind"] == "Secret"] == []
    assert not SECRET_SETTINGS & _settings_map(resources).keys()


def test_secret_settings_come_only_from_the_secret(resources: list[Resource]) -> None:
    for where, container in _containers(resources):
        for variable in container.get("env", []):
            if variable["name"] in SECRET_SETTINGS:
                reference = variable["valueFrom"]["secretKeyRef"]
                assert reference["name"] == SECRET_NAME, where
            else:
                assert "secretKeyRef" not in variable.get("valueFrom", {}), where


def test_the_secret_keys_are_those_the_operations_guide_creates(
    resources: list[Resource],
) -> None:
    guide = (PROJECT_ROOT / "docs" / "OPERATIONS.md").read_text()
    created = set(re.findall(r"--from-literal=([a-z-]+)=", guide))
    used = {
        variable["valueFrom"]["secretKeyRef"]["key"]
        for _, container in _containers(resources)
        for variable in container.get("env", [])
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    assert used <= created


def test_every_variable_is_a_known_setting(resources: list[Resource]) -> None:
    known = {variable for variable, _, _ in describe()}
    names = set(_settings_map(resources))
    for _, container in _containers(resources):
        names |= {variable["name"] for variable in container.get("env", [])}
    assert names - known == set()


def test_every_container_runs_a_cli_command_that_exists(resources: list[Resource]) -> None:
    for where, container in _containers(resources):
        assert "command" not in container, f"{where}: the image's entrypoint is the CLI"
        with pytest.raises(SystemExit) as exited:
            nudgestream([*container["args"], "--help"])
        assert exited.value.code == 0, f"{where}: nudgestream {container['args']}"


def test_every_container_has_cpu_and_memory_requests_and_limits(
    resources: list[Resource],
) -> None:
    for where, container in _containers(resources):
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][bound].keys(), where


def test_every_pod_runs_as_the_image_user_without_privileges(
    resources: list[Resource],
) -> None:
    for workload in _workloads(resources):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_workers_keep_rocksdb_tables_on_their_own_claim(resources: list[Resource]) -> None:
    worker = _worker(resources)
    container = _worker_container(resources)
    env = {v["name"]: v.get("value") for v in container["env"]}
    claims = {t["metadata"]["name"] for t in worker["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert env["NUDGESTREAM_STORE"] == "rocksdb"
    assert mounts[env["NUDGESTREAM_DATA_DIR"]] in claims


def test_worker_web_server_listens_on_the_probed_port(resources: list[Resource]) -> None:
    settings = _settings_map(resources)
    container = _worker_container(resources)
    assert settings["NUDGESTREAM_WEB_HOST"] == "0.0.0.0"
    assert _port(container, "metrics") == int(settings["NUDGESTREAM_WEB_PORT"])
    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/healthz", "metrics"),
        "livenessProbe": ("/healthz", "metrics"),
        "readinessProbe": ("/readyz", "metrics"),
    }


def test_service_and_disruption_budget_select_exactly_the_workers(
    resources: list[Resource],
) -> None:
    worker_labels = _worker(resources)["spec"]["template"]["metadata"]["labels"]
    service = _one(resources, "Service", "nudgestream-worker")
    budget = _one(resources, "PodDisruptionBudget", "nudgestream-worker")
    for workload in _workloads(resources):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selected = service["spec"]["selector"].items() <= labels.items()
        assert selected == (workload is _worker(resources)), workload["metadata"]["name"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= worker_labels.items()
    assert budget["spec"]["maxUnavailable"] == 1
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"


def test_workers_are_no_more_than_partitions(resources: list[Resource]) -> None:
    replicas = _worker(resources)["spec"]["replicas"]
    assert 1 <= replicas <= int(_settings_map(resources)["NUDGESTREAM_PARTITIONS"])


def test_topics_job_creates_the_topics_and_retries(resources: list[Resource]) -> None:
    job = _one(resources, "Job", "nudgestream-topics")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["topics", "create"]
    assert job["spec"]["backoffLimit"] >= 1
