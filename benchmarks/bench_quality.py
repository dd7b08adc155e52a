"""Placement quality suite (issue 18): every policy on every workload, default against the rest.

Runs :data:`gpucaas.sim.FULL` (the shared Alibaba traces at 4-8 boards, the multigpu20
variant by inflation, three synthetic mixes at 80-100 % offered load on 12, 100 and 1,000
boards with 5 seeds each, hgx-h100-8 and hgx-b200-8) and prints, per workload, every
policy's fragmentation loss (% of capacity, mean ± sd over seeds), then the default against
the previous default (``best-fit``), the best other valid policy and ``stock``: all baselines
run in the same process on the same streams. The two targets of the issue are checked and
each miss is listed with its figures. Nothing is asserted: this script gates nothing.

Run: GPUCAAS_DATA=../shared/data .venv/bin/python benchmarks/bench_quality.py
     [--short] [--json] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

from gpucaas.sim import FULL, SHORT, SuiteReport, WorkloadReport, run_suite

BEFORE = "best-fit"
"""The default before issue 18."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--short", action="store_true", help="the short form (seconds)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args()
    data = Path(
        os.environ.get("GPUCAAS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    started = time.perf_counter()
    report = run_suite(
        SHORT if args.short else FULL,
        data if data.is_dir() else None,
        progress=lambda name: print(f"  {name}", file=sys.stderr, flush=True),
    )
    wall = time.perf_counter() - started
    doc = {**report.to_json(), "wall_s": round(wall, 1)}
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print("Fragmentation loss, % of capacity (mean±sd over seeds)\n")
    print(report.table())
    print()
    print(before_after(report))
    print()
    print(summary(report))
    print(f"\n{wall:.0f} s wall")
    return 0


def before_after(report: SuiteReport) -> str:
    """Default after against before, the best other valid policy and stock, per workload."""
    lines = [
        f"{'workload':<48} {BEFORE + ' (before)':>17} {report.default + ' (after)':>21} "
        f"{'best other':>22} {'stock':>7} {'after/best':>10} {'after/stock':>11} "
        f"{'8-GPU wait p50/p99 (after)':>27}"
    ]
    for w in report.workloads:
        after, before = w.score(report.default), w.score(BEFORE)
        best = w.best_other
        stock = w.score("stock")
        lines.append(
            f"{w.workload.name:<48} {before.loss_pct:>17.3f} {after.loss_pct:>21.3f} "
            f"{(best.policy + ' ' + format(best.loss_pct, '.3f')) if best else '-':>22} "
            f"{stock.loss_pct:>7.3f} {_r(w.ratio_to_best_other):>10} {_r(w.ratio_to_stock):>11} "
            f"{_wait(after.wait8_p50_s) + '/' + _wait(after.wait8_p99_s):>27}"
        )
    return "\n".join(lines)


def summary(report: SuiteReport) -> str:
    groups: dict[str, list[WorkloadReport]] = {}
    for w in report.workloads:
        key = w.workload.group if w.workload.group != "synthetic" else f"synthetic {w.workload.mix}"
        groups.setdefault(key, []).append(w)
    lines = [
        "group: target 1 met / workloads; mean after/best other; mean after/stock; "
        f"mean {BEFORE}/best other"
    ]
    for key, ws in groups.items():
        met = sum(1 for w in ws if w.beats_best_other)
        ratio = _mean([w.ratio_to_best_other for w in ws])
        stock = _mean([w.ratio_to_stock for w in ws])
        before = _mean(
            [
                _div(w.score(BEFORE).loss_pct, w.best_other.loss_pct) if w.best_other else math.nan
                for w in ws
            ]
        )
        lines.append(f"  {key}: {met}/{len(ws)}; {_r(ratio)}; {_r(stock)}; {_r(before)}")
    half = [w for w in report.workloads if w.half_of_stock is not None]
    lines.append(
        f"target 2 (≤ 0.5 × stock, multi-GPU-heavy mixes at ≥ 90 % load): "
        f"{sum(1 for w in half if w.half_of_stock)}/{len(half)} met; "
        f"mean after/stock there {_r(_mean([w.ratio_to_stock for w in half]))}"
    )
    lines.append(f"invalid sets from partition-aware policies: {report.invalid_by_valid_policies}")
    missed = report.failures()
    lines.append(f"targets missed: {len(missed)}")
    lines += [f"  {m}" for m in missed]
    for line in report.skipped:
        lines.append(f"skipped: {line}")
    return "\n".join(lines)


def _div(a: float, b: float) -> float:
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return a / b


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def _r(value: float) -> str:
    return "-" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.2f}")


def _wait(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds / 60:.0f}m"


if __name__ == "__main__":
    raise SystemExit(main())
