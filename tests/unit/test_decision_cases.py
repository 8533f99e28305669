"""The decision cases (``tests/decision_cases.py``) through the offline replay."""

from __future__ import annotations

import pytest

from models.candidates import CandidateData, Needs
from models.push_replay import PushReplay, PushReplayConfig, Record
from streams import settings
from tests.decision_cases import CASES, Case, Expect, candidates

#: Tuesday 2024-03-05 12:00 UTC: any fixed instant; quiet cases put their hours around it.
START = 1_709_640_000.0


class ServedReplay(PushReplay):
    """The replay, reading the cases' served data instead of its own tables."""

    def fetch(self, need: Needs) -> CandidateData:
        return candidates(need)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_the_replay_decides_the_case(case: Case) -> None:
    config = settings.load(case.env(START))
    records: list[Record] = []
    replay = ServedReplay(PushReplayConfig(limits=config.limits, policy=config.policy), records.append)
    for event in case.events(START, "unit"):
        replay.process(event)
    assert [
        Expect(r.decision.trigger.value, r.outcome, r.reason, tuple(i for i, _ in r.decision.items))
        for r in records
    ] == list(case.expect)
