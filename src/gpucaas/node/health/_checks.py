"""The node's health source: is a GPU still fit to hand to a tenant?

:class:`NodeHealth` is the check the device plugin polls (a callable ``KubeletGpu -> bool``,
with :meth:`NodeHealth.problem` saying why not): the GPU is still bound to vfio-pci
(:class:`StillOnVfio`), its VFIO group node exists, its PCI config space reads NVIDIA's vendor
id, and the fabric does not report it failed (:class:`FabricFailures`). Each check reads the
host afresh, so a GPU that recovers is healthy again; none changes anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpucaas.node import KubeletGpu
from gpucaas.node.discovery import NVIDIA_VENDOR_ID, Discovery, discover, is_vfio_driver

CONFIG_HEADER_BYTES = 64

log = logging.getLogger("gpucaas.device-plugin")


class StillOnVfio:
    """Health check: the GPU is still bound to vfio-pci in a fresh discovery of ``sysfs``.

    One discovery serves every GPU of a health pass (it is reused for ``max_age_s``).
    """

    def __init__(self, sysfs: Path, max_age_s: float = 0.25) -> None:
        self.sysfs = sysfs
        self.max_age_s = max_age_s
        self._discovery: Discovery | None = None
        self._at = 0.0

    def __call__(self, gpu: KubeletGpu) -> bool:
        now = time.monotonic()
        if self._discovery is None or now - self._at > self.max_age_s:
            self._discovery, self._at = discover(self.sysfs), now
        device = self._discovery.get(gpu.bdf)
        return device is not None and is_vfio_driver(device.driver)


def bus_id_key(bus_id: str) -> str:
    """A PCI bus id in one form, ``dddd:bb:dd.f`` lower case: Fabric Manager writes
    ``00000000:9A:00.0``, sysfs ``0000:9a:00.0``."""
    parts = bus_id.strip().lower().split(":")
    try:
        domain = int(parts[-3], 16) if len(parts) >= 3 else 0
        bus = int(parts[-2], 16)
    except (IndexError, ValueError):
        return bus_id.strip().lower()
    return f"{domain:04x}:{bus:02x}:{parts[-1]}"


class FabricFailures:
    """The PCI bus ids of GPUs the fabric reports failed (``failed_devices()``), fetched at
    most every ``max_age_s``. A fabric that does not answer reports nothing (the last answer
    is kept): an fm-controller outage is no GPU fault."""

    def __init__(self, fabric: Any, max_age_s: float = 0.25) -> None:
        self.fabric = fabric
        self.max_age_s = max_age_s
        self._failed: frozenset[str] = frozenset()
        self._at: float | None = None

    def __call__(self) -> frozenset[str]:
        now = time.monotonic()
        if self._at is None or now - self._at > self.max_age_s:
            self._at = now
            try:
                failed = self.fabric.failed_devices()
            except Exception as exc:  # noqa: BLE001 - unknown is not failed
                log.warning("cannot ask the fabric for failed devices", extra={"error": str(exc)})
            else:
                self._failed = frozenset(bus_id_key(d.pci_bus_id) for d in failed.gpus)
        return self._failed


class NodeHealth:
    """Health of a GPU: still bound to vfio-pci, its VFIO group node
    ``<dev_root>/vfio/<group>`` present, its PCI config space readable with NVIDIA's vendor
    id (a GPU that fell off the bus reads 0xffff), and not reported failed by the fabric.

    Each check is evaluated afresh on every pass, so a GPU that recovers is healthy again.
    """

    def __init__(
        self,
        sysfs: Path,
        dev_root: Path = Path("/dev"),
        failed: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self.sysfs = Path(sysfs)
        self.dev_root = Path(dev_root)
        self.vfio = StillOnVfio(self.sysfs)
        self.failed = failed

    def problem(self, gpu: KubeletGpu) -> str | None:
        """Why ``gpu`` is unhealthy, or None."""
        if not self.vfio(gpu):
            return "not bound to vfio-pci"
        if gpu.iommu_group is None:
            return "no IOMMU group"
        if not (self.dev_root / "vfio" / str(gpu.iommu_group)).exists():
            return f"no device node {self.dev_root / 'vfio' / str(gpu.iommu_group)}"
        config = self.sysfs / "bus" / "pci" / "devices" / str(gpu.bdf) / "config"
        try:
            with open(config, "rb") as f:
                header = f.read(CONFIG_HEADER_BYTES)
        except OSError as exc:
            return f"config space unreadable: {exc.strerror}"
        if len(header) < CONFIG_HEADER_BYTES:
            return f"config space short: {len(header)} bytes"
        vendor = int.from_bytes(header[:2], "little")
        if vendor != NVIDIA_VENDOR_ID:
            return f"config space reads vendor 0x{vendor:04x}"
        if self.failed is not None and bus_id_key(str(gpu.bdf)) in self.failed():
            return "reported failed by the fabric"
        return None

    def __call__(self, gpu: KubeletGpu) -> bool:
        return self.problem(gpu) is None
