"""Errors of discovery.

Discovery reports what it finds wrong on a host as warnings, never as exceptions: a node
agent that refuses to start because one GPU is misconfigured helps nobody. Only input that
makes discovery impossible, or malformed input, is raised::

    GpucaasError
    ├── InvalidRequest
    │   ├── InvalidBDF        a PCI address that is not domain:bus:device.function
    │   └── DiscoveryError    no readable PCI tree under the sysfs root (names the path;
    │                         also Unavailable; exit 2: fix --sysfs or the mount)
    └── Unavailable
        └── DiscoveryError
"""

from __future__ import annotations

from gpucaas.errors import InvalidRequest, Unavailable, errorclass


@errorclass
class InvalidBDF(InvalidRequest):
    """A PCI address is not of the form ``0000:1b:00.0``."""

    template = (
        "invalid PCI address {value!r}; write domain:bus:device.function in hex, "
        "e.g. 0000:1b:00.0 (as `lspci -D` prints it)"
    )
    value: str


@errorclass
class DiscoveryError(InvalidRequest, Unavailable):
    """The sysfs root has no readable PCI device tree, so nothing can be discovered.

    An InvalidRequest (exit 2: the --sysfs root, or the container's mount of /sys, is
    wrong) that stays an Unavailable for callers that retry a host that is not ready.
    """

    template = (
        "cannot discover PCI devices: {path}: {reason}; run on the host with /sys mounted "
        "(in a container: mount the host's /sys read-only), or pass --sysfs pointing at a "
        "sysfs tree"
    )
    path: str
    reason: str
