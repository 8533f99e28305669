"""``nudgestream demo``: the main job, end to end, on real local infrastructure.

1. starts the local Kafka broker (KRaft) and Redis server (``services up``);
2. creates the topics and starts one worker process;
3. produces a realistic event stream (synthetic by default, or a real log) for about a
   minute, printing a live summary scraped from the worker's ``/metrics``;
4. prints a final summary — decisions read back from the notification topics, each
   ``decision_id`` once, cold start included — stops the worker, and stops the services
   if it started them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from load import services
from load.cli import send
from load.decisions import DECISION_GRACE_S, PUSHED, DecisionTally, DecisionWatcher
from models.decision import Outcome
from streams.admin import create_topics
from streams.settings import Settings, load

REFRESH_S = 3.0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Snapshot:
    """The counters of one /metrics scrape that the live summary shows."""

    values: dict[str, float]
    at: float

    def total(self, prefix: str) -> float:
        return sum(v for k, v in self.values.items() if k.startswith(prefix))

    def get(self, name: str) -> float:
        return self.values.get(name, 0.0)

    @property
    def processed(self) -> float:
        return self.total("nudgestream_events_consumed_total")

    @property
    def rejected(self) -> float:
        return self.total("nudgestream_events_rejected_total")

    def decisions(self, outcome: str) -> float:
        return sum(
            v for k, v in self.values.items()
            if k.startswith("nudgestream_decisions_total") and f'outcome="{outcome}"' in k
        )


def scrape(port: int) -> Snapshot:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return Snapshot(values, time.monotonic())


def histogram_quantile(snapshot: Snapshot, metric: str, q: float) -> float | None:
    buckets = sorted(
        (float(k.split('le="')[1].rstrip('"}')), v)
        for k, v in snapshot.values.items()
        if k.startswith(f"{metric}_bucket{{")
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    return next(le for le, count in buckets if count >= target)


class DemoWorker:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.settings.web_port}/readyz"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise SystemExit(f"the worker exited; see {self.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
            time.sleep(0.5)
        raise SystemExit(f"the worker was not ready in {timeout_s:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def live_line(start: float, now: Snapshot, before: Snapshot) -> str:
    dt = max(1e-6, now.at - before.at)
    rate = (now.processed - before.processed) / dt
    return (
        f"[{now.at - start:5.0f}s] processed {now.processed:>9,.0f} ({rate:>7,.0f}/s)  "
        f"rejected {now.rejected:>6,.0f}  profiles {now.get('nudgestream_profiles'):>7,.0f}  "
        f"segments v{now.get('nudgestream_segment_snapshot_version'):.0f} "
        f"(k={now.get('nudgestream_segment_k'):.0f})  "
        f"pushed {now.decisions('pushed'):>6,.0f}  suppressed {now.decisions('suppressed'):>6,.0f}"
    )


async def follow(worker_port: int, producing: asyncio.Task[object]) -> Snapshot:
    start = time.monotonic()
    previous = scrape(worker_port)
    while not producing.done():
        await asyncio.sleep(REFRESH_S)
        current = scrape(worker_port)
        say(live_line(start, current, previous))
        previous = current
    return previous


async def drain(worker_port: int, expected: float, timeout_s: float = 30.0) -> Snapshot:
    """Wait until the worker has handled everything produced (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    snapshot = scrape(worker_port)
    while snapshot.processed + snapshot.rejected + snapshot.get("nudgestream_events_duplicate_total") < expected:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
        snapshot = scrape(worker_port)
    return snapshot


def label_value(series: str) -> str:
    """'name{label="value"}' -> 'value' (for one-label series)."""
    return series.partition('="')[2].rstrip('"}')


def final_summary(
    snapshot: Snapshot, tally: DecisionTally, sent: int, elapsed: float, settings: Settings
) -> None:
    say("")
    say("== summary ==")
    say(f"events sent           {sent:>10,} in {elapsed:.0f}s ({sent / max(elapsed, 1e-6):,.0f}/s)")
    say(f"events processed      {snapshot.processed:>10,.0f}")
    for key, value in sorted(snapshot.values.items()):
        if key.startswith("nudgestream_events_consumed_total"):
            say(f"  {label_value(key):<20}{value:>10,.0f}")
    say(f"rejected to the DLQ   {snapshot.rejected:>10,.0f}  (topic {settings.topics.dlq})")
    for key, value in sorted(snapshot.values.items()):
        if key.startswith("nudgestream_events_rejected_total") and value:
            say(f"  {label_value(key):<20}{value:>10,.0f}")
    say(f"duplicates skipped    {snapshot.get('nudgestream_events_duplicate_total'):>10,.0f}")
    say(f"user profiles         {snapshot.get('nudgestream_profiles'):>10,.0f}")
    # From the topics, by decision id: the audit can repeat a record after a crash.
    say(f"push decisions        {tally.count(PUSHED):>10,} pushed, "
        f"{tally.count(Outcome.SUPPRESSED):,} suppressed, {tally.count(Outcome.HOLDOUT):,} holdout, "
        f"{tally.count(Outcome.DEFERRED):,} deferred")
    say(f"  no candidates       {tally.count(Outcome.NO_CANDIDATES):>10,}  (cold start: nothing to recommend yet)")
    share = tally.fallback_share()
    if share is not None:
        say(f"  popularity fallback {share:>10.0%}  of decisions with items (no related ones yet)")
    for q in (0.5, 0.99):
        lag = histogram_quantile(snapshot, "nudgestream_event_lag_seconds", q)
        if lag is not None:
            say(f"event lag p{q * 100:.0f}         <= {lag * 1000:>8,.0f} ms (histogram bucket bound)")


def run(args: argparse.Namespace) -> int:
    settings = load()
    local = services.LocalServices.from_env()
    say("== nudgestream demo ==")
    say("starting the local Kafka broker (KRaft) and Redis server ...")
    already = all(v["pid"] for v in services.status(local).values())
    services.up(local, say=say)
    worker: DemoWorker | None = None
    try:
        say("creating topics ...")
        asyncio.run(create_topics(settings))
        log_path = local.state_dir / "demo-worker.log"
        worker = DemoWorker(settings, log_path)
        say(f"starting a worker (log: {log_path}) ...")
        worker.start()
        worker.wait_ready()
        base = f"http://127.0.0.1:{settings.web_port}"
        say(f"worker ready; its page at {base}/, metrics at {base}/metrics")
        duration = None if args.forever else args.duration
        source = f"the real log {args.events}" if args.events else "the synthetic generator"
        say(f"producing from {source} at {args.rate:,.0f} events/s"
            + ("" if duration is None else f" for {duration:.0f}s") + " (Ctrl-C stops) ...")
        return asyncio.run(_stream(args, settings, duration))
    finally:
        if worker is not None:
            say("stopping the worker ...")
            worker.stop()
        if not already:
            say("stopping the services this demo started ...")
            services.down(local, say=say)
        else:
            say("the local services were running before the demo: left running")


async def _stream(args: argparse.Namespace, settings: Settings, duration: float | None) -> int:
    watcher = DecisionWatcher(settings)
    watching = await watcher.start()
    started = time.monotonic()
    producing = asyncio.create_task(send(args, settings, duration=duration, count=None, progress=False))
    try:
        await follow(settings.web_port, producing)
    except asyncio.CancelledError:
        producing.cancel()
    summary = await producing
    elapsed = time.monotonic() - started
    snapshot = await drain(settings.web_port, summary.sent)
    await asyncio.sleep(DECISION_GRACE_S)
    watcher.stop()
    await watching
    final_summary(snapshot, watcher.tally, summary.sent, elapsed, settings)
    return 0
