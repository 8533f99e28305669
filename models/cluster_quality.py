"""How good a clustering is: silhouette, Calinski-Harabasz, Davies-Bouldin.

Computed as scikit-learn defines them (``tests/unit/test_segments.py`` compares), with
numpy only. The segment trainer scores every candidate K on a sample of recent vectors
and keeps the best silhouette (:func:`models.kmeans.choose_k`).

>>> import numpy as np
>>> points = np.array([[0.0, 0.0], [0.0, 0.1], [1.0, 1.0], [1.0, 1.1]])
>>> scores = cluster_scores(points, np.array([0, 0, 1, 1]), pairwise_distances(points))
>>> round(scores.silhouette, 3), round(scores.davies_bouldin, 3)
(0.929, 0.071)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ClusterScores:
    #: -1..1, higher is better; the criterion that chooses K.
    silhouette: float
    #: >= 0, higher is better.
    calinski_harabasz: float
    #: >= 0, lower is better.
    davies_bouldin: float


def squared_distances(points: Matrix, centres: Matrix) -> Matrix:
    diff = points[:, None, :] - centres[None, :, :]
    squared: Matrix = np.einsum("ijk,ijk->ij", diff, diff)
    return squared


def pairwise_distances(points: Matrix) -> Matrix:
    return np.sqrt(squared_distances(points, points))


def cluster_scores(points: Matrix, labels: NDArray[np.intp], distances: Matrix) -> ClusterScores:
    """Silhouette, Calinski-Harabasz and Davies-Bouldin as scikit-learn defines them.

    ``distances`` is the pairwise Euclidean distance matrix of ``points``; every label in
    ``0..labels.max()`` must occur.
    """
    k = int(labels.max()) + 1
    members = np.eye(k)[labels]
    sizes = members.sum(axis=0)
    means = (members.T @ points) / sizes[:, None]
    return ClusterScores(
        silhouette=_silhouette(labels, distances, members, sizes),
        calinski_harabasz=_calinski_harabasz(points, labels, means, sizes),
        davies_bouldin=_davies_bouldin(points, labels, means),
    )


def _silhouette(
    labels: NDArray[np.intp], distances: Matrix, members: Matrix, sizes: Matrix
) -> float:
    totals = distances @ members
    rows = np.arange(len(labels))
    own_size = sizes[labels]
    # A point alone in its cluster scores 0, as in scikit-learn.
    inside = totals[rows, labels] / np.maximum(own_size - 1, 1)
    others = totals / sizes
    others[rows, labels] = np.inf
    outside = others.min(axis=1)
    widest = np.maximum(inside, outside)
    safe_widest = np.where(widest > 0, widest, 1.0)
    scores = np.where(own_size > 1, (outside - inside) / safe_widest, 0.0)
    return float(scores.mean())


def _calinski_harabasz(
    points: Matrix, labels: NDArray[np.intp], means: Matrix, sizes: Matrix
) -> float:
    n, k = len(points), len(means)
    between = float((sizes * ((means - points.mean(axis=0)) ** 2).sum(axis=1)).sum())
    within = float(((points - means[labels]) ** 2).sum())
    return 1.0 if within == 0 else between * (n - k) / (within * (k - 1))


def _davies_bouldin(points: Matrix, labels: NDArray[np.intp], means: Matrix) -> float:
    spread = np.linalg.norm(points - means[labels], axis=1)
    scatter = np.bincount(labels, spread, len(means)) / np.bincount(labels, minlength=len(means))
    separation = pairwise_distances(means)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = (scatter[:, None] + scatter[None, :]) / separation
    np.fill_diagonal(ratios, 0.0)
    ratios = np.nan_to_num(ratios, nan=0.0, posinf=0.0)
    return float(ratios.max(axis=1).mean())
