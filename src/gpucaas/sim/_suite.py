"""The placement quality suite: every policy on one fixed set of workloads, one report.

One policy winning on one trace says little: best-fit is far ahead on the 1-GPU Alibaba
trace and behind first-fit on multi-GPU-heavy streams at high load. The suite is the set of
workloads a default policy must not lose on (issue 18):

* the shared Alibaba default trace at 4, 5, 6 and 8 boards (dynamic);
* the multi-GPU variant of that trace (``openb_pod_list_multigpu20.csv``: no times, so
  inflation mode: loss is what the fluid bound allocates at 100 % arrived demand that the
  policy does not);
* seeded synthetic streams (Poisson arrivals, exponential run times of one hour) for three
  size mixes at 80, 90, 95 and 100 % offered load on 12, 100 and 1,000 boards, each over
  several seeds (mean and spread are reported);
* ``hgx-b200-8`` as well as ``hgx-h100-8`` (their 2-GPU partitions differ, which matters
  to policies that take the lowest partition id, as ``stock`` does).

For every workload and policy the report gives the fragmentation loss (% of capacity),
the allocated share, the 8-GPU wait p50/p99, and for the default policy its ratio to the
best other valid policy and to ``stock``, with the two targets of the issue checked.

The synthetic runs are shorter per board on larger fleets (:class:`SuiteSettings`), which
keeps the full suite to minutes; the short form (``SHORT``) runs in seconds for the tests.
Reading the traces is the only I/O; ``data`` may be None, and their workloads are skipped.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpucaas.placement import DEFAULT_POLICY, FLUID, POLICIES, POLICY_NAMES
from gpucaas.topology import get_model

from ._engine import SimConfig, simulate
from ._results import DynamicResult, InflationResult, Result
from ._synthetic import SyntheticSpec, generate
from ._trace import Trace, load_trace

__all__ = [
    "FULL",
    "MULTI_GPU_HEAVY",
    "SHORT",
    "SUITE_MIXES",
    "PolicyScore",
    "SuiteReport",
    "SuiteSettings",
    "SuiteWorkload",
    "WorkloadReport",
    "run_suite",
    "suite_workloads",
]

SUITE_MIXES: dict[str, tuple[tuple[int, float], ...]] = {
    "1:40/2:20/4:20/8:20": ((1, 40.0), (2, 20.0), (4, 20.0), (8, 20.0)),
    "1:60/2:15/4:15/8:10": ((1, 60.0), (2, 15.0), (4, 15.0), (8, 10.0)),
    "1:10/2:10/4:30/8:50": ((1, 10.0), (2, 10.0), (4, 30.0), (8, 50.0)),
}
"""Synthetic size mixes, by share of containers."""

MULTI_GPU_HEAVY = frozenset({"1:40/2:20/4:20/8:20", "1:10/2:10/4:30/8:50"})
"""Mixes where the default must lose at most half of what ``stock`` loses (load ≥ 90 %)."""

HALF_STOCK_MIN_LOAD = 90
"""Offered load (%) from which the half-of-stock target applies."""

MEAN_RUN_S = 3600.0
"""Mean run time of a synthetic container (exponential)."""

ALIBABA_DEFAULT = Path("alibaba-gpu-v2023") / "openb_pod_list_default.csv"
ALIBABA_MULTI_GPU = Path("alibaba-gpu-v2023") / "openb_pod_list_multigpu20.csv"

_SAME = 1e-6
"""Losses closer than this (% of capacity) are equal: the same decisions can sum their
GPU-hours in another order."""

NOT_COMPARED = frozenset({FLUID, "count-only"})
"""Policies that are no competitor: ``fluid`` is a bound, ``count-only`` hands out GPU sets
Fabric Manager refuses."""


@dataclass(frozen=True, slots=True)
class SuiteSettings:
    """How big the suite is."""

    seeds: int
    fleets: tuple[int, ...]
    """Synthetic fleet sizes (boards)."""
    pods_per_board: tuple[int, ...]
    """Containers per board in a synthetic stream, one per fleet size: larger fleets get
    fewer per board (shorter streams) to keep the suite to minutes."""
    loads: tuple[int, ...]
    mixes: tuple[str, ...]
    boards: tuple[str, ...]
    b200_fleets: tuple[int, ...]
    """Synthetic fleet sizes also run on ``hgx-b200-8`` (partition-id-blind policies decide
    the same on both boards, so the larger fleets would repeat the H100 numbers)."""
    alibaba_fleets: tuple[int, ...]
    inflation_fleets: tuple[int, ...]
    inflation_seeds: int

    def __post_init__(self) -> None:
        if len(self.fleets) != len(self.pods_per_board):
            raise ValueError("pods_per_board needs one entry per fleet size")


FULL = SuiteSettings(
    seeds=5,
    fleets=(12, 100, 1000),
    pods_per_board=(100, 25, 8),
    loads=(80, 90, 95, 100),
    mixes=tuple(SUITE_MIXES),
    boards=("hgx-h100-8", "hgx-b200-8"),
    b200_fleets=(12,),
    alibaba_fleets=(4, 5, 6, 8),
    inflation_fleets=(12, 100),
    inflation_seeds=5,
)
"""The suite of issue 18 (``benchmarks/bench_quality.py``, ``gpucaas sim --suite``)."""

SHORT = SuiteSettings(
    seeds=2,
    fleets=(12,),
    pods_per_board=(8,),
    loads=(95,),
    mixes=("1:40/2:20/4:20/8:20",),
    boards=("hgx-h100-8", "hgx-b200-8"),
    b200_fleets=(12,),
    alibaba_fleets=(),
    inflation_fleets=(12,),
    inflation_seeds=1,
)
"""Seconds, for the tests: one mix, one load, both boards, the inflation variant."""


@dataclass(frozen=True, slots=True)
class SuiteWorkload:
    """One workload of the suite: a trace (or a stream per seed) on one fleet."""

    name: str
    group: str
    """``alibaba``, ``alibaba-multigpu20`` or ``synthetic``."""
    board: str
    nodes: int
    mode: str
    seeds: tuple[int, ...]
    mix: str = ""
    load: int = 0
    pods: int = 0
    trace_path: Path | None = None

    @property
    def half_stock_target(self) -> bool:
        """Whether the default must lose at most half of what ``stock`` loses here."""
        return self.mix in MULTI_GPU_HEAVY and self.load >= HALF_STOCK_MIN_LOAD

    def traces(self) -> list[tuple[int, Trace]]:
        """The trace of each seed (one shared trace for a trace file). Raises TraceError."""
        if self.trace_path is not None:
            trace = load_trace(self.trace_path)
            return [(seed, trace) for seed in self.seeds]
        mix = SUITE_MIXES[self.mix]
        mean_gpus = sum(g * w for g, w in mix) / sum(w for _, w in mix)
        capacity = self.nodes * get_model(self.board).gpu_count
        rate = self.load / 100 * capacity / mean_gpus * 3600 / MEAN_RUN_S
        return [
            (
                seed,
                generate(
                    SyntheticSpec(
                        pods=self.pods,
                        rate_per_hour=rate,
                        mix=mix,
                        mean_duration_s=MEAN_RUN_S,
                        seed=seed,
                    )
                ),
            )
            for seed in self.seeds
        ]


def suite_workloads(settings: SuiteSettings, data: Path | None) -> list[SuiteWorkload]:
    """The workloads of ``settings``; trace workloads only where ``data`` has the file."""
    out: list[SuiteWorkload] = []
    default = data / ALIBABA_DEFAULT if data is not None else None
    if default is not None and default.is_file():
        for board in settings.boards:
            for nodes in settings.alibaba_fleets:
                out.append(
                    SuiteWorkload(
                        f"alibaba default × {nodes} {board}",
                        "alibaba",
                        board,
                        nodes,
                        "dynamic",
                        tuple(range(settings.seeds)),
                        trace_path=default,
                    )
                )
    multi = data / ALIBABA_MULTI_GPU if data is not None else None
    if multi is not None and multi.is_file():
        for board in settings.boards:
            for nodes in settings.inflation_fleets:
                out.append(
                    SuiteWorkload(
                        f"alibaba multigpu20 (inflation) × {nodes} {board}",
                        "alibaba-multigpu20",
                        board,
                        nodes,
                        "inflation",
                        tuple(range(settings.inflation_seeds)),
                        trace_path=multi,
                    )
                )
    for board in settings.boards:
        for nodes, per_board in zip(settings.fleets, settings.pods_per_board, strict=True):
            if board != settings.boards[0] and nodes not in settings.b200_fleets:
                continue
            for mix in settings.mixes:
                for load in settings.loads:
                    out.append(
                        SuiteWorkload(
                            f"{mix} @{load}% × {nodes} {board}",
                            "synthetic",
                            board,
                            nodes,
                            "dynamic",
                            tuple(range(settings.seeds)),
                            mix=mix,
                            load=load,
                            pods=per_board * nodes,
                        )
                    )
    return out


@dataclass(frozen=True, slots=True)
class PolicyScore:
    """One policy on one workload, over its seeds."""

    policy: str
    loss_pct: float
    """Mean fragmentation loss, % of capacity (inflation: fluid's allocation at 100 %
    arrived demand minus the policy's)."""
    loss_sd: float
    """Population standard deviation of the loss over the seeds (0 with one seed)."""
    losses: tuple[float, ...]
    allocated_pct: float
    wait8_p50_s: float
    """Mean over seeds of the 8-GPU queue wait p50 (NaN: none started, or inflation)."""
    wait8_p99_s: float
    invalid: int
    """Placements whose GPU set is no partition, over all seeds."""

    @property
    def compared(self) -> bool:
        return self.policy not in NOT_COMPARED

    def to_json(self) -> dict[str, Any]:
        return {
            "loss_pct": round(self.loss_pct, 4),
            "loss_sd": round(self.loss_sd, 4),
            "losses": [round(v, 4) for v in self.losses],
            "allocated_pct": round(self.allocated_pct, 3),
            "wait8_p50_s": _finite(self.wait8_p50_s),
            "wait8_p99_s": _finite(self.wait8_p99_s),
            "invalid": self.invalid,
        }


@dataclass(frozen=True, slots=True)
class WorkloadReport:
    workload: SuiteWorkload
    scores: tuple[PolicyScore, ...]
    default: str
    elapsed_s: float = 0.0

    def score(self, policy: str) -> PolicyScore:
        return next(s for s in self.scores if s.policy == policy)

    @property
    def best_other(self) -> PolicyScore | None:
        """The valid policy other than the default with the lowest mean loss."""
        others = [s for s in self.scores if s.compared and s.policy != self.default]
        return min(others, key=lambda s: s.loss_pct) if others else None

    @property
    def spread(self) -> float:
        """The seed spread the first target allows: the larger of the default's and the best
        other policy's standard deviation over seeds."""
        best = self.best_other
        return max(self.score(self.default).loss_sd, best.loss_sd if best else 0.0)

    @property
    def ratio_to_best_other(self) -> float:
        best = self.best_other
        return _ratio(self.score(self.default).loss_pct, best.loss_pct if best else math.nan)

    @property
    def ratio_to_stock(self) -> float:
        stock = next((s for s in self.scores if s.policy == "stock"), None)
        return _ratio(self.score(self.default).loss_pct, stock.loss_pct if stock else math.nan)

    @property
    def beats_best_other(self) -> bool | None:
        """Target 1: default loss ≤ best other valid policy + seed spread (None: no other)."""
        best = self.best_other
        if best is None:
            return None
        return self.score(self.default).loss_pct <= best.loss_pct + self.spread + _SAME

    @property
    def half_of_stock(self) -> bool | None:
        """Target 2 where it applies: default loss ≤ 0.5 × stock's (None elsewhere)."""
        stock = next((s for s in self.scores if s.policy == "stock"), None)
        if not self.workload.half_stock_target or stock is None:
            return None
        return self.score(self.default).loss_pct <= 0.5 * stock.loss_pct + _SAME

    @property
    def invalid_by_valid_policies(self) -> int:
        """Invalid sets handed out by partition-aware policies: must be 0."""
        return sum(s.invalid for s in self.scores if s.compared)

    def to_json(self) -> dict[str, Any]:
        w = self.workload
        best = self.best_other
        return {
            "name": w.name,
            "group": w.group,
            "board": w.board,
            "nodes": w.nodes,
            "mode": w.mode,
            "seeds": list(w.seeds),
            **({"mix": w.mix, "load_pct": w.load, "pods": w.pods} if w.mix else {}),
            "default": self.default,
            "best_other": best.policy if best else None,
            "ratio_to_best_other": _finite(self.ratio_to_best_other),
            "ratio_to_stock": _finite(self.ratio_to_stock),
            "spread": round(self.spread, 4),
            "beats_best_other": self.beats_best_other,
            "half_of_stock": self.half_of_stock,
            "policies": {s.policy: s.to_json() for s in self.scores},
            "elapsed_s": round(self.elapsed_s, 2),
        }


@dataclass(frozen=True, slots=True)
class SuiteReport:
    workloads: tuple[WorkloadReport, ...]
    default: str
    skipped: tuple[str, ...] = field(default=())
    """Why trace workloads were left out (no data folder, missing file)."""

    @property
    def invalid_by_valid_policies(self) -> int:
        return sum(w.invalid_by_valid_policies for w in self.workloads)

    def failures(self) -> list[str]:
        """Each target missed, with the figures."""
        out = []
        for w in self.workloads:
            d = w.score(w.default)
            best = w.best_other
            if w.beats_best_other is False and best is not None:
                out.append(
                    f"{w.workload.name}: {w.default} {d.loss_pct:.3f} % > {best.policy} "
                    f"{best.loss_pct:.3f} % + spread {w.spread:.3f}"
                )
            if w.half_of_stock is False:
                out.append(
                    f"{w.workload.name}: {w.default} {d.loss_pct:.3f} % > 0.5 × stock "
                    f"{w.score('stock').loss_pct:.3f} % (ratio {w.ratio_to_stock:.2f})"
                )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "default": self.default,
            "workloads": [w.to_json() for w in self.workloads],
            "skipped": list(self.skipped),
            "invalid_by_valid_policies": self.invalid_by_valid_policies,
            "targets_missed": self.failures(),
        }

    def table(self, policies: Sequence[str] | None = None) -> str:
        """One line per workload: each policy's mean loss ± spread, then the ratios."""
        if policies is not None:
            names = list(policies)
        elif self.workloads:
            names = [s.policy for s in self.workloads[0].scores]
        else:
            names = []
        header = [
            "WORKLOAD",
            *[n.upper() for n in names],
            "DEF/BEST",
            "BEST OTHER",
            "DEF/STOCK",
            "T1",
            "T2",
        ]
        rows = []
        for w in self.workloads:
            cells = [w.workload.name]
            for name in names:
                s = w.score(name)
                one = len(s.losses) == 1
                cells.append(f"{s.loss_pct:.3f}" if one else f"{s.loss_pct:.2f}±{s.loss_sd:.2f}")
            best = w.best_other
            cells += [
                _fmt_ratio(w.ratio_to_best_other),
                best.policy if best else "-",
                _fmt_ratio(w.ratio_to_stock),
                _mark(w.beats_best_other),
                _mark(w.half_of_stock),
            ]
            rows.append(cells)
        return _table(header, rows)


def run_suite(
    settings: SuiteSettings,
    data: Path | None,
    *,
    policies: Sequence[str] = POLICY_NAMES,
    default: str = DEFAULT_POLICY,
    progress: Callable[[str], None] | None = None,
) -> SuiteReport:
    """Run every policy on every workload of ``settings``.

    Raises :class:`TraceError` when a trace file exists but cannot be read.
    """
    # fluid is the bound the inflation workloads measure loss against.
    names = tuple(dict.fromkeys([default, *policies, FLUID]))
    workloads = suite_workloads(settings, data)
    skipped = []
    if data is None or not (data / ALIBABA_DEFAULT).is_file():
        skipped.append(f"alibaba default trace not found under {data}")
    if data is None or not (data / ALIBABA_MULTI_GPU).is_file():
        skipped.append(f"alibaba multigpu20 trace not found under {data}")
    reports = []
    cache: dict[Path, Trace] = {}
    for workload in workloads:
        if progress is not None:
            progress(workload.name)
        started = time.perf_counter()
        board = get_model(workload.board)
        per_policy: dict[str, list[Result]] = {n: [] for n in names}
        if workload.trace_path is not None:
            trace = cache.get(workload.trace_path)
            if trace is None:
                trace = cache[workload.trace_path] = load_trace(workload.trace_path)
            runs = [(seed, trace) for seed in workload.seeds]
        else:
            runs = workload.traces()
        for n, (seed, trace) in enumerate(runs):
            # A trace replayed in dynamic mode is the same for every seed: only the
            # randomized policies need more than one run.
            run = (
                names
                if n == 0 or workload.trace_path is None or workload.mode != "dynamic"
                else tuple(p for p in names if p in POLICIES and POLICIES[p].randomized)
            )
            if not run:
                continue
            config = SimConfig(board, workload.nodes, run, mode=workload.mode, seed=seed)
            for result in simulate(config, trace):
                per_policy[result.policy].append(result)
        reports.append(
            WorkloadReport(
                workload,
                tuple(_score(n, per_policy[n], per_policy) for n in names),
                default,
                time.perf_counter() - started,
            )
        )
    return SuiteReport(tuple(reports), default, tuple(skipped))


def _score(name: str, results: list[Result], everyone: dict[str, list[Result]]) -> PolicyScore:
    losses: list[float] = []
    allocated: list[float] = []
    p50: list[float] = []
    p99: list[float] = []
    invalid = 0
    for i, r in enumerate(results):
        invalid += r.invalid_placements
        if isinstance(r, DynamicResult):
            losses.append(r.fragmentation_loss_pct)
            allocated.append(100 * r.allocation_ratio)
            wait = next((w for w in r.waits if w.gpus == 8 and w.started), None)
            if wait is not None:
                p50.append(wait.p50_s)
                p99.append(wait.p99_s)
        else:
            fluid = everyone.get(FLUID, [])
            bound = fluid[i] if i < len(fluid) else r
            assert isinstance(bound, InflationResult)
            losses.append(bound.allocation_at(100) - r.allocation_at(100))
            allocated.append(r.allocation_at(100))
    return PolicyScore(
        policy=name,
        loss_pct=statistics.fmean(losses),
        loss_sd=statistics.pstdev(losses) if len(losses) > 1 else 0.0,
        losses=tuple(losses),
        allocated_pct=statistics.fmean(allocated),
        wait8_p50_s=statistics.fmean(p50) if p50 else math.nan,
        wait8_p99_s=statistics.fmean(p99) if p99 else math.nan,
        invalid=invalid,
    )


def _ratio(a: float, b: float) -> float:
    if math.isnan(b):
        return math.nan
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return a / b


def _fmt_ratio(value: float) -> str:
    return "-" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.2f}")


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("ok" if value else "MISS")


def _finite(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else round(value, 4)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
