"""The push rate limiter on Redis, shared by every worker: ``models.limits`` made atomic.

:class:`RedisLimiter` runs the rules of :mod:`models.limits` as one Lua script
(``limiter.lua``), so workers and tasks racing on one user cannot both pass a limit.
Verdicts are identical to :class:`models.limits.Limiter` for the same sequence of
requests (``tests/limits_cases.py`` runs on both).

Keys: the ``rl:`` keys of :mod:`streams.keys` (``prefix`` is e.g. ``"nudgestream:"``);
one user's keys share a Redis Cluster slot, so one script can touch them all.

Expiry times are refreshed on every write; entries inside a key are pruned by the
script on each check of the user. The global budget key lives in another slot, so a
decision that passes every per-user rule costs three round trips (check, take a token,
check again with the outcome, which is when the push is recorded); most decisions are
refused by a per-user rule and cost one. :meth:`RedisLimiter.check_many` pipelines each
step for a batch of requests.

**Fails closed.** Any Redis error gives ``suppressed`` / ``limiter_unavailable`` for
the affected requests, never an unchecked push, sets ``nudgestream_redis_up`` to 0 and
counts ``nudgestream_redis_errors_total{operation=...}`` (one per failed command). Short
socket timeouts and a bounded pool bound the wait; one retry on a fresh connection
absorbs the dead pooled connections left by a Redis restart, and the script is loaded
again when a restarted Redis answers ``NOSCRIPT``. See ``docs/RATE_LIMITS.md``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from models.limits import (
    LimitConfig,
    LimitRequest,
    LimitResult,
    SuppressReason,
    Timing,
    Verdict,
    suppressed,
    timing,
)
from streams import metrics
from streams.keys import RedisKeys

log = logging.getLogger(__name__)

SCRIPT: Final = Path(__file__).with_name("limiter.lua").read_bytes()
SCRIPT_SHA: Final = hashlib.sha1(SCRIPT).hexdigest()
UNAVAILABLE: Final = suppressed(SuppressReason.LIMITER_UNAVAILABLE)
#: What the script answers when a decision passes every per-user rule.
NEEDS_BUDGET: Final = ["budget"]

#: Values of the ``operation`` label of ``nudgestream_redis_errors_total``.
OPERATIONS: Final = ("limiter_check", "limiter_budget", "limiter_publish", "limiter_forget")
_ERRORS = {op: metrics.REDIS_ERRORS.labels(operation=op) for op in OPERATIONS}


class LimiterUnavailableError(RuntimeError):
    """Redis could not be reached for an operation that must not silently do nothing."""


class _Budget(StrEnum):
    ASK = "ask"
    GRANTED = "granted"
    REFUSED = "refused"


#: One EVALSHA: (keys, args).
_Call = tuple[Sequence[str], Sequence[str]]


class RedisLimiter:
    """Rate limits shared by all workers, on one Redis (standalone or a cluster node)."""

    def __init__(
        self,
        url: str,
        config: LimitConfig | None = None,
        *,
        prefix: str,
        connect_timeout_s: float = 0.25,
        timeout_s: float = 0.5,
        max_connections: int = 16,
    ) -> None:
        self.keys = RedisKeys(prefix)
        self.config = config or LimitConfig()
        # A bounded pool whose callers wait at most timeout_s for a connection: a burst
        # of tasks shares a few connections (opening hundreds at once costs the event
        # loop more than the connect timeout), and connections stuck on a stalled server
        # cannot make callers wait forever.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            decode_responses=True,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=timeout_s,
            # One retry, on a fresh connection: enough for a pooled connection that died
            # with a restarted server, without doubling the wait again while Redis is down.
            retry=Retry(NoBackoff(), 1),
        )
        self._client = Redis.from_pool(pool)
        c = self.config
        self._rule_args = [
            str(c.max_per_window),
            repr(float(c.min_gap_s)),
            repr(float(c.item_cooldown_s)),
            repr(float(c.retention_s)),
            repr(float(c.decision_ttl_s)),
        ]
        self._up = True

    async def aclose(self) -> None:
        await self._client.aclose()

    async def check(self, request: LimitRequest) -> LimitResult:
        """The verdict for one decision; an allowed verdict records the push."""
        return (await self.check_many([request]))[0]

    async def check_many(self, requests: Sequence[LimitRequest]) -> list[LimitResult]:
        """Verdicts for several decisions, one pipelined round trip per step.

        A user's requests are applied in order, as if checked one after the other: the
        batch runs in rounds, each holding a user at most once (so as many rounds as the
        most requests one user has in the batch). Different users' requests only share
        the global budget; see :meth:`_check_round`.
        """
        results: list[LimitResult] = [UNAVAILABLE] * len(requests)
        for indices in _rounds(requests):
            verdicts = await self._check_round([requests[i] for i in indices])
            for i, verdict in zip(indices, verdicts, strict=True):
                results[i] = verdict
        return results

    async def _check_round(self, requests: Sequence[LimitRequest]) -> list[LimitResult]:
        """Verdicts for requests of distinct users.

        Tokens are taken for every request that passes its user's rules before any is
        recorded; one taken by a request that then loses a race (with another worker, or
        a replay) is given back only after the round, so when the budget is exhausted a
        later request of the round may be refused where one-by-one checks would allow it.
        """
        timings = [timing(r, self.config) for r in requests]
        calls = [self._check_call(r, t, _Budget.ASK) for r, t in zip(requests, timings, strict=True)]
        replies = await self._evalsha_all("limiter_check", calls)
        waiting = [i for i, reply in enumerate(replies) if reply == NEEDS_BUDGET]
        if waiting:
            await self._decide_with_budget(requests, timings, replies, waiting)
        return [_result(reply) for reply in replies]

    async def mark_published(self, user_id: str, decision_id: str, now: float) -> bool:
        """Note that an allowed decision was sent (after the broker acknowledged it).

        False if there is no allowed record for it, or Redis could not be reached
        (counted as a Redis error): a crash before the next check of the same decision
        may then publish it twice, and consumers drop the copy by decision_id.
        """
        keys = self.keys.user_limits(user_id)
        args = ["publish", decision_id, repr(float(now)), repr(float(self.config.decision_ttl_s))]
        [reply] = await self._evalsha_all("limiter_publish", [((keys.records, keys.decided), args)])
        return bool(reply == 1)

    async def forget_user(self, user_id: str) -> int:
        """Delete every limiter key of a user (right to erasure); how many existed.

        Raises :class:`LimiterUnavailableError` if Redis cannot be reached, so an erasure
        request is never reported done when it was not.
        """
        try:
            removed: int = await self._client.delete(*self.keys.user_limits(user_id).all())
        except (RedisError, OSError) as exc:
            self._observe("limiter_forget", [exc])
            raise LimiterUnavailableError(f"cannot erase limiter keys: {exc}") from exc
        self._observe("limiter_forget", [removed])
        return removed

    async def _decide_with_budget(
        self,
        requests: Sequence[LimitRequest],
        timings: Sequence[Timing],
        replies: list[Any],
        waiting: list[int],
    ) -> None:
        """Take a global token for each waiting request, then check it again with it."""
        take_calls = [self._take_call(requests[i]) for i in waiting]
        grants = await self._evalsha_all("limiter_budget", take_calls)
        budgets: dict[int, _Budget] = {}
        for i, grant in zip(waiting, grants, strict=True):
            if isinstance(grant, Exception):
                replies[i] = grant
            else:
                budgets[i] = _Budget.GRANTED if grant == 1 else _Budget.REFUSED
        calls = [self._check_call(requests[i], timings[i], budget) for i, budget in budgets.items()]
        finals = await self._evalsha_all("limiter_check", calls)
        unused = 0
        for (i, budget), final in zip(budgets.items(), finals, strict=True):
            replies[i] = final
            unused += budget is _Budget.GRANTED and _token_unused(final)
        if unused:
            refund = ((self.keys.limiter_budget,), ["refund", str(self.config.global_burst)])
            await self._evalsha_all("limiter_budget", [refund] * unused)

    def _check_call(self, request: LimitRequest, when: Timing, budget: _Budget) -> _Call:
        keys = self.keys.user_limits(request.user_id).all()
        defer_until = "" if when.defer_until is None else repr(when.defer_until)
        args = [
            "check",
            request.decision_id,
            repr(float(request.now)),
            repr(when.window_start),
            defer_until,
            _flag(when.expired),
            _flag(request.transactional),
            budget.value,
            *self._rule_args,
            *request.items,
        ]
        return keys, args

    def _take_call(self, request: LimitRequest) -> _Call:
        c = self.config
        args = [
            "take",
            repr(float(request.now)),
            repr(float(c.global_rate_per_s)),
            str(c.global_burst),
            _flag(request.transactional),
        ]
        return (self.keys.limiter_budget,), args

    async def _evalsha_all(self, operation: str, calls: Sequence[_Call]) -> list[Any]:
        """Run the script once per call in one round trip; failures come back as exceptions."""
        if not calls:
            return []
        try:
            replies = await self._pipeline(calls)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                # A restarted (or flushed) Redis forgot the script; nothing ran for these.
                await self._client.script_load(SCRIPT)
                for i, reply in zip(missing, await self._pipeline([calls[i] for i in missing]), strict=True):
                    replies[i] = reply
        except (RedisError, OSError) as exc:
            replies = [exc] * len(calls)
        self._observe(operation, replies)
        return replies

    async def _pipeline(self, calls: Sequence[_Call]) -> list[Any]:
        # No MULTI: each script is atomic on its own, and a transaction could not span
        # the hash slots of several users in a cluster.
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    def _observe(self, operation: str, replies: Sequence[Any]) -> None:
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if errors:
            _ERRORS[operation].inc(len(errors))
            if self._up:
                log.warning("rate limiter: Redis failed (%s), failing closed", errors[0])
        elif not self._up:
            log.info("rate limiter: Redis answers again")
        self._up = not errors
        metrics.REDIS_UP.set(1 if self._up else 0)


def _rounds(requests: Sequence[LimitRequest]) -> list[list[int]]:
    """Indices of the requests split so that each round holds a user at most once."""
    rounds: list[list[int]] = []
    seen: Counter[str] = Counter()
    for i, request in enumerate(requests):
        k = seen[request.user_id]
        seen[request.user_id] += 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(i)
    return rounds


def _token_unused(final: Any) -> bool:
    """Whether a check given a token did not use it: another worker changed the user's
    state (or checked the same decision) since the first check. After an error the push
    may have been recorded, so the token counts as used."""
    if not isinstance(final, list):
        return False
    verdict: str = final[0]
    replayed: str = final[3]
    return verdict != Verdict.ALLOWED or replayed == "1"


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _result(reply: Any) -> LimitResult:
    """A script reply (verdict, reason, defer_until, replayed, published, items...)."""
    if isinstance(reply, Exception):
        return UNAVAILABLE
    verdict, reason, defer_until, replayed, published, *items = reply
    return LimitResult(
        Verdict(verdict),
        SuppressReason(reason) if reason else None,
        tuple(items),
        float(defer_until) if defer_until else None,
        replayed=replayed == "1",
        published=published == "1",
    )
