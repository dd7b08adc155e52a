"""``fmctl --nvfm`` as a real process, straight to "Fabric Manager" through libnvfm (the C
stand-in the tests compile; its state lives in the process, so each command starts clean)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def fmctl(library: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "fmctl"
    if not script.exists():
        pytest.skip("the fmctl console script is not installed; run `make test` (pip -e .)")
    return subprocess.run(
        [str(script), "--nvfm", "--nvfm-library", str(library), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_list_status_and_failed_devices(fakenvfm_library: Path) -> None:
    done = fmctl(fakenvfm_library, "list")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2].split() == ["0", "Inactive", "8", "144", "1,2,3,4,5,6,7,8"]
    assert json.loads(fmctl(fakenvfm_library, "--json", "status").stdout)["active"] == []
    assert fmctl(fakenvfm_library, "failed-devices").returncode == 0


def test_activate_and_refusals(fakenvfm_library: Path) -> None:
    assert fmctl(fakenvfm_library, "activate", "--gpus", "5,7").stdout == "partition 5 activated\n"
    done = fmctl(fakenvfm_library, "activate", "40")
    assert done.returncode == 1 and "FM_ST_BADPARAM (-1)" in done.stderr
    done = fmctl(fakenvfm_library, "deactivate", "3")
    assert done.returncode == 1 and "FM_ST_UNINITIALIZED (-4)" in done.stderr
    assert fmctl(fakenvfm_library, "set-activated", "1,5").returncode == 0
    done = fmctl(fakenvfm_library, "--address", "fm.example.com", "list")
    assert done.returncode == 2 and "not an IPv4 address" in done.stderr
