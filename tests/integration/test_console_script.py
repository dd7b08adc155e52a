"""The installed ``gpucaas`` console script, run as a user runs it (a real process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpucaas.placement import POLICY_NAMES


def gpucaas() -> str:
    script = Path(sys.executable).parent / "gpucaas"
    if script.exists():
        return str(script)
    found = shutil.which("gpucaas")
    if found is None:
        pytest.skip("the gpucaas console script is not installed; run `make test` (pip -e .)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([gpucaas(), *args], capture_output=True, text=True, timeout=120)


def test_topology_show_from_the_shell() -> None:
    done = run("topology", "show", "hgx-h100-8")
    assert done.returncode == 0, done.stderr
    assert "PARTITION ID  GPUs  NVLINKS  GPU PHYSICAL IDs" in done.stdout
    assert done.stdout.splitlines()[-1].split() == ["14", "1", "0", "8"]


def test_errors_exit_2_without_a_traceback() -> None:
    done = run("sim", "--synthetic", "mix=3:1,pods=5", "--board", "nope")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ")


def test_sim_on_the_shared_trace_writes_the_report(default_trace: Path, tmp_path: Path) -> None:
    done = run(
        "sim",
        "--trace",
        str(default_trace),
        "--nodes",
        "6",
        "--policy",
        "all",
        "--report",
        str(tmp_path),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["config"]["capacity_gpus"] == 48
    assert len(data["policies"]) == len(POLICY_NAMES)  # every registered policy and fluid
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "allocation.png",
        "fragmentation.png",
        "report.json",
    ]
