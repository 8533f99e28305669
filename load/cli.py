"""Command-line glue for ``nudgestream produce`` and ``nudgestream demo``."""

from __future__ import annotations

import argparse

from streams.settings import Settings


def add_produce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=0.0, help="events/s (0: as fast as possible)")
    parser.add_argument("--duration", type=float, default=None, help="seconds to run")
    parser.add_argument("--count", type=int, default=None, help="events to send")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the generator")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of events")
    parser.add_argument("--forever", action="store_true", help="keep running until Ctrl-C")


def run_produce(args: argparse.Namespace, settings: Settings) -> int:
    raise NotImplementedError


def run_demo(args: argparse.Namespace) -> int:
    raise NotImplementedError
