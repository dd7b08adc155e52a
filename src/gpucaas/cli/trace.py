"""``gpucaas trace``: inspect cluster traces and generate synthetic ones."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from gpucaas.sim import SyntheticSpec, Trace, generate, load_trace, write_trace_csv

from ._common import JsonOption, print_json, table, user_errors

app = typer.Typer(help="Inspect cluster traces and generate synthetic ones.", no_args_is_help=True)


def trace_summary(trace: Trace) -> dict[str, object]:
    sizes = Counter(p.gpus for p in trace.pods)
    return {
        "source": trace.source,
        "pods": len(trace.pods),
        "gpus_asked": sum(p.gpus for p in trace.pods),
        "pods_by_gpus": {str(g): sizes[g] for g in sorted(sizes)},
        "has_times": trace.has_times,
        "end_s": trace.end_s,
        "dropped_cpu_only": trace.dropped_cpu_only,
        "fractional_rounded_up": trace.fractional,
        "skipped_bad": trace.skipped_bad,
    }


@app.command("inspect")
def inspect(
    path: Annotated[Path, typer.Argument(help="Pod CSV in the Alibaba v2023 format.")],
    skip_bad: Annotated[bool, typer.Option(help="Skip malformed rows (and count them).")] = False,
    json_: JsonOption = False,
) -> None:
    """Summarise a trace as the simulator sees it (whole GPUs, CPU-only pods dropped).

    Example: gpucaas trace inspect openb_pod_list_default.csv
    """
    with user_errors():
        trace = load_trace(path, skip_bad=skip_bad)
    summary = trace_summary(trace)
    if json_:
        print_json(summary)
        return
    typer.echo(table(["FIELD", "VALUE"], [[k, v] for k, v in summary.items()]))


@app.command("generate")
def generate_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write.")],
    spec: Annotated[
        str,
        typer.Argument(
            help="pods=N,rate=PER_HOUR,mix=1:60+2:15+4:15+8:10,duration=exp|lognormal|fixed,"
            "mean=SECONDS,sigma=S,seed=N (all optional)"
        ),
    ] = "",
) -> None:
    """Write a seeded synthetic trace (Poisson arrivals) in the Alibaba v2023 pod CSV format.

    Example: gpucaas trace generate 'pods=5000,rate=30,seed=7' --out synthetic.csv
    """
    with user_errors():
        trace = generate(SyntheticSpec.parse(spec))
        write_trace_csv(trace, out)
    typer.echo(f"wrote {len(trace.pods)} pods to {out} ({trace.source})")
