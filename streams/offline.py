"""``nudgestream replay`` and ``nudgestream evaluate``: the core, offline, on a log.

Both read the public CSV log format and run the very ``models`` code the workers run,
with a simulated clock taken from the event times and the same settings (push limits,
quiet hours, time zone and control group come from the ``NUDGESTREAM_*`` environment).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
import time
from datetime import time as dt_time
from pathlib import Path
from typing import IO, Any

import orjson

from models.evaluate import DEFAULT_K, EvalConfig, Fallback, evaluate
from models.logfile import open_events
from models.push_evaluate import evaluate_pushes
from models.push_learning import LearningConfig, holdout_lift, learning_replay
from models.push_replay import PushReplayConfig, Record, replay_pushes
from models.replay import Replay, ReplayStats
from streams.settings import Settings


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=Path, required=True, help="CSV event log (time-ordered)")
    parser.add_argument("--decisions-out", type=Path, help="write pushes here (JSON lines, decision schema)")
    parser.add_argument("--audit-out", type=Path, help="write suppressed/holdout/deferred decisions here")
    add_policy_overrides(parser)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=Path, required=True, help="CSV event log (time-ordered)")
    parser.add_argument(
        "--decisions", type=Path,
        help="pushes to score (JSON lines); default: replay the log now and score its pushes",
    )
    parser.add_argument("--audit", type=Path, help="with --decisions: the unsent decisions (JSON lines)")
    parser.add_argument("--horizon-h", type=float, default=24.0, help="push precision horizon (h)")
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="next-item list length (HR@k, MRR@k)")
    parser.add_argument(
        "--fallback", choices=[f.value for f in Fallback], default=Fallback.OVERALL.value,
        help="what fills the next-item slots the item-to-item tables leave empty",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--no-learning", action="store_true",
        help="skip the learning policy's replay (it is compared with the static policy)",
    )
    for part in ("fatigue", "bandit", "sendtime"):
        parser.add_argument(f"--no-{part}", action="store_true", help=f"learning policy without {part}")
    parser.add_argument(
        "--source-arms", action="store_true",
        help="learning policy: also gate pushed items by their candidate source",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the learning policy's bandit")
    add_policy_overrides(parser)


def add_policy_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tz", help="zone of users whose events carry none (NUDGESTREAM_DEFAULT_TZ)")
    parser.add_argument(
        "--no-quiet-hours", action="store_true",
        help="send at decision time day and night (NUDGESTREAM_QUIET_HOURS=off)",
    )


def replay_config(args: argparse.Namespace, settings: Settings) -> PushReplayConfig:
    """The workers' configuration, with the command line's overrides."""
    limits = settings.limits
    if args.tz:
        limits = dataclasses.replace(limits, default_tz=args.tz)
    if args.no_quiet_hours:
        limits = dataclasses.replace(limits, quiet_start=dt_time(0), quiet_end=dt_time(0))
    return PushReplayConfig(limits=limits, policy=settings.policy)


class Progress:
    """One line on stderr, rewritten as the replay advances."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, stats: ReplayStats) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        print(
            f"\r  {stats.records:>10,} records  {stats.records / elapsed:>9,.0f}/s",
            end="", file=sys.stderr, flush=True,
        )

    def done(self) -> None:
        print(file=sys.stderr)


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Profiles, co-occurrence and popularity only (fast), or, when decisions are asked
    for, the whole push pipeline: segments, triggers, candidates and rate limits."""
    progress = Progress()
    if args.decisions_out is None and args.audit_out is None:
        replay = Replay()
        stats = replay.run(open_events(args.events), progress)
        summary: dict[str, Any] = {"replay": stats.to_dict(), "items": len(replay.rows)}
    else:
        with _open(args.decisions_out) as decisions, _open(args.audit_out) as audit:
            summary = replay_pushes(
                open_events(args.events), decisions, audit, replay_config(args, settings), progress
            )
    progress.done()
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    progress = Progress()
    next_item = evaluate(
        open_events(args.events), EvalConfig(k=args.k, fallback=Fallback(args.fallback)), progress
    )
    pushes, unsent = _decisions(args, settings, progress)
    horizon = args.horizon_h * 3600.0
    learning = None
    if args.decisions is None and not args.no_learning:
        learning = _learning(args, settings, horizon, progress)
    progress.done()
    push_report = evaluate_pushes(open_events(args.events), pushes, unsent, horizon)
    report: dict[str, Any] = {
        "next_item": next_item,
        "push": push_report,
        "lift": holdout_lift(open_events(args.events), pushes + unsent, horizon),
    }
    if learning is not None:
        learned, learner = learning
        report["learning"] = _compare(
            push_report, evaluate_pushes(open_events(args.events), *learned, horizon), learner
        )
    if args.json:
        print(orjson.dumps(report).decode())
    else:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


def _decisions(
    args: argparse.Namespace, settings: Settings, progress: Progress
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pushes, unsent decisions): read from files, or made now by replaying the log."""
    if args.decisions is not None:
        return _json_lines(args.decisions.read_bytes()), (
            _json_lines(args.audit.read_bytes()) if args.audit else []
        )
    pushes, audit = io.BytesIO(), io.BytesIO()
    replay_pushes(open_events(args.events), pushes, audit, replay_config(args, settings), progress)
    return _json_lines(pushes.getvalue()), _json_lines(audit.getvalue())


def _learning(
    args: argparse.Namespace, settings: Settings, horizon: float, progress: Progress
) -> tuple[tuple[list[dict[str, Any]], list[dict[str, Any]]], dict[str, Any]]:
    """(pushes, unsent decisions) of the learning policy, and what it learnt."""
    base = LearningConfig(horizon_s=horizon, seed=args.seed, source_arms=args.source_arms)
    config = dataclasses.replace(
        base,
        fatigue=dataclasses.replace(base.fatigue, enabled=not args.no_fatigue),
        bandit=dataclasses.replace(base.bandit, enabled=not args.no_bandit),
        sendtime=dataclasses.replace(base.sendtime, enabled=not args.no_sendtime),
    )
    pushes: list[dict[str, Any]] = []
    unsent: list[dict[str, Any]] = []

    def keep(record: Record) -> None:
        (pushes if record.pushed else unsent).append(record.to_dict())

    learner = learning_replay(
        open_events(args.events), replay_config(args, settings), config, keep, progress
    )
    return (pushes, unsent), learner.stats()


_COMPARED = ("decisions", "pushed_new", "hits_new", "precision_new", "pushes_per_active_user")


def _compare(
    static: dict[str, Any], learned: dict[str, Any], learner: dict[str, Any]
) -> dict[str, Any]:
    """The learning policy beside the static one (the ``push`` figures)."""

    def ratio(key: str) -> float | None:
        return round(learned[key] / static[key], 3) if static[key] else None

    return {
        "static": {key: static[key] for key in _COMPARED},
        "learning": {key: learned[key] for key in _COMPARED},
        "precision_ratio": ratio("precision_new"),
        "pushes_per_user_ratio": ratio("pushes_per_active_user"),
        "by_trigger": learned["by_trigger"],
        "unsent": learned["unsent"],
        "learner": learner,
    }


def _json_lines(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


def _open(path: Path | None) -> contextlib.AbstractContextManager[IO[bytes] | None]:
    return path.open("wb") if path is not None else contextlib.nullcontext()
