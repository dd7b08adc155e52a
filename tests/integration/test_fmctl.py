"""``fmctl`` run as an operator runs it: a real process per command, a shared state file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]

LIST_H100 = """\
PARTITION ID  STATUS    GPUs  NVLINKS  GPU PHYSICAL IDs
------------  ------    ----  -------  ----------------
0             Inactive  8     144      1,2,3,4,5,6,7,8
1             Inactive  4     72       1,2,3,4
2             Inactive  4     72       5,6,7,8
3             Inactive  2     36       1,3
4             Inactive  2     36       2,4
5             Inactive  2     36       5,7
6             Inactive  2     36       6,8
7             Inactive  1     0        1
8             Inactive  1     0        2
9             Inactive  1     0        3
10            Inactive  1     0        4
11            Inactive  1     0        5
12            Inactive  1     0        6
13            Inactive  1     0        7
14            Inactive  1     0        8
"""


def fmctl_path() -> str:
    script = Path(sys.executable).parent / "fmctl"
    if script.exists():
        return str(script)
    found = shutil.which("fmctl")
    if found is None:
        pytest.skip("the fmctl console script is not installed; run `make test` (pip -e .)")
    return found


@pytest.fixture
def fmctl(tmp_path: Path) -> Run:
    state = tmp_path / "fabric.json"

    def run(*args: str, simulated: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["--simulated", str(state)] if simulated else []
        return subprocess.run(
            [fmctl_path(), *prefix, *args], capture_output=True, text=True, timeout=60
        )

    return run


def test_list_prints_the_seed_table(fmctl: Run) -> None:
    done = fmctl("list")
    assert done.returncode == 0, done.stderr
    assert done.stdout == LIST_H100


def test_activate_deactivate_status_and_json(fmctl: Run) -> None:
    assert fmctl("activate", "3").stdout == "partition 3 activated\n"
    assert fmctl("activate", "--gpus", "2,4").stdout == "partition 4 activated\n"
    listed = fmctl("list").stdout.splitlines()
    assert listed[5].split()[:2] == ["3", "Active"] and listed[6].split()[:2] == ["4", "Active"]
    status = json.loads(fmctl("--json", "status").stdout)
    assert status == {"partitions": 15, "active": [3, 4], "gpus_in_active_partitions": [1, 2, 3, 4]}
    assert fmctl("deactivate", "3").returncode == 0
    parts = json.loads(fmctl("--json", "list").stdout)
    assert [p["id"] for p in parts if p["active"]] == [4]
    assert parts[0]["gpu_info"][0]["nvlinks_max"] == 18


def test_fabric_manager_refusals_exit_1_with_code_and_meaning(fmctl: Run) -> None:
    fmctl("activate", "3")
    done = fmctl("activate", "1")
    assert done.returncode == 1
    assert "FM_ST_IN_USE (-7)" in done.stderr and "overlaps an active partition" in done.stderr
    done = fmctl("deactivate", "5")
    assert done.returncode == 1 and "FM_ST_UNINITIALIZED (-4)" in done.stderr
    done = fmctl("activate", "15")
    assert done.returncode == 1 and "FM_ST_BADPARAM (-1)" in done.stderr


def test_bad_input_exits_2_and_changes_nothing(fmctl: Run, tmp_path: Path) -> None:
    fmctl("activate", "3")
    before = (tmp_path / "fabric.json").read_text()
    done = fmctl("activate", "--gpus", "1,2")
    assert done.returncode == 2
    assert "partitions containing them: 0 (GPUs 1-8), 1 (GPUs 1-4)" in done.stderr
    assert fmctl("activate").returncode == 2
    assert fmctl("set-activated", "1,x").returncode == 2
    assert fmctl("--board", "hgx-a100-8", "list").returncode == 2
    assert (tmp_path / "fabric.json").read_text() == before


def test_corrupt_state_file_is_refused_and_kept(fmctl: Run, tmp_path: Path) -> None:
    (tmp_path / "fabric.json").write_text("{oops")
    done = fmctl("list")
    assert done.returncode == 2
    assert "fabric.json is unusable: not valid JSON" in done.stderr
    assert (tmp_path / "fabric.json").read_text() == "{oops"


def test_set_activated_and_failed_devices(fmctl: Run) -> None:
    done = fmctl("set-activated", "5,6")
    assert done.returncode == 0 and done.stdout == "activated set is now: 5, 6\n"
    assert json.loads(fmctl("--json", "status").stdout)["active"] == [5, 6]
    assert fmctl("set-activated", "none").returncode == 0
    assert fmctl("failed-devices").stdout == "no devices with failed NVLinks\n"
    assert json.loads(fmctl("--json", "failed-devices").stdout) == {"gpus": [], "switches": []}


def test_unreachable_fm_controller_exits_3(fmctl: Run, tmp_path: Path) -> None:
    done = fmctl("--address", str(tmp_path / "absent.sock"), "list", simulated=False)
    assert done.returncode == 3
    assert "cannot reach the fm-controller at unix:" in done.stderr


def test_unreachable_fabric_manager_exits_3(fmctl: Run) -> None:
    done = fmctl("--nvfm", "--nvfm-library", "/nonexistent/libnvfm.so.1", "list", simulated=False)
    assert done.returncode == 3, done.stderr
    assert "/nonexistent/libnvfm.so.1" in done.stderr
