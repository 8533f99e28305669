"""Weighted k-means (k-means++ seeding, Lloyd's iterations) and the choice of K.

The segment trainer clusters CluStream's micro-cluster centres, each weighted by the
vectors it holds, for every K in ``k_min..k_max``, and keeps the K with the best
silhouette on recent vectors (:mod:`models.cluster_quality`), preferring the previous K
and centres unless another is clearly better.

>>> import numpy as np
>>> from models.segment_config import SegmenterConfig
>>> points = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0], [0.0, 1.0]])
>>> sample = np.array([[0.0, 0.0], [0.05, 0.0], [1.0, 1.0], [1.05, 1.0], [0.0, 1.0], [0.0, 0.9]])
>>> fit = choose_k(points, np.ones(5), sample, SegmenterConfig(k_min=2, k_max=3, max_micro_clusters=3, warmup=3, sample_size=6, max_known_segments=3))
>>> len(fit.centres)
3
>>> nearest(np.array([[0.9, 0.9]]), fit.centres).tolist() == nearest(np.array([[1.0, 1.0]]), fit.centres).tolist()
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.cluster_quality import (
    ClusterScores,
    Matrix,
    cluster_scores,
    pairwise_distances,
    squared_distances,
)
from models.segment_config import SegmenterConfig


@dataclass(frozen=True, slots=True)
class Fit:
    centres: Matrix
    scores: ClusterScores


def choose_k(
    points: Matrix,
    weights: Matrix,
    sample: Matrix,
    config: SegmenterConfig,
    previous: Matrix | None = None,
) -> Fit | None:
    """The candidate K (k_min..k_max) with the best silhouette on ``sample``.

    A candidate whose centres leave a cluster empty on the sample is not a real K and is
    skipped; None when no candidate qualifies (too few distinct points). Given the
    ``previous`` centres, stability wins over small gains: for their K, Lloyd's algorithm
    also starts from them (see :func:`weighted_kmeans`), and K changes only when another
    K beats the previous K's silhouette by more than ``k_switch_margin``.
    """
    distinct = len(np.unique(points, axis=0))
    sample_distances = pairwise_distances(sample)
    candidates: dict[int, Fit] = {}
    for k in range(config.k_min, min(config.k_max, distinct) + 1):
        warm_start = previous if previous is not None and len(previous) == k else None
        centres = weighted_kmeans(
            points, weights, k, np.random.default_rng([config.seed, k]), config, warm_start
        )
        labels = nearest(sample, centres)
        if len(np.unique(labels)) == k:
            candidates[k] = Fit(centres, cluster_scores(sample, labels, sample_distances))
    if not candidates:
        return None
    best = max(candidates.values(), key=lambda fit: fit.scores.silhouette)
    kept = candidates.get(len(previous)) if previous is not None else None
    if kept and best.scores.silhouette <= kept.scores.silhouette + config.k_switch_margin:
        return kept
    return best


def weighted_kmeans(
    points: Matrix,
    weights: Matrix,
    k: int,
    rng: np.random.Generator,
    config: SegmenterConfig,
    warm_start: Matrix | None = None,
) -> Matrix:
    """Lloyd's k-means with k-means++ seeding, each point counting ``weight`` times.

    Needs at least ``k`` distinct points. The best of ``n_init`` runs by inertia wins; a
    run from ``warm_start`` centres wins unless a fresh one is ``refit_gain`` better.
    """
    runs = []
    if warm_start is not None:
        centres, inertia = _lloyd(points, weights, warm_start.copy(), config.max_iter)
        runs.append((centres, inertia * (1 - config.refit_gain)))
    for _ in range(config.n_init):
        seeds = _kmeans_pp(points, weights, k, rng)
        runs.append(_lloyd(points, weights, seeds, config.max_iter))
    # min keeps the first of equals: the warm start on a tie.
    return min(runs, key=lambda run: run[1])[0]


def _kmeans_pp(points: Matrix, weights: Matrix, k: int, rng: np.random.Generator) -> Matrix:
    chosen = [rng.choice(len(points), p=weights / weights.sum())]
    closest = squared_distances(points, points[chosen]).min(axis=1)
    for _ in range(1, k):
        mass = weights * closest
        chosen.append(rng.choice(len(points), p=mass / mass.sum()))
        closest = np.minimum(closest, squared_distances(points, points[chosen[-1:]])[:, 0])
    return points[chosen].copy()


def _lloyd(points: Matrix, weights: Matrix, centres: Matrix, max_iter: int) -> tuple[Matrix, float]:
    labels = nearest(points, centres)
    for _ in range(max_iter):
        for cluster in range(len(centres)):
            members = labels == cluster
            # An emptied cluster keeps its centre rather than vanishing.
            if weights[members].sum() > 0:
                centres[cluster] = np.average(points[members], axis=0, weights=weights[members])
        new_labels = nearest(points, centres)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    inertia = float((weights * squared_distances(points, centres).min(axis=1)).sum())
    return centres, inertia


def nearest(points: Matrix, centres: Matrix) -> NDArray[np.intp]:
    """Index of the nearest centre for each point (ties: the lowest index)."""
    labels: NDArray[np.intp] = np.argmin(squared_distances(points, centres), axis=1)
    return labels
