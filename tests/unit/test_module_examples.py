"""The runnable examples in the docstrings of streams/ modules pass.

pytest collects doctests from models/ and load/ by itself; streams/ is not among its
``testpaths`` (pyproject.toml), so the streams modules with examples are listed here
(the notification worker's are run by tests/unit/test_notify.py).
"""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from streams import cli, config_values, faust_internals, write_behind


@pytest.mark.parametrize("module", [cli, config_values, faust_internals, write_behind], ids=lambda m: m.__name__)
def test_the_module_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
