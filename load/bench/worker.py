"""The worker process under test, and the pipeline figure taken from its ``/metrics``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from load.bench.common import POLL_S, PROJECT_DIR, REPORT_S, STALL_S, BenchError, Throughput, say
from load.bench.kafka_state import GroupLag
from load.demo import DemoWorker, Snapshot, scrape


class BenchWorker(DemoWorker):
    """The demo's worker process, started with the bench's environment, maybe profiled."""

    def launch(self, env: Mapping[str, str], profile: Path | None) -> None:
        command = [sys.executable, "-m", "streams.cli", "worker"]
        if profile is not None:
            # pyinstrument picks the report format from the file name (.txt, .html, ...).
            command[1:1] = ["-m", "pyinstrument", "-o", str(profile)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **env}, cwd=PROJECT_DIR,
            )

    def stop(self) -> None:
        # SIGINT, not SIGTERM: Faust stops cleanly either way, and a profiler only
        # writes its report when the program ends through KeyboardInterrupt or exit.
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident memory now, from /proc (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError("VmRSS not found in /proc/<pid>/status")

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far, from /proc (Linux)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        # Fields 14 and 15 of stat(5), counted after the command name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def scrape(self) -> Snapshot:
        """The worker's metrics; a busy worker may answer late, so a slow scrape is retried."""
        deadline = time.monotonic() + STALL_S
        while True:
            try:
                return await asyncio.to_thread(scrape, self.settings.web_port)
            except OSError:  # timeouts and refused connections alike
                if time.monotonic() > deadline or self.process is None or self.process.poll() is not None:
                    raise BenchError(f"the worker's /metrics did not answer; see {self.log_path}") from None
                await asyncio.sleep(POLL_S)


def handled(snapshot: Snapshot) -> float:
    """Events the worker is done with: processed, dead-lettered or skipped as duplicates."""
    return snapshot.processed + snapshot.rejected + snapshot.get("nudgestream_events_duplicate_total")


@dataclass(frozen=True)
class PipelineRates:
    #: Until the ingest agent has handled every event (what /metrics counts).
    ingest: Throughput
    #: Until the worker group has also drained the topics it feeds itself (co-occurrence
    #: increments, segment samples): the rate the worker sustains.
    full: Throughput


async def measure_pipeline(worker: BenchWorker, lag: GroupLag, expected: int) -> PipelineRates:
    """Time the backlog from the first poll that sees progress (start-up excluded)."""
    origin = await wait_handled(worker, 1)
    ingested = await wait_handled(worker, expected, report=True)
    ingest = Throughput(int(handled(ingested) - handled(origin)), ingested.at - origin.at)
    if ingest.seconds <= 0:
        raise BenchError("the backlog was drained before it could be timed; use more events")
    say(f"ingest agent done: {ingest.eps:,.0f} events/s; waiting for the internal topics ...")
    drained_at = await lag.wait_drained()
    return PipelineRates(ingest, Throughput(ingest.count, drained_at - origin.at))


async def wait_handled(worker: BenchWorker, target: float, *, report: bool = False) -> Snapshot:
    snapshot = await worker.scrape()
    progress_at, progress = snapshot.at, handled(snapshot)
    reported_at = snapshot.at
    while handled(snapshot) < target:
        if report and snapshot.at - reported_at >= REPORT_S:
            say(f"  handled {progress:,.0f} of {target:,.0f} events")
            reported_at = snapshot.at
        if worker.process is not None and worker.process.poll() is not None:
            raise BenchError(f"the worker exited; see {worker.log_path}")
        if snapshot.at - progress_at > STALL_S:
            raise BenchError(
                f"the worker made no progress for {STALL_S:.0f}s at {progress:,.0f} of "
                f"{target:,.0f} events; see {worker.log_path}"
            )
        await asyncio.sleep(POLL_S)
        snapshot = await worker.scrape()
        if handled(snapshot) > progress:
            progress_at, progress = snapshot.at, handled(snapshot)
    return snapshot
