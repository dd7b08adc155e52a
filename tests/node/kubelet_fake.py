"""A test kubelet, written from the official device plugin v1beta1 and PodResources v1 APIs.

It serves ``v1beta1.Registration`` on ``<dir>/device-plugins/kubelet.sock`` and
``v1.PodResourcesLister`` on ``<dir>/pod-resources/kubelet.sock`` over real unix sockets,
records every RegisterRequest, and after each registration dials the plugin's endpoint (a
socket file name in the device-plugins directory) and consumes ListAndWatch in a thread, as
the kubelet's device manager does. Tests call the plugin through :meth:`TestKubelet.preferred`,
:meth:`~TestKubelet.allocate` and :meth:`~TestKubelet.pre_start`, and say which pods the
PodResources API reports with :meth:`~TestKubelet.set_pods`. :meth:`~TestKubelet.restart`
does what a restarting kubelet does to the directory: it removes every plugin socket and
re-creates kubelet.sock with a new server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from gpucaas.node.proto import (
    deviceplugin_v1beta1_pb2,
    deviceplugin_v1beta1_pb2_grpc,
    podresources_v1_pb2,
    podresources_v1_pb2_grpc,
)

# The generated gRPC module is untyped; these are the three entry points used here.
_add_lister: Any = podresources_v1_pb2_grpc.add_PodResourcesListerServicer_to_server
_add_registration: Any = deviceplugin_v1beta1_pb2_grpc.add_RegistrationServicer_to_server
_DevicePluginStub: Any = deviceplugin_v1beta1_pb2_grpc.DevicePluginStub

Pods = Mapping[tuple[str, str, str], Sequence[str]]
"""(namespace, pod, container) → device IDs of our resource."""


class _Registration(deviceplugin_v1beta1_pb2_grpc.RegistrationServicer):
    def __init__(self, kubelet: TestKubelet) -> None:
        self.kubelet = kubelet

    def Register(self, request: Any, context: Any) -> Any:  # noqa: N802
        if request.version != "v1beta1":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported {request.version}")
        self.kubelet._registered(request)
        return deviceplugin_v1beta1_pb2.Empty()


class _Lister(podresources_v1_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, kubelet: TestKubelet) -> None:
        self.kubelet = kubelet

    def List(self, request: Any, context: Any) -> Any:  # noqa: N802
        return podresources_v1_pb2.ListPodResourcesResponse(pod_resources=self.kubelet._pods_pb())


def _serve(
    path: Path, add: Callable[[grpc.Server], None]
) -> tuple[grpc.Server, ThreadPoolExecutor]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    pool = ThreadPoolExecutor(max_workers=4)
    server = grpc.server(pool)
    add(server)
    assert server.add_insecure_port(f"unix:{path}") != 0
    server.start()
    return server, pool


class TestKubelet:
    """The kubelet's side of the device plugin and PodResources APIs, for one resource."""

    __test__ = False  # not a pytest test class

    def __init__(self, root: Path, resource: str = "nvidia.com/gpu") -> None:
        self.root = root
        self.resource = resource
        self.plugin_dir = root / "device-plugins"
        self.socket = self.plugin_dir / "kubelet.sock"
        self.pod_resources_socket = root / "pod-resources" / "kubelet.sock"
        self.requests: list[Any] = []
        self.devices: list[tuple[str, str, tuple[int, ...]]] = []
        """The latest ListAndWatch list: (ID, health, NUMA nodes)."""
        self.updates = 0
        self.changed_at = 0.0
        self._pods: dict[tuple[str, str, str], list[str]] = {}
        self._lock = threading.Condition()
        self._channel: grpc.Channel | None = None
        self._stream: Any = None
        self._watcher: threading.Thread | None = None
        self._connectors: list[threading.Thread] = []
        self._servers: list[tuple[grpc.Server, ThreadPoolExecutor]] = []
        self._serve_registration()
        self._servers.append(
            _serve(
                self.pod_resources_socket,
                lambda s: _add_lister(_Lister(self), s),
            )
        )

    def _serve_registration(self) -> None:
        self._registration = _serve(
            self.socket,
            lambda s: _add_registration(_Registration(self), s),
        )

    # -- registration and ListAndWatch ---------------------------------------------------

    def _registered(self, request: Any) -> None:
        with self._lock:
            self.requests.append(request)
        # The kubelet answers Register first and dials the plugin afterwards.
        connector = threading.Thread(target=self._connect, args=(request.endpoint,), daemon=True)
        self._connectors.append(connector)
        connector.start()

    def _connect(self, endpoint: str) -> None:
        self._disconnect()
        channel = grpc.insecure_channel(f"unix:{self.plugin_dir / endpoint}")
        stub = _DevicePluginStub(channel)
        stream = stub.ListAndWatch(deviceplugin_v1beta1_pb2.Empty())
        watcher = threading.Thread(target=self._watch, args=(stream,), daemon=True)
        with self._lock:
            self._channel, self._stream, self._watcher = channel, stream, watcher
        watcher.start()

    def _watch(self, stream: Any) -> None:
        try:
            for response in stream:
                devices = [
                    (d.ID, d.health, tuple(n.ID for n in d.topology.nodes))
                    for d in response.devices
                ]
                with self._lock:
                    self.devices = devices
                    self.updates += 1
                    self.changed_at = time.monotonic()
                    self._lock.notify_all()
        except grpc.RpcError:
            pass  # cancelled by us, or the plugin went away

    def _disconnect(self) -> None:
        with self._lock:
            channel, stream, watcher = self._channel, self._stream, self._watcher
            self._channel = self._stream = self._watcher = None
        if stream is not None:
            stream.cancel()
        if watcher is not None:
            watcher.join(timeout=5)
        if channel is not None:
            channel.close()

    def wait_for(self, predicate: Callable[[TestKubelet], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate(self)`` holds; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; devices={self.devices}")
                self._lock.wait(min(left, 0.05))

    def health(self) -> dict[str, str]:
        with self._lock:
            return {device_id: health for device_id, health, _ in self.devices}

    # -- calls into the plugin, as the kubelet makes them --------------------------------

    def _plugin(self) -> tuple[grpc.Channel, Any]:
        endpoint = self.requests[-1].endpoint
        channel = grpc.insecure_channel(f"unix:{self.plugin_dir / endpoint}")
        return channel, _DevicePluginStub(channel)

    def preferred(
        self, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        channel, stub = self._plugin()
        with channel:
            reply = stub.GetPreferredAllocation(
                deviceplugin_v1beta1_pb2.PreferredAllocationRequest(
                    container_requests=[
                        deviceplugin_v1beta1_pb2.ContainerPreferredAllocationRequest(
                            available_deviceIDs=list(available),
                            must_include_deviceIDs=list(must_include),
                            allocation_size=size,
                        )
                    ]
                ),
                timeout=10,
            )
        return list(reply.container_responses[0].deviceIDs)

    def allocate(self, ids: Sequence[str]) -> Any:
        channel, stub = self._plugin()
        with channel:
            reply = stub.Allocate(
                deviceplugin_v1beta1_pb2.AllocateRequest(
                    container_requests=[
                        deviceplugin_v1beta1_pb2.ContainerAllocateRequest(devices_ids=list(ids))
                    ]
                ),
                timeout=10,
            )
        return reply.container_responses[0]

    def pre_start(self, ids: Sequence[str]) -> None:
        channel, stub = self._plugin()
        with channel:
            stub.PreStartContainer(
                deviceplugin_v1beta1_pb2.PreStartContainerRequest(devices_ids=list(ids)),
                timeout=30,  # the kubelet's PreStartContainer deadline
            )

    # -- PodResources ---------------------------------------------------------------------

    def set_pods(self, pods: Pods) -> None:
        """What PodResources ``List`` reports from now on."""
        with self._lock:
            self._pods = {key: list(ids) for key, ids in pods.items()}

    def _pods_pb(self) -> list[Any]:
        with self._lock:
            pods = dict(self._pods)
        by_pod: dict[tuple[str, str], list[Any]] = {}
        for (namespace, name, container), ids in sorted(pods.items()):
            devices = podresources_v1_pb2.ContainerDevices(
                resource_name=self.resource, device_ids=ids
            )
            by_pod.setdefault((namespace, name), []).append(
                podresources_v1_pb2.ContainerResources(name=container, devices=[devices])
            )
        return [
            podresources_v1_pb2.PodResources(name=name, namespace=namespace, containers=containers)
            for (namespace, name), containers in by_pod.items()
        ]

    # -- lifecycle ----------------------------------------------------------------------------

    def restart(self) -> None:
        """What a kubelet restart does: every plugin socket removed, a new kubelet.sock."""
        server, pool = self._registration
        server.stop(None).wait()
        pool.shutdown()
        self._disconnect()
        for path in self.plugin_dir.iterdir():
            path.unlink()
        self._serve_registration()

    def close(self) -> None:
        for connector in self._connectors:
            connector.join(timeout=5)
        self._disconnect()
        for server, pool in [self._registration, *self._servers]:
            server.stop(None).wait()
            pool.shutdown()
