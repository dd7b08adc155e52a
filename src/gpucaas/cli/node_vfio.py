"""``gpucaas node vfio``: move GPUs (and NVSwitches) to vfio-pci, give them back, or check.

Each command reads the host, plans with :func:`gpucaas.node.vfio.plan` (pure) and applies the
plan through a kernel seam: the real sysfs writes, or, with the hidden ``--simulate-kernel``
option (for fixture trees and tests), :class:`gpucaas.node.vfio.FixtureKernel`, which performs the
same writes and then changes the tree as the kernel would. A refused move (a device in use, a
host device in a GPU's IOMMU group) is one line on stderr and exit status 1 (a conflict with
the host's state), with nothing written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpucaas.node import vfio
from gpucaas.node.discovery import SYSFS_ROOT
from gpucaas.node.vfio import (
    FixtureKernel,
    LinuxSysfs,
    SysfsKernel,
    VfioAction,
    VfioPlan,
    VfioResult,
    VfioStatus,
    read_host,
)

from ._common import JsonOption, print_json, table, user_errors

app = typer.Typer(
    help="Bind GPUs and NVSwitches to vfio-pci for VMs, give them back, or check.",
    no_args_is_help=True,
)

SysfsOption = Annotated[
    Path, typer.Option("--sysfs", help="Root of the sysfs tree (a fixture tree in tests).")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the sysfs writes as shell commands; write nothing.")
]
NvswitchOption = Annotated[
    bool,
    typer.Option(
        "--include-nvswitches", help="Also move the NVSwitches (for the Fabric Manager's VM)."
    ),
]
DeviceOption = Annotated[
    list[str] | None,
    typer.Option(
        "--device", help="Only this GPU or NVSwitch (BDF) and its IOMMU group; repeatable."
    ),
]
SimulateOption = Annotated[
    bool,
    typer.Option(
        "--simulate-kernel",
        hidden=True,
        help="For fixture trees and tests: apply each write as the kernel would (FixtureKernel).",
    ),
]


@app.callback()
def _vfio() -> None:
    """Bind GPUs and NVSwitches to vfio-pci for VMs, give them back, or check."""


def _kernel(sysfs: Path, simulate: bool) -> SysfsKernel:
    return FixtureKernel(sysfs) if simulate else LinuxSysfs(sysfs)


def _dash(value: object) -> object:
    return "-" if value is None else value


def plan_json(the_plan: VfioPlan) -> dict[str, object]:
    root = the_plan.host.sysfs_root
    return {
        "action": str(the_plan.action),
        "dry_run": True,
        "moves": [
            {
                "bdf": move.bdf,
                "device": move.label,
                "reason": move.reason,
                "driver": move.function.driver,
                "driver_override": move.function.driver_override,
                "steps": [
                    {
                        "kind": str(step.kind),
                        "path": str(step.path(root)),
                        "text": step.text,
                        "shell": step.shell(root),
                    }
                    for step in move.steps
                ],
            }
            for move in the_plan.moves
        ],
        "unchanged": list(the_plan.unchanged),
        "groups": list(the_plan.groups),
    }


def result_json(result: VfioResult) -> dict[str, object]:
    return {
        "action": str(result.action),
        "dry_run": False,
        "changes": [
            {
                "bdf": c.bdf,
                "device": c.label,
                "driver_before": c.driver_before,
                "driver_after": c.driver_after,
                "driver_override_before": c.override_before,
                "driver_override_after": c.override_after,
                "changed": c.changed,
            }
            for c in result.changes
        ],
        "unchanged": list(result.unchanged),
        "groups": [
            {
                "group": g.group,
                "complete_before": g.complete_before,
                "complete_after": g.complete_after,
                "pending": list(g.pending),
            }
            for g in result.groups
        ],
    }


def status_json(result: VfioStatus) -> dict[str, object]:
    return {
        "gpus_ready": result.gpus_ready,
        "nvswitches_ready": result.nvswitches_ready,
        "devices": [
            {
                "bdf": d.bdf,
                "kind": str(d.kind),
                "model": d.model,
                "driver": d.driver,
                "driver_override": d.driver_override,
                "iommu_group": d.iommu_group,
                "group_ready": d.group_ready,
                "blocking": list(d.blocking),
            }
            for d in result.devices
        ],
    }


def _devices(count: int) -> str:
    return f"{count} device" if count == 1 else f"{count} devices"


def _target(action: VfioAction) -> str:
    return "on vfio-pci" if action is VfioAction.BIND else "off vfio-pci"


def _echo_plan(the_plan: VfioPlan) -> None:
    root = the_plan.host.sysfs_root
    if the_plan.is_empty:
        typer.echo(
            f"nothing to do: {_devices(len(the_plan.unchanged))} already {_target(the_plan.action)}"
        )
        return
    typer.echo(
        f"dry run: {the_plan.action} would move {_devices(len(the_plan.moves))}; nothing written"
    )
    for move in the_plan.moves:
        typer.echo(f"{move.label} (now {move.function.driver or 'no driver'}; {move.reason})")
        for step in move.steps:
            typer.echo(f"  {step.shell(root)}")
    if the_plan.unchanged:
        typer.echo(f"already {_target(the_plan.action)}: {', '.join(the_plan.unchanged)}")


def _echo_result(result: VfioResult) -> None:
    if not result.changes:
        typer.echo(
            f"nothing to do: {_devices(len(result.unchanged))} already {_target(result.action)}"
        )
        return
    typer.echo(
        table(
            ["DEVICE", "BEFORE", "AFTER"],
            [[c.label, _dash(c.driver_before), _dash(c.driver_after)] for c in result.changes],
        )
    )
    groups = ", ".join(str(g.group) for g in result.groups)
    typer.echo(
        f"{result.action}: {_devices(len(result.changed))} moved, {len(result.unchanged)} already "
        f"{_target(result.action)}; IOMMU groups {groups} complete"
    )


def _move(
    action: VfioAction,
    sysfs: Path,
    devices: list[str] | None,
    include_nvswitches: bool,
    dry_run: bool,
    simulate: bool,
    json_: bool,
) -> None:
    with user_errors():
        the_plan = vfio.plan(
            read_host(sysfs), action, include_nvswitches=include_nvswitches, devices=devices or ()
        )
        result = None if dry_run else vfio.apply(the_plan, _kernel(sysfs, simulate))
    if json_:
        print_json(plan_json(the_plan) if result is None else result_json(result))
    elif result is None:
        _echo_plan(the_plan)
    else:
        _echo_result(result)


@app.command("bind")
def bind(
    sysfs: SysfsOption = SYSFS_ROOT,
    device: DeviceOption = None,
    include_nvswitches: NvswitchOption = False,
    dry_run: DryRunOption = False,
    simulate_kernel: SimulateOption = False,
    json_: JsonOption = False,
) -> None:
    """Move every GPU (and with --include-nvswitches, every NVSwitch) to vfio-pci.

    Each device gets driver_override=vfio-pci, is unbound from its driver and re-probed; the
    other members of its IOMMU group move too (bridges stay), and each group is checked
    complete afterwards. Devices already on vfio-pci are left alone, so running it twice is
    safe. It refuses, writing nothing, when a device is in use or a host device (a NIC, a
    drive) shares a GPU's IOMMU group. The hidden --simulate-kernel option is for fixture trees
    and tests only.

    Example: gpucaas node vfio bind --include-nvswitches --dry-run
    """
    _move(VfioAction.BIND, sysfs, device, include_nvswitches, dry_run, simulate_kernel, json_)


@app.command("unbind")
def unbind(
    sysfs: SysfsOption = SYSFS_ROOT,
    device: DeviceOption = None,
    include_nvswitches: NvswitchOption = False,
    dry_run: DryRunOption = False,
    simulate_kernel: SimulateOption = False,
    json_: JsonOption = False,
) -> None:
    """Give the GPUs (and with --include-nvswitches, the NVSwitches) back to the host.

    Each device's driver_override is cleared, it is unbound from vfio-pci and re-probed, so
    the kernel binds its default driver if one is loaded (on a gpucaas host, none: the GPU
    stays without a driver). It refuses, writing nothing, when a VM holds a device.

    Example: gpucaas node vfio unbind --device 0000:9a:00.0
    """
    _move(VfioAction.UNBIND, sysfs, device, include_nvswitches, dry_run, simulate_kernel, json_)


@app.command("status")
def status_cmd(sysfs: SysfsOption = SYSFS_ROOT, json_: JsonOption = False) -> None:
    """Show each GPU's and NVSwitch's driver and whether its IOMMU group is VFIO-ready.

    A group is ready when every member but bridges is on vfio-pci (or parked on pci-stub).

    Example: gpucaas node vfio status --json
    """
    with user_errors():
        result = vfio.status(read_host(sysfs))
    if json_:
        print_json(status_json(result))
        return
    typer.echo(
        table(
            ["BDF", "KIND", "MODEL", "DRIVER", "OVERRIDE", "IOMMU GROUP", "GROUP READY"],
            [
                [
                    d.bdf,
                    d.kind,
                    d.model,
                    _dash(d.driver),
                    _dash(d.driver_override),
                    _dash(d.iommu_group),
                    "yes" if d.group_ready else "no",
                ]
                for d in result.devices
            ],
        )
    )
    for d in result.devices:
        if d.blocking:
            typer.echo(f"not ready: {d.bdf}: {'; '.join(d.blocking)}")
