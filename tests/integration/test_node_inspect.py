"""``gpucaas node inspect`` on fixture sysfs trees, in-process and as a real process.

The trees come from running ``tests/node/sysfs_fixture.py`` as the script it also is; the
real process is the installed ``gpucaas`` console script. Also: the module-ID map and the
CDI spec made from it, as an operator runs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpucaas.cli.node import app

FIXTURE_SCRIPT = Path(__file__).resolve().parents[1] / "node" / "sysfs_fixture.py"
HEADER = "BDF           KIND      MODEL      DRIVER    IOMMU GROUP  NUMA  BAR2     VFIO CDEV"

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
    assert done.stdout.strip() == str(root)
    return root


def run_node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "gpucaas"), "node", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def healthy(tmp_path: Path) -> Path:
    return make_tree(tmp_path, "ok")


def test_inspect_prints_one_row_per_nvidia_device(healthy: Path) -> None:
    result = runner.invoke(app, ["inspect", "--sysfs", str(healthy)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == HEADER
    assert len(lines) == 13, "4 NVSwitches and 8 GPUs, no warnings"
    assert lines[1].split() == ["0000:05:00.0", "nvswitch", "NVSwitch", "vfio-pci", "12", "0"] + [
        "-",
        "vfio8",
    ]
    assert lines[5].split() == ["0000:18:00.0", "gpu", "H100", "SXM5", "vfio-pci", "24", "0"] + [
        "128",
        "GiB",
        "vfio0",
    ]
    assert not any(line.startswith("warning:") for line in lines)


def test_inspect_warnings_follow_the_table_and_exit_0(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "gpu-unbound")
    result = runner.invoke(app, ["inspect", "--sysfs", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[9].split()[:4] == ["0000:9a:00.0", "gpu", "H100", "SXM5"]
    assert lines[9].split()[4] == "nvidia"
    assert lines[12].split()[4] == "-", "no driver on GPU db"
    assert lines[13:] == [
        "warning: GPU 0000:9a:00.0 (H100 SXM5) is bound to nvidia, not vfio-pci, so it cannot "
        "be passed to a VM; run `gpucaas node vfio bind`",
        "warning: GPU 0000:db:00.0 (H100 SXM5) has no driver bound, not vfio-pci, so it cannot "
        "be passed to a VM; run `gpucaas node vfio bind`",
    ]


def test_inspect_marks_info_findings_as_info(tmp_path: Path) -> None:
    result = runner.invoke(app, ["inspect", "--sysfs", str(make_tree(tmp_path, "gpu-missing"))])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("info: this HGX host shows 7 GPUs, not 8")


def test_inspect_json_from_a_real_process(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "shared-group")
    done = run_node("inspect", "--sysfs", str(root), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == {"devices", "warnings"}
    assert len(data["devices"]) == 12
    gpu = next(d for d in data["devices"] if d["bdf"] == "0000:2a:00.0")
    assert gpu == {
        "bdf": "0000:2a:00.0",
        "kind": "gpu",
        "model": "H100 SXM5",
        "vendor_id": "0x10de",
        "device_id": "0x2330",
        "class_code": "0x030200",
        "driver": "vfio-pci",
        "iommu_group": 38,
        "iommu_group_members": ["0000:27:00.0"],
        "numa_node": 0,
        "bars": [
            {"index": 0, "size_bytes": 16 << 20},
            {"index": 2, "size_bytes": 128 << 30},
            {"index": 4, "size_bytes": 32 << 20},
        ],
        "vfio_cdev": "vfio1",
    }
    (warning,) = data["warnings"]
    assert warning["code"] == "group-not-viable"
    assert warning["severity"] == "warning"
    assert warning["bdf"] == "0000:2a:00.0"
    assert "0000:27:00.0" in warning["message"] and "mlx5_core" in warning["message"]


def test_inspect_text_from_a_real_process(healthy: Path) -> None:
    done = run_node("inspect", "--sysfs", str(healthy))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == HEADER
    assert done.stderr == ""


def test_a_missing_sysfs_root_exits_2_with_one_line(tmp_path: Path) -> None:
    done = run_node("inspect", "--sysfs", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: cannot discover PCI devices: {tmp_path / 'nope'}: ")
    assert len(done.stderr.splitlines()) == 1


DATA = Path(__file__).resolve().parents[1] / "node" / "data"


def test_capture_map_then_cdi_generate_and_validate(healthy: Path, tmp_path: Path) -> None:
    map_path, cdi_dir = tmp_path / "map.json", tmp_path / "cdi"
    done = run_node(
        "capture-map",
        "--from",
        str(DATA / "nvidia-smi-hgx-h100.xml"),
        "--map",
        str(map_path),
        "--sysfs",
        str(healthy),
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:9]]
    assert [r[0] for r in rows] == [str(m) for m in range(1, 9)]  # module-ID order
    assert [r[1] for r in rows] == [str(i) for i in range(8)]  # kubelet device IDs
    assert [r[2] for r in rows] != sorted(r[2] for r in rows)  # ... not PCI order
    done = run_node(
        "cdi", "generate", "--map", str(map_path), "--sysfs", str(healthy), "--dir", str(cdi_dir)
    )
    assert done.returncode == 0, done.stderr
    spec = json.loads((cdi_dir / "nvidia.com-gpu.json").read_text())
    assert spec["cdiVersion"] == "0.5.0" and spec["kind"] == "nvidia.com/gpu"
    assert [d["name"] for d in spec["devices"]] == [str(i) for i in range(8)]
    assert spec["containerEdits"]["deviceNodes"][0]["path"] == "/dev/vfio/vfio"
    done = run_node("cdi", "validate", str(cdi_dir / "nvidia.com-gpu.json"), "--dir", str(cdi_dir))
    assert done.returncode == 0 and done.stdout.strip().endswith("valid")
    (cdi_dir / "other.json").write_text(json.dumps(spec | {"devices": spec["devices"][:1]}))
    done = run_node("cdi", "validate", str(cdi_dir / "nvidia.com-gpu.json"), "--dir", str(cdi_dir))
    assert done.returncode == 2 and "conflicting-spec" in done.stdout  # a bad spec: bad input


def test_capture_map_refuses_a_map_that_does_not_match_the_gpus(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "gpu-missing")
    map_path = tmp_path / "map.json"
    done = run_node(
        "capture-map",
        "--from",
        str(DATA / "nvidia-smi-hgx-h100.xml"),
        "--map",
        str(map_path),
        "--sysfs",
        str(tree),
    )
    assert done.returncode == 2
    assert "does not match this node's GPUs" in done.stderr
    assert not map_path.exists()


def test_cdi_generate_without_a_map_says_how_to_make_one(healthy: Path, tmp_path: Path) -> None:
    done = run_node(
        "cdi", "generate", "--map", str(tmp_path / "none.json"), "--sysfs", str(healthy), "--stdout"
    )
    assert done.returncode == 2
    assert "capture-map" in done.stderr
