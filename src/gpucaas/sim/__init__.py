"""The fleet simulator: replay cluster traces (or synthetic ones) through ``placement``.

Pure core plus I/O at the edges: trace files in, JSON and PNG reports out.
"""

from gpucaas.errors import own_errors

from ._engine import MODES, SimConfig, expected_work, parse_policies, simulate
from ._errors import SyntheticSpecError, TraceError
from ._report import report_json, write_report
from ._results import DynamicResult, InflationResult, Result, WaitStats, percentile
from ._suite import (
    FULL,
    MULTI_GPU_HEAVY,
    SHORT,
    SUITE_MIXES,
    PolicyScore,
    SuiteReport,
    SuiteSettings,
    SuiteWorkload,
    WorkloadReport,
    run_suite,
    suite_workloads,
)
from ._synthetic import SyntheticSpec, generate, write_trace_csv
from ._trace import Trace, TracePod, load_trace

__all__ = [
    "FULL",
    "MODES",
    "MULTI_GPU_HEAVY",
    "SHORT",
    "SUITE_MIXES",
    "DynamicResult",
    "InflationResult",
    "PolicyScore",
    "Result",
    "SimConfig",
    "SuiteReport",
    "SuiteSettings",
    "SuiteWorkload",
    "SyntheticSpec",
    "SyntheticSpecError",
    "Trace",
    "TraceError",
    "TracePod",
    "WaitStats",
    "WorkloadReport",
    "expected_work",
    "generate",
    "load_trace",
    "parse_policies",
    "percentile",
    "report_json",
    "run_suite",
    "simulate",
    "suite_workloads",
    "write_report",
    "write_trace_csv",
]

own_errors(globals())
