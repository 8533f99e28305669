"""The trainer process's side of the protocol: start, learn, snapshots with checkpoints."""

from __future__ import annotations

import io

import pytest

from load.trainer_stall import synthetic_records
from models.segments import SegmentSnapshot, SegmentTrainer
from streams.trainer_process import TrainerState, _read_frame, _sample, encode_frame


def started(checkpoint: bytes | None = None, latest: bytes | None = None) -> TrainerState:
    state = TrainerState()
    assert state.handle(("start", checkpoint, latest))[0] == "started"
    return state


def test_frames_round_trip_one_after_another() -> None:
    messages = [("learn", [b"x" * 70_000, b"y"]), ("snapshot", 12.5), ("error", "boom")]
    stream = io.BytesIO(b"".join(encode_frame(m) for m in messages))
    assert [_read_frame(stream) for _ in messages] == messages
    assert _read_frame(stream) is None, "a closed pipe ends the child's loop"


def test_a_snapshot_is_handed_out_once_per_version_with_its_checkpoint() -> None:
    state = started()
    assert state.handle(("learn", synthetic_records(600))) == ("learned", 600)
    _, raw, checkpoint, micro_clusters = state.handle(("snapshot", 100.0))
    assert raw is not None and checkpoint is not None and micro_clusters > 0
    assert SegmentSnapshot.from_bytes(raw).version == 1
    # Nothing new learnt: the same version, so nothing to publish or checkpoint.
    assert state.handle(("snapshot", 110.0))[1:3] == (None, None)


def test_a_process_started_from_the_checkpoint_continues_the_version_sequence() -> None:
    records = synthetic_records(1200)
    first = started()
    first.handle(("learn", records[:600]))
    _, raw, checkpoint, _ = first.handle(("snapshot", 100.0))
    version, detail = TrainerState().handle(("start", checkpoint, raw))[1:]
    assert (version, detail) == (1, "restored from the checkpoint")

    second = started(checkpoint, raw)
    second.handle(("learn", records[600:]))
    first.handle(("learn", records[600:]))
    after_restart, uninterrupted = second.handle(("snapshot", 200.0)), first.handle(("snapshot", 200.0))
    assert after_restart[1] == uninterrupted[1], "same snapshot, byte for byte"
    assert SegmentSnapshot.from_bytes(after_restart[1]).version == 2


def test_without_a_usable_checkpoint_it_resumes_from_the_latest_snapshot() -> None:
    trainer = SegmentTrainer()
    for record in synthetic_records(600):
        trainer.learn_one(*_sample(record))
    snapshot = trainer.snapshot(100.0)
    assert snapshot is not None
    state = TrainerState()
    _, version, detail = state.handle(("start", b"not a checkpoint", snapshot.to_bytes()))
    assert version == snapshot.version
    assert detail.startswith("checkpoint not usable") and "latest snapshot" in detail


def test_requests_before_start_or_of_unknown_kinds_fail_without_ending_the_child() -> None:
    with pytest.raises(RuntimeError, match="before 'start'"):
        TrainerState().handle(("learn", []))
    with pytest.raises(RuntimeError, match="unknown request"):
        started().handle(("train", []))

