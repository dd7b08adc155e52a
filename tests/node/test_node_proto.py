"""The kubelet's gRPC APIs as we wrote them from the official definitions.

The committed code is exactly what grpc_tools.protoc makes of our .proto files; the full gRPC
method names (which the kubelet matches) and every message's fields (name, number, type) are
those of kubernetes/kubernetes ``staging/src/k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/
api.proto`` and ``.../podresources/v1/api.proto``; and the generated stubs work over a real
unix socket.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor, FileDescriptor

from gpucaas.node.proto import (
    deviceplugin_v1beta1_pb2,
    deviceplugin_v1beta1_pb2_grpc,
    podresources_v1_pb2,
    podresources_v1_pb2_grpc,
)

SRC = Path(__file__).resolve().parents[2] / "src"
PROTO_DIR = "gpucaas/node/proto"
PROTOS = ("deviceplugin_v1beta1", "podresources_v1")


@pytest.mark.parametrize("stem", PROTOS)
def test_generated_code_matches_the_proto(tmp_path: Path, stem: str) -> None:
    protoc = pytest.importorskip(
        "grpc_tools.protoc",
        reason="grpcio-tools is missing: install the dev extras (pip install -e '.[dev]')",
    )
    proto = f"{PROTO_DIR}/{stem}.proto"
    (tmp_path / proto).parent.mkdir(parents=True)
    shutil.copy(SRC / proto, tmp_path / proto)
    code = protoc.main(
        [
            "protoc",
            f"-I{tmp_path}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(tmp_path / proto),
        ]
    )
    assert code == 0
    for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
        name = f"{stem}{suffix}"
        fresh = (tmp_path / PROTO_DIR / name).read_text()
        committed = (SRC / PROTO_DIR / name).read_text()
        assert fresh == committed, (
            f"{name} is stale; regenerate: cd src && python -m grpc_tools.protoc -I. "
            f"--python_out=. --grpc_python_out=. --pyi_out=. {proto}"
        )


# --- service and method names -------------------------------------------------------------

# (full gRPC method name, request, response, server streaming), from the official api.proto.
DEVICEPLUGIN_METHODS = [
    ("/v1beta1.Registration/Register", "RegisterRequest", "Empty", False),
    ("/v1beta1.DevicePlugin/GetDevicePluginOptions", "Empty", "DevicePluginOptions", False),
    ("/v1beta1.DevicePlugin/ListAndWatch", "Empty", "ListAndWatchResponse", True),
    (
        "/v1beta1.DevicePlugin/GetPreferredAllocation",
        "PreferredAllocationRequest",
        "PreferredAllocationResponse",
        False,
    ),
    ("/v1beta1.DevicePlugin/Allocate", "AllocateRequest", "AllocateResponse", False),
    (
        "/v1beta1.DevicePlugin/PreStartContainer",
        "PreStartContainerRequest",
        "PreStartContainerResponse",
        False,
    ),
]
PODRESOURCES_METHODS = [
    ("/v1.PodResourcesLister/List", "ListPodResourcesRequest", "ListPodResourcesResponse", False),
    (
        "/v1.PodResourcesLister/GetAllocatableResources",
        "AllocatableResourcesRequest",
        "AllocatableResourcesResponse",
        False,
    ),
    ("/v1.PodResourcesLister/Get", "GetPodResourcesRequest", "GetPodResourcesResponse", False),
]
API = {
    "deviceplugin": (deviceplugin_v1beta1_pb2, deviceplugin_v1beta1_pb2_grpc, DEVICEPLUGIN_METHODS),
    "podresources": (podresources_v1_pb2, podresources_v1_pb2_grpc, PODRESOURCES_METHODS),
}


def _descriptor_methods(file: FileDescriptor) -> list[tuple[str, str, str, bool]]:
    methods = [method for service in file.services_by_name.values() for method in service.methods]
    assert not any(method.client_streaming for method in methods)
    return [
        (
            f"/{method.containing_service.full_name}/{method.name}",
            method.input_type.name,
            method.output_type.name,
            method.server_streaming,
        )
        for method in methods
    ]


@pytest.mark.parametrize("api", API)
def test_descriptors_name_the_official_methods(api: str) -> None:
    pb2, _, methods = API[api]
    file = pb2.DESCRIPTOR
    assert file.package == ("v1beta1" if api == "deviceplugin" else "v1")
    assert sorted(_descriptor_methods(file)) == sorted(methods)
    # The request/response types are this file's own messages, not the other package's.
    for service in file.services_by_name.values():
        for method in service.methods:
            assert method.input_type.file is file and method.output_type.file is file


class _RecordingChannel:
    """Stands in for a grpc.Channel: records the method paths a stub asks for."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, bool]] = []

    def _method(self, streaming: bool) -> Callable[..., None]:
        def make(path: str, **_: Any) -> None:
            self.paths.append((path, streaming))

        return make

    def __getattr__(self, kind: str) -> Callable[..., None]:
        assert kind in ("unary_unary", "unary_stream"), kind
        return self._method(kind == "unary_stream")


class _RecordingServer:
    """Stands in for a grpc.Server: records the handlers a servicer registers."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, bool]] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for name, handler in handlers.items():
            self.paths.append((f"/{service}/{name}", handler.response_streaming))


@pytest.mark.parametrize("api", API)
def test_stubs_and_servicers_use_the_official_paths(api: str) -> None:
    _, pb2_grpc, methods = API[api]
    expected = sorted((path, streaming) for path, _, _, streaming in methods)
    channel = _RecordingChannel()
    server = _RecordingServer()
    for service in {path.split("/")[1].split(".")[1] for path, *_ in methods}:
        getattr(pb2_grpc, f"{service}Stub")(channel)
        getattr(pb2_grpc, f"add_{service}Servicer_to_server")(
            getattr(pb2_grpc, f"{service}Servicer")(), server
        )
    assert sorted(channel.paths) == expected
    assert sorted(server.paths) == expected


# --- messages, field by field ---------------------------------------------------------------

# message -> field -> (number, type), written from the official api.proto files. Types:
# scalar names, "repeated X", "map<string, string>", messages by name (same package).
DEVICEPLUGIN_FIELDS: dict[str, dict[str, tuple[int, str]]] = {
    "DevicePluginOptions": {
        "pre_start_required": (1, "bool"),
        "get_preferred_allocation_available": (2, "bool"),
    },
    "RegisterRequest": {
        "version": (1, "string"),
        "endpoint": (2, "string"),
        "resource_name": (3, "string"),
        "options": (4, "DevicePluginOptions"),
    },
    "Empty": {},
    "ListAndWatchResponse": {"devices": (1, "repeated Device")},
    "TopologyInfo": {"nodes": (1, "repeated NUMANode")},
    "NUMANode": {"ID": (1, "int64")},
    "Device": {"ID": (1, "string"), "health": (2, "string"), "topology": (3, "TopologyInfo")},
    "PreStartContainerRequest": {"devices_ids": (1, "repeated string")},
    "PreStartContainerResponse": {},
    "PreferredAllocationRequest": {
        "container_requests": (1, "repeated ContainerPreferredAllocationRequest"),
    },
    "ContainerPreferredAllocationRequest": {
        "available_deviceIDs": (1, "repeated string"),
        "must_include_deviceIDs": (2, "repeated string"),
        "allocation_size": (3, "int32"),
    },
    "PreferredAllocationResponse": {
        "container_responses": (1, "repeated ContainerPreferredAllocationResponse"),
    },
    "ContainerPreferredAllocationResponse": {"deviceIDs": (1, "repeated string")},
    "AllocateRequest": {"container_requests": (1, "repeated ContainerAllocateRequest")},
    "ContainerAllocateRequest": {"devices_ids": (1, "repeated string")},
    "CDIDevice": {"name": (1, "string")},
    "AllocateResponse": {"container_responses": (1, "repeated ContainerAllocateResponse")},
    "ContainerAllocateResponse": {
        "envs": (1, "map<string, string>"),
        "mounts": (2, "repeated Mount"),
        "devices": (3, "repeated DeviceSpec"),
        "annotations": (4, "map<string, string>"),
        "cdi_devices": (5, "repeated CDIDevice"),
    },
    "Mount": {
        "container_path": (1, "string"),
        "host_path": (2, "string"),
        "read_only": (3, "bool"),
    },
    "DeviceSpec": {
        "container_path": (1, "string"),
        "host_path": (2, "string"),
        "permissions": (3, "string"),
    },
}
PODRESOURCES_FIELDS: dict[str, dict[str, tuple[int, str]]] = {
    "AllocatableResourcesRequest": {},
    "AllocatableResourcesResponse": {
        "devices": (1, "repeated ContainerDevices"),
        "cpu_ids": (2, "repeated int64"),
        "memory": (3, "repeated ContainerMemory"),
    },
    "ListPodResourcesRequest": {},
    "ListPodResourcesResponse": {"pod_resources": (1, "repeated PodResources")},
    "PodResources": {
        "name": (1, "string"),
        "namespace": (2, "string"),
        "containers": (3, "repeated ContainerResources"),
    },
    "ContainerResources": {
        "name": (1, "string"),
        "devices": (2, "repeated ContainerDevices"),
        "cpu_ids": (3, "repeated int64"),
        "memory": (4, "repeated ContainerMemory"),
        "dynamic_resources": (5, "repeated DynamicResource"),
    },
    "ContainerMemory": {
        "memory_type": (1, "string"),
        "size": (2, "uint64"),
        "topology": (3, "TopologyInfo"),
    },
    "ContainerDevices": {
        "resource_name": (1, "string"),
        "device_ids": (2, "repeated string"),
        "topology": (3, "TopologyInfo"),
    },
    "TopologyInfo": {"nodes": (1, "repeated NUMANode")},
    "NUMANode": {"ID": (1, "int64")},
    # Field 1 (class_name) was removed upstream in 1.31.
    "DynamicResource": {
        "claim_name": (2, "string"),
        "claim_namespace": (3, "string"),
        "claim_resources": (4, "repeated ClaimResource"),
    },
    "ClaimResource": {
        "cdi_devices": (1, "repeated CDIDevice"),
        "driver_name": (2, "string"),
        "pool_name": (3, "string"),
        "device_name": (4, "string"),
    },
    "CDIDevice": {"name": (1, "string")},
    "GetPodResourcesRequest": {"pod_name": (1, "string"), "pod_namespace": (2, "string")},
    "GetPodResourcesResponse": {"pod_resources": (1, "PodResources")},
}
FIELDS = {"deviceplugin": DEVICEPLUGIN_FIELDS, "podresources": PODRESOURCES_FIELDS}

_SCALARS = {
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
}


def _type_of(field: FieldDescriptor, package: str) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        message = field.message_type
        if message.GetOptions().map_entry:
            key, value = (_type_of(message.fields_by_name[n], package) for n in ("key", "value"))
            return f"map<{key}, {value}>"
        assert message.full_name == f"{package}.{message.name}", message.full_name
        name = message.name
    else:
        name = _SCALARS[field.type]
    return f"repeated {name}" if field.is_repeated else name


@pytest.mark.parametrize("api", FIELDS)
def test_messages_have_the_official_fields(api: str) -> None:
    file = API[api][0].DESCRIPTOR
    actual = {
        message.name: {
            field.name: (field.number, _type_of(field, file.package)) for field in message.fields
        }
        for message in file.message_types_by_name.values()
    }
    assert actual == FIELDS[api]


# --- a round trip over a real unix socket ---------------------------------------------------


class _Kubelet(deviceplugin_v1beta1_pb2_grpc.RegistrationServicer):
    def __init__(self) -> None:
        self.requests: list[deviceplugin_v1beta1_pb2.RegisterRequest] = []

    def Register(
        self, request: deviceplugin_v1beta1_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> deviceplugin_v1beta1_pb2.Empty:
        self.requests.append(request)
        if request.version != "v1beta1":
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"unsupported version {request.version}"
            )
        return deviceplugin_v1beta1_pb2.Empty()


class _Plugin(deviceplugin_v1beta1_pb2_grpc.DevicePluginServicer):
    def ListAndWatch(
        self, request: deviceplugin_v1beta1_pb2.Empty, context: grpc.ServicerContext
    ) -> Iterator[deviceplugin_v1beta1_pb2.ListAndWatchResponse]:
        topology = deviceplugin_v1beta1_pb2.TopologyInfo(
            nodes=[deviceplugin_v1beta1_pb2.NUMANode(ID=1)]
        )
        for health in ("Healthy", "Unhealthy"):
            yield deviceplugin_v1beta1_pb2.ListAndWatchResponse(
                devices=[deviceplugin_v1beta1_pb2.Device(ID="3", health=health, topology=topology)]
            )


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # A short path: unix socket paths are limited to 107 bytes, pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="gpucaas-") as name:
        yield Path(name)


def _serve(
    path: Path, add: Callable[[grpc.Server], None]
) -> tuple[grpc.Server, ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool)
    add(server)
    assert server.add_insecure_port(f"unix:{path}") != 0
    server.start()
    return server, pool


def test_register_and_list_and_watch_over_unix_sockets(socket_dir: Path) -> None:
    kubelet = _Kubelet()
    plugin = _Plugin()
    kubelet_server, kubelet_pool = _serve(
        socket_dir / "kubelet.sock",
        lambda s: deviceplugin_v1beta1_pb2_grpc.add_RegistrationServicer_to_server(kubelet, s),
    )
    plugin_server, plugin_pool = _serve(
        socket_dir / "gpucaas.sock",
        lambda s: deviceplugin_v1beta1_pb2_grpc.add_DevicePluginServicer_to_server(plugin, s),
    )
    try:
        with grpc.insecure_channel(f"unix:{socket_dir / 'kubelet.sock'}") as channel:
            registration = deviceplugin_v1beta1_pb2_grpc.RegistrationStub(channel)
            options = deviceplugin_v1beta1_pb2.DevicePluginOptions(
                pre_start_required=True, get_preferred_allocation_available=True
            )
            reply = registration.Register(
                deviceplugin_v1beta1_pb2.RegisterRequest(
                    version="v1beta1",
                    endpoint="gpucaas.sock",
                    resource_name="nvidia.com/gpu",
                    options=options,
                ),
                timeout=10,
            )
            assert reply == deviceplugin_v1beta1_pb2.Empty()
            with pytest.raises(grpc.RpcError) as refused:
                registration.Register(
                    deviceplugin_v1beta1_pb2.RegisterRequest(version="v1alpha"), timeout=10
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        first = kubelet.requests[0]
        assert (first.version, first.endpoint, first.resource_name) == (
            "v1beta1",
            "gpucaas.sock",
            "nvidia.com/gpu",
        )
        assert first.options.pre_start_required and first.options.get_preferred_allocation_available

        # The kubelet's side: it dials the endpoint it was given and watches the devices.
        with grpc.insecure_channel(f"unix:{socket_dir / first.endpoint}") as channel:
            stream = deviceplugin_v1beta1_pb2_grpc.DevicePluginStub(channel).ListAndWatch(
                deviceplugin_v1beta1_pb2.Empty(), timeout=10
            )
            seen = [
                [(d.ID, d.health, [n.ID for n in d.topology.nodes]) for d in response.devices]
                for response in stream
            ]
        assert seen == [[("3", "Healthy", [1])], [("3", "Unhealthy", [1])]]
    finally:
        for server, pool in ((plugin_server, plugin_pool), (kubelet_server, kubelet_pool)):
            server.stop(None).wait()
            pool.shutdown()


def test_pod_resources_get_over_a_unix_socket(socket_dir: Path) -> None:
    class Lister(podresources_v1_pb2_grpc.PodResourcesListerServicer):
        def Get(
            self, request: podresources_v1_pb2.GetPodResourcesRequest, context: grpc.ServicerContext
        ) -> podresources_v1_pb2.GetPodResourcesResponse:
            devices = podresources_v1_pb2.ContainerDevices(
                resource_name="nvidia.com/gpu", device_ids=["0", "1"]
            )
            container = podresources_v1_pb2.ContainerResources(name="main", devices=[devices])
            return podresources_v1_pb2.GetPodResourcesResponse(
                pod_resources=podresources_v1_pb2.PodResources(
                    name=request.pod_name, namespace=request.pod_namespace, containers=[container]
                )
            )

    server, pool = _serve(
        socket_dir / "kubelet.sock",
        lambda s: podresources_v1_pb2_grpc.add_PodResourcesListerServicer_to_server(Lister(), s),
    )
    try:
        with grpc.insecure_channel(f"unix:{socket_dir / 'kubelet.sock'}") as channel:
            reply = podresources_v1_pb2_grpc.PodResourcesListerStub(channel).Get(
                podresources_v1_pb2.GetPodResourcesRequest(pod_name="vm", pod_namespace="t1"),
                timeout=10,
            )
    finally:
        server.stop(None).wait()
        pool.shutdown()
    pod = reply.pod_resources
    assert (pod.name, pod.namespace) == ("vm", "t1")
    assert [(d.resource_name, list(d.device_ids)) for d in pod.containers[0].devices] == [
        ("nvidia.com/gpu", ["0", "1"])
    ]


def test_the_two_packages_do_not_share_messages() -> None:
    """Both files define TopologyInfo, NUMANode and CDIDevice; each in its own package."""
    modules: tuple[ModuleType, ...] = (deviceplugin_v1beta1_pb2, podresources_v1_pb2)
    names = [m.DESCRIPTOR.message_types_by_name["CDIDevice"].full_name for m in modules]
    assert names == ["v1beta1.CDIDevice", "v1.CDIDevice"]
