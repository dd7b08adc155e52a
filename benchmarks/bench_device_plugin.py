"""Device plugin benchmark: Allocate + PreStartContainer latency, health-change latency and
discovery time.

* Allocate + PreStartContainer of one 2-GPU partition through the plugin's real gRPC unix
  socket, as the kubelet calls them, with an in-memory :class:`SimulatedFabric` (no state
  file). The time spent inside fabric calls is measured and subtracted (target: p99 under
  5 ms excluding the fabric call). The partition is deactivated in the fabric between
  iterations (untimed), so every PreStartContainer really activates it. The baseline, in
  this process, is the same handlers called directly without gRPC; the ratio is printed.
* Health change → ListAndWatch: a GPU's health flips and the time until the kubelet's
  ListAndWatch stream shows it is measured, at the CLI's default 0.5 s health interval,
  each flip at a random phase of the health loop (target: under 1 s).
* Discovery of the full fixture HGX H100 sysfs tree (8 GPUs, 4 NVSwitches; target: under
  50 ms).

Run: .venv/bin/python benchmarks/bench_device_plugin.py [--json] [--iterations N]
     [--health-flips N]
No assertions on time; finishes in well under 30 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from gpucaas.fabric import SimulatedFabric
from gpucaas.node import KubeletGpu, kubelet_gpus
from gpucaas.node.deviceplugin import DevicePlugin
from gpucaas.node.discovery import discover
from gpucaas.node.modulemap import parse_nvidia_smi_xml
from gpucaas.node.proto import deviceplugin_v1beta1_pb2 as dp
from gpucaas.node.proto import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from gpucaas.topology import get_model

BOARD = "hgx-h100-8"
DEVICES = ["0", "2"]  # modules 1,3: partition 3, a typical two-GPU tenant
PARTITION = 3
WARMUP = 20
NODE_TESTS = Path(__file__).resolve().parents[1] / "tests" / "node"


def _sysfs_fixture() -> Any:
    spec = importlib.util.spec_from_file_location("sysfs_fixture", NODE_TESTS / "sysfs_fixture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sysfs_fixture"] = module
    spec.loader.exec_module(module)
    return module


class TimedFabric(SimulatedFabric):
    """The in-memory simulated fabric, adding up the seconds spent in its calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spent = 0.0

    def _timed(self, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.spent += time.perf_counter() - started

    def list_partitions(self) -> Any:
        return self._timed(super().list_partitions)

    def activate(self, partition_id: int) -> None:
        self._timed(super().activate, partition_id)

    def deactivate(self, partition_id: int) -> None:
        self._timed(super().deactivate, partition_id)


class _Context:
    """The handler context for direct calls (no gRPC)."""

    def is_active(self) -> bool:
        return True

    def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 4),
        "p99_ms": round(p99 * 1e3, 4),
        "n": len(ordered),
    }


def bench_rpc(gpus: tuple[KubeletGpu, ...], root: Path, iterations: int) -> dict[str, Any]:
    model = get_model(BOARD)
    fabric = TimedFabric(model)
    plugin = DevicePlugin(
        gpus, model, fabric, kubelet_dir=root / "kubelet", register=False, release_grace_s=1e9
    )
    plugin.start()
    allocate = dp.AllocateRequest(
        container_requests=[dp.ContainerAllocateRequest(devices_ids=DEVICES)]
    )
    pre_start = dp.PreStartContainerRequest(devices_ids=DEVICES)
    try:
        with grpc.insecure_channel(f"unix:{plugin.socket}") as channel:
            stub: Any = dp_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]

            def via_grpc() -> None:
                stub.Allocate(allocate, timeout=5)
                stub.PreStartContainer(pre_start, timeout=5)

            context = _Context()

            def direct() -> None:
                plugin.Allocate(allocate, context)
                plugin.PreStartContainer(pre_start, context)

            results = {}
            for name, call in (("grpc", via_grpc), ("direct", direct)):
                totals, excluding, fabric_only = [], [], []
                for i in range(WARMUP + iterations):
                    if PARTITION in fabric.active_ids():
                        fabric.deactivate(PARTITION)  # untimed: PreStart must activate
                    fabric.spent = 0.0
                    started = time.perf_counter()
                    call()
                    total = time.perf_counter() - started
                    if i >= WARMUP:
                        totals.append(total)
                        excluding.append(total - fabric.spent)
                        fabric_only.append(fabric.spent)
                results[name] = {
                    "total": _percentiles(totals),
                    "excluding_fabric": _percentiles(excluding),
                    "fabric": _percentiles(fabric_only),
                }
    finally:
        plugin.stop()
    ratio = (
        results["grpc"]["excluding_fabric"]["p50_ms"]
        / results["direct"]["excluding_fabric"]["p50_ms"]
    )
    return {**results, "grpc_over_direct_p50_ratio": round(ratio, 2)}


def bench_health(gpus: tuple[KubeletGpu, ...], root: Path, flips: int) -> dict[str, Any]:
    model = get_model(BOARD)
    broken: set[str] = set()
    plugin = DevicePlugin(
        gpus,
        model,
        SimulatedFabric(model),
        kubelet_dir=root / "kubelet-health",
        register=False,
        health=lambda gpu: gpu.device_id not in broken,
        health_interval_s=0.5,
    )
    plugin.start()
    seen: dict[str, str] = {}
    changed = threading.Condition()
    try:
        with grpc.insecure_channel(f"unix:{plugin.socket}") as channel:
            stub: Any = dp_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]
            stream = stub.ListAndWatch(dp.Empty())

            def watch() -> None:
                try:
                    for response in stream:
                        with changed:
                            seen.update({d.ID: d.health for d in response.devices})
                            changed.notify_all()
                except grpc.RpcError:
                    pass

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            latencies = []
            for i in range(flips):
                want = "Unhealthy" if i % 2 == 0 else "Healthy"
                time.sleep(random.uniform(0, 0.5))  # at a random phase of the health loop
                started = time.perf_counter()
                if want == "Unhealthy":
                    broken.add("5")
                else:
                    broken.discard("5")
                with changed:
                    while seen.get("5") != want:
                        changed.wait(0.01)
                latencies.append(time.perf_counter() - started)
            stream.cancel()
            watcher.join(timeout=5)
    finally:
        plugin.stop()
    return {
        "health_interval_s": 0.5,
        **_percentiles(latencies),
        "max_ms": round(max(latencies) * 1e3, 1),
    }


def bench_discovery(tree: Path, rounds: int = 50) -> dict[str, Any]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        found = discover(tree)
        samples.append(time.perf_counter() - started)
    return {**_percentiles(samples), "gpus": len(found.gpus), "devices": len(found.devices)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--health-flips", type=int, default=10)
    args = parser.parse_args()
    # No kubelet here: the plugin's "PodResources does not answer" warnings are expected.
    logging.getLogger("gpucaas.device-plugin").setLevel(logging.ERROR)
    fixture = _sysfs_fixture()
    with tempfile.TemporaryDirectory(prefix="gpucaas-bench-") as name:
        root = Path(name)
        tree = fixture.make_hgx_h100_tree(root / "sys")
        gpus = kubelet_gpus(
            discover(tree), parse_nvidia_smi_xml(NODE_TESTS / "data" / "nvidia-smi-hgx-h100.xml")
        )
        result = {
            "discovery": bench_discovery(tree),
            "allocate_prestart": bench_rpc(gpus, root, args.iterations),
            "health_to_list_and_watch": bench_health(gpus, root, args.health_flips),
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    d = result["discovery"]
    print(f"discovery of the HGX tree: p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms (< 50 ms)")
    rpc = result["allocate_prestart"]
    for name in ("grpc", "direct"):
        r = rpc[name]
        print(
            f"Allocate+PreStart {name:6}: total p50 {r['total']['p50_ms']} ms p99 "
            f"{r['total']['p99_ms']} ms; excluding fabric p50 {r['excluding_fabric']['p50_ms']}"
            f" ms p99 {r['excluding_fabric']['p99_ms']} ms (< 5 ms)"
        )
    print(f"gRPC / direct (p50, excluding fabric): {rpc['grpc_over_direct_p50_ratio']}x")
    h = result["health_to_list_and_watch"]
    print(f"health change -> ListAndWatch: p50 {h['p50_ms']} ms, max {h['max_ms']} ms (< 1000 ms)")


if __name__ == "__main__":
    main()
