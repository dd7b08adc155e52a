"""The command line, in-process (typer's CliRunner), as the user types it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gpucaas.cli import app
from gpucaas.cli.fmctl import app as fmctl_app

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_topology_show_prints_the_h100_table_with_fmctl_columns() -> None:
    code, out, _ = run("topology", "show", "hgx-h100-8")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split("  ")[0] == "PARTITION ID"
    assert "GPU PHYSICAL IDs" in lines[1]
    rows = [line.split() for line in lines[2:]]
    assert rows[0] == ["0", "8", "144", "1,2,3,4,5,6,7,8"]
    assert rows[1] == ["1", "4", "72", "1,2,3,4"]
    assert rows[3] == ["3", "2", "36", "1,3"]
    assert rows[14] == ["14", "1", "0", "8"]
    assert len(rows) == 15


def test_topology_show_json_by_alias() -> None:
    code, out, _ = run("topology", "show", "hgx-h200-8", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["model"] == "hgx-h100-8"
    assert data["partitions"][6] == {"id": 6, "gpus": 2, "nvlinks": 36, "module_ids": [6, 8]}
    assert {d["device_id"] for d in data["gpu_devices"]} == {"0x2330", "0x2335"}
    assert data["nvswitch"]["device_id"] == "0x22a3"
    assert data["bars"] == {"bar0_mib": 16, "bar2_gib": 128, "bar4_mib": 32}


def test_unknown_model_is_one_line_on_stderr_with_the_known_names() -> None:
    code, out, err = run("topology", "show", "hgx-a100-8")
    assert code == 2
    assert out == ""
    assert err.strip() == (
        "error: unknown board model 'hgx-a100-8'; known models: hgx-b200-8, hgx-h100-8"
    )


def test_topology_list_names_both_models() -> None:
    code, out, _ = run("topology", "list", "--json")
    assert code == 0
    assert [m["model"] for m in json.loads(out)] == ["hgx-b200-8", "hgx-h100-8"]


def test_sim_synthetic_all_policies_json(tmp_path: Path) -> None:
    code, out, err = run(
        "sim",
        "--synthetic",
        "pods=300,rate=60,seed=2",
        "--nodes",
        "3",
        "--policy",
        "all",
        "--json",
        "--report",
        str(tmp_path / "r"),
    )
    assert code == 0, err
    data = json.loads(out)
    assert list(data["policies"]) == [
        "best-fit",
        "adaptive-fit",
        "first-fit",
        "spread",
        "random",
        "stock",
        "stock-spread",
        "count-only",
        "fluid",
    ]
    for entry in data["policies"].values():
        assert {
            "allocation_ratio",
            "fragmentation_loss_gpu_hours",
            "fragmentation_loss_pct",
            "wait_by_size",
            "invalid_placements",
        } <= set(entry)
    assert (tmp_path / "r" / "report.json").is_file()
    assert (tmp_path / "r" / "fragmentation.png").is_file()


def test_sim_table_on_a_trace_file_in_inflation_mode(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    code, _, err = run("trace", "generate", "pods=200,seed=4", "--out", str(trace))
    assert code == 0, err
    code, out, err = run(
        "sim",
        "--trace",
        str(trace),
        "--nodes",
        "5",
        "--policy",
        "best-fit,spread",
        "--mode",
        "inflation",
    )
    assert code == 0, err
    assert "ALLOC @100%" in out and "ALLOC @130%" in out
    assert [line.split()[0] for line in out.splitlines()[-2:]] == ["best-fit", "spread"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "2"], "give exactly one of --trace FILE, --synthetic SPEC or --suite"),
        (["--synthetic", "pods=0", "--nodes", "2"], "pods=0 must be at least 1"),
        (["--synthetic", "", "--policy", "tetris"], "unknown placement policy 'tetris'"),
        (["--synthetic", "", "--board", "dgx-1"], "unknown board model 'dgx-1'"),
        (["--synthetic", "", "--nodes", "0"], "at least 1 node"),
        (["--trace", "/nonexistent/trace.csv"], "not found"),
    ],
    ids=["no trace", "bad spec", "unknown policy", "unknown board", "no nodes", "missing file"],
)
def test_sim_refuses_bad_input_in_one_line(args: list[str], message: str) -> None:
    code, out, err = run("sim", *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_sim_malformed_trace_names_line_and_column_then_skip_bad_counts(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
        "deletion_time,scheduled_time\n"
        "a,1,1,1,1000,,LS,Running,0,10,0\n"
        "b,1,1,two,1000,,LS,Running,1,10,1\n"
    )
    code, _, err = run("sim", "--trace", str(trace), "--nodes", "1")
    assert code == 2
    assert "bad.csv line 3, column num_gpu" in err and "--skip-bad" in err
    code, out, err = run("sim", "--trace", str(trace), "--nodes", "1", "--skip-bad")
    assert code == 0, err
    assert "1 bad rows skipped" in out


def test_trace_inspect_summarises_the_shared_trace(default_trace: Path) -> None:
    code, out, _ = run("trace", "inspect", str(default_trace), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["pods"] == 7064
    assert data["pods_by_gpus"] == {"1": 6989, "2": 16, "4": 15, "8": 44}
    assert data["dropped_cpu_only"] == 1088


def _command_paths(group: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    children = getattr(group, "commands", None) or {}
    out = [] if children else [path]
    for name in sorted(children):
        out += _command_paths(children[name], (*path, name))
    return out


COMMANDS = [("gpucaas", app, p) for p in _command_paths(typer.main.get_command(app))] + [
    ("fmctl", fmctl_app, p) for p in _command_paths(typer.main.get_command(fmctl_app))
]


@pytest.mark.parametrize(
    ("name", "cli", "path"), COMMANDS, ids=[" ".join((n, *p)) for n, _, p in COMMANDS]
)
def test_every_command_has_help_with_an_example_and_is_documented(
    name: str, cli: typer.Typer, path: tuple[str, ...]
) -> None:
    result = runner.invoke(cli, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0
    title = " ".join((name, *path))
    assert "Example:" in result.stdout, f"{title} --help has no Example: line"
    assert f"## {title}\n" in DOCS.read_text(), (
        f"{title} is missing from docs/cli.md; run scripts/cli-docs"
    )


def test_up_defaults_to_the_placement_default_policy() -> None:
    """``gpucaas up`` spells the default policy out (its help must not import placement);
    it must be the one placement names."""
    import inspect

    from gpucaas.cli.up import up
    from gpucaas.placement import DEFAULT_POLICY

    assert inspect.signature(up).parameters["policy"].default == DEFAULT_POLICY
