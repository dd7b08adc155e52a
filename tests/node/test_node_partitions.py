"""The partition keeper on its own: activations, adoption and release against the simulated
fabric, with the live pods' partitions answered by a function (no kubelet, no gRPC).

H100 board: partition 1 is modules 1-4, 3 is {1,3}, 5 is {5,7}.
"""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpucaas.errors import Unavailable
from gpucaas.fabric import SimulatedFabric
from gpucaas.node.deviceplugin import PartitionHeld, PartitionKeeper, PluginMetrics
from gpucaas.topology import get_model
from tests.node.node_fakes import FunctionPods

MODEL = get_model("hgx-h100-8")


class Pods(FunctionPods):
    """Live pods hold ``holding``; with ``down`` set, PodResources does not answer."""

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.holding: set[int] = set()
        self.down = False

    def _answer(self) -> frozenset[int]:
        if self.down:
            raise Unavailable("kubelet PodResources did not answer")
        return frozenset(self.holding)


@pytest.fixture
def fabric() -> SimulatedFabric:
    return SimulatedFabric(MODEL)


@pytest.fixture
def pods() -> Pods:
    return Pods()


def _keeper(
    fabric: SimulatedFabric, pods: Pods, grace_s: float = 0.0, metrics: PluginMetrics | None = None
) -> PartitionKeeper:
    metrics = metrics if metrics is not None else PluginMetrics()
    return PartitionKeeper(MODEL, fabric, pods, grace_s=grace_s, metrics=metrics)


def _ops(metrics: PluginMetrics, op: str, result: str) -> float:
    text = metrics.text().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gpucaas_device_plugin_fabric_operations_total" and (
                sample.labels == {"op": op, "result": result}
            ):
                return float(sample.value)
    return 0.0


def test_activate_is_idempotent_and_owns_the_partition(fabric: SimulatedFabric, pods: Pods) -> None:
    metrics = PluginMetrics()
    keeper = _keeper(fabric, pods, metrics=metrics)
    keeper.activate(MODEL.partition(3))
    keeper.activate(MODEL.partition(3))
    assert fabric.active_ids() == {3}
    assert keeper.owned() == {3}
    assert _ops(metrics, "activate", "ok") == 1
    assert pods.calls == 0  # nothing overlapped: no need to ask the kubelet


def test_an_overlap_no_pod_holds_is_replaced(fabric: SimulatedFabric, pods: Pods) -> None:
    fabric.activate(1)
    metrics = PluginMetrics()
    _keeper(fabric, pods, metrics=metrics).activate(MODEL.partition(3))
    assert fabric.active_ids() == {3}
    assert _ops(metrics, "deactivate", "ok") == 1


@pytest.mark.parametrize("down", [False, True], ids=["a pod holds it", "kubelet silent"])
def test_an_overlap_that_may_be_held_is_refused(
    fabric: SimulatedFabric, pods: Pods, down: bool
) -> None:
    fabric.activate(1)
    pods.holding, pods.down = {1}, down
    keeper = _keeper(fabric, pods)
    with pytest.raises(PartitionHeld, match="overlaps active partition 1"):
        keeper.activate(MODEL.partition(3))
    assert fabric.active_ids() == {1}
    assert keeper.owned() == frozenset()


def test_release_keeps_held_and_recent_partitions(fabric: SimulatedFabric, pods: Pods) -> None:
    keeper = _keeper(fabric, pods, grace_s=0.2)
    keeper.activate(MODEL.partition(3))
    keeper.activate(MODEL.partition(5))
    assert keeper.release_unheld() == ()  # within the grace period
    time.sleep(0.25)
    pods.holding = {5}
    assert keeper.release_unheld() == (3,)
    assert fabric.active_ids() == {5}
    assert keeper.owned() == {5}
    pods.down = True
    with pytest.raises(Unavailable):
        keeper.release_unheld()  # nothing is released on a guess
    assert fabric.active_ids() == {5}


def test_reconcile_adopts_held_partitions_and_deactivates_orphans(
    fabric: SimulatedFabric, pods: Pods
) -> None:
    fabric.activate(3)
    fabric.activate(5)
    pods.holding = {5}
    keeper = _keeper(fabric, pods, grace_s=60.0)
    keeper.reconcile()
    assert fabric.active_ids() == {5}
    assert keeper.owned() == {5}
    pods.holding = set()
    assert keeper.release_unheld() == (5,)  # adopted: no grace period


def test_reconcile_does_nothing_when_the_kubelet_is_silent(
    fabric: SimulatedFabric, pods: Pods
) -> None:
    fabric.activate(3)
    pods.down = True
    keeper = _keeper(fabric, pods)
    keeper.reconcile()
    assert fabric.active_ids() == {3}
    assert keeper.owned() == frozenset()
