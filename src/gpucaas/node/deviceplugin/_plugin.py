"""The partition-aware kubelet device plugin (device plugin API v1beta1): a thin gRPC service.

Why this module exists: the public VFIO device plugins know nothing of NVSwitch partitions.
They hand out any GPU set, never activate a partition before the VM starts and never learn
that a pod ended. This plugin announces the node's GPUs to the kubelet and:

* answers GetPreferredAllocation with the best free partition of the requested size, chosen
  by the same buddy best-fit (:meth:`BoardModel.best_partition`) the control plane uses
  (:class:`PartitionChoice`);
* refuses in Allocate any GPU set that is not exactly one partition;
* activates the partition through the fabric (the fm-controller) in PreStartContainer
  (:class:`PartitionKeeper`);
* releases partitions whose pods are gone, seen through the kubelet's PodResources API
  (an injected :class:`PodPartitions`, by default :class:`PodResourcesWatcher`), since the
  device plugin API has no "free" call; on start it adopts what running pods hold and
  deactivates orphans;
* announces health changes from a :class:`HealthTracker` over its health check.

The decisions live in those parts, each testable alone; this class only serves them over
gRPC and runs their loops. What it refuses to do: guess module IDs (the GPUs come from
:func:`kubelet_gpus`), deactivate a partition that a running pod holds, or hand out a set the
fabric could not activate.

The plugin's lifecycle follows NVIDIA's k8s-device-plugin: :meth:`DevicePlugin.start` serves
gRPC on a fresh socket, dials itself, registers with the kubelet, then starts the health,
release and kubelet-watch loops; :meth:`DevicePlugin.stop` is idempotent and removes the
socket. Partitions stay active across a stop: the pods using them are still running.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any, NoReturn

import grpc

from gpucaas.cdi import VFIO_CONTAINER, qualified_name
from gpucaas.errors import Conflict, GpucaasError, InvalidRequest, MisuseError
from gpucaas.fabric import FabricManager
from gpucaas.node import KubeletGpu, PartitionChoice
from gpucaas.node.health import HealthTracker
from gpucaas.topology import BoardModel, Partition

from ..proto import deviceplugin_v1beta1_pb2 as dp
from ..proto import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from ._api import PodPartitions
from ._errors import DevicePluginError
from ._metrics import PluginMetrics
from ._partitions import PartitionKeeper
from ._podresources import PodResourcesWatcher

log = logging.getLogger("gpucaas.device-plugin")

API_VERSION = "v1beta1"
"""The device plugin API version sent in RegisterRequest."""

KUBELET_DIR = Path("/var/lib/kubelet")
"""The kubelet's root directory; ``device-plugins/`` and ``pod-resources/`` live below it."""

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"

PARTITION_ANNOTATION = "gpucaas.io/partition-id"
"""Annotation on the container (passed to the runtime) naming the partition it got."""

_RPC_TIMEOUT_S = 5.0


class PluginState(enum.Enum):
    """Where a :class:`DevicePlugin` is in its life."""

    NEW = "new"
    """Built; nothing served, nothing registered."""
    SERVING = "serving"
    """gRPC served on the socket, registered (unless told not to), loops running."""
    STOPPED = "stopped"
    """Stopped, socket removed. A stopped plugin is not restarted: build a new one."""


def socket_name(resource: str) -> str:
    """The plugin's socket file name for a resource: ``gpucaas-nvidia-com-gpu.sock``."""
    return f"gpucaas-{resource.replace('/', '-').replace('.', '-')}.sock"


class DevicePlugin(dp_grpc.DevicePluginServicer):
    """The kubelet device plugin for one board's GPUs.

    Parameters:
        gpus: this node's GPUs (:func:`kubelet_gpus`), device IDs "0".."7" by module ID.
        model: the board model whose partition table the fabric serves.
        fabric: the board's fabric (a :class:`RemoteFabric` to the fm-controller).
        kubelet_dir: the kubelet's root directory.
        resource: the extended resource name (also the CDI kind).
        health: returns whether a GPU is usable (e.g. :class:`NodeHealth`); polled every
            ``health_interval_s``. None: every GPU is always healthy.
        health_interval_s: how often health, PodResources and kubelet.sock are polled.
        release_grace_s: a partition activated this recently is not released even if no
            pod lists it yet.
        report: called with the module IDs of the unhealthy GPUs whenever that set changes
            (first on the first health pass; again on the next pass if it raised), e.g. a
            :class:`NodeAnnotationReporter` that tells the control plane. None: nobody.
        register: False skips registration with the kubelet (a test seam).
        metrics: where to count; a fresh :class:`PluginMetrics` when None.
        watcher: which partitions live pods hold; None: a :class:`PodResourcesWatcher` on
            ``<kubelet_dir>/pod-resources/kubelet.sock``.
    """

    def __init__(
        self,
        gpus: Sequence[KubeletGpu],
        model: BoardModel,
        fabric: FabricManager,
        *,
        kubelet_dir: Path = KUBELET_DIR,
        resource: str = "nvidia.com/gpu",
        health: Callable[[KubeletGpu], bool] | None = None,
        health_interval_s: float = 0.5,
        release_grace_s: float = 10.0,
        register: bool = True,
        metrics: PluginMetrics | None = None,
        report: Callable[[frozenset[int]], None] | None = None,
        watcher: PodPartitions | None = None,
    ) -> None:
        qualified_name(resource, "0")  # refuse a resource name that is no CDI kind, now
        self.gpus = tuple(gpus)  # in module-ID order, as kubelet_gpus numbers them
        self.model = model
        self.fabric = fabric
        self.resource = resource
        self.kubelet_dir = Path(kubelet_dir)
        self.socket = self.kubelet_dir / "device-plugins" / socket_name(resource)
        self.kubelet_socket = self.kubelet_dir / "device-plugins" / "kubelet.sock"
        self.state = PluginState.NEW
        self.metrics = metrics if metrics is not None else PluginMetrics()
        self.metrics.healthy.set(len(self.gpus))
        self.watcher: PodPartitions = (
            watcher
            if watcher is not None
            else PodResourcesWatcher(
                self.kubelet_dir / "pod-resources" / "kubelet.sock",
                resource,
                model,
                {g.device_id: int(g.module_id) for g in self.gpus},
            )
        )
        self.choice = PartitionChoice(self.gpus, model, resource)
        self.health = HealthTracker(self.gpus, health, report)
        self.partitions = PartitionKeeper(
            model, fabric, self.watcher, grace_s=release_grace_s, metrics=self.metrics
        )
        self._interval = health_interval_s
        self._register = register
        self._lifecycle = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self._kubelet_identity: tuple[int, int] | None = None
        self.registered = False
        """True while registered with the kubelet (False until the first registration, and
        from a kubelet restart until the re-registration)."""

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Serve, dial ourselves, reconcile the fabric with live pods, register, and start
        the loops. Raises :class:`DevicePluginError` (the server is stopped again) and
        :class:`MisuseError` when not NEW."""
        with self._lifecycle:
            if self.state is not PluginState.NEW:
                raise MisuseError(f"device plugin is {self.state.value}; build a new one")
            self._serve()
            try:
                self.partitions.reconcile()
                if self._register:
                    self._kubelet_identity = _identity(self.kubelet_socket)
                    self.register()
            except BaseException:
                self._server.stop(None).wait()
                self.socket.unlink(missing_ok=True)
                raise
            self.state = PluginState.SERVING
            for name, loop in (
                ("health", self._health_loop),
                ("release", self._release_loop),
                ("kubelet-watch", self._watch_kubelet),
            ):
                if name == "kubelet-watch" and not self._register:
                    continue
                thread = threading.Thread(target=loop, name=f"device-plugin-{name}", daemon=True)
                thread.start()
                self._threads.append(thread)
            log.info(
                "device plugin serving",
                extra={"socket": str(self.socket), "resource": self.resource},
            )

    def stop(self) -> None:
        """Stop serving and remove the socket. Idempotent; partitions stay as they are."""
        with self._lifecycle:
            if self.state is PluginState.STOPPED:
                return
            self.state = PluginState.STOPPED
            self._stop.set()
        self.health.wake()
        for thread in self._threads:  # outside the lock: the kubelet watch may want it
            thread.join(timeout=5)
        with self._lifecycle:
            if self._server is not None:
                self._server.stop(None).wait()
            self.socket.unlink(missing_ok=True)
        log.info("device plugin stopped", extra={"socket": str(self.socket)})

    def _serve(self) -> None:
        try:
            self.socket.parent.mkdir(parents=True, exist_ok=True)
            self.socket.unlink(missing_ok=True)  # a stale socket from a killed plugin
        except OSError as exc:
            raise DevicePluginError(
                f"cannot prepare {self.socket}", str(exc), "check the kubelet directory mount"
            ) from exc
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        dp_grpc.add_DevicePluginServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        try:
            bound = server.add_insecure_port(f"unix:{self.socket}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise DevicePluginError(
                f"cannot listen on {self.socket}", "bind failed", "check the directory's mode"
            )
        server.start()
        self._server = server
        try:
            with grpc.insecure_channel(f"unix:{self.socket}") as channel:
                stub = dp_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]
                stub.GetDevicePluginOptions(dp.Empty(), timeout=_RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            server.stop(None).wait()
            raise DevicePluginError(
                f"device plugin at {self.socket} does not answer itself",
                exc.code().name,
                "check the socket directory",
            ) from exc

    def ready(self) -> bool:
        """Serving, and registered with the kubelet (when registration is on)."""
        return self.state is PluginState.SERVING and (self.registered or not self._register)

    def status(self) -> dict[str, Any]:
        """What /healthz reports."""
        healthy = self.health.healthy()
        return {
            "ok": self.ready(),
            "state": self.state.value,
            "registered": self.registered,
            "resource": self.resource,
            "socket": str(self.socket),
            "healthy_devices": [g.device_id for g in self.gpus if healthy[g.device_id]],
            "unhealthy_devices": [g.device_id for g in self.gpus if not healthy[g.device_id]],
            "partitions": self.partitions.owned_now(),
        }

    def register(self) -> None:
        """Register with the kubelet. Raises :class:`DevicePluginError`."""
        request = dp.RegisterRequest(
            version=API_VERSION,
            endpoint=self.socket.name,
            resource_name=self.resource,
            options=self._options(),
        )
        try:
            with grpc.insecure_channel(f"unix:{self.kubelet_socket}") as channel:
                stub = dp_grpc.RegistrationStub(channel)  # type: ignore[no-untyped-call]
                stub.Register(request, timeout=_RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            self.metrics.registrations.labels("error").inc()
            raise DevicePluginError(
                f"registration with the kubelet at {self.kubelet_socket} failed",
                f"{exc.code().name}: {exc.details()}",
                "is the kubelet running and --kubelet-dir right?",
            ) from exc
        self.metrics.registrations.labels("ok").inc()
        self.registered = True
        log.info("registered with the kubelet", extra={"resource": self.resource})

    def _watch_kubelet(self) -> None:
        """Re-register when kubelet.sock is re-created (the kubelet restarted); serve anew
        first when our own socket was removed (a restarting kubelet empties the directory)."""
        while not self._stop.wait(self._interval):
            identity = _identity(self.kubelet_socket)
            own_missing = not self.socket.exists()
            if identity is None or (identity == self._kubelet_identity and not own_missing):
                if identity is None:
                    self.registered = False  # the kubelet is gone (restarting)
                continue
            self.registered = False
            try:
                with self._lifecycle:
                    if self._stop.is_set():
                        return
                    if own_missing:
                        self._server.stop(None).wait()
                        self._serve()
                    self.register()
                self._kubelet_identity = identity
            except GpucaasError as exc:
                log.warning("re-registration failed; retrying", extra={"error": str(exc)})

    def _options(self) -> Any:
        return dp.DevicePluginOptions(
            pre_start_required=True, get_preferred_allocation_available=True
        )

    # -- the loops over the parts --------------------------------------------------------

    def check_health(self) -> bool:
        """Poll the health check once; True when some GPU changed (and was announced)."""
        changes = self.health.poll()
        for _, ok in changes:
            self.metrics.health_transitions.labels(HEALTHY if ok else UNHEALTHY).inc()
        self.metrics.healthy.set(sum(self.health.healthy().values()))
        return bool(changes)

    def report_health(self) -> bool:
        """Report the unhealthy module IDs if they changed since the last success; True when
        reported."""
        reported = self.health.report()
        if reported is not None:
            self.metrics.reports.labels("ok" if reported else "error").inc()
        return bool(reported)

    def unhealthy_modules(self) -> frozenset[int]:
        """Module IDs of the GPUs the last health pass found unhealthy."""
        return self.health.unhealthy_modules()

    def owned(self) -> frozenset[int]:
        """The partitions this plugin activated or adopted and has not released."""
        return self.partitions.owned()

    def _health_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.check_health()
            self.report_health()

    def _release_loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.partitions.release_unheld()
            except GpucaasError as exc:
                log.warning("release pass failed; retrying", extra={"error": str(exc)})

    # -- DevicePlugin service ------------------------------------------------------------

    def GetDevicePluginOptions(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._options()

    def ListAndWatch(self, request: Any, context: Any) -> Iterator[Any]:  # noqa: N802
        version, healthy = self.health.snapshot()
        yield self._device_list(healthy)
        while not self._stop.is_set() and context.is_active():
            now = self.health.wait(version, timeout=0.5)
            if self._stop.is_set() or now == version:
                continue
            version, healthy = self.health.snapshot()
            yield self._device_list(healthy)

    def GetPreferredAllocation(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self._counted("preferred", context):
            responses = []
            for container in request.container_requests:
                try:
                    partition = self.choice.preferred(
                        container.available_deviceIDs,
                        container.must_include_deviceIDs,
                        container.allocation_size,
                    )
                except GpucaasError as exc:
                    _abort(context, exc)
                responses.append(
                    dp.ContainerPreferredAllocationResponse(
                        deviceIDs=self.choice.device_ids(partition)
                    )
                )
            return dp.PreferredAllocationResponse(container_responses=responses)

    def Allocate(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self._counted("allocate", context), self._timed("allocate"):
            responses = []
            for container in request.container_requests:
                try:
                    partition = self.choice.partition_of(container.devices_ids)
                except GpucaasError as exc:
                    _abort(context, exc)
                responses.append(self._allocate_response(partition))
            return dp.AllocateResponse(container_responses=responses)

    def PreStartContainer(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self._counted("prestart", context), self._timed("prestart"):
            try:
                self.partitions.activate(self.choice.partition_of(request.devices_ids))
            except GpucaasError as exc:
                _abort(context, exc)
            return dp.PreStartContainerResponse()

    @contextlib.contextmanager
    def _counted(self, rpc: str, context: Any) -> Iterator[None]:
        result = "error"
        try:
            yield
            result = "ok"
        except Exception as exc:
            result = getattr(exc, "gpucaas_result", "error")
            raise
        finally:
            self.metrics.calls.labels(rpc, result).inc()

    @contextlib.contextmanager
    def _timed(self, rpc: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.metrics.latency.labels(rpc).observe(time.perf_counter() - started)

    def _device_list(self, healthy: dict[str, bool]) -> Any:
        devices = []
        for gpu in self.gpus:
            topology = (
                dp.TopologyInfo(nodes=[dp.NUMANode(ID=gpu.numa_node)])
                if gpu.numa_node is not None
                else None
            )
            devices.append(
                dp.Device(
                    ID=gpu.device_id,
                    health=HEALTHY if healthy[gpu.device_id] else UNHEALTHY,
                    topology=topology,
                )
            )
        return dp.ListAndWatchResponse(devices=devices)

    def _allocate_response(self, partition: Partition) -> Any:
        gpus = self.choice.gpus(partition)
        devices = [
            dp.DeviceSpec(
                container_path=f"/dev/vfio/{g.iommu_group}",
                host_path=f"/dev/vfio/{g.iommu_group}",
                permissions="rwm",
            )
            for g in gpus
            if g.iommu_group is not None
        ]
        if devices:
            devices.append(
                dp.DeviceSpec(
                    container_path=VFIO_CONTAINER, host_path=VFIO_CONTAINER, permissions="rwm"
                )
            )
        return dp.ContainerAllocateResponse(
            envs={
                "GPUCAAS_PARTITION_ID": str(partition.id),
                "GPUCAAS_MODULE_IDS": ",".join(str(m) for m in partition.module_ids),
                "GPUCAAS_BDFS": ",".join(g.bdf for g in gpus),
            },
            annotations={PARTITION_ANNOTATION: str(partition.id)},
            devices=devices,
            cdi_devices=[
                dp.CDIDevice(name=qualified_name(self.resource, g.device_id)) for g in gpus
            ],
        )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_ctime_ns)  # an inode number alone is reused at once


def _abort(context: Any, exc: GpucaasError) -> NoReturn:
    if isinstance(exc, InvalidRequest):
        code = grpc.StatusCode.INVALID_ARGUMENT
    elif isinstance(exc, Conflict):
        code = grpc.StatusCode.FAILED_PRECONDITION
    else:
        code = grpc.StatusCode.UNAVAILABLE
    log.warning("request refused", extra={"code": code.name, "error": str(exc)})
    try:
        context.abort(code, str(exc))
    except Exception as aborted:
        aborted.gpucaas_result = code.name.lower()  # type: ignore[attr-defined]
        raise
    raise AssertionError("context.abort returned")  # pragma: no cover
