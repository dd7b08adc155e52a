"""The placement quality suite, in its short form: invariants and the report, never timings
or which policy wins (that is the benchmark's job, on the full suite)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from gpucaas.placement import DEFAULT_POLICY, POLICY_NAMES
from gpucaas.sim import (
    FULL,
    MULTI_GPU_HEAVY,
    SHORT,
    SUITE_MIXES,
    SuiteReport,
    SuiteSettings,
    run_suite,
    suite_workloads,
)


def test_full_suite_has_every_workload_of_the_issue(shared_data: Path) -> None:
    workloads = suite_workloads(FULL, shared_data)
    names = [w.name for w in workloads]
    assert len(names) == len(set(names))
    alibaba = [w for w in workloads if w.group == "alibaba"]
    assert sorted({w.nodes for w in alibaba}) == [4, 5, 6, 8]
    assert all(w.mode == "dynamic" for w in alibaba)
    multi = [w for w in workloads if w.group == "alibaba-multigpu20"]
    assert multi and all(w.mode == "inflation" for w in multi)
    synthetic = [w for w in workloads if w.group == "synthetic"]
    assert {(w.mix, w.load, w.nodes) for w in synthetic if w.board == "hgx-h100-8"} == {
        (mix, load, nodes)
        for mix in SUITE_MIXES
        for load in (80, 90, 95, 100)
        for nodes in (12, 100, 1000)
    }
    assert {w.board for w in workloads} == {"hgx-h100-8", "hgx-b200-8"}
    assert all(len(w.seeds) >= 5 for w in synthetic)
    assert {w.mix for w in synthetic if w.half_stock_target} == MULTI_GPU_HEAVY
    assert all(w.load >= 90 for w in synthetic if w.half_stock_target)


def test_without_data_the_trace_workloads_are_skipped_and_said_so() -> None:
    assert all(w.group == "synthetic" for w in suite_workloads(FULL, None))
    report = run_suite(
        SuiteSettings(
            seeds=1,
            fleets=(2,),
            pods_per_board=(5,),
            loads=(90,),
            mixes=("1:60/2:15/4:15/8:10",),
            boards=("hgx-h100-8",),
            b200_fleets=(),
            alibaba_fleets=(4,),
            inflation_fleets=(4,),
            inflation_seeds=1,
        ),
        None,
        policies=("best-fit", "stock"),
    )
    assert len(report.workloads) == 1
    assert [s.policy for s in report.workloads[0].scores] == [
        DEFAULT_POLICY,
        "best-fit",
        "stock",
        "fluid",
    ]
    assert len(report.skipped) == 2 and all("not found" in s for s in report.skipped)


@pytest.fixture(scope="module")
def short_report() -> SuiteReport:
    """The short suite, with the shared traces when GPUCAAS_DATA (or ../shared/data) has
    them and without otherwise: the report is checked either way."""
    root = Path(
        os.environ.get("GPUCAAS_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
    )
    return run_suite(SHORT, root if root.is_dir() else None)


def test_short_suite_report_holds_the_invariants(short_report: SuiteReport) -> None:
    report = short_report
    assert report.default == DEFAULT_POLICY
    assert report.workloads
    assert report.invalid_by_valid_policies == 0
    for w in report.workloads:
        assert [s.policy for s in w.scores] == list(dict.fromkeys([DEFAULT_POLICY, *POLICY_NAMES]))
        fluid = w.score("fluid")
        if w.workload.mode == "dynamic":
            assert fluid.loss_pct == 0
        for s in w.scores:
            assert len(s.losses) in (1, len(w.workload.seeds))
            assert 0 <= s.allocated_pct <= 100
            assert s.loss_sd >= 0
            if s.policy != "count-only":
                assert s.invalid == 0, s.policy
        best = w.best_other
        assert best is not None and best.policy not in (DEFAULT_POLICY, "fluid", "count-only")
        assert w.beats_best_other is not None
        assert (w.half_of_stock is None) is (not w.workload.half_stock_target)
        ratio = w.ratio_to_stock
        assert math.isnan(ratio) or ratio >= 0


def test_short_suite_renders_a_table_and_json(short_report: SuiteReport) -> None:
    report = short_report
    lines = report.table().splitlines()
    assert lines[0].split()[:3] == ["WORKLOAD", DEFAULT_POLICY.upper(), "BEST-FIT"]
    assert len(lines) == 1 + len(report.workloads)
    doc = report.to_json()
    assert doc["default"] == DEFAULT_POLICY
    assert doc["invalid_by_valid_policies"] == 0
    entry = doc["workloads"][-1]
    assert {"ratio_to_best_other", "ratio_to_stock", "beats_best_other", "half_of_stock"} <= set(
        entry
    )
    assert set(entry["policies"]) == set(POLICY_NAMES)
    assert {"loss_pct", "loss_sd", "allocated_pct", "wait8_p50_s", "wait8_p99_s"} <= set(
        entry["policies"][DEFAULT_POLICY]
    )
    assert isinstance(report.failures(), list)
