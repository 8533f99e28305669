"""Segments on real Kafka: one trainer publishes snapshots; every worker assigns alike."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from load.generator import GeneratorConfig, generate_events
from load.producer import produce
from models.features import profile_vector
from models.profile import Profile
from streams.segmentation import read_latest_snapshot
from tests.integration.conftest import Deployment, WorkerProcess, latest_values

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def segments_page(worker: WorkerProcess, vector: list[float] | None = None) -> dict[str, object]:
    query = "" if vector is None else "?vector=" + ",".join(f"{x:.6f}" for x in vector)
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/segments{query}", timeout=5) as r:
        page: dict[str, object] = json.loads(r.read())
        return page


async def test_two_workers_in_one_group_assign_the_same_segment(deployment: Deployment) -> None:
    first = deployment.start_worker()
    second = deployment.start_worker()
    first.wait_ready()
    second.wait_ready()
    settings = deployment.settings
    events = 6000
    config = GeneratorConfig(
        users=800, seed=7, malformed_share=0.0, events_per_second=200.0,
        start_ts=time.time() - events / 200.0, event_id_prefix="seg-",
    )
    source = (
        record._replace(topic=settings.topic_prefix + record.topic)
        for record in itertools.islice(generate_events(config), events)
    )
    summary = await produce(source, bootstrap=settings.kafka_bootstrap)
    assert summary.sent == events

    snapshot = None
    deadline = time.monotonic() + 90
    while snapshot is None and time.monotonic() < deadline:
        snapshot = await read_latest_snapshot(settings)
        await asyncio.sleep(1.0)
    assert snapshot is not None, "the trainer published no snapshot"
    assert 2 <= snapshot.k <= 10 and snapshot.scores.silhouette > 0

    # Both workers follow the topic to the same version ...
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        versions = {segments_page(w)["version"] for w in (first, second)}
        if versions == {snapshot.version} or (len(versions) == 1 and versions != {0}):
            break
        await asyncio.sleep(0.5)
    assert len(versions) == 1 and versions != {0}, versions

    # ... and give every real profile (from the changelog) the same segment.
    changelog = f"{settings.app_id}-profiles-changelog"
    latest = await latest_values(
        settings.kafka_bootstrap, changelog, done=lambda seen: len(seen) >= 300
    )
    profiles = [Profile.from_bytes(raw) for raw in latest.values() if raw]
    assert len(profiles) >= 300
    current = await read_latest_snapshot(settings)
    assert current is not None
    now = time.time()
    assigned = set()
    for profile in profiles[:100]:
        vector = profile_vector(profile, now, current.features)
        answers = {segments_page(w, vector).get("assigned") for w in (first, second)}
        assert len(answers) == 1, answers
        assigned |= answers
    assert len(assigned) >= 2, "the generated users have several latent interests"

    # ... and `nudgestream segments` shows the operator the same model.
    # The trainer keeps publishing: compare the JSON with a table of the same version.
    for _ in range(5):
        shown = nudgestream(deployment, "segments", "--json")
        table = nudgestream_text(deployment, "segments")
        if table.startswith(f"segments v{shown['version']}:"):
            break
    assert table.startswith(f"segments v{shown['version']}:"), (shown["version"], table[:40])
    assert shown["version"] >= current.version and shown["k"] == len(shown["segments"])
    assert {"silhouette", "calinski_harabasz", "davies_bouldin"} <= set(shown["scores"])
    assert "silhouette" in table and "Davies-Bouldin" in table
    for segment in shown["segments"]:
        assert segment["label"] in table and 0 <= segment["share"] <= 1


def nudgestream_text(deployment: Deployment, *args: str) -> str:
    """Run the console script as an operator would, against the deployment's settings."""
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env={**os.environ, **deployment.env},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def nudgestream(deployment: Deployment, *args: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(nudgestream_text(deployment, *args))
    return shown
