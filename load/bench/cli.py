"""Command-line glue of ``nudgestream bench``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from load.bench.common import SECRET_VARIABLES, BenchConfig, BenchError
from load.bench.report import render_table
from load.bench.run import run_bench


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BenchConfig()
    parser.add_argument("--events", type=int, default=defaults.events, help="events in the backlog")
    parser.add_argument("--users", type=int, default=defaults.users, help="synthetic users")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the generator")
    parser.add_argument(
        "--latency-seconds", type=float, default=defaults.latency_s,
        help="seconds of events offered for the latency figure",
    )
    parser.add_argument(
        "--load-share", type=float, default=defaults.load_share,
        help="offered rate in the latency phase, as a share of the measured pipeline rate",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="FILE",
        help="run the worker under pyinstrument (which must be installed) and write its "
        "profile to FILE (.txt, .html, .pyisession); the figures then include its overhead",
    )
    parser.add_argument(
        "--worker-env", action="append", default=[], metavar="NAME=VALUE", type=_assignment,
        help="extra environment of the worker only, for what-if runs (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="end the output with one JSON line")


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def run_bench_command(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(
            run_bench(
                os.environ, events=args.events, users=args.users, seed=args.seed,
                latency_s=args.latency_seconds, load_share=args.load_share,
                profile=args.profile, worker_env=dict(args.worker_env), command=invocation(args),
            )
        )
    except (BenchError, ValueError) as exc:
        print(f"nudgestream bench: {exc}", file=sys.stderr)
        return 1
    print(render_table(result))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def invocation(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str:
    """The command that repeats this run: every option spelt out, with the NUDGESTREAM_*
    settings in force (secrets left out)."""
    environ = os.environ if environ is None else environ
    settings = [
        f"{name}={shlex.quote(value)}"
        for name, value in sorted(environ.items())
        if name.startswith("NUDGESTREAM_") and name not in SECRET_VARIABLES
    ]
    options = [
        "--events", str(args.events), "--users", str(args.users), "--seed", str(args.seed),
        "--latency-seconds", f"{args.latency_seconds:g}", "--load-share", f"{args.load_share:g}",
    ]
    if args.profile is not None:
        options += ["--profile", str(args.profile)]
    for name, value in args.worker_env:
        options += ["--worker-env", f"{name}={value}"]
    if args.json:
        options.append("--json")
    return " ".join([*settings, "nudgestream bench", shlex.join(options)])
