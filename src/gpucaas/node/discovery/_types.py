"""What discovery reports: typed, frozen records of the NVIDIA PCI devices on one host.

These records cross from the sysfs reader to the CLI, the VFIO binder, the CDI generator
and the device plugin, so they are plain frozen dataclasses with no I/O and no behaviour
beyond small lookups. A GPU is named here by its PCI address (:data:`BDF`); its module ID
comes only from the module-ID map, never from PCI order.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NewType

from ._errors import InvalidBDF

BDF = NewType("BDF", str)
"""A PCI address as sysfs names it: ``domain:bus:device.function``, lowercase hex,
e.g. ``0000:1b:00.0``. Build one with :func:`parse_bdf`."""

NVIDIA_VENDOR_ID = 0x10DE

_BDF_RE = re.compile(r"^(?:([0-9a-f]{4,8}):)?([0-9a-f]{2}):([01][0-9a-f])\.([0-7])$")


def parse_bdf(text: str) -> BDF:
    """The canonical :data:`BDF` for ``text``.

    Accepts what ``lspci`` and ``nvidia-smi`` print: upper or lower case, with or without
    the domain (``1b:00.0`` means ``0000:1b:00.0``), 8-digit domains shortened as sysfs
    does. Raises :class:`InvalidBDF` for anything else.
    """
    match = _BDF_RE.match(text.strip().lower())
    if match is None:
        raise InvalidBDF(text)
    domain, bus, device, function = match.groups()
    # nvidia-smi prints an 8-digit domain (00000000:18:00.0); sysfs uses 4 (VMD: 5).
    return BDF(f"{int(domain or '0', 16):04x}:{bus}:{device}.{function}")


class DeviceKind(enum.StrEnum):
    """What an NVIDIA PCI function is, from its class code."""

    GPU = "gpu"
    """Class 0x0302xx (3D controller): a datacenter GPU."""
    NVSWITCH = "nvswitch"
    """Class 0x0680xx (other bridge): an NVSwitch, owned by the Service VM."""
    OTHER = "other"
    """Anything else NVIDIA makes (audio functions, USB controllers, ...)."""


class Severity(enum.StrEnum):
    """How much a discovery warning matters."""

    WARNING = "warning"
    """Something to fix before the device can be handed to a tenant."""
    INFO = "info"
    """Worth knowing, possibly intended (e.g. a GPU removed for repair)."""


class WarningCode(enum.StrEnum):
    """What a discovery warning is about; stable strings for scripts and the JSON output."""

    GPU_NOT_VFIO = "gpu-not-vfio"
    """A GPU is not bound to vfio-pci, so it cannot be passed to a VM."""
    NVSWITCH_NOT_VFIO = "nvswitch-not-vfio"
    """An NVSwitch is not bound to vfio-pci, so the Service VM cannot own it."""
    GROUP_NOT_VIABLE = "group-not-viable"
    """An IOMMU group also holds a device on a host driver; VFIO hands out whole groups."""
    NO_IOMMU_GROUP = "no-iommu-group"
    """No IOMMU group: the IOMMU is off, so VFIO cannot isolate the device."""
    NVSWITCH_GROUPS_SPLIT = "nvswitch-groups-split"
    """NVSwitches sit in several IOMMU groups; the Service VM needs them together."""
    UNREADABLE_FILE = "unreadable-file"
    """A sysfs file could not be read or parsed; the device is reported without it."""
    GPU_COUNT = "gpu-count"
    """An HGX host has another number of GPUs than its board carries."""
    NO_GPUS = "no-gpus"
    """No NVIDIA GPU was found at all."""


@dataclass(frozen=True, slots=True)
class Bar:
    """One non-empty PCI memory or I/O region of a device (a line of sysfs ``resource``)."""

    index: int
    """Line number in ``resource``: 0-5 are BARs, 6 the expansion ROM. A 64-bit BAR uses two
    BAR slots, so it shows at the even index and the next line is empty."""
    size_bytes: int


@dataclass(frozen=True, slots=True)
class NvidiaDevice:
    """One NVIDIA PCI function (vendor 0x10de) and how the host has set it up."""

    bdf: BDF
    vendor_id: int
    device_id: int | None
    """None when the ``device`` file could not be read (a warning says so)."""
    class_code: int | None
    """24-bit class code, e.g. 0x030200; None when the ``class`` file could not be read."""
    kind: DeviceKind
    model: str
    """Name from the board models ("H100 SXM5", "NVSwitch"), else ``unknown 0x....``."""
    driver: str | None
    """Name of the bound kernel driver, e.g. ``vfio-pci``; None when unbound."""
    iommu_group: int | None
    """None when the device has no IOMMU group (the IOMMU is off)."""
    iommu_group_members: tuple[BDF, ...]
    """Every *other* device in the same IOMMU group, of any vendor, in PCI order."""
    numa_node: int | None
    """None when the kernel reports -1 (no NUMA affinity) or the file is missing."""
    bars: tuple[Bar, ...]
    vfio_cdev: str | None
    """The iommufd character device name (``vfio3`` for ``/dev/vfio/devices/vfio3``)."""

    def bar_size(self, index: int) -> int | None:
        """Size in bytes of region ``index``, or None when the device has no such region."""
        for bar in self.bars:
            if bar.index == index:
                return bar.size_bytes
        return None


@dataclass(frozen=True, slots=True)
class DiscoveryWarning:
    """One problem discovery found. Never raised: discovery reports and goes on."""

    code: WarningCode
    message: str
    """One or two sentences: what is wrong, the values, and what to do."""
    bdf: BDF | None = None
    """The device the warning is about; None for host-wide findings."""
    severity: Severity = Severity.WARNING

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Discovery:
    """What one discovery pass found under a sysfs root."""

    devices: tuple[NvidiaDevice, ...]
    """Every NVIDIA function, in PCI order."""
    warnings: tuple[DiscoveryWarning, ...] = ()

    @property
    def gpus(self) -> tuple[NvidiaDevice, ...]:
        return tuple(d for d in self.devices if d.kind is DeviceKind.GPU)

    @property
    def nvswitches(self) -> tuple[NvidiaDevice, ...]:
        return tuple(d for d in self.devices if d.kind is DeviceKind.NVSWITCH)

    def get(self, bdf: str) -> NvidiaDevice | None:
        """The device at ``bdf`` (any form :func:`parse_bdf` accepts), or None.

        Raises :class:`InvalidBDF` when ``bdf`` is no PCI address.
        """
        wanted = parse_bdf(bdf)
        for device in self.devices:
            if device.bdf == wanted:
                return device
        return None
