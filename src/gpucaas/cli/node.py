"""``gpucaas node``: what the node agent sees on this host, and how it prepares it.

Each command calls one function of a ``gpucaas.node`` part (or ``gpucaas.cdi``) and renders
its result. Discovery problems are warnings, printed after the table; they never change the
exit status, so scripts can run ``inspect`` on a half-configured host. Only a missing sysfs
tree exits 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpucaas import cdi
from gpucaas.errors import EXIT_BAD_INPUT
from gpucaas.node import gpu_cdi_spec, kubelet_gpus, modulemap
from gpucaas.node.discovery import (
    SYSFS_ROOT,
    Discovery,
    DiscoveryWarning,
    NvidiaDevice,
    discover,
)

from . import node_boot, node_plugin, node_runtime, node_vfio
from ._common import JsonOption, print_json, table, user_errors

app = typer.Typer(help="Node agent: discovery, VFIO, module-ID map, CDI.", no_args_is_help=True)

SysfsOption = Annotated[
    Path,
    typer.Option(
        "--sysfs",
        help="Root of the sysfs tree to read (a fixture tree in tests).",
        show_default=True,
    ),
]


@app.callback()
def _node() -> None:
    """Node agent: discovery, VFIO, module-ID map, CDI."""


def _size(size: int | None) -> str:
    """Binary units, as ``lspci`` prints BAR sizes (``128G`` there, ``128 GiB`` here)."""
    if size is None:
        return "-"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def _hex(value: int | None, width: int) -> str | None:
    return None if value is None else f"{value:#0{width + 2}x}"


def device_json(device: NvidiaDevice) -> dict[str, object]:
    return {
        "bdf": device.bdf,
        "kind": str(device.kind),
        "model": device.model,
        "vendor_id": _hex(device.vendor_id, 4),
        "device_id": _hex(device.device_id, 4),
        "class_code": _hex(device.class_code, 6),
        "driver": device.driver,
        "iommu_group": device.iommu_group,
        "iommu_group_members": list(device.iommu_group_members),
        "numa_node": device.numa_node,
        "bars": [{"index": b.index, "size_bytes": b.size_bytes} for b in device.bars],
        "vfio_cdev": device.vfio_cdev,
    }


def warning_json(warning: DiscoveryWarning) -> dict[str, object]:
    return {
        "code": str(warning.code),
        "severity": str(warning.severity),
        "bdf": warning.bdf,
        "message": warning.message,
    }


def discovery_json(result: Discovery) -> dict[str, object]:
    return {
        "devices": [device_json(d) for d in result.devices],
        "warnings": [warning_json(w) for w in result.warnings],
    }


def _dash(value: object) -> object:
    return "-" if value is None else value


@app.command("inspect")
def inspect(sysfs: SysfsOption = SYSFS_ROOT, json_: JsonOption = False) -> None:
    """List this host's NVIDIA GPUs and NVSwitches as the node agent sees them in sysfs.

    Problems found are printed after the table as warnings; they do not change the exit status.

    Example: gpucaas node inspect --json
    """
    with user_errors():
        result = discover(sysfs)
    if json_:
        print_json(discovery_json(result))
        return
    if result.devices:
        typer.echo(
            table(
                ["BDF", "KIND", "MODEL", "DRIVER", "IOMMU GROUP", "NUMA", "BAR2", "VFIO CDEV"],
                [
                    [
                        d.bdf,
                        d.kind,
                        d.model,
                        _dash(d.driver),
                        _dash(d.iommu_group),
                        _dash(d.numa_node),
                        _size(d.bar_size(2)),
                        _dash(d.vfio_cdev),
                    ]
                    for d in result.devices
                ],
            )
        )
    for warning in result.warnings:
        typer.echo(f"{warning.severity}: {warning.message}")


MapOption = Annotated[Path, typer.Option("--map", help="Where the module-ID map is stored.")]


@app.command("capture-map")
def capture_map(
    from_: Annotated[
        Path | None,
        typer.Option("--from", help="Read `nvidia-smi -q -x` output from this file instead."),
    ] = None,
    map_path: MapOption = modulemap.DEFAULT_MAP_PATH,
    sysfs: SysfsOption = SYSFS_ROOT,
    json_: JsonOption = False,
) -> None:
    """Record which PCI device is which GPU module (1-8), from nvidia-smi, and store it.

    Run it once per node while the NVIDIA driver is still bound (or feed it saved
    `nvidia-smi -q -x` output with --from). The map is checked against the GPUs found in
    sysfs and written atomically; module IDs are never guessed from PCI order.

    Example: gpucaas node capture-map --from nvidia-smi-q.xml
    """
    with user_errors():
        module_map = modulemap.capture(xml=from_)
        gpus = kubelet_gpus(discover(sysfs), module_map)
        modulemap.save(module_map, map_path)
    if json_:
        print_json({"map": str(map_path), **module_map.to_dict()})
        return
    typer.echo(
        table(
            ["MODULE ID", "DEVICE ID", "BDF", "UUID", "NUMA"],
            [[g.module_id, g.device_id, g.bdf, g.uuid, _dash(g.numa_node)] for g in gpus],
        )
    )
    typer.echo(f"saved {map_path}")


app.add_typer(node_vfio.app, name="vfio")
app.command("device-plugin")(node_plugin.device_plugin)
app.command("boot-budget")(node_boot.boot_budget)
app.add_typer(node_runtime.app, name="runtime-config")

cdi_app = typer.Typer(help="CDI specs for Kata's GPU cold plug.", no_args_is_help=True)
app.add_typer(cdi_app, name="cdi")


@cdi_app.command("generate")
def cdi_generate(
    resource: Annotated[
        str, typer.Option(help="Kubernetes resource name = CDI kind.")
    ] = "nvidia.com/gpu",
    iommufd: Annotated[
        bool, typer.Option(help="Use iommufd nodes (/dev/vfio/devices/vfioN, /dev/iommu).")
    ] = False,
    spec_dir: Annotated[
        Path, typer.Option("--dir", help="Where to write the spec.")
    ] = cdi.CDI_SPEC_DIR,
    stdout: Annotated[
        bool, typer.Option("--stdout", help="Print the spec instead of writing it.")
    ] = False,
    map_path: MapOption = modulemap.DEFAULT_MAP_PATH,
    sysfs: SysfsOption = SYSFS_ROOT,
) -> None:
    """Write the CDI spec that maps each kubelet device ID to its /dev/vfio node(s).

    Device IDs are "0".."7" in module-ID order, from the stored module-ID map.

    Example: gpucaas node cdi generate --dir /var/run/cdi
    """
    with user_errors():
        gpus = kubelet_gpus(discover(sysfs), modulemap.load(map_path))
        spec = gpu_cdi_spec(gpus, kind=resource, iommufd=iommufd)
        if stdout:
            typer.echo(spec.to_json())
            return
        path = cdi.write_spec(spec, spec_dir)
    typer.echo(f"wrote {path} (cdiVersion {spec.version}, {len(spec.devices)} devices)")


@cdi_app.command("validate")
def cdi_validate(
    spec: Annotated[Path, typer.Argument(help="The CDI spec file to check.")],
    spec_dir: Annotated[
        Path | None,
        typer.Option("--dir", help="Also check no other spec here defines the same devices."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Check a CDI spec against the CDI rules; print each violation. Exit 2 if any error.

    Example: gpucaas node cdi validate /var/run/cdi/nvidia.com-gpu.json --dir /var/run/cdi
    """
    with user_errors():
        violations = cdi.validate(spec, spec_dir=spec_dir)
    errors = [v for v in violations if v.is_error]
    if json_:
        print_json(
            [
                {
                    "code": str(v.code),
                    "location": v.location,
                    "severity": str(v.severity),
                    "message": v.message,
                }
                for v in violations
            ]
        )
    else:
        for v in violations:
            typer.echo(f"{v.severity}: {v.location}: {v.message} [{v.code}]")
        if not violations:
            typer.echo(f"{spec}: valid")
    if errors:
        raise typer.Exit(EXIT_BAD_INPUT)  # the spec is the command's input, and it is bad
