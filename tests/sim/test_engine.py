"""The simulator on traces small enough to work out by hand, and on the shared trace."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gpucaas.errors import InvalidRequest
from gpucaas.placement import POLICY_NAMES, UnknownPolicy
from gpucaas.sim import (
    DynamicResult,
    InflationResult,
    SimConfig,
    SyntheticSpec,
    Trace,
    TracePod,
    generate,
    load_trace,
    parse_policies,
    percentile,
    simulate,
)
from gpucaas.topology import get_model

H100 = get_model("hgx-h100-8")


def timed(*pods: tuple[int, float, float]) -> Trace:
    """A trace from (gpus, arrival, duration) triples."""
    return Trace(
        source="hand-made",
        pods=tuple(TracePod(f"p{i}", g, a, d) for i, (g, a, d) in enumerate(pods)),
        has_times=True,
        end_s=max((a + d for _, a, d in pods), default=0.0),
        dropped_cpu_only=0,
        skipped_bad=0,
        fractional=0,
    )


def dynamic(trace: Trace, nodes: int, *policies: str, **kw: int) -> list[DynamicResult]:
    results = simulate(SimConfig(H100, nodes, policies, "dynamic", **kw), trace)
    assert all(isinstance(r, DynamicResult) for r in results)
    return results  # type: ignore[return-value]


def test_a_request_waits_for_a_full_board_without_fragmentation_loss() -> None:
    trace = timed((8, 0, 100), (1, 10, 10))
    (r,) = dynamic(trace, 1, "best-fit")
    assert r.placed == 2
    one = next(w for w in r.waits if w.gpus == 1)
    assert (one.started, one.p50_s, one.p99_s) == (1, 90.0, 90.0)
    # No GPU was free while it waited: nothing lost to fragmentation.
    assert r.fragmentation_loss_gpu_hours == 0
    # 8 GPUs for 100 s, then 1 GPU for 10 s, over a 110 s horizon on 8 GPUs.
    assert r.allocation_ratio == pytest.approx((8 * 100 + 1 * 10) / (8 * 110))
    assert r.queued_s == 90


def test_spread_strands_an_eight_gpu_request_that_best_fit_starts_at_once() -> None:
    # Four one-GPU pods first: best-fit packs them on one board, spread splits them 2 + 2,
    # so the 8-GPU pod must wait until they end although 12 GPUs are free.
    trace = timed((1, 0, 1000), (1, 0, 1000), (1, 0, 1000), (1, 0, 1000), (8, 1, 10))
    best, spread, fluid = dynamic(trace, 2, "best-fit", "spread", "fluid")
    assert best.fragmentation_loss_gpu_hours == 0
    eight = next(w for w in best.waits if w.gpus == 8)
    assert eight.p50_s == 0
    assert spread.fragmentation_loss_gpu_hours == pytest.approx(8 * 999 / 3600)
    assert next(w for w in spread.waits if w.gpus == 8).p50_s == 999
    assert fluid.fragmentation_loss_gpu_hours == 0


def test_count_only_hands_out_gpu_sets_that_are_no_partition_and_says_so() -> None:
    trace = timed((1, 0, 50), (2, 1, 50), (3, 2, 50))
    count_only, best = dynamic(trace, 1, "count-only", "best-fit")
    # GPU 1, then GPUs 2+3 (not a partition), then 4+5+6 (3 GPUs: never a partition).
    assert count_only.invalid_placements == 2
    assert best.invalid_placements == 0


def test_same_seed_same_results_for_every_policy() -> None:
    trace = generate(SyntheticSpec(pods=400, rate_per_hour=60, seed=5))
    first = dynamic(trace, 4, *POLICY_NAMES, seed=3)
    second = dynamic(trace, 4, *POLICY_NAMES, seed=3)
    strip = [(r.policy, r.to_json() | {"elapsed_s": 0}) for r in first]
    assert strip == [(r.policy, r.to_json() | {"elapsed_s": 0}) for r in second]


def test_fluid_never_loses_gpus_to_fragmentation() -> None:
    trace = generate(SyntheticSpec(pods=500, rate_per_hour=90, seed=1))
    (fluid,) = dynamic(trace, 3, "fluid")
    assert fluid.fragmentation_loss_gpu_hours == 0
    assert fluid.placed == 500


def test_inflation_curve_covers_every_demand_percent_and_only_grows() -> None:
    trace = generate(SyntheticSpec(pods=300, seed=2))
    results = simulate(SimConfig(H100, 10, ("best-fit", "spread"), "inflation", seed=4), trace)
    for r in results:
        assert isinstance(r, InflationResult)
        assert len(r.allocation_by_demand) == 131
        assert r.allocation_by_demand[0] == 0
        curve = r.allocation_by_demand
        assert all(curve[k + 1] >= curve[k] for k in range(len(curve) - 1))
        assert r.allocation_at(130) <= 100
        assert r.placed + r.failed == r.arrived
        assert r.failed_with_room <= r.failed
    best, spread = results
    assert isinstance(best, InflationResult) and isinstance(spread, InflationResult)
    assert best.arrived == spread.arrived  # the same sampled pods


def test_inflation_accepts_a_trace_without_times(tmp_path: Path) -> None:
    path = tmp_path / "static.csv"
    path.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,8,1000\nb,1,1,1,500\n")
    trace = load_trace(path)
    (r,) = simulate(SimConfig(H100, 2, ("first-fit",), "inflation"), trace)
    assert isinstance(r, InflationResult) and r.placed >= 1
    with pytest.raises(InvalidRequest, match="--mode inflation"):
        simulate(SimConfig(H100, 2, ("first-fit",), "dynamic"), trace)


def test_a_pod_larger_than_the_board_is_refused_with_its_name() -> None:
    with pytest.raises(InvalidRequest, match="pod p0 asks for 16 GPUs"):
        simulate(SimConfig(H100, 2, ("best-fit",)), timed((16, 0, 1)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 0}, "at least 1 node"),
        ({"mode": "static"}, "choose one of dynamic, inflation"),
        ({"policies": ()}, "no policy given"),
        ({"target_pct": 0}, "between 1 and 1000"),
    ],
    ids=["no nodes", "unknown mode", "no policy", "zero target"],
)
def test_bad_configurations_say_what_to_fix(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"board": H100, "nodes": 2, "policies": ("best-fit",)}
    with pytest.raises(InvalidRequest, match=message):
        SimConfig(**(base | kwargs))  # type: ignore[arg-type]


def test_policy_lists_parse_all_and_reject_unknown_names() -> None:
    assert parse_policies("all") == POLICY_NAMES
    assert parse_policies("spread, best-fit,spread") == ("spread", "best-fit")
    with pytest.raises(UnknownPolicy, match="choose one of: best-fit"):
        parse_policies("best-fit,tetris")


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99
    assert math.isnan(percentile([], 50))


@pytest.mark.slow
def test_shared_trace_best_fit_beats_first_fit_and_spread(default_trace: Path) -> None:
    """The quality claim of the README, on the shared Alibaba trace and a saturated fleet."""
    trace = load_trace(default_trace)
    results = {r.policy: r for r in dynamic(trace, 6, *parse_policies("all"))}
    assert all(r.placed == 7064 for r in results.values())
    best = results["best-fit"]
    assert best.fragmentation_loss_pct < results["first-fit"].fragmentation_loss_pct
    assert best.fragmentation_loss_pct < results["spread"].fragmentation_loss_pct
    assert best.fragmentation_loss_pct - results["fluid"].fragmentation_loss_pct < 1.0
    assert results["count-only"].invalid_placements > 0
    assert results["fluid"].fragmentation_loss_gpu_hours == 0
