"""``nudgestream`` — the one console script, with subcommands.

Run ``nudgestream --help`` for the list and ``nudgestream COMMAND --help`` for each.
Configuration comes from ``NUDGESTREAM_*`` environment variables (``nudgestream config``
lists them); a bad value stops the command with a message naming the variable.

The workers' commands are defined here. Other packages add commands without this one
importing them: a :class:`Plugin` registered under the ``nudgestream.commands`` entry-point
group (the development tooling in ``load`` registers ``services``, ``produce``, ``bench``
and ``demo`` that way, see ``pyproject.toml``).

>>> extra = Plugin(commands=(Command("hello", "say hello", lambda args: print("hi") or 0),))
>>> main(["hello"], plugins=[extra])
hi
0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata

from streams import settings as settings_module
from streams.config_values import describe as describe_declared
from streams.settings import ConfigError, Settings

Handler = Callable[[argparse.Namespace], int]
PLUGIN_GROUP = "nudgestream.commands"


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command without options or positional arguments."""


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, handler, and what declares its arguments."""

    name: str
    help: str
    handler: Handler
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments


@dataclass(frozen=True)
class Plugin:
    """Commands another package adds, and the settings classes they read.

    ``settings`` are dataclasses declared with :func:`streams.config_values.setting`;
    ``nudgestream config`` lists them with the workers' own.
    """

    commands: tuple[Command, ...]
    settings: tuple[type, ...] = ()


def discover_plugins(
    entry_points: Iterable[metadata.EntryPoint] | None = None,
) -> list[Plugin]:
    """The plugins registered under :data:`PLUGIN_GROUP` in the installed metadata."""
    found = metadata.entry_points(group=PLUGIN_GROUP) if entry_points is None else entry_points
    plugins = []
    for entry_point in found:
        plugin = entry_point.load()
        if not isinstance(plugin, Plugin):
            raise TypeError(f"entry point {entry_point.value!r} is not a streams.cli.Plugin")
        plugins.append(plugin)
    return plugins


def main(argv: Sequence[str] | None = None, plugins: Sequence[Plugin] | None = None) -> int:
    parser = _parser(discover_plugins() if plugins is None else plugins)
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"nudgestream: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser(plugins: Sequence[Plugin]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nudgestream",
        description="Real-time interest segments, item co-occurrence and rate-limited push "
        "decisions on Kafka (Faust) and Redis.",
        epilog="Settings come from NUDGESTREAM_* environment variables: see `nudgestream config`.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    extra_settings = tuple(raw for plugin in plugins for raw in plugin.settings)
    _command(commands, "config", lambda args: _config(extra_settings),
             "list every setting, its variable and default")

    topics = _command(commands, "topics", _topics, "create all topics (idempotent)")
    topics.add_argument("action", choices=["create"])

    _command(
        commands,
        "worker",
        _worker,
        "run a stream-processing worker (Faust); serves /metrics, /healthz, /readyz",
    )

    segments = _command(commands, "segments", _segments,
                        "the current interest segments: label, size, top categories, quality")
    segments.add_argument("--json", action="store_true", help="print JSON")

    from streams.offline import add_evaluate_arguments, add_replay_arguments

    replay = _command(commands, "replay", _replay,
                      "replay a CSV event log through the same core offline (simulated clock); "
                      "write the push decisions")
    add_replay_arguments(replay)
    evaluate = _command(commands, "evaluate", _evaluate,
                        "next-item quality (HR@10, MRR@10, coverage) and push precision vs "
                        "popularity and co-view baselines on a CSV log, as JSON")
    add_evaluate_arguments(evaluate)

    forget = _command(commands, "forget", _forget,
                      "erase a user everywhere nudgestream keeps state (idempotent)")
    forget.add_argument("user_id")

    related = _command(commands, "related", _related,
                       "print an item's related items as served from Redis (co-occurrence top-K)")
    related.add_argument("item_id")
    related.add_argument("--json", action="store_true", help="print JSON")

    from streams.report import add_report_arguments

    report = _command(commands, "report", _report,
                      "CTR, conversion and lift against the control group per trigger and "
                      "segment, summed from the workers' /metrics")
    add_report_arguments(report)

    from streams.notify import add_notify_arguments

    notify = _command(commands, "notify", _notify,
                      "reference notification worker: each push decision to a sender, once")
    add_notify_arguments(notify)

    for plugin in plugins:
        for command in plugin.commands:
            command.add_arguments(_command(commands, command.name, command.handler, command.help))
    return parser


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    help_text: str,
) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(handler=handler)
    return sub


def load_settings() -> Settings:
    return settings_module.load()


def _config(extra_settings: tuple[type, ...]) -> int:
    for variable, default, meaning in settings_module.describe() + describe_declared(*extra_settings):
        print(f"{variable:40} default {default!r:28} {meaning}")
    return 0


def _topics(args: argparse.Namespace) -> int:
    from streams.admin import create_topics

    result = asyncio.run(create_topics(load_settings()))
    for name, state in result.items():
        print(f"{name:32} {state}")
    return 0


def _segments(args: argparse.Namespace) -> int:
    import time

    import orjson

    from streams.segmentation import read_latest_snapshot, snapshot_summary

    snapshot = asyncio.run(read_latest_snapshot(load_settings()))
    if snapshot is None:
        print("no segment snapshot yet: the trainer is warming up (or no worker ran)")
        return 1
    summary = orjson.loads(snapshot_summary(snapshot))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    scores = summary["scores"]
    print(
        f"segments v{snapshot.version}: k={snapshot.k}, {snapshot.learned:,} vectors learnt, "
        f"{time.time() - snapshot.created_at:,.0f}s old; silhouette {scores['silhouette']:.3f}, "
        f"Calinski-Harabasz {scores['calinski_harabasz']:.1f}, "
        f"Davies-Bouldin {scores['davies_bouldin']:.3f}"
    )
    for seg in summary["segments"]:
        top = ", ".join(f"{name} {share:.0%}" for name, share in seg["top_categories"])
        print(f"  #{seg['id']:<3} {seg['share']:6.1%}  {seg['label']:<45} {top}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from streams.offline import run_replay

    return run_replay(args, load_settings())


def _evaluate(args: argparse.Namespace) -> int:
    from streams.offline import run_evaluate

    return run_evaluate(args, load_settings())


def _forget(args: argparse.Namespace) -> int:
    from streams.erasure import forget_user

    try:
        report = asyncio.run(forget_user(load_settings(), args.user_id))
    except TimeoutError as exc:
        print(f"nudgestream forget: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


def _related(args: argparse.Namespace) -> int:
    from models.cooccurrence import CoocConfig
    from streams.clients import redis_client
    from streams.cooccurrence import RelatedItemsStore

    settings = load_settings()

    async def lookup() -> list[tuple[str, float]]:
        client = redis_client(settings)
        try:
            store = RelatedItemsStore(client, settings.app_id, CoocConfig())
            return (await store.related([args.item_id]))[args.item_id]
        finally:
            await client.aclose()

    related = asyncio.run(lookup())
    if args.json:
        print(json.dumps([{"item_id": i, "score": s} for i, s in related]))
    elif not related:
        print(f"no related items for {args.item_id!r} (unknown item, or not scored yet)")
    else:
        for rank, (item, score) in enumerate(related, start=1):
            print(f"{rank:3}. {item:30} {score:10.3f}")
    return 0 if related else 1


def _report(args: argparse.Namespace) -> int:
    from streams.report import run_report

    return run_report(args)


def _notify(args: argparse.Namespace) -> int:
    from streams.notify import run_notify

    return run_notify(args, load_settings())


def _worker(args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    return run_worker(load_settings())


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: plugins are built from
    # streams.cli's classes, which the copy's isinstance check would not recognise.
    from streams.cli import main as module_main

    sys.exit(module_main())
