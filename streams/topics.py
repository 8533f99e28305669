"""Topic names and their Kafka settings: the one place that defines them.

``nudgestream topics create`` and the worker both read this table, so the partitions,
retention and compaction documented in docs/TOPICS.md are the ones really used. An
optional prefix (``NUDGESTREAM_TOPIC_PREFIX``) lets several deployments, or test runs,
share one cluster without seeing each other's events.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.events import EventType

DAY_MS = 24 * 3600 * 1000
#: The worker's changelog-backed tables; Faust names their topics ``<app_id>-<table>-changelog``.
TABLES = ("profiles", "cooc", "pending", "decided")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    #: None: the app's partition count (NUDGESTREAM_PARTITIONS), for co-partitioned topics.
    partitions: int | None
    retention_ms: int | None
    compacted: bool = False

    def kafka_config(self) -> dict[str, str]:
        config = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        return config


def changelog_specs(app_id: str) -> tuple[TopicSpec, ...]:
    """The tables' changelog topics (Faust creates them too, with the same settings)."""
    return tuple(TopicSpec(f"{app_id}-{table}-changelog", None, None, compacted=True) for table in TABLES)


@dataclass(frozen=True)
class Topics:
    """Every topic nudgestream reads or writes, under an optional name prefix."""

    prefix: str = ""

    def _name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    def event(self, event_type: EventType) -> str:
        return self._name(f"events.{event_type.value}")

    @property
    def events(self) -> dict[EventType, str]:
        return {t: self.event(t) for t in EventType}

    @property
    def dlq(self) -> str:
        return self._name("events.dlq")

    @property
    def rekeyed(self) -> str:
        """Events that arrived under another key than their user's, re-keyed (internal).

        Not under ``events.``: other readers of the event topics (or of ``events.*``)
        must not see a re-keyed event a second time.
        """
        return self._name("ingest.rekeyed")

    @property
    def cooc_pairs(self) -> str:
        return self._name("cooc.pairs")

    @property
    def segments_train(self) -> str:
        return self._name("segments.train")

    @property
    def segments_model(self) -> str:
        return self._name("segments.model")

    @property
    def push(self) -> str:
        return self._name("notifications.push")

    @property
    def suppressed(self) -> str:
        return self._name("notifications.suppressed")

    @property
    def deferred(self) -> str:
        return self._name("notifications.deferred")

    @property
    def outcomes(self) -> str:
        return self._name("notifications.outcomes")

    def specs(self) -> tuple[TopicSpec, ...]:
        return (
            *(TopicSpec(name, None, 7 * DAY_MS) for name in self.events.values()),
            TopicSpec(self.dlq, None, 14 * DAY_MS),
            TopicSpec(self.rekeyed, None, 7 * DAY_MS),
            TopicSpec(self.cooc_pairs, None, 1 * DAY_MS),
            TopicSpec(self.segments_train, 1, 1 * DAY_MS),
            TopicSpec(self.segments_model, 1, None, compacted=True),
            TopicSpec(self.push, None, 7 * DAY_MS),
            TopicSpec(self.suppressed, None, 30 * DAY_MS),
            TopicSpec(self.deferred, None, 7 * DAY_MS),
            # Co-partitioned with the events: the worker checks an outcome against the
            # user's recent decisions, kept in a table of the user's partition.
            TopicSpec(self.outcomes, None, 7 * DAY_MS),
        )
