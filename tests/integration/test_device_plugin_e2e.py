"""End to end: the device plugin, the test kubelet and a real fm-controller, over unix sockets.

Pods are played the way the kubelet plays them: GetPreferredAllocation over the devices not
yet taken, Allocate, the pod listed by PodResources, PreStartContainer. The fabric is an
fm-controller daemon (simulated backend) reached through :class:`RemoteFabric`; the test
reads the simulated Fabric Manager behind it to see what is really active.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from gpucaas.cli.node_plugin import device_plugin
from gpucaas.fabric import FabricController, RemoteFabric, SimulatedFabric, serve_controller
from gpucaas.node import kubelet_gpus, modulemap
from gpucaas.node.deviceplugin import DevicePlugin
from gpucaas.node.discovery import discover
from gpucaas.node.health import StillOnVfio
from gpucaas.node.modulemap import parse_nvidia_smi_xml
from gpucaas.topology import get_model
from tests.node import kubelet_fake, sysfs_fixture

MODEL = get_model("hgx-h100-8")
NODE_TESTS = Path(__file__).resolve().parents[1] / "node"


class Node:
    """One HGX node: test kubelet, fm-controller, and the pods' bookkeeping."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fm = SimulatedFabric(MODEL, board="hgx-07")
        controller = FabricController(
            self.fm, MODEL, state_dir=root / "fm", board="hgx-07", backend="simulated"
        )
        self.daemon = serve_controller(controller, str(root / "fm.sock"), reconcile_interval_s=0.2)
        self.fabric = RemoteFabric(str(root / "fm.sock"))
        self.kubelet: Any = kubelet_fake.TestKubelet(root / "kubelet")
        tree = sysfs_fixture.make_hgx_h100_tree(root / "sys")
        self.gpus = kubelet_gpus(
            discover(tree), parse_nvidia_smi_xml(NODE_TESTS / "data" / "nvidia-smi-hgx-h100.xml")
        )
        self.dev = root / "dev"  # the VFIO group nodes, for the health check
        for gpu in self.gpus:
            (self.dev / "vfio").mkdir(parents=True, exist_ok=True)
            (self.dev / "vfio" / str(gpu.iommu_group)).touch()
        self.pods: dict[tuple[str, str, str], list[str]] = {}
        self.plugins: list[DevicePlugin] = []

    def start_plugin(self) -> DevicePlugin:
        plugin = DevicePlugin(
            self.gpus,
            MODEL,
            self.fabric,
            kubelet_dir=self.kubelet.root,
            health_interval_s=0.1,
            release_grace_s=0.0,
        )
        self.plugins.append(plugin)
        plugin.start()
        return plugin

    def run_pod(self, name: str, gpus: int) -> list[str]:
        taken = {d for ids in self.pods.values() for d in ids}
        available = [g.device_id for g in self.gpus if g.device_id not in taken]
        ids: list[str] = self.kubelet.preferred(available, [], gpus)
        self.kubelet.allocate(ids)
        self.pods[("tenant-a", name, "vm")] = ids
        self.kubelet.set_pods(self.pods)
        self.kubelet.pre_start(ids)
        return ids

    def end_pod(self, name: str) -> None:
        del self.pods[("tenant-a", name, "vm")]
        self.kubelet.set_pods(self.pods)

    def held(self) -> set[int]:
        """The partitions the live pods hold, by their device IDs."""
        modules = {g.device_id: int(g.module_id) for g in self.gpus}
        return {int(MODEL.partition_for(modules[d] for d in ids).id) for ids in self.pods.values()}

    def close(self) -> None:
        for plugin in self.plugins:
            plugin.stop()
        self.kubelet.close()
        self.fabric.close()
        self.daemon.stop()


@pytest.fixture
def node() -> Iterator[Node]:
    # A short path: unix socket paths are limited to 107 bytes, tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="gpucaas-") as name:
        node = Node(Path(name))
        yield node
        node.close()


def _poll(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _modules(node: Node, ids: list[str]) -> list[int]:
    by_id = {g.device_id: int(g.module_id) for g in node.gpus}
    return sorted(by_id[d] for d in ids)


def test_pods_get_partitions_that_are_released_and_survive_a_plugin_kill(node: Node) -> None:
    first = node.start_plugin()

    # Two pods of 2 GPUs and one of 4: three non-overlapping partitions, active in FM.
    a = node.run_pod("a", 2)
    b = node.run_pod("b", 2)
    c = node.run_pod("c", 4)
    assert (_modules(node, a), _modules(node, b), _modules(node, c)) == (
        [1, 3],
        [2, 4],
        [5, 6, 7, 8],
    )
    assert node.fm.active_ids() == node.held() == {3, 4, 2}
    assert first.owned() == {2, 3, 4}

    # A pod ends: its partition is deactivated.
    node.end_pod("a")
    _poll(lambda: node.fm.active_ids() == {4, 2})

    # A new pod gets the freed pair; then the plugin dies without any cleanup, leaving its
    # socket file behind, and a pod ends while no plugin runs.
    d = node.run_pod("d", 2)
    assert _modules(node, d) == [1, 3]
    assert node.fm.active_ids() == {2, 3, 4}
    first.stop()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(first.socket))
    stale.close()
    node.end_pod("b")
    assert node.fm.active_ids() == {2, 3, 4}  # nobody released b's partition yet

    # The new plugin adopts what live pods hold and deactivates the orphan.
    second = node.start_plugin()
    assert node.fm.active_ids() == node.held() == {2, 3}
    assert second.owned() == {2, 3}
    node.kubelet.wait_for(lambda k: len(k.requests) == 2 and len(k.devices) == 8)

    # Adopted partitions are released like its own.
    node.end_pod("c")
    _poll(lambda: node.fm.active_ids() == {3})
    node.end_pod("d")
    _poll(lambda: node.fm.active_ids() == frozenset())
    assert second.owned() == frozenset()


# --- the command ------------------------------------------------------------------------------


def _command_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(device_plugin)
    return app


def test_the_command_refuses_to_run_without_a_module_map(node: Node) -> None:
    result = CliRunner().invoke(
        _command_app(),
        [
            "--kubelet-dir",
            str(node.kubelet.root),
            "--fabric",
            str(node.root / "fm.sock"),
            "--sysfs",
            str(node.root / "sys"),
            "--module-map",
            str(node.root / "no-map.json"),
        ],
    )
    assert result.exit_code == 2
    assert "no module map on this node" in result.output
    assert "gpucaas node capture-map" in result.output
    assert node.kubelet.requests == []


def test_the_health_check_is_still_bound_to_vfio_pci(node: Node) -> None:
    unbound = sysfs_fixture.make_hgx_h100_tree(node.root / "sys-unbound", variant="gpu-unbound")
    assert all(StillOnVfio(node.root / "sys")(gpu) for gpu in node.gpus)
    check = StillOnVfio(unbound)
    assert {g.bdf for g in node.gpus if not check(g)} == {"0000:9a:00.0", "0000:db:00.0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_command(node: Node, port: int, **popen: Any) -> subprocess.Popen[str]:
    """``gpucaas node device-plugin`` against the node, as a process of its own."""
    map_path = node.root / "module-map.json"
    modulemap.save(parse_nvidia_smi_xml(NODE_TESTS / "data" / "nvidia-smi-hgx-h100.xml"), map_path)
    env = {**os.environ, "GPUCAAS_KUBELET_DIR": str(node.kubelet.root)}
    env["GPUCAAS_FABRIC"] = str(node.root / "fm.sock")
    env["GPUCAAS_MODULE_MAP"] = str(map_path)
    env["GPUCAAS_HTTP_LISTEN"] = f"127.0.0.1:{port}"
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gpucaas"),
            "node",
            "device-plugin",
            "--sysfs",
            str(node.root / "sys"),
            "--dev-root",
            str(node.dev),
            "--health-interval",
            "0.1",
        ],
        env=env,
        text=True,
        **popen,
    )


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def test_the_command_serves_until_sigterm(node: Node) -> None:
    port = _free_port()
    process = _start_command(node, port, stderr=subprocess.PIPE)
    try:
        node.kubelet.wait_for(lambda k: len(k.devices) == 8, timeout=15.0)
        _poll(lambda: _healthz(port) == 200)
        assert node.kubelet.requests[0].resource_name == "nvidia.com/gpu"
        assert set(node.kubelet.health().values()) == {"Healthy"}
        node.pods[("tenant-a", "vm", "vm")] = ["4", "5", "6", "7"]
        node.kubelet.set_pods(node.pods)
        node.kubelet.pre_start(["4", "5", "6", "7"])
        assert node.fm.active_ids() == {2}
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert not (node.kubelet.plugin_dir / node.kubelet.requests[0].endpoint).exists()
    assert '"msg": "device plugin stopped"' in stderr
    assert node.fm.active_ids() == {2}  # the pod still runs: its partition stays active


def test_kill_9_of_the_command_mid_way_leaks_no_partition(node: Node) -> None:
    """Pods of 2, 2 and 4 GPUs against the real command; SIGKILL while the 4-GPU pod is
    allocated but not started and after a 2-GPU pod ended; the next plugin re-registers,
    adopts what live pods hold, deactivates the orphan, and serves the pending pod."""
    port = _free_port()
    first = _start_command(node, port, stderr=subprocess.DEVNULL)
    second = None
    try:
        node.kubelet.wait_for(lambda k: len(k.requests) == 1 and len(k.devices) == 8, 15.0)
        a = node.run_pod("a", 2)
        b = node.run_pod("b", 2)
        assert node.fm.active_ids() == node.held() == {3, 4}

        # Pod c is allocated and listed, but the plugin dies before PreStartContainer.
        taken = {d for ids in node.pods.values() for d in ids}
        available = [g.device_id for g in node.gpus if g.device_id not in taken]
        c = node.kubelet.preferred(available, [], 4)
        node.kubelet.allocate(c)
        node.pods[("tenant-a", "c", "vm")] = c
        node.kubelet.set_pods(node.pods)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert first.returncode == -signal.SIGKILL
        node.end_pod("b")  # while no plugin runs: b's partition is now an orphan
        assert node.fm.active_ids() == {3, 4}

        second = _start_command(node, port, stderr=subprocess.DEVNULL)
        node.kubelet.wait_for(lambda k: len(k.requests) == 2 and len(k.devices) == 8, 15.0)
        assert node.kubelet.requests[1].endpoint == node.kubelet.requests[0].endpoint
        _poll(lambda: _healthz(port) == 200, timeout=10.0)
        assert node.fm.active_ids() == {3}  # a's adopted, b's orphan deactivated

        node.kubelet.pre_start(c)  # the kubelet retries the pending container's start
        assert node.fm.active_ids() == node.held() == {3, 2}
        d = node.run_pod("d", 2)  # gets b's freed pair
        assert _modules(node, d) == _modules(node, b) == [2, 4]
        assert node.fm.active_ids() == node.held() == {2, 3, 4}

        # No partition held twice: the live pods' GPU sets are disjoint, and the fabric's
        # active set is exactly what they hold.
        held_ids = [set(ids) for ids in node.pods.values()]
        assert sum(len(ids) for ids in held_ids) == len(set().union(*held_ids)) == 8
        assert _modules(node, a) == [1, 3]
        _poll(lambda: node.daemon.controller.status().in_sync)
        assert set(node.daemon.controller.status().desired) == {2, 3, 4}
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=15)
