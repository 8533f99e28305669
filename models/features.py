"""A user's profile as a fixed, dense, bounded feature vector for segmentation.

Every worker computes the vector of its own users and the segment trainer learns from
sampled vectors, so the mapping must be a pure function of ``(profile, now, config)``
with no shared vocabulary: categories are mapped to dimensions by a *stable* hash
(blake2b, identical in every process), never by Python's salted ``hash``.

Layout for ``B = category_dims`` (default 10, so 16 dimensions in all); every value
lies in ``[0, 1]`` so no dimension dominates the Euclidean distance by its unit alone:

==========  ================  ==========================================================
index       name              meaning
==========  ================  ==========================================================
0 .. P-1    ``cat:<prefix>``  share of the user's interest in a pinned category prefix
P .. B-1    ``cat#<j>``       share of interest in the categories hashed to bucket ``j``
B           ``activity``      ``log1p(decayed events) / log1p(activity_saturation)``
B+1         ``recency``       ``2 ** (-(now - last event) / recency_half_life_s)``
B+2         ``cart_ratio``    decayed clicks (add-to-cart, favourite) / decayed events
B+3         ``buy_ratio``     decayed purchases / decayed events
B+4         ``price_band``    mean log10 price mapped from ``price_log10_range`` to 0..1
                              (0.5 when the user touched no priced item)
B+5         ``breadth``       entropy of the category shares / ``ln(breadth_categories)``
==========  ================  ==========================================================

Interest shares use the profile's decayed category weights (all stored as of the last
event, so their ratios need no decay) and sum to 1 unless the user has no known
category. A category is reduced to its first ``category_depth`` dotted components
(REES46 ``appliances.kitchen.washer`` -> ``appliances``; numeric ids such as Taobao's
stay whole) unless it falls under a pinned prefix, which keeps a dimension of its own.

Hashing loses names, so :class:`CategoryNames` keeps a bounded heavy-hitter sketch of
category keys per dimension; the trainer feeds it and uses it to describe segments.

>>> from models.events import Event, EventType
>>> from models.profile import ProfileConfig, update
>>> config = FeatureConfig(pinned_categories=("electronics.smartphone",))
>>> event = Event("e1", EventType.VIEW, "u1", "i1", 1000.0, "electronics.smartphone", 199.0)
>>> profile, _ = update(None, event, 1000.0, ProfileConfig())
>>> vector = profile_vector(profile, 1000.0, config)
>>> len(vector), vector[0], feature_names(config)[0]
(16, 1.0, 'cat:electronics.smartphone')
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from models.profile import UNKNOWN_CATEGORY, Profile

#: Bumped whenever the meaning of a dimension changes; snapshots carry it.
FEATURE_VERSION: Final = 1
BEHAVIOUR_FEATURES: Final = (
    "activity",
    "recency",
    "cart_ratio",
    "buy_ratio",
    "price_band",
    "breadth",
)
NEUTRAL_PRICE_BAND: Final = 0.5


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    category_dims: int = 10
    category_depth: int = 1
    #: Category prefixes with a dimension of their own, for readable segments.
    pinned_categories: tuple[str, ...] = ()
    activity_saturation: float = 50.0
    recency_half_life_s: float = 24 * 3600.0
    price_log10_range: tuple[float, float] = (0.0, 4.0)
    breadth_categories: int = 16

    def __post_init__(self) -> None:
        if self.category_dims < 1 or self.category_depth < 1:
            raise ValueError("category_dims and category_depth must be >= 1")
        if len(self.pinned_categories) >= self.category_dims:
            raise ValueError("pinned_categories must leave at least one hashed dimension")
        if len(set(self.pinned_categories)) != len(self.pinned_categories):
            raise ValueError("pinned_categories must be distinct")
        low, high = self.price_log10_range
        if self.activity_saturation <= 0 or self.recency_half_life_s <= 0 or high <= low:
            raise ValueError("activity_saturation, recency_half_life_s, price range invalid")
        if self.breadth_categories < 2:
            raise ValueError("breadth_categories must be >= 2")

    @property
    def dimension(self) -> int:
        return self.category_dims + len(BEHAVIOUR_FEATURES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureConfig:
        low, high = data["price_log10_range"]
        return cls(
            **{
                **data,
                "pinned_categories": tuple(data["pinned_categories"]),
                "price_log10_range": (low, high),
            }
        )

    def index(self, behaviour_feature: str) -> int:
        """Position of a behaviour feature (one of :data:`BEHAVIOUR_FEATURES`)."""
        return self.category_dims + BEHAVIOUR_FEATURES.index(behaviour_feature)


def feature_names(config: FeatureConfig) -> list[str]:
    hashed = range(len(config.pinned_categories), config.category_dims)
    return (
        [f"cat:{prefix}" for prefix in config.pinned_categories]
        + [f"cat#{j}" for j in hashed]
        + list(BEHAVIOUR_FEATURES)
    )


def category_key(category: str, config: FeatureConfig) -> str:
    """The name a category is counted under: a pinned prefix or its first components."""
    for prefix in config.pinned_categories:
        if category == prefix or category.startswith(prefix + "."):
            return prefix
    return ".".join(category.split(".")[: config.category_depth])


def category_dim(key: str, config: FeatureConfig) -> int:
    """The dimension of a category key (as returned by :func:`category_key`)."""
    pinned = config.pinned_categories
    if key in pinned:
        return pinned.index(key)
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return len(pinned) + int.from_bytes(digest, "big") % (config.category_dims - len(pinned))


def category_shares(categories: Mapping[str, float], config: FeatureConfig) -> dict[str, float]:
    """Interest share per category key; the unknown category is left out."""
    weights: dict[str, float] = {}
    for category, weight in categories.items():
        if category != UNKNOWN_CATEGORY and weight > 0:
            key = category_key(category, config)
            weights[key] = weights.get(key, 0.0) + weight
    total = sum(weights.values())
    return {key: weight / total for key, weight in weights.items()} if total > 0 else {}


def profile_vector(profile: Profile, now: float, config: FeatureConfig) -> list[float]:
    """The profile's feature vector (see the module docstring for the layout)."""
    vector = [0.0] * config.dimension
    shares = category_shares(profile.categories, config)
    for key, share in shares.items():
        vector[category_dim(key, config)] += share
    vector[config.category_dims :] = _behaviour(profile, now, shares.values(), config)
    return vector


def _behaviour(
    profile: Profile, now: float, shares: Iterable[float], config: FeatureConfig
) -> list[float]:
    events = profile.activity
    idle_s = max(0.0, now - profile.last_ts)
    return [
        min(1.0, math.log1p(events) / math.log1p(config.activity_saturation)),
        math.exp2(-idle_s / config.recency_half_life_s),
        _ratio(profile.clicks, events),
        _ratio(profile.buys, events),
        _price_band(profile.mean_log_price(), config.price_log10_range),
        _entropy(shares) / math.log(config.breadth_categories),
    ]


def _ratio(part: float, whole: float) -> float:
    return min(1.0, part / whole) if whole > 1e-9 else 0.0


def _price_band(mean_log_price: float | None, bounds: tuple[float, float]) -> float:
    if mean_log_price is None:
        return NEUTRAL_PRICE_BAND
    low, high = bounds
    return min(1.0, max(0.0, (mean_log_price - low) / (high - low)))


def _entropy(shares: Iterable[float]) -> float:
    return -sum(share * math.log(share) for share in shares if share > 0)


class CategoryNames:
    """Bounded heavy-hitter sketch: which category keys fill each category dimension.

    One Space-Saving summary of ``capacity`` counters per dimension: memory is
    ``category_dims * capacity`` entries and an update costs ``O(capacity)`` per key.
    Counts are interest shares, so each observed user adds 1 in all.

    >>> names = CategoryNames(FeatureConfig(category_dims=2, pinned_categories=("phones",)))
    >>> names.add({"phones": 3.0, "tv": 1.0})
    >>> names.add({"phones": 1.0})
    >>> names.top([1.0, 0.0] + [0.0] * 6, 2)
    [('phones', 1.0)]
    """

    def __init__(self, config: FeatureConfig, capacity: int = 8) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.config = config
        self.capacity = capacity
        self.counts: list[dict[str, float]] = [{} for _ in range(config.category_dims)]

    def add(self, categories: Mapping[str, float]) -> None:
        for key, share in category_shares(categories, self.config).items():
            self._count(self.counts[category_dim(key, self.config)], key, share)

    def _count(self, counters: dict[str, float], key: str, amount: float) -> None:
        if key in counters or len(counters) < self.capacity:
            counters[key] = counters.get(key, 0.0) + amount
            return
        # Space-Saving: the newcomer inherits the smallest count, which bounds its error.
        weakest = min(counters.items(), key=lambda kv: (kv[1], kv[0]))
        del counters[weakest[0]]
        counters[key] = weakest[1] + amount

    def top(self, centre: list[float], n: int) -> list[tuple[str, float]]:
        """The ``n`` keys most likely behind a centre, with their estimated share.

        A dimension's share is split among its keys in proportion to their counts: the
        sketch is global, so keys sharing a hashed dimension cannot be told apart.
        """
        estimate: dict[str, float] = {}
        for dim, counters in enumerate(self.counts):
            total = sum(counters.values())
            if total > 0 and centre[dim] > 0:
                for key, count in counters.items():
                    estimate[key] = centre[dim] * count / total
        ranked = sorted(estimate.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(key, round(share, 4)) for key, share in ranked[:n]]

    def to_list(self) -> list[dict[str, float]]:
        return [dict(counters) for counters in self.counts]

    @classmethod
    def from_list(
        cls, config: FeatureConfig, counts: list[dict[str, float]], capacity: int = 8
    ) -> CategoryNames:
        if len(counts) != config.category_dims:
            raise ValueError(f"{len(counts)} sketches for {config.category_dims} dimensions")
        names = cls(config, capacity)
        names.counts = [dict(counters) for counters in counts]
        return names


#: A user's profile is sampled for segment training on their 1st, 2nd, 4th, 8th and then
#: every 16th event: new users reach the model quickly and heavy users do not dominate it.
SAMPLE_PERIOD: Final = 16


def should_sample(events: int) -> bool:
    """Whether the profile after its ``events``-th event is a training sample.

    >>> [n for n in range(1, 40) if should_sample(n)]
    [1, 2, 4, 8, 16, 32]
    """
    return events % SAMPLE_PERIOD == 0 or (events & (events - 1)) == 0
