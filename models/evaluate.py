"""Next-item quality of the related-items table as it stood at each moment (no peeking).

Protocol. The log is replayed in order through :class:`~models.replay.Replay`. Before
each event is processed, if it is a **target** — the user has at least one earlier
applied event, and the event's item is one the user has *not* touched in any earlier
applied event (the user's next *distinct* item) — every recommender is asked for ``k``
items using only the state built from the earlier events; the event is then processed
and the baselines learn from it. A target counts only if the replay applies the event
(stale and duplicate events are neither targets nor inputs).

* **HR@k** — share of targets whose item is among the ``k`` recommended;
* **MRR@k** — mean of ``1 / rank`` of the item (0 when not among the ``k``);
* **coverage** — distinct items ever recommended / distinct items in the log.

Items the user already touched are excluded from every recommender's list: a target is
new to the user by definition, so recommending a touched item is a sure miss.

Recommenders, all filling their ``k`` slots from the same information:

* ``cooccurrence`` — :func:`~models.cooccurrence.blend_related` of the related lists
  (top-K, scored rows) of the user's last ``query_items`` items, the i-th most recent
  weighted by ``recency ** i``;
* ``coview`` — a naive item-to-item table: raw, undecayed, unbounded counts of items
  co-occurring within a user's last 5 events (repeats included), queried with the
  user's last 3 events' top-20 co-items summed by count (the co-view peer of the
  independent push-precision scorer, ``push_precision.py``);
* ``popularity`` — the overall popular list the workers serve
  (:class:`~models.popularity.ServedPopularity`, the co-occurrence rows' own counts);
* ``category_popularity`` — the served popular list of the category of the user's latest
  item, topped up from the overall list.

The two item-to-item recommenders leave slots empty when their table knows too little;
both fill them from the same ``fallback`` list (:class:`Fallback`), so the comparison
of the two is a comparison of the tables. ``fallback_share`` says how many slots the
fallback filled and ``hr@k_without_fallback`` counts only hits in the table's own slots.

Run it: ``nudgestream evaluate --events FILE --json``.

>>> from models.events import Event, EventType
>>> log = [("u1", "a"), ("u1", "b"), ("u2", "c"), ("u2", "d"), ("u3", "c"), ("u3", "d"),
...        ("u4", "a"), ("u4", "b")]
>>> events = [Event(f"e{n}", EventType.VIEW, u, i, 100.0 + n) for n, (u, i) in enumerate(log)]
>>> report = evaluate(events, EvalConfig(k=1))
>>> report["targets"], {name: r["hr@1"] for name, r in report["recommenders"].items()}
(4, {'cooccurrence': 0.5, 'popularity': 0.25, 'category_popularity': 0.25, 'coview': 0.5})
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final

import orjson

from models.cooccurrence import blend_related
from models.events import Event
from models.logfile import BadRow
from models.profile import Profile
from models.replay import Replay, ReplayConfig, ReplayStats

RECOMMENDERS: Final = ("cooccurrence", "popularity", "category_popularity", "coview")
DEFAULT_K: Final = 10
#: The naive co-view peer, as defined in the module doc.
COVIEW_WINDOW: Final = 5
COVIEW_QUERY: Final = 3
COVIEW_FANOUT: Final = 20


class Fallback(StrEnum):
    """Where the item-to-item recommenders find items for the slots their table leaves."""

    #: The overall popularity list (as the push-precision scorer's co-view peer does).
    OVERALL = "overall"
    #: Popularity in the category of the user's latest item, then overall.
    CATEGORY = "category"


@dataclass(frozen=True, slots=True)
class EvalConfig:
    k: int = DEFAULT_K
    #: The co-occurrence recommender queries the related lists of this many recent items
    #: (the profile keeps at most ``ProfileConfig.max_recent``),
    query_items: int = 10
    #: ... weighting the i-th most recent (i = 0, 1, ...) by ``recency ** i``.
    recency: float = 0.5
    fallback: Fallback = Fallback.OVERALL
    replay: ReplayConfig = field(default_factory=ReplayConfig)


class _Score:
    """HR, MRR and coverage of one recommender."""

    __slots__ = (
        "fallback_slots",
        "hits",
        "own_hits",
        "reciprocal_ranks",
        "recommended",
        "slots",
    )

    def __init__(self) -> None:
        self.hits = 0
        #: Hits among the slots the recommender filled itself (before any fallback).
        self.own_hits = 0
        self.reciprocal_ranks = 0.0
        self.recommended: set[str] = set()
        self.slots = 0
        self.fallback_slots = 0

    def record(self, items: Sequence[str], target: str, fallback: int = 0) -> None:
        """``items`` ranked best first; the last ``fallback`` of them came from the fallback."""
        self.recommended.update(items)
        self.slots += len(items)
        self.fallback_slots += fallback
        if target in items:
            rank = items.index(target) + 1
            self.hits += 1
            self.own_hits += rank <= len(items) - fallback
            self.reciprocal_ranks += 1.0 / rank

    def report(self, k: int, targets: int, catalogue: int) -> dict[str, float]:
        return {
            f"hr@{k}": share(self.hits, targets),
            f"mrr@{k}": share(self.reciprocal_ranks, targets),
            "coverage": share(len(self.recommended), catalogue),
            "fallback_share": share(self.fallback_slots, self.slots),
            f"hr@{k}_without_fallback": share(self.own_hits, targets),
        }


class CoviewBaseline:
    """The naive raw-count co-view table (see the module doc)."""

    def __init__(self) -> None:
        self._pairs: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._recent: defaultdict[str, deque[str]] = defaultdict(
            lambda: deque(maxlen=COVIEW_WINDOW)
        )

    def learn_one(self, event: Event) -> None:
        recent = self._recent[event.user_id]
        for other in recent:
            if other != event.item_id:
                self._pairs[event.item_id][other] += 1
                self._pairs[other][event.item_id] += 1
        recent.append(event.item_id)

    def recommend(self, user_id: str, n: int, exclude: set[str]) -> list[str]:
        candidates: Counter[str] = Counter()
        for item in list(self._recent[user_id])[-COVIEW_QUERY:]:
            for other, count in self._pairs[item].most_common(COVIEW_FANOUT):
                if other not in exclude:
                    candidates[other] += count
        ranked = sorted(candidates.items(), key=lambda kv: (-kv[1], kv[0]))
        return [item for item, _ in ranked[:n]]


class _Evaluation:
    """One pass over a log: the replay, the baselines and the scores."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config
        self.replay = Replay(config.replay)
        self.coview = CoviewBaseline()
        #: Items each user touched in applied events.
        self.touched: dict[str, set[str]] = {}
        self.catalogue: set[str] = set()
        self.scores = {name: _Score() for name in RECOMMENDERS}
        self.targets = 0

    def step(self, event: Event) -> None:
        touched = self.touched.get(event.user_id)
        lists = None
        if touched and event.item_id not in touched:  # a target: see the module doc
            lists = self._recommend(event.user_id, touched)
        result = self.replay.process(event)
        if result is None or not result.applied:
            return
        if lists is not None:
            self.targets += 1
            for name, (items, fallback) in lists.items():
                self.scores[name].record(items, event.item_id, fallback)
        self.coview.learn_one(event)
        self.touched.setdefault(event.user_id, set()).add(event.item_id)
        self.catalogue.add(event.item_id)

    def _recommend(self, user_id: str, touched: set[str]) -> dict[str, tuple[list[str], int]]:
        k = self.config.k
        profile = self.replay.profile(user_id)
        assert profile is not None, "a target's user has an earlier applied event"
        # 2k: enough to top up a list of k whatever it already holds.
        popular = self._popular(2 * k, None, touched)
        category = profile.recent[-1].category or None
        in_category = self._popular(2 * k, category, touched) if category else []
        in_category, _ = _top_up(in_category, popular, 2 * k)
        fallback = in_category if self.config.fallback is Fallback.CATEGORY else popular
        return {
            "cooccurrence": _top_up(self._cooccurrence(profile, touched), fallback, k),
            "popularity": (popular[:k], 0),
            "category_popularity": (in_category[:k], 0),
            "coview": _top_up(self.coview.recommend(user_id, k, touched), fallback, k),
        }

    def _popular(self, n: int, category: str | None, touched: set[str]) -> list[str]:
        """The served popular list (overall or of ``category``) without ``touched``."""
        ranked = self.replay.popularity.top(n + len(touched), category)
        return [item for item, _ in ranked if item not in touched][:n]

    def _cooccurrence(self, profile: Profile, touched: set[str]) -> list[str]:
        cfg = self.config
        latest_first = reversed(profile.recent[-cfg.query_items :])
        sources = [
            (self.replay.related(r.item_id), cfg.recency**age) for age, r in enumerate(latest_first)
        ]
        return blend_related(sources, cfg.k, touched)

    def report(self, stats: ReplayStats) -> dict[str, Any]:
        k = self.config.k
        recommenders = {
            name: score.report(k, self.targets, len(self.catalogue))
            for name, score in self.scores.items()
        }
        hr = {name: values[f"hr@{k}"] for name, values in recommenders.items()}
        return {
            "k": k,
            "targets": self.targets,
            "users": len(self.touched),
            "items": len(self.catalogue),
            "recommenders": recommenders,
            "ratios": {
                "cooccurrence_vs_popularity": _ratio(hr["cooccurrence"], hr["popularity"]),
                "cooccurrence_vs_coview": _ratio(hr["cooccurrence"], hr["coview"]),
            },
            "replay": stats.to_dict(),
            "config": _describe(self.config),
        }


def evaluate(
    events: Iterable[Event | BadRow],
    config: EvalConfig | None = None,
    progress: Callable[[ReplayStats], None] | None = None,
) -> dict[str, Any]:
    """Replay ``events`` and report HR@k, MRR@k and coverage of every recommender.

    The result is JSON-serialisable; ``ratios`` holds cooccurrence HR / popularity HR
    and cooccurrence HR / coview HR (``None`` when the denominator is 0).
    ``progress(stats)`` is called every 10,000 records, as :meth:`Replay.run` does.
    """
    evaluation = _Evaluation(config or EvalConfig())
    for event in evaluation.replay.feed(events, progress):
        evaluation.step(event)
    return evaluation.report(evaluation.replay.stats)


def _top_up(items: list[str], fallback: Sequence[str], k: int) -> tuple[list[str], int]:
    """``items`` filled up to ``k`` from ``fallback``; also how many slots that filled."""
    out = items[:k]
    chosen = set(out)
    for item in fallback:
        if len(out) == k:
            break
        if item not in chosen:
            out.append(item)
            chosen.add(item)
    return out, len(out) - min(len(items), k)


def share(part: float, whole: float) -> float:
    """``part / whole``, 0 when there is no whole (a rate of nothing)."""
    return part / whole if whole else 0.0


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _describe(config: EvalConfig) -> dict[str, Any]:
    described: dict[str, Any] = orjson.loads(
        orjson.dumps(asdict(config), default=str, option=orjson.OPT_NON_STR_KEYS)
    )
    return described
