"""`nudgestream replay` and `nudgestream evaluate` on a real log, scored by the reference tool."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streams.cli import main

pytestmark = pytest.mark.slow


def test_replay_decisions_and_evaluate_agree_with_the_reference_scorer(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = shared_data / "rees46-3h-dev.csv"
    decisions = tmp_path / "decisions.jsonl"
    assert main(["replay", "--events", str(log), "--decisions-out", str(decisions), "--no-quiet-hours"]) == 0
    capsys.readouterr()
    reference = json.loads(
        subprocess.run(
            [sys.executable, str(shared_data.parent / "tools" / "push_precision.py"), str(log),
             str(decisions), "--horizon-h", "1"],
            capture_output=True, text=True, check=True,
        ).stdout
    )
    assert main(["evaluate", "--events", str(log), "--decisions", str(decisions), "--horizon-h", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    push = report["push"]
    for key in ("decisions", "pushed_new", "precision_new", "baseline_precision_new", "coview_precision_new"):
        assert push[key] == reference[key], key
    assert report["next_item"]["recommenders"]["cooccurrence"]["hr@10"] > 0


def test_evaluate_takes_the_next_item_list_length_and_fallback(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (shared_data / "rees46-3h-dev.csv").read_text().splitlines()[:3000]
    log = tmp_path / "head.csv"
    log.write_text("\n".join(lines) + "\n")
    reports = {}
    for fallback in ("overall", "category"):
        args = ["evaluate", "--events", str(log), "--k", "5", "--fallback", fallback, "--json",
                "--no-learning"]
        assert main(args) == 0
        reports[fallback] = json.loads(capsys.readouterr().out)["next_item"]
    assert all(report["k"] == 5 for report in reports.values())
    assert "hr@5" in reports["overall"]["recommenders"]["cooccurrence"]
    assert reports["overall"]["config"]["fallback"] == "overall"
    assert reports["category"]["config"]["fallback"] == "category"


def _write_log(path: Path) -> None:
    from tests.unit.test_push_learning import synthetic_log

    rows = [f"{e.ts},{e.user_id},{e.type.value},{e.item_id},{e.category},"
            for e in synthetic_log(60)]
    path.write_text("ts,user_id,event,item_id,category,price\n" + "\n".join(rows) + "\n")


def test_evaluate_reports_the_holdout_lift_and_the_learning_policy_beside_the_static_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log.csv"
    _write_log(log)
    base = ["evaluate", "--events", str(log), "--horizon-h", "0.5", "--no-quiet-hours", "--json"]
    assert main(base) == 0
    report = json.loads(capsys.readouterr().out)
    overall = report["lift"]["all"]
    assert overall["treatment"]["trials"] == report["push"]["decisions"]
    assert overall["control"]["trials"] == report["push"]["unsent"]["holdout"]["holdout"]
    learning = report["learning"]
    assert learning["static"]["precision_new"] == report["push"]["precision_new"]
    assert learning["precision_ratio"] == pytest.approx(
        learning["learning"]["precision_new"] / learning["static"]["precision_new"], abs=1e-3)
    assert learning["learner"]["skipped"]["bandit"] > 0

    assert main([*base, "--no-bandit", "--no-fatigue", "--no-sendtime"]) == 0
    off = json.loads(capsys.readouterr().out)["learning"]
    assert off["learning"] == off["static"] and off["learner"]["skipped"] == {}
    assert main([*base, "--no-learning"]) == 0
    assert "learning" not in json.loads(capsys.readouterr().out)
