"""Measured on real logs: online segments against batch k-means with the same K.

Each log is replayed through ``models.profile.update``; every ``learn_every``-th applied
event's profile vector is learnt by the trainer, which publishes a snapshot every
``SNAPSHOT_EVERY`` vectors as the streaming trainer would. At the end every user's final
vector is placed by the last snapshot and by scikit-learn's batch ``KMeans`` with the
snapshot's K, and both partitions are scored by silhouette on the same vectors.

Run with ``-s`` to see the figures recorded in docs/SEGMENTS.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from models.events import Event
from models.features import FeatureConfig, profile_vector
from models.logfile import open_events
from models.profile import Profile, ProfileConfig, update
from models.segments import SegmenterConfig, SegmentSnapshot, SegmentTrainer

pytestmark = pytest.mark.slow

SNAPSHOT_EVERY = 1000
#: Silhouette costs O(n^2): score a fixed random subset of the users.
SCORED_USERS = 5000
#: Share of recent vectors that consecutive snapshots must place in the same segment.
MIN_AGREEMENT = 0.75
RECENT = 1000


def replay(path: Path, learn_every: int) -> tuple[list[SegmentSnapshot], list[float], np.ndarray]:
    """The snapshots, consecutive-snapshot agreements and the users' final vectors."""
    features, profiles_config = FeatureConfig(), ProfileConfig()
    trainer = SegmentTrainer(SegmenterConfig(), features)
    profiles: dict[str, Profile] = {}
    snapshots: list[SegmentSnapshot] = []
    agreements: list[float] = []
    recent: list[list[float]] = []
    now = 0.0
    for n, event in enumerate(open_events(path)):
        if not isinstance(event, Event):
            continue
        now = max(now, event.ts)
        profile, applied = update(profiles.get(event.user_id), event, now, profiles_config)
        profiles[event.user_id] = profile
        if not applied or n % learn_every:
            continue
        vector = profile_vector(profile, now, features)
        trainer.learn_one(vector, profile.categories)
        recent = [*recent[-RECENT + 1 :], vector]
        if trainer.learned % SNAPSHOT_EVERY == 0 and (snapshot := trainer.snapshot(now)):
            if snapshots:
                agreements.append(agreement(snapshots[-1], snapshot, recent))
            snapshots.append(snapshot)
    final = trainer.snapshot(now)
    assert final is not None, "the replay is longer than the warm-up"
    snapshots.append(final)
    vectors = np.array([profile_vector(p, now, features) for p in profiles.values()])
    return snapshots, agreements, vectors


def agreement(before: SegmentSnapshot, after: SegmentSnapshot, vectors: list[list[float]]) -> float:
    return float(np.mean([before.assign(v) == after.assign(v) for v in vectors]))


@pytest.mark.parametrize(
    ("log", "learn_every"), [("rees46-3h-dev.csv", 1), ("taobao-2h-dev.csv", 2)]
)
def test_online_segments_score_at_least_nine_tenths_of_batch_kmeans(
    shared_data: Path, log: str, learn_every: int
) -> None:
    snapshots, agreements, vectors = replay(shared_data / log, learn_every)
    final = snapshots[-1]
    online_labels = np.array([final.assign(v) for v in vectors])
    batch_labels = KMeans(n_clusters=final.k, n_init=10, random_state=0).fit_predict(vectors)
    scored = np.random.default_rng(0).permutation(len(vectors))[:SCORED_USERS]
    online = silhouette_score(vectors[scored], online_labels[scored])
    batch = silhouette_score(vectors[scored], batch_labels[scored])
    print(
        f"\n{log}: users={len(vectors)} learned={final.learned} snapshots={final.version} "
        f"K={final.k} scores={final.scores} online_silhouette={online:.3f} "
        f"batch_silhouette={batch:.3f} ratio={online / batch:.3f} "
        f"agreement mean={np.mean(agreements):.3f} min={np.min(agreements):.3f}"
    )
    for segment in final.segments:
        print(f"  {segment.id}: {segment.share:.1%} {segment.label}")
    assert online >= 0.9 * batch
    assert np.mean(agreements) >= MIN_AGREEMENT
