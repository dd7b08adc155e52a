"""Fakes for the node tests' seams: a fabric that reports failed GPUs, and a
:class:`~gpucaas.node.deviceplugin.PodPartitions` answered by a function."""

from __future__ import annotations

from collections.abc import Callable

from gpucaas.fabric import FailedDevice, FailedDevices, SimulatedFabric
from gpucaas.topology import BoardModel


class FailingFabric(SimulatedFabric):
    """The simulated fabric, reporting the GPUs in ``failed`` (PCI bus ids) as failed."""

    def __init__(self, model: BoardModel) -> None:
        super().__init__(model)
        self.failed: list[str] = []

    def failed_devices(self) -> FailedDevices:
        return FailedDevices(gpus=tuple(FailedDevice("GPU-x", bdf, (1,)) for bdf in self.failed))


class FunctionPods:
    """Which partitions live pods hold, answered by ``held`` (which may raise)."""

    def __init__(self, held: Callable[[], frozenset[int]]) -> None:
        self._held = held
        self.calls = 0

    def held(self) -> frozenset[int]:
        self.calls += 1
        return self._held()
