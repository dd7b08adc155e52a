"""SimulatedFabric keeps Fabric Manager's rules, its start-up gate, restart and replay."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from gpucaas.fabric import (
    FabricBadRequest,
    FabricManagerDown,
    FabricManagerNotReady,
    FabricStateError,
    PartitionInUse,
    PartitionNotActive,
    SimulatedFabric,
)
from gpucaas.topology import get_model

H100 = get_model("hgx-h100-8")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def active(fabric: SimulatedFabric) -> set[int]:
    return {int(p.id) for p in fabric.list_partitions() if p.active}


def test_list_matches_the_h100_table() -> None:
    parts = SimulatedFabric(H100).list_partitions()
    assert [(int(p.id), p.module_ids, p.nvlinks) for p in parts][:4] == [
        (0, (1, 2, 3, 4, 5, 6, 7, 8), 144),
        (1, (1, 2, 3, 4), 72),
        (2, (5, 6, 7, 8), 72),
        (3, (1, 3), 36),
    ]
    assert len(parts) == 15 and not any(p.active for p in parts)
    assert all(g.nvlinks_available == 0 for g in parts[14].gpus)


def test_overlap_rules_of_fabric_manager() -> None:
    fabric = SimulatedFabric(H100)
    fabric.activate(3)
    fabric.activate(4)  # {1,3} and {2,4} together are fine
    with pytest.raises(PartitionInUse, match="partition 1"):
        fabric.activate(1)  # {1-4} overlaps both
    with pytest.raises(PartitionInUse):
        fabric.activate(3)  # already active
    with pytest.raises(PartitionInUse):
        fabric.activate(0)  # all 8 while anything is active
    fabric.deactivate(3)
    with pytest.raises(PartitionNotActive):
        fabric.deactivate(3)
    with pytest.raises(FabricBadRequest, match="fmctl list"):
        fabric.activate(15)
    assert active(fabric) == {4}


def test_partition_calls_wait_for_initialisation() -> None:
    clock = Clock()
    fabric = SimulatedFabric(H100, init_s=5, clock=clock)
    with pytest.raises(FabricManagerNotReady):
        fabric.activate(3)
    clock.now += 5
    fabric.activate(3)


def test_restart_forgets_until_replayed_and_aborts_after_the_window() -> None:
    clock = Clock()
    fabric = SimulatedFabric(H100, clock=clock)
    fabric.activate(1)
    fabric.restart()
    assert fabric.awaiting_replay
    with pytest.raises(FabricManagerNotReady, match="within 60 s"):
        fabric.activate(2)
    fabric.set_activated([1])
    assert active(fabric) == {1}
    fabric.restart()
    clock.now += 61
    with pytest.raises(FabricManagerDown):
        fabric.list_partitions()
    assert fabric.aborted
    fabric.restart()
    fabric.set_activated([])  # an empty replay is a replay too
    assert active(fabric) == set()


def test_set_activated_refuses_overlaps_and_unknown_ids() -> None:
    fabric = SimulatedFabric(H100)
    with pytest.raises(PartitionInUse):
        fabric.set_activated([1, 3])
    with pytest.raises(FabricBadRequest):
        fabric.set_activated([99])
    fabric.set_activated([5, 6, 1])
    assert active(fabric) == {1, 5, 6}


def test_state_file_is_shared_between_instances(tmp_path: Path) -> None:
    path = tmp_path / "fabric.json"
    first = SimulatedFabric(H100, state_file=path)
    second = SimulatedFabric(H100, state_file=path)
    first.activate(3)
    with pytest.raises(PartitionInUse):
        second.activate(1)
    assert active(second) == {3}
    assert json.loads(path.read_text())["active"] == [3]
    assert not list(tmp_path.glob(".fabric.json.*"))  # no temp file left behind


def test_racing_threads_get_one_success_and_one_in_use(tmp_path: Path) -> None:
    fabric = SimulatedFabric(H100, state_file=tmp_path / "f.json")
    results: list[str] = []
    barrier = threading.Barrier(2)

    def go(pid: int) -> None:
        barrier.wait()
        try:
            fabric.activate(pid)
            results.append("ok")
        except PartitionInUse:
            results.append("in-use")

    threads = [threading.Thread(target=go, args=(p,)) for p in (1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["in-use", "ok"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not valid JSON"),
        ('{"version": 9}', "not a version-1 state document"),
        ('{"version": 1, "model": "hgx-b200-8", "active": []}', "board model 'hgx-b200-8'"),
        ('{"version": 1, "model": "hgx-h100-8", "active": [1, 3]}', "overlap"),
        ('{"version": 1, "model": "hgx-h100-8", "active": [77]}', "partition 77"),
        ('{"version": 1, "model": "hgx-h100-8", "active": "3"}', "list of partition ids"),
    ],
    ids=["garbage", "version", "other model", "overlap", "unknown id", "wrong type"],
)
def test_a_corrupt_state_file_is_refused_named_and_kept(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "fabric.json"
    path.write_text(content)
    with pytest.raises(FabricStateError, match=reason) as caught:
        SimulatedFabric(H100, state_file=path)
    assert str(path) in str(caught.value)
    assert path.read_text() == content
