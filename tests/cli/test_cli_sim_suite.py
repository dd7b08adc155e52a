"""``gpucaas sim --suite``: the quality suite from the command line (short form only)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gpucaas.cli import app
from gpucaas.placement import DEFAULT_POLICY, POLICY_NAMES

runner = CliRunner()


def test_sim_suite_short_json_without_data(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["sim", "--suite", "--short", "--data", str(tmp_path / "none"), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["default"] == DEFAULT_POLICY
    assert doc["invalid_by_valid_policies"] == 0
    assert len(doc["skipped"]) == 2
    assert all(w["group"] == "synthetic" for w in doc["workloads"])
    assert set(doc["workloads"][0]["policies"]) == set(POLICY_NAMES)


def test_sim_suite_short_table(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sim", "--suite", "--short", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("fragmentation loss, % of capacity")
    assert lines[1].split()[:2] == ["WORKLOAD", DEFAULT_POLICY.upper()]
    assert any(line.startswith("invalid sets from partition-aware policies: 0") for line in lines)
