"""The partition-aware kubelet device plugin (device plugin API v1beta1).

Why this module exists: the public VFIO device plugins know nothing of NVSwitch partitions.
They hand out any GPU set, never activate a partition before the VM starts and never learn
that a pod ended. This plugin announces the node's GPUs to the kubelet and:

* answers GetPreferredAllocation with the best free partition of the requested size, chosen
  by the same buddy best-fit (:meth:`BoardModel.best_partition`) the control plane uses;
* refuses in Allocate any GPU set that is not exactly one partition;
* activates the partition through the fabric (the fm-controller) in PreStartContainer;
* releases partitions whose pods are gone, seen through the kubelet's PodResources API
  (:class:`PodResourcesWatcher`), since the device plugin API has no "free" call; on start
  it adopts what running pods hold and deactivates orphans.

What it refuses to do: guess module IDs (the GPUs come from :func:`kubelet_gpus`), deactivate
a partition that a running pod holds, or hand out a set the fabric could not activate.

The plugin's lifecycle follows NVIDIA's k8s-device-plugin: :meth:`DevicePlugin.start` serves
gRPC on a fresh socket, dials itself, registers with the kubelet, then starts the health,
release and kubelet-watch loops; :meth:`DevicePlugin.stop` is idempotent and removes the
socket. Partitions stay active across a stop: the pods using them are still running.

Observability: :class:`PluginMetrics` (a registry of its own: calls by result, fabric
operations, health transitions, registrations, healthy devices, Allocate/PreStart latency)
and :class:`HttpEndpoint` (``/healthz``: 200 once serving and registered, else 503;
``/metrics``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any, NoReturn

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gpucaas._health import health_server
from gpucaas.errors import Conflict, GpucaasError, InvalidRequest, MisuseError, Unavailable
from gpucaas.fabric import FabricManager, PartitionNotActive
from gpucaas.topology import (
    BoardModel,
    NotAPartition,
    Partition,
    SizeOutOfRange,
    format_module_ids,
    mask_of,
)

from ._cdi import VFIO_CONTAINER, qualified_name
from ._gpus import KubeletGpu
from .proto import deviceplugin_v1beta1_pb2 as dp
from .proto import deviceplugin_v1beta1_pb2_grpc as dp_grpc
from .proto import podresources_v1_pb2 as pr
from .proto import podresources_v1_pb2_grpc as pr_grpc

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


class DevicePluginError(Unavailable):
    """The plugin could not start: its socket or the kubelet's registration failed."""

    def __init__(self, what: str, reason: str, todo: str) -> None:
        super().__init__(what, reason, todo)
        self.what, self.reason, self.todo = what, reason, todo

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}; {self.todo}"


class PartitionHeld(Conflict):
    """A partition cannot be activated: an overlapping one is active and a running pod
    holds it."""

    def __init__(self, partition: Partition, holder: Partition) -> None:
        super().__init__(int(partition.id), int(holder.id))
        self.partition, self.holder = partition, holder

    def __str__(self) -> str:
        return (
            f"cannot activate {self.partition}: it overlaps active {self.holder}, which a "
            f"running pod holds; wait for that pod to end (the kubelet should not have offered "
            f"these GPUs)"
        )


class PluginMetrics:
    """Prometheus metrics of one device plugin, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "gpucaas_device_plugin_calls_total",
            "Device plugin RPCs (allocate, preferred, prestart) by result",
            ["rpc", "result"],
            registry=self.registry,
        )
        self.fabric_ops = Counter(
            "gpucaas_device_plugin_fabric_operations_total",
            "Partition activations and deactivations by result",
            ["op", "result"],
            registry=self.registry,
        )
        self.health_transitions = Counter(
            "gpucaas_device_plugin_health_transitions_total",
            "GPU health changes, by the state changed to",
            ["health"],
            registry=self.registry,
        )
        self.reports = Counter(
            "gpucaas_device_plugin_health_reports_total",
            "Reports of the unhealthy GPUs to the control plane (node annotation) by result",
            ["result"],
            registry=self.registry,
        )
        self.registrations = Counter(
            "gpucaas_device_plugin_registrations_total",
            "Registrations with the kubelet by result",
            ["result"],
            registry=self.registry,
        )
        self.healthy = Gauge(
            "gpucaas_device_plugin_devices_healthy",
            "GPUs announced Healthy to the kubelet",
            registry=self.registry,
        )
        self.latency = Histogram(
            "gpucaas_device_plugin_rpc_seconds",
            "Latency of Allocate and PreStartContainer",
            ["rpc"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return bytes(generate_latest(self.registry))


def socket_name(resource: str) -> str:
    """The plugin's socket file name for a resource: ``gpucaas-nvidia-com-gpu.sock``."""
    return f"gpucaas-{resource.replace('/', '-').replace('.', '-')}.sock"


class PodResourcesWatcher:
    """Which partitions live pods hold, from the kubelet's PodResources v1 ``List``.

    Parameters:
        socket: the PodResources socket (``<kubelet-dir>/pod-resources/kubelet.sock``).
        resource: our extended resource name; other resources' devices are ignored.
        model: the board model, to turn device sets into partitions.
        module_of: device ID → module ID of this node's GPUs.
    """

    def __init__(
        self, socket: Path, resource: str, model: BoardModel, module_of: dict[str, int]
    ) -> None:
        self.socket = socket
        self.resource = resource
        self.model = model
        self._module_of = module_of

    def held(self) -> frozenset[int]:
        """The partition ids that containers of live pods hold. Raises :class:`Unavailable`
        when the kubelet does not answer (callers then release nothing)."""
        try:
            with grpc.insecure_channel(f"unix:{self.socket}") as channel:
                stub = pr_grpc.PodResourcesListerStub(channel)  # type: ignore[no-untyped-call]
                reply = stub.List(pr.ListPodResourcesRequest(), timeout=_RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise Unavailable(
                f"kubelet PodResources at {self.socket} did not answer: {exc.code().name}"
            ) from exc
        held: set[int] = set()
        for pod in reply.pod_resources:
            for container in pod.containers:
                for devices in container.devices:
                    if devices.resource_name != self.resource or not devices.device_ids:
                        continue
                    modules = [self._module_of.get(d, 0) for d in devices.device_ids]
                    try:
                        held.add(int(self.model.partition_for(modules).id))
                    except NotAPartition:
                        log.warning(
                            "a container holds GPUs that are not one partition",
                            extra={
                                "pod": f"{pod.namespace}/{pod.name}",
                                "container": container.name,
                                "devices": list(devices.device_ids),
                            },
                        )
        return frozenset(held)


class DevicePlugin(dp_grpc.DevicePluginServicer):
    """The kubelet device plugin for one board's GPUs.

    Parameters:
        gpus: this node's GPUs (:func:`kubelet_gpus`), device IDs "0".."7" by module ID.
        model: the board model whose partition table the fabric serves.
        fabric: the board's fabric (a :class:`RemoteFabric` to the fm-controller).
        kubelet_dir: the kubelet's root directory.
        resource: the extended resource name (also the CDI kind).
        health: returns whether a GPU is usable; polled every ``health_interval_s``.
            None: every GPU is always healthy.
        health_interval_s: how often health, PodResources and kubelet.sock are polled.
        release_grace_s: a partition activated this recently is not released even if no
            pod lists it yet.
        report: called with the module IDs of the unhealthy GPUs whenever that set changes
            (first on the first health pass; again on the next pass if it raised), e.g. a
            :class:`NodeAnnotationReporter` that tells the control plane. None: nobody.
        register: False skips registration with the kubelet (a test seam).
        metrics: where to count; a fresh :class:`PluginMetrics` when None.
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
    ) -> None:
        qualified_name(resource, "0")  # refuse a resource name that is no CDI kind, now
        self.gpus = tuple(gpus)
        self.model = model
        self.fabric = fabric
        self.resource = resource
        self.kubelet_dir = Path(kubelet_dir)
        self.socket = self.kubelet_dir / "device-plugins" / socket_name(resource)
        self.kubelet_socket = self.kubelet_dir / "device-plugins" / "kubelet.sock"
        self.state = PluginState.NEW
        self._by_id = {g.device_id: g for g in self.gpus}
        self._by_module = {int(g.module_id): g for g in self.gpus}
        self._health = health
        self._interval = health_interval_s
        self._grace = release_grace_s
        self._register = register
        self.watcher = PodResourcesWatcher(
            self.kubelet_dir / "pod-resources" / "kubelet.sock",
            resource,
            model,
            {g.device_id: int(g.module_id) for g in self.gpus},
        )
        self._healthy = {g.device_id: True for g in self.gpus}
        self._report = report
        self._reported: frozenset[int] | None = None
        self._report_error: str | None = None
        self._changed = threading.Condition()
        self._version = 0
        self._fabric_lock = threading.Lock()  # one fabric call at a time, as FM wants
        self._owned: dict[int, float] = {}  # partitions we activated or adopted → when
        self._lifecycle = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self._kubelet_identity: tuple[int, int] | None = None
        self.metrics = metrics if metrics is not None else PluginMetrics()
        self.metrics.healthy.set(len(self.gpus))
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
                self.reconcile_on_start()
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
        with self._changed:
            self._changed.notify_all()
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
        return {
            "ok": self.ready(),
            "state": self.state.value,
            "registered": self.registered,
            "resource": self.resource,
            "socket": str(self.socket),
            "healthy_devices": sorted((d for d, ok in self._healthy.items() if ok), key=_id_order),
            "unhealthy_devices": sorted(
                (d for d, ok in self._healthy.items() if not ok), key=_id_order
            ),
            "partitions": sorted(self._owned.copy()),  # copy: a fabric call may change it
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

    # -- health --------------------------------------------------------------------------

    def _device_list(self) -> Any:
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
                    health=HEALTHY if self._healthy[gpu.device_id] else UNHEALTHY,
                    topology=topology,
                )
            )
        return dp.ListAndWatchResponse(devices=devices)

    def check_health(self) -> bool:
        """Poll the health callable once; True when some GPU changed (and was announced)."""
        if self._health is None:
            return False
        changed = False
        for gpu in self.gpus:
            try:
                ok = bool(self._health(gpu))
            except Exception:  # noqa: BLE001 - a failing check means an unhealthy GPU
                log.exception("health check failed", extra={"device": gpu.device_id})
                ok = False
            if ok != self._healthy[gpu.device_id]:
                self.metrics.health_transitions.labels(HEALTHY if ok else UNHEALTHY).inc()
                log.warning(
                    "GPU health changed",
                    extra={
                        "device": gpu.device_id,
                        "module_id": gpu.module_id,
                        "bdf": gpu.bdf,
                        "health": HEALTHY if ok else UNHEALTHY,
                    },
                )
                changed = True
            with self._changed:
                self._healthy[gpu.device_id] = ok
        self.metrics.healthy.set(sum(self._healthy.values()))
        if changed:
            with self._changed:
                self._version += 1
                self._changed.notify_all()
        return changed

    def unhealthy_modules(self) -> frozenset[int]:
        """Module IDs of the GPUs the last health pass found unhealthy."""
        with self._changed:
            return frozenset(int(g.module_id) for g in self.gpus if not self._healthy[g.device_id])

    def report_health(self) -> bool:
        """Hand the unhealthy module IDs to ``report`` if they changed since it last
        succeeded; True when it was called and succeeded."""
        if self._report is None:
            return False
        unhealthy = self.unhealthy_modules()
        if unhealthy == self._reported:
            return False
        try:
            self._report(unhealthy)
        except Exception as exc:  # noqa: BLE001 - retried on the next pass
            self.metrics.reports.labels("error").inc()
            if str(exc) != self._report_error:  # once per distinct error, not every pass
                self._report_error = str(exc)
                log.warning(
                    "cannot report unhealthy GPUs; retrying every health pass",
                    extra={"modules": sorted(unhealthy), "error": str(exc)},
                )
            return False
        self.metrics.reports.labels("ok").inc()
        self._reported, self._report_error = unhealthy, None
        return True

    def _health_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.check_health()
            self.report_health()

    # -- release ---------------------------------------------------------------------------

    def owned(self) -> frozenset[int]:
        """The partitions this plugin activated or adopted and has not released."""
        with self._fabric_lock:
            return frozenset(self._owned)

    def reconcile_on_start(self) -> None:
        """Adopt active partitions that live pods hold; deactivate the other active ones.
        Skipped, with a warning, when PodResources does not answer (nothing is released
        on a guess)."""
        try:
            held = self.watcher.held()
        except Unavailable as exc:
            log.warning("cannot reconcile on start", extra={"error": str(exc)})
            return
        with self._fabric_lock:
            active = {int(p.id) for p in self.fabric.list_partitions() if p.active}
            now = time.monotonic()
            for pid in sorted(active):
                if pid in held:
                    self._owned[pid] = now - self._grace  # adopted: no grace needed
                    log.info("adopted partition", extra={"partition": pid})
                else:
                    self._deactivate(pid, "orphan: no live pod holds it")
            for pid in sorted(held - active):
                log.warning("a live pod holds an inactive partition", extra={"partition": pid})

    def release(self, held: Iterable[int]) -> tuple[int, ...]:
        """Deactivate owned partitions not in ``held`` (past the grace period); returns
        them."""
        keep = set(held)
        released = []
        with self._fabric_lock:
            now = time.monotonic()
            for pid, since in sorted(self._owned.items()):
                if pid in keep or now - since < self._grace:
                    continue
                self._deactivate(pid, "its pods are gone")
                released.append(pid)
        return tuple(released)

    def _deactivate(self, pid: int, why: str) -> None:
        try:
            self.fabric.deactivate(pid)
        except PartitionNotActive:
            self.metrics.fabric_ops.labels("deactivate", "not-active").inc()
        except Exception:
            self.metrics.fabric_ops.labels("deactivate", "error").inc()
            raise
        else:
            self.metrics.fabric_ops.labels("deactivate", "ok").inc()
        self._owned.pop(pid, None)
        log.info("deactivated partition", extra={"partition": pid, "reason": why})

    def _release_loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.release(self.watcher.held())
            except GpucaasError as exc:
                log.warning("release pass failed; retrying", extra={"error": str(exc)})

    # -- DevicePlugin service ------------------------------------------------------------

    def GetDevicePluginOptions(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._options()

    def ListAndWatch(self, request: Any, context: Any) -> Iterator[Any]:  # noqa: N802
        with self._changed:
            version = self._version
            response = self._device_list()
        yield response
        while not self._stop.is_set() and context.is_active():
            with self._changed:
                if self._version == version and not self._stop.is_set():
                    self._changed.wait(timeout=0.5)
                if self._stop.is_set() or self._version == version:
                    continue
                version = self._version
                response = self._device_list()
            yield response

    def GetPreferredAllocation(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self._counted("preferred", context):
            return self._get_preferred_allocation(request, context)

    def Allocate(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self._counted("allocate", context), self._timed("allocate"):
            return self._allocate(request, context)

    def PreStartContainer(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self._counted("prestart", context), self._timed("prestart"):
            return self._pre_start_container(request, context)

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

    def _get_preferred_allocation(self, request: Any, context: Any) -> Any:
        responses = []
        for container in request.container_requests:
            try:
                partition = self.preferred(
                    container.available_deviceIDs,
                    container.must_include_deviceIDs,
                    container.allocation_size,
                )
            except GpucaasError as exc:
                _abort(context, exc)
            responses.append(
                dp.ContainerPreferredAllocationResponse(deviceIDs=self._device_ids(partition))
            )
        return dp.PreferredAllocationResponse(container_responses=responses)

    def _allocate(self, request: Any, context: Any) -> Any:
        responses = []
        for container in request.container_requests:
            try:
                partition = self.partition_of(container.devices_ids)
            except GpucaasError as exc:
                _abort(context, exc)
            responses.append(self._allocate_response(partition))
        return dp.AllocateResponse(container_responses=responses)

    def _pre_start_container(self, request: Any, context: Any) -> Any:
        try:
            self.activate(self.partition_of(request.devices_ids))
        except GpucaasError as exc:
            _abort(context, exc)
        return dp.PreStartContainerResponse()

    # -- the decisions behind the service ------------------------------------------------

    def preferred(
        self, available: Iterable[str], must_include: Iterable[str], size: int
    ) -> Partition:
        """The partition to offer: buddy best-fit among partitions of exactly ``size`` GPUs
        inside ``available`` that contain ``must_include``. Raises :class:`InvalidRequest`
        (unknown device, a size no partition has) and :class:`Conflict` (none free)."""
        offered = sorted(available, key=_id_order)
        free = mask_of(self._modules(offered))
        must = mask_of(self._modules(must_include))
        try:
            fit = self.model.size_for(size)
        except SizeOutOfRange as exc:
            raise InvalidRequest(f"cannot allocate {size} GPUs: {exc}") from exc
        if fit != size:
            raise InvalidRequest(
                f"no partition of board model {self.model.name} has {size} GPUs (sizes: "
                f"{', '.join(map(str, self.model.sizes))}); request {fit} GPUs instead"
            )
        blocked = self.model.full_mask & ~free
        best = self.model.best_partition(size, blocked)
        if best is not None and must & ~best.mask == 0:
            return best
        candidates = [
            p
            for p in self.model.partitions
            if p.size == size and not p.mask & blocked and must & ~p.mask == 0
        ]
        if not candidates:
            raise Conflict(
                f"no free {size}-GPU partition among the offered devices "
                f"{','.join(offered) or '(none)'} (modules "
                f"{format_module_ids(self._modules(offered)) or 'none'})"
                + (f" that includes devices {','.join(sorted(must_include))}" if must else "")
                + "; wait for a pod to end or schedule the pod to another node"
            )
        return min(candidates, key=lambda p: (self._damage(p, blocked), int(p.id)))

    def _damage(self, partition: Partition, blocked: int) -> tuple[int, ...]:
        before = self.model.free_bits(blocked)
        after = self.model.free_bits(blocked | partition.mask)
        lost = [p for i, p in enumerate(self.model.partitions) if before >> i & 1 > after >> i & 1]
        return tuple(sum(1 for p in lost if p.size == s) for s in reversed(self.model.sizes))

    def partition_of(self, device_ids: Iterable[str]) -> Partition:
        """The partition that is exactly these devices. Raises :class:`InvalidRequest`
        naming the set and the valid partitions of that size."""
        ids = sorted(device_ids, key=_id_order)
        modules = self._modules(ids)
        try:
            return self.model.partition_for(modules)
        except NotAPartition as exc:
            valid = [p for p in self.model.partitions if p.size == len(ids)]
            choices = "; ".join(
                f"devices {','.join(self._device_ids(p))} (partition {p.id}, modules "
                f"{format_module_ids(p.module_ids)})"
                for p in valid
            )
            raise InvalidRequest(
                f"devices {','.join(ids) or '(none)'} (modules "
                f"{format_module_ids(modules) or 'none'}) are not one partition of board model "
                f"{self.model.name}; "
                + (
                    f"valid {len(ids)}-GPU sets: {choices}"
                    if valid
                    else f"partition sizes are {', '.join(map(str, self.model.sizes))}"
                )
            ) from exc

    def activate(self, partition: Partition) -> None:
        """Make ``partition`` active in the fabric. Idempotent. An overlapping active
        partition that no live pod holds is deactivated first. Raises
        :class:`PartitionHeld` and the fabric's errors."""
        pid = int(partition.id)
        with self._fabric_lock:
            active = [int(p.id) for p in self.fabric.list_partitions() if p.active]
            if pid in active:
                self._owned.setdefault(pid, time.monotonic())
                return
            overlapping = [a for a in active if self.model.overlaps(a, pid)]
            if overlapping:
                try:
                    held = self.watcher.held()
                except Unavailable:
                    held = frozenset(overlapping)  # cannot tell: treat them as held
                for other in overlapping:
                    if other in held:
                        raise PartitionHeld(partition, self.model.partition(other))
                for other in overlapping:
                    self._deactivate(other, f"overlaps partition {pid}, and no pod holds it")
            try:
                self.fabric.activate(pid)  # PartitionInUse if another client raced us
            except Exception:
                self.metrics.fabric_ops.labels("activate", "error").inc()
                raise
            self.metrics.fabric_ops.labels("activate", "ok").inc()
            self._owned[pid] = time.monotonic()
            log.info("activated partition", extra={"partition": pid})

    def _allocate_response(self, partition: Partition) -> Any:
        gpus = [self._by_module[int(m)] for m in partition.module_ids]
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

    def _modules(self, device_ids: Iterable[str]) -> list[int]:
        modules = []
        for device_id in device_ids:
            gpu = self._by_id.get(device_id)
            if gpu is None:
                raise InvalidRequest(
                    f"unknown device {device_id!r} for {self.resource}; this node's devices "
                    f"are {','.join(self._by_id)}"
                )
            modules.append(int(gpu.module_id))
        return modules

    def _device_ids(self, partition: Partition) -> list[str]:
        return [self._by_module[int(m)].device_id for m in partition.module_ids]


def _id_order(device_id: str) -> tuple[int, str]:
    return (int(device_id), device_id) if device_id.isdigit() else (1 << 30, device_id)


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


class HttpEndpoint:
    """``/healthz`` and ``/metrics`` of a :class:`DevicePlugin` over HTTP.

    ``/healthz``: 200 once the plugin serves and is registered with the kubelet, 503
    otherwise, with a JSON body (:meth:`DevicePlugin.status`). ``/metrics``: the Prometheus
    text, always 200. Binds in the constructor (raises :class:`InvalidRequest` for a bad
    or busy address); :meth:`start` serves in a thread; :meth:`stop` is idempotent.
    """

    def __init__(self, plugin: DevicePlugin, listen: str) -> None:
        self.plugin = plugin
        self.server = health_server(
            listen, health=plugin.status, metrics=plugin.metrics.text, what="/metrics and /healthz"
        )
        self.port: int = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="device-plugin-http", daemon=True
        )
        self._thread.start()
        log.info("serving /metrics and /healthz", extra={"port": self.port})

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server.server_close()
