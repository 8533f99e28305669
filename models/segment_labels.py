"""Human labels of segments from their centres: top categories, intent, behaviour tags.

>>> from models.features import FeatureConfig
>>> features = FeatureConfig(category_dims=2)
>>> centre = [0.0] * features.dimension
>>> centre[features.index("cart_ratio")] = 0.2
>>> centre[features.index("price_band")] = 0.8
>>> centre[features.index("recency")] = 1.0
>>> segment_label(centre, [("electronics.smartphone", 0.6), ("tv", 0.1)], features)
'smartphone · high intent · premium'
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Final

from models.features import FeatureConfig

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
