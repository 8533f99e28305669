"""Interest segments: one CluStream trainer, versioned snapshots every worker can apply.

Users live on many partitions and workers, so a segment id must mean the same thing
everywhere. One :class:`SegmentTrainer` learns from sampled profile vectors (see
:mod:`models.features`) and periodically turns its state into a
:class:`SegmentSnapshot`: a small, versioned, serialisable set of segment centres.
Workers keep the latest snapshot and place a user with :meth:`SegmentSnapshot.assign`,
a nearest-centre lookup.

Online phase: river's :class:`~river.cluster.CluStream` keeps ``max_micro_clusters``
micro-clusters of the vectors learnt in the last ``time_window`` calls. Offline phase
(at :meth:`SegmentTrainer.snapshot`): a seeded, *weighted* k-means++ over the
micro-cluster centres for every K in ``k_min..k_max``, each candidate scored by
silhouette (the choice), Calinski-Harabasz and Davies-Bouldin on a ring of recent
vectors. River's own macro step is switched off (``time_gap`` is never reached): it
weighs a micro-cluster of one user like one of a thousand, starts from random centres,
has a fixed K and renumbers its clusters on every rebuild.

Ids stay stable: the new centres are matched to the centres of recently live segments
by a minimum-cost assignment on Euclidean distance (Hungarian algorithm); a centre
farther than ``max_match_distance`` from every free known one gets a new id (the
smallest one not remembered).

Cost, for ``m`` micro-clusters, ``d`` dimensions, ``s`` sampled vectors:

* :meth:`SegmentTrainer.learn_one`: ``O(m*d)``, plus ``O(m*m*d)`` when the vector fits
  no micro-cluster and none is stale (CluStream merges the closest pair); for ``m=50,
  d=16`` in CPython a median of ~50 us, a mean of 0.2-0.3 ms and ~4 ms for a merge.
* :meth:`SegmentTrainer.snapshot`: ``O(s*s*d)`` for the sample distances plus
  ``O(K*(n_init*max_iter*m*K*d + s*s))`` for the candidate fits; about 0.1 s by default.
* :meth:`SegmentSnapshot.assign`: ``O(K*d)``.

>>> trainer = SegmentTrainer(SegmenterConfig(warmup=60), FeatureConfig(category_dims=2))
>>> for i in range(120):
...     trainer.learn_one([1.0, 0.0] + [0.1] * 6 if i % 2 else [0.0, 1.0] + [0.9] * 6)
>>> snap = trainer.snapshot(now=1000.0)
>>> snap.version, snap.k
(1, 2)
>>> snap.assign([1.0, 0.0] + [0.1] * 6) != snap.assign([0.0, 1.0] + [0.9] * 6)
True
>>> SegmentSnapshot.from_bytes(snap.to_bytes()) == snap
True
"""

from __future__ import annotations

import math
import operator
import pickle
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import Any, Final

import numpy as np
import orjson
from numpy.typing import NDArray
from river.cluster import CluStream
from scipy.optimize import linear_sum_assignment

from models.features import FEATURE_VERSION, CategoryNames, FeatureConfig

Matrix = NDArray[np.float64]

SNAPSHOT_FORMAT: Final = 1
CHECKPOINT_FORMAT: Final = 1
_CHECKPOINT_MAGIC: Final = b"nudgestream-segments\n"
#: Checkpoints pickle river objects, whose format changes between releases (0.25 did).
RIVER_VERSION: Final = version("river")
#: River's macro step runs when the call count hits a multiple of time_gap: never here.
_NEVER: Final = 2**62
#: Cost of an impossible match in the assignment problem (finite, as scipy requires).
_FORBIDDEN: Final = 1e9


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


@dataclass(frozen=True, slots=True)
class ClusterScores:
    #: -1..1, higher is better; the criterion that chooses K.
    silhouette: float
    #: >= 0, higher is better.
    calinski_harabasz: float
    #: >= 0, lower is better.
    davies_bouldin: float


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    #: Share of the trainer's recent vectors (micro-cluster weight) in this segment.
    share: float
    centre: tuple[float, ...]
    #: Category keys most likely behind the centre, with their estimated interest share.
    top_categories: tuple[tuple[str, float], ...]
    label: str


@dataclass(frozen=True, slots=True)
class SegmentSnapshot:
    version: int
    created_at: float
    k: int
    segments: tuple[Segment, ...]
    scores: ClusterScores
    #: Workers compute vectors with this configuration, so all agree with the trainer.
    features: FeatureConfig
    #: Vectors learnt by the trainer when the snapshot was taken.
    learned: int

    @property
    def ids(self) -> list[int]:
        return [segment.id for segment in self.segments]

    @property
    def centres(self) -> list[tuple[float, ...]]:
        return [segment.centre for segment in self.segments]

    def assign(self, vector: Sequence[float]) -> int:
        """Id of the segment with the nearest centre (ties: the first in id order)."""
        if len(vector) != self.features.dimension:
            raise ValueError(f"vector has {len(vector)} values, expected {self.features.dimension}")
        best_id, best_distance = -1, math.inf
        for segment in self.segments:
            distance = math.dist(vector, segment.centre)
            if distance < best_distance:
                best_id, best_distance = segment.id, distance
        return best_id

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["format"] = SNAPSHOT_FORMAT
        data["schema"] = SNAPSHOT_FORMAT  # the published contract, schemas/segments.v1.json
        data["feature_version"] = FEATURE_VERSION
        return orjson.dumps(data)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SegmentSnapshot:
        data = orjson.loads(raw)
        if data.get("format") != SNAPSHOT_FORMAT or data.get("feature_version") != FEATURE_VERSION:
            raise ValueError(
                f"unsupported segment snapshot (format {data.get('format')!r}, feature "
                f"version {data.get('feature_version')!r}; this build reads "
                f"{SNAPSHOT_FORMAT}/{FEATURE_VERSION})"
            )
        return cls(
            version=data["version"],
            created_at=data["created_at"],
            k=data["k"],
            segments=tuple(_segment_from_dict(s) for s in data["segments"]),
            scores=ClusterScores(**data["scores"]),
            features=FeatureConfig.from_dict(data["features"]),
            learned=data["learned"],
        )


def _segment_from_dict(data: dict[str, Any]) -> Segment:
    return Segment(
        id=data["id"],
        share=data["share"],
        centre=tuple(data["centre"]),
        top_categories=tuple((name, share) for name, share in data["top_categories"]),
        label=data["label"],
    )


class CheckpointError(ValueError):
    """A checkpoint this build cannot restore (other format or river release)."""


class SegmentTrainer:
    """Learns segments from profile vectors; see the module docstring for the design."""

    def __init__(
        self,
        config: SegmenterConfig | None = None,
        features: FeatureConfig | None = None,
        resume_from: SegmentSnapshot | None = None,
    ) -> None:
        """``resume_from``: continue the version sequence and ids of a published snapshot,
        e.g. when a checkpoint could not be restored after a river upgrade."""
        self.config = config or SegmenterConfig()
        self.features = resume_from.features if resume_from else features or FeatureConfig()
        self.learned = 0
        self.version = resume_from.version if resume_from else 0
        self.names = CategoryNames(self.features)
        self.ids = SegmentIds(self.config.max_match_distance, self.config.max_known_segments)
        if resume_from:
            self.ids.remember(resume_from.ids, [list(c) for c in resume_from.centres])
        #: The latest snapshot; a resumed trainer warm-starts from the published one.
        self.last: SegmentSnapshot | None = resume_from
        self._learned_at_last = -1
        self._sample: deque[tuple[float, ...]] = deque(maxlen=self.config.sample_size)
        self._clustream = CluStream(
            n_macro_clusters=self.config.k_min,
            max_micro_clusters=self.config.max_micro_clusters,
            micro_cluster_r_factor=self.config.micro_cluster_r_factor,
            time_window=self.config.time_window,
            time_gap=_NEVER,
            seed=self.config.seed,
        )

    @property
    def micro_clusters(self) -> int:
        return len(self._clustream.micro_clusters)

    def learn_one(
        self, vector: Sequence[float], categories: Mapping[str, float] | None = None
    ) -> None:
        """Learn one profile vector; ``categories`` (the profile's weights) names segments."""
        if len(vector) != self.features.dimension:
            raise ValueError(f"vector has {len(vector)} values, expected {self.features.dimension}")
        # Dense dict with every key: CluStream's merge keeps only one side's keys.
        self._clustream.learn_one(dict(enumerate(map(float, vector))))  # type: ignore[no-untyped-call]
        self._sample.append(tuple(vector))
        if categories:
            self.names.add(categories)
        self.learned += 1

    def snapshot(self, now: float) -> SegmentSnapshot | None:
        """A new snapshot, the previous one if nothing was learnt since, None in warm-up."""
        if self.learned < self.config.warmup:
            return None
        if self.learned == self._learned_at_last:
            return self.last
        points, weights = self._micro_cluster_summary()
        previous = np.array(self.last.centres) if self.last else None
        fit = choose_k(points, weights, np.array(self._sample), self.config, previous)
        if fit is not None:
            self.last = self._publish(fit, points, weights, now)
        self._learned_at_last = self.learned
        return self.last

    def _micro_cluster_summary(self) -> tuple[Matrix, Matrix]:
        clusters = self._clustream.micro_clusters.values()
        dims = range(self.features.dimension)
        points = np.array([[mc.center[i] for i in dims] for mc in clusters], dtype=np.float64)
        weights = np.array([mc.weight for mc in clusters], dtype=np.float64)
        return points, weights

    def _publish(self, fit: Fit, points: Matrix, weights: Matrix, now: float) -> SegmentSnapshot:
        centres = [list(map(float, c)) for c in fit.centres]
        ids = self.ids.match(centres)
        member_weight = np.bincount(nearest(points, fit.centres), weights, len(centres))
        shares = member_weight / weights.sum()
        segments = [
            self._describe(seg_id, float(share), centre)
            for seg_id, share, centre in zip(ids, shares, centres, strict=True)
        ]
        self.version += 1
        return SegmentSnapshot(
            version=self.version,
            created_at=now,
            k=len(centres),
            segments=tuple(sorted(segments, key=lambda s: s.id)),
            scores=fit.scores,
            features=self.features,
            learned=self.learned,
        )

    def _describe(self, seg_id: int, share: float, centre: list[float]) -> Segment:
        top = self.names.top(centre, self.config.top_categories)
        return Segment(
            id=seg_id,
            share=round(share, 6),
            centre=tuple(centre),
            top_categories=tuple(top),
            label=segment_label(centre, top, self.features),
        )

    def checkpoint(self) -> bytes:
        """The trainer's state; restore it with :meth:`restore` on the same river release."""
        header = orjson.dumps(
            {
                "format": CHECKPOINT_FORMAT,
                "river": RIVER_VERSION,
                "config": asdict(self.config),
                "features": self.features.to_dict(),
                "learned": self.learned,
                "learned_at_last": self._learned_at_last,
                "version": self.version,
                "ids": self.ids.to_list(),
                "sample": list(self._sample),
                "names": self.names.to_list(),
                "last": orjson.loads(self.last.to_bytes()) if self.last else None,
            }
        )
        # River objects are pickled (their only serialisation); the JSON header in front
        # lets restore check the release before unpickling anything.
        return (
            _CHECKPOINT_MAGIC
            + len(header).to_bytes(4, "big")
            + header
            + pickle.dumps(self._clustream)
        )

    @classmethod
    def restore(cls, raw: bytes) -> SegmentTrainer:
        """Rebuild a trainer from :meth:`checkpoint` (trusted bytes: it unpickles).

        Raises :class:`CheckpointError` when the bytes are not a checkpoint of this
        format or were written with another river release (river 0.25 changed its pickle
        format); the caller can then start a trainer with ``resume_from`` the last
        published snapshot.
        """
        state, payload = _read_checkpoint(raw)
        trainer = cls(
            SegmenterConfig(**state["config"]), FeatureConfig.from_dict(state["features"])
        )
        trainer.learned = state["learned"]
        trainer._learned_at_last = state["learned_at_last"]
        trainer.version = state["version"]
        trainer.ids = SegmentIds.from_list(
            trainer.config.max_match_distance, trainer.config.max_known_segments, state["ids"]
        )
        trainer._sample.extend(tuple(v) for v in state["sample"])
        trainer.names = CategoryNames.from_list(trainer.features, state["names"])
        if state["last"] is not None:
            trainer.last = SegmentSnapshot.from_bytes(orjson.dumps(state["last"]))
        trainer._clustream = pickle.loads(payload)
        return trainer


def _read_checkpoint(raw: bytes) -> tuple[dict[str, Any], bytes]:
    if not raw.startswith(_CHECKPOINT_MAGIC):
        raise CheckpointError("not a segment trainer checkpoint")
    start = len(_CHECKPOINT_MAGIC) + 4
    end = start + int.from_bytes(raw[len(_CHECKPOINT_MAGIC) : start], "big")
    state: dict[str, Any] = orjson.loads(raw[start:end])
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint format {state['format']}, expected {CHECKPOINT_FORMAT}")
    if state["river"] != RIVER_VERSION:
        raise CheckpointError(
            f"checkpoint written with river {state['river']}, this process runs river "
            f"{RIVER_VERSION}; start a new trainer with resume_from=<last snapshot>"
        )
    return state, raw[end:]


class SegmentIds:
    """Stable segment ids: new centres inherit the id of the nearest known centre.

    Remembers at most ``capacity`` segments (live ones first, then the most recently
    retired), so ids stay below ``capacity`` plus the largest number of centres ever
    matched, and a segment that comes back after a short absence gets its old id.

    >>> ids = SegmentIds(max_distance=0.5, capacity=4)
    >>> ids.match([[0.0, 0.0], [1.0, 1.0]])
    [0, 1]
    >>> ids.match([[1.1, 1.0], [0.0, 0.1], [5.0, 5.0]])
    [1, 0, 2]
    """

    def __init__(self, max_distance: float, capacity: int) -> None:
        self.max_distance = max_distance
        self.capacity = capacity
        #: id -> centre, least recently live first.
        self.known: dict[int, list[float]] = {}

    def match(self, centres: list[list[float]]) -> list[int]:
        known_ids = list(self.known)
        matched = self._assign(centres, [self.known[i] for i in known_ids])
        ids = [known_ids[j] if j is not None else -1 for j in matched]
        for position, seg_id in enumerate(ids):
            if seg_id < 0:
                ids[position] = self._free_id(ids)
        self.remember(ids, centres)
        return ids

    def _assign(self, centres: list[list[float]], known: list[list[float]]) -> list[int | None]:
        """For each centre, the index of its known match, or None for a new segment."""
        if not known:
            return [None] * len(centres)
        distances = np.linalg.norm(np.array(centres)[:, None, :] - np.array(known)[None], axis=2)
        costs = np.where(distances < self.max_distance, distances, _FORBIDDEN)
        # One private "new segment" column per centre, at the threshold cost, so a centre
        # takes a known id only when that is closer than the threshold.
        new_segment = np.full((len(centres), len(centres)), _FORBIDDEN)
        np.fill_diagonal(new_segment, self.max_distance)
        rows, cols = linear_sum_assignment(np.hstack([costs, new_segment]))
        result: list[int | None] = [None] * len(centres)
        for row, col in zip(rows, cols, strict=True):
            result[row] = int(col) if col < len(known) else None
        return result

    def _free_id(self, taken: list[int]) -> int:
        candidate = 0
        while candidate in self.known or candidate in taken:
            candidate += 1
        return candidate

    def remember(self, ids: list[int], centres: list[list[float]]) -> None:
        for seg_id, centre in zip(ids, centres, strict=True):
            self.known.pop(seg_id, None)
            self.known[seg_id] = list(centre)
        while len(self.known) > max(self.capacity, len(ids)):
            del self.known[next(iter(self.known))]

    def to_list(self) -> list[list[Any]]:
        return [[seg_id, centre] for seg_id, centre in self.known.items()]

    @classmethod
    def from_list(cls, max_distance: float, capacity: int, known: list[list[Any]]) -> SegmentIds:
        ids = cls(max_distance, capacity)
        ids.known = {int(seg_id): list(centre) for seg_id, centre in known}
        return ids


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
    closest = _squared_distances(points, points[chosen]).min(axis=1)
    for _ in range(1, k):
        mass = weights * closest
        chosen.append(rng.choice(len(points), p=mass / mass.sum()))
        closest = np.minimum(closest, _squared_distances(points, points[chosen[-1:]])[:, 0])
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
    inertia = float((weights * _squared_distances(points, centres).min(axis=1)).sum())
    return centres, inertia


def nearest(points: Matrix, centres: Matrix) -> NDArray[np.intp]:
    """Index of the nearest centre for each point (ties: the lowest index)."""
    labels: NDArray[np.intp] = np.argmin(_squared_distances(points, centres), axis=1)
    return labels


def _squared_distances(points: Matrix, centres: Matrix) -> Matrix:
    diff = points[:, None, :] - centres[None, :, :]
    squared: Matrix = np.einsum("ijk,ijk->ij", diff, diff)
    return squared


def pairwise_distances(points: Matrix) -> Matrix:
    return np.sqrt(_squared_distances(points, points))


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


#: Optional tags: (behaviour feature, comparison, threshold, tag); features are 0..1.
LABEL_TAGS: Final = (
    ("activity", operator.ge, 0.5, "very active"),
    ("recency", operator.le, 0.5, "lapsing"),
    ("price_band", operator.ge, 0.7, "premium"),
    ("price_band", operator.le, 0.35, "budget"),
)
#: Intent tag: a share of purchases or add-to-carts among the events of the centre.
INTENT_THRESHOLD: Final = 0.15
#: A category key is named in the label when it holds at least this interest share.
LABEL_MIN_SHARE: Final = 0.15


def segment_label(
    centre: Sequence[float], top: Sequence[tuple[str, float]], features: FeatureConfig
) -> str:
    """A short human description, e.g. ``"smartphone & headphone · high intent · premium"``."""

    def value(feature: str) -> float:
        return centre[features.index(feature)]

    names = [_display_name(key) for key, share in top[:2] if share >= LABEL_MIN_SHARE]
    if value("buy_ratio") >= INTENT_THRESHOLD:
        intent = "buyers"
    elif value("cart_ratio") >= INTENT_THRESHOLD:
        intent = "high intent"
    else:
        intent = "browsing"
    tags = [tag for feature, compare, limit, tag in LABEL_TAGS if compare(value(feature), limit)]
    return " · ".join([" & ".join(names) or "mixed interests", intent, *tags])


def _display_name(key: str) -> str:
    if key.isdigit():
        return f"category {key}"
    return key.rsplit(".", 1)[-1].replace("_", " ")
