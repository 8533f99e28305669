"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from streams import cli

# Machines running the suite are shared and noisy: no per-example deadline, and slow
# first draws are not a property of the code under test.
settings.register_profile(
    "nudgestream", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("nudgestream")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: Real public event logs live beside the checkout, never inside it (licences differ).
SHARED_DATA = Path(os.environ.get("NUDGESTREAM_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def declared_plugins() -> list[cli.Plugin]:
    """The command plugins ``pyproject.toml`` declares, loaded the way an install finds them.

    Read from the checkout rather than the installed metadata, which lags behind an edit of
    ``pyproject.toml`` until the next ``pip install -e .``.
    """
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"][cli.PLUGIN_GROUP]
    return cli.discover_plugins(
        metadata.EntryPoint(name, value, cli.PLUGIN_GROUP) for name, value in declared.items()
    )


def nudgestream(argv: Sequence[str]) -> int:
    """``nudgestream ARGV`` with every command the project declares."""
    return cli.main(argv, plugins=declared_plugins())


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real event logs (see ../shared/data/README.md).

    Outside CI a missing folder skips the test with a message saying what is missing;
    in CI it is an error, so a green CI run always includes the quality checks.
    """
    if not (SHARED_DATA / "rees46-3h-dev.csv").exists():
        message = (
            f"real event logs not found in {SHARED_DATA}: set NUDGESTREAM_SHARED_DATA "
            "to the folder holding rees46-3h-dev.csv"
        )
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA
