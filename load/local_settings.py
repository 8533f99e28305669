"""Settings of the development services (``nudgestream services``, the demo, the tests).

They are ``NUDGESTREAM_*`` variables like the workers' (``nudgestream config`` lists both),
declared here because only the development tooling in ``load`` reads them.

>>> local = load_local_services({"NUDGESTREAM_LOCAL_KAFKA_PORT": "29092"})
>>> local.kafka_port, local.redis_port
(29092, 16379)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.config_values import int_between, parse, read_raw, setting

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "nudgestream"


@dataclass(frozen=True)
class RawLocalServices:
    """Where ``nudgestream services`` keeps and serves the development Kafka and Redis."""

    services_dir: str = setting("SERVICES_DIR", ".nudgestream", "state folder of the local services")
    cache_dir: str = setting(
        "CACHE_DIR", str(DEFAULT_CACHE_DIR), "download cache (Kafka's jars)"
    )
    local_kafka_port: str = setting("LOCAL_KAFKA_PORT", "19092", "port of the local Kafka broker (1-65535)")
    local_controller_port: str = setting(
        "LOCAL_CONTROLLER_PORT", "19093", "port of the local KRaft controller (1-65535)"
    )
    local_redis_port: str = setting("LOCAL_REDIS_PORT", "16379", "port of the local Redis server (1-65535)")
    #: Read by the test suite only (tests/conftest.py): real logs are never copied in.
    shared_data: str = setting(
        "SHARED_DATA", "../shared/data", "real public event logs for tests (beside the checkout)"
    )


@dataclass(frozen=True)
class LocalServiceSettings:
    """The parsed form of :class:`RawLocalServices`."""

    services_dir: Path
    cache_dir: Path
    kafka_port: int
    controller_port: int
    redis_port: int


def load_local_services(environ: Mapping[str, str] | None = None) -> LocalServiceSettings:
    """Parse the local services' settings (``nudgestream services``, tests, the demo)."""
    environ = os.environ if environ is None else environ
    raw = read_raw(RawLocalServices, environ)
    port = int_between(1, 65535)
    return LocalServiceSettings(
        services_dir=Path(raw.services_dir).resolve(),
        cache_dir=Path(raw.cache_dir),
        kafka_port=parse("LOCAL_KAFKA_PORT", raw.local_kafka_port, port),
        controller_port=parse("LOCAL_CONTROLLER_PORT", raw.local_controller_port, port),
        redis_port=parse("LOCAL_REDIS_PORT", raw.local_redis_port, port),
    )
