"""Fixtures for the node tests: fixture sysfs trees of an HGX H100 host (sysfs_fixture.py),
its GPUs as the kubelet sees them, and their VFIO device nodes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from gpucaas.node import KubeletGpu, kubelet_gpus
from gpucaas.node.discovery import discover
from gpucaas.node.modulemap import parse_nvidia_smi_xml
from tests.node.sysfs_fixture import H100_SXM5, MakeSysfs, make_hgx_h100_tree

NVIDIA_SMI = Path(__file__).parent / "data" / "nvidia-smi-hgx-h100.xml"


@pytest.fixture
def make_sysfs(tmp_path: Path) -> MakeSysfs:
    """A factory: ``make_sysfs("gpu-unbound", gpu_device_id=0x2335)`` writes a fresh tree
    (a new directory on every call) and returns its sysfs root."""
    counter = itertools.count()

    def make(variant: str = "ok", *, gpu_device_id: int = H100_SXM5) -> Path:
        root = tmp_path / f"sysfs-{variant}-{next(counter)}"
        return make_hgx_h100_tree(root, variant=variant, gpu_device_id=gpu_device_id)

    return make


@pytest.fixture
def hgx_sysfs(make_sysfs: MakeSysfs) -> Path:
    """The sysfs root of a healthy HGX H100 host: 8 GPUs and 4 NVSwitches on vfio-pci."""
    return make_sysfs("ok")


@pytest.fixture
def gpus(hgx_sysfs: Path) -> tuple[KubeletGpu, ...]:
    """The fixture host's GPUs: device IDs "0".."7" are modules 1..8."""
    return kubelet_gpus(discover(hgx_sysfs), parse_nvidia_smi_xml(NVIDIA_SMI))


@pytest.fixture
def dev_root(tmp_path: Path, gpus: tuple[KubeletGpu, ...]) -> Path:
    """A ``/dev`` with the VFIO group node of every GPU."""
    for gpu in gpus:
        (tmp_path / "dev" / "vfio").mkdir(parents=True, exist_ok=True)
        (tmp_path / "dev" / "vfio" / str(gpu.iommu_group)).touch()
    return tmp_path / "dev"
