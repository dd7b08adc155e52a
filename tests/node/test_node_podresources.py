"""The pod-resources watcher on its own, against the test kubelet's PodResources server."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpucaas.errors import Unavailable
from gpucaas.node.deviceplugin import PodResourcesWatcher
from gpucaas.topology import get_model
from tests.node.kubelet_fake import TestKubelet

MODEL = get_model("hgx-h100-8")
MODULE_OF = {str(i): i + 1 for i in range(8)}  # device IDs "0".."7" are modules 1..8


@pytest.fixture
def kubelet() -> Iterator[TestKubelet]:
    with tempfile.TemporaryDirectory(prefix="gpucaas-") as name:
        kubelet = TestKubelet(Path(name))
        yield kubelet
        kubelet.close()


def test_held_turns_each_containers_devices_into_its_partition(kubelet: TestKubelet) -> None:
    watcher = PodResourcesWatcher(kubelet.pod_resources_socket, "nvidia.com/gpu", MODEL, MODULE_OF)
    assert watcher.held() == frozenset()
    kubelet.set_pods(
        {
            ("t1", "a", "main"): ["0", "2"],  # modules 1,3: partition 3
            ("t2", "b", "main"): ["4", "5", "6", "7"],  # modules 5-8: partition 2
            ("t3", "c", "main"): ["1", "2"],  # modules 2,3: no partition, ignored
            ("t4", "d", "main"): [],  # no devices of ours
        }
    )
    assert watcher.held() == {3, 2}


def test_other_resources_are_ignored(kubelet: TestKubelet) -> None:
    kubelet.set_pods({("t1", "a", "main"): ["0", "2"]})
    watcher = PodResourcesWatcher(kubelet.pod_resources_socket, "example.com/gpu", MODEL, MODULE_OF)
    assert watcher.held() == frozenset()


def test_a_silent_kubelet_is_unavailable(tmp_path: Path) -> None:
    watcher = PodResourcesWatcher(tmp_path / "absent.sock", "nvidia.com/gpu", MODEL, MODULE_OF)
    with pytest.raises(Unavailable, match="did not answer"):
        watcher.held()
