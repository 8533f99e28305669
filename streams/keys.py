"""The Redis key layout: every key the workers and the tools read or write.

Every key starts with the namespace, ``<app_id>:`` (``NUDGESTREAM_APP_ID``), so several
deployments can share one Redis. ``{<user>}`` is a Redis Cluster hash tag: one user's
limiter keys share a slot, so one script can touch them all. TTLs are refreshed at every
write.

=====================================  ===========  =========================================  ===================
key                                    type         value                                      expires after
=====================================  ===========  =========================================  ===================
``related:<item_id>``                  string       JSON ``[[item_id, score], ...]`` best      7 days
                                                    first
``cooc:counts``                        hash         item_id -> ``"<count>,<as-of ts>"``        never
``cooc:totals``                        hash         partition -> ``"<total>,<as-of ts>"``      never
``popular``                            sorted set   item_id -> log2(count) + ts / half-life    never (top 5,000)
``popular:cat:<category>``             sorted set   the same, per item category                never (top 500)
``item:category``                      hash         item_id -> category                        never
``segments:checkpoint``                string       the segment trainer's checkpoint           never
``forgotten:<request_id>``             string       JSON count of what an erasure removed      1 hour
``rl:{<user>}:pushes``                 sorted set   decision_id -> push time                   ``retention_s``
``rl:{<user>}:items``                  sorted set   item_id -> last push time                  ``item_cooldown_s``
``rl:{<user>}:records``                hash         decision_id -> verdict (JSON)              ``decision_ttl_s``
``rl:{<user>}:decided``                sorted set   decision_id -> check time                  ``decision_ttl_s``
``rl:global``                          hash         tokens, ts (the send budget)               once refilled
``learning:arms``                      hash         ``<trigger>:exposures``,                   never
                                                    ``<trigger>:conversions`` -> count (the
                                                    shared bandit, streams/learning.py)
=====================================  ===========  =========================================  ===================

>>> keys = RedisKeys.of_app("shop")
>>> keys.related("p1"), keys.popular_in("phones"), keys.user_limits("u1").pushes
('shop:related:p1', 'shop:popular:cat:phones', 'shop:rl:{u1}:pushes')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UserKeys:
    """One user's rate-limit keys, in the order ``limiter.lua`` takes them."""

    pushes: str
    items: str
    records: str
    decided: str

    def all(self) -> tuple[str, str, str, str]:
        return self.pushes, self.items, self.records, self.decided


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """The keys of one namespace; ``prefix`` is the namespace with its colon (``"shop:"``)."""

    prefix: str

    def __post_init__(self) -> None:
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError("the key prefix must not contain braces (they are hash tags)")

    @classmethod
    def of_app(cls, app_id: str) -> RedisKeys:
        return cls(f"{app_id}:")

    # -- co-occurrence serving (streams/cooccurrence.py) ------------------------------

    def related(self, item_id: str) -> str:
        return f"{self.prefix}related:{item_id}"

    @property
    def cooc_counts(self) -> str:
        return f"{self.prefix}cooc:counts"

    @property
    def cooc_totals(self) -> str:
        return f"{self.prefix}cooc:totals"

    @property
    def popular(self) -> str:
        return f"{self.prefix}popular"

    def popular_in(self, category: str) -> str:
        return f"{self.prefix}popular:cat:{category}"

    @property
    def item_category(self) -> str:
        return f"{self.prefix}item:category"

    # -- segments and erasure ---------------------------------------------------------

    @property
    def segments_checkpoint(self) -> str:
        return f"{self.prefix}segments:checkpoint"

    def forgotten(self, request_id: str) -> str:
        return f"{self.prefix}forgotten:{request_id}"

    # -- rate limits (streams/limiter.py) ---------------------------------------------

    def user_limits(self, user_id: str) -> UserKeys:
        base = f"{self.prefix}rl:{{{user_id}}}:"
        return UserKeys(base + "pushes", base + "items", base + "records", base + "decided")

    @property
    def limiter_budget(self) -> str:
        return f"{self.prefix}rl:global"

    # -- learning (streams/learning.py) -----------------------------------------------

    @property
    def learning_arms(self) -> str:
        return f"{self.prefix}learning:arms"
