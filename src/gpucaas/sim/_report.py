"""The report of a simulation: one JSON document, plus PNG plots made with matplotlib.

I/O edge of the simulator: it writes files and nothing else. Plots use the non-interactive
Agg backend so they work on a headless machine.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gpucaas.errors import InvalidRequest

from ._engine import SimConfig
from ._results import DynamicResult, InflationResult, Result
from ._trace import Trace


def report_json(config: SimConfig, trace: Trace, results: Sequence[Result]) -> dict[str, Any]:
    """The whole run as one JSON-ready object: trace, configuration, and one entry per policy."""
    return {
        "trace": {
            "source": trace.source,
            "pods": len(trace.pods),
            "gpus_asked": sum(p.gpus for p in trace.pods),
            "dropped_cpu_only": trace.dropped_cpu_only,
            "fractional_rounded_up": trace.fractional,
            "skipped_bad": trace.skipped_bad,
        },
        "config": {
            "board": config.board.name,
            "nodes": config.nodes,
            "capacity_gpus": config.nodes * config.board.gpu_count,
            "mode": config.mode,
            "seed": config.seed,
            "max_bypass": config.max_bypass,
            **({"target_pct": config.target_pct} if config.mode == "inflation" else {}),
        },
        "policies": {r.policy: r.to_json() for r in results},
    }


def write_report(
    directory: Path | str, config: SimConfig, trace: Trace, results: Sequence[Result]
) -> list[Path]:
    """Write ``report.json`` and the plots into ``directory`` (created if missing).

    Returns the paths written. Raises :class:`InvalidRequest` when the directory cannot be
    created or written.
    """
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidRequest(
            f"cannot create report directory {folder}: {exc.strerror}; pass another --report"
        ) from exc
    written = [_write_json(folder / "report.json", report_json(config, trace, results))]
    dynamic = [r for r in results if isinstance(r, DynamicResult)]
    inflation = [r for r in results if isinstance(r, InflationResult)]
    title = f"{trace.source} on {config.nodes} × {config.board.name}"
    if dynamic:
        written.append(_plot_allocation_over_time(folder / "allocation.png", dynamic, title))
        written.append(_plot_fragmentation(folder / "fragmentation.png", dynamic, title))
    if inflation:
        written.append(_plot_allocation_vs_demand(folder / "allocation.png", inflation, title))
    return written


def _write_json(path: Path, data: Mapping[str, Any]) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".report-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InvalidRequest(f"cannot write {path}: {exc.strerror}") from exc
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure() -> tuple[Any, Any, Any]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    return plt, fig, ax


def _save(
    plt: Any,
    fig: Any,
    ax: Any,
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    percent: bool,
) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if percent:
        ax.set_ylim(0, 105)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_allocation_vs_demand(path: Path, results: Sequence[InflationResult], title: str) -> Path:
    plt, fig, ax = _figure()
    for r in results:
        ax.plot(range(len(r.allocation_by_demand)), r.allocation_by_demand, label=r.policy)
    ax.plot([0, 100], [0, 100], color="grey", linestyle=":", linewidth=1, label="demand")
    return _save(
        plt,
        fig,
        ax,
        path,
        xlabel="arrived GPU demand (% of capacity)",
        ylabel="GPU allocation ratio (%)",
        title=f"Allocation vs demand (inflation)\n{title}",
        percent=True,
    )


def _plot_allocation_over_time(path: Path, results: Sequence[DynamicResult], title: str) -> Path:
    plt, fig, ax = _figure()
    for r in results:
        ax.step(
            [t / 86400 for t in r.series_t],
            [100 * a / r.capacity_gpus for a in r.series_allocated],
            where="post",
            label=f"{r.policy} (mean {100 * r.allocation_ratio:.1f} %)",
            linewidth=0.8,
        )
    return _save(
        plt,
        fig,
        ax,
        path,
        xlabel="trace time (days)",
        ylabel="GPUs allocated (% of capacity)",
        title=f"Allocation over time (dynamic)\n{title}",
        percent=True,
    )


def _plot_fragmentation(path: Path, results: Sequence[DynamicResult], title: str) -> Path:
    plt, fig, ax = _figure()
    for r in results:
        ax.plot(
            [t / 86400 for t in r.series_t],
            r.series_fragmentation,
            label=f"{r.policy} ({r.fragmentation_loss_pct:.2f} % of capacity)",
        )
    return _save(
        plt,
        fig,
        ax,
        path,
        xlabel="trace time (days)",
        ylabel="cumulative fragmentation loss (GPU-hours)",
        title=f"Fragmentation loss over time (dynamic)\n{title}",
        percent=False,
    )
