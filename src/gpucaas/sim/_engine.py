"""The event-driven fleet simulator: replay a trace through the real placement code.

Two modes:

- ``dynamic``: pods arrive at their trace time and leave after their run time; a pod that
  does not fit waits in the placement :class:`Queue` (FIFO, backfill, starvation guard).
  Reports allocation over time, queue waits by size and fragmentation loss.
- ``inflation``: the FGD/ATC'23 method. Pods are sampled from the trace with replacement
  (seeded) and placed one by one, none leave and none wait, until arrived GPU demand
  reaches ``target_pct`` % of capacity; reports the allocation ratio at each demand %.

Every policy sees the same pods in the same order (same seed), so runs compare like for
like. The simulator itself decides nothing: it calls ``placement`` exactly as the
scheduler loop will.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from gpucaas.errors import InvalidRequest
from gpucaas.placement import (
    DEFAULT_MAX_BYPASS,
    POLICY_NAMES,
    Allocator,
    Placement,
    Queue,
    Request,
    UnknownPolicy,
    make_allocator,
)
from gpucaas.topology import BoardModel

from ._results import DynamicResult, InflationResult, Result, WaitStats, percentile
from ._trace import Trace

MODES = ("dynamic", "inflation")

Progress = Callable[[int], None]
"""Called with the number of trace pods handled since the last call."""

_SERIES_POINTS = 2000


@dataclass(frozen=True, slots=True)
class SimConfig:
    """A simulation: the fleet, the policies to compare and the mode."""

    board: BoardModel
    nodes: int
    policies: tuple[str, ...]
    mode: str = "dynamic"
    seed: int = 0
    max_bypass: int = DEFAULT_MAX_BYPASS
    target_pct: int = 130
    """Inflation mode: stop when arrived demand reaches this % of capacity."""

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise InvalidRequest(f"--nodes {self.nodes}: a fleet needs at least 1 node")
        if self.mode not in MODES:
            raise InvalidRequest(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if not self.policies:
            raise InvalidRequest(
                "no policy given; pass --policy with one or more of "
                f"{', '.join(POLICY_NAMES)} (or 'all')"
            )
        for name in self.policies:
            if name not in POLICY_NAMES:
                raise UnknownPolicy(name, POLICY_NAMES)
        if not 1 <= self.target_pct <= 1000:
            raise InvalidRequest(f"target {self.target_pct} % must be between 1 and 1000")


def parse_policies(text: str) -> tuple[str, ...]:
    """``best-fit,spread`` or ``all`` → policy names, validated. Raises UnknownPolicy."""
    if text.strip() == "all":
        return POLICY_NAMES
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    for name in names:
        if name not in POLICY_NAMES:
            raise UnknownPolicy(name, POLICY_NAMES)
    return names


def simulate(config: SimConfig, trace: Trace, progress: Progress | None = None) -> list[Result]:
    """Run every policy of ``config`` on ``trace``; one result per policy, in order.

    Raises :class:`InvalidRequest` for a dynamic run on a trace without times, an inflation
    run on a trace without GPU pods, or a pod larger than the board.
    """
    _check(config, trace)
    results: list[Result] = []
    for policy in config.policies:
        allocator = make_allocator(policy, config.board, config.nodes, seed=config.seed)
        started = time.perf_counter()
        result: Result
        if config.mode == "dynamic":
            result = _dynamic(policy, allocator, trace, config, progress)
        else:
            result = _inflation(policy, allocator, trace, config, progress)
        results.append(_with_elapsed(result, time.perf_counter() - started))
    return results


def _check(config: SimConfig, trace: Trace) -> None:
    """Refuse what :func:`simulate` cannot replay (InvalidRequest), before any work."""
    if config.mode == "dynamic" and not trace.has_times:
        raise InvalidRequest(
            f"trace {trace.source} has no times (creation/deletion columns); "
            "replay it with --mode inflation"
        )
    if config.mode == "inflation" and not any(p.gpus > 0 for p in trace.pods):
        # Inflation samples pods until their GPUs reach the target: with none it never would.
        dropped = (
            f" ({trace.dropped_cpu_only} CPU-only pods dropped)" if trace.dropped_cpu_only else ""
        )
        raise InvalidRequest(
            f"trace {trace.source} has no pod that asks for GPUs{dropped}; inflation samples "
            "GPU pods until their demand reaches --target, so give a trace with at least one"
        )
    too_big = [p for p in trace.pods if p.gpus > config.board.gpu_count]
    if too_big:
        raise InvalidRequest(
            f"trace {trace.source}: pod {too_big[0].name} asks for {too_big[0].gpus} GPUs, "
            f"more than one {config.board.name} board holds ({config.board.gpu_count})"
        )


def _with_elapsed(result: Result, elapsed: float) -> Result:
    return dataclasses.replace(result, elapsed_s=elapsed)


def _dynamic(
    policy: str, allocator: Allocator, trace: Trace, config: SimConfig, progress: Progress | None
) -> DynamicResult:
    pods = trace.pods
    queue = Queue(max_bypass=config.max_bypass)
    capacity = allocator.capacity
    departures: list[tuple[float, int, Placement]] = []
    asked: dict[int, int] = {}
    arrival_at: dict[int, float] = {}
    waits: dict[int, list[float]] = {}
    t_prev = (pods[0].arrival_s or 0.0) if pods else 0.0
    start_t = t_prev
    alloc_area = 0.0
    asked_area = 0.0
    loss_area = 0.0
    queued_s = 0.0
    running_asked = 0
    placed = rejected = invalid = reservations = 0
    series_t: list[float] = []
    series_alloc: list[int] = []
    series_loss: list[float] = []
    i = 0
    n = len(pods)
    seq = 0
    reported = 0
    while i < n or departures:
        next_arrival = pods[i].arrival_s if i < n else None
        t = departures[0][0] if departures else float("inf")
        if next_arrival is not None and next_arrival <= t:
            t = next_arrival
        dt = t - t_prev
        if dt > 0:
            allocated = allocator.allocated_gpus
            alloc_area += allocated * dt
            asked_area += running_asked * dt
            smallest = queue.smallest()
            free = allocator.free_gpus
            if smallest is not None:
                queued_s += dt
            if smallest is not None and smallest <= free:
                blocked = sum(g * c for g, c in queue.waiting_sizes().items() if g <= free)
                loss_area += min(free, blocked) * dt
            series_t.append(t_prev)
            series_alloc.append(allocated)
            series_loss.append(loss_area / 3600)
            t_prev = t
        # Every event at time t: departures first (they free GPUs), then arrivals.
        while departures and departures[0][0] <= t:
            _, _, placement = heapq.heappop(departures)
            allocator.release(placement)
            running_asked -= asked.pop(int(placement.request_id))
        while i < n and pods[i].arrival_s == t:
            pod = pods[i]
            queue.push(Request(i, pod.gpus))
            arrival_at[i] = t
            i += 1
        if progress is not None and i - reported >= 256:
            progress(i - reported)
            reported = i
        scheduled = queue.schedule(allocator)
        if scheduled.reserved is not None:
            reservations += 1
        rejected += len(scheduled.rejected)
        for placement in scheduled.placed:
            rid = int(placement.request_id)
            pod = pods[rid]
            placed += 1
            if not placement.valid:
                invalid += 1
            asked[rid] = pod.gpus
            running_asked += pod.gpus
            waits.setdefault(pod.gpus, []).append(t - arrival_at.pop(rid))
            seq += 1
            heapq.heappush(departures, (t + (pod.duration_s or 0.0), seq, placement))
        if not departures and i >= n:
            break
    if progress is not None and n > reported:
        progress(n - reported)
    horizon = max(t_prev - start_t, 1e-9)
    unstarted: dict[int, int] = queue.waiting_sizes()
    sizes = sorted(set(waits) | set(unstarted))
    wait_stats = tuple(
        WaitStats(
            gpus=g,
            started=len(waits.get(g, [])),
            p50_s=percentile(waits.get(g, []), 50),
            p99_s=percentile(waits.get(g, []), 99),
            unstarted=unstarted.get(g, 0),
        )
        for g in sizes
    )
    step = max(1, len(series_t) // _SERIES_POINTS)
    return DynamicResult(
        policy=policy,
        capacity_gpus=capacity,
        horizon_s=horizon,
        allocation_ratio=alloc_area / (capacity * horizon),
        utilisation=asked_area / (capacity * horizon),
        fragmentation_loss_gpu_hours=loss_area / 3600,
        fragmentation_loss_pct=100 * loss_area / (capacity * horizon),
        queued_s=queued_s,
        fragmentation_loss_pct_queued=100 * loss_area / (capacity * queued_s) if queued_s else 0.0,
        placed=placed,
        rejected=rejected,
        invalid_placements=invalid,
        reservations=reservations,
        waits=wait_stats,
        series_t=tuple(series_t[::step]),
        series_allocated=tuple(series_alloc[::step]),
        series_fragmentation=tuple(series_loss[::step]),
    )


def _inflation(
    policy: str, allocator: Allocator, trace: Trace, config: SimConfig, progress: Progress | None
) -> InflationResult:
    pods = trace.pods
    capacity = allocator.capacity
    rng = random.Random(config.seed)
    curve: list[float] = []
    arrived_gpus = 0
    arrived = placed = failed = with_room = invalid = 0
    target = capacity * config.target_pct
    while pods and arrived_gpus * 100 < target:
        pod = pods[rng.randrange(len(pods))]
        free_before = allocator.free_gpus
        outcome = allocator.place(Request(arrived, pod.gpus))
        arrived += 1
        arrived_gpus += pod.gpus
        if isinstance(outcome, Placement):
            placed += 1
            if not outcome.valid:
                invalid += 1
        else:
            failed += 1
            if free_before >= pod.gpus:
                with_room += 1
        ratio = 100 * allocator.allocated_gpus / capacity
        while len(curve) * capacity <= arrived_gpus * 100 and len(curve) <= config.target_pct:
            curve.append(ratio)
        if progress is not None and arrived % 256 == 0:
            progress(256)
    while len(curve) <= config.target_pct:
        curve.append(100 * allocator.allocated_gpus / capacity)
    curve[0] = 0.0
    return InflationResult(
        policy=policy,
        capacity_gpus=capacity,
        target_pct=config.target_pct,
        arrived=arrived,
        placed=placed,
        failed=failed,
        failed_with_room=with_room,
        invalid_placements=invalid,
        allocation_by_demand=tuple(curve),
    )


def expected_work(config: SimConfig, trace: Trace) -> int:
    """Progress units :func:`simulate` will report in total (for a progress bar).

    Raises :class:`InvalidRequest` as :func:`simulate` would, for the same inputs.
    """
    _check(config, trace)
    if config.mode == "dynamic":
        return len(trace.pods) * len(config.policies)
    mean = sum(p.gpus for p in trace.pods) / max(1, len(trace.pods))
    per_policy = int(config.nodes * config.board.gpu_count * config.target_pct / 100 / mean)
    return (per_policy // 256 * 256) * len(config.policies)
