"""Profile feature vectors: fixed layout, bounded values, stable category mapping, names."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.events import Event, EventType
from models.features import (
    BEHAVIOUR_FEATURES,
    NEUTRAL_PRICE_BAND,
    CategoryNames,
    FeatureConfig,
    category_dim,
    category_key,
    feature_names,
    profile_vector,
)
from models.profile import Profile, ProfileConfig, update

T0 = 1_600_000_000.0
CONFIG = FeatureConfig()
PROFILES = ProfileConfig()


def profile_of(*events: tuple[EventType, str | None, float | None]) -> Profile:
    profile = None
    for n, (kind, category, price) in enumerate(events):
        event = Event(f"e{n}", kind, "u", f"i{n}", T0 + n, category, price)
        profile, _ = update(profile, event, event.ts, PROFILES)
    assert profile is not None
    return profile


def value(vector: list[float], feature: str, config: FeatureConfig = CONFIG) -> float:
    return vector[config.index(feature)]


def category_block(vector: list[float], config: FeatureConfig = CONFIG) -> list[float]:
    return vector[: config.category_dims]


event_kinds = st.sampled_from(list(EventType))
categories = st.one_of(
    st.none(),
    st.sampled_from(["electronics.smartphone", "appliances.kitchen.washer", "4756105", "a.b"]),
    st.text(min_size=1, max_size=12),
)
prices = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e7))
event_lists = st.lists(st.tuples(event_kinds, categories, prices), min_size=1, max_size=40)


@given(event_lists, st.floats(min_value=0, max_value=1e8))
def test_every_vector_has_the_configured_dimension_and_values_in_0_1(
    events: list[tuple[EventType, str | None, float | None]], idle_s: float
) -> None:
    profile = profile_of(*events)
    vector = profile_vector(profile, profile.last_ts + idle_s, CONFIG)
    assert len(vector) == CONFIG.dimension == len(feature_names(CONFIG)) == 16
    assert all(0.0 <= x <= 1.0 + 1e-9 for x in vector)


@given(event_lists)
def test_category_shares_sum_to_one_unless_no_category_is_known(
    events: list[tuple[EventType, str | None, float | None]],
) -> None:
    profile = profile_of(*events)
    total = sum(category_block(profile_vector(profile, profile.last_ts, CONFIG)))
    has_known = any(weight > 0 and name for name, weight in profile.categories.items())
    assert math.isclose(total, 1.0 if has_known else 0.0, abs_tol=1e-9)


def test_dotted_categories_are_reduced_to_their_depth_and_numeric_ids_stay_whole() -> None:
    assert category_key("appliances.kitchen.washer", CONFIG) == "appliances"
    deeper = FeatureConfig(category_depth=2)
    assert category_key("appliances.kitchen.washer", deeper) == "appliances.kitchen"
    assert category_key("2053013553559896355", CONFIG) == "2053013553559896355"


def test_a_pinned_prefix_owns_a_dimension_and_collects_its_subcategories() -> None:
    config = FeatureConfig(pinned_categories=("electronics.smartphone", "appliances"))
    assert feature_names(config)[:3] == ["cat:electronics.smartphone", "cat:appliances", "cat#2"]
    assert category_key("electronics.smartphone.case", config) == "electronics.smartphone"
    assert category_key("electronics.smartphones", config) == "electronics"
    assert category_dim("appliances", config) == 1
    assert all(category_dim(f"x{n}", config) >= 2 for n in range(200))
    profile = profile_of((EventType.VIEW, "appliances.kitchen.washer", None))
    assert profile_vector(profile, profile.last_ts, config)[1] == 1.0


def test_the_category_mapping_is_the_same_in_every_process() -> None:
    """Workers and the trainer are different processes: no salted hash() may leak in."""
    code = "from models.features import *; print(category_dim('4756105', FeatureConfig()))"
    results = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert results == {str(category_dim("4756105", CONFIG))}


def test_an_unknown_category_adds_no_interest_share() -> None:
    profile = profile_of((EventType.VIEW, None, None), (EventType.VIEW, "books", None))
    vector = profile_vector(profile, profile.last_ts, CONFIG)
    assert vector[category_dim("books", CONFIG)] == 1.0


def test_buy_and_cart_ratios_follow_the_funnel() -> None:
    viewer = profile_vector(profile_of((EventType.VIEW, "a", None)), T0, CONFIG)
    carter = profile_vector(
        profile_of((EventType.VIEW, "a", None), (EventType.CLICK, "a", None)), T0 + 1, CONFIG
    )
    buyer = profile_vector(profile_of((EventType.BUY, "a", None)), T0, CONFIG)
    assert value(viewer, "cart_ratio") == value(viewer, "buy_ratio") == 0.0
    assert math.isclose(value(carter, "cart_ratio"), 0.5, rel_tol=1e-3)  # 1 s of decay
    assert value(buyer, "buy_ratio") == 1.0


def test_recency_halves_every_recency_half_life() -> None:
    profile = profile_of((EventType.VIEW, "a", None))
    assert value(profile_vector(profile, profile.last_ts, CONFIG), "recency") == 1.0
    later = profile.last_ts + CONFIG.recency_half_life_s
    assert math.isclose(value(profile_vector(profile, later, CONFIG), "recency"), 0.5)


def test_activity_grows_with_events_and_saturates() -> None:
    config = FeatureConfig(activity_saturation=5.0)
    few = profile_of(*[(EventType.VIEW, "a", None)] * 2)
    many = profile_of(*[(EventType.VIEW, "a", None)] * 30)
    few_activity = value(profile_vector(few, few.last_ts, config), "activity", config)
    assert 0.0 < few_activity < 1.0
    assert value(profile_vector(many, many.last_ts, config), "activity", config) == 1.0


def test_price_band_rises_with_price_and_is_neutral_without_prices() -> None:
    def band(price: float | None) -> float:
        return value(
            profile_vector(profile_of((EventType.VIEW, "a", price)), T0, CONFIG), "price_band"
        )

    assert band(5.0) < band(50.0) < band(5000.0)
    assert band(None) == NEUTRAL_PRICE_BAND
    assert band(1e9) == 1.0


def test_breadth_is_zero_for_one_category_and_grows_with_spread() -> None:
    focused = profile_of(*[(EventType.VIEW, "a", None)] * 4)
    spread = profile_of(*[(EventType.VIEW, c, None) for c in "abcd"])
    assert value(profile_vector(focused, T0, CONFIG), "breadth") == 0.0
    assert value(profile_vector(spread, T0 + 3, CONFIG), "breadth") > 0.4


def test_behaviour_features_follow_the_category_block() -> None:
    assert feature_names(CONFIG)[CONFIG.category_dims :] == list(BEHAVIOUR_FEATURES)
    assert CONFIG.index("activity") == CONFIG.category_dims


def test_config_round_trips_through_a_dict() -> None:
    config = FeatureConfig(pinned_categories=("a", "b"), price_log10_range=(1.0, 3.0))
    assert FeatureConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"category_dims": 0},
        {"category_dims": 2, "pinned_categories": ("a", "b")},
        {"pinned_categories": ("a", "a")},
        {"price_log10_range": (2.0, 1.0)},
        {"breadth_categories": 1},
    ],
)
def test_invalid_configs_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FeatureConfig(**kwargs)  # type: ignore[arg-type]


@given(
    st.lists(st.dictionaries(st.text(min_size=1, max_size=6), st.floats(0.01, 100)), max_size=60)
)
def test_category_names_stay_bounded_per_dimension(batches: list[dict[str, float]]) -> None:
    names = CategoryNames(FeatureConfig(category_dims=3), capacity=4)
    for categories in batches:
        names.add(categories)
    assert all(len(counters) <= 4 for counters in names.counts)


def test_category_names_keep_a_heavy_hitter_among_many_rare_keys() -> None:
    config = FeatureConfig(category_dims=1)
    names = CategoryNames(config, capacity=4)
    for n in range(400):
        names.add({"phones": 1.0} if n % 3 == 0 else {f"rare{n}": 1.0})
    assert names.top([1.0] + [0.0] * 6, 1)[0][0] == "phones"


def test_category_names_describe_a_centre_by_its_dimensions() -> None:
    config = FeatureConfig(pinned_categories=("phones", "tv"))
    names = CategoryNames(config)
    names.add({"phones.case": 1.0})
    names.add({"tv": 1.0})
    centre = [0.8, 0.2] + [0.0] * (config.dimension - 2)
    assert names.top(centre, 2) == [("phones", 0.8), ("tv", 0.2)]
    assert CategoryNames.from_list(config, names.to_list()).top(centre, 2) == names.top(centre, 2)
