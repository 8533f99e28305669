"""The decision cases (``tests/decision_cases.py``) through the offline replay."""

from __future__ import annotations

import pytest

from models.candidates import CandidateData, Needs
from models.profile import Profile
from models.push_replay import PushReplay, PushReplayConfig, Record
from streams import settings
from tests.decision_cases import CASES, Case, Expect, candidates

#: Tuesday 2024-03-05 12:00 UTC: any fixed instant; quiet cases put their hours around it.
START = 1_709_640_000.0


class ServedReplay(PushReplay):
    """The replay, reading the cases' served data instead of its own tables."""

    def fetch(self, need: Needs) -> CandidateData:
        return candidates(need)


class StoredProfiles(dict[str, Profile]):
    """Profiles kept as the stream keeps them: every one written is encoded and decoded."""

    def __setitem__(self, user_id: str, profile: Profile) -> None:
        super().__setitem__(user_id, Profile.from_bytes(profile.to_bytes()))


@pytest.mark.parametrize("stored", [False, True], ids=["in-memory", "encoded"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_the_replay_decides_the_case(case: Case, stored: bool) -> None:
    config = settings.load(case.env(START))
    records: list[Record] = []
    replay = ServedReplay(PushReplayConfig(limits=config.limits, policy=config.policy), records.append)
    if stored:
        replay.replay.profiles = StoredProfiles()
    for event in case.events(START, "unit"):
        replay.process(event)
    assert [
        Expect(r.decision.trigger.value, r.outcome, r.reason, tuple(i for i, _ in r.decision.items))
        for r in records
    ] == list(case.expect)
