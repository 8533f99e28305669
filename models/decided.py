"""A user's recent push decisions and the outcomes seen for each: the attribution record.

The worker keeps one :class:`DecisionLog` per user (the ``decided`` table, co-partitioned
with the events). It is written when a decision is pushed — or would have been, for a
user of the control group — and read when an outcome, a click or a buy of the user comes
in: which decision does it belong to, and was it already counted?

Bounded, because a worker holds it for every active user: at most
:data:`MAX_DECISIONS` decisions, none older than :data:`KEEP_S` before the newest, and
at most :data:`MAX_BYTES` encoded (the oldest go first; a single decision is always
kept). Encoded as a versioned compact orjson array, ~110 bytes per decision of three items.

Replay-safe: decision ids are deterministic, so a decision re-made after a crash is
recognised and recorded once, keeping the outcomes already seen for it.

**Attribution** (:func:`attribute`): each entry is an :class:`models.attribution.Exposure`
and also keeps the credits (signal, scope) it was given, so a click or buy of the user
is credited by :class:`models.attribution.UserAttribution`'s rules and a replayed event
finds its credit already given. A decision **converts** for a signal (click, buy) at the
first credit of that signal in either scope: its pushed items, or their category.

>>> log = DecisionLog()
>>> entry = DecidedPush("d-1", 1700000000.0, ("sku-1",), ("phones",), TriggerKind.POST_PURCHASE, 3, Group.TREATMENT)
>>> log.record(entry), log.record(entry)
(True, False)
>>> log.observe("d-1", OutcomeKind.CLICKED), log.observe("d-1", OutcomeKind.CLICKED)
(True, False)
>>> DecisionLog.from_bytes(log.to_bytes()) == log
True
>>> buy = Event("e1", EventType.BUY, "u1", "sku-1", 1700000100.0, "phones")
>>> [(e.decision_id, s.value) for e, s in attribute(log, buy, AttributionConfig())]
[('d-1', 'buy')]
>>> attribute(log, buy, AttributionConfig())  # the same buy again: credited already
[]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson

from models.attribution import AttributionConfig, Credit, Exposure, Scope, Signal, UserAttribution
from models.encoding import compact
from models.events import Event, EventType
from models.lift import Group
from models.outcomes import OutcomeKind
from models.policy import TriggerKind

#: Version 2 added the credits; version 1 records (no credits yet) are still read.
FORMAT_VERSION: Final = 2
_READABLE: Final = (1, 2)
MAX_DECISIONS: Final = 6
#: An outcome, click or buy later than this after its push is not attributed to it.
KEEP_S: Final = 7 * 86400.0
#: Together with the key and the store's overhead, well under 1 KiB per user.
MAX_BYTES: Final = 768
#: Outcome kinds as bits of one integer (fixed: they are stored).
_BITS: Final = {
    OutcomeKind.SENT: 1,
    OutcomeKind.FAILED: 2,
    OutcomeKind.OPENED: 4,
    OutcomeKind.CLICKED: 8,
    OutcomeKind.DISMISSED: 16,
}
#: Attribution credits as bits of one integer (fixed: they are stored).
_CREDIT_BITS: Final = {
    (Signal.CLICK, Scope.ITEM): 1,
    (Signal.CLICK, Scope.CATEGORY): 2,
    (Signal.BUY, Scope.ITEM): 4,
    (Signal.BUY, Scope.CATEGORY): 8,
}
#: What attribution in the stream credits: clicks and buys (not the offline "touch").
ATTRIBUTED: Final = frozenset({EventType.CLICK, EventType.BUY})
_GROUP_CODES: Final = {"t": "treatment", "c": "control"}
#: Trigger kinds by stored code (append only: the codes are stored).
_TRIGGERS: Final = (TriggerKind.BROWSE_INTEREST, TriggerKind.BROWSE_ABANDONED, TriggerKind.POST_PURCHASE)


@dataclass(frozen=True, slots=True)
class DecidedPush:
    decision_id: str
    #: When it was decided, Unix seconds.
    ts: float
    #: The pushed items (for the control group: the items that would have been pushed).
    items: tuple[str, ...]
    #: The categories the push was about (attribution also counts buys in them).
    categories: tuple[str, ...]
    trigger: TriggerKind
    segment: int | None
    group: Group
    #: Outcome kinds already counted for this decision.
    seen: frozenset[OutcomeKind] = frozenset()
    #: Attribution credits already given to this decision.
    credited: frozenset[Credit] = frozenset()

    def exposure(self, user_id: str) -> Exposure:
        return Exposure(
            self.decision_id, user_id, self.group, self.ts, self.items, self.categories,
            self.trigger.value, self.segment,
        )

    def _encode(self) -> list[Any]:
        mask = sum(_BITS[kind] for kind in self.seen)
        credits = sum(_CREDIT_BITS[credit] for credit in self.credited)
        return [
            self.decision_id, self.ts, list(self.items), list(self.categories),
            _TRIGGERS.index(self.trigger), self.segment, self.group.value[0], mask, credits,
        ]

    @classmethod
    def _decode(cls, row: Sequence[Any]) -> DecidedPush:
        decision_id, ts, items, categories, trigger, segment, group, mask, *rest = row
        credits = rest[0] if rest else 0  # a version 1 row
        seen = frozenset(kind for kind, bit in _BITS.items() if mask & bit)
        credited = frozenset(credit for credit, bit in _CREDIT_BITS.items() if credits & bit)
        return cls(
            decision_id, ts, tuple(items), tuple(categories), _TRIGGERS[trigger], segment,
            Group(_GROUP_CODES[group]), seen, credited,
        )


@dataclass(slots=True)
class DecisionLog:
    """A user's recent decisions, oldest first (by decision time)."""

    entries: list[DecidedPush] = field(default_factory=list)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> DecisionLog:
        if raw is None:
            return cls()
        version, rows = orjson.loads(raw)
        if version not in _READABLE:
            raise ValueError(f"decision log format {version} (supported: {_READABLE})")
        return cls([DecidedPush._decode(row) for row in rows])

    def to_bytes(self) -> bytes:
        return compact([FORMAT_VERSION, [entry._encode() for entry in self.entries]])

    def find(self, decision_id: str) -> DecidedPush | None:
        return next((e for e in self.entries if e.decision_id == decision_id), None)

    def record(self, entry: DecidedPush) -> bool:
        """Add a decision; False (and no change) if it is here already (a replay).

        Also False for a decision too old to be kept beside the others.
        """
        if self.find(entry.decision_id) is not None:
            return False
        self.entries.append(entry)
        # Ordered by time, then id: which of two equal-time decisions goes first is fixed.
        self.entries.sort(key=lambda e: (e.ts, e.decision_id))
        self._bound()
        return self.find(entry.decision_id) is not None

    def observe(self, decision_id: str, kind: OutcomeKind) -> bool:
        """Mark ``kind`` seen for the decision; True only the first time (count it then).

        The decision must be in the log (see :meth:`find`).
        """
        for i, entry in enumerate(self.entries):
            if entry.decision_id == decision_id:
                if kind in entry.seen:
                    return False
                self.entries[i] = replace(entry, seen=entry.seen | {kind})
                return True
        raise KeyError(decision_id)

    def _bound(self) -> None:
        newest = self.entries[-1].ts
        kept = [e for e in self.entries if e.ts >= newest - KEEP_S][-MAX_DECISIONS:]
        while len(kept) > 1 and len(compact([FORMAT_VERSION, [e._encode() for e in kept]])) > MAX_BYTES:
            kept.pop(0)
        self.entries = kept


def attribute(log: DecisionLog, event: Event, config: AttributionConfig) -> list[tuple[DecidedPush, Signal]]:
    """Credit ``event`` to the user's decisions; the (decision, signal) conversions it makes.

    The credits are kept in ``log`` (write it back); a conversion is returned only the
    first time a decision earns the signal, so a replayed event returns nothing.
    """
    if event.type not in ATTRIBUTED or not log.entries:
        return []
    user = UserAttribution(
        open={e.decision_id: e.exposure(event.user_id) for e in log.entries},
        credited={e.decision_id: set(e.credited) for e in log.entries},
    )
    given: dict[str, set[Credit]] = {}
    for credit in user.observe(event, config):
        given.setdefault(credit.exposure.decision_id, set()).add((credit.signal, credit.scope))
    converted = []
    for i, entry in enumerate(log.entries):
        new = given.get(entry.decision_id)
        if not new:
            continue
        before = {signal for signal, _ in entry.credited}
        converted += [(entry, signal) for signal in sorted({s for s, _ in new} - before)]
        log.entries[i] = replace(entry, credited=entry.credited | new)
    return converted
