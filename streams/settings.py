"""Typed settings, parsed once from ``NUDGESTREAM_*`` environment variables.

Every setting has a documented default that works with ``nudgestream services up`` on
this machine. A bad value stops the process at start with a :class:`ConfigError` naming
the variable and the expected form, never later in the middle of a stream.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import time as dt_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from models.decided import KEEP_S
from models.limits import LimitConfig, Window
from models.policy import PolicyConfig, TriggerKind
from models.steering import POLICIES
from streams.config_values import (
    ConfigError,
    choice,
    float_between,
    int_between,
    non_negative_float,
    parse,
    positive_float,
    read_raw,
    setting,
)
from streams.config_values import describe as describe_declared
from streams.topics import Topics

__all__ = ["ConfigError", "RawSettings", "Settings", "describe", "load"]


@dataclass(frozen=True)
class RawSettings:
    """The environment as strings; see :class:`Settings` for the parsed form."""

    kafka_bootstrap: str = setting("KAFKA_BOOTSTRAP", "127.0.0.1:19092", "host:port[,host:port...]")
    kafka_security_protocol: str = setting(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: str = setting("KAFKA_SASL_MECHANISM", "PLAIN", "PLAIN or SCRAM-SHA-256/512")
    kafka_sasl_username: str = setting("KAFKA_SASL_USERNAME", "", "SASL user name")
    kafka_sasl_password: str = setting("KAFKA_SASL_PASSWORD", "", "SASL password (secret)")
    kafka_ssl_cafile: str = setting("KAFKA_SSL_CAFILE", "", "path to a PEM CA bundle")
    redis_url: str = setting("REDIS_URL", "redis://127.0.0.1:16379/0", "redis:// or rediss:// URL")
    app_id: str = setting("APP_ID", "nudgestream", "consumer group and table prefix")
    topic_prefix: str = setting("TOPIC_PREFIX", "", "prefix of every topic name (may be empty)")
    partitions: str = setting("PARTITIONS", "4", "partitions of the event topics (integer >= 1)")
    replication: str = setting("REPLICATION", "1", "replication factor of created topics")
    store: str = setting("STORE", "memory", "table store: memory or rocksdb")
    data_dir: str = setting("DATA_DIR", "./nudgestream-data", "folder for table state")
    web_host: str = setting("WEB_HOST", "127.0.0.1", "address of the metrics web server")
    web_port: str = setting("WEB_PORT", "6066", "port of the metrics web server (1-65535)")
    log_level: str = setting("LOG_LEVEL", "info", "debug, info, warning or error")
    session_timeout_s: str = setting(
        "SESSION_TIMEOUT_S", "10", "a dead worker's partitions move after this long (s)"
    )
    processing_guarantee: str = setting(
        "PROCESSING_GUARANTEE", "at_least_once", "at_least_once or exactly_once (Kafka transactions)"
    )
    max_event_bytes: str = setting("MAX_EVENT_BYTES", "4096", "largest accepted event (bytes)")
    batch_max_events: str = setting("BATCH_MAX_EVENTS", "500", "most events the ingest agent takes at once (integer, 1-10000)")
    batch_wait_ms: str = setting(
        "BATCH_WAIT_MS", "5", "longest wait of the ingest agent for a fuller batch (integer ms, 1-1000)"
    )
    fetch_max_wait_ms: str = setting(
        "FETCH_MAX_WAIT_MS", "20",
        "longest time the broker holds a fetch of the worker's consumer for data (integer ms, 1-1500)",
    )
    producer_buffer_max_messages: str = setting(
        "PRODUCER_BUFFER_MAX_MESSAGES", "20000",
        "table writes Faust may hold unsent before it stops every stream to drain them (100-1000000)",
    )
    producer_max_batch_bytes: str = setting(
        "PRODUCER_MAX_BATCH_BYTES", "524288",
        "largest producer batch per partition (bytes, 16384-1000000: below the broker's message.max.bytes)",
    )
    state_cache_max_keys: str = setting(
        "STATE_CACHE_MAX_KEYS", "50000",
        "unchanged table values a write-behind cache keeps in memory (integer, 0-10000000; changed ones are always kept until written)",
    )
    max_future_skew_s: str = setting("MAX_FUTURE_SKEW_S", "300", "future event-time tolerance (s)")
    profile_half_life_s: str = setting("PROFILE_HALF_LIFE_S", "21600", "interest half-life (s)")
    pseudonym_key: str = setting("PSEUDONYM_KEY", "", "secret key for user pseudonyms in logs")
    default_tz: str = setting("DEFAULT_TZ", "UTC", "IANA zone for users without one")
    push_max_per_window: str = setting("PUSH_MAX_PER_WINDOW", "3", "pushes per user per window (integer >= 1)")
    push_window: str = setting("PUSH_WINDOW", "rolling", "rolling or calendar_day (user's zone)")
    push_window_s: str = setting("PUSH_WINDOW_S", "86400", "length of a rolling window (s)")
    push_min_gap_s: str = setting("PUSH_MIN_GAP_S", "3600", "minimum time between two pushes to a user (s)")
    push_item_cooldown_s: str = setting("PUSH_ITEM_COOLDOWN_S", "604800", "no re-push of an item within (s)")
    quiet_hours: str = setting("QUIET_HOURS", "22:00-08:00", "HH:MM-HH:MM local time, or off")
    push_global_rate: str = setting("PUSH_GLOBAL_RATE", "200", "pushes/s all workers together may send")
    push_global_burst: str = setting("PUSH_GLOBAL_BURST", "400", "pushes sent at once after a quiet spell")
    holdout_percent: str = setting("HOLDOUT_PERCENT", "5", "control group share of users, 0-50 (%)")
    triggers: str = setting(
        "TRIGGERS", "browse_interest,browse_abandoned,post_purchase", "comma-separated trigger kinds"
    )
    browse_min_items: str = setting("BROWSE_MIN_ITEMS", "2", "distinct items in a category that fire a browse trigger")
    abandon_delay_s: str = setting("ABANDON_DELAY_S", "3600", "delay of the browse_abandoned trigger (s)")
    items_per_push: str = setting("ITEMS_PER_PUSH", "3", "most items in one push (1-20)")
    push_expiry_s: str = setting("PUSH_EXPIRY_S", "86400", "a decision expires this long after its event (s)")
    retention_days: str = setting("RETENTION_DAYS", "90", "inactive users' state is erased after (days)")
    attribution_window_s: str = setting(
        "ATTRIBUTION_WINDOW_S", "86400",
        "clicks and buys this long after a push (or holdout record) are credited to it (s, 60-604800)",
    )
    learning: str = setting(
        "LEARNING", "fatigue,sendtime,bandit",
        "learning policies steering the worker's pushes: comma-separated fatigue, sendtime, bandit; or off",
    )
    learning_sync_s: str = setting(
        "LEARNING_SYNC_S", "30", "how often a worker writes and reads the shared bandit counts (s, 1-3600)"
    )


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: tuple[str, ...]
    kafka_security_protocol: str
    kafka_sasl_mechanism: str
    kafka_sasl_username: str
    kafka_sasl_password: str
    kafka_ssl_cafile: Path | None
    redis_url: str
    app_id: str
    topic_prefix: str
    partitions: int
    replication: int
    store: str
    data_dir: Path
    web_host: str
    web_port: int
    log_level: str
    session_timeout_s: float
    processing_guarantee: str
    max_event_bytes: int
    max_future_skew_s: float
    batch_max_events: int
    batch_wait_s: float
    fetch_max_wait_ms: int
    producer_buffer_max_messages: int
    producer_max_batch_bytes: int
    state_cache_max_keys: int
    profile_half_life_s: float
    pseudonym_key: bytes
    default_tz: str
    limits: LimitConfig
    policy: PolicyConfig
    retention_days: float
    attribution_window_s: float
    #: The learning policies on (models.steering.POLICIES); empty: the static policy.
    learning: frozenset[str]
    learning_sync_s: float

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def broker_urls(self) -> list[str]:
        return [f"kafka://{hostport}" for hostport in self.kafka_bootstrap]

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Connection arguments for aiokafka clients (producer, consumer, admin)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(self.kafka_bootstrap),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = ssl.create_default_context(
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
            )
        if self.kafka_security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.kafka_sasl_mechanism
            kwargs["sasl_plain_username"] = self.kafka_sasl_username
            kwargs["sasl_plain_password"] = self.kafka_sasl_password
        return kwargs

    def redacted(self) -> dict[str, Any]:
        """Settings safe to log: secrets are replaced by ``***``."""
        secret = {"kafka_sasl_password", "pseudonym_key"}
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.name in secret and value else str(value)
        out["redis_url"] = _redact_url(self.redis_url)
        return out


def _redact_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = credentials.partition(":")
    return f"{scheme}{sep}{user}{':***' if colon else ''}@{host}"


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse settings from ``environ`` (default: the process environment)."""
    environ = os.environ if environ is None else environ
    raw = read_raw(RawSettings, environ)
    return Settings(
        kafka_bootstrap=parse("KAFKA_BOOTSTRAP", raw.kafka_bootstrap, _hostports),
        kafka_security_protocol=choice(
            "KAFKA_SECURITY_PROTOCOL",
            raw.kafka_security_protocol.upper(),
            ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        ),
        kafka_sasl_mechanism=choice(
            "KAFKA_SASL_MECHANISM",
            raw.kafka_sasl_mechanism.upper(),
            ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        ),
        kafka_sasl_username=raw.kafka_sasl_username,
        kafka_sasl_password=raw.kafka_sasl_password,
        kafka_ssl_cafile=parse("KAFKA_SSL_CAFILE", raw.kafka_ssl_cafile, _optional_file),
        redis_url=parse("REDIS_URL", raw.redis_url, _redis_url),
        app_id=parse("APP_ID", raw.app_id, _name),
        topic_prefix=parse("TOPIC_PREFIX", raw.topic_prefix, _prefix),
        partitions=parse("PARTITIONS", raw.partitions, int_between(1, 1024)),
        replication=parse("REPLICATION", raw.replication, int_between(1, 16)),
        store=choice("STORE", raw.store.lower(), ("memory", "rocksdb")),
        data_dir=Path(raw.data_dir),
        web_host=raw.web_host,
        web_port=parse("WEB_PORT", raw.web_port, int_between(1, 65535)),
        log_level=choice(
            "LOG_LEVEL", raw.log_level.lower(), ("debug", "info", "warning", "error")
        ),
        session_timeout_s=parse("SESSION_TIMEOUT_S", raw.session_timeout_s, float_between(6, 300)),
        processing_guarantee=choice(
            "PROCESSING_GUARANTEE", raw.processing_guarantee.lower(), ("at_least_once", "exactly_once")
        ),
        max_event_bytes=parse("MAX_EVENT_BYTES", raw.max_event_bytes, int_between(256, 1 << 20)),
        max_future_skew_s=parse("MAX_FUTURE_SKEW_S", raw.max_future_skew_s, positive_float),
        batch_max_events=parse("BATCH_MAX_EVENTS", raw.batch_max_events, int_between(1, 10_000)),
        batch_wait_s=parse("BATCH_WAIT_MS", raw.batch_wait_ms, int_between(1, 1000)) / 1000.0,
        fetch_max_wait_ms=parse("FETCH_MAX_WAIT_MS", raw.fetch_max_wait_ms, int_between(1, 1500)),
        producer_buffer_max_messages=parse(
            "PRODUCER_BUFFER_MAX_MESSAGES", raw.producer_buffer_max_messages, int_between(100, 1_000_000)
        ),
        producer_max_batch_bytes=parse(
            "PRODUCER_MAX_BATCH_BYTES", raw.producer_max_batch_bytes, int_between(16_384, 1_000_000)
        ),
        state_cache_max_keys=parse(
            "STATE_CACHE_MAX_KEYS", raw.state_cache_max_keys, int_between(0, 10_000_000)
        ),
        profile_half_life_s=parse("PROFILE_HALF_LIFE_S", raw.profile_half_life_s, positive_float),
        pseudonym_key=raw.pseudonym_key.encode(),
        default_tz=parse("DEFAULT_TZ", raw.default_tz, _zone),
        limits=_limits(raw),
        policy=_policy(raw),
        retention_days=parse("RETENTION_DAYS", raw.retention_days, positive_float),
        # At most as long as the users' records keep a decision (models.decided.KEEP_S).
        attribution_window_s=parse(
            "ATTRIBUTION_WINDOW_S", raw.attribution_window_s, float_between(60, KEEP_S)
        ),
        learning=parse("LEARNING", raw.learning, _learning),
        learning_sync_s=parse("LEARNING_SYNC_S", raw.learning_sync_s, float_between(1, 3600)),
    )


def _limits(raw: RawSettings) -> LimitConfig:
    quiet_start, quiet_end = parse("QUIET_HOURS", raw.quiet_hours, _quiet_hours)
    return LimitConfig(
        max_per_window=parse("PUSH_MAX_PER_WINDOW", raw.push_max_per_window, int_between(1, 1000)),
        window=Window(choice("PUSH_WINDOW", raw.push_window.lower(), tuple(w.value for w in Window))),
        window_s=parse("PUSH_WINDOW_S", raw.push_window_s, positive_float),
        min_gap_s=parse("PUSH_MIN_GAP_S", raw.push_min_gap_s, non_negative_float),
        item_cooldown_s=parse("PUSH_ITEM_COOLDOWN_S", raw.push_item_cooldown_s, non_negative_float),
        quiet_start=quiet_start,
        quiet_end=quiet_end,
        default_tz=parse("DEFAULT_TZ", raw.default_tz, _zone),
        global_rate_per_s=parse("PUSH_GLOBAL_RATE", raw.push_global_rate, positive_float),
        global_burst=parse("PUSH_GLOBAL_BURST", raw.push_global_burst, int_between(1, 1_000_000)),
    )


def _policy(raw: RawSettings) -> PolicyConfig:
    return PolicyConfig(
        triggers=parse("TRIGGERS", raw.triggers, _trigger_kinds),
        browse_min_items=parse("BROWSE_MIN_ITEMS", raw.browse_min_items, int_between(1, 100)),
        abandon_delay_s=parse("ABANDON_DELAY_S", raw.abandon_delay_s, positive_float),
        items_per_push=parse("ITEMS_PER_PUSH", raw.items_per_push, int_between(1, 20)),
        expiry_s=parse("PUSH_EXPIRY_S", raw.push_expiry_s, positive_float),
        holdout_percent=parse("HOLDOUT_PERCENT", raw.holdout_percent, _percent),
    )


def _learning(text: str) -> frozenset[str]:
    if text.strip().lower() == "off":
        return frozenset()
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown or not names:
        raise ValueError(f"unknown learning policies {unknown}" if unknown else "empty list")
    return frozenset(names)


def _trigger_kinds(text: str) -> frozenset[TriggerKind]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = {k.value: k for k in TriggerKind}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown trigger(s) {unknown}; known: {', '.join(known)}")
    return frozenset(known[n] for n in names)


def _quiet_hours(text: str) -> tuple[dt_time, dt_time]:
    if text.strip().lower() == "off":
        return dt_time(0, 0), dt_time(0, 0)  # equal times disable quiet hours
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError("use HH:MM-HH:MM")
    return dt_time.fromisoformat(start.strip()), dt_time.fromisoformat(end.strip())


def _percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 50:
        raise ValueError("must be between 0 and 50")
    return value


def _hostports(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    if not parts:
        raise ValueError("empty")
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part!r} is not host:port")
    return parts


def _redis_url(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return text


def _name(text: str) -> str:
    if not text or not all(c.isalnum() or c in "-_." for c in text):
        raise ValueError("use letters, digits, '-', '_' or '.'")
    return text


def _prefix(text: str) -> str:
    return _name(text) if text else text


def _optional_file(text: str) -> Path | None:
    if not text:
        return None
    path = Path(text)
    if not path.is_file():
        raise ValueError("no such file")
    return path


def _zone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone ({exc})") from None
    return text


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of every worker setting; ``nudgestream config`` adds
    those of the development commands (:mod:`load.local_settings`)."""
    return describe_declared(RawSettings)
