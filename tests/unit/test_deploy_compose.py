"""docker-compose.yml, the Dockerfile it builds and .dockerignore.

The compose file is loaded by the Compose Specification's reference loader
(``compose-spec``, built from compose-go: the library ``docker compose`` itself loads
files with), which validates it against the specification's schema and checks its
consistency (every ``depends_on``, volume and network exists). It runs with
``--no-interpolation`` because it does not pass the environment to interpolation; the
test of required secrets relies on exactly that (nothing is set, so every ``${X:?}``
must fail). The Dockerfile is parsed with BuildKit's own parser (PyPI ``dockerfile``).
The rest keeps the files in step with the code: settings that exist, commands the CLI
has, the pinned Kafka version, the ports the workers serve.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml

from load.services import KAFKA_VERSION
from streams.settings import describe
from tests.conftest import PROJECT_ROOT, nudgestream
from tests.unit.test_deploy_prometheus import require_tool

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / "deploy" / "compose.env.example"
COMPOSE_SPEC_INSTALL = (
    "GOBIN=/tmp/compose-spec go install github.com/compose-spec/compose-go/v2/cmd@v2.16.2"
    " && install -m 0755 /tmp/compose-spec/cmd /usr/local/bin/compose-spec"
)
REQUIRED_SECRETS = {"REDIS_PASSWORD", "NUDGESTREAM_PSEUDONYM_KEY", "GRAFANA_ADMIN_PASSWORD"}
SECRET_SETTINGS = {"NUDGESTREAM_PSEUDONYM_KEY", "NUDGESTREAM_REDIS_URL"}
ONE_SHOT_SERVICES = {"topics", "load"}
SETTING_DEFAULTS = {variable: default for variable, default, _ in describe()}
#: ``${NAME}``, ``${NAME:-default}`` or ``${NAME:?message}``, but not the escaped ``$${NAME}``.
INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(?::([-?])([^}]*))?\}")
Service = dict[str, Any]


def _compose_spec(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tool = require_tool("compose-spec", COMPOSE_SPEC_INSTALL)
    return subprocess.run(
        [tool, *args, str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
        timeout=60,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    result = _compose_spec(
        "--no-interpolation", "--format", "json", cwd=PROJECT_ROOT, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Service] = json.loads(result.stdout)["services"]
    return loaded


def _with_defaults(text: str) -> str:
    """``text`` as compose would expand it with only the defaults it declares."""
    return INTERPOLATION.sub(lambda match: match.group(3) or "", text)


def _app_services(services: dict[str, Service]) -> Iterator[tuple[str, Service]]:
    for name, service in services.items():
        if service["image"].startswith("nudgestream:"):
            yield name, service


def _workers(services: dict[str, Service]) -> dict[str, Service]:
    return {n: s for n, s in _app_services(services) if s["command"] == ["worker"]}


def _setting(service: Service, variable: str) -> str:
    return str(service["environment"].get(variable, SETTING_DEFAULTS[variable]))


def _bind_mounts(service: Service) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts."""
    return {v["target"]: Path(v["source"]) for v in service["volumes"] if v["type"] == "bind"}


# --- the compose file -------------------------------------------------------------------


def test_compose_file_conforms_to_the_compose_specification(
    services: dict[str, Service],
) -> None:
    assert {"kafka", "redis", "topics", "prometheus", "grafana"} <= services.keys()


def test_secrets_have_no_default_values(tmp_path: Path) -> None:
    result = _compose_spec(cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    assert result.returncode != 0
    missing = set(re.findall(r"required variable (\w+) is missing a value", result.stderr))
    assert missing == REQUIRED_SECRETS, result.stderr


def test_example_env_file_lists_every_variable_with_the_compose_defaults() -> None:
    declared = {
        name: default if kind == "-" else ""
        for name, kind, default in INTERPOLATION.findall(COMPOSE_FILE.read_text())
    }
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example == declared
    assert {name for name, value in example.items() if not value} == REQUIRED_SECRETS


def test_app_services_pass_only_known_settings(services: dict[str, Service]) -> None:
    for name, service in _app_services(services):
        assert service["environment"].keys() <= SETTING_DEFAULTS.keys(), name


def test_secret_settings_are_interpolated_from_required_variables(
    services: dict[str, Service],
) -> None:
    for name, service in _app_services(services):
        for variable in SECRET_SETTINGS:
            kinds = {kind for _, kind, _ in INTERPOLATION.findall(service["environment"][variable])}
            assert kinds == {"?"}, f"{name}: {variable}"


def test_app_services_run_cli_commands_that_exist(services: dict[str, Service]) -> None:
    for name, service in _app_services(services):
        arguments = [_with_defaults(argument) for argument in service["command"]]
        with pytest.raises(SystemExit) as exited:
            nudgestream([*arguments, "--help"])
        assert exited.value.code == 0, f"{name}: nudgestream {arguments}"


def test_two_workers_share_a_consumer_group_and_keep_their_own_state(
    services: dict[str, Service],
) -> None:
    workers = _workers(services)
    assert len(workers) >= 2
    assert len({_setting(w, "NUDGESTREAM_APP_ID") for w in workers.values()}) == 1
    volumes = []
    for name, worker in workers.items():
        assert _setting(worker, "NUDGESTREAM_STORE") == "rocksdb", name
        (volume,) = worker["volumes"]
        assert volume["type"] == "volume", name
        assert volume["target"] == _setting(worker, "NUDGESTREAM_DATA_DIR"), name
        volumes.append(volume["source"])
    assert len(set(volumes)) == len(volumes), "workers must not share a state volume"


def test_workers_start_once_topics_exist_and_kafka_and_redis_are_healthy(
    services: dict[str, Service],
) -> None:
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, service in _app_services(services):
        if name != "topics":
            condition = service["depends_on"]["topics"]["condition"]
            assert condition == "service_completed_successfully", name
    for name, worker in _workers(services).items():
        for dependency in ("kafka", "redis"):
            assert worker["depends_on"][dependency]["condition"] == "service_healthy", name


def test_long_running_services_restart_and_report_their_health(
    services: dict[str, Service],
) -> None:
    for name, service in services.items():
        if name in ONE_SHOT_SERVICES:
            assert service["restart"] == "no", name
        else:
            assert service["restart"] in {"always", "unless-stopped"}, name
            assert service["healthcheck"]["test"], name


def test_worker_health_check_asks_the_liveness_endpoint_of_its_web_server(
    services: dict[str, Service],
) -> None:
    for name, worker in _workers(services).items():
        port = _setting(worker, "NUDGESTREAM_WEB_PORT")
        assert _setting(worker, "NUDGESTREAM_WEB_HOST") == "0.0.0.0", name
        assert port in worker["expose"], name
        assert f"//127.0.0.1:{port}/healthz'" in " ".join(worker["healthcheck"]["test"]), name


def test_load_generator_runs_only_in_the_load_profile(services: dict[str, Service]) -> None:
    profiled = {name: s["profiles"] for name, s in services.items() if s.get("profiles")}
    assert profiled == {"load": ["load"]}
    assert services["load"]["command"][0] == "produce"


def test_kafka_is_the_pinned_broker_version_in_kraft_mode(services: dict[str, Service]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}


def test_published_ports_bind_to_loopback_only(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", name


def test_bind_mounted_files_exist(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for source in _bind_mounts(service).values() if "volumes" in service else ():
            assert source.exists(), f"{name}: {source}"


def test_prometheus_scrapes_every_worker_and_loads_the_rules_of_this_repository(
    services: dict[str, Service],
) -> None:
    prometheus = services["prometheus"]
    mounts = _bind_mounts(prometheus)
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    (job,) = (j for j in config["scrape_configs"] if j["job_name"] == "nudgestream-worker")
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    workers = _workers(services)
    assert targets == {f"{n}:{_setting(w, 'NUDGESTREAM_WEB_PORT')}" for n, w in workers.items()}
    loaded = set()
    for pattern in config["rule_files"]:
        folder, glob = pattern.rsplit("/", 1)
        loaded |= set(mounts[folder].glob(glob))
    assert loaded == set((PROJECT_ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))


# --- the image --------------------------------------------------------------------------


def _instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(PROJECT_ROOT / "Dockerfile")))


def _final_stage() -> list[dockerfile.Command]:
    commands = _instructions()
    start = max(i for i, c in enumerate(commands) if c.cmd == "FROM")
    return commands[start:]


def _dockerignored(path: str) -> bool:
    """Whether ``docker build`` leaves ``path`` out of the context: the last matching
    pattern of .dockerignore decides, and a pattern matching a folder covers its content.
    """
    ignored = False
    for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.removeprefix("!").strip("/"))
        parts = path.split("/")
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negated
    return ignored


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore globs: ``**`` spans folders, ``*`` and ``?`` do not."""
    tokens = re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
    wildcard = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcard.get(t, re.escape(t)) for t in tokens))


def _context_files(source: str) -> Iterator[str]:
    path = PROJECT_ROOT / source
    if path.is_file():
        yield source
    for file in path.rglob("*.py") if path.is_dir() else ():
        if "__pycache__" not in file.parts:
            yield file.relative_to(PROJECT_ROOT).as_posix()


def test_image_build_copies_files_that_exist_and_the_context_keeps() -> None:
    copies = [c for c in _instructions() if c.cmd == "COPY" and not c.flags]
    assert copies
    for copy in copies:
        for source in copy.value[:-1]:
            files = list(_context_files(source))
            assert files, f"COPY {source}: no such file or folder"
            kept_out = [f for f in files if _dockerignored(f)]
            assert kept_out == [], f"COPY {source}: excluded by .dockerignore"


def test_build_context_leaves_out_secrets_local_state_and_tests() -> None:
    for path in (
        ".env",
        ".git/config",
        ".venv/bin/python",
        "nudgestream-data/profiles/CURRENT",
        "tests/unit/test_deploy_compose.py",
        "models/__pycache__/events.cpython-311.pyc",
    ):
        assert _dockerignored(path), path


def test_image_runs_the_console_script_as_an_unprivileged_user() -> None:
    final = {c.cmd: c for c in _final_stage()}
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert final["ENTRYPOINT"].json and list(final["ENTRYPOINT"].value) == ["nudgestream"]
    assert "nudgestream" in scripts
    assert list(final["CMD"].value) == ["worker"]
    user = final["USER"].value[0].split(":")[0]
    assert user.isdigit() and int(user) != 0


def test_image_serves_the_web_port_on_all_interfaces() -> None:
    final = _final_stage()
    env: dict[str, str] = {}
    for command in (c for c in final if c.cmd == "ENV"):
        env |= dict(zip(command.value[::2], command.value[1::2], strict=True))
    settings = {name: value for name, value in env.items() if name.startswith("NUDGESTREAM_")}
    assert settings.keys() <= SETTING_DEFAULTS.keys()
    assert settings["NUDGESTREAM_WEB_HOST"] == "0.0.0.0"
    exposed = {port for c in final if c.cmd == "EXPOSE" for port in c.value}
    assert SETTING_DEFAULTS["NUDGESTREAM_WEB_PORT"] in exposed
