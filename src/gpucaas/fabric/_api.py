"""The seam every fabric backend implements: one board's Fabric Manager."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ._types import FailedDevices, PartitionInfo


class FabricManager(Protocol):
    """One board's fabric, as Fabric Manager in shared-NVSwitch mode exposes it.

    Errors are :class:`FabricManagerError` subclasses, one per FM return code. Calls on
    one instance are not assumed thread-safe; the fm-controller serialises them per board.
    """

    def list_partitions(self) -> tuple[PartitionInfo, ...]:
        """Every supported partition with its GPUs and whether it is active."""
        ...

    def activate(self, partition_id: int) -> None:
        """Activate a partition. Not idempotent, as in FM: an active or overlapping
        partition raises :class:`PartitionInUse`."""
        ...

    def deactivate(self, partition_id: int) -> None:
        """Deactivate a partition. Not idempotent, as in FM: an inactive partition raises
        :class:`PartitionNotActive`."""
        ...

    def set_activated(self, partition_ids: Sequence[int]) -> None:
        """Tell a restarted FM which partitions are active (also when none are); FM
        accepts partition calls again only after this, and waits 60 s for it."""
        ...

    def failed_devices(self) -> FailedDevices:
        """GPUs and NVSwitches with failed NVLinks (always empty on H100/H200)."""
        ...
