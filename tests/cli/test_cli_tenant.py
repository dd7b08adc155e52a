"""The tenant and admin commands render the client's typed replies, and loading the CLI (for
``gpucaas --help``) does not load the client, httpx or pydantic."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gpucaas.cli.admin import board_line
from gpucaas.cli.tenant import exit_status, to_json
from gpucaas.client import BoardPartition, BoardView, Container, GpuView, PartitionView, State

STAMP = "2026-01-01T00:00:00.000Z"


def container(state: State, exit_code: int | None = None) -> Container:
    return Container(
        id="abc", tenant="acme", name=None, image="busybox", command=[], args=[], env={},
        gpus=3, gpus_granted=4, nfs=[], labels={}, max_runtime_s=None, state=state, reason="",
        message="", exit_code=exit_code, created_at=STAMP, updated_at=STAMP,
        partition=PartitionView(board="hgx-0", partition_id=1, module_ids=[1, 2, 3, 4]),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("state", "code", "status"),
    [
        (State.SUCCEEDED, None, 0),
        (State.FAILED, None, 1),
        (State.FAILED, 3, 3),
        (State.FAILED, -9, 137),
        (State.FAILED, 300, 1),
    ],
    ids=["succeeded", "failed without a code", "its code", "a signal", "out of range"],
)
def test_exit_status_of_a_container(state: State, code: int | None, status: int) -> None:
    assert exit_status(container(state, code)) == status


def test_json_output_is_the_apis_json() -> None:
    data = to_json(container(State.RUNNING))
    assert data["state"] == "running" and data["partition"]["module_ids"] == [1, 2, 3, 4]
    assert Container.model_validate(data) == container(State.RUNNING)


def test_a_board_line_shows_cells_and_holders() -> None:
    gpus = [GpuView(module_id=m, state="used", container="abcdef0123", tenant="vision")
            for m in (1, 2)] + [GpuView(module_id=3, state="unhealthy")] + [
            GpuView(module_id=m, state="free") for m in range(4, 9)]  # fmt: skip
    board = BoardView(
        name="hgx-0", model="hgx-h100-8", cordoned=True, gpus=gpus,
        partitions=[BoardPartition(partition_id=3, module_ids=[1, 2], container="abcdef0123",
                                   tenant="vision")],
    )  # fmt: skip
    assert board_line(board) == ("hgx-0", "yes", "VVxccccc", "abcdef01(vision):1,2")


def test_loading_the_cli_loads_no_client() -> None:
    code = (
        "import sys, gpucaas.cli\n"
        "print(' '.join(m for m in ('gpucaas.client', 'httpx', 'pydantic') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert not loaded, f"gpucaas --help would load {loaded}"
