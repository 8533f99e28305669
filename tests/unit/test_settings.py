"""Configuration: defaults work, bad values fail at start naming the variable."""

from __future__ import annotations

import re

import pytest

from load.local_settings import RawLocalServices, load_local_services
from streams.config_values import describe as describe_declared
from streams.settings import ConfigError, describe, load
from tests.conftest import PROJECT_ROOT


def test_defaults_parse_and_point_at_the_local_services() -> None:
    settings = load({})
    assert settings.kafka_bootstrap == ("127.0.0.1:19092",)
    assert settings.redis_url == "redis://127.0.0.1:16379/0"
    assert settings.partitions == 4 and settings.store == "memory"
    # Faust's own buffer limit (100) stops every stream under load (docs/BENCHMARKS.md).
    assert settings.producer_buffer_max_messages == 20_000
    assert settings.producer_max_batch_bytes == 512 * 1024
    assert settings.state_cache_max_keys == 50_000


@pytest.mark.parametrize(
    ("variable", "value", "expected_form"),
    [
        ("NUDGESTREAM_PARTITIONS", "four", "integer >= 1"),
        ("NUDGESTREAM_PARTITIONS", "0", "between 1 and 1024"),
        ("NUDGESTREAM_KAFKA_BOOTSTRAP", "localhost", "host:port"),
        ("NUDGESTREAM_REDIS_URL", "localhost:6379", "redis://"),
        ("NUDGESTREAM_STORE", "disk", "memory, rocksdb"),
        ("NUDGESTREAM_WEB_PORT", "70000", "between 1 and 65535"),
        ("NUDGESTREAM_BATCH_WAIT_MS", "0", "between 1 and 1000"),
        ("NUDGESTREAM_BATCH_MAX_EVENTS", "lots", "integer"),
        ("NUDGESTREAM_PRODUCER_BUFFER_MAX_MESSAGES", "10", "between 100 and 1000000"),
        ("NUDGESTREAM_PRODUCER_MAX_BATCH_BYTES", "1024", "between 16384 and 1000000"),
        ("NUDGESTREAM_PRODUCER_MAX_BATCH_BYTES", "2000000", "between 16384 and 1000000"),
        ("NUDGESTREAM_STATE_CACHE_MAX_KEYS", "-1", "between 0 and 10000000"),
        ("NUDGESTREAM_STATE_CACHE_MAX_KEYS", "many", "integer"),
        ("NUDGESTREAM_DEFAULT_TZ", "Mars/Olympus", "IANA zone"),
        ("NUDGESTREAM_PROFILE_HALF_LIFE_S", "-5", "positive number"),
        ("NUDGESTREAM_KAFKA_SECURITY_PROTOCOL", "TLS", "SASL_SSL"),
        ("NUDGESTREAM_KAFKA_SSL_CAFILE", "/nonexistent/ca.pem", "no such file"),
        ("NUDGESTREAM_ATTRIBUTION_WINDOW_S", "30", "between 60 and 604800"),
        ("NUDGESTREAM_ATTRIBUTION_WINDOW_S", "1209600", "between 60 and 604800"),
        ("NUDGESTREAM_LEARNING", "fatigue,epsilon", "fatigue, sendtime, bandit"),
        ("NUDGESTREAM_LEARNING", ",", "fatigue, sendtime, bandit"),
        ("NUDGESTREAM_LEARNING_SYNC_S", "0", "between 1 and 3600"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_expected_form(
    variable: str, value: str, expected_form: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load({variable: value})
    message = str(error.value)
    assert variable in message and repr(value) in message and expected_form in message


def test_secrets_are_redacted_for_logging() -> None:
    settings = load({"NUDGESTREAM_KAFKA_SASL_PASSWORD": "hunter2", "NUDGESTREAM_PSEUDONYM_KEY": "k"})
    shown = str(settings.redacted())
    assert "hunter2" not in shown and "'k'" not in shown


def test_every_setting_is_documented() -> None:
    for variable, _default, meaning in describe() + describe_declared(RawLocalServices):
        assert variable.startswith("NUDGESTREAM_") and meaning


def test_the_worker_command_fails_fast_on_bad_configuration(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from streams.cli import main

    monkeypatch.setenv("NUDGESTREAM_PARTITIONS", "many")
    assert main(["worker"]) == 2
    assert "NUDGESTREAM_PARTITIONS" in capsys.readouterr().err


def test_the_redis_password_is_redacted_too() -> None:
    settings = load({"NUDGESTREAM_REDIS_URL": "redis://app:s3cret@redis:6379/0"})
    assert settings.redacted()["redis_url"] == "redis://app:***@redis:6379/0"


def test_local_services_start_with_the_machines_clock_even_under_faketime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A JVM or redis-server under libfaketime misbehaves: only the test process is faked."""
    from load.services import real_clock_env

    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
    monkeypatch.setenv("FAKETIME", "@2026-12-02 23:30:00")
    monkeypatch.setenv("NUDGESTREAM_LOCAL_REDIS_PORT", "16379")
    env = real_clock_env()
    assert "LD_PRELOAD" not in env and "FAKETIME" not in env
    assert env["NUDGESTREAM_LOCAL_REDIS_PORT"] == "16379"


def test_config_lists_every_variable_the_code_reads() -> None:
    """One settings source: no NUDGESTREAM_* variable is known only to the docs or a script."""
    pattern = re.compile(r"NUDGESTREAM_[A-Z0-9_]*[A-Z0-9]\b")
    sources = [PROJECT_ROOT / "README.md", *(PROJECT_ROOT / "docs").glob("*.md")] + [
        path
        for folder in ("streams", "load", "models", "scripts")
        for path in (PROJECT_ROOT / folder).rglob("*")
        if path.suffix in {".py", ".sh"}
    ]
    read = {name for path in sources for name in pattern.findall(path.read_text())}
    # The workers' settings, and the development services' (load/ declares those).
    listed = {variable for variable, _, _ in describe() + describe_declared(RawLocalServices)}
    assert {"NUDGESTREAM_LOCAL_KAFKA_PORT", "NUDGESTREAM_SERVICES_DIR"} <= read
    assert read <= listed, sorted(read - listed)


def test_a_bad_local_port_stops_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="NUDGESTREAM_LOCAL_REDIS_PORT='sixteen'"):
        load_local_services({"NUDGESTREAM_LOCAL_REDIS_PORT": "sixteen"})
    assert load_local_services({"NUDGESTREAM_LOCAL_KAFKA_PORT": "29092"}).kafka_port == 29092


def test_learning_is_a_set_of_policies_or_off() -> None:
    assert load({}).learning == frozenset({"fatigue", "sendtime", "bandit"})
    assert load({"NUDGESTREAM_LEARNING": " Fatigue , bandit"}).learning == frozenset({"fatigue", "bandit"})
    assert load({"NUDGESTREAM_LEARNING": "off"}).learning == frozenset()
