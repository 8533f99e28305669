"""The settings of segment training (:class:`models.segments.SegmentTrainer`).

>>> SegmenterConfig(k_min=3, k_max=6).k_max
6
>>> SegmenterConfig(k_min=5, k_max=4)
Traceback (most recent call last):
...
ValueError: need 2 <= k_min <= k_max
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SegmenterConfig:
    k_min: int = 2
    k_max: int = 10
    max_micro_clusters: int = 50
    micro_cluster_r_factor: int = 8
    #: In learn_one calls, not seconds (CluStream counts calls).
    time_window: int = 10_000
    #: No snapshot before this many vectors were learnt.
    warmup: int = 500
    #: Recent vectors kept to score the candidate K.
    sample_size: int = 512
    n_init: int = 4
    max_iter: int = 50
    #: A fresh k-means replaces the warm-started one only if its inertia is this much lower.
    refit_gain: float = 0.2
    #: K changes only if another K's silhouette is higher by more than this.
    k_switch_margin: float = 0.02
    #: Farther than this (Euclidean, feature units) a new centre is a new segment.
    max_match_distance: float = 0.5
    #: Ids of retired segments remembered for reuse if the segment comes back.
    max_known_segments: int = 20
    top_categories: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError("need 2 <= k_min <= k_max")
        if self.max_micro_clusters < self.k_max:
            raise ValueError("max_micro_clusters must be >= k_max")
        if self.warmup < self.max_micro_clusters:
            raise ValueError("warmup must be >= max_micro_clusters (CluStream's own warm-up)")
        if self.sample_size < 2 * self.k_max:
            raise ValueError("sample_size must be >= 2 * k_max")
        if self.max_known_segments < self.k_max:
            raise ValueError("max_known_segments must be >= k_max")
        if self.max_match_distance <= 0 or self.n_init < 1 or self.max_iter < 1:
            raise ValueError("max_match_distance, n_init and max_iter must be positive")
        if not 0 <= self.refit_gain < 1 or self.k_switch_margin < 0:
            raise ValueError("need 0 <= refit_gain < 1 and k_switch_margin >= 0")
