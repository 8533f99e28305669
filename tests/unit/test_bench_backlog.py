"""The bench's second cohort: the same events by users the worker has never seen."""

from __future__ import annotations

import itertools

import orjson

from load.bench.backlog import new_users
from load.generator import GeneratedEvent, GeneratorConfig, SyntheticWorld, generate_events


def _backlog() -> list[GeneratedEvent]:
    config = GeneratorConfig(
        users=50, seed=3, malformed_share=0.0, start_ts=1000.0, concurrent_sessions=10
    )
    return list(itertools.islice(generate_events(config, SyntheticWorld.build(config)), 300))


def test_every_user_and_event_id_is_new_and_the_key_follows_the_user() -> None:
    backlog = _backlog()
    cohort = new_users(backlog, "~2")
    old_users = {orjson.loads(r.value)["user_id"] for r in backlog}
    old_ids = {orjson.loads(r.value)["event_id"] for r in backlog}
    docs = [orjson.loads(r.value) for r in cohort]
    assert {d["user_id"] for d in docs}.isdisjoint(old_users)
    assert {d["event_id"] for d in docs}.isdisjoint(old_ids)
    assert len({d["user_id"] for d in docs}) == len(old_users)
    assert all(r.key == d["user_id"].encode() for r, d in zip(cohort, docs, strict=True))


def test_everything_but_the_ids_is_the_same_event_on_the_same_topic() -> None:
    backlog = _backlog()
    for before, after in zip(backlog, new_users(backlog, "~2"), strict=True):
        old, new = orjson.loads(before.value), orjson.loads(after.value)
        assert after.topic == before.topic
        assert {k: v for k, v in new.items() if k not in ("user_id", "event_id")} == {
            k: v for k, v in old.items() if k not in ("user_id", "event_id")
        }
        assert new["user_id"] == f"{old['user_id']}~2"
