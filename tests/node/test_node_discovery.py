"""Discovery on fixture sysfs trees of an HGX H100 host: every variant, every warning."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from gpucaas.errors import InvalidRequest, Unavailable
from gpucaas.node.discovery import (
    Bar,
    DeviceKind,
    Discovery,
    DiscoveryError,
    InvalidBDF,
    Severity,
    WarningCode,
    discover,
    is_vfio_driver,
    parse_bdf,
)
from tests.node.sysfs_fixture import (
    GPU_BDFS,
    GPU_GROUPS,
    NIC_BDF,
    NVME_BDF,
    NVSWITCH_BDFS,
    NVSWITCH_GROUP,
    MakeSysfs,
)

MIB = 1 << 20
GIB = 1 << 30
GPU_BARS = (Bar(0, 16 * MIB), Bar(2, 128 * GIB), Bar(4, 32 * MIB))


def codes(result: Discovery) -> list[tuple[WarningCode, str | None]]:
    return [(w.code, w.bdf) for w in result.warnings]


# -- a healthy host ---------------------------------------------------------------------------


def test_a_healthy_hgx_host_reports_8_gpus_and_4_nvswitches_in_pci_order(hgx_sysfs: Path) -> None:
    result = discover(hgx_sysfs)
    assert [d.bdf for d in result.devices] == sorted([*NVSWITCH_BDFS, *GPU_BDFS])
    assert [d.bdf for d in result.gpus] == list(GPU_BDFS)
    assert [d.bdf for d in result.nvswitches] == list(NVSWITCH_BDFS)
    assert result.warnings == ()


def test_other_vendors_are_not_reported(hgx_sysfs: Path) -> None:
    result = discover(hgx_sysfs)
    assert result.get(NIC_BDF) is None
    assert result.get(NVME_BDF) is None
    assert {d.vendor_id for d in result.devices} == {0x10DE}


def test_gpus_carry_id_model_driver_group_numa_bars_and_cdev(hgx_sysfs: Path) -> None:
    result = discover(hgx_sysfs)
    for i, gpu in enumerate(result.gpus):
        assert gpu.kind is DeviceKind.GPU
        assert (gpu.device_id, gpu.class_code, gpu.model) == (0x2330, 0x030200, "H100 SXM5")
        assert gpu.driver == "vfio-pci"
        assert gpu.iommu_group == GPU_GROUPS[i]
        assert gpu.iommu_group_members == (), "each GPU is alone in its group"
        assert gpu.numa_node == (0 if i < 4 else 1)
        assert gpu.bars == GPU_BARS, "a 64-bit BAR shows once, at its first slot"
        assert gpu.bar_size(2) == 128 * GIB
        assert gpu.bar_size(1) is None
        assert gpu.vfio_cdev == f"vfio{i}"


def test_nvswitches_share_one_group_and_list_each_other(hgx_sysfs: Path) -> None:
    for switch in discover(hgx_sysfs).nvswitches:
        assert (switch.kind, switch.model, switch.device_id) == (
            DeviceKind.NVSWITCH,
            "NVSwitch",
            0x22A3,
        )
        assert switch.class_code == 0x068000
        assert switch.iommu_group == NVSWITCH_GROUP
        assert switch.iommu_group_members == tuple(b for b in NVSWITCH_BDFS if b != switch.bdf)
        assert switch.bars == (Bar(0, 32 * MIB),)


def test_an_h200_board_is_named_from_the_board_models(make_sysfs: MakeSysfs) -> None:
    result = discover(make_sysfs(gpu_device_id=0x2335))
    assert {g.model for g in result.gpus} == {"H200"}
    assert result.warnings == ()


def test_an_unknown_device_id_is_named_by_its_id(make_sysfs: MakeSysfs) -> None:
    result = discover(make_sysfs(gpu_device_id=0x2324))
    assert {(g.kind, g.model) for g in result.gpus} == {(DeviceKind.GPU, "unknown 0x2324")}
    assert result.warnings == (), "8 GPUs with NVSwitches is a full HGX board"


def test_a_full_hgx_tree_is_discovered_well_within_50_ms(hgx_sysfs: Path) -> None:
    """No timing assertion (CI machines vary); the figure shows with ``pytest -s``."""
    discover(hgx_sysfs)  # warm the dentry cache, as a long-running agent has it
    runs = []
    for _ in range(20):
        start = time.perf_counter()
        discover(hgx_sysfs)
        runs.append(time.perf_counter() - start)
    print(f"discovery of a full HGX tree: median {sorted(runs)[10] * 1000:.2f} ms (budget 50 ms)")


# -- variants -------------------------------------------------------------------------------

VARIANT_WARNINGS = [
    ("ok", []),
    (
        "gpu-unbound",
        [(WarningCode.GPU_NOT_VFIO, "0000:9a:00.0"), (WarningCode.GPU_NOT_VFIO, "0000:db:00.0")],
    ),
    ("gpu-missing", [(WarningCode.GPU_COUNT, None)]),
    (
        "corrupt-file",
        [
            (WarningCode.UNREADABLE_FILE, "0000:3a:00.0"),
            (WarningCode.UNREADABLE_FILE, "0000:ab:00.0"),
        ],
    ),
    (
        "no-iommu",
        [(WarningCode.NVSWITCH_NOT_VFIO, b) for b in NVSWITCH_BDFS]
        + [(WarningCode.GPU_NOT_VFIO, b) for b in GPU_BDFS]
        + [(WarningCode.NO_IOMMU_GROUP, None)],
    ),
    ("split-nvswitch-groups", [(WarningCode.NVSWITCH_GROUPS_SPLIT, None)]),
    ("shared-group", [(WarningCode.GROUP_NOT_VIABLE, "0000:2a:00.0")]),
]


@pytest.mark.parametrize(
    ("variant", "expected"), VARIANT_WARNINGS, ids=[v for v, _ in VARIANT_WARNINGS]
)
def test_each_variant_gives_exactly_its_warnings(
    make_sysfs: MakeSysfs, variant: str, expected: list[tuple[WarningCode, str | None]]
) -> None:
    assert codes(discover(make_sysfs(variant))) == expected


def test_an_unbound_gpu_names_its_driver_and_the_fix(make_sysfs: MakeSysfs) -> None:
    result = discover(make_sysfs("gpu-unbound"))
    on_nvidia, unbound = result.warnings
    assert on_nvidia.severity is Severity.WARNING
    assert "GPU 0000:9a:00.0 (H100 SXM5) is bound to nvidia, not vfio-pci" in on_nvidia.message
    assert "has no driver bound" in unbound.message
    assert all("gpucaas node vfio bind" in w.message for w in result.warnings)
    gpu = result.get("9a:00.0")
    assert gpu is not None and gpu.driver == "nvidia" and gpu.vfio_cdev is None


def test_a_missing_gpu_is_an_info_and_the_rest_is_reported(make_sysfs: MakeSysfs) -> None:
    result = discover(make_sysfs("gpu-missing"))
    assert len(result.gpus) == 7 and result.get("0000:ba:00.0") is None
    (warning,) = result.warnings
    assert warning.severity is Severity.INFO
    assert "7 GPUs, not 8" in warning.message


def test_corrupt_files_are_named_and_the_device_is_still_reported(make_sysfs: MakeSysfs) -> None:
    root = make_sysfs("corrupt-file")
    result = discover(root)
    bars, numa = result.warnings
    assert str(root / "bus/pci/devices/0000:3a:00.0/resource") in bars.message
    assert "lines 1, 2 are not 'start end flags' in hex" in bars.message
    assert str(root / "bus/pci/devices/0000:ab:00.0/numa_node") in numa.message
    assert "'zero'" in numa.message
    broken_bars, broken_numa = result.get("0000:3a:00.0"), result.get("0000:ab:00.0")
    assert broken_bars is not None and broken_bars.bars == () and broken_bars.numa_node == 0
    assert broken_numa is not None and broken_numa.numa_node is None
    assert broken_numa.bars == GPU_BARS and broken_numa.driver == "vfio-pci"


def test_no_iommu_is_one_host_wide_warning_with_the_boot_options(make_sysfs: MakeSysfs) -> None:
    result = discover(make_sysfs("no-iommu"))
    assert all(d.iommu_group is None and d.iommu_group_members == () for d in result.devices)
    (no_iommu,) = [w for w in result.warnings if w.code is WarningCode.NO_IOMMU_GROUP]
    assert "intel_iommu=on" in no_iommu.message and "amd_iommu=on" in no_iommu.message
    assert "iommu=pt" in no_iommu.message


def test_split_nvswitch_groups_list_each_group(make_sysfs: MakeSysfs) -> None:
    (warning,) = discover(make_sysfs("split-nvswitch-groups")).warnings
    assert "group 12: 0000:05:00.0, 0000:06:00.0; group 13: 0000:07:00.0, 0000:08:00.0" in (
        warning.message
    )
    assert "Service VM" in warning.message


def test_a_group_shared_with_a_host_driver_names_the_device(make_sysfs: MakeSysfs) -> None:
    result = discover(make_sysfs("shared-group"))
    gpu = result.get("0000:2a:00.0")
    assert gpu is not None and gpu.iommu_group_members == (NIC_BDF,)
    (warning,) = result.warnings
    assert f"IOMMU group {GPU_GROUPS[1]} of GPU 0000:2a:00.0 also holds {NIC_BDF}" in (
        warning.message
    )
    assert "bound to mlx5_core" in warning.message


# -- edge cases built by hand on a healthy tree --------------------------------------------


def _move_into_group(root: Path, bdf: str, group: int) -> None:
    """Put device ``bdf`` into IOMMU group ``group`` (as a host without ACS would)."""
    device = (root / "bus/pci/devices" / bdf).resolve()
    old = Path(os.readlink(device / "iommu_group")).name
    (root / "kernel/iommu_groups" / old / "devices" / bdf).unlink()
    (device / "iommu_group").unlink()
    (device / "iommu_group").symlink_to(root / "kernel/iommu_groups" / str(group))
    (root / "kernel/iommu_groups" / str(group) / "devices" / bdf).symlink_to(device)


def _rebind(root: Path, bdf: str, driver: str | None) -> None:
    link = root / "bus/pci/devices" / bdf / "driver"
    link.unlink(missing_ok=True)
    if driver is not None:
        link.symlink_to(root / "bus/pci/drivers" / driver)


@pytest.mark.parametrize(
    ("member", "driver"),
    [("0000:17:00.0", "pcieport"), (NIC_BDF, "pci-stub"), (NIC_BDF, None), (NIC_BDF, "vfio-pci")],
    ids=["bridge-on-pcieport", "nic-on-pci-stub", "nic-unbound", "nic-on-vfio"],
)
def test_group_members_the_kernel_accepts_give_no_warning(
    hgx_sysfs: Path, member: str, driver: str | None
) -> None:
    _move_into_group(hgx_sysfs, member, GPU_GROUPS[0])
    _rebind(hgx_sysfs, member, driver)
    result = discover(hgx_sysfs)
    gpu = result.get(GPU_BDFS[0])
    assert gpu is not None and gpu.iommu_group_members == (member,)
    assert result.warnings == ()


def test_a_vfio_variant_driver_counts_as_vfio() -> None:
    assert is_vfio_driver("vfio-pci")
    assert is_vfio_driver("nvgrace-gpu-vfio-pci")
    assert is_vfio_driver("mlx5_vfio_pci")
    assert not is_vfio_driver("nvidia")
    assert not is_vfio_driver(None)


def test_an_unreadable_class_file_keeps_the_gpu_a_gpu(hgx_sysfs: Path) -> None:
    class_file = hgx_sysfs / "bus/pci/devices" / GPU_BDFS[2] / "class"
    class_file.unlink()
    class_file.mkdir()  # reading it fails with EISDIR, as an unreadable file would
    result = discover(hgx_sysfs)
    gpu = result.get(GPU_BDFS[2])
    assert gpu is not None and gpu.class_code is None
    assert (gpu.kind, gpu.model) == (DeviceKind.GPU, "H100 SXM5")
    (warning,) = result.warnings
    assert (warning.code, warning.bdf) == (WarningCode.UNREADABLE_FILE, GPU_BDFS[2])
    assert f"cannot read {class_file}: is a directory" in warning.message


def test_a_gpu_without_a_group_on_an_iommu_host_is_named(hgx_sysfs: Path) -> None:
    (hgx_sysfs / "bus/pci/devices" / GPU_BDFS[5] / "iommu_group").unlink()
    result = discover(hgx_sysfs)
    assert codes(result) == [(WarningCode.NO_IOMMU_GROUP, GPU_BDFS[5])]
    assert f"GPU {GPU_BDFS[5]} has no IOMMU group" in result.warnings[0].message


def test_numa_minus_one_means_no_affinity(hgx_sysfs: Path) -> None:
    (hgx_sysfs / "bus/pci/devices" / GPU_BDFS[0] / "numa_node").write_text("-1\n")
    gpu = discover(hgx_sysfs).get(GPU_BDFS[0])
    assert gpu is not None and gpu.numa_node is None


def test_a_host_without_nvidia_devices_says_so(tmp_path: Path) -> None:
    (tmp_path / "bus/pci/devices").mkdir(parents=True)
    result = discover(tmp_path)
    assert result.devices == ()
    assert [(w.code, w.severity) for w in result.warnings] == [(WarningCode.NO_GPUS, Severity.INFO)]


# -- errors ---------------------------------------------------------------------------------


def test_a_missing_sysfs_root_is_an_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError) as info:
        discover(tmp_path / "nope")
    assert isinstance(info.value, Unavailable)
    assert str(tmp_path / "nope") in str(info.value)
    assert "--sysfs" in str(info.value)


def test_a_root_without_a_pci_tree_is_an_error_naming_it(hgx_sysfs: Path) -> None:
    shutil.rmtree(hgx_sysfs / "bus")
    with pytest.raises(DiscoveryError, match="bus/pci/devices: no such directory"):
        discover(hgx_sysfs)


# -- BDFs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bdf"),
    [
        ("0000:1b:00.0", "0000:1b:00.0"),
        ("0000:1B:00.7", "0000:1b:00.7"),
        ("db:1f.1", "0000:db:1f.1"),
        ("10000:01:00.0", "10000:01:00.0"),
    ],
    ids=["canonical", "uppercase", "short-lspci-form", "vmd-domain"],
)
def test_parse_bdf_accepts_what_lspci_prints(text: str, bdf: str) -> None:
    assert parse_bdf(text) == bdf


@pytest.mark.parametrize("text", ["", "0000:1b:00", "0000:1b:20.0", "0000:1b:00.8", "gpu0"])
def test_parse_bdf_rejects_anything_else(text: str) -> None:
    with pytest.raises(InvalidBDF) as info:
        parse_bdf(text)
    assert isinstance(info.value, InvalidRequest)
    assert repr(text) in str(info.value) and "0000:1b:00.0" in str(info.value)
