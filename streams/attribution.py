"""Attribution on the ingest path: clicks and buys credited to the user's recent decisions.

A click or buy of a user, within ``NUDGESTREAM_ATTRIBUTION_WINDOW_S`` after one of the
user's recorded decisions (pushed, or held back for the control group), of one of its
items or in its category, is credited to it (:func:`models.decided.attribute`). The
credits live in the user's ``decided`` record (:class:`models.decided.DecisionLog`),
which is co-partitioned with the events, so no other state is needed.

**Exactly once.** The ingest agent hands every valid event of the user's own partition
to :meth:`AttributionTracker.observe` — duplicates too: a replayed event whose profile
landed before a crash while its credit did not is still credited; one whose credit
landed finds it and is not credited again. :meth:`AttributionTracker.persist` runs where
the agent writes the batch's profiles (its side effects acknowledged; Faust commits the
offsets only after the writes): it reads each user's record as it is then (the decisions
of the batch and the outcomes agent's marks included), credits the user's events in
order, writes the record, and only then counts the conversions in
``nudgestream_push_conversions_total``. A batch released by a rebalance is never
persisted: its events are delivered again and observed anew.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from faust.types import EventT, TableT

from models.attribution import AttributionConfig, Signal
from models.decided import ATTRIBUTED, DecidedPush, DecisionLog, attribute
from models.events import Event
from streams import metrics
from streams.faust_internals import acting_for
from streams.settings import Settings


class AttributionTracker:
    """Credits of one worker's ingest batches, written to the ``decided`` table."""

    def __init__(self, settings: Settings, table: TableT[bytes, bytes]) -> None:
        self.config = AttributionConfig(window_s=settings.attribution_window_s)
        self.table = table
        #: Called with the conversions once they are stored (streams.learning.LiveLearning.converted).
        self.on_converted: Callable[[Sequence[tuple[DecidedPush, Signal]]], None] | None = None
        #: The batch's clicks and buys by user key, with the message each came in.
        self._observed: dict[bytes, list[tuple[Event, EventT[bytes]]]] = {}

    def observe(self, key: bytes, event: Event, source: EventT[bytes]) -> None:
        """Note a valid event of the user's own partition (replayed ones included)."""
        if event.type in ATTRIBUTED:
            self._observed.setdefault(key, []).append((event, source))

    def persist(self, events: Sequence[EventT[bytes]]) -> None:
        """Credit and write the events of ``events`` noted since the last call."""
        observed, self._observed = self._observed, {}
        # Left by a released batch: delivered again, and noted again in this one.
        current = {id(event) for event in events}
        for key, noted in observed.items():
            mine = [(event, source) for event, source in noted if id(source) in current]
            raw = self.table.get(key) if mine else None
            if raw is None:
                continue  # no recorded decision of the user: nothing to credit
            log = DecisionLog.from_bytes(raw)
            converted = [c for event, _ in mine for c in attribute(log, event, self.config)]
            written = log.to_bytes()
            if written == raw:
                continue
            with acting_for(mine[-1][1]):
                self.table[key] = written
            for entry, signal in converted:
                metrics.count_conversion(entry, signal)
            if converted and self.on_converted is not None:
                self.on_converted(converted)
