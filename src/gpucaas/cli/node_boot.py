"""``gpucaas node boot-budget``: how long a Kata GPU VM of a given size takes to boot.

Renders :func:`gpucaas.runtime.boot_budget`: each phase with the publication or assumption
behind it, the total against the 2-minute promise, and what would bring the VM under it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gpucaas.runtime import (
    HUGEPAGES_CHOICES,
    BootBudget,
    bar_gib_for,
    memory_gib_from,
)
from gpucaas.runtime import boot_budget as estimate

from ._common import JsonOption, print_json, table, user_errors


def render(budget: BootBudget) -> str:
    """The human view: phases, total against the target, recommendations."""
    rows = [(p.name, f"{p.seconds:.1f}", p.basis) for p in budget.phases]
    verdict = "within" if budget.within_target else "OVER"
    hugepages = "1 GiB hugepages" if budget.hugepages == "1Gi" else "4 KiB pages"
    lines = [
        f"Kata GPU VM: {budget.gpus} GPUs ({budget.bar_gib} GiB BAR1 each), "
        f"{budget.memory_gib:g} GiB + {budget.base_memory_gib:g} GiB base memory, {hugepages}, "
        f"VFIO {'iommufd' if budget.iommufd else 'type1'}, guest CDI spec "
        f"{'pre-generated' if budget.pregenerated_cdi else 'generated at boot'}",
        "",
        table(["PHASE", "SECONDS", "BASIS"], rows),
        "",
        f"total: {budget.total_seconds:.0f} s, {verdict} the {budget.target_seconds:g} s target "
        "(an estimate from published measurements, not a measurement of this host)",
    ]
    if budget.recommendations:
        lines += ["", "recommendations:"]
        lines += [f"  - {r}" for r in budget.recommendations]
    return "\n".join(lines)


def boot_budget(
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs in the VM (the partition size), 1-8.")],
    memory: Annotated[
        str | None,
        typer.Option(
            "--memory",
            help="Tenant memory: GiB (1280) or a quantity (1280Gi, 1.25Ti). "
            "Default: the partition size's default VM memory.",
            show_default=False,
        ),
    ] = None,
    hugepages: Annotated[
        str,
        typer.Option(
            "--hugepages", help=f"What backs guest RAM: {' or '.join(HUGEPAGES_CHOICES)}."
        ),
    ] = "1Gi",
    bar: Annotated[
        str,
        typer.Option("--bar", help="GPU model (h100, h200) or BAR1 size in GiB."),
    ] = "h100",
    iommufd: Annotated[
        bool, typer.Option(help="VFIO through iommufd instead of the legacy type1 backend.")
    ] = False,
    pregenerated_cdi: Annotated[
        bool,
        typer.Option(help="The guest CDI spec is ready before the Kata agent asks for it."),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Estimate a Kata GPU VM's boot, phase by phase, from published measurements.

    Prints each phase with its source, the total against the 120 s target, and what would
    bring the VM under it (hugepages, a pre-generated guest CDI spec, iommufd, timeouts).

    Example: gpucaas node boot-budget --gpus 8 --memory 1280
    """
    with user_errors():
        budget = estimate(
            gpus,
            None if memory is None else memory_gib_from(memory),
            hugepages=hugepages,
            bar_gib=bar_gib_for(bar),
            iommufd=iommufd,
            pregenerated_cdi=pregenerated_cdi,
        )
    if json_:
        print_json(budget.to_dict())
        return
    typer.echo(render(budget))
