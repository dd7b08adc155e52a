"""Per GPU and NVSwitch: is its IOMMU group ready for VFIO?"""

from __future__ import annotations

from dataclasses import dataclass

from gpucaas.node.discovery import (
    BDF,
    DeviceKind,
)

from ._host import PciHost
from ._plan import _bind_done, _label


@dataclass(frozen=True, slots=True)
class DeviceVfioState:
    """One GPU or NVSwitch: its driver, and whether its IOMMU group can go to a VM."""

    bdf: BDF
    kind: DeviceKind
    model: str
    driver: str | None
    driver_override: str | None
    iommu_group: int | None
    group_ready: bool
    """Every non-bridge member of the group is on vfio-pci (or parked on pci-stub)."""
    blocking: tuple[str, ...]
    """The members that keep the group from being ready, labelled with their driver."""


@dataclass(frozen=True, slots=True)
class VfioStatus:
    """Per GPU and NVSwitch, whether it is ready for VFIO."""

    devices: tuple[DeviceVfioState, ...]

    @property
    def gpus_ready(self) -> bool:
        gpus = [d for d in self.devices if d.kind is DeviceKind.GPU]
        return bool(gpus) and all(d.group_ready for d in gpus)

    @property
    def nvswitches_ready(self) -> bool:
        return all(d.group_ready for d in self.devices if d.kind is DeviceKind.NVSWITCH)


def status(host: PciHost) -> VfioStatus:
    """Each GPU's and NVSwitch's driver and whether its whole IOMMU group is VFIO-ready.

    A device without an IOMMU group is never ready. Pure: reads only the snapshot.
    """
    states: list[DeviceVfioState] = []
    for device in host.discovery.devices:
        if device.kind is DeviceKind.OTHER:
            continue
        function = host.functions[device.bdf]
        if device.iommu_group is None:
            blocking: tuple[str, ...] = (f"{_label(host, function)} has no IOMMU group",)
        else:
            blocking = tuple(
                f"{_label(host, f)} on {f.driver or 'no driver'}"
                for f in host.group(device.iommu_group)
                if not _bind_done(f)
            )
        states.append(
            DeviceVfioState(
                bdf=device.bdf,
                kind=device.kind,
                model=device.model,
                driver=function.driver,
                driver_override=function.driver_override,
                iommu_group=device.iommu_group,
                group_ready=not blocking,
                blocking=blocking,
            )
        )
    return VfioStatus(devices=tuple(states))
