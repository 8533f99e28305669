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

The pieces, one per module: :mod:`models.segment_config` (settings),
:mod:`models.kmeans` (weighted k-means, the choice of K), :mod:`models.cluster_quality`
(the scores), :mod:`models.segment_ids` (stable ids), :mod:`models.segment_labels`
(human labels) and :mod:`models.segment_snapshot` (the published format); this module
is the trainer that runs them, and its checkpoints.

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

import pickle
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from importlib.metadata import version
from typing import Any, Final

import numpy as np
import orjson
from river.cluster import CluStream

from models.cluster_quality import ClusterScores, Matrix
from models.features import CategoryNames, FeatureConfig
from models.kmeans import Fit, choose_k, nearest
from models.segment_config import SegmenterConfig
from models.segment_ids import SegmentIds
from models.segment_labels import segment_label
from models.segment_snapshot import Segment, SegmentSnapshot

# The trainer's inputs and outputs, importable from here as before the split.
__all__ = [
    "CheckpointError",
    "ClusterScores",
    "Segment",
    "SegmentSnapshot",
    "SegmentTrainer",
    "SegmenterConfig",
]

CHECKPOINT_FORMAT: Final = 1
_CHECKPOINT_MAGIC: Final = b"nudgestream-segments\n"
#: Checkpoints pickle river objects, whose format changes between releases (0.25 did).
RIVER_VERSION: Final = version("river")
#: River's macro step runs when the call count hits a multiple of time_gap: never here.
_NEVER: Final = 2**62


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
