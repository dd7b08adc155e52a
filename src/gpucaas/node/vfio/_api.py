"""The seam between VFIO planning and the kernel: :class:`SysfsKernel`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from gpucaas.node.discovery import BDF

from ._host import PciFunction


class SysfsKernel(Protocol):
    """The few kernel actions VFIO binding needs. Each is one sysfs write (or a read).

    Methods raise :class:`DeviceInUse` when the kernel answers EBUSY and
    :class:`KernelWriteError` for any other failed write. None is idempotent by itself:
    :func:`plan` decides which to call, in the order given in the module docstring.
    """

    @property
    def root(self) -> Path:
        """The sysfs root the writes go to."""
        ...

    def set_driver_override(self, bdf: BDF, driver: str | None) -> None:
        """Write ``driver`` to the device's ``driver_override``; None clears it."""
        ...

    def unbind(self, bdf: BDF, driver: str) -> None:
        """Write ``bdf`` to ``bus/pci/drivers/<driver>/unbind``."""
        ...

    def probe(self, bdf: BDF) -> None:
        """Write ``bdf`` to ``bus/pci/drivers_probe`` so the kernel binds a driver to it."""
        ...

    def holders(self, function: PciFunction) -> tuple[str, ...]:
        """Who holds the device open, one line each (``qemu (pid 4242): /dev/vfio/38``).

        Asked before any unbind: unbinding a device in use blocks in the kernel until the
        holder lets go, it does not fail.
        """
        ...
