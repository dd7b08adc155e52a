"""The pure plan: a host snapshot in, the ordered sysfs writes per device out."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpucaas.errors import MisuseError
from gpucaas.node.discovery import (
    BDF,
    VFIO_PCI,
    DeviceKind,
    NvidiaDevice,
    is_vfio_driver,
)

from ._api import SysfsKernel
from ._errors import UnknownDevice, VfioError, VfioProblem
from ._host import _PCI_STUB, PciFunction, PciHost
from ._kernels import _pci


class VfioAction(enum.StrEnum):
    """Which way devices move."""

    BIND = "bind"
    """To vfio-pci, for passing to VMs."""
    UNBIND = "unbind"
    """Back to the host: override cleared, the kernel's default driver (if loaded)."""


class VfioStepKind(enum.StrEnum):
    """One sysfs write of a plan."""

    SET_OVERRIDE = "set-override"
    CLEAR_OVERRIDE = "clear-override"
    UNBIND = "unbind"
    PROBE = "probe"


@dataclass(frozen=True, slots=True)
class VfioStep:
    """One write: ``driver`` is the override to set, or the driver to unbind from."""

    kind: VfioStepKind
    bdf: BDF
    driver: str | None = None

    def path(self, sysfs_root: Path) -> Path:
        pci = _pci(sysfs_root)
        if self.kind in (VfioStepKind.SET_OVERRIDE, VfioStepKind.CLEAR_OVERRIDE):
            return pci / "devices" / self.bdf / "driver_override"
        if self.kind is VfioStepKind.UNBIND:
            return pci / "drivers" / str(self.driver) / "unbind"
        return pci / "drivers_probe"

    @property
    def text(self) -> str:
        """What is written (a clear is a lone newline)."""
        if self.kind is VfioStepKind.SET_OVERRIDE:
            return str(self.driver)
        if self.kind is VfioStepKind.CLEAR_OVERRIDE:
            return ""
        return self.bdf

    def shell(self, sysfs_root: Path) -> str:
        """The same write as a shell command, for ``--dry-run``."""
        text = f" {self.text}" if self.text else ""
        return f"echo{text} > {self.path(sysfs_root)}"

    def run(self, kernel: SysfsKernel) -> None:
        if self.kind is VfioStepKind.SET_OVERRIDE:
            kernel.set_driver_override(self.bdf, self.driver)
        elif self.kind is VfioStepKind.CLEAR_OVERRIDE:
            kernel.set_driver_override(self.bdf, None)
        elif self.kind is VfioStepKind.UNBIND:
            kernel.unbind(self.bdf, str(self.driver))
        else:
            kernel.probe(self.bdf)


@dataclass(frozen=True, slots=True)
class DeviceMove:
    """One device that changes driver, why, and the writes that do it."""

    function: PciFunction
    """The device as it was when planned."""
    label: str
    """How messages name it: ``GPU 0000:9a:00.0``."""
    reason: str
    """``requested``, or ``in IOMMU group 38 with GPU 0000:2a:00.0``."""
    steps: tuple[VfioStep, ...]

    @property
    def bdf(self) -> BDF:
        return self.function.bdf


@dataclass(frozen=True, slots=True)
class VfioPlan:
    """What :func:`apply` will write, device by device, group by group."""

    action: VfioAction
    host: PciHost
    moves: tuple[DeviceMove, ...]
    unchanged: tuple[BDF, ...]
    """Devices of the touched groups already in the target state (bridges not counted)."""
    groups: tuple[int, ...]
    """The IOMMU groups touched, in order."""

    @property
    def steps(self) -> tuple[VfioStep, ...]:
        return tuple(step for move in self.moves for step in move.steps)

    @property
    def is_empty(self) -> bool:
        return not self.moves


def _label(host: PciHost, function: PciFunction) -> str:
    device = host.discovery.get(function.bdf)
    if device is not None and device.kind is DeviceKind.GPU:
        return f"GPU {function.bdf}"
    if device is not None and device.kind is DeviceKind.NVSWITCH:
        return f"NVSwitch {function.bdf}"
    klass = "unknown" if function.class_code is None else f"{function.class_code:#08x}"
    return f"device {function.bdf} (class {klass})"


def _bind_done(function: PciFunction) -> bool:
    """Whether a group member needs nothing for its group to be handed to VFIO."""
    return function.is_bridge or function.on_vfio or function.driver == _PCI_STUB


def _unbind_done(function: PciFunction) -> bool:
    """Whether a group member is back on the host side (not vfio-pci, no override to it)."""
    return function.is_bridge or not (function.on_vfio or is_vfio_driver(function.driver_override))


def _bind_steps(function: PciFunction) -> tuple[VfioStep, ...]:
    steps: list[VfioStep] = []
    if function.driver_override != VFIO_PCI:
        steps.append(VfioStep(VfioStepKind.SET_OVERRIDE, function.bdf, VFIO_PCI))
    if function.driver is not None:
        steps.append(VfioStep(VfioStepKind.UNBIND, function.bdf, function.driver))
    steps.append(VfioStep(VfioStepKind.PROBE, function.bdf))
    return tuple(steps)


def _unbind_steps(function: PciFunction) -> tuple[VfioStep, ...]:
    steps: list[VfioStep] = []
    if function.driver_override is not None:
        steps.append(VfioStep(VfioStepKind.CLEAR_OVERRIDE, function.bdf))
    if function.driver is not None:
        steps.append(VfioStep(VfioStepKind.UNBIND, function.bdf, function.driver))
    steps.append(VfioStep(VfioStepKind.PROBE, function.bdf))
    return tuple(steps)


def _requested(
    host: PciHost, include_nvswitches: bool, devices: Sequence[str]
) -> list[NvidiaDevice]:
    kinds = {DeviceKind.GPU} | ({DeviceKind.NVSWITCH} if include_nvswitches else set())
    if not devices:
        return [d for d in host.discovery.devices if d.kind in kinds]
    chosen: list[NvidiaDevice] = []
    for text in devices:
        device = host.discovery.get(text)
        if device is None or device.kind is DeviceKind.OTHER:
            raise UnknownDevice(text, host.sysfs_root)
        if device not in chosen:
            chosen.append(device)
    return sorted(chosen, key=lambda d: d.bdf)


def plan(
    host: PciHost,
    action: VfioAction | Literal["bind", "unbind"] = VfioAction.BIND,
    *,
    include_nvswitches: bool = False,
    devices: Sequence[str] = (),
) -> VfioPlan:
    """The writes that move the GPUs (and NVSwitches) of ``host`` to or from vfio-pci.

    Pure: reads nothing and writes nothing. ``devices`` limits the request to these BDFs
    (GPUs or NVSwitches, whatever ``include_nvswitches`` says); by default every GPU, plus
    every NVSwitch with ``include_nvswitches``. Every other member of a touched IOMMU group
    moves too, as VFIO needs (bridges stay; a member on pci-stub stays when binding). Devices
    already in the target state get no step, so planning again after :func:`apply` gives an
    empty plan.

    Raises:
        VfioError: when binding, a requested device has no IOMMU group, or a non-NVIDIA
            device with a host driver shares a touched group (each is named; nothing to do
            until the host is changed).
        UnknownDevice: a BDF in ``devices`` is no GPU or NVSwitch of this host.
        InvalidBDF: a BDF in ``devices`` is no PCI address.
        MisuseError: ``action`` is neither bind nor unbind.
    """
    try:
        action = VfioAction(action)
    except ValueError:
        raise MisuseError(f"unknown VFIO action {action!r}; use 'bind' or 'unbind'") from None
    binding = action is VfioAction.BIND
    done = _bind_done if binding else _unbind_done
    problems: list[VfioProblem] = []
    requested = _requested(host, include_nvswitches, devices)
    for device in requested:
        if device.iommu_group is None and binding:
            problems.append(
                VfioProblem(
                    device.bdf,
                    f"{_label(host, host.functions[device.bdf])} has no IOMMU group, so vfio-pci "
                    "cannot take it; enable VT-d/AMD-Vi in the firmware and boot with "
                    "intel_iommu=on (AMD: amd_iommu=on) iommu=pt",
                )
            )
    groups = sorted({d.iommu_group for d in requested if d.iommu_group is not None})
    requested_bdfs = {d.bdf for d in requested}
    moves: list[DeviceMove] = []
    unchanged: list[BDF] = []
    for group in groups:
        members = host.group(group)
        owners = ", ".join(_label(host, f) for f in members if f.bdf in requested_bdfs)
        for function in members:
            if function.is_bridge:
                continue
            if done(function):
                unchanged.append(function.bdf)
                continue
            label = _label(host, function)
            if binding and not function.is_nvidia and function.driver is not None:
                problems.append(
                    VfioProblem(
                        function.bdf,
                        f"IOMMU group {group} of {owners} also holds {label}, bound to the host "
                        f"driver {function.driver}; VFIO hands out whole groups and gpucaas "
                        f"does not take a host device from its driver: give the slot its own "
                        f"group (ACS, another slot), bind {function.bdf} to vfio-pci yourself "
                        "if the host does not need it, or leave these GPUs out with --device",
                    )
                )
                continue
            reason = (
                "requested"
                if function.bdf in requested_bdfs
                else f"in IOMMU group {group} with {owners}"
            )
            steps = _bind_steps(function) if binding else _unbind_steps(function)
            moves.append(DeviceMove(function, label, reason, steps))
    if problems:
        raise VfioError(str(action), problems)
    return VfioPlan(
        action=action,
        host=host,
        moves=tuple(moves),
        unchanged=tuple(unchanged),
        groups=tuple(groups),
    )
