"""``nudgestream report`` on expositions made by real registries: sums, rates, lifts, errors."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from models.lift import Lift, Rate
from streams.cli import main
from streams.report import Counts, ReportError, report, scrape, table


def worker_exposition(exposures: dict[tuple[str, str, str], int], conversions: dict[tuple[str, str, str, str], int]) -> bytes:
    """What a worker with these counts shows, from a registry declared like the worker's."""
    registry = CollectorRegistry()
    pushed = Counter("nudgestream_push_exposures_total", "e", ["trigger", "segment", "group"], registry=registry)
    converted = Counter("nudgestream_push_conversions_total", "c", ["trigger", "segment", "group", "signal"], registry=registry)
    for labels, n in exposures.items():
        pushed.labels(*labels).inc(n)
    for labels, n in conversions.items():
        converted.labels(*labels).inc(n)
    return generate_latest(registry)


WORKER_1 = worker_exposition(
    {("post_purchase", "1", "treatment"): 600, ("post_purchase", "1", "control"): 40,
     ("browse_interest", "2", "treatment"): 100},
    {("post_purchase", "1", "treatment", "buy"): 30, ("post_purchase", "1", "treatment", "click"): 90,
     ("post_purchase", "1", "control", "buy"): 1},
)
WORKER_2 = worker_exposition(
    {("post_purchase", "2", "treatment"): 400, ("post_purchase", "2", "control"): 60},
    {("post_purchase", "2", "treatment", "buy"): 30, ("post_purchase", "2", "control", "buy"): 2},
)


def summed() -> dict[str, object]:
    counts = Counts()
    counts.add(WORKER_1.decode())
    counts.add(WORKER_2.decode())
    return counts.summary()


def test_counts_are_summed_over_workers_per_trigger_and_per_segment() -> None:
    figures = summed()
    trigger = figures["by_trigger"]["post_purchase"]  # type: ignore[index]
    assert trigger["treatment"]["exposures"] == 1000 and trigger["treatment"]["conversions"] == 60
    assert trigger["treatment"]["clicks"] == 90 and trigger["control"]["exposures"] == 100
    assert trigger["treatment"]["conversion"] == Rate(60, 1000).to_dict()
    assert trigger["treatment"]["ctr"] == Rate(90, 1000).to_dict()
    assert trigger["lift"] == Lift.of(Rate(60, 1000), Rate(3, 100)).to_dict()  # type: ignore[union-attr]
    assert trigger["ctr_lift"] == Lift.of(Rate(90, 1000), Rate(0, 100)).to_dict()  # type: ignore[union-attr]
    segment = figures["by_segment"]["1"]  # type: ignore[index]
    assert segment["treatment"]["exposures"] == 600 and segment["control"]["conversions"] == 1
    assert figures["by_trigger"]["browse_interest"]["lift"] is None, "no control group: no lift"  # type: ignore[index]


def test_the_table_shows_every_key_and_group_with_its_lift() -> None:
    text = table(summed())
    lift = Lift.of(Rate(60, 1000), Rate(3, 100))
    assert lift is not None
    assert f"{lift.value:.2f} ({lift.interval[0]:.2f}-{lift.interval[1]:.2f})" in text
    assert text.count("post_purchase") == 2 and "by segment" in text and "n/a" in text


@pytest.fixture
def served() -> Iterator[str]:
    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = WORKER_1 if self.path == "/metrics" else b"<html>not metrics</html>"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_report_json_reads_the_urls_given(served: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--url", f"{served}/metrics", "--url", f"{served}/metrics", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["by_trigger"]["post_purchase"]["treatment"]["exposures"] == 1200
    assert out["workers"] == [f"{served}/metrics"] * 2


def test_an_unreachable_url_or_a_page_that_is_no_worker_is_a_clear_error(
    served: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
    assert main(["report", "--url", closed]) == 1
    assert f"cannot read {closed}" in capsys.readouterr().err
    with pytest.raises(ReportError, match="not a nudgestream worker"):
        scrape(f"{served}/", 2.0)
    with pytest.raises(ReportError, match="cannot read"):
        report(["not a url"])
