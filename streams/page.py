"""The worker's own page: ``/`` (HTML) and ``/dashboard.json`` (the data behind it).

A glance at one worker for the people who run it — segments, lift per trigger against
the control group, CTR over time and the latest decisions with their explanations — not a
replacement for Prometheus and Grafana, which see every worker. Everything here is **this
worker's view since it started**: the counters are its own process's, and the CTR history
and the latest decisions are small in-memory rings (UI-only data, lost on restart, bounded).

The page is one self-contained file (``streams/static/dashboard.html``: no CDN, works
offline) that fetches ``/dashboard.json`` every few seconds. Its keys (``SCHEMA``) are
documented in docs/OPERATIONS.md; user ids never appear (decisions carry a pseudonym).

Counters are read from the registry by name (:func:`metric_sums`), so a metric that this
build does not define yet shows as "no data yet" instead of failing the page.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import faust
import orjson
from aiohttp import web as aiohttp_web
from prometheus_client import CollectorRegistry

from models.decision import Decision
from models.lift import Lift, Rate
from models.segment_snapshot import SegmentSnapshot
from streams import metrics
from streams.privacy import Pseudonymizer

SCHEMA: Final = "nudgestream.dashboard.v1"
#: Decisions kept for the page, newest first.
LATEST_DECISIONS: Final = 50
#: One CTR point per minute, for the last two hours.
HISTORY_MINUTES: Final = 120
#: How often the CTR history samples the counters (a few samples per minute point).
SAMPLE_INTERVAL_S: Final = 10.0

EXPOSURES: Final = "nudgestream_push_exposures_total"
CONVERSIONS: Final = "nudgestream_push_conversions_total"
OUTCOMES: Final = "nudgestream_push_outcomes_total"
SEGMENT_USERS: Final = "nudgestream_segment_users"
#: What a lift row measures: an attributed click or buy after a push.
SIGNALS: Final = ("buy", "click")

Sums = dict[tuple[str, ...], float]


def metric_sums(registry: CollectorRegistry, name: str, by: Sequence[str]) -> Sums | None:
    """The samples called ``name`` (e.g. ``x_total``) summed per value of the labels ``by``.

    None when no such metric is registered (yet): the page says "no data yet". Samples
    without one of the labels are not counted.

    >>> from prometheus_client import Counter
    >>> registry = CollectorRegistry()
    >>> c = Counter("pushes_total", "", ["trigger", "group"], registry=registry)
    >>> c.labels("a", "t").inc(2); c.labels("a", "c").inc(); c.labels("b", "t").inc()
    >>> metric_sums(registry, "pushes_total", ["trigger"])
    {('a',): 3.0, ('b',): 1.0}
    >>> metric_sums(registry, "absent_total", ["trigger"]) is None
    True
    """
    found = False
    sums: Sums = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name != name:
                continue
            found = True
            if all(label in sample.labels for label in by):
                key = tuple(sample.labels[label] for label in by)
                sums[key] = sums.get(key, 0.0) + sample.value
    return sums if found else None


# --- the latest decisions ------------------------------------------------------------


class LatestDecisions:
    """The last decisions this worker made, pseudonymised, newest first.

    A decision made again (a replayed event, a batch released by a rebalance) has the same
    id and replaces its earlier entry rather than appearing twice.
    """

    def __init__(self, pseudonym: Callable[[str], str], size: int = LATEST_DECISIONS) -> None:
        self._pseudonym = pseudonym
        self._size = size
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def add(self, decision: Decision, outcome: str, reason: str | None = None) -> None:
        self._entries.pop(decision.decision_id, None)
        self._entries[decision.decision_id] = {
            "decided_at": decision.decided_at,
            "trigger": decision.trigger.value,
            "segment": decision.segment,
            "user": self._pseudonym(decision.user_id),
            "items": [{"item_id": item, "score": round(score, 6)} for item, score in decision.items],
            "explanation": decision.explanation,
            "outcome": outcome,
            "reason": reason,
        }
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def entries(self) -> list[dict[str, Any]]:
        return list(reversed(self._entries.values()))


# --- CTR over time ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative counts read from the counters at one moment."""

    sent: float
    clicked: float

    def to_dict(self) -> dict[str, float]:
        return {"sent": self.sent, "clicked": self.clicked}


class CtrHistory:
    """Per-minute pushes sent and clicked, from samples of the cumulative counters.

    Each minute keeps the last totals sampled in it; a point is the difference from the
    minute before, so clicks are those *reported* in that minute (a click lags its push,
    so a quiet minute may read above 1). Counters start at 0 with the process, which is
    the baseline of the first minute.

    >>> history = CtrHistory(minutes=2)
    >>> history.sample(60.0, Totals(sent=10.0, clicked=1.0))
    >>> history.sample(130.0, Totals(sent=30.0, clicked=3.0))
    >>> history.sample(190.0, Totals(sent=30.0, clicked=3.0))
    >>> [(p["minute"], p["sent"], p["ctr"]) for p in history.points()]
    [(120.0, 20.0, 0.1), (180.0, 0.0, None)]
    """

    def __init__(self, minutes: int = HISTORY_MINUTES) -> None:
        self._minutes: deque[tuple[float, Totals]] = deque(maxlen=minutes + 1)

    def sample(self, now: float, totals: Totals) -> None:
        minute = now - now % 60.0
        if self._minutes and self._minutes[-1][0] == minute:
            self._minutes.pop()
        self._minutes.append((minute, totals))

    def points(self) -> list[dict[str, Any]]:
        minutes = list(self._minutes)
        # The oldest kept minute is only the baseline of the next one once the ring is full.
        if len(minutes) == self._minutes.maxlen:
            before, minutes = minutes[0][1], minutes[1:]
        else:
            before = Totals(0.0, 0.0)
        out = []
        for minute, totals in minutes:
            sent, clicked = totals.sent - before.sent, totals.clicked - before.clicked
            out.append({"minute": minute, "sent": sent, "clicked": clicked,
                        "ctr": clicked / sent if sent else None})
            before = totals
        return out


def ctr_totals(outcomes: Sums | None) -> Totals:
    """Treatment pushes sent and clicked, from ``OUTCOMES`` summed by (outcome, group)."""
    outcomes = outcomes or {}
    return Totals(outcomes.get(("sent", "treatment"), 0.0), outcomes.get(("clicked", "treatment"), 0.0))


# --- the document --------------------------------------------------------------------


def segments_section(snapshot: SegmentSnapshot | None, users: Sums | None) -> dict[str, Any]:
    """The snapshot's segments with this worker's estimated users per segment."""
    if snapshot is None:
        return {"available": False, "version": 0, "segments": []}
    users = users or {}
    return {
        "available": True,
        "version": snapshot.version,
        "created_at": snapshot.created_at,
        "k": snapshot.k,
        "segments": [
            {
                "id": s.id,
                "label": s.label,
                "share": s.share,
                "users": users.get((str(s.id),)),
                "top_categories": [{"category": c, "share": share} for c, share in s.top_categories],
            }
            for s in snapshot.segments
        ],
    }


def lift_section(exposures: Sums | None, conversions: Sums | None) -> dict[str, Any]:
    """Per trigger and signal: both groups' rates and the lift with its 95 % interval.

    ``exposures`` are summed by (trigger, group), ``conversions`` by (trigger, group, signal).
    """
    if exposures is None or conversions is None:
        return {"available": False, "rows": []}
    rows = []
    for trigger in sorted({trigger for trigger, _ in exposures}):
        for signal in SIGNALS:
            rates = {}
            for group in ("treatment", "control"):
                trials = int(exposures.get((trigger, group), 0))
                # A conversion counted before its exposure (between two scrapes) is capped.
                successes = min(trials, int(conversions.get((trigger, group, signal), 0)))
                rates[group] = Rate(successes, trials)
            lift = Lift.of(rates["treatment"], rates["control"])
            rows.append({
                "trigger": trigger,
                "signal": signal,
                "treatment": rates["treatment"].to_dict(),
                "control": rates["control"].to_dict(),
                "lift": lift.to_dict() if lift is not None else None,
                "hurts": lift.hurts if lift is not None else False,
            })
    return {"available": True, "rows": rows}


def dashboard(
    *,
    now: float,
    snapshot: SegmentSnapshot | None,
    segment_users: Sums | None,
    exposures: Sums | None,
    conversions: Sums | None,
    outcomes: Sums | None,
    ctr: Iterable[dict[str, Any]],
    decisions: Iterable[dict[str, Any]],
) -> dict[str, Any]:
    """The ``/dashboard.json`` document from its inputs (pure: see docs/OPERATIONS.md)."""
    points = list(ctr)
    return {
        "schema": SCHEMA,
        "generated_at": now,
        "segments": segments_section(snapshot, segment_users),
        "lift": lift_section(exposures, conversions),
        "ctr": {
            "available": outcomes is not None,
            "interval_s": 60,
            "totals": ctr_totals(outcomes).to_dict(),
            "points": points,
        },
        "decisions": list(decisions),
    }


# --- the worker side ---------------------------------------------------------------------


class Dashboard:
    """What a worker keeps for its page, and the page's two routes."""

    def __init__(
        self,
        current: Callable[[], SegmentSnapshot | None],
        latest: LatestDecisions,
        registry: CollectorRegistry = metrics.REGISTRY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.current = current
        self.latest = latest
        self.registry = registry
        self.clock = clock
        self.ctr = CtrHistory()

    async def sample_ctr(self) -> None:
        """Timer: add the counters' totals to the CTR history."""
        self.ctr.sample(self.clock(), ctr_totals(self._sums(OUTCOMES, "outcome", "group")))

    def document(self) -> dict[str, Any]:
        return dashboard(
            now=self.clock(),
            snapshot=self.current(),
            segment_users=self._sums(SEGMENT_USERS, "segment"),
            exposures=self._sums(EXPOSURES, "trigger", "group"),
            conversions=self._sums(CONVERSIONS, "trigger", "group", "signal"),
            outcomes=self._sums(OUTCOMES, "outcome", "group"),
            ctr=self.ctr.points(),
            decisions=self.latest.entries(),
        )

    def _sums(self, name: str, *by: str) -> Sums | None:
        return metric_sums(self.registry, name, by)

    def add_pages(self, app: faust.App) -> None:
        html, policy = page()

        @app.page("/")
        async def index(web: Any, request: Any) -> Any:
            return aiohttp_web.Response(
                body=html, content_type="text/html", charset="utf-8",
                headers={"Content-Security-Policy": policy},
            )

        @app.page("/dashboard.json")
        async def data(web: Any, request: Any) -> Any:
            return aiohttp_web.Response(
                body=orjson.dumps(self.document()), content_type="application/json",
                headers={"Cache-Control": "no-store"},
            )


def latest_decisions(pseudonym_key: bytes) -> LatestDecisions:
    return LatestDecisions(Pseudonymizer(pseudonym_key))


_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def page() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy: nothing but its own inline script (by hash),
    its inline style and requests to this worker may run — item ids and explanations come
    from events, and the page renders them as text, never as markup."""
    html = resources.files("streams").joinpath("static/dashboard.html").read_bytes()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _SCRIPT.findall(html)
    )
    policy = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
    )
    return html, policy
