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

>>> log = DecisionLog()
>>> entry = DecidedPush("d-1", 1700000000.0, ("sku-1",), ("phones",), TriggerKind.POST_PURCHASE, 3, Group.TREATMENT)
>>> log.record(entry), log.record(entry)
(True, False)
>>> log.observe("d-1", OutcomeKind.CLICKED), log.observe("d-1", OutcomeKind.CLICKED)
(True, False)
>>> DecisionLog.from_bytes(log.to_bytes()) == log
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

import orjson

from models.encoding import compact
from models.outcomes import OutcomeKind
from models.policy import TriggerKind

FORMAT_VERSION: Final = 1
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
_GROUP_CODES: Final = {"t": "treatment", "c": "control"}
#: Trigger kinds by stored code (append only: the codes are stored).
_TRIGGERS: Final = (TriggerKind.BROWSE_INTEREST, TriggerKind.BROWSE_ABANDONED, TriggerKind.POST_PURCHASE)


class Group(StrEnum):
    """Whether the push was sent (treatment) or held back for the control group."""

    TREATMENT = "treatment"
    CONTROL = "control"


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

    def _encode(self) -> list[Any]:
        mask = sum(_BITS[kind] for kind in self.seen)
        return [
            self.decision_id, self.ts, list(self.items), list(self.categories),
            _TRIGGERS.index(self.trigger), self.segment, self.group.value[0], mask,
        ]

    @classmethod
    def _decode(cls, row: Sequence[Any]) -> DecidedPush:
        decision_id, ts, items, categories, trigger, segment, group, mask = row
        seen = frozenset(kind for kind, bit in _BITS.items() if mask & bit)
        return cls(
            decision_id, ts, tuple(items), tuple(categories), _TRIGGERS[trigger], segment,
            Group(_GROUP_CODES[group]), seen,
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
        if version != FORMAT_VERSION:
            raise ValueError(f"decision log format {version} (supported: {FORMAT_VERSION})")
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
