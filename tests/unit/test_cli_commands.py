"""Every command the README documents exists, and the offline core has one entry point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.cli import main
from tests.conftest import PROJECT_ROOT

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
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"nudgestream {command}" in capsys.readouterr().out


@pytest.mark.parametrize("module", sorted((PROJECT_ROOT / "models").glob("*.py")), ids=lambda p: p.name)
def test_the_core_has_no_command_line_of_its_own(module: Path) -> None:
    """`nudgestream replay/evaluate` are the one offline entry point, with the workers' settings."""
    source = module.read_text()
    assert "argparse" not in source and '__name__ == "__main__"' not in source
