"""The worker's page in a real browser: a worker on real Kafka and Redis decides, and
headless Chromium renders ``/`` with the segments, CTR and decisions it really has."""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import shutil
import struct
import subprocess
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pytest

from load.generator import GeneratorConfig, generate_events
from load.producer import produce
from streams.client import EventProducer
from tests.conftest import in_ci
from tests.integration.conftest import Deployment, WorkerProcess, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WIDTH, HEIGHT = 1280, 1600
#: The header's background (--ink in the page's style): the style sheet was applied.
HEADER_RGB = (0x1D, 0x24, 0x30)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        message = "chromium is not installed (scripts/bootstrap.sh --test installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


def dashboard(worker: WorkerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/dashboard.json", timeout=5) as r:
        doc: dict[str, Any] = json.loads(r.read())
        return doc


async def wait_for(worker: WorkerProcess, ready: Any, what: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = dashboard(worker)
        if ready(doc):
            return doc
        await asyncio.sleep(1.0)
    raise AssertionError(f"{what} not on the page in {timeout_s:.0f} s:\n{worker.log_tail()}")


async def all_pushes(deployment: Deployment) -> list[dict[str, Any]]:
    """Every push on the topic so far (whatever a few seconds of reading from the start find)."""
    settings = deployment.settings
    records = await read_topic(settings.kafka_bootstrap, settings.topics.push, until=10**9, timeout_s=5)
    return [json.loads(value or b"{}") for _, value in records]


def browse(chromium: str, url: str, *options: str) -> str:
    """Chromium's stdout for ``url``, after the page's scripts ran (virtual time)."""
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WIDTH},{HEIGHT}",
         "--virtual-time-budget=5000", *options, url],
        capture_output=True, timeout=120, check=True,
    )
    return done.stdout.decode()


async def test_the_page_shows_what_the_worker_decided(
    deployment: Deployment, chromium: str, tmp_path: Path
) -> None:
    worker = deployment.start_worker(NUDGESTREAM_HOLDOUT_PERCENT="0")
    worker.wait_ready()
    settings = deployment.settings
    events = 3000
    config = GeneratorConfig(
        users=400, seed=11, malformed_share=0.0, events_per_second=200.0,
        start_ts=time.time() - events / 200.0, event_id_prefix="page-",
    )
    source = (
        record._replace(topic=settings.topic_prefix + record.topic)
        for record in itertools.islice(generate_events(config), events)
    )
    assert (await produce(source, bootstrap=settings.kafka_bootstrap)).sent == events

    doc = await wait_for(worker, lambda d: d["segments"]["available"] and any(
        e["outcome"] == "pushed" for e in d["decisions"]), "a segment snapshot and a push")
    pushed = await all_pushes(deployment)
    assert pushed, "the page lists a push the push topic does not have"
    # An app reports what happened to the pushes: the CTR history samples it.
    async with EventProducer.from_settings(settings) as producer:
        for n, push in enumerate(pushed):
            ids = {"decision_id": push["decision_id"], "user_id": push["user_id"]}
            await producer.report_outcome({"kind": "sent", **ids})
            if n % 2 == 0:
                await producer.report_outcome({"kind": "clicked", **ids})
        await producer.flush()
    doc = await wait_for(worker, lambda d: any(p["ctr"] for p in d["ctr"]["points"]), "a CTR point")

    url = f"http://127.0.0.1:{worker.port}/"
    # The trainer publishes a new snapshot every few seconds, relabelling segments: compare
    # the page with the data of a snapshot version that did not change while it rendered.
    for _ in range(5):
        before = dashboard(worker)
        dom = browse(chromium, url, "--dump-dom")
        doc = dashboard(worker)
        if before["segments"].get("version") == doc["segments"].get("version"):
            break
    pushed = await all_pushes(deployment)  # the page may show later pushes than the above
    # The decisions shown are the worker's own, with the explanations it published.
    shown = re.findall(r'<td class="explanation">(.*?)</td>', dom)
    assert shown and set(shown) & {html.escape(p["explanation"], quote=False) for p in pushed}
    assert dom.count('class="segment-row"') == len(doc["segments"]["segments"]) >= 2
    for segment in doc["segments"]["segments"]:
        assert html.escape(segment["label"], quote=False) in dom
    assert 'class="decision-row"' in dom and 'class="ctr-line"' in dom
    # Lift: interval bars, or why there are none yet (no control exposures with holdout 0).
    assert any(s in dom for s in ('class="interval"', "no exposure", "not estimable yet"))
    assert re.search(r'<span id="status">updated \d\d:\d\d:\d\d UTC</span>', dom), "no data fetched"
    assert not any(push["user_id"] in dom for push in pushed), "user ids on the page"

    shot = tmp_path / "dashboard.png"
    browse(chromium, url, f"--screenshot={shot}")
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    non_white = sum(p != (255, 255, 255) for p in pixels) / len(pixels)
    assert non_white > 0.2, f"a blank render: {non_white:.1%} of the pixels are not white"
    assert len(set(pixels)) > 50, "a flat render: text and charts have many shades"
    assert pixels[WIDTH * 10 + 10] == HEADER_RGB, "the page's style was not applied"


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Width, height and RGB pixels of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
    assert header is not None, "no IHDR chunk"
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    previous = bytearray(stride)
    pixels: list[tuple[int, ...]] = []
    for y in range(height):
        start = y * (stride + 1)
        line = bytearray(raw[start + 1 : start + 1 + stride])
        unfilter(raw[start], line, previous, bpp)
        pixels.extend(tuple(line[i : i + 3]) for i in range(0, stride, bpp))
        previous = line
    return width, height, pixels


def unfilter(kind: int, line: bytearray, previous: bytearray, bpp: int) -> None:
    """Undo one scanline's PNG filter in place (None, Sub, Up, Average, Paeth)."""
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = previous[i]
        c = previous[i - bpp] if i >= bpp else 0
        if kind == 1:
            predicted = a
        elif kind == 2:
            predicted = b
        elif kind == 3:
            predicted = (a + b) // 2
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predicted = a if pa <= pb and pa <= pc else b if pb <= pc else c
        else:
            assert kind == 0, f"unknown PNG filter {kind}"
            return
        line[i] = (line[i] + predicted) & 255
