"""The Faust batch peer: what a good, minimal faust-streaming app moves per core.

One Faust agent over the event topics reads ``take_events(500, within=5 ms)`` batches,
decodes every event with orjson and sends one small message per event to the sink,
without awaiting each acknowledgement (they are awaited once, at the end, as the raw
peer does). No state, no table. Run by the bench as ``python -m load.bench.faust_peer``
in a process of its own, with the bench's settings in its environment; when it has
passed ``--expected`` events through it writes ``{"count": n, "seconds": s}`` (first
event received to last acknowledgement) to ``--result`` and waits to be stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path

import faust
import orjson
from faust.types import EventT, RecordMetadata

from load.bench.common import peer_app_id
from streams.clients import credentials
from streams.settings import Settings, load

#: The batch bounds of the peer: Faust's own batching API, as the issue's peer uses it.
BATCH_EVENTS = 500
BATCH_WITHIN_S = 0.005


def build_app(settings: Settings, sink: str, expected: int, result: Path) -> faust.App:
    datadir = settings.data_dir / "faust-peer"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        peer_app_id(settings),
        broker=settings.broker_urls,
        broker_credentials=credentials(settings),
        store="memory://",
        datadir=str(datadir),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    source = app.topic(*settings.topics.events.values())
    target = app.topic(sink)
    acks: list[Awaitable[RecordMetadata]] = []

    async def passthrough(stream: faust.StreamT[bytes]) -> None:
        first: float | None = None
        events: Sequence[EventT[bytes]]
        # StreamT does not declare take_events; faust.Stream (what agents get) has it.
        async for events in stream.take_events(BATCH_EVENTS, within=BATCH_WITHIN_S):  # type: ignore[attr-defined]
            first = first or time.monotonic()
            for event in events:
                orjson.loads(event.value)
                message = event.message
                acks.append(await target.send(key=message.key, value=b"1", partition=message.partition))
            if len(acks) >= expected:
                await asyncio.gather(*acks)
                seconds = time.monotonic() - first
                result.write_bytes(orjson.dumps({"count": len(acks), "seconds": seconds}))
                acks.clear()

    app.agent(source, name="faust-peer")(passthrough)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    app = build_app(load(os.environ), args.sink, args.expected, args.result)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
