"""The Redis key layout (``streams/keys.py``): one namespace, one slot per user's limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.keys import RedisKeys

ids = st.text(st.characters(blacklist_characters="{}", blacklist_categories=["Cs"]), min_size=1, max_size=20)


@given(ids, ids, ids)
def test_every_key_is_in_the_namespace_of_its_app(app_id: str, item: str, user: str) -> None:
    keys = RedisKeys.of_app(app_id)
    named = [
        keys.related(item), keys.cooc_counts, keys.cooc_totals, keys.popular, keys.popular_in(item),
        keys.item_category, keys.segments_checkpoint, keys.forgotten(item), keys.limiter_budget,
        *keys.user_limits(user).all(),
    ]
    assert all(key.startswith(f"{app_id}:") for key in named)
    assert len(set(named)) == len(named), "no two kinds of data share a key"


@given(ids, ids)
def test_a_users_limit_keys_share_one_cluster_slot(app_id: str, user: str) -> None:
    tags = {key.split("{", 1)[1].split("}", 1)[0] for key in RedisKeys.of_app(app_id).user_limits(user).all()}
    assert tags == {user}


def test_a_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="braces"):
        RedisKeys("shop{1}:")
