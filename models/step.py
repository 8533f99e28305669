"""One event through the user-side core: the step the ingest agent and the replay share.

:func:`step` is everything that happens to one valid event on the user's partition,
as a pure function of the stored profile, the event, where it was read and the clock:

1. the **replay check** — an event at or before the position of its source that the
   profile last applied was applied already (a re-delivery after a crash or a
   rebalance: :meth:`~models.profile.Profile.replayed`); nothing else happens;
2. the **profile update** (:func:`models.profile.update`; a duplicate event id stops
   here, the profile only records the position);
3. the **pair increments** of the co-occurrence rows
   (:func:`models.cooccurrence.pair_increments`, from the recent items *before* the
   event);
4. the **triggers** (:func:`models.policy.triggers_for`), split into those due now and
   those to hold until their ``due_at``;
5. whether the new profile is a segment **training sample**
   (:func:`models.features.should_sample`).

The ingest agent (``streams/ingest.py``) sends what the result says (increments to the
pairs topic, samples to the trainer, triggers to the decision engine) and stores the
profile; the offline replay (:mod:`models.replay`, :mod:`models.push_replay`) applies
the same result to its in-memory state. Since neither computes any of it itself, what
is evaluated offline is what runs in the stream.

>>> from models.events import Event, EventType
>>> config = StepConfig(policy=PolicyConfig(browse_min_items=2))
>>> first = step(None, Event("e1", EventType.VIEW, "u1", "a", 1000.0, "toys"), "v0", 7, 1000.0, config)
>>> second = step(first.profile, Event("e2", EventType.VIEW, "u1", "b", 1001.0, "toys"), "v0", 8, 1001.0, config)
>>> second.applied, len(second.increments), [t.kind.value for t in second.due], second.sample
(True, 2, ['browse_interest'], True)
>>> step(second.profile, Event("e2", EventType.VIEW, "u1", "b", 1001.0, "toys"), "v0", 8, 1001.0, config).replayed
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.cooccurrence import CoocConfig, Increment, pair_increments
from models.events import Event
from models.features import should_sample
from models.policy import PolicyConfig, Trigger, triggers_for
from models.profile import Profile, ProfileConfig, update


@dataclass(frozen=True, slots=True)
class StepConfig:
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    cooc: CoocConfig = field(default_factory=CoocConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)


@dataclass(frozen=True, slots=True)
class Step:
    """What one event does; the caller stores :attr:`profile` unless :attr:`replayed`."""

    #: The profile after the event (the stored one, unchanged, when ``replayed``).
    profile: Profile
    #: Applied: the event changed the profile (neither replayed nor a duplicate id).
    applied: bool
    #: Re-delivered at a position the profile has applied already.
    replayed: bool = False
    increments: tuple[Increment, ...] = ()
    #: Triggers to decide now (``due_at <= now``), and those to hold until ``due_at``.
    due: tuple[Trigger, ...] = ()
    later: tuple[Trigger, ...] = ()
    #: The new profile is a segment training sample.
    sample: bool = False

    @property
    def duplicate(self) -> bool:
        return not self.applied and not self.replayed


def step(
    stored: Profile | None,
    event: Event,
    source: str,
    position: int,
    now: float,
    config: StepConfig,
) -> Step:
    """Fold one event read at ``position`` of ``source`` into ``stored`` (see the module doc).

    ``stored`` is left alone; ``now`` is the wall clock in a worker, the simulated clock
    (the latest event time) in a replay.
    """
    if stored is not None and stored.replayed(source, position, event.ts):
        return Step(stored, applied=False, replayed=True)
    profile, applied = update(stored, event, now, config.profile)
    if not applied:
        return Step(profile.at_position(source, position), applied=False)
    profile.positions[source] = position  # a new profile: update() copied the positions
    triggers = triggers_for(stored, profile, event, config.policy)
    return Step(
        profile,
        applied=True,
        increments=tuple(pair_increments(stored.recent if stored else (), event, config.cooc)),
        due=tuple(t for t in triggers if t.due_at <= now),
        later=tuple(t for t in triggers if t.due_at > now),
        sample=should_sample(profile.events),
    )
