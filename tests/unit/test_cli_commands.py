"""Every command the README documents exists, and the offline core has one entry point."""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from load.commands import COMMANDS
from streams.cli import PLUGIN_GROUP, Command, Plugin, main
from tests.conftest import PROJECT_ROOT, declared_plugins, nudgestream

README = PROJECT_ROOT / "README.md"


def readme_commands() -> list[str]:
    """The subcommands named in the first column of the README's command table."""
    rows = re.findall(r"^\| `nudgestream ([a-z-]+)", README.read_text(), flags=re.MULTILINE)
    return sorted(set(rows))


def test_the_readme_documents_the_commands_operators_use() -> None:
    assert {"services", "worker", "segments", "replay", "evaluate", "config"} <= set(readme_commands())


@pytest.mark.parametrize("command", readme_commands())
def test_every_command_in_the_readme_runs_with_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        nudgestream([command, "--help"])
    assert exit_.value.code == 0
    assert f"nudgestream {command}" in capsys.readouterr().out


@pytest.mark.parametrize("module", sorted((PROJECT_ROOT / "models").glob("*.py")), ids=lambda p: p.name)
def test_the_core_has_no_command_line_of_its_own(module: Path) -> None:
    """`nudgestream replay/evaluate` are the one offline entry point, with the workers' settings."""
    source = module.read_text()
    assert "argparse" not in source and '__name__ == "__main__"' not in source


def test_the_development_commands_are_the_plugin_pyproject_declares() -> None:
    """After ``pip install``, the console script finds them through the entry point."""
    assert declared_plugins() == [COMMANDS]
    assert {c.name for c in COMMANDS.commands} == {"services", "bench", "produce", "demo"}


def test_an_installed_console_script_discovers_the_declared_commands(tmp_path: Path) -> None:
    """The entry point as an install writes it (a dist-info folder), found by discovery."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    info = tmp_path / f"nudgestream-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: nudgestream\nVersion: {project['version']}\n")
    declared = project["entry-points"][PLUGIN_GROUP]
    (info / "entry_points.txt").write_text(
        f"[{PLUGIN_GROUP}]\n" + "".join(f"{name} = {value}\n" for name, value in declared.items())
    )
    # Ahead of the installed metadata, which may predate an edit of pyproject.toml.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(tmp_path)])}
    shown = subprocess.run(
        [sys.executable, "-m", "streams.cli", "--help"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    assert all(f"    {name} " in shown for name in ("services", "bench", "produce", "demo", "worker"))


def test_a_plugin_adds_its_commands_and_its_settings_to_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from load.local_settings import RawLocalServices

    ran: list[argparse.Namespace] = []

    def ping(args: argparse.Namespace) -> int:
        ran.append(args)
        return 3

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--times", type=int)

    extra = Plugin(commands=(Command("ping", "answer", ping, add_arguments),),
                   settings=(RawLocalServices,))
    assert main(["ping", "--times", "2"], plugins=[extra]) == 3
    assert ran[0].times == 2
    assert main(["config"], plugins=[extra]) == 0
    listed = capsys.readouterr().out
    assert "NUDGESTREAM_LOCAL_KAFKA_PORT" in listed and "NUDGESTREAM_KAFKA_BOOTSTRAP" in listed


def test_without_plugins_only_the_workers_commands_exist(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["services", "up"], plugins=[])
    assert "invalid choice: 'services'" in capsys.readouterr().err


def _imported(module: Path) -> set[str]:
    """Top-level package of every module ``module`` imports, wherever the import stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(), filename=str(module))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("layer", "forbidden"), [("models", {"streams", "load"}), ("streams", {"load"})]
)
def test_layers_import_one_way_models_streams_load(layer: str, forbidden: set[str]) -> None:
    """models <- streams <- load: dev tooling and adapters never leak into the layer below."""
    offenders = {
        str(path.relative_to(PROJECT_ROOT)): sorted(_imported(path) & forbidden)
        for path in sorted((PROJECT_ROOT / layer).rglob("*.py"))
        if _imported(path) & forbidden
    }
    assert offenders == {}
