"""The report directory: JSON that matches the run, and real PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpucaas.errors import InvalidRequest
from gpucaas.sim import SimConfig, SyntheticSpec, generate, report_json, simulate, write_report
from gpucaas.topology import get_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("mode", "plots"),
    [("dynamic", {"allocation.png", "fragmentation.png"}), ("inflation", {"allocation.png"})],
    ids=["dynamic writes allocation and fragmentation", "inflation writes allocation"],
)
def test_report_writes_json_and_plots(tmp_path: Path, mode: str, plots: set[str]) -> None:
    trace = generate(SyntheticSpec(pods=200, rate_per_hour=50, seed=1))
    config = SimConfig(get_model("hgx-h100-8"), 3, ("best-fit", "fluid"), mode)
    results = simulate(config, trace)
    written = write_report(tmp_path / "out", config, trace, results)
    assert {p.name for p in written} == {"report.json"} | plots
    for name in plots:
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG_MAGIC
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data == json.loads(json.dumps(report_json(config, trace, results)))
    assert set(data["policies"]) == {"best-fit", "fluid"}
    assert data["config"]["capacity_gpus"] == 24
    assert data["policies"]["best-fit"]["mode"] == mode


def test_report_into_a_file_path_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    trace = generate(SyntheticSpec(pods=10, seed=1))
    config = SimConfig(get_model("hgx-h100-8"), 1, ("best-fit",))
    with pytest.raises(InvalidRequest, match="cannot create report directory"):
        write_report(blocker / "sub", config, trace, simulate(config, trace))
