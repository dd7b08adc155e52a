"""``fmctl``: the operator's tool for one board's Fabric Manager partitions.

Exit codes, from the error tree as for ``gpucaas`` (``gpucaas.errors.exit_code``): 0 ok;
1 Fabric Manager refused (its code name and meaning are printed); 2 usage or bad input;
3 cannot connect (FM or the fm-controller down, libnvfm missing).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from gpucaas.errors import InvalidRequest
from gpucaas.fabric import (
    DEFAULT_CONTROLLER_SOCKET,
    FabricManager,
    NvfmLibrary,
    PartitionInfo,
    RemoteFabric,
    SimulatedFabric,
)
from gpucaas.topology import format_module_ids, get_model

from ._common import EXIT_STATUS_HELP, FmctlGroup, JsonOption, print_json, table
from .fabric import read_token

app = typer.Typer(
    name="fmctl",
    cls=FmctlGroup,
    help="Fabric Manager partitions of one board: list, activate, deactivate, replay.\n\n"
    + EXIT_STATUS_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class _Options:
    def __init__(
        self,
        simulated: Path | None,
        board: str,
        nvfm: bool,
        address: str | None,
        nvfm_library: str,
        token_file: Path | None,
        json_: bool,
    ) -> None:
        self.simulated = simulated
        self.board = board
        self.nvfm = nvfm
        self.address = address
        self.nvfm_library = nvfm_library
        self.token_file = token_file
        self.json = json_


@app.callback()
def _root(
    ctx: typer.Context,
    simulated: Annotated[
        Path | None,
        typer.Option(help="Use a simulated Fabric Manager whose state lives in this file."),
    ] = None,
    board: Annotated[str, typer.Option(help="Board model of the simulated fabric.")] = "hgx-h100-8",
    nvfm: Annotated[
        bool, typer.Option("--nvfm", help="Talk to Fabric Manager directly through libnvfm.")
    ] = False,
    address: Annotated[
        str | None,
        typer.Option(
            help="The fm-controller's socket path or host:port (default "
            f"{DEFAULT_CONTROLLER_SOCKET}); with --nvfm, Fabric Manager's own address: "
            "a.b.c.d[:port] (default 127.0.0.1, port 6666), a unix socket path, or "
            "vsock:CID:PORT."
        ),
    ] = None,
    nvfm_library: Annotated[
        str, typer.Option(help="Path or name of libnvfm for --nvfm.")
    ] = "libnvfm.so.1",
    token_file: Annotated[
        Path | None,
        typer.Option(help="File with the fm-controller's shared token (mode 0600 or stricter)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Fabric Manager partitions of one board: list, activate, deactivate, replay.

    By default fmctl talks to the fm-controller (which persists and replays the activated
    set); --nvfm goes straight to Fabric Manager, --simulated to a simulated one.
    """
    ctx.obj = _Options(simulated, board, nvfm, address, nvfm_library, token_file, json_)


@contextmanager
def _fabric(ctx: typer.Context) -> Iterator[FabricManager]:
    """Open the chosen backend, and close it after; FmctlGroup turns our errors into one
    line and an exit code."""
    opts: _Options = ctx.obj
    closer: Any = None
    try:
        fabric: FabricManager
        if opts.simulated is not None and opts.nvfm:
            raise InvalidRequest("choose one of --simulated FILE and --nvfm, not both")
        if opts.simulated is not None:
            fabric = SimulatedFabric(get_model(opts.board), state_file=opts.simulated)
        elif opts.nvfm:
            fabric = closer = NvfmLibrary(opts.address or "127.0.0.1", library=opts.nvfm_library)
        else:
            fabric = closer = RemoteFabric(
                opts.address or DEFAULT_CONTROLLER_SOCKET, token=read_token(opts.token_file)
            )
        yield fabric
    finally:
        if closer is not None:
            closer.close()


def _partition_json(p: PartitionInfo) -> dict[str, object]:
    return {
        "id": int(p.id),
        "active": p.active,
        "gpus": len(p.gpus),
        "nvlinks": p.nvlinks,
        "module_ids": [int(m) for m in p.module_ids],
        "gpu_info": [
            {
                "physical_id": int(g.physical_id),
                "uuid": g.uuid,
                "pci_bus_id": g.pci_bus_id,
                "nvlinks_available": g.nvlinks_available,
                "nvlinks_max": g.nvlinks_max,
                "nvlink_line_rate_mbps": g.nvlink_line_rate_mbps,
            }
            for g in p.gpus
        ],
    }


_PARTITION_ID_MAX = 2**32 - 1
"""Fabric Manager's partition ids are C ``unsigned int``s (``fmFabricPartitionId_t``)."""


def _partition_id(value: int | str) -> int:
    """``value`` if Fabric Manager could name a partition by it; raises InvalidRequest (exit
    2) before the number reaches protobuf or ctypes, which would fail on it or wrap it."""
    text = str(value).strip()
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidRequest(f"{text!r}: partition ids are non-negative integers, e.g. 3,4")
    # Compare as text first: int() refuses numbers of over 4300 digits with a ValueError.
    if text.startswith("-") or len(digits) > 10 or int(digits) > _PARTITION_ID_MAX:
        shown = text if len(text) <= 24 else f"{text[:20]}… ({len(digits)} digits)"
        raise InvalidRequest(
            f"partition id {shown} is out of range: Fabric Manager partition ids are 0 to "
            f"{_PARTITION_ID_MAX}; run 'fmctl list' for the ids this board supports"
        )
    return int(digits)


def _parse_ids(text: str) -> list[int]:
    if text.strip() == "none":
        return []
    ids = []
    for part in (p.strip() for p in text.split(",")):
        if not (part.isascii() and part.isdigit()):
            raise InvalidRequest(f"{text!r}: partition ids are non-negative integers, e.g. 3,4")
        ids.append(_partition_id(part))
    return ids


@app.command("list")
def list_cmd(ctx: typer.Context) -> None:
    """Print every supported partition and whether it is active.

    Example: fmctl --simulated fabric.json list
    """
    with _fabric(ctx) as fabric:
        partitions = fabric.list_partitions()
    if ctx.obj.json:
        print_json([_partition_json(p) for p in partitions])
        return
    headers = ["PARTITION ID", "STATUS", "GPUs", "NVLINKS", "GPU PHYSICAL IDs"]
    rows: list[list[object]] = [["-" * len(h) for h in headers]]
    rows += [
        [
            p.id,
            "Active" if p.active else "Inactive",
            len(p.gpus),
            p.nvlinks,
            ",".join(str(m) for m in p.module_ids),
        ]
        for p in partitions
    ]
    typer.echo(table(headers, rows))


@app.command("activate")
def activate(
    ctx: typer.Context,
    partition_id: Annotated[int | None, typer.Argument(help="Partition id to activate.")] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            help="Activate the partition whose GPU set is exactly these module IDs, e.g. 1,3."
        ),
    ] = None,
) -> None:
    """Activate a partition, by id or by its exact GPU set.

    Example: fmctl --simulated fabric.json activate --gpus 1,3
    """
    if (partition_id is None) == (gpus is None):
        raise InvalidRequest("give a partition id or --gpus, not both or neither")
    if partition_id is not None:
        partition_id = _partition_id(partition_id)
    with _fabric(ctx) as fabric:
        if gpus is not None:
            partition_id = _partition_for_gpus(fabric.list_partitions(), gpus)
        assert partition_id is not None
        fabric.activate(partition_id)
    _done(ctx, "activated", partition_id)


def _partition_for_gpus(partitions: tuple[PartitionInfo, ...], text: str) -> int:
    try:
        wanted = sorted({int(g) for g in text.split(",")})
    except ValueError:
        raise InvalidRequest(f"--gpus {text!r}: give module IDs like 1,3") from None
    for p in partitions:
        if list(p.module_ids) == wanted:
            return int(p.id)
    containing = [p for p in partitions if set(wanted) <= set(p.module_ids)]
    where = (
        "; partitions containing them: "
        + ", ".join(f"{p.id} (GPUs {format_module_ids(p.module_ids)})" for p in containing)
        if containing
        else "; no partition contains them all"
    )
    raise InvalidRequest(
        f"GPUs {format_module_ids(wanted)} are not exactly one partition{where}; "
        "none matches, so nothing was activated"
    )


@app.command("deactivate")
def deactivate(
    ctx: typer.Context,
    partition_id: Annotated[int, typer.Argument(help="Partition id to deactivate.")],
) -> None:
    """Deactivate a partition (only when no VM uses its GPUs).

    Example: fmctl --simulated fabric.json deactivate 3
    """
    partition_id = _partition_id(partition_id)
    with _fabric(ctx) as fabric:
        fabric.deactivate(partition_id)
    _done(ctx, "deactivated", partition_id)


@app.command("set-activated")
def set_activated(
    ctx: typer.Context,
    partition_ids: Annotated[
        str, typer.Argument(help="Comma-separated partition ids that are active, or 'none'.")
    ],
) -> None:
    """Tell a restarted Fabric Manager which partitions are active (replay).

    Example: fmctl --simulated fabric.json set-activated 3,4
    """
    ids = _parse_ids(partition_ids)
    with _fabric(ctx) as fabric:
        fabric.set_activated(ids)
    if ctx.obj.json:
        print_json({"activated": ids})
    else:
        typer.echo(f"activated set is now: {', '.join(map(str, ids)) or 'none'}")


@app.command("status")
def status(ctx: typer.Context) -> None:
    """Summarise the fabric: active partitions and the GPUs they hold.

    Example: fmctl --simulated fabric.json status --json
    """
    with _fabric(ctx) as fabric:
        partitions = fabric.list_partitions()
    active = [p for p in partitions if p.active]
    gpus = sorted({m for p in active for m in p.module_ids})
    summary = {
        "partitions": len(partitions),
        "active": [int(p.id) for p in active],
        "gpus_in_active_partitions": [int(m) for m in gpus],
    }
    if ctx.obj.json:
        print_json(summary)
        return
    typer.echo(f"partitions: {len(partitions)} supported, {len(active)} active")
    for p in active:
        typer.echo(f"  {p}")
    typer.echo(f"GPUs in active partitions: {format_module_ids(gpus) or 'none'}")


@app.command("failed-devices")
def failed_devices(ctx: typer.Context) -> None:
    """List GPUs and NVSwitches with failed NVLinks (always empty on H100/H200).

    Example: fmctl --nvfm failed-devices
    """
    with _fabric(ctx) as fabric:
        failed = fabric.failed_devices()
    data = {
        kind: [
            {"uuid": d.uuid, "pci_bus_id": d.pci_bus_id, "ports": list(d.ports)} for d in devices
        ]
        for kind, devices in (("gpus", failed.gpus), ("switches", failed.switches))
    }
    if ctx.obj.json:
        print_json(data)
        return
    if not failed.gpus and not failed.switches:
        typer.echo("no devices with failed NVLinks")
    for kind, devices in data.items():
        for d in devices:
            typer.echo(f"{kind[:-1]} {d['pci_bus_id']} {d['uuid']}: ports {d['ports']}")


def _done(ctx: typer.Context, verb: str, partition_id: int) -> None:
    if ctx.obj.json:
        print_json({verb: partition_id})
    else:
        typer.echo(f"partition {partition_id} {verb}")


def main() -> None:
    """Console-script entry point."""
    app()
