"""The segment trainer and its snapshots: warm-up, K, stable ids, assignment, persistence."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics

import models.segments as segments_module
from models.cluster_quality import ClusterScores, cluster_scores, pairwise_distances
from models.features import FeatureConfig
from models.kmeans import choose_k, weighted_kmeans
from models.segment_config import SegmenterConfig
from models.segment_ids import SegmentIds
from models.segment_labels import segment_label
from models.segment_snapshot import Segment, SegmentSnapshot
from models.segments import CheckpointError, SegmentTrainer

NAMES = ("phones", "tv", "books", "shoes", "toys", "garden", "food", "cars", "beauty")
FEATURES = FeatureConfig(pinned_categories=NAMES)
DIM = FEATURES.dimension
CONFIG = SegmenterConfig(warmup=300)


def blobs(k: int, seed: int = 0, total: int = 400) -> list[tuple[list[float], dict[str, float]]]:
    """Well-separated groups: group i is interested in NAMES[i] only, with small noise."""
    rng = random.Random(seed)
    points = []
    for group in range(k):
        for _ in range(total // k):
            vector = [max(0.0, rng.gauss(0.0, 0.03)) for _ in range(DIM)]
            vector[group] = 1.0
            points.append((vector, {NAMES[group]: 1.0}))
    rng.shuffle(points)
    return points


def learn(trainer: SegmentTrainer, points: list[tuple[list[float], dict[str, float]]]) -> None:
    for vector, categories in points:
        trainer.learn_one(vector, categories)


def trained(k: int, seed: int = 0) -> tuple[SegmentTrainer, SegmentSnapshot]:
    trainer = SegmentTrainer(CONFIG, FEATURES)
    learn(trainer, blobs(k, seed=seed))
    snapshot = trainer.snapshot(now=1.0)
    assert snapshot is not None
    return trainer, snapshot


def test_no_snapshot_is_reported_during_warm_up() -> None:
    trainer = SegmentTrainer(CONFIG, FEATURES)
    points = blobs(3)
    learn(trainer, points[: CONFIG.warmup - 1])
    assert trainer.snapshot(now=1.0) is None
    learn(trainer, points[CONFIG.warmup - 1 : CONFIG.warmup])
    snapshot = trainer.snapshot(now=2.0)
    assert snapshot is not None and snapshot.version == 1 and snapshot.created_at == 2.0


@pytest.mark.parametrize("true_k", [2, 3, 5, 8])
def test_k_is_chosen_to_match_well_separated_groups(true_k: int) -> None:
    _, snapshot = trained(true_k)
    assert snapshot.k == true_k == len(snapshot.segments)
    assert snapshot.scores.silhouette > 0.8


def test_segments_are_described_by_their_members_categories() -> None:
    _, snapshot = trained(3)
    points = blobs(3, seed=1)
    for vector, categories in points[:30]:
        segment = next(s for s in snapshot.segments if s.id == snapshot.assign(vector))
        (name,) = categories
        assert segment.top_categories[0][0] == name
        assert segment.label.startswith(f"{name} · browsing")
    assert math.isclose(sum(s.share for s in snapshot.segments), 1.0, abs_tol=1e-4)


def test_learning_the_same_data_again_keeps_every_id_on_its_segment() -> None:
    trainer, first = trained(5)
    learn(trainer, blobs(5, seed=0)[::-1])
    second = trainer.snapshot(now=2.0)
    assert second is not None and second.version == first.version + 1
    assert second.ids == first.ids
    for old, new in zip(first.centres, second.centres, strict=True):
        assert math.dist(old, new) < 0.1
    vectors = [vector for vector, _ in blobs(5, seed=2)]
    assert [first.assign(v) for v in vectors] == [second.assign(v) for v in vectors]


def test_nothing_learnt_since_the_last_snapshot_means_the_same_snapshot() -> None:
    trainer, first = trained(3)
    assert trainer.snapshot(now=5.0) is first
    trainer.learn_one(blobs(3)[0][0])
    later = trainer.snapshot(now=6.0)
    assert later is not None and later.version == first.version + 1


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8).flatmap(lambda k: st.permutations(list(range(k)))))
def test_ids_follow_their_centres_when_a_rebuild_permutes_them(order: list[int]) -> None:
    ids = SegmentIds(max_distance=0.5, capacity=10)
    centres = [[3.0 * i, 0.0] for i in range(len(order))]
    first = ids.match(centres)
    moved = [[centres[i][0] + 0.1, 0.1] for i in order]
    assert ids.match(moved) == [first[i] for i in order]


def test_a_centre_far_from_every_known_one_gets_a_new_id_and_old_ids_come_back() -> None:
    ids = SegmentIds(max_distance=0.5, capacity=4)
    assert ids.match([[0.0], [1.0]]) == [0, 1]
    assert ids.match([[0.0], [1.0], [5.0]]) == [0, 1, 2]
    assert ids.match([[0.1], [5.1]]) == [0, 2]
    assert ids.match([[1.1], [0.0], [5.0]]) == [1, 0, 2], "a retired segment keeps its id"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-20, 20), min_size=1, max_size=6, unique=True), min_size=1, max_size=12
    )
)
def test_ids_are_unique_per_snapshot_and_bounded_over_time(rounds: list[list[float]]) -> None:
    ids = SegmentIds(max_distance=0.5, capacity=8)
    most_centres = 0
    for xs in rounds:
        most_centres = max(most_centres, len(xs))
        matched = ids.match([[x] for x in xs])
        assert len(set(matched)) == len(matched)
        assert all(0 <= i < 8 + most_centres for i in matched)
        assert len(ids.known) <= 8


def snapshot_with(centres: list[list[float]], ids: list[int]) -> SegmentSnapshot:
    segments = tuple(
        Segment(i, 1.0 / len(ids), tuple(c), (("phones", 0.5),), "phones · browsing")
        for i, c in zip(ids, centres, strict=True)
    )
    return SegmentSnapshot(3, 1.5, len(ids), segments, ClusterScores(0.5, 10.0, 0.7), FEATURES, 9)


unit_vectors = st.lists(st.floats(0, 1), min_size=DIM, max_size=DIM)


@given(st.lists(unit_vectors, min_size=1, max_size=10), unit_vectors, st.randoms())
def test_assign_returns_the_id_of_the_nearest_centre(
    centres: list[list[float]], vector: list[float], rng: random.Random
) -> None:
    ids = rng.sample(range(50), len(centres))
    snapshot = snapshot_with(centres, ids)
    nearest = min(math.dist(vector, c) for c in centres)
    chosen = ids.index(snapshot.assign(vector))
    assert math.isclose(math.dist(vector, centres[chosen]), nearest, abs_tol=1e-9)


def test_assign_rejects_a_vector_of_another_dimension() -> None:
    with pytest.raises(ValueError, match="expected 16"):
        snapshot_with([[0.0] * DIM], [0]).assign([0.0] * 15)


@given(st.lists(unit_vectors, min_size=1, max_size=10), st.text(max_size=30))
def test_snapshot_round_trips_through_bytes(centres: list[list[float]], label: str) -> None:
    original = snapshot_with(centres, list(range(len(centres))))
    original = SegmentSnapshot(
        original.version,
        original.created_at,
        original.k,
        tuple(Segment(s.id, s.share, s.centre, s.top_categories, label) for s in original.segments),
        original.scores,
        original.features,
        original.learned,
    )
    assert SegmentSnapshot.from_bytes(original.to_bytes()) == original


def test_a_snapshot_of_another_format_is_refused() -> None:
    raw = snapshot_with([[0.0] * DIM], [0]).to_bytes().replace(b'"format":1', b'"format":9')
    with pytest.raises(ValueError, match="unsupported segment snapshot"):
        SegmentSnapshot.from_bytes(raw)


def test_a_restored_trainer_continues_exactly_where_the_checkpoint_left_off() -> None:
    trainer, first = trained(4)
    restored = SegmentTrainer.restore(trainer.checkpoint())
    assert restored.snapshot(now=1.0) == first
    more = blobs(4, seed=3)
    learn(trainer, more)
    learn(restored, more)
    expected, actual = trainer.snapshot(now=2.0), restored.snapshot(now=2.0)
    assert actual is not None and actual.version == first.version + 1
    assert actual == expected
    assert restored.micro_clusters == trainer.micro_clusters


def test_a_checkpoint_from_another_river_release_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trainer, _ = trained(2)
    raw = trainer.checkpoint()
    monkeypatch.setattr(segments_module, "RIVER_VERSION", "0.24.2")
    with pytest.raises(
        CheckpointError, match=r"written with river \S+, this process runs river 0.24.2"
    ):
        SegmentTrainer.restore(raw)


def test_bytes_that_are_not_a_checkpoint_are_refused() -> None:
    with pytest.raises(CheckpointError, match="not a segment trainer checkpoint"):
        SegmentTrainer.restore(b"\x80\x04garbage")


def test_a_trainer_resumed_from_a_snapshot_keeps_its_ids_and_version_sequence() -> None:
    _, published = trained(4)
    resumed = SegmentTrainer(CONFIG, resume_from=published)
    learn(resumed, blobs(4, seed=5))
    snapshot = resumed.snapshot(now=3.0)
    assert snapshot is not None and snapshot.version == published.version + 1
    vectors = [vector for vector, _ in blobs(4, seed=6)]
    assert [snapshot.assign(v) for v in vectors] == [published.assign(v) for v in vectors]


@pytest.mark.parametrize("seed", range(4))
def test_cluster_scores_agree_with_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(60, 4)) + np.repeat(np.eye(4)[:3] * 3, 20, axis=0)
    labels = np.repeat(np.arange(3), 20)
    labels[:3] = [2, 1, 0]
    scores = cluster_scores(points, labels, pairwise_distances(points))
    assert math.isclose(scores.silhouette, metrics.silhouette_score(points, labels), rel_tol=1e-9)
    ch = metrics.calinski_harabasz_score(points, labels)
    assert math.isclose(scores.calinski_harabasz, ch, rel_tol=1e-9)
    db = metrics.davies_bouldin_score(points, labels)
    assert math.isclose(scores.davies_bouldin, db, rel_tol=1e-9)


def test_weighted_kmeans_counts_each_point_weight_times() -> None:
    points = np.array([[0.0], [1.0], [10.0]])
    weights = np.array([1.0, 9.0, 1.0])
    centres = weighted_kmeans(points, weights, 2, np.random.default_rng(0), CONFIG)
    assert sorted(round(float(c[0]), 9) for c in centres) == [0.9, 10.0]


def test_among_equally_good_partitions_a_rebuild_keeps_the_previous_one() -> None:
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    weights = np.ones(4)
    sample = np.repeat(corners, 5, axis=0)
    config = SegmenterConfig(k_min=2, k_max=2, max_micro_clusters=4, warmup=4, sample_size=20)
    for previous in ([[0.0, 0.5], [1.0, 0.5]], [[0.5, 1.0], [0.5, 0.0]]):
        fit = choose_k(corners, weights, sample, config, np.array(previous))
        assert fit is not None and fit.centres.tolist() == previous


@pytest.mark.parametrize(("margin", "expected_k"), [(0.0, 2), (1.0, 3)])
def test_k_changes_only_when_another_k_is_better_by_the_margin(
    margin: float, expected_k: int
) -> None:
    points = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    config = SegmenterConfig(
        k_min=2, k_max=3, max_micro_clusters=6, warmup=6, sample_size=6, k_switch_margin=margin
    )
    previous = np.array([[0.05], [0.2], [5.1]])
    fit = choose_k(points, np.ones(6), points, config, previous)
    assert fit is not None and len(fit.centres) == expected_k


def behaviour(**values: float) -> list[float]:
    centre = [0.0] * DIM
    centre[FEATURES.index("recency")] = 1.0
    centre[FEATURES.index("price_band")] = 0.5
    for name, value in values.items():
        centre[FEATURES.index(name)] = value
    return centre


def test_labels_name_the_main_categories_and_the_intent() -> None:
    top = [("electronics.smartphone", 0.6), ("electronics.audio_video", 0.3), ("x", 0.1)]
    assert segment_label(behaviour(), top, FEATURES) == "smartphone & audio video · browsing"
    assert segment_label(behaviour(cart_ratio=0.3), top[:1], FEATURES).endswith("· high intent")
    buyers = segment_label(behaviour(buy_ratio=0.2, cart_ratio=0.3), top[:1], FEATURES)
    assert buyers.endswith("· buyers")
    assert segment_label(behaviour(), [("4756105", 0.9)], FEATURES).startswith("category 4756105")
    assert segment_label(behaviour(), [("a", 0.05)], FEATURES).startswith("mixed interests")


def test_labels_tag_activity_recency_and_price() -> None:
    tags = segment_label(behaviour(activity=0.6, recency=0.2, price_band=0.9), [], FEATURES)
    assert tags == "mixed interests · browsing · very active · lapsing · premium"
    assert segment_label(behaviour(price_band=0.2), [], FEATURES).endswith("· budget")


def test_learn_one_rejects_a_vector_of_another_dimension() -> None:
    with pytest.raises(ValueError, match="expected 16"):
        SegmentTrainer(CONFIG, FEATURES).learn_one([0.0] * 15)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k_min": 1},
        {"k_min": 5, "k_max": 4},
        {"max_micro_clusters": 5},
        {"warmup": 10},
        {"sample_size": 10},
        {"max_known_segments": 3},
        {"refit_gain": 1.0},
        {"max_match_distance": 0.0},
    ],
)
def test_invalid_configs_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SegmenterConfig(**kwargs)  # type: ignore[arg-type]


def test_published_snapshots_validate_against_the_segments_contract() -> None:
    import json
    from pathlib import Path

    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "segments.v1.json").read_text())
    trainer = SegmentTrainer(SegmenterConfig(warmup=60), FeatureConfig(category_dims=2))
    for i in range(120):
        trainer.learn_one([1.0, 0.0] + [0.1] * 6 if i % 2 else [0.0, 1.0] + [0.9] * 6, {"books": 1.0})
    snapshot = trainer.snapshot(now=1000.0)
    assert snapshot is not None
    jsonschema.Draft202012Validator(schema).validate(json.loads(snapshot.to_bytes()))
