"""The development commands of ``nudgestream``: ``services``, ``produce``, ``bench``, ``demo``.

They reach the one console script through the ``nudgestream.commands`` entry point
(:data:`COMMANDS`, declared in ``pyproject.toml``), so the workers' package never imports
this one: ``streams.cli`` only knows the :class:`~streams.cli.Plugin` shape.

>>> [command.name for command in COMMANDS.commands]
['services', 'bench', 'produce', 'demo']
"""

from __future__ import annotations

import argparse
import json
import sys

from load import services
from load.bench import add_bench_arguments, run_bench_command
from load.cli import add_demo_arguments, add_produce_arguments, run_produce
from load.demo import run as run_demo
from load.local_settings import RawLocalServices
from streams import settings
from streams.cli import Command, Plugin


def add_services_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])


def run_services(args: argparse.Namespace) -> int:
    local = services.LocalServices.from_env()
    try:
        if args.action == "up":
            services.up(local)
        elif args.action == "down":
            services.down(local)
        else:
            print(json.dumps(services.status(local), indent=2))
    except services.ServiceError as exc:
        print(f"nudgestream services: {exc}", file=sys.stderr)
        return 1
    return 0


COMMANDS = Plugin(
    commands=(
        Command(
            "services",
            "start/stop the local Kafka (KRaft) broker and Redis server on loopback",
            run_services,
            add_services_arguments,
        ),
        Command(
            "bench",
            "benchmark on the local Kafka + Redis: raw aiokafka passthrough vs one "
            "worker, event-to-decision latency at half load, memory per user",
            run_bench_command,
            add_bench_arguments,
        ),
        Command(
            "produce",
            "produce synthetic or real-log events to the event topics",
            lambda args: run_produce(args, settings.load()),
            add_produce_arguments,
        ),
        Command(
            "demo",
            "the main job: local Kafka + Redis + a worker + a realistic event stream, "
            "with a live summary; bounded (about a minute) unless --forever",
            run_demo,
            add_demo_arguments,
        ),
    ),
    settings=(RawLocalServices,),
)
