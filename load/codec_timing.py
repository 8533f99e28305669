"""A micro-benchmark of the binary table records: µs per encode and decode.

Builds the profiles and co-occurrence rows of a synthetic backlog (the bench's
generator, replayed offline), gives them the source positions the stream stores (three
partitions of each event type) and times ``to_bytes`` and ``from_bytes`` with
:mod:`timeit` on the fullest ones: rows with the most neighbours and profiles with the
most recent items. A micro-benchmark: the figures move with the machine's load, so only
figures of one run are compared (``docs/BENCHMARKS.md``).

    python -m load.codec_timing [--events 20000] [--users 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import timeit
from collections.abc import Callable, Sequence
from typing import Any

from load.generator import GeneratorConfig, generate_events
from models.cooccurrence import Row
from models.events import Event, decode_event
from models.profile import Profile
from models.replay import Replay

#: Records of each kind timed (the fullest of the backlog).
SAMPLE = 50
SOURCES = [f"{kind}{partition}" for kind in "vcb" for partition in range(3)]


def backlog_records(events: int, users: int, seed: int) -> tuple[list[Profile], list[Row]]:
    """The final profiles and rows of a replayed synthetic backlog, fullest first."""
    config = GeneratorConfig(users=users, seed=seed, malformed_share=0.0)
    replay = Replay()
    for message in itertools.islice(generate_events(config), events):
        event = decode_event(message.value, now=float("inf"))
        assert isinstance(event, Event)
        replay.process(event)
    for n, (row, profile) in enumerate(itertools.zip_longest(replay.rows.values(), replay.profiles.values())):
        positions = {source: 1000 * n + k for k, source in enumerate(SOURCES)}
        if row is not None:
            row.positions.update(positions)
        if profile is not None:
            profile.positions.update(itertools.islice(positions.items(), 3))
    profiles = list(replay.profiles.values())
    profiles.sort(key=lambda p: (len(p.recent), len(p.categories)), reverse=True)
    rows = sorted(replay.rows.values(), key=lambda r: len(r.neighbours), reverse=True)
    return profiles[:SAMPLE], rows[:SAMPLE]


def per_call_us(fn: Callable[[Any], object], values: Sequence[Any], repeat: int = 5) -> float:
    """The best of ``repeat`` timings of ``fn`` over all of ``values``, per call, in
    CPU time: on a shared machine wall time mostly measures the other processes."""
    timer = timeit.Timer(lambda: [fn(v) for v in values], timer=time.process_time)
    loops, _ = timer.autorange()
    return min(timer.repeat(repeat, loops)) / loops / len(values) * 1e6


def measure(profiles: Sequence[Profile], rows: Sequence[Row]) -> dict[str, float]:
    encoded_profiles = [p.to_bytes() for p in profiles]
    encoded_rows = [r.to_bytes() for r in rows]
    return {
        "row_neighbours": sum(len(r.neighbours) for r in rows) / len(rows),
        "row_bytes": sum(map(len, encoded_rows)) / len(rows),
        "row_encode_us": per_call_us(Row.to_bytes, rows),
        "row_decode_us": per_call_us(Row.from_bytes, encoded_rows),
        "profile_recent": sum(len(p.recent) for p in profiles) / len(profiles),
        "profile_bytes": sum(map(len, encoded_profiles)) / len(profiles),
        "profile_encode_us": per_call_us(Profile.to_bytes, profiles),
        "profile_decode_us": per_call_us(Profile.from_bytes, encoded_profiles),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    profiles, rows = backlog_records(args.events, args.users, args.seed)
    figures = measure(profiles, rows)
    print(json.dumps({name: round(value, 1) for name, value in figures.items()}, indent=1))


if __name__ == "__main__":
    main()
