"""``gpucaas node boot-budget`` in-process (typer's CliRunner), on a local app that mounts the
command as ``node.py`` will, and ``describe``'s boot view of a container."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from gpucaas.cli import node_boot
from gpucaas.cli.tenant import boot_view
from gpucaas.client import Container, State
from gpucaas.runtime import TARGET_SECONDS, boot_budget, vm_memory_for

runner = CliRunner()
app = typer.Typer()
app.command("boot-budget")(node_boot.boot_budget)


@app.callback()
def _node() -> None:
    """Stands in for ``gpucaas node``."""


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["boot-budget", *args], terminal_width=200)
    return result.exit_code, result.stdout, result.stderr


def test_8_gpus_prints_every_phase_the_total_and_recommendations() -> None:
    code, out, err = run("--gpus", "8", "--memory", "1280")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Kata GPU VM: 8 GPUs (128 GiB BAR1 each), 1280 GiB + 8 GiB base")
    assert lines[2].split() == ["PHASE", "SECONDS", "BASIS"]
    for phase in boot_budget(8, 1280).phases:
        assert any(line.startswith(phase.name) for line in lines), phase.name
    assert "total: 194 s, OVER the 120 s target" in out
    assert "recommendations:" in out and "runtimeRequestTimeout" in out
    assert "with all of these: 110 s, within the 120 s target" in out


def test_json_is_the_budget() -> None:
    code, out, err = run("--gpus", "4", "--memory", "640Gi", "--hugepages", "none", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data == boot_budget(4, 640, hugepages="none").to_dict()
    assert data["target_seconds"] == TARGET_SECONDS and data["within_target"] is False


def test_memory_quantities_the_default_and_gpu_models() -> None:
    _, as_number, _ = run("--gpus", "8", "--memory", "1280", "--json")
    _, as_quantity, _ = run("--gpus", "8", "--memory", "1.25Ti", "--json")
    _, as_default, _ = run("--gpus", "8", "--json")
    assert json.loads(as_number) == json.loads(as_quantity) == json.loads(as_default)
    assert json.loads(as_default)["memory_gib"] == vm_memory_for(8)
    _, h200, _ = run("--gpus", "8", "--bar", "h200", "--json")
    assert json.loads(h200)["bar_gib"] == 256


def test_mitigations_are_options() -> None:
    code, out, err = run("--gpus", "8", "--iommufd", "--pregenerated-cdi")
    assert code == 0, err
    assert "total: 110 s, within the 120 s target" in out
    assert "VFIO iommufd, guest CDI spec pre-generated" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "9"], "gpus=9 is out of range; pass a GPU count from 1 to 8"),
        (["--gpus", "0"], "gpus=0"),
        (["--gpus", "2", "--memory", "12Gx"], "memory='12Gx'"),
        (["--gpus", "2", "--memory", "0"], "memory=0.0"),
        (["--gpus", "2", "--hugepages", "2Mi"], "hugepages='2Mi'"),
        (["--gpus", "2", "--bar", "a100"], "a GPU model (h100, h200)"),
    ],
    ids=["9 gpus", "0 gpus", "bad quantity", "zero memory", "2Mi hugepages", "unknown gpu"],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_help_ends_with_the_example() -> None:
    result = runner.invoke(app, ["boot-budget", "--help"], terminal_width=100)
    assert result.exit_code == 0
    assert "Example: gpucaas node boot-budget --gpus 8 --memory 1280" in result.stdout


# --- describe's boot view -----------------------------------------------------------------


def container(**timestamps: str) -> Container:
    """A 3-GPU container granted a 4-GPU partition, as the typed client returns it."""
    created = "2026-01-02T03:04:05.000Z"
    return Container(
        id="c1",
        tenant="t",
        name=None,
        image="busybox",
        command=[],
        args=[],
        env={},
        gpus=3,
        gpus_granted=4,
        nfs=[],
        labels={},
        max_runtime_s=None,
        state=State.QUEUED,
        reason="",
        message="",
        exit_code=None,
        partition=None,
        created_at=created,
        updated_at=created,
        timestamps={"queued": created, **timestamps},
    )


def test_boot_view_measures_each_span_and_estimates_the_granted_partition() -> None:
    view = boot_view(
        container(
            placing="2026-01-02T03:04:05.250Z",
            starting="2026-01-02T03:04:05.500Z",
            running="2026-01-02T03:04:07.000Z",
        )
    )
    assert view["measured"] == {
        "queued_s": 0.25,
        "placing_s": 0.25,
        "starting_s": 1.5,
        "total_s": 2.0,
    }
    assert view["estimate"] == boot_budget(4).to_dict()  # the partition size, not the ask
    assert view["estimate"]["memory_gib"] == vm_memory_for(4)
    assert "not a VM" in view["note"]


def test_boot_view_of_a_queued_container_leaves_unreached_spans_empty() -> None:
    view = boot_view(container())
    assert view["measured"] == {
        "queued_s": None,
        "placing_s": None,
        "starting_s": None,
        "total_s": None,
    }
