"""Reliability on real Kafka and Redis: bad input, kill -9, state recovery, rebalance.

Each test gets a deployment of its own (application id, topic prefix, data folders), so
consumer groups, changelogs and metrics never mix between tests. Expected state always
comes from an offline run of the very same events through the transport-free core
(:class:`models.replay.Replay`), never from numbers copied from a run.

The helpers here are shared by ``test_reliability_outages.py`` and ``test_security.py``.
Figures measured by these tests are recorded in ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import math
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from load import services
from load.generator import (
    EXPECTED_REJECTION,
    GeneratedEvent,
    GeneratorConfig,
    MalformedKind,
    generate_events,
    make_malformed,
)
from load.producer import produce as produce_paced
from models.cooccurrence import Row
from models.events import Event, EventType, Rejection, decode_event
from models.profile import Profile, event_fingerprint
from models.replay import Replay
from streams.admin import create_topics
from streams.pairs import decode_pairs
from streams.topics import Topics
from tests.integration.conftest import (
    Deployment,
    WorkerProcess,
    decode_json,
    delete_topics,
    produce,
    read_topic,
)

pytestmark = pytest.mark.integration

#: Fewer categories than a profile keeps (16): no eviction, so category weights do not
#: depend on the order in which one user's view/click/buy topics are consumed.
CATEGORIES = (
    "electronics.smartphone",
    "electronics.audio.headphone",
    "computers.notebook",
    "appliances.kitchen.washer",
    "furniture.bedroom.bed",
    "apparel.shoes",
    "kids.toys",
    "sport.bicycle",
    "construction.tools.drill",
    "accessories.bag",
)
#: Float tolerance for decayed sums accumulated in a different order.
REL_TOL = 1e-9


# --- deployments -------------------------------------------------------------------------


def new_deployment(
    local: services.LocalServices, state_dir: Path, **extra_env: str
) -> Deployment:
    """An isolated deployment (own app id and topic prefix) with its topics created."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "NUDGESTREAM_KAFKA_BOOTSTRAP": local.kafka_bootstrap,
        "NUDGESTREAM_REDIS_URL": local.redis_url,
        "NUDGESTREAM_APP_ID": f"rel-{tag}",
        "NUDGESTREAM_TOPIC_PREFIX": f"rel-{tag}.",
        "NUDGESTREAM_PARTITIONS": "4",
        "NUDGESTREAM_LOG_LEVEL": "info",
        **extra_env,
    }
    deployment = Deployment(env, state_dir)
    asyncio.run(create_topics(deployment.settings))
    return deployment


async def forget_redis_keys(deployment: Deployment) -> None:
    """Delete what the deployment's workers wrote to Redis (related items, counts...)."""
    settings = deployment.settings
    client = aioredis.from_url(settings.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{settings.app_id}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def fresh(local_services: services.LocalServices, tmp_path: Path) -> Iterator[Deployment]:
    deployment = new_deployment(local_services, tmp_path)
    yield deployment
    deployment.stop_all()
    asyncio.run(forget_redis_keys(deployment))
    asyncio.run(delete_topics(deployment.settings))


def restart(deployment: Deployment, worker: WorkerProcess, **env: str) -> WorkerProcess:
    """A new worker process on the stopped (or killed) worker's data folder and port."""
    return deployment.start_worker(
        NUDGESTREAM_DATA_DIR=worker.env["NUDGESTREAM_DATA_DIR"],
        NUDGESTREAM_WEB_PORT=str(worker.port),
        **env,
    )


# --- event streams -----------------------------------------------------------------------


def synthetic_stream(
    count: int, *, users: int, seed: int, views_only: bool = False, user_prefix: str = "u"
) -> list[Event]:
    """``count`` valid events of the load generator (decoded), in event-time order."""
    config = GeneratorConfig(
        users=users,
        items=max(len(CATEGORIES), users // 4),
        categories=CATEGORIES,
        concurrent_sessions=max(1, min(200, users // 4)),
        click_probability=0.0 if views_only else 0.15,
        malformed_share=0.0,
        seed=seed,
    )
    events = []
    for record in itertools.islice(generate_events(config), count):
        event = decode_event(record.value, now=math.inf, max_future_skew_s=math.inf)
        assert isinstance(event, Event)
        events.append(replace(event, user_id=user_prefix + event.user_id.removeprefix("u")))
    return events


def as_records(events: Iterable[Event], topics: Topics) -> list[GeneratedEvent]:
    """Messages as a well-behaved upstream sends them: on the type's topic, keyed by user."""
    return [
        GeneratedEvent(topics.event(e.type), e.user_id.encode(), e.to_bytes()) for e in events
    ]


async def send(
    deployment: Deployment, events: Iterable[Event], rate: float | None = None
) -> None:
    """Send events (paced at ``rate``/s, or as fast as possible); every one acknowledged."""
    records = as_records(events, deployment.settings.topics)
    # The deployment's security settings (SASL in test_security.py), bootstrap apart.
    security = deployment.settings.aiokafka_kwargs()
    bootstrap = security.pop("bootstrap_servers")
    summary = await produce_paced(records, bootstrap=bootstrap, rate=rate, producer_options=security)
    assert summary.errors == 0 and summary.sent == len(records)


def offline(events: Iterable[Event]) -> Replay:
    """The state a single worker that never failed would reach (see models.replay)."""
    replay = Replay()
    for event in events:
        replay.process(event)
    return replay


# --- reading state back ------------------------------------------------------------------


def changelog(deployment: Deployment, table: str) -> str:
    return f"{deployment.settings.app_id}-{table}-changelog"


async def latest_in(
    deployment: Deployment,
    topic: str,
    done: Callable[[dict[bytes, bytes | None]], bool],
    timeout_s: float = 90.0,
) -> dict[bytes, bytes | None]:
    """Follow a changelog with the deployment's own client settings (SASL included),
    keeping the latest value per key, until ``done`` or the timeout."""
    consumer = AIOKafkaConsumer(**deployment.settings.aiokafka_kwargs(), enable_auto_commit=False)
    await consumer.start()
    latest: dict[bytes, bytes | None] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(deployment.settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while not done(latest) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                latest.update((r.key, r.value) for r in records if r.key is not None)
    finally:
        await consumer.stop()
    return latest


async def profiles_in_changelog(
    deployment: Deployment, expected_events: dict[str, int], timeout_s: float = 90.0
) -> dict[str, Profile]:
    """Latest profile per user once every user has at least the expected event count.

    Event counts only grow, so stopping at "at least" never hides a double count: a user
    who got an event twice shows a larger count, not a smaller one.
    """
    wanted = {user.encode(): n for user, n in expected_events.items()}

    def complete(latest: dict[bytes, bytes | None]) -> bool:
        return all(_events(latest.get(user)) >= n for user, n in wanted.items())

    latest = await latest_in(deployment, changelog(deployment, "profiles"), complete, timeout_s)
    return {
        key.decode(): Profile.from_bytes(value)
        for key, value in latest.items()
        if value is not None and key in wanted
    }


def _events(raw: bytes | None) -> int:
    return Profile.from_bytes(raw).events if raw is not None else 0


@dataclass(frozen=True)
class ProfileCheck:
    """How the profiles a deployment kept compare with the offline run."""

    users: int
    events_expected: int
    events_found: int
    #: Users with fewer events than expected (an event was lost) ...
    lost: dict[str, int]
    #: ... and with more (an event was counted twice).
    doubled: dict[str, int]
    #: Users whose counts match but whose category weights differ.
    weights_differ: list[str]


def compare_profiles(found: dict[str, Profile], expected: dict[str, Profile]) -> ProfileCheck:
    lost, doubled, weights_differ = {}, {}, []
    for user, want in expected.items():
        got = found.get(user)
        events = got.events if got is not None else 0
        if events < want.events:
            lost[user] = want.events - events
        elif events > want.events:
            doubled[user] = events - want.events
        elif got is not None and not _same_weights(got, want):
            weights_differ.append(user)
    return ProfileCheck(
        users=len(expected),
        events_expected=sum(p.events for p in expected.values()),
        events_found=sum(found[u].events for u in expected if u in found),
        lost=lost,
        doubled=doubled,
        weights_differ=weights_differ,
    )


def state_of(profile: Profile) -> Profile:
    """The profile without its source positions (a worker's name its partitions, an
    offline replay's its log: they differ by design)."""
    return dataclasses.replace(profile, positions={})


def _same_weights(got: Profile, want: Profile) -> bool:
    """Order-independent parts of a profile: decayed weights, counts, time span."""
    return (
        got.categories.keys() == want.categories.keys()
        and all(math.isclose(got.categories[c], w, rel_tol=REL_TOL) for c, w in want.categories.items())
        and all(
            math.isclose(getattr(got, name), getattr(want, name), rel_tol=REL_TOL, abs_tol=1e-12)
            for name in ("activity", "clicks", "buys", "price_log_sum", "price_weight")
        )
        and (got.first_ts, got.last_ts) == (want.first_ts, want.last_ts)
    )


def series(metrics: dict[str, float], name: str) -> float:
    """The sum of a metric over its labels."""
    return sum(v for k, v in metrics.items() if k.split("{")[0] == name)


def consumed(metrics: dict[str, float]) -> float:
    return series(metrics, "nudgestream_events_consumed_total")


async def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2
) -> float:
    """Poll ``condition`` (off the event loop) until true; return the seconds it took."""
    started = time.monotonic()
    while not await asyncio.to_thread(condition):
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval_s)
    return time.monotonic() - started


def report(name: str, **figures: object) -> None:
    """Print a figure line (run pytest with -s to see it; docs/RELIABILITY.md quotes them)."""
    print(f"\n[reliability] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# --- 1. bad input ------------------------------------------------------------------------

#: Malformed messages per generator kind (13 kinds).
PER_KIND = 620
#: Inputs hypothesis generates; the ones decode_event rejects are sent (nearly all).
HYPOTHESIS_EXAMPLES = 2500

_json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=40)
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=15,
)
#: Objects shaped like events whose fields are drawn from anything JSON can hold.
_event_like = st.fixed_dictionaries(
    {"schema": st.sampled_from([1, 2, "1", None, 1.0])},
    optional={
        name: st.one_of(_json_scalars, st.sampled_from(["view", "click", "buy"]))
        for name in ("event_id", "type", "user_id", "item_id", "ts", "price", "quantity",
                     "category", "session_id", "tz")
    },
)
_garbage_value = st.one_of(
    st.binary(max_size=600),
    _json_values.map(orjson.dumps),
    _event_like.map(orjson.dumps),
    st.text(max_size=100).map(lambda text: text.encode("utf-16")),
    st.binary(min_size=4097, max_size=6000),
)
_garbage_message = st.tuples(
    st.sampled_from(list(EventType)), st.none() | st.binary(max_size=40), _garbage_value
)


def hypothesis_garbage(count: int) -> list[tuple[EventType, bytes | None, bytes]]:
    """Inputs drawn by hypothesis (edge cases included) that the decoder rejects."""
    drawn: list[tuple[EventType, bytes | None, bytes]] = []

    @settings(max_examples=count, database=None, phases=[Phase.generate])
    @given(_garbage_message)
    def collect(message: tuple[EventType, bytes | None, bytes]) -> None:
        event_type, _, value = message
        if isinstance(decode_event(value, now=time.time(), expected_type=event_type), Rejection):
            drawn.append(message)

    collect()
    return drawn


def generator_malformed(per_kind: int) -> list[tuple[GeneratedEvent, MalformedKind]]:
    """Every kind of breakage the load generator knows, modelled on real-looking events."""
    rng = random.Random(3)
    bases = synthetic_stream(per_kind, users=200, seed=3)
    return [
        (make_malformed(kind, base, f"{base.event_id}-bad-{kind}", rng), kind)
        for kind in MalformedKind
        for base in bases
    ]


async def test_ten_thousand_malformed_inputs_are_dead_lettered_and_the_worker_keeps_going(
    fresh: Deployment,
) -> None:
    settings_ = fresh.settings
    topics, bootstrap = settings_.topics, settings_.kafka_bootstrap[0]
    worker = fresh.start_worker()
    worker.wait_ready()

    from_generator = generator_malformed(PER_KIND)
    garbage = hypothesis_garbage(HYPOTHESIS_EXAMPLES)
    messages: list[tuple[str, bytes | None, bytes | None]] = [
        (topics.prefix + record.topic, record.key, record.value) for record, _ in from_generator
    ]
    messages += [(topics.event(t), key, value) for t, key, value in garbage]
    # A tombstone and an empty message: no value at all is malformed too.
    messages += [(topics.event(EventType.VIEW), b"k", None), (topics.event(EventType.BUY), None, b"")]
    assert len(messages) >= 10_000
    claimed = {
        (topics.prefix + record.topic, record.value): EXPECTED_REJECTION[kind]
        for record, kind in from_generator
    }

    started = time.monotonic()
    await produce(bootstrap, messages)
    dead = await read_topic(bootstrap, topics.dlq, until=len(messages), timeout_s=120)
    elapsed = time.monotonic() - started
    records = [decode_json(value) for _, value in dead]

    def original(record: dict[str, object]) -> tuple[str, bytes | None, bytes | None]:
        key, value = record["key_b64"], record["value_b64"]
        return (
            str(record["topic"]),
            None if key is None else base64.b64decode(str(key)),
            None if value is None else base64.b64decode(str(value)),
        )

    # Every input is in the DLQ exactly once, byte for byte.
    assert Counter(original(r) for r in records) == Counter(messages)
    type_of = {topic: t for t, topic in topics.events.items()}
    for record in records:
        topic, _, value = original(record)
        # The reason is the decoder's own verdict on those bytes, at the worker's clock ...
        verdict = decode_event(
            value or b"",
            now=float(record["rejected_at"]),  # type: ignore[arg-type]
            expected_type=type_of[topic],
            max_bytes=settings_.max_event_bytes,
            max_future_skew_s=settings_.max_future_skew_s,
        )
        assert isinstance(verdict, Rejection) and record["reason"] == verdict.reason, record
        # ... and what the generator promises for its kinds of breakage.
        if value is not None and (topic, value) in claimed:
            assert record["reason"] == claimed[(topic, value)], record

    # The worker is alive, ready, counted every rejection by reason, and still processes.
    metrics = worker.metrics()
    rejected = {
        k.split('"')[1]: v for k, v in metrics.items()
        if k.startswith("nudgestream_events_rejected_total{")
    }
    assert sum(rejected.values()) == len(messages)
    assert {r: n for r, n in rejected.items() if n} == Counter(str(r["reason"]) for r in records)
    valid = synthetic_stream(300, users=40, seed=4, user_prefix="after-garbage-")
    await send(fresh, valid)
    expected = offline(valid).profiles
    found = await profiles_in_changelog(fresh, {u: p.events for u, p in expected.items()})
    check = compare_profiles(found, expected)
    assert not (check.lost or check.doubled or check.weights_differ), check
    assert worker.process is not None and worker.process.poll() is None
    worker.wait_ready(timeout_s=5)
    assert "crashed" not in worker.log_path.read_text(errors="replace").lower()
    report(
        "bad input",
        malformed=len(messages),
        from_generator=len(from_generator),
        from_hypothesis=len(garbage),
        reasons=dict(sorted(rejected.items())),
        seconds_to_dead_letter_all=round(elapsed, 1),
    )


# --- 2. kill -9 mid-stream -----------------------------------------------------------------

CRASH_EVENTS = 20_000
CRASH_USERS = 1_000
#: Faust's defaults (60 s) make a killed worker's partitions wait a minute for its
#: replacement; the test shortens the wait, which changes nothing else (docs/RELIABILITY.md).
FAST_FAILOVER = {"BROKER_SESSION_TIMEOUT": "10", "BROKER_HEARTBEAT_INTERVAL": "1"}


async def end_and_committed(
    deployment: Deployment, topic: str
) -> tuple[dict[int, int], dict[int, int]]:
    """The topic's end offsets and the deployment group's committed offsets, by partition."""
    settings_ = deployment.settings
    consumer = AIOKafkaConsumer(
        **settings_.aiokafka_kwargs(), group_id=settings_.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings_.partitions)]
        ends = await consumer.end_offsets(tps)
        committed = {tp.partition: await consumer.committed(tp) or 0 for tp in tps}
        return {tp.partition: ends[tp] for tp in tps}, committed
    finally:
        await consumer.stop()


async def all_committed(deployment: Deployment, topic: str, timeout_s: float = 60.0) -> None:
    """Wait until the group has processed and committed every record of ``topic``."""
    deadline = time.monotonic() + timeout_s
    previous: tuple[dict[int, int], dict[int, int]] | None = None
    while time.monotonic() < deadline:
        ends, committed = await end_and_committed(deployment, topic)
        # A transaction's commit marker takes an offset of its own after the last record.
        caught_up = all(ends[p] - committed[p] in (0, 1) for p in ends)
        if caught_up and previous == (ends, committed):  # and nothing new since the last look
            return
        previous = ends, committed
        await asyncio.sleep(1.0)
    raise AssertionError(f"{topic} not fully processed in {timeout_s:.0f}s: {ends} vs {committed}")


async def read_whole_topic(deployment: Deployment, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record now in the topic, read up to the end offsets seen at the start."""
    settings_ = deployment.settings
    consumer = AIOKafkaConsumer(**settings_.aiokafka_kwargs(), enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(settings_.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = set(tps)
        while remaining:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return records


#: Occurrence weights (decayed to a common time) by item.
Occurrences = defaultdict[str, float]


def decayed(weight: float, ts: float, at: float) -> float:
    return weight * math.exp2(-(at - ts) / Replay().config.cooc.half_life_s)


def shortfall(wanted: Mapping[str, float], had: Mapping[str, float]) -> float:
    """How much of ``wanted`` is missing from ``had``."""
    return sum(max(0.0, weight - had.get(key, 0.0)) for key, weight in wanted.items())


def occurrences_in_messages(records: Iterable[ConsumerRecord[bytes, bytes]], at: float) -> Occurrences:
    """Occurrence weight that pair messages carry, by item (a replay may send some twice)."""
    found: Occurrences = defaultdict(float)
    for record in records:
        assert record.value is not None
        for entry in decode_pairs(record.value):
            for inc in entry.increments:
                if inc.occurrences:
                    found[inc.item_id] += decayed(inc.occurrences, inc.ts, at)
    return found


async def cooc_rows_in_changelog(
    deployment: Deployment, wanted: Mapping[str, float], at: float
) -> dict[str, float]:
    """The items' occurrence counts (decayed to ``at``) once they match ``wanted`` (or the timeout)."""
    half_life = Replay().config.cooc.half_life_s

    def counts(latest: dict[bytes, bytes | None]) -> dict[str, float]:
        raws = {item: latest.get(item.encode()) for item in wanted}
        return {item: Row.from_bytes(raw).at(at, half_life) for item, raw in raws.items() if raw}

    def matches(latest: dict[bytes, bytes | None]) -> bool:
        return not differing(counts(latest), wanted)

    return counts(await latest_in(deployment, changelog(deployment, "cooc"), matches))


def differing(found: Mapping[str, float], wanted: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """Items whose count differs from the one wanted: item -> (found, wanted)."""
    return {
        item: (found.get(item, 0.0), want)
        for item, want in wanted.items()
        if not math.isclose(found.get(item, 0.0), want, rel_tol=1e-6, abs_tol=1e-6)
    }


@pytest.mark.slow
async def test_a_worker_killed_mid_stream_resumes_without_losing_or_double_counting(
    fresh: Deployment,
) -> None:
    # Views only: one topic per user keeps each user's order, so the worker's profiles
    # must equal the offline ones exactly, not only in their order-independent parts.
    events = synthetic_stream(CRASH_EVENTS, users=CRASH_USERS, seed=11, views_only=True)
    expected = offline(events)
    first = fresh.start_worker(**FAST_FAILOVER)
    first.wait_ready()
    sending = asyncio.create_task(send(fresh, events))
    seen: list[float] = [0.0]

    def partly_processed() -> bool:
        seen.append(consumed(first.metrics()))
        return seen[-1] >= CRASH_EVENTS * 0.4

    await wait_for(partly_processed, timeout_s=60, what="the worker to process 40% of the stream")
    first.kill()
    killed_at = time.monotonic()
    second = restart(fresh, first, **FAST_FAILOVER)
    second.wait_ready(timeout_s=120)
    ready_after_s = time.monotonic() - killed_at
    await sending

    # Profiles: every event exactly once.
    found = await profiles_in_changelog(fresh, {u: p.events for u, p in expected.profiles.items()})
    check = compare_profiles(found, expected.profiles)
    assert not check.lost, f"events lost: {check}"
    assert not check.doubled, f"events counted twice: {check}"
    assert check.events_found == CRASH_EVENTS
    # Same events in the same order per user: the very same profile, field by field.
    assert [u for u, p in expected.profiles.items() if state_of(found[u]) != state_of(p)] == []

    # Co-occurrence: every event's increments are in the rows exactly once. A replay
    # re-sends the pairs of events whose profiles had not landed; the rows, which keep
    # the source positions they hold, apply them once.
    at = max(e.ts for e in events)
    half_life = Replay().config.cooc.half_life_s
    want = {item: row.at(at, half_life) for item, row in expected.rows.items()}
    await all_committed(fresh, fresh.settings.topics.cooc_pairs)
    sent = occurrences_in_messages(await read_whole_topic(fresh, fresh.settings.topics.cooc_pairs), at)
    never_sent, sent_twice = shortfall(want, sent), shortfall(sent, want)
    assert never_sent <= 1e-6 * sum(want.values()), f"pair increments never sent: {never_sent}"
    rows = await cooc_rows_in_changelog(fresh, want, at)
    assert differing(rows, want) == {}

    metrics = second.metrics()
    report(
        "kill -9",
        events=CRASH_EVENTS,
        users=CRASH_USERS,
        processed_before_kill=f">={int(seen[-1])}",
        found=check.events_found,
        lost=sum(check.lost.values()),
        doubled=sum(check.doubled.values()),
        replayed_and_skipped_as_duplicates=int(metrics["nudgestream_events_duplicate_total"]),
        processed_after_restart=int(consumed(metrics)),
        ready_after_kill_s=round(ready_after_s, 1),
        cooc_occurrences_expected=round(sum(want.values()), 1),
        cooc_occurrences_never_sent=round(never_sent, 1),
        cooc_occurrences_sent_twice=round(sent_twice, 1),
        cooc_occurrences_found=round(sum(rows.values()), 1),
    )


# --- 3. state recovery ---------------------------------------------------------------------

RECOVERY_USERS = 10_000
#: Users who get a follow-up event after each restart (their counts must continue).
FOLLOW_UP_USERS = 1_000


def one_view_each(users: Iterable[str], round_: int, ts: float) -> list[Event]:
    return [
        Event(f"{user}-r{round_}", EventType.VIEW, user, f"item-{n % 500}", ts + round_, CATEGORIES[n % len(CATEGORIES)])
        for n, user in enumerate(users)
    ]


def timed_start(deployment: Deployment, **env: str) -> tuple[WorkerProcess, float]:
    """A started worker and the seconds from its start to ready (restore included)."""
    started = time.monotonic()
    worker = deployment.start_worker(**env)
    worker.wait_ready(timeout_s=180)
    return worker, time.monotonic() - started


def restore_seconds(worker: WorkerProcess) -> float:
    """How long the worker's last table restore took, from the timestamps of its log."""
    lines = worker.log_path.read_text(errors="replace").splitlines()
    began = [line for line in lines if "Highwater for active changelog partitions" in line]
    ended = [line for line in lines if "Recovery]: Restore complete!" in line]
    assert began and ended, "no table restore in the worker's log"
    return (_log_time(ended[-1]) - _log_time(began[-1])).total_seconds()


def _log_time(line: str) -> datetime:
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")


@pytest.mark.slow
async def test_tables_are_restored_from_their_changelogs_in_memory_and_in_rocksdb(
    fresh: Deployment,
) -> None:
    users = [f"recovering-{n}" for n in range(RECOVERY_USERS)]
    followed = users[:: RECOVERY_USERS // FOLLOW_UP_USERS]
    ts = time.time() - 3600
    builder, empty_start_s = timed_start(fresh)
    await send(fresh, one_view_each(users, 1, ts))
    await profiles_in_changelog(fresh, dict.fromkeys(users, 1))
    await all_committed(fresh, fresh.settings.topics.cooc_pairs)
    builder.stop()
    changelog_records = {
        table: sum((await end_and_committed(fresh, changelog(fresh, table)))[0].values())
        for table in ("profiles", "cooc")
    }

    async def restored(worker: WorkerProcess, round_: int) -> None:
        """The whole table is back, and followed users' counts go on from it."""
        await wait_for(
            lambda: worker.metrics().get("nudgestream_profiles") == RECOVERY_USERS,
            timeout_s=30, what="the profiles gauge to count every restored user",
        )
        await send(fresh, one_view_each(followed, round_, ts))
        found = await profiles_in_changelog(fresh, dict.fromkeys(followed, round_))
        assert {u: found[u].events for u in followed} == dict.fromkeys(followed, round_)

    in_memory, memory_s = timed_start(fresh, NUDGESTREAM_STORE="memory")
    await restored(in_memory, 2)
    in_memory.stop()
    rocks = {"NUDGESTREAM_STORE": "rocksdb", "NUDGESTREAM_DATA_DIR": str(fresh.state_dir / "rocksdb")}
    rocksdb_cold, rocksdb_cold_s = timed_start(fresh, **rocks, **FAST_FAILOVER)
    await restored(rocksdb_cold, 3)
    rocksdb_cold.kill()  # no clean shutdown: the local RocksDB files must still be usable
    rocksdb_warm, rocksdb_warm_s = timed_start(fresh, **rocks, **FAST_FAILOVER)
    await restored(rocksdb_warm, 4)
    report(
        "recovery",
        users=RECOVERY_USERS,
        changelog_records=changelog_records,
        ready_s_empty_tables=round(empty_start_s, 1),
        ready_s_memory=round(memory_s, 1),
        restore_s_memory=restore_seconds(in_memory),
        ready_s_rocksdb_empty_dir=round(rocksdb_cold_s, 1),
        restore_s_rocksdb_empty_dir=restore_seconds(rocksdb_cold),
        ready_s_rocksdb_after_kill=round(rocksdb_warm_s, 1),
        restore_s_rocksdb_after_kill=restore_seconds(rocksdb_warm),
    )


# --- 4. rebalance ---------------------------------------------------------------------------

REBALANCE_EVENTS = 6_000
REBALANCE_USERS = 400


@pytest.mark.slow
async def test_a_worker_leaving_and_rejoining_hands_over_partitions_with_their_state(
    fresh: Deployment,
) -> None:
    events = synthetic_stream(REBALANCE_EVENTS, users=REBALANCE_USERS, seed=21, user_prefix="moving-")
    parts = [events[: REBALANCE_EVENTS // 3], events[REBALANCE_EVENTS // 3 : 2 * REBALANCE_EVENTS // 3],
             events[2 * REBALANCE_EVENTS // 3 :]]
    stays = fresh.start_worker()
    leaves = fresh.start_worker()
    stays.wait_ready()
    leaves.wait_ready()

    async def processed_up_to(count: int) -> None:
        """Profiles equal the offline run of the first ``count`` events (all users)."""
        expected = offline(events[:count]).profiles
        found = await profiles_in_changelog(fresh, {u: p.events for u, p in expected.items()})
        check = compare_profiles(found, expected)
        assert not (check.lost or check.doubled or check.weights_differ), check

    await send(fresh, parts[0])
    await processed_up_to(len(parts[0]))
    assert consumed(stays.metrics()) > 0 and consumed(leaves.metrics()) > 0, "both own partitions"

    # One worker leaves: the other takes over its partitions and restores their state.
    before = stays.metrics()
    left_at = time.monotonic()
    leaves.stop()
    # It stopped by itself, not killed once the grace period ran out: a worker that hangs
    # while stopping hands its partitions over only after the session timeout.
    assert leaves.process is not None and leaves.process.returncode != -signal.SIGKILL, leaves.log_tail()
    await send(fresh, parts[1])
    await processed_up_to(2 * REBALANCE_EVENTS // 3)
    handover_s = time.monotonic() - left_at
    after = stays.metrics()
    # Every event of the second part, for every user, went through the remaining worker:
    # the counts above continue from profiles it restored, not from scratch.
    assert consumed(after) - consumed(before) == len(parts[1])

    # It comes back, takes some partitions again, and state stays consistent.
    back = restart(fresh, leaves)
    back.wait_ready()
    await send(fresh, parts[2])
    await processed_up_to(REBALANCE_EVENTS)
    assert consumed(back.metrics()) > 0, "the returning worker owns partitions again"
    report(
        "rebalance",
        events=REBALANCE_EVENTS,
        users=REBALANCE_USERS,
        leave_to_second_part_processed_s=round(handover_s, 1),
        duplicates_skipped_when_leaving=duplicates(after) - duplicates(before),
        duplicates_skipped_when_returning=duplicates(back.metrics()) + duplicates(stays.metrics()) - duplicates(after),
        messages_fetched_again=int(sum(series(w.metrics(), "nudgestream_messages_refetched_total") for w in (stays, back))),
        batches_released=int(sum(series(w.metrics(), "nudgestream_batches_released_total") for w in (stays, back))),
    )


def duplicates(metrics: dict[str, float]) -> int:
    return int(metrics["nudgestream_events_duplicate_total"])


#: More events of one user than the profile's event-id window (32) holds.
BURST = 100


async def test_a_crash_right_after_a_burst_does_not_count_the_burst_twice(
    fresh: Deployment,
) -> None:
    """A crashed worker's successor replays what it processed since its last commit.

    Here that is a burst of one user's events longer than the profile's event-id window,
    so the replay must be recognised by more than the last event ids.
    """
    ts = time.time() - 600
    burst = [Event(f"hot-{n}", EventType.VIEW, "hot-user", f"item-{n}", ts + n, "kids.toys") for n in range(BURST)]
    # A long commit interval makes sure the crash falls after the burst's processing and
    # before its offsets are committed (with the default 2.8 s it usually, not always, does).
    worker = fresh.start_worker(**FAST_FAILOVER, BROKER_COMMIT_INTERVAL="60")
    worker.wait_ready()
    await send(fresh, burst)
    await profiles_in_changelog(fresh, {"hot-user": BURST})
    worker.kill()
    again = restart(fresh, worker, **FAST_FAILOVER)
    again.wait_ready()
    last = Event("hot-last", EventType.VIEW, "hot-user", "item-last", ts + BURST, "kids.toys")
    await send(fresh, [last])

    def has_last(latest: dict[bytes, bytes | None]) -> bool:
        raw = latest.get(b"hot-user")
        return raw is not None and event_fingerprint(last.event_id) in Profile.from_bytes(raw).seen

    latest = await latest_in(fresh, changelog(fresh, "profiles"), has_last)
    assert has_last(latest)
    found = Profile.from_bytes(latest[b"hot-user"] or b"")
    assert found.events == BURST + 1
    assert state_of(found) == state_of(offline([*burst, last]).profiles["hot-user"])


#: Events a restarted worker finds already applied (and must skip) after a kill -9.
REPLAYED_EVENTS = 5_000
#: Faust's default commit interval; the lag gauge is refreshed as often.
COMMIT_INTERVAL_S = 2.8
#: Commit intervals after ready within which a restarted worker's committed lag reaches 0.
CATCH_UP_INTERVALS = 5


async def committed_lag(deployment: Deployment, topic: str) -> int:
    ends, committed = await end_and_committed(deployment, topic)
    return sum(ends[p] - committed[p] for p in ends)


async def test_after_a_kill_replayed_duplicates_are_committed_at_once_and_the_lag_gauge_follows(
    fresh: Deployment,
) -> None:
    """A restarted worker that finds every event applied catches up in a few commits.

    The first worker applies every event but commits none (a long commit interval) and is
    killed once its pairs are in the rows too: its successor replays it all and skips it
    as duplicates. Skipping is quick, so the group's committed lag must reach 0 within a
    few commit intervals (``CATCH_UP_INTERVALS``) of the worker being ready, and the lag gauge must follow it
    within two more. (Before the fix the replay crawled: the replayed pair messages
    rewrote every row they touched, and Faust held every stream back while those writes
    filled its producer buffer.)
    """
    events = synthetic_stream(REPLAYED_EVENTS, users=500, seed=13, views_only=True)
    expected = offline(events)
    topic = fresh.settings.topics.event(EventType.VIEW)
    first = fresh.start_worker(**FAST_FAILOVER, BROKER_COMMIT_INTERVAL="600")
    first.wait_ready()
    await send(fresh, events)
    # Every event applied, its pairs included: the successor finds nothing left to do.
    await profiles_in_changelog(fresh, {u: p.events for u, p in expected.profiles.items()})
    at = max(e.ts for e in events)
    half_life = Replay().config.cooc.half_life_s
    want = {item: row.at(at, half_life) for item, row in expected.rows.items()}
    assert differing(await cooc_rows_in_changelog(fresh, want, at), want) == {}
    assert await committed_lag(fresh, topic) > REPLAYED_EVENTS // 2  # most of it is replayed
    first.kill()
    second = restart(fresh, first, **FAST_FAILOVER)
    second.wait_ready(timeout_s=120)
    ready = time.monotonic()
    gauge_name = f'nudgestream_consumer_lag_messages{{topic="{topic}"}}'
    timeline: list[tuple[float, int, float]] = []  # (s after ready, committed lag, gauge)

    async def look_until(done: Callable[[int, float], bool], bound_s: float) -> None:
        while time.monotonic() - ready < bound_s:
            lag, gauge = await committed_lag(fresh, topic), second.metrics().get(gauge_name, math.nan)
            timeline.append((round(time.monotonic() - ready, 1), lag, gauge))
            if done(lag, gauge):
                return
            await asyncio.sleep(0.3)

    # Five intervals: a loaded 2-core machine needs about three (measured 5.4-10.4 s);
    # before the fix the same catch-up took minutes, about one offset a second.
    await look_until(lambda lag, gauge: lag == 0, bound_s=CATCH_UP_INTERVALS * COMMIT_INTERVAL_S)
    committed_s, lag_then, _ = timeline[-1]
    await look_until(lambda lag, gauge: gauge == 0, bound_s=committed_s + 2 * COMMIT_INTERVAL_S)
    report("restart after kill -9, every event applied", committed_after_s=committed_s, timeline=timeline)
    assert lag_then == 0, f"committed lag {CATCH_UP_INTERVALS * COMMIT_INTERVAL_S:.0f}s after ready: {timeline}"
    assert timeline[-1][2] == 0, f"the lag gauge did not follow the committed offsets: {timeline}"
    # Before any commit the gauge shows the whole replay behind, not nothing.
    assert all(gauge >= lag for _, lag, gauge in timeline if lag == REPLAYED_EVENTS and not math.isnan(gauge)), timeline
    assert duplicates(second.metrics()) >= REPLAYED_EVENTS // 2
