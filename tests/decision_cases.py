"""Scenarios of the decision path, one table for the replay and the stream.

``tests/unit/test_decision_cases.py`` runs every case through the offline replay
(:class:`models.push_replay.PushReplay`, in-memory limiter); the integration test
``tests/integration/test_decisions.py::test_the_stream_decides_every_case_as_the_replay``
runs the same cases through the worker's :class:`streams.decisions.DecisionEngine` on a
real Kafka and Redis. Both read the same served data (:data:`RELATED`, :data:`POPULAR`)
and the same settings (:meth:`Case.env`), so a case that passes on both is a decision
the two paths route identically: pushed (with only the items the limiter allowed),
held back for the control group, suppressed with its reason, deferred by quiet hours,
or audited with no items when nothing was found (cold start).

Only immediate triggers are enabled: a delayed one is decided after its delay, which a
replay does at once and a worker an hour later. Expected items are worked out by hand
from :func:`models.candidates.decide` (see the comments); times are offsets from the
start of a case, which the runner picks (a fixed instant offline, now on the broker).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from models.candidates import CandidateData, Needs
from models.events import Event, EventType
from models.routing import in_holdout

#: Related lists, as the co-occurrence flush writes them to Redis.
RELATED: Mapping[str, list[tuple[str, float]]] = {
    "p1": [("p4", 5.0), ("p3", 1.0)],
    "p2": [("p4", 5.0), ("p6", 1.0)],
    "c2": [("c9", 10.0), ("p3", 9.0)],
}
#: Popular lists per category (log2 scores: one point is twice the count).
POPULAR: Mapping[str, list[tuple[str, float]]] = {
    "phones": [("p3", 3.0), ("p5", 2.0), ("p6", 1.0)],
    "cases": [("c9", 3.0), ("c8", 2.0)],
}
#: Only immediate triggers (see the module doc).
TRIGGERS = "browse_interest,post_purchase"


def held_user(prefix: str, held: bool, percent: float = 50.0) -> str:
    """The first ``prefix-N`` in (or out of) the control group at ``percent``."""
    n = 0
    while in_holdout(f"{prefix}-{n}", percent) is not held:
        n += 1
    return f"{prefix}-{n}"


@dataclass(frozen=True)
class Act:
    """One event of a case: ``at`` seconds after the start."""

    item: str
    at: float
    category: str = "phones"
    type: EventType = EventType.VIEW


@dataclass(frozen=True)
class Expect:
    """One decision: its trigger, where it went and the items it holds there."""

    trigger: str
    outcome: str
    reason: str | None
    items: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    name: str
    user: str
    acts: tuple[Act, ...]
    expect: tuple[Expect, ...]
    #: NUDGESTREAM_* overrides on top of :data:`BASE_ENV`.
    overrides: Mapping[str, str] = field(default_factory=dict)
    #: Quiet hours around the start of the case (the runner's clock decides the hours).
    quiet: bool = False

    def env(self, start: float) -> dict[str, str]:
        quiet = _hours_around(start) if self.quiet else "off"
        return {**BASE_ENV, "NUDGESTREAM_QUIET_HOURS": quiet, **self.overrides}

    def events(self, start: float, run: str) -> list[Event]:
        """The case's events; ``run`` makes the event ids (hence decision ids) unique."""
        return [
            Event(f"{run}-{self.name}-{n}", act.type, self.user, act.item, start + act.at, act.category)
            for n, act in enumerate(self.acts)
        ]


BASE_ENV: Mapping[str, str] = {
    "NUDGESTREAM_TRIGGERS": TRIGGERS,
    "NUDGESTREAM_HOLDOUT_PERCENT": "0",
    "NUDGESTREAM_DEFAULT_TZ": "UTC",
}


def _hours_around(start: float) -> str:
    """Quiet hours from the hour before ``start`` to two hours after it (UTC)."""
    at = datetime.fromtimestamp(start, UTC)
    return f"{(at - timedelta(hours=1)):%H}:00-{(at + timedelta(hours=2)):%H}:00"


def candidates(need: Needs) -> CandidateData:
    """What the served data gives a decision that needs ``need`` (as Redis would)."""
    n = need.n_popular
    return CandidateData(
        related={item: RELATED.get(item, []) for item in need.related_items},
        popular=(),  # no overall list: no case falls back to it
        popular_by_category={c: POPULAR.get(c, [])[:n] for c in need.categories},
    )


BROWSE = (Act("p1", 0.0), Act("p2", 1.0))
# p1 then p2: related p4 (1 from p2 + 0.5 from p1), p3 (0.1 related + 1 popular + 1 for
# both), p6 (0.2 + 0.25 + 1); p1 and p2 were touched, so never pushed.
FIRST_PUSH = ("p3", "p4", "p6")

CASES: Sequence[Case] = (
    Case(
        "a_browse_is_pushed",
        "dc-pushed",
        BROWSE,
        (Expect("browse_interest", "pushed", None, FIRST_PUSH),),
    ),
    Case(
        "a_control_user_is_held_back_after_the_limits",
        held_user("dc-held", True),
        BROWSE,
        (Expect("browse_interest", "holdout", "holdout", FIRST_PUSH),),
        overrides={"NUDGESTREAM_HOLDOUT_PERCENT": "50"},
    ),
    Case(
        "a_user_outside_the_control_group_is_pushed",
        held_user("dc-treated", False),
        BROWSE,
        (Expect("browse_interest", "pushed", None, FIRST_PUSH),),
        overrides={"NUDGESTREAM_HOLDOUT_PERCENT": "50"},
    ),
    Case(
        "a_purchase_right_after_a_push_waits_for_the_gap",
        "dc-gap",
        (*BROWSE, Act("p6", 2.0, type=EventType.BUY)),
        (
            Expect("browse_interest", "pushed", None, FIRST_PUSH),
            # Related to p6 (none), p2 (0.5: p4) and p1 (0.25: p4, 0.05: p3).
            Expect("post_purchase", "suppressed", "min_gap", ("p4", "p3")),
        ),
    ),
    Case(
        "a_second_push_keeps_only_the_items_not_pushed_lately",
        "dc-cooldown",
        (*BROWSE, Act("c1", 2.0, "cases"), Act("c2", 3.0, "cases")),
        (
            Expect("browse_interest", "pushed", None, FIRST_PUSH),
            # c9 (related to c2 and popular in cases) beats p3 and p6, pushed a second ago.
            Expect("browse_interest", "pushed", None, ("c9",)),
        ),
        overrides={"NUDGESTREAM_PUSH_MIN_GAP_S": "0"},
    ),
    Case(
        "a_push_over_the_window_budget_is_suppressed",
        "dc-window",
        (*BROWSE, Act("c1", 2.0, "cases"), Act("c2", 3.0, "cases")),
        (
            Expect("browse_interest", "pushed", None, FIRST_PUSH),
            Expect("browse_interest", "suppressed", "max_per_window", ("c9", "p3", "p6")),
        ),
        overrides={"NUDGESTREAM_PUSH_MIN_GAP_S": "0", "NUDGESTREAM_PUSH_MAX_PER_WINDOW": "1"},
    ),
    Case(
        "a_push_in_quiet_hours_is_deferred",
        "dc-quiet",
        BROWSE,
        (Expect("browse_interest", "deferred", "quiet_hours", FIRST_PUSH),),
        quiet=True,
    ),
    Case(
        "a_trigger_with_nothing_to_offer_is_audited_without_items",
        "dc-cold",
        # Lamps have no related lists nor popular ones, and no overall list stands in.
        (Act("l1", 0.0, "lamps"), Act("l2", 1.0, "lamps")),
        (Expect("browse_interest", "no_candidates", "no_candidates", ()),),
    ),
)
