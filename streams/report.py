"""``nudgestream report``: CTR, conversion and lift against the control group, from /metrics.

Scrapes each worker's ``/metrics`` (every worker holds its own partitions' counts), sums
``nudgestream_push_exposures_total`` and ``nudgestream_push_conversions_total`` over the
workers, and gives per trigger kind and per segment, for each group (treatment: pushed,
control: held back): exposures, clicks, CTR, conversions (buys) and the conversion rate
with 95 % Wilson intervals, and the lift (treatment rate / control rate) of the
conversion rate and of the CTR with 95 % Katz intervals (:mod:`models.lift`).

The counters count since each worker started: the figures are those of the workers' current
lives (Prometheus, with ``increase()``, keeps them across restarts; see docs/PUSH.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from models.lift import Group, Lift, Rate, Tally
from streams.metrics import PUSH_CONVERSIONS, PUSH_EXPOSURES

DEFAULT_URL = "http://127.0.0.1:6066/metrics"
#: Family names as the exposition parser gives them (a counter's without ``_total``).
(EXPOSURES,) = (family.name for family in PUSH_EXPOSURES.describe())
(CONVERSIONS,) = (family.name for family in PUSH_CONVERSIONS.describe())
#: The labels the report groups by, in the order of its sections.
DIMENSIONS = ("trigger", "segment")


class ReportError(Exception):
    """A worker's /metrics could not be read or is not a nudgestream worker's."""


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", action="append", dest="urls", metavar="URL",
        help=f"a worker's /metrics URL; repeat for every worker (default {DEFAULT_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per URL (default 5)")


def scrape(url: str, timeout_s: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text: str = response.read().decode()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReportError(f"cannot read {url}: {reason} (is a worker running there?)") from None
    if EXPOSURES not in text:
        raise ReportError(f"{url} shows no {EXPOSURES}_total: not a nudgestream worker's /metrics")
    return text


class Counts:
    """Exposures, clicks and buys per (group, (dimension, value)), summed over workers."""

    def __init__(self) -> None:
        self.clicks = Tally()
        self.buys = Tally()

    def add(self, exposition: str) -> None:
        for family in text_string_to_metric_families(exposition):
            if family.name not in (EXPOSURES, CONVERSIONS):
                continue
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                labels, value = sample.labels, int(sample.value)
                group = Group(labels["group"])
                for dimension in DIMENSIONS:
                    key = (dimension, labels[dimension])
                    if family.name == EXPOSURES:
                        self.clicks.exposures[group, key] += value
                        self.buys.exposures[group, key] += value
                    elif labels["signal"] == "click":
                        self.clicks.conversions[group, key] += value
                    elif labels["signal"] == "buy":
                        self.buys.conversions[group, key] += value

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"by_{d}": {} for d in DIMENSIONS}
        # Keys with conversions only too: a worker restarted since their exposures.
        seen: set[tuple[str, str]] = {
            key for tally in (self.clicks, self.buys) for counter in (tally.exposures, tally.conversions)
            for _, key in counter if isinstance(key, tuple)
        }
        for key in sorted(seen):
            dimension, value = key
            row: dict[str, Any] = {}
            for group in Group:
                row[group.value] = {
                    "exposures": self.buys.exposures[group, key],
                    "clicks": self.clicks.conversions[group, key],
                    "ctr": _rate(self.clicks, group, key).to_dict(),
                    "conversions": self.buys.conversions[group, key],
                    "conversion": _rate(self.buys, group, key).to_dict(),
                }
            row["lift"] = _lift(self.buys, key)
            row["ctr_lift"] = _lift(self.clicks, key)
            out[f"by_{dimension}"][value] = row
        return out


def _rate(tally: Tally, group: Group, key: Any) -> Rate:
    # A worker restarted since a decision was recorded counts its conversion, not its
    # exposure: never more conversions than exposures.
    trials = tally.exposures[group, key]
    return Rate(min(tally.conversions[group, key], trials), trials)


def _lift(tally: Tally, key: Any) -> dict[str, Any] | None:
    lift = Lift.of(_rate(tally, Group.TREATMENT, key), _rate(tally, Group.CONTROL, key))
    return lift.to_dict() if lift is not None else None


def report(urls: Iterable[str], timeout_s: float = 5.0) -> dict[str, Any]:
    counts = Counts()
    urls = list(urls)
    for url in urls:
        counts.add(scrape(url, timeout_s))
    return {"workers": urls, **counts.summary()}


def table(summary: dict[str, Any]) -> str:
    """The summary as text: one line per (key, group), the lift beside the treatment's."""
    lines = []
    header = (f"{'':24} {'group':9} {'exposures':>9} {'clicks':>7} {'CTR':>21} "
              f"{'conv.':>6} {'conversion rate':>21}  lift (95 %)")
    for dimension in DIMENSIONS:
        rows = summary[f"by_{dimension}"]
        lines += ["", f"by {dimension}", header]
        if not rows:
            lines.append("  (no exposures yet)")
        for key, row in rows.items():
            for group in Group:
                figures = row[group.value]
                lift = _lift_text(row["lift"]) if group is Group.TREATMENT else ""
                lines.append(
                    f"{key:24.24} {group.value:9} {figures['exposures']:9,} {figures['clicks']:7,} "
                    f"{_rate_text(figures['ctr']):>21} {figures['conversions']:6,} "
                    f"{_rate_text(figures['conversion']):>21}  {lift}"
                )
    return "\n".join(lines[1:])


def _rate_text(rate: dict[str, Any]) -> str:
    return f"{rate['rate']:6.2%} ({rate['low']:.1%}-{rate['high']:.1%})"


def _lift_text(lift: dict[str, Any] | None) -> str:
    if lift is None:
        return "n/a (no conversion, or a group without exposures)"
    hurts = "  pushes hurt" if lift["high"] < 1 else ""
    return f"{lift['lift']:.2f} ({lift['low']:.2f}-{lift['high']:.2f}){hurts}"


def run_report(args: argparse.Namespace) -> int:
    urls: Sequence[str] = args.urls or [DEFAULT_URL]
    try:
        summary = report(urls, args.timeout)
    except ReportError as exc:
        print(f"nudgestream report: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    return 0
