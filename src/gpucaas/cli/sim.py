"""``gpucaas sim``: replay a trace through the placement policies and compare them."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gpucaas.errors import InvalidRequest
from gpucaas.placement import DEFAULT_MAX_BYPASS, DEFAULT_POLICY, POLICY_NAMES
from gpucaas.sim import (
    FULL,
    SHORT,
    DynamicResult,
    InflationResult,
    Result,
    SimConfig,
    SyntheticSpec,
    Trace,
    expected_work,
    generate,
    load_trace,
    parse_policies,
    report_json,
    run_suite,
    simulate,
    write_report,
)
from gpucaas.topology import get_model

from ._common import JsonOption, print_json, table, user_errors

_PROGRESS_THRESHOLD = 20_000
"""Show a progress bar when a run handles more trace pods than this (all policies)."""


def sim(
    trace_path: Annotated[
        Path | None,
        typer.Option("--trace", help="Pod CSV in the Alibaba cluster-trace-gpu-v2023 format."),
    ] = None,
    synthetic: Annotated[
        str | None,
        typer.Option(
            help="Generate the trace instead: pods=N,rate=PER_HOUR,mix=1:60+8:40,... "
            "(see 'gpucaas trace generate --help')."
        ),
    ] = None,
    nodes: Annotated[int, typer.Option(help="Boards in the simulated fleet.")] = 100,
    board: Annotated[str, typer.Option(help="Board model of every node.")] = "hgx-h100-8",
    policy: Annotated[
        str,
        typer.Option(help=f"Comma-separated policies, or 'all': {', '.join(POLICY_NAMES)}."),
    ] = DEFAULT_POLICY,
    mode: Annotated[
        str,
        typer.Option(
            help="dynamic (arrivals and departures in trace time) or inflation (FGD: pods "
            "sampled until demand reaches --target % of capacity, none leave)."
        ),
    ] = "dynamic",
    seed: Annotated[int, typer.Option(help="Seed of the random policy and of sampling.")] = 0,
    target: Annotated[
        int, typer.Option(help="Inflation mode: stop at this arrived demand, % of capacity.")
    ] = 130,
    max_bypass: Annotated[
        int,
        typer.Option(
            help="Starvation guard: younger requests that may start before the oldest waiting "
            "one gets GPUs reserved."
        ),
    ] = DEFAULT_MAX_BYPASS,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip malformed trace rows (and count them) instead of stopping.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="Directory to write report.json and PNG plots into.")
    ] = None,
    suite: Annotated[
        bool,
        typer.Option(
            "--suite",
            help="Run the placement quality suite instead (every policy on the Alibaba "
            "traces and the synthetic mixes; minutes). Traces come from --data.",
        ),
    ] = False,
    short: Annotated[
        bool, typer.Option("--short", help="With --suite: its short form (seconds).")
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(
            help="With --suite: the shared trace folder (default: $GPUCAAS_DATA); its "
            "workloads are skipped when absent."
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Replay a trace through the placement policies and print how each one did.

    Example: gpucaas sim --trace openb_pod_list_default.csv --nodes 6 --policy all
    """
    if suite:
        _suite(short=short, data=data, json_=json_)
        return
    with user_errors():
        if (trace_path is None) == (synthetic is None):
            raise InvalidRequest("give exactly one of --trace FILE, --synthetic SPEC or --suite")
        trace = (
            load_trace(trace_path, skip_bad=skip_bad)
            if trace_path is not None
            else generate(SyntheticSpec.parse(synthetic or ""))
        )
        config = SimConfig(
            board=get_model(board),
            nodes=nodes,
            policies=parse_policies(policy),
            mode=mode,
            seed=seed,
            max_bypass=max_bypass,
            target_pct=target,
        )
        results = _run(config, trace, show_progress=not json_)
        written = write_report(report, config, trace, results) if report is not None else []
    if json_:
        print_json(report_json(config, trace, results))
        return
    typer.echo(_header(config, trace))
    typer.echo(_render(results))
    for path in written:
        typer.echo(f"wrote {path}")


def _suite(*, short: bool, data: Path | None, json_: bool) -> None:
    if data is None and os.environ.get("GPUCAAS_DATA"):
        data = Path(os.environ["GPUCAAS_DATA"])
    console = Console(stderr=True)
    if json_:
        result = run_suite(SHORT if short else FULL, data)
    else:
        with console.status("suite") as status:
            result = run_suite(
                SHORT if short else FULL, data, progress=lambda name: status.update(name)
            )
    if json_:
        print_json(result.to_json())
        return
    typer.echo(f"fragmentation loss, % of capacity (mean±sd over seeds); default {result.default}")
    typer.echo(result.table())
    for line in result.skipped:
        typer.echo(f"skipped: {line}")
    missed = result.failures()
    typer.echo(
        f"invalid sets from partition-aware policies: {result.invalid_by_valid_policies}; "
        f"targets missed: {len(missed)}"
    )
    for line in missed:
        typer.echo(f"  {line}")


def _run(config: SimConfig, trace: Trace, *, show_progress: bool) -> list[Result]:
    total = expected_work(config, trace)
    if not show_progress or total < _PROGRESS_THRESHOLD:
        return simulate(config, trace)
    console = Console(stderr=True)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"simulating {len(config.policies)} policies", total=total)
        return simulate(config, trace, progress=lambda n: bar.advance(task, n))


def _header(config: SimConfig, trace: Trace) -> str:
    gpus = config.nodes * config.board.gpu_count
    skipped = f", {trace.skipped_bad} bad rows skipped" if trace.skipped_bad else ""
    return (
        f"{trace.source}: {len(trace.pods)} GPU pods ({trace.dropped_cpu_only} CPU-only "
        f"dropped, {trace.fractional} fractional rounded up to 1 GPU{skipped})\n"
        f"fleet: {config.nodes} × {config.board.name} = {gpus} GPUs; mode {config.mode}\n"
    )


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    if value < 172800:
        return f"{value / 3600:.1f}h"
    return f"{value / 86400:.1f}d"


def _render(results: list[Result]) -> str:
    dynamic = [r for r in results if isinstance(r, DynamicResult)]
    inflation = [r for r in results if isinstance(r, InflationResult)]
    parts = []
    if dynamic:
        parts.append(
            table(
                [
                    "POLICY",
                    "ALLOCATED",
                    "FRAG LOSS GPU-h",
                    "FRAG LOSS %",
                    "WHILE QUEUED",
                    "WAIT p50/p99 BY GPUs",
                    "INVALID",
                    "RESERVED",
                    "UNSTARTED",
                    "TIME",
                ],
                [
                    [
                        r.policy,
                        f"{100 * r.allocation_ratio:.2f}%",
                        f"{r.fragmentation_loss_gpu_hours:.1f}",
                        f"{r.fragmentation_loss_pct:.3f}%",
                        f"{r.fragmentation_loss_pct_queued:.2f}%",
                        " ".join(
                            f"{w.gpus}:{_seconds(w.p50_s)}/{_seconds(w.p99_s)}" for w in r.waits
                        ),
                        r.invalid_placements,
                        r.reservations,
                        sum(w.unstarted for w in r.waits),
                        f"{r.elapsed_s:.2f}s",
                    ]
                    for r in dynamic
                ],
            )
        )
    if inflation:
        parts.append(
            table(
                [
                    "POLICY",
                    "ALLOC @100%",
                    f"ALLOC @{inflation[0].target_pct}%",
                    "ARRIVED",
                    "FAILED",
                    "FAILED WITH ROOM",
                    "INVALID",
                    "TIME",
                ],
                [
                    [
                        r.policy,
                        f"{r.allocation_at(100):.2f}%",
                        f"{r.allocation_at(r.target_pct):.2f}%",
                        r.arrived,
                        r.failed,
                        r.failed_with_room,
                        r.invalid_placements,
                        f"{r.elapsed_s:.2f}s",
                    ]
                    for r in inflation
                ],
            )
        )
    return "\n\n".join(parts)
