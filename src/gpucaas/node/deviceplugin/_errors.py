"""Errors of the device plugin::

GpucaasError
├── Unavailable
│   └── DevicePluginError   the socket or the kubelet's registration failed
└── Refused
    └── Conflict
        └── PartitionHeld   an overlapping active partition is held by a running pod
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpucaas.errors import Conflict, Unavailable, errorclass

if TYPE_CHECKING:
    from gpucaas.topology import Partition


@errorclass
class DevicePluginError(Unavailable):
    """The plugin could not start: its socket or the kubelet's registration failed."""

    template = "{what}: {reason}; {todo}"
    what: str
    reason: str
    todo: str


@errorclass
class PartitionHeld(Conflict):
    """A partition cannot be activated: an overlapping one is active and a running pod
    holds it."""

    template = (
        "cannot activate {partition}: it overlaps active {holder}, which a running pod "
        "holds; wait for that pod to end (the kubelet should not have offered these GPUs)"
    )
    partition: Partition
    holder: Partition
