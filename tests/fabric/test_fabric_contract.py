"""One contract, every backend this machine can run: the simulated Fabric Manager, libnvfm
(against the compiled C stand-in) and the fm-controller over gRPC. If they drift apart,
this fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpucaas.fabric import (
    FabricBadRequest,
    FabricController,
    FabricManager,
    NvfmLibrary,
    PartitionInUse,
    PartitionNotActive,
    RemoteFabric,
    SimulatedFabric,
    serve_controller,
)
from gpucaas.topology import get_model

H100 = get_model("hgx-h100-8")

TABLE = [
    (0, (1, 2, 3, 4, 5, 6, 7, 8), 144),
    (1, (1, 2, 3, 4), 72),
    (2, (5, 6, 7, 8), 72),
    (3, (1, 3), 36),
    (4, (2, 4), 36),
    (5, (5, 7), 36),
    (6, (6, 8), 36),
    *[(6 + m, (m,), 0) for m in range(1, 9)],
]


@pytest.fixture(params=["simulated", "libnvfm", "fm-controller"])
def fabric(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FabricManager]:
    if request.param == "simulated":
        yield SimulatedFabric(H100, state_file=tmp_path / "fm.json")
    elif request.param == "libnvfm":
        fake: Any = request.getfixturevalue("fakenvfm")
        with NvfmLibrary("127.0.0.1", library=fake.path) as nvfm:
            yield nvfm
    else:
        controller = FabricController(
            SimulatedFabric(H100), H100, state_dir=tmp_path, board="b0", backend="simulated"
        )
        daemon = serve_controller(controller, str(tmp_path / "fm.sock"), http_listen=None)
        try:
            with RemoteFabric(str(tmp_path / "fm.sock")) as remote:
                yield remote
        finally:
            daemon.stop()


def active(fabric: FabricManager) -> set[int]:
    return {int(p.id) for p in fabric.list_partitions() if p.active}


def test_lists_the_h100_table(fabric: FabricManager) -> None:
    parts = fabric.list_partitions()
    assert [(int(p.id), p.module_ids, p.nvlinks) for p in parts] == TABLE
    assert not any(p.active for p in parts)
    assert all(g.nvlinks_max == 18 for p in parts for g in p.gpus)


def test_overlap_rules(fabric: FabricManager) -> None:
    fabric.activate(3)
    fabric.activate(4)
    with pytest.raises(PartitionInUse):
        fabric.activate(1)
    with pytest.raises(PartitionInUse):
        fabric.activate(0)
    with pytest.raises(PartitionInUse):
        fabric.activate(3)
    assert active(fabric) == {3, 4}


def test_deactivate_rules(fabric: FabricManager) -> None:
    fabric.activate(5)
    fabric.deactivate(5)
    with pytest.raises(PartitionNotActive):
        fabric.deactivate(5)
    with pytest.raises(FabricBadRequest):
        fabric.activate(40)
    assert active(fabric) == set()


def test_set_activated_replaces_the_set(fabric: FabricManager) -> None:
    fabric.activate(1)
    fabric.set_activated([5, 6])
    assert active(fabric) == {5, 6}
    fabric.set_activated([])
    assert active(fabric) == set()


def test_no_failed_devices(fabric: FabricManager) -> None:
    failed = fabric.failed_devices()
    assert failed.gpus == () and failed.switches == ()
