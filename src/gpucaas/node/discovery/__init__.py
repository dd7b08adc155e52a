"""Discovery: which NVIDIA GPUs and NVSwitches a host has, read straight from sysfs.

:func:`discover` reads a sysfs root (``/sys``, or a fixture tree) into a :class:`Discovery`
of frozen :class:`NvidiaDevice` records. It changes nothing, never guesses module IDs (that
is the module-ID map's job) and reports a misconfigured device as a
:class:`DiscoveryWarning`, not an exception; only a root with no PCI tree at all raises
:class:`DiscoveryError`.
"""

from gpucaas.errors import own_errors

from ._errors import DiscoveryError, InvalidBDF
from ._sysfs import SYSFS_ROOT, VFIO_PCI, discover, is_vfio_driver
from ._types import (
    BDF,
    NVIDIA_VENDOR_ID,
    Bar,
    DeviceKind,
    Discovery,
    DiscoveryWarning,
    NvidiaDevice,
    Severity,
    WarningCode,
    parse_bdf,
)

__all__ = [
    "BDF",
    "NVIDIA_VENDOR_ID",
    "SYSFS_ROOT",
    "VFIO_PCI",
    "Bar",
    "DeviceKind",
    "Discovery",
    "DiscoveryError",
    "DiscoveryWarning",
    "InvalidBDF",
    "NvidiaDevice",
    "Severity",
    "WarningCode",
    "discover",
    "is_vfio_driver",
    "parse_bdf",
]

own_errors(globals())
