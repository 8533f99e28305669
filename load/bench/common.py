"""Constants, configuration and small types every part of the bench shares."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from streams.settings import Settings

#: Goals the figures are judged against (docs/BENCHMARKS.md).
GOAL_THROUGHPUT_RATIO: Final = 0.5
#: Pipeline events/s as a share of the Faust batch peer's, measured in the same run.
GOAL_RATIO_VS_FAUST: Final = 0.8
GOAL_P99_DECISION_MS: Final = 50.0
#: Per active user (issue #14): the tables' encoded state, and the worker's RSS growth
#: (memory store) per user of a second backlog by new users, once the first one has grown
#: the buffers and caches that do not scale with users.
GOAL_ENCODED_BYTES_PER_USER: Final = 1024.0
GOAL_RSS_BYTES_PER_USER: Final = 4096.0
#: Event-time rate of the backlog: 100k events span about 100 s ending just before now,
#: so none is in the future and none is too old for the co-occurrence window.
BACKLOG_EVENTS_PER_S: Final = 1000.0
POLL_S: Final = 0.2
#: The raw passthrough's output topic (under the run's prefix).
SINK: Final = "bench.sink"
REPORT_S: Final = 5.0
LAG_POLL_S: Final = 0.5
#: The worker made no progress for this long: something is broken, stop waiting.
STALL_S: Final = 60.0
#: Faust commits offsets every few seconds; lag is read after waiting up to this long.
SETTLE_S: Final = 20.0
#: A lag of transaction markers only (see _only_markers_left) that stays this long is final.
QUIET_S: Final = 10.0
EVENT_LAG_METRIC: Final = "nudgestream_event_lag_seconds"
QUANTILES: Final = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
#: Settings that are secrets: never echoed in the reported command.
SECRET_VARIABLES: Final = ("NUDGESTREAM_KAFKA_SASL_PASSWORD", "NUDGESTREAM_PSEUDONYM_KEY")
PROJECT_DIR: Final = Path(__file__).resolve().parents[2]


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (a stall, a dead worker)."""


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BenchConfig:
    events: int = 50_000
    users: int = 5000
    seed: int = 1
    #: Seconds of fresh events offered for the latency figure.
    latency_s: float = 25.0
    #: Offered rate in the latency phase, as a share of the measured pipeline rate.
    load_share: float = 0.5
    #: Run the worker under pyinstrument and write its profile here (slows the worker).
    profile: Path | None = None
    #: Extra environment of the worker only, for what-if runs (e.g. Faust's PRODUCER_LINGER).
    worker_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.events < 1 or self.users < 2:
            raise ValueError("need events >= 1 and users >= 2")
        if not self.latency_s > 0 or not 0 < self.load_share <= 1:
            raise ValueError("need latency_s > 0 and 0 < load_share <= 1")



@dataclass(frozen=True)
class Throughput:
    count: int
    seconds: float

    @property
    def eps(self) -> float:
        return self.count / self.seconds


def peer_app_id(settings: Settings) -> str:
    """The Faust peer's app id and group: under the bench's app id, so the run's
    clean-up removes the peer's topics too."""
    return f"{settings.app_id}-faust-peer"
