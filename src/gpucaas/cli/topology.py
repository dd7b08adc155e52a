"""``gpucaas topology``: the board models and their Fabric Manager partition tables."""

from __future__ import annotations

from typing import Annotated

import typer

from gpucaas.topology import MODELS, BoardModel, get_model

from ._common import JsonOption, print_json, table, user_errors

app = typer.Typer(help="Board models and their partition tables.", no_args_is_help=True)


def model_json(model: BoardModel) -> dict[str, object]:
    return {
        "model": model.name,
        "aliases": list(model.aliases),
        "description": model.description,
        "gpu_count": model.gpu_count,
        "partition_sizes": list(model.sizes),
        "gpu_devices": [
            {
                "name": d.name,
                "device_id": f"{d.device_id:#06x}",
                "bar2_gib": d.bar2_gib
                if d.bar2_gib is not None
                else model.bars and model.bars.bar2_gib,
            }
            for d in model.gpu_devices
        ],
        "nvswitch": None
        if model.nvswitch is None
        else {
            "name": model.nvswitch.name,
            "device_id": f"{model.nvswitch.device_id:#06x}",
            "count": model.nvswitch.count,
        },
        "bars": None
        if model.bars is None
        else {
            "bar0_mib": model.bars.bar0_mib,
            "bar2_gib": model.bars.bar2_gib,
            "bar4_mib": model.bars.bar4_mib,
        },
        "partitions": [
            {
                "id": int(p.id),
                "gpus": p.size,
                "nvlinks": p.nvlinks,
                "module_ids": [int(m) for m in p.module_ids],
            }
            for p in model.partitions
        ],
    }


@app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="Board model name or alias, e.g. hgx-h100-8.")],
    json_: JsonOption = False,
) -> None:
    """Print a board model's partition table, with the columns of `fmctl list`.

    Example: gpucaas topology show hgx-h100-8
    """
    with user_errors():
        board = get_model(model)
    if json_:
        print_json(model_json(board))
        return
    typer.echo(f"{board.name}: {board.description}")
    typer.echo(
        table(
            ["PARTITION ID", "GPUs", "NVLINKS", "GPU PHYSICAL IDs"],
            [
                [p.id, p.size, p.nvlinks, ",".join(str(m) for m in p.module_ids)]
                for p in board.partitions
            ],
        )
    )


@app.command("list")
def list_models(json_: JsonOption = False) -> None:
    """List the board models gpucaas knows.

    Example: gpucaas topology list --json
    """
    models = [get_model(name) for name in MODELS.names()]
    if json_:
        print_json(
            [
                {
                    "model": m.name,
                    "aliases": list(m.aliases),
                    "gpu_count": m.gpu_count,
                    "partitions": len(m.partitions),
                    "description": m.description,
                }
                for m in models
            ]
        )
        return
    typer.echo(
        table(
            ["MODEL", "GPUs", "PARTITIONS", "ALIASES", "DESCRIPTION"],
            [
                [m.name, m.gpu_count, len(m.partitions), ",".join(m.aliases) or "-", m.description]
                for m in models
            ],
        )
    )
