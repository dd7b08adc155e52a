"""The host snapshot VFIO planning works on: discovery plus the driver, class and
``driver_override`` of every member of the NVIDIA devices' IOMMU groups."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gpucaas.node.discovery import (
    BDF,
    NVIDIA_VENDOR_ID,
    SYSFS_ROOT,
    Discovery,
    discover,
    is_vfio_driver,
)

_PCI_STUB: Final = "pci-stub"
"""A placeholder driver that parks a device for assignment; the kernel accepts it in a VFIO
group, so a member on pci-stub is left where it is."""
_BRIDGE_CLASSES: Final = frozenset({0x0604, 0x0607, 0x0609})
"""PCI-PCI, CardBus and semi-transparent bridges (class >> 8): they stay on their driver."""
_NO_OVERRIDE: Final = "(null)"
"""What the kernel shows in ``driver_override`` when none is set."""


@dataclass(frozen=True, slots=True)
class PciFunction:
    """What binding needs to know about one PCI function, NVIDIA or not."""

    bdf: BDF
    vendor_id: int | None
    class_code: int | None
    """24-bit class code; None when unreadable."""
    driver: str | None
    driver_override: str | None
    """None when no override is set (sysfs shows ``(null)``)."""
    iommu_group: int | None

    @property
    def is_nvidia(self) -> bool:
        return self.vendor_id == NVIDIA_VENDOR_ID

    @property
    def is_bridge(self) -> bool:
        return self.class_code is not None and self.class_code >> 8 in _BRIDGE_CLASSES

    @property
    def on_vfio(self) -> bool:
        return is_vfio_driver(self.driver)


@dataclass(frozen=True, slots=True)
class PciHost:
    """A snapshot of a host for VFIO decisions: discovery plus every group member's state."""

    sysfs_root: Path
    discovery: Discovery
    functions: Mapping[BDF, PciFunction]
    """Every NVIDIA device and every member of their IOMMU groups."""

    def group(self, group: int) -> tuple[PciFunction, ...]:
        """The members of IOMMU group ``group`` (any vendor), in PCI order."""
        return tuple(
            sorted(
                (f for f in self.functions.values() if f.iommu_group == group), key=lambda f: f.bdf
            )
        )


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_hex(path: str) -> int | None:
    text = _read_text(path)
    try:
        return None if text is None else int(text, 16)
    except ValueError:
        return None


def _link_name(path: str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _read_function(devices_dir: str, bdf: BDF, group: int | None) -> PciFunction:
    base = os.path.join(devices_dir, bdf)
    override = _read_text(f"{base}/driver_override")
    return PciFunction(
        bdf=bdf,
        vendor_id=_read_hex(f"{base}/vendor"),
        class_code=_read_hex(f"{base}/class"),
        driver=_link_name(f"{base}/driver"),
        driver_override=None if override in (None, "", _NO_OVERRIDE) else override,
        iommu_group=group,
    )


def read_host(sysfs_root: Path = SYSFS_ROOT) -> PciHost:
    """Discover the NVIDIA devices under ``sysfs_root`` and read each group member's state.

    Raises :class:`~gpucaas.node.DiscoveryError` when there is no PCI tree under the root.
    """
    root = Path(sysfs_root)
    discovery = discover(root)
    devices_dir = str(root / "bus" / "pci" / "devices")
    functions: dict[BDF, PciFunction] = {}
    for device in discovery.devices:
        functions[device.bdf] = _read_function(devices_dir, device.bdf, device.iommu_group)
        for member in device.iommu_group_members:
            if member not in functions:
                functions[member] = _read_function(devices_dir, member, device.iommu_group)
    return PciHost(sysfs_root=root, discovery=discovery, functions=functions)
