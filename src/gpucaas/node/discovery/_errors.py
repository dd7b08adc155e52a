"""Errors of discovery.

Discovery reports what it finds wrong on a host as warnings, never as exceptions: a node
agent that refuses to start because one GPU is misconfigured helps nobody. Only input that
makes discovery impossible, or malformed input, is raised::

    GpucaasError
    ├── InvalidRequest
    │   └── InvalidBDF        a PCI address that is not domain:bus:device.function
    └── Unavailable
        └── DiscoveryError    no readable PCI tree under the sysfs root (names the path)
"""

from __future__ import annotations

from gpucaas.errors import InvalidRequest, Unavailable


class InvalidBDF(InvalidRequest):
    """A PCI address is not of the form ``0000:1b:00.0``."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return (
            f"invalid PCI address {self.value!r}; write domain:bus:device.function in hex, "
            "e.g. 0000:1b:00.0 (as `lspci -D` prints it)"
        )


class DiscoveryError(Unavailable):
    """The sysfs root has no readable PCI device tree, so nothing can be discovered.

    An :class:`Unavailable`: the host (or the container's mounts) is not ready, which the
    operator fixes; retrying with the same root fails the same way.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"cannot discover PCI devices: {self.path}: {self.reason}; run on the host with "
            "/sys mounted (in a container: mount the host's /sys read-only), or pass --sysfs "
            "pointing at a sysfs tree"
        )
