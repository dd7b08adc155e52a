"""``gpucaas node vfio`` on fixture sysfs trees, in-process (CliRunner) and as a real process.

The trees come from running ``tests/node/sysfs_fixture.py`` as a script; writes go through
``--simulate-kernel`` (FixtureKernel), which changes the tree as the kernel would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from gpucaas.cli.node_vfio import app

FIXTURE_SCRIPT = Path(__file__).resolve().parents[1] / "node" / "sysfs_fixture.py"
GPU_9A, GPU_DB = "0000:9a:00.0", "0000:db:00.0"

runner = CliRunner()


def make_tree(tmp_path: Path, variant: str) -> Path:
    root = tmp_path / variant
    done = subprocess.run(
        [sys.executable, str(FIXTURE_SCRIPT), str(root), "--variant", variant],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return root


def run_vfio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "gpucaas"), "node", "vfio", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def files(root: Path) -> dict[str, bytes | str]:
    return {
        str(p.relative_to(root)): (str(p.readlink()) if p.is_symlink() else p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_dry_run_prints_the_writes_and_writes_nothing(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "gpu-unbound")
    before = files(root)

    result = runner.invoke(app, ["bind", "--sysfs", str(root), "--dry-run", "--simulate-kernel"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "dry run: bind would move 2 devices; nothing written"
    assert lines[1] == f"GPU {GPU_9A} (now nvidia; requested)"
    assert lines[2:5] == [
        f"  echo vfio-pci > {root}/bus/pci/devices/{GPU_9A}/driver_override",
        f"  echo {GPU_9A} > {root}/bus/pci/drivers/nvidia/unbind",
        f"  echo {GPU_9A} > {root}/bus/pci/drivers_probe",
    ]
    assert lines[5] == f"GPU {GPU_DB} (now no driver; requested)"
    assert files(root) == before


def test_bind_then_status_then_bind_again(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "gpu-unbound")

    first = runner.invoke(app, ["bind", "--sysfs", str(root), "--simulate-kernel"])
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[:3] == [
        "DEVICE            BEFORE  AFTER",
        f"GPU {GPU_9A}  nvidia  vfio-pci",
        f"GPU {GPU_DB}  -       vfio-pci",
    ]
    assert "bind: 2 devices moved, 6 already on vfio-pci" in first.stdout

    shown = runner.invoke(app, ["status", "--sysfs", str(root), "--json"])
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert document["gpus_ready"] is True
    assert {d["bdf"]: d["driver_override"] for d in document["devices"]}[GPU_9A] == "vfio-pci"

    again = runner.invoke(app, ["bind", "--sysfs", str(root), "--simulate-kernel"])
    assert again.exit_code == 0, again.output
    assert again.stdout == "nothing to do: 8 devices already on vfio-pci\n"


def test_status_table_names_what_blocks_a_group(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "shared-group")
    result = runner.invoke(app, ["status", "--sysfs", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "BDF", "KIND", "MODEL", "DRIVER", "OVERRIDE", "IOMMU", "GROUP", "GROUP", "READY"
    ]  # fmt: skip
    assert lines[-1] == (
        "not ready: 0000:2a:00.0: device 0000:27:00.0 (class 0x020700) on mlx5_core"
    )


def test_a_nic_in_a_gpu_group_is_one_line_on_stderr_and_nothing_changes(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "shared-group")
    before = files(root)

    result = runner.invoke(app, ["bind", "--sysfs", str(root), "--simulate-kernel"])

    assert result.exit_code == 1  # refused by the host's state (a Conflict), not bad input
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: cannot bind: IOMMU group 38 of GPU 0000:2a:00.0 ")
    assert "0000:27:00.0" in result.stderr and "mlx5_core" in result.stderr
    assert files(root) == before


def test_unbind_json_reports_each_change_and_group(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "ok")
    result = runner.invoke(
        app,
        ["unbind", "--sysfs", str(root), "--simulate-kernel", "--device", "9a:00.0", "--json"],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["action"] == "unbind" and document["dry_run"] is False
    assert document["changes"] == [
        {
            "bdf": GPU_9A,
            "device": f"GPU {GPU_9A}",
            "driver_before": "vfio-pci",
            "driver_after": None,
            "driver_override_before": None,
            "driver_override_after": None,
            "changed": True,
        }
    ]
    assert document["groups"] == [
        {"group": 112, "complete_before": False, "complete_after": True, "pending": []}
    ]


def test_dry_run_json_lists_the_steps(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "ok")
    result = runner.invoke(
        app, ["unbind", "--sysfs", str(root), "--include-nvswitches", "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["dry_run"] is True
    assert len(document["moves"]) == 12
    assert [s["kind"] for s in document["moves"][0]["steps"]] == ["unbind", "probe"]
    assert document["moves"][0]["steps"][0]["shell"] == (
        f"echo 0000:05:00.0 > {root}/bus/pci/drivers/vfio-pci/unbind"
    )


def test_every_command_has_help_ending_with_an_example() -> None:
    for command in ("bind", "unbind", "status"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example: gpucaas node vfio " + command in result.stdout


def test_as_a_real_process_bind_and_unbind_round_trip(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "gpu-unbound")

    bound = run_vfio("bind", "--sysfs", str(root), "--simulate-kernel", "--json")
    assert bound.returncode == 0, bound.stderr
    assert bound.stderr == ""
    moved = [c["bdf"] for c in json.loads(bound.stdout)["changes"]]
    assert moved == [GPU_9A, GPU_DB]

    released = run_vfio("unbind", "--sysfs", str(root), "--simulate-kernel")
    assert released.returncode == 0, released.stderr
    assert "unbind: 8 devices moved, 0 already off vfio-pci" in released.stdout

    shown = run_vfio("status", "--sysfs", str(root), "--json")
    assert shown.returncode == 0, shown.stderr
    gpus = [d for d in json.loads(shown.stdout)["devices"] if d["kind"] == "gpu"]
    assert [(d["driver"], d["group_ready"]) for d in gpus] == [(None, False)] * 8


def test_as_a_real_process_a_missing_tree_is_one_line_without_traceback(tmp_path: Path) -> None:
    done = run_vfio("bind", "--sysfs", str(tmp_path / "nope"), "--dry-run")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: cannot discover PCI devices: {tmp_path / 'nope'}: ")
