"""What a simulation run reports, as plain typed values (rendered by the CLI and the report)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class WaitStats:
    """Queue wait of the requests of one size that started."""

    gpus: int
    started: int
    p50_s: float
    p99_s: float
    unstarted: int
    """Still waiting when the simulation ended."""


@dataclass(frozen=True, slots=True)
class DynamicResult:
    """One policy's run in ``dynamic`` mode (arrivals and departures in trace time)."""

    policy: str
    capacity_gpus: int
    horizon_s: float
    """From the first arrival to the last event."""
    allocation_ratio: float
    """Time-weighted mean of allocated GPUs / capacity (0..1)."""
    utilisation: float
    """Time-weighted mean of GPUs *asked* by running requests / capacity (0..1)."""
    fragmentation_loss_gpu_hours: float
    """GPU-hours during which a queued request could not start although at least as many
    GPUs as it asked for were free (counted per request, at most the free GPUs)."""
    fragmentation_loss_pct: float
    """The same, as % of capacity-hours over the horizon."""
    queued_s: float
    """Time during which at least one request waited (the fleet was saturated for it)."""
    fragmentation_loss_pct_queued: float
    """Fragmentation loss as % of capacity-hours while requests waited: the figure that is
    not diluted by quiet stretches of a trace."""
    placed: int
    rejected: int
    invalid_placements: int
    """Placements whose GPU set is no partition (Fabric Manager would refuse them)."""
    reservations: int
    waits: tuple[WaitStats, ...]
    series_t: tuple[float, ...] = field(repr=False)
    series_allocated: tuple[int, ...] = field(repr=False)
    series_fragmentation: tuple[float, ...] = field(repr=False)
    """Cumulative fragmentation loss (GPU-hours) at each ``series_t``."""
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "mode": "dynamic",
            "capacity_gpus": self.capacity_gpus,
            "horizon_s": self.horizon_s,
            "allocation_ratio": round(self.allocation_ratio, 6),
            "utilisation": round(self.utilisation, 6),
            "fragmentation_loss_gpu_hours": round(self.fragmentation_loss_gpu_hours, 3),
            "fragmentation_loss_pct": round(self.fragmentation_loss_pct, 4),
            "queued_s": self.queued_s,
            "fragmentation_loss_pct_queued": round(self.fragmentation_loss_pct_queued, 4),
            "placed": self.placed,
            "rejected": self.rejected,
            "invalid_placements": self.invalid_placements,
            "reservations": self.reservations,
            "wait_by_size": {
                str(w.gpus): {
                    "started": w.started,
                    "unstarted": w.unstarted,
                    "p50_s": _finite(w.p50_s),
                    "p99_s": _finite(w.p99_s),
                }
                for w in self.waits
            },
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True, slots=True)
class InflationResult:
    """One policy's run in ``inflation`` mode (FGD/ATC'23: pods arrive, none leave)."""

    policy: str
    capacity_gpus: int
    target_pct: int
    arrived: int
    placed: int
    failed: int
    failed_with_room: int
    """Failed although the fleet had at least as many free GPUs as asked: fragmentation."""
    invalid_placements: int
    allocation_by_demand: tuple[float, ...]
    """Allocation ratio (%) when arrived GPU demand reached 0, 1, … ``target_pct`` % of
    capacity."""
    elapsed_s: float = 0.0

    def allocation_at(self, demand_pct: int) -> float:
        return self.allocation_by_demand[min(demand_pct, len(self.allocation_by_demand) - 1)]

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "mode": "inflation",
            "capacity_gpus": self.capacity_gpus,
            "target_pct": self.target_pct,
            "arrived": self.arrived,
            "placed": self.placed,
            "failed": self.failed,
            "failed_with_room": self.failed_with_room,
            "invalid_placements": self.invalid_placements,
            "allocation_ratio": round(self.allocation_at(self.target_pct) / 100, 6),
            "allocation_at_100_pct_demand": round(self.allocation_at(100), 4),
            "allocation_by_demand_pct": [round(v, 4) for v in self.allocation_by_demand],
            "elapsed_s": round(self.elapsed_s, 3),
        }


Result = DynamicResult | InflationResult


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)
