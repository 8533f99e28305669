"""The published form of segments: a versioned snapshot every worker can apply.

A :class:`SegmentSnapshot` is small and serialised as JSON (the contract is
``schemas/segments.v1.json``); a worker places a user with :meth:`SegmentSnapshot.assign`,
a nearest-centre lookup, so every worker gives a user the same segment id.

>>> from models.features import FeatureConfig
>>> features = FeatureConfig(category_dims=2)
>>> near, far = [0.0] * features.dimension, [1.0] * features.dimension
>>> snap = SegmentSnapshot(
...     version=3, created_at=0.0, k=2, learned=500, features=features,
...     segments=(Segment(0, 0.5, tuple(near), (), "a"), Segment(1, 0.5, tuple(far), (), "b")),
...     scores=ClusterScores(silhouette=0.6, calinski_harabasz=10.0, davies_bouldin=0.4),
... )
>>> snap.assign([0.9] * features.dimension)
1
>>> SegmentSnapshot.from_bytes(snap.to_bytes()) == snap
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import orjson

from models.cluster_quality import ClusterScores
from models.features import FEATURE_VERSION, FeatureConfig

SNAPSHOT_FORMAT: Final = 1


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
