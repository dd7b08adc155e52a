"""Errors of the device plugin::

GpucaasError
├── Unavailable
│   └── DevicePluginError   the socket or the kubelet's registration failed
└── Conflict
    └── PartitionHeld       an overlapping active partition is held by a running pod
"""

from __future__ import annotations

from gpucaas.errors import Conflict, Unavailable
from gpucaas.topology import Partition


class DevicePluginError(Unavailable):
    """The plugin could not start: its socket or the kubelet's registration failed."""

    def __init__(self, what: str, reason: str, todo: str) -> None:
        super().__init__(what, reason, todo)
        self.what, self.reason, self.todo = what, reason, todo

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}; {self.todo}"


class PartitionHeld(Conflict):
    """A partition cannot be activated: an overlapping one is active and a running pod
    holds it."""

    def __init__(self, partition: Partition, holder: Partition) -> None:
        super().__init__(int(partition.id), int(holder.id))
        self.partition, self.holder = partition, holder

    def __str__(self) -> str:
        return (
            f"cannot activate {self.partition}: it overlaps active {self.holder}, which a "
            f"running pod holds; wait for that pod to end (the kubelet should not have offered "
            f"these GPUs)"
        )
