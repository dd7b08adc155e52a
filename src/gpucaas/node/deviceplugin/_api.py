"""The device plugin's seams."""

from __future__ import annotations

from typing import Protocol


class PodPartitions(Protocol):
    """Which partitions the containers of live pods hold (:class:`PodResourcesWatcher`)."""

    def held(self) -> frozenset[int]:
        """The partition ids live pods hold now. Raises :class:`~gpucaas.errors.Unavailable`
        when that cannot be known (callers then release nothing). Read-only; any order."""
        ...
