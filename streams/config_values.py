"""Declaring ``NUDGESTREAM_*`` settings and parsing their values, with errors naming them.

A settings class is a frozen dataclass of strings whose fields are made by :func:`setting`;
:func:`read_raw` fills it from an environment, and :func:`parse` turns one value into its
typed form or stops with a :class:`ConfigError` naming the variable and the expected form.
``streams.settings`` declares the workers' settings this way; development tooling declares
its own (``load.local_settings``) without the workers importing it.

>>> from streams.settings import RawSettings
>>> raw = read_raw(RawSettings, {"NUDGESTREAM_WEB_PORT": "80"})
>>> parse("WEB_PORT", raw.web_port, int_between(1, 65535))
80
>>> parse("WEB_PORT", "0", int_between(1, 65535))
Traceback (most recent call last):
...
streams.config_values.ConfigError: NUDGESTREAM_WEB_PORT='0' is invalid: must be between 1 and 65535; expected port of the metrics web server (1-65535)
>>> describe(RawSettings)[0]
('NUDGESTREAM_KAFKA_BOOTSTRAP', '127.0.0.1:19092', 'host:port[,host:port...]')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import field, fields
from typing import Any, TypeVar

PREFIX = "NUDGESTREAM_"
T = TypeVar("T")

#: variable -> meaning, of every setting declared in any settings class, so an error names
#: the expected form whichever module declared the variable.
_MEANINGS: dict[str, str] = {}


class ConfigError(ValueError):
    """A setting has a value the program cannot use."""


def setting(name: str, default: str, doc: str) -> Any:
    """A dataclass field read from ``NUDGESTREAM_<name>``, documented for ``nudgestream config``."""
    _MEANINGS[PREFIX + name] = doc
    return field(default=default, metadata={"env": PREFIX + name, "doc": doc})


def read_raw(declared: type[T], environ: Mapping[str, str]) -> T:
    """The declared settings as strings: each from its variable, or its default."""
    return declared(
        **{f.name: environ.get(f.metadata["env"], str(f.default)) for f in fields(declared)}  # type: ignore[arg-type]
    )


def describe(*declared: type) -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of every setting of the given settings classes."""
    return [
        (f.metadata["env"], str(f.default), f.metadata["doc"])
        for raw in declared
        for f in fields(raw)
    ]


def parse(name: str, text: str, parser: Callable[[str], T]) -> T:
    """``parser(text)``, or a :class:`ConfigError` naming ``NUDGESTREAM_<name>``."""
    try:
        return parser(text)
    except (ValueError, TypeError) as exc:
        meaning = _MEANINGS[PREFIX + name]
        raise ConfigError(
            f"{PREFIX}{name}={text!r} is invalid: {exc}; expected {meaning}"
        ) from None


def choice(name: str, text: str, allowed: tuple[str, ...]) -> str:
    if text not in allowed:
        raise ConfigError(
            f"{PREFIX}{name}={text!r} is invalid; expected one of {', '.join(allowed)}"
        )
    return text


def int_between(low: int, high: int) -> Callable[[str], int]:
    def parse_int(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse_int


def float_between(low: float, high: float) -> Callable[[str], float]:
    def parse_float(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return parse_float


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a number >= 0")
    return value
