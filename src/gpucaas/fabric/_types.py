"""What a board's fabric reports: partitions with their GPUs, and devices with failed links."""

from __future__ import annotations

from dataclasses import dataclass

from gpucaas.topology import ModuleId, PartitionId, format_module_ids


@dataclass(frozen=True, slots=True)
class PartitionGpu:
    """One GPU of a partition, as Fabric Manager describes it (fmFabricPartitionGpuInfo_t)."""

    physical_id: ModuleId
    """The GPU module ID (FM calls it physicalId)."""
    uuid: str
    pci_bus_id: str
    nvlinks_available: int
    nvlinks_max: int
    nvlink_line_rate_mbps: int


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One supported partition (fmFabricPartitionInfo_t)."""

    id: PartitionId
    active: bool
    gpus: tuple[PartitionGpu, ...]

    @property
    def module_ids(self) -> tuple[ModuleId, ...]:
        return tuple(sorted(g.physical_id for g in self.gpus))

    @property
    def nvlinks(self) -> int:
        """Sum of available NVLinks over the GPUs: the NVLINKS column of ``fmctl list``."""
        return sum(g.nvlinks_available for g in self.gpus)

    def __str__(self) -> str:
        return f"partition {self.id} (GPUs {format_module_ids(self.module_ids)})"


@dataclass(frozen=True, slots=True)
class FailedDevice:
    """A GPU or NVSwitch with failed NVLink ports (fmNvlinkFailedDeviceInfo_t)."""

    uuid: str
    pci_bus_id: str
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FailedDevices:
    """fmNvlinkFailedDevices_t: always empty on H100/H200, where FM does not report them."""

    gpus: tuple[FailedDevice, ...] = ()
    switches: tuple[FailedDevice, ...] = ()
