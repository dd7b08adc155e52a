"""The partition-aware device plugin against the test kubelet, over real unix sockets.

The GPUs come from the fixture HGX H100 tree and its nvidia-smi module map (device IDs
"0".."7" are modules 1..8); the fabric is the in-process :class:`SimulatedFabric`. The
H100 board's 2-GPU partitions are modules {1,3}, {2,4}, {5,7}, {6,8}.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpucaas.errors import InvalidRequest
from gpucaas.fabric import SimulatedFabric
from gpucaas.node import KubeletGpu
from gpucaas.node.deviceplugin import DevicePlugin, HttpEndpoint, PluginState
from gpucaas.node.health import FabricFailures, NodeHealth
from gpucaas.topology import get_model
from tests.node.kubelet_fake import TestKubelet
from tests.node.node_fakes import FailingFabric, FunctionPods

MODEL = get_model("hgx-h100-8")

MakePlugin = Callable[..., DevicePlugin]


@pytest.fixture
def kubelet() -> Iterator[TestKubelet]:
    # A short path: unix socket paths are limited to 107 bytes, tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="gpucaas-") as name:
        kubelet = TestKubelet(Path(name))
        yield kubelet
        kubelet.close()


@pytest.fixture
def fabric() -> SimulatedFabric:
    return SimulatedFabric(MODEL)


@pytest.fixture
def make_plugin(
    gpus: tuple[KubeletGpu, ...], kubelet: TestKubelet, fabric: SimulatedFabric
) -> Iterator[MakePlugin]:
    plugins: list[DevicePlugin] = []

    def make(**options: object) -> DevicePlugin:
        settings: dict[str, object] = {"health_interval_s": 0.1, "release_grace_s": 0.0}
        settings.update(options)
        plugin = DevicePlugin(gpus, MODEL, fabric, kubelet_dir=kubelet.root, **settings)  # type: ignore[arg-type]
        plugins.append(plugin)
        plugin.start()
        return plugin

    yield make
    for plugin in plugins:
        plugin.stop()


def test_registers_with_the_kubelet_and_stop_removes_the_socket(
    kubelet: TestKubelet, make_plugin: MakePlugin
) -> None:
    plugin = make_plugin()
    assert plugin.state is PluginState.SERVING
    request = kubelet.requests[0]
    assert request.version == "v1beta1"
    assert request.endpoint == "gpucaas-nvidia-com-gpu.sock"
    assert request.resource_name == "nvidia.com/gpu"
    assert request.options.pre_start_required
    assert request.options.get_preferred_allocation_available
    assert (kubelet.plugin_dir / request.endpoint).exists()
    plugin.stop()
    plugin.stop()  # idempotent
    assert _state(plugin) is PluginState.STOPPED
    assert not (kubelet.plugin_dir / request.endpoint).exists()
    with pytest.raises(RuntimeError, match="stopped"):
        plugin.start()


def test_a_stale_socket_is_replaced(kubelet: TestKubelet, make_plugin: MakePlugin) -> None:
    kubelet.plugin_dir.joinpath("gpucaas-nvidia-com-gpu.sock").write_text("stale")
    make_plugin()
    kubelet.wait_for(lambda k: len(k.devices) == 8)


def test_list_and_watch_streams_health_changes_within_a_second(
    kubelet: TestKubelet, make_plugin: MakePlugin
) -> None:
    broken: set[str] = set()
    make_plugin(health=lambda gpu: gpu.device_id not in broken, health_interval_s=0.5)
    kubelet.wait_for(lambda k: len(k.devices) == 8)
    assert [(d, h) for d, h, _ in kubelet.devices] == [(str(i), "Healthy") for i in range(8)]
    # Fixture NUMA nodes: modules 1-4 sit on buses on node 0, modules 5-8 on node 1.
    assert [numa for _, _, numa in kubelet.devices] == [(0,)] * 4 + [(1,)] * 4

    broken.add("2")
    started = time.monotonic()
    kubelet.wait_for(lambda k: k.health().get("2") == "Unhealthy", timeout=1.0)
    assert time.monotonic() - started < 1.0
    health = kubelet.health()
    assert len(health) == 8  # always the full list
    assert {d for d, h in health.items() if h == "Unhealthy"} == {"2"}

    broken.clear()
    kubelet.wait_for(lambda k: k.health().get("2") == "Healthy", timeout=1.0)


def test_a_failing_health_check_marks_the_gpu_unhealthy(
    kubelet: TestKubelet, make_plugin: MakePlugin
) -> None:
    def check(gpu: KubeletGpu) -> bool:
        if gpu.device_id == "5":
            raise OSError("config space unreadable")
        return True

    make_plugin(health=check)
    kubelet.wait_for(lambda k: k.health().get("5") == "Unhealthy")


def test_unhealthy_gpus_are_reported_by_module_id_on_change_and_retried(
    gpus: tuple[KubeletGpu, ...], make_plugin: MakePlugin
) -> None:
    broken: set[str] = set()
    reports: list[frozenset[int]] = []
    failing = threading.Event()

    def report(modules: frozenset[int]) -> None:
        if failing.is_set():
            raise ConnectionError("API server unreachable")
        reports.append(modules)

    module = {g.device_id: int(g.module_id) for g in gpus}
    plugin = make_plugin(health=lambda gpu: gpu.device_id not in broken, report=report)
    _poll(lambda: reports == [frozenset()])  # the first pass clears a stale annotation
    broken.add("2")
    _poll(lambda: reports[-1:] == [frozenset({module["2"]})])
    failing.set()  # a failed report is retried on the next pass, not lost
    broken.add("6")
    _poll(lambda: _reports(plugin, "error") >= 2)
    failing.clear()
    _poll(lambda: reports[-1:] == [frozenset({module["2"], module["6"]})])
    count = len(reports)
    time.sleep(0.5)  # unchanged health: nothing more is reported
    assert len(reports) == count
    assert plugin.unhealthy_modules() == {module["2"], module["6"]}


def _reports(plugin: DevicePlugin, result: str) -> float:
    text = plugin.metrics.text().decode()
    return _metric(text, "gpucaas_device_plugin_health_reports_total", result=result)


def _ids(modules: set[int]) -> list[str]:
    return sorted((str(m - 1) for m in modules), key=int)


@pytest.mark.parametrize(
    ("taken", "size", "must", "expected"),
    [
        (set(), 1, set(), {1}),
        ({1}, 1, set(), {3}),
        ({1, 3}, 2, set(), {2, 4}),
        ({1}, 2, set(), {2, 4}),
        ({1}, 4, set(), {5, 6, 7, 8}),
        (set(), 8, set(), {1, 2, 3, 4, 5, 6, 7, 8}),
        (set(), 2, {5}, {5, 7}),
        ({1, 3}, 2, {8}, {6, 8}),
    ],
    ids=[
        "empty board, 1 GPU: lowest module",
        "module 1 used, 1 GPU: fills its pair",
        "modules 1,3 used, 2 GPUs: the other pair of the half",
        "module 1 used, 2 GPUs: stays in the broken half",
        "module 1 used, 4 GPUs: the whole free half",
        "empty board, 8 GPUs: the board",
        "must include module 5",
        "must include module 8 although 2,4 is best",
    ],
)
def test_preferred_allocation_is_buddy_best_fit(
    kubelet: TestKubelet,
    make_plugin: MakePlugin,
    taken: set[int],
    size: int,
    must: set[int],
    expected: set[int],
) -> None:
    make_plugin()
    available = _ids(set(range(1, 9)) - taken)
    assert kubelet.preferred(available, _ids(must), size) == _ids(expected)


@pytest.mark.parametrize(
    ("taken", "size", "code", "words"),
    [
        ({1}, 8, grpc.StatusCode.FAILED_PRECONDITION, "no free 8-GPU partition"),
        ({1, 6}, 4, grpc.StatusCode.FAILED_PRECONDITION, "no free 4-GPU partition"),
        (set(), 3, grpc.StatusCode.INVALID_ARGUMENT, "request 4 GPUs instead"),
    ],
    ids=["board partly used, 8 GPUs", "both halves broken, 4 GPUs", "3 GPUs is no size"],
)
def test_preferred_allocation_explains_a_refusal(
    kubelet: TestKubelet,
    make_plugin: MakePlugin,
    taken: set[int],
    size: int,
    code: grpc.StatusCode,
    words: str,
) -> None:
    make_plugin()
    with pytest.raises(grpc.RpcError) as refused:
        kubelet.preferred(_ids(set(range(1, 9)) - taken), [], size)
    assert refused.value.code() == code
    assert words in refused.value.details()


def test_allocate_refuses_a_set_that_is_not_a_partition(
    kubelet: TestKubelet, make_plugin: MakePlugin
) -> None:
    make_plugin()
    with pytest.raises(grpc.RpcError) as refused:
        kubelet.allocate(["0", "1"])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = refused.value.details()
    assert "devices 0,1 (modules 1,2) are not one partition" in message
    for valid in ("devices 0,2 (partition 3", "devices 1,3 (partition 4", "devices 5,7"):
        assert valid in message


def test_allocate_answers_cdi_devices_env_and_annotations(
    kubelet: TestKubelet, make_plugin: MakePlugin, gpus: tuple[KubeletGpu, ...]
) -> None:
    make_plugin()
    response = kubelet.allocate(["2", "0"])
    assert [d.name for d in response.cdi_devices] == ["nvidia.com/gpu=0", "nvidia.com/gpu=2"]
    assert dict(response.envs) == {
        "GPUCAAS_PARTITION_ID": "3",
        "GPUCAAS_MODULE_IDS": "1,3",
        "GPUCAAS_BDFS": f"{gpus[0].bdf},{gpus[2].bdf}",
    }
    assert dict(response.annotations) == {"gpucaas.io/partition-id": "3"}
    assert [d.host_path for d in response.devices] == [
        f"/dev/vfio/{gpus[0].iommu_group}",
        f"/dev/vfio/{gpus[2].iommu_group}",
        "/dev/vfio/vfio",
    ]


def test_pre_start_activates_the_partition_idempotently(
    kubelet: TestKubelet, make_plugin: MakePlugin, fabric: SimulatedFabric
) -> None:
    plugin = make_plugin(release_grace_s=60.0)
    kubelet.pre_start(["0", "2"])
    assert fabric.active_ids() == {3}
    kubelet.pre_start(["0", "2"])
    assert fabric.active_ids() == {3}
    assert plugin.owned() == {3}


def test_pre_start_replaces_an_overlapping_partition_no_pod_holds(
    kubelet: TestKubelet, make_plugin: MakePlugin, fabric: SimulatedFabric
) -> None:
    make_plugin(release_grace_s=60.0)
    fabric.activate(1)  # modules 1-4, left behind by someone
    kubelet.set_pods({("t1", "vm", "main"): ["0", "2"]})
    kubelet.pre_start(["0", "2"])
    assert fabric.active_ids() == {3}


def test_pre_start_refuses_when_a_running_pod_holds_the_overlap(
    kubelet: TestKubelet, make_plugin: MakePlugin, fabric: SimulatedFabric
) -> None:
    kubelet.set_pods({("t1", "big", "main"): ["0", "1", "2", "3"]})
    fabric.activate(1)
    make_plugin()
    with pytest.raises(grpc.RpcError) as refused:
        kubelet.pre_start(["0", "2"])
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "overlaps active partition 1 (GPUs 1-4), which a running pod holds" in (
        refused.value.details()
    )
    assert fabric.active_ids() == {1}


def test_partitions_are_released_when_their_pods_end(
    kubelet: TestKubelet, make_plugin: MakePlugin, fabric: SimulatedFabric
) -> None:
    plugin = make_plugin()
    kubelet.set_pods({("t1", "a", "main"): ["0", "2"], ("t1", "b", "main"): ["4", "6"]})
    kubelet.pre_start(["0", "2"])
    kubelet.pre_start(["4", "6"])
    assert fabric.active_ids() == {3, 5}
    kubelet.set_pods({("t1", "b", "main"): ["4", "6"]})
    _poll(lambda: fabric.active_ids() == {5})
    assert plugin.owned() == {5}


def test_reregisters_after_a_kubelet_restart(kubelet: TestKubelet, make_plugin: MakePlugin) -> None:
    make_plugin()
    kubelet.wait_for(lambda k: len(k.devices) == 8)
    kubelet.restart()
    kubelet.wait_for(lambda k: len(k.requests) == 2 and len(k.devices) == 8, timeout=5.0)
    assert kubelet.requests[1].endpoint == kubelet.requests[0].endpoint
    assert kubelet.allocate(["1", "3"]).envs["GPUCAAS_PARTITION_ID"] == "4"


def _state(plugin: DevicePlugin) -> PluginState:
    return plugin.state


def _poll(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- /healthz and /metrics ----------------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_healthz_is_503_until_registered_and_metrics_count_the_calls(
    gpus: tuple[KubeletGpu, ...], kubelet: TestKubelet, fabric: SimulatedFabric
) -> None:
    broken: set[str] = set()
    plugin = DevicePlugin(
        gpus,
        MODEL,
        fabric,
        kubelet_dir=kubelet.root,
        health=lambda gpu: gpu.device_id not in broken,
        health_interval_s=0.1,
        release_grace_s=60.0,
    )
    http = HttpEndpoint(plugin, "127.0.0.1:0")
    http.start()
    try:
        status, body = _get(http.port, "/healthz")
        assert status == 503
        assert json.loads(body)["state"] == "new"
        assert _get(http.port, "/metrics")[0] == 200
        assert _get(http.port, "/nothing")[0] == 404

        plugin.start()
        status, body = _get(http.port, "/healthz")
        assert status == 200
        report = json.loads(body)
        assert (report["ok"], report["state"], report["registered"]) == (True, "serving", True)

        assert kubelet.preferred([str(i) for i in range(8)], [], 2) == ["0", "2"]
        kubelet.allocate(["0", "2"])
        with pytest.raises(grpc.RpcError):
            kubelet.allocate(["0", "1"])
        kubelet.pre_start(["0", "2"])
        broken.add("3")
        kubelet.wait_for(lambda k: k.health().get("3") == "Unhealthy")

        _, text = _get(http.port, "/metrics")
        calls = "gpucaas_device_plugin_calls_total"
        assert _metric(text, calls, rpc="preferred", result="ok") == 1
        assert _metric(text, calls, rpc="allocate", result="ok") == 1
        assert _metric(text, calls, rpc="allocate", result="invalid_argument") == 1
        assert _metric(text, calls, rpc="prestart", result="ok") == 1
        ops = "gpucaas_device_plugin_fabric_operations_total"
        assert _metric(text, ops, op="activate", result="ok") == 1
        assert _metric(text, "gpucaas_device_plugin_registrations_total", result="ok") == 1
        assert (
            _metric(text, "gpucaas_device_plugin_health_transitions_total", health="Unhealthy") == 1
        )
        assert _metric(text, "gpucaas_device_plugin_devices_healthy") == 7
        assert _metric(text, "gpucaas_device_plugin_rpc_seconds_count", rpc="allocate") == 2
        assert _metric(text, "gpucaas_device_plugin_rpc_seconds_count", rpc="prestart") == 1

        # A restarting kubelet: not ready until registered again.
        kubelet.restart()
        kubelet.wait_for(lambda k: len(k.requests) == 2, timeout=5.0)
        _poll(lambda: _get(http.port, "/healthz")[0] == 200)

        plugin.stop()
        status, body = _get(http.port, "/healthz")
        assert (status, json.loads(body)["state"]) == (503, "stopped")
        assert _get(http.port, "/metrics")[0] == 200
    finally:
        plugin.stop()
        http.stop()


def test_http_endpoint_refuses_a_bad_address(
    gpus: tuple[KubeletGpu, ...], fabric: SimulatedFabric
) -> None:
    plugin = DevicePlugin(gpus, MODEL, fabric, register=False)
    with pytest.raises(InvalidRequest, match="cannot serve"):
        HttpEndpoint(plugin, "127.0.0.1:notaport")


# --- node health checks through the plugin ------------------------------------------------


def test_an_unhealthy_gpu_recovers_within_a_second(
    hgx_sysfs: Path,
    gpus: tuple[KubeletGpu, ...],
    dev_root: Path,
    kubelet: TestKubelet,
    make_plugin: MakePlugin,
) -> None:
    fabric = FailingFabric(MODEL)
    make_plugin(
        health=NodeHealth(hgx_sysfs, dev_root, FabricFailures(fabric)), health_interval_s=0.5
    )
    kubelet.wait_for(lambda k: len(k.devices) == 8)
    gpu = gpus[5]
    node = dev_root / "vfio" / str(gpu.iommu_group)
    config = hgx_sysfs / "bus" / "pci" / "devices" / str(gpu.bdf) / "config"
    good = config.read_bytes()

    def breaks_and_recovers(breaking: Callable[[], object], mending: Callable[[], object]) -> None:
        breaking()
        started = time.monotonic()
        kubelet.wait_for(lambda k: k.health().get(gpu.device_id) == "Unhealthy", timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert set(kubelet.health().values()) == {"Healthy", "Unhealthy"}
        mending()
        started = time.monotonic()
        kubelet.wait_for(lambda k: k.health().get(gpu.device_id) == "Healthy", timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert set(kubelet.health().values()) == {"Healthy"}

    breaks_and_recovers(node.unlink, node.touch)
    breaks_and_recovers(lambda: config.write_bytes(b"\xff" * 64), lambda: config.write_bytes(good))
    breaks_and_recovers(
        lambda: setattr(fabric, "failed", [str(gpu.bdf)]), lambda: setattr(fabric, "failed", [])
    )


def test_an_injected_watcher_decides_what_is_released(
    gpus: tuple[KubeletGpu, ...], kubelet: TestKubelet, fabric: SimulatedFabric
) -> None:
    holding = {3}
    pods = FunctionPods(lambda: frozenset(holding))
    plugin = DevicePlugin(
        gpus,
        MODEL,
        fabric,
        kubelet_dir=kubelet.root,
        health_interval_s=0.05,
        release_grace_s=0.0,
        watcher=pods,
    )
    plugin.start()
    try:
        kubelet.set_pods({})  # the kubelet's own PodResources is not asked
        kubelet.pre_start(["0", "2"])
        time.sleep(0.2)
        assert fabric.active_ids() == {3}
        holding.clear()
        _poll(lambda: fabric.active_ids() == frozenset())
        assert plugin.owned() == frozenset()
        assert pods.calls > 0
    finally:
        plugin.stop()
