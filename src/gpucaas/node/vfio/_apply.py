"""Applying a plan through a :class:`SysfsKernel`, then checking every touched group."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gpucaas.errors import MisuseError
from gpucaas.node.discovery import BDF

from ._api import SysfsKernel
from ._errors import DeviceInUse, KernelWriteError, VfioError, VfioProblem
from ._host import PciFunction, read_host
from ._plan import VfioAction, VfioPlan, _bind_done, _label, _unbind_done


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """What one planned device looked like before and after :func:`apply`."""

    bdf: BDF
    label: str
    driver_before: str | None
    driver_after: str | None
    override_before: str | None
    override_after: str | None

    @property
    def changed(self) -> bool:
        return (self.driver_before, self.override_before) != (
            self.driver_after,
            self.override_after,
        )


@dataclass(frozen=True, slots=True)
class GroupCheck:
    """Whether an IOMMU group was in the target state before and after :func:`apply`."""

    group: int
    complete_before: bool
    complete_after: bool
    pending: tuple[str, ...] = ()
    """After applying: the members still not in the target state, labelled."""


@dataclass(frozen=True, slots=True)
class VfioResult:
    """What :func:`apply` did: every moved device, and every touched group's check."""

    action: VfioAction
    changes: tuple[DeviceChange, ...]
    unchanged: tuple[BDF, ...]
    groups: tuple[GroupCheck, ...] = field(default=())

    @property
    def changed(self) -> tuple[DeviceChange, ...]:
        return tuple(c for c in self.changes if c.changed)


def _state(function: PciFunction) -> tuple[str | None, str | None]:
    return function.driver, function.driver_override


def apply(plan: VfioPlan, kernel: SysfsKernel) -> VfioResult:
    """Run ``plan``'s writes through ``kernel``, then check every touched group.

    Before writing, re-reads sysfs (the plan must still match the host) and asks
    ``kernel.holders`` about every device that will be unbound: if any is held, nothing is
    written. After writing, re-reads sysfs and checks that each touched group is complete
    (bind: every non-bridge member on vfio-pci or pci-stub; unbind: none on vfio-pci).

    Raises:
        DeviceInUse: a device is held by a process, or the kernel refused an unbind (EBUSY);
            its override is put back, and ``changed`` lists devices already moved.
        VfioError: the host changed since the plan was made, or a group is incomplete
            after the writes (e.g. vfio-pci is not loaded, so probing bound nothing).
        KernelWriteError: a write failed otherwise (not root, driver not loaded, ...).
        MisuseError: ``kernel`` writes to another sysfs root than the plan was made from.
    """
    action = str(plan.action)
    if Path(kernel.root) != plan.host.sysfs_root:
        raise MisuseError(
            f"the plan was made from {plan.host.sysfs_root} but the kernel writes to "
            f"{kernel.root}; plan and apply with the same sysfs root"
        )
    now = read_host(plan.host.sysfs_root)
    stale = [
        VfioProblem(
            move.bdf,
            f"{move.label} changed since the plan was made (driver {move.function.driver} → "
            f"{now.functions[move.bdf].driver if move.bdf in now.functions else 'gone'}); "
            "plan again",
        )
        for move in plan.moves
        if move.bdf not in now.functions or _state(now.functions[move.bdf]) != _state(move.function)
    ]
    if stale:
        raise VfioError(action, stale)
    busy = [
        VfioProblem(
            move.bdf,
            f"{move.label} is in use by {', '.join(held)}; stop what holds it "
            "(for a VM: the pod using it), then run the command again",
        )
        for move in plan.moves
        if move.function.driver is not None and (held := kernel.holders(move.function))
    ]
    if busy:
        raise DeviceInUse(action, busy)

    done = _bind_done if plan.action is VfioAction.BIND else _unbind_done
    before = {g: all(done(f) for f in plan.host.group(g)) for g in plan.groups}
    moved: list[BDF] = []
    for move in plan.moves:
        try:
            for step in move.steps:
                step.run(kernel)
        except VfioError as exc:
            _restore_override(kernel, move.function)
            raise type(exc)(action, exc.problems, moved) from exc
        except KernelWriteError:
            _restore_override(kernel, move.function)
            raise
        moved.append(move.bdf)

    after = read_host(plan.host.sysfs_root)
    changes = tuple(
        DeviceChange(
            bdf=move.bdf,
            label=move.label,
            driver_before=move.function.driver,
            driver_after=after.functions[move.bdf].driver if move.bdf in after.functions else None,
            override_before=move.function.driver_override,
            override_after=(
                after.functions[move.bdf].driver_override if move.bdf in after.functions else None
            ),
        )
        for move in plan.moves
    )
    checks: list[GroupCheck] = []
    incomplete: list[VfioProblem] = []
    for group in plan.groups:
        members = after.group(group)
        pending = [f for f in members if not done(f)]
        checks.append(
            GroupCheck(
                group=group,
                complete_before=before[group],
                complete_after=not pending,
                pending=tuple(f"{_label(after, f)} on {f.driver or 'no driver'}" for f in pending),
            )
        )
        for function in pending:
            want = "vfio-pci" if plan.action is VfioAction.BIND else "off vfio-pci"
            incomplete.append(
                VfioProblem(
                    function.bdf,
                    f"after the writes, {_label(after, function)} in IOMMU group {group} is on "
                    f"{function.driver or 'no driver'}, not {want}; check that vfio-pci is "
                    "loaded (`modprobe vfio-pci`) and `dmesg` for what the kernel said",
                )
            )
    if incomplete:
        raise VfioError(action, incomplete, moved)
    return VfioResult(
        action=plan.action, changes=changes, unchanged=plan.unchanged, groups=tuple(checks)
    )


def _restore_override(kernel: SysfsKernel, function: PciFunction) -> None:
    """Best effort: put back the override of a device whose move failed half-way."""
    try:
        kernel.set_driver_override(function.bdf, function.driver_override)
    except (VfioError, KernelWriteError):
        pass
