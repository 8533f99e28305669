"""How long segment training stalls the event loop: in a thread versus in its own process.

A 10 ms ticker measures the loop's lag (how late each tick wakes) while a stream of
training samples is learnt, with a snapshot every 2 s, either the former way
(``SegmentTrainer.learn_one`` in a thread of the loop's process) or by
:class:`streams.trainer_process.TrainerProcess`::

    python -m load.trainer_stall --seconds 20 --rate 1000

A benchmark, never a test: figures depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import orjson

from models.features import FeatureConfig
from models.segments import SegmentTrainer
from streams.trainer_process import TrainerProcess, TrainerState

TICK_S = 0.01
SEND_EVERY_S = 0.05
SNAPSHOT_EVERY_S = 2.0


def synthetic_records(count: int, seed: int = 0, centres: int = 4) -> list[bytes]:
    """Training records around a few interest centres (the format the ingest agent sends)."""
    rng = random.Random(seed)
    dimension = FeatureConfig().dimension
    means = [[rng.random() for _ in range(dimension)] for _ in range(centres)]
    records = []
    for i in range(count):
        centre = i % centres
        vector = [min(1.0, max(0.0, rng.gauss(m, 0.05))) for m in means[centre]]
        records.append(orjson.dumps({"v": vector, "c": {f"cat{centre}": 1.0}}))
    return records


Learn = Callable[[list[bytes]], Awaitable[object]]


async def _measure(learn: Learn, snapshot: Callable[[], Awaitable[object]], seconds: float,
                   rate: float) -> dict[str, float]:
    lags: list[float] = []
    records = synthetic_records(int(seconds * rate) + 1000)
    per_send = max(1, int(rate * SEND_EVERY_S))
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def tick() -> None:
        due = loop.time()
        while due < end:
            due += TICK_S
            await asyncio.sleep(max(0.0, due - loop.time()))
            lags.append(max(0.0, loop.time() - due))
            due = max(due, loop.time())

    async def feed() -> None:
        sent = 0
        pending: set[asyncio.Task[object]] = set()
        while loop.time() < end:
            batch, sent = records[sent:sent + per_send], sent + per_send
            task: asyncio.Task[object] = asyncio.ensure_future(learn(batch))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(SEND_EVERY_S)
        await asyncio.gather(*pending)

    async def snapshots() -> None:
        while loop.time() < end:
            await asyncio.sleep(SNAPSHOT_EVERY_S)
            await snapshot()

    await asyncio.gather(tick(), feed(), snapshots())
    lags.sort()
    return {
        "ticks": len(lags),
        "lag_p50_ms": 1000 * lags[len(lags) // 2],
        "lag_p99_ms": 1000 * lags[int(len(lags) * 0.99)],
        "lag_max_ms": 1000 * lags[-1],
    }


async def in_thread(seconds: float, rate: float) -> dict[str, float]:
    """The former way: learn_one and snapshot in a thread, one at a time."""
    state = TrainerState()
    state.trainer = SegmentTrainer()
    lock = asyncio.Lock()

    async def run(request: tuple[object, ...]) -> object:
        async with lock:
            return await asyncio.to_thread(state.handle, request)

    return await _measure(
        lambda batch: run(("learn", batch)), lambda: run(("snapshot", time.time())), seconds, rate
    )


async def in_process(seconds: float, rate: float) -> dict[str, float]:
    process = TrainerProcess()
    await process.start()
    lock = asyncio.Lock()

    async def run(request: tuple[object, ...]) -> object:
        async with lock:
            return await process.call(request)

    try:
        await run(("start", None, None))
        return await _measure(
            lambda batch: run(("learn", batch)), lambda: run(("snapshot", time.time())),
            seconds, rate,
        )
    finally:
        await process.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="samples per second")
    args = parser.parse_args()
    for name, run in (("thread", in_thread), ("process", in_process)):
        result = asyncio.run(run(args.seconds, args.rate))
        print(orjson.dumps({"training": name, "rate": args.rate, **result}).decode())


if __name__ == "__main__":
    main()
