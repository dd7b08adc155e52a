"""The Kubernetes backend: tenant namespaces, Kata GPU pods, partition-aware binding.

gpucaas is the pods' scheduler (``schedulerName: gpucaas``): the scheduler loop chooses the
board and the partition with :mod:`gpucaas.placement`, creates the pod and binds it to that
node through the ``pods/binding`` subresource, so a pod never waits for the default scheduler
and never lands where no valid partition is free. Per tenant: a Namespace, a default-deny
NetworkPolicy (the tenant's own pods, DNS and its NFS servers only), a ResourceQuota on the
GPU resource matching the tenant's quota, and a ServiceAccount without token automount.

Nodes and pods are followed level-triggered: a LIST fills each cache, a WATCH keeps it
current, and a periodic re-LIST replaces it, so a missed event heals by itself.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, Client
from lightkube.config.client_adapter import Client as HttpClient
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.models.core_v1 import (
    Container,
    EnvVar,
    NFSVolumeSource,
    PodSpec,
    ResourceQuotaSpec,
    ResourceRequirements,
    SecurityContext,
    Toleration,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.models.networking_v1 import (
    IPBlock,
    NetworkPolicyEgressRule,
    NetworkPolicyIngressRule,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicySpec,
)
from lightkube.resources.core_v1 import Namespace, Node, Pod, ResourceQuota, ServiceAccount
from lightkube.resources.networking_v1 import NetworkPolicy

from gpucaas.errors import InvalidRequest
from gpucaas.node.health import parse_unhealthy_annotation
from gpucaas.runtime import vm_memory_for

from ._backend import BoardInfo, Phase, TenantSpec, Workload, WorkloadStatus
from ._errors import (
    KubernetesConflict,
    KubernetesError,
    KubernetesRefused,
    KubernetesUnreachable,
)

log = logging.getLogger(__name__)

MANAGED_BY = {"app.kubernetes.io/managed-by": "gpucaas"}
TENANT_LABEL = "gpucaas.io/tenant"
CONTAINER_LABEL = "gpucaas.io/container"
HGX_LABEL = "gpucaas.io/hgx"
BOARD_MODEL_LABEL = "gpucaas.io/board-model"
SCHEDULER_NAME = "gpucaas"
DEFAULT_RUNTIME_CLASS = "kata-qemu-nvidia-gpu"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
TENANT_SA = "gpucaas-tenant"
NFS_PORTS = (111, 2049)
RESYNC_S = 30.0


@contextmanager
def map_kube_errors(what: str) -> Iterator[None]:
    """Kubernetes and transport errors become gpucaas errors (404 is left to the caller)."""
    try:
        yield
    except ApiError as exc:
        code = exc.status.code or 0
        reason = exc.status.message or str(exc)
        if code == 404:
            raise
        if code == 409:
            raise KubernetesConflict(what, reason) from exc
        if 400 <= code < 500:
            raise KubernetesRefused(what, code, reason) from exc
        raise KubernetesError(what, f"{code} {reason}") from exc
    except (httpx2.TransportError, OSError) as exc:  # lightkube's transport is httpx2
        raise KubernetesUnreachable(what, f"{type(exc).__name__}: {exc}") from exc
    except httpx2.HTTPError as exc:
        raise KubernetesError(what, f"{type(exc).__name__}: {exc}") from exc


def namespace_of(tenant: str) -> str:
    return f"gpucaas-{tenant}"


def pod_name(container_id: str) -> str:
    return f"c-{container_id}"


_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>m|k|M|G|T|Ki|Mi|Gi|Ti|)$")


def scale_quantity(quantity: str, factor: int, *, what: str = "quantity") -> str:
    """``quantity`` (a Kubernetes quantity such as ``14``, ``500m``, ``160Gi``) × ``factor``,
    in the same unit. Raises :class:`InvalidRequest` naming ``what`` for anything else."""
    match = _QUANTITY.match(quantity.strip())
    if match is None or float(match["number"]) <= 0:
        raise InvalidRequest(
            f"{what} {quantity!r} is not a positive Kubernetes quantity, e.g. 14, 500m or 160Gi"
        )
    number = Decimal(match["number"]) * factor
    text = format(number.normalize(), "f")
    return f"{text}{match['suffix']}"


@dataclass
class PodDefaults:
    """Requests of a tenant pod by partition size: a per-GPU share of the host's CPUs and
    memory. The memory default is the VM's (``vm_memory_for``, the runtime package's
    documented default); the RuntimeClass adds the VM's own overhead on top. Both are
    Kubernetes quantities per GPU, checked when the backend is built."""

    cpu_per_gpu: str = "14"
    memory_per_gpu: str | None = None
    """None: ``vm_memory_for(gpus)`` GiB."""
    tolerations: list[Toleration] = field(default_factory=list)

    def __post_init__(self) -> None:
        scale_quantity(self.cpu_per_gpu, 1, what="CPU per GPU (--pod-cpu-per-gpu)")
        if self.memory_per_gpu is not None:
            scale_quantity(self.memory_per_gpu, 1, what="memory per GPU (--pod-memory-per-gpu)")

    def requests(self, gpus: int) -> dict[str, str]:
        """CPU and memory of a pod with ``gpus`` GPUs."""
        memory = (
            f"{vm_memory_for(gpus)}Gi"
            if self.memory_per_gpu is None
            else scale_quantity(self.memory_per_gpu, gpus)
        )
        return {"cpu": scale_quantity(self.cpu_per_gpu, gpus), "memory": memory}


class KubernetesBackend:
    """Parameters:
    config: the cluster (a lightkube ``SingleConfig``: server, credentials). Every thread
        gets its own client: one TLS connection must never be shared between threads.
    runtime_class: the Kata GPU RuntimeClass.
    gpu_resource: the extended resource the device plugin advertises.
    node_selector: the label that marks gpucaas HGX nodes.
    """

    name = "kubernetes"

    def __init__(
        self,
        config: SingleConfig,
        *,
        runtime_class: str = DEFAULT_RUNTIME_CLASS,
        gpu_resource: str = DEFAULT_GPU_RESOURCE,
        node_selector: Mapping[str, str] | None = None,
        defaults: PodDefaults | None = None,
        resync_s: float = RESYNC_S,
        tenants: Callable[[str], TenantSpec] | None = None,
    ) -> None:
        self._config = config
        self._local = threading.local()
        self._opened: list[Any] = []
        self.runtime_class = runtime_class
        self.gpu_resource = gpu_resource
        self.node_selector = dict(node_selector or {HGX_LABEL: "true"})
        self.defaults = defaults or PodDefaults()
        self.resync_s = resync_s
        self._tenant_spec = tenants
        self._lock = threading.Lock()
        self._pods: dict[str, Pod] = {}
        self._nodes: dict[str, Node] = {}
        self._tenants_ready: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, **kwargs: Any) -> KubernetesBackend:
        """From a kubeconfig file (None: $KUBECONFIG, ~/.kube/config, or in-cluster)."""
        with map_kube_errors("loading the kubeconfig"):
            config = KubeConfig.from_file(path) if path else KubeConfig.from_env()
            single = config.get()
        if single is None:
            raise KubernetesRefused("loading the kubeconfig", 0, f"{path}: no current context")
        return cls(single, **kwargs)

    @property
    def client(self) -> Client:
        """This thread's lightkube client."""
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = Client(self._config, field_manager="gpucaas")
            self._local.client = client
            with self._lock:
                self._opened.append(client)
        return client

    @property
    def http(self) -> Any:
        """This thread's plain HTTP client (``pods/binding``, whose reply lightkube cannot
        decode)."""
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = _http_for(self._config)
            with self._lock:
                self._opened.append(http)
        return http

    # -- caches ---------------------------------------------------------------------------

    def start_watches(self) -> None:
        """Fill the node and pod caches (LIST) and keep them current (WATCH) in threads."""
        self._relist()
        for target in (self._watch_nodes, self._watch_pods, self._resync):
            t = threading.Thread(target=target, name=target.__name__, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        with self._lock:
            opened, self._opened = self._opened, []
        for c in opened:
            c.close()

    def _relist(self) -> None:
        with map_kube_errors("listing nodes and pods"):
            nodes = {_name(n): n for n in self.client.list(Node, labels=dict(self.node_selector))}
            pods = {
                _label(p, CONTAINER_LABEL): p
                for p in self.client.list(Pod, namespace="*", labels={CONTAINER_LABEL: None})
            }
        with self._lock:
            self._nodes = nodes
            self._pods = pods

    def _resync(self) -> None:
        while not self._stop.wait(self.resync_s):
            try:
                self._relist()
            except Exception as exc:  # noqa: BLE001 - keep the last good view, say why
                log.warning("re-list failed: %s", exc)

    def _watch_nodes(self) -> None:
        self._watch(Node, None, self.node_selector, self._on_node)

    def _watch_pods(self) -> None:
        self._watch(Pod, "*", {CONTAINER_LABEL: None}, self._on_pod)

    def _watch(self, res: Any, namespace: str | None, labels: Any, apply: Any) -> None:
        while not self._stop.is_set():
            try:
                for kind, obj in self.client.watch(
                    res, namespace=namespace, labels=labels, server_timeout=30
                ):
                    if self._stop.is_set():
                        return
                    apply(kind, obj)
            except Exception as exc:  # noqa: BLE001 - reconnect; re-list heals gaps
                if not self._stop.is_set():
                    log.info("watch of %s ended (%s); reconnecting", res.__name__, exc)
                    self._stop.wait(1.0)

    def _on_node(self, kind: str, node: Node) -> None:
        with self._lock:
            if kind == "DELETED":
                self._nodes.pop(_name(node), None)
            else:
                self._nodes[_name(node)] = node

    def _on_pod(self, kind: str, pod: Pod) -> None:
        cid = _label(pod, CONTAINER_LABEL)
        if not cid:
            return
        with self._lock:
            if kind == "DELETED":
                current = self._pods.get(cid)
                if current is None or _uid(current) == _uid(pod):
                    self._pods.pop(cid, None)
            else:
                current = self._pods.get(cid)
                if (
                    current is not None
                    and _uid(current) == _uid(pod)
                    and _node_of(current)
                    and not _node_of(pod)
                ):
                    return  # an event from before the binding: a bound pod stays bound
                self._pods[cid] = pod

    # -- boards ---------------------------------------------------------------------------

    def boards(self) -> Sequence[BoardInfo]:
        with self._lock:
            nodes = list(self._nodes.values())
        out = []
        for node in sorted(nodes, key=lambda n: n.metadata.name or ""):  # type: ignore[union-attr]
            meta = node.metadata
            assert meta is not None and meta.name is not None
            labels = dict(meta.labels or {})
            model = labels.get(BOARD_MODEL_LABEL)
            if model is None:
                continue  # an HGX node not yet labelled with its board model
            ready = _ready(node)
            unschedulable = bool(node.spec and node.spec.unschedulable)
            out.append(
                BoardInfo(
                    name=meta.name,
                    model=model,
                    labels=labels,
                    unhealthy=parse_unhealthy_annotation(meta.annotations),
                    cordoned=unschedulable or not ready,
                    ready=ready,
                )
            )
        return out

    # -- tenants --------------------------------------------------------------------------

    def ensure_tenant(self, tenant: TenantSpec) -> None:
        """Create or update the tenant's namespace and its policy objects (idempotent)."""
        ns = namespace_of(tenant.name)
        labels = {**MANAGED_BY, TENANT_LABEL: tenant.name}
        with map_kube_errors(f"making namespace {ns}"):
            self.client.apply(Namespace(metadata=ObjectMeta(name=ns, labels=labels)), force=True)
            self.client.apply(
                ServiceAccount(
                    metadata=ObjectMeta(name=TENANT_SA, namespace=ns, labels=labels),
                    automountServiceAccountToken=False,
                ),
                force=True,
            )
            self.client.apply(
                ResourceQuota(
                    metadata=ObjectMeta(name="gpucaas", namespace=ns, labels=labels),
                    spec=ResourceQuotaSpec(
                        hard={
                            f"requests.{self.gpu_resource}": str(tenant.max_gpus),
                            "count/pods": str(tenant.max_containers),
                        }
                    ),
                ),
                force=True,
            )
            self.client.apply(self._network_policy(tenant, ns, labels), force=True)
        with self._lock:
            self._tenants_ready.add(tenant.name)

    def _network_policy(
        self, tenant: TenantSpec, ns: str, labels: Mapping[str, str]
    ) -> NetworkPolicy:
        same_tenant = NetworkPolicyPeer(podSelector=LabelSelector())
        dns = NetworkPolicyPeer(
            namespaceSelector=LabelSelector(
                matchLabels={"kubernetes.io/metadata.name": "kube-system"}
            ),
            podSelector=LabelSelector(matchLabels={"k8s-app": "kube-dns"}),
        )
        egress = [
            NetworkPolicyEgressRule(to=[same_tenant]),
            NetworkPolicyEgressRule(
                to=[dns],
                ports=[
                    NetworkPolicyPort(protocol="UDP", port=53),
                    NetworkPolicyPort(protocol="TCP", port=53),
                ],
            ),
        ]
        nfs = [NetworkPolicyPeer(ipBlock=IPBlock(cidr=c)) for c in nfs_cidrs(tenant.nfs_exports)]
        if nfs:
            egress.append(
                NetworkPolicyEgressRule(
                    to=nfs,
                    ports=[
                        NetworkPolicyPort(protocol=proto, port=port)
                        for port in NFS_PORTS
                        for proto in ("TCP", "UDP")
                    ],
                )
            )
        return NetworkPolicy(
            metadata=ObjectMeta(name="gpucaas-tenant-isolation", namespace=ns, labels=dict(labels)),
            spec=NetworkPolicySpec(
                podSelector=LabelSelector(),
                policyTypes=["Ingress", "Egress"],
                ingress=[NetworkPolicyIngressRule(from_=[same_tenant])],
                egress=egress,
            ),
        )

    def remove_tenant(self, tenant: str) -> None:
        """Delete the tenant's namespace (and with it every object in it)."""
        with self._lock:
            self._tenants_ready.discard(tenant)
        try:
            with map_kube_errors(f"deleting namespace {namespace_of(tenant)}"):
                self.client.delete(Namespace, namespace_of(tenant))
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    # -- workloads ------------------------------------------------------------------------

    def check(self, workload: Workload) -> None:
        return None  # Kata VMs mount NFS themselves; pods take every valid request

    def pod(self, workload: Workload) -> Pod:
        """The pod for a placed workload."""
        gpus = len(workload.module_ids) or workload.gpus
        labels = {
            **{k: v for k, v in workload.labels.items() if not k.startswith("gpucaas.io/")},
            **MANAGED_BY,
            TENANT_LABEL: workload.tenant,
            CONTAINER_LABEL: workload.container_id,
        }
        annotations = {
            "gpucaas.io/board": workload.board or "",
            "gpucaas.io/partition-id": ""
            if workload.partition_id is None
            else str(workload.partition_id),
            "gpucaas.io/module-ids": ",".join(map(str, workload.module_ids)),
        }
        env = [EnvVar(name=k, value=v) for k, v in workload.env.items()]
        env += [
            EnvVar(name="GPUCAAS_CONTAINER_ID", value=workload.container_id),
            EnvVar(name="GPUCAAS_TENANT", value=workload.tenant),
            EnvVar(name="GPUCAAS_BOARD", value=workload.board or ""),
            EnvVar(name="GPUCAAS_PARTITION_ID", value=annotations["gpucaas.io/partition-id"]),
            EnvVar(name="GPUCAAS_MODULE_IDS", value=annotations["gpucaas.io/module-ids"]),
        ]
        volumes = [
            Volume(
                name=f"nfs-{i}",
                nfs=NFSVolumeSource(server=m.server, path=m.path, readOnly=m.read_only),
            )
            for i, m in enumerate(workload.nfs)
        ]
        mounts = [
            VolumeMount(name=f"nfs-{i}", mountPath=m.mount_path, readOnly=m.read_only)
            for i, m in enumerate(workload.nfs)
        ]
        resources = {self.gpu_resource: str(gpus), **self.defaults.requests(gpus)}
        return Pod(
            metadata=ObjectMeta(
                name=pod_name(workload.container_id),
                namespace=namespace_of(workload.tenant),
                labels=labels,
                annotations=annotations,
            ),
            spec=PodSpec(
                schedulerName=SCHEDULER_NAME,
                runtimeClassName=self.runtime_class,
                restartPolicy="Never",
                serviceAccountName=TENANT_SA,
                automountServiceAccountToken=False,
                enableServiceLinks=False,
                activeDeadlineSeconds=workload.max_runtime_s,
                nodeSelector=dict(self.node_selector),
                tolerations=list(self.defaults.tolerations) or None,
                containers=[
                    Container(
                        name="main",
                        image=workload.image,
                        command=list(workload.command) or None,
                        args=list(workload.args) or None,
                        env=env,
                        resources=ResourceRequirements(requests=resources, limits=resources),
                        securityContext=SecurityContext(
                            privileged=False, allowPrivilegeEscalation=False
                        ),
                        volumeMounts=mounts or None,
                    )
                ],
                volumes=volumes or None,
            ),
        )

    def start(self, workload: Workload) -> None:
        if workload.board is None:
            raise ValueError(f"workload {workload.container_id} has no board")
        if workload.tenant not in self._tenants_ready:
            if self._tenant_spec is None:
                raise KubernetesRefused(
                    f"starting {workload.container_id}",
                    0,
                    f"tenant {workload.tenant!r} has no namespace yet (ensure_tenant first)",
                )
            self.ensure_tenant(self._tenant_spec(workload.tenant))
        pod = self.pod(workload)
        ns = namespace_of(workload.tenant)
        name = pod_name(workload.container_id)
        try:
            with map_kube_errors(f"creating pod {ns}/{name}"):
                created = self.client.create(pod)
        except KubernetesConflict:  # created before a restart: bind it if it is not
            with map_kube_errors(f"reading pod {ns}/{name}"):
                created = self.client.get(Pod, name, namespace=ns)
        with self._lock:
            self._pods.setdefault(workload.container_id, created)
        if created.spec is not None and created.spec.nodeName:
            return
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": workload.board},
        }
        with map_kube_errors(f"binding pod {ns}/{name} to {workload.board}"):
            reply = self.http.post(f"/api/v1/namespaces/{ns}/pods/{name}/binding", json=binding)
        if reply.status_code >= 400:
            text = _status_message(reply)
            if reply.status_code == 409:
                return  # bound already (a retry after a restart)
            if reply.status_code >= 500:
                raise KubernetesError(f"binding pod {ns}/{name}", text)
            raise KubernetesRefused(f"binding pod {ns}/{name}", reply.status_code, text)
        # Until the watch brings the bound pod, the cache says where it went.
        with self._lock:
            cached = self._pods.get(workload.container_id)
            if cached is not None and cached.spec is not None and not cached.spec.nodeName:
                cached.spec.nodeName = workload.board

    def status(self, workload: Workload) -> WorkloadStatus:
        with self._lock:
            pod = self._pods.get(workload.container_id)
        if pod is None:
            return WorkloadStatus(Phase.ABSENT)
        return pod_status(pod)

    def stop(self, workload: Workload, grace_s: float) -> None:
        name, ns = pod_name(workload.container_id), namespace_of(workload.tenant)
        try:
            with map_kube_errors(f"deleting pod {ns}/{name}"):
                self.client.delete(Pod, name, namespace=ns, grace_period=int(grace_s))
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    def release(self, workload: Workload) -> None:
        # A terminal pod holds no GPUs (the device plugin and quota skip it); it stays for
        # its logs until the tenant is removed.
        return None

    def sync(self, workloads: Sequence[Workload]) -> None:
        """Delete gpucaas pods that still run but that no container holds (strays)."""
        wanted = {w.container_id for w in workloads}
        with self._lock:
            pods = list(self._pods.items())
        for cid, pod in pods:
            phase = pod.status.phase if pod.status else None
            if cid not in wanted and phase not in ("Succeeded", "Failed"):
                meta = pod.metadata
                assert meta is not None and meta.name is not None
                log.warning("deleting stray pod %s/%s", meta.namespace, meta.name)
                try:
                    with map_kube_errors(f"deleting stray pod {meta.name}"):
                        self.client.delete(Pod, meta.name, namespace=meta.namespace)
                except ApiError as exc:
                    if exc.status.code != 404:
                        raise

    def logs(self, workload: Workload, *, follow: bool) -> Iterator[bytes]:
        name, ns = pod_name(workload.container_id), namespace_of(workload.tenant)
        try:
            with map_kube_errors(f"reading logs of {ns}/{name}"):
                for line in self.client.log(name, namespace=ns, follow=follow, newlines=True):
                    yield line.encode()
        except ApiError as exc:
            if exc.status.code not in (400, 404):
                raise KubernetesError(f"reading logs of {ns}/{name}", str(exc)) from exc

    async def follow_logs(self, workload: Workload) -> AsyncGenerator[bytes, None]:
        # One async client per follower, on the API's event loop: the stream waits on its
        # socket, not in a thread, and closing it (a client gone) closes the connection.
        name, ns = pod_name(workload.container_id), namespace_of(workload.tenant)
        client = AsyncClient(self._config, field_manager="gpucaas")
        try:
            with map_kube_errors(f"reading logs of {ns}/{name}"):
                async for line in client.log(name, namespace=ns, follow=True, newlines=True):
                    yield line.encode()
        except ApiError as exc:
            if exc.status.code not in (400, 404):
                raise KubernetesError(f"reading logs of {ns}/{name}", str(exc)) from exc
        finally:
            await client.close()


LIVE_WITHIN_S = 2.0
"""A pod time this close to now was seen live: the observation is the better clock."""


def _when(stamp: Any, now: float) -> float | None:
    """A pod's timestamp (RFC 3339, whole seconds, the kubelet's clock) as the time of a
    state change, or None (the store then records when we saw it). Seen live, within
    :data:`LIVE_WITHIN_S`, our own clock is more precise than a truncated second and cannot
    put *running* before *starting*; older (caught up after a restart) the pod's time is the
    better one."""
    if stamp is None:
        return None
    t = float(stamp.timestamp())
    return None if now - t < LIVE_WITHIN_S else t


def pod_status(pod: Pod, now: float | None = None) -> WorkloadStatus:
    """A pod's phase and container state, as a workload status. A pod not bound to a node
    is ABSENT: gpucaas binds what it creates, so an unbound pod is a start that a crash
    interrupted, and starting it again (idempotent) binds it. ``now``: the wall clock (for
    :func:`_when`)."""
    now = time.time() if now is None else now
    if not _node_of(pod):
        return WorkloadStatus(Phase.ABSENT, message="created, not bound to a node")
    status = pod.status
    phase = status.phase if status else None
    started = _when(status.startTime if status else None, now)
    terminated = None
    for cs in (status.containerStatuses if status else None) or ():
        if cs.state and cs.state.terminated:
            terminated = cs.state.terminated
            started = _when(terminated.startedAt, now) if terminated.startedAt else started
        elif cs.state and cs.state.running and cs.state.running.startedAt:
            started = _when(cs.state.running.startedAt, now)
    if phase == "Running":
        return WorkloadStatus(Phase.RUNNING, started_at=started)
    if phase in ("Succeeded", "Failed"):
        code = terminated.exitCode if terminated else (0 if phase == "Succeeded" else None)
        finished = _when(terminated.finishedAt, now) if terminated else None
        reason = "exited"
        message = (terminated.message or terminated.reason or "") if terminated else ""
        if status and status.reason == "DeadlineExceeded":
            reason, message = "deadline", status.message or "past activeDeadlineSeconds"
        elif phase == "Failed" and terminated is None:
            reason, message = (
                "spawn-failed",
                (status.message or status.reason or "") if status else "",
            )
        return WorkloadStatus(
            Phase.EXITED,
            exit_code=code,
            reason=reason,
            message=message,
            started_at=started,
            finished_at=finished,
        )
    message = ""
    for cs in (status.containerStatuses if status else None) or ():
        if cs.state and cs.state.waiting and cs.state.waiting.reason:
            message = f"{cs.state.waiting.reason}: {cs.state.waiting.message or ''}".strip()
    return WorkloadStatus(Phase.STARTING, message=message)


def nfs_cidrs(exports: Sequence[str]) -> list[str]:
    """The NFS servers of ``exports`` (server:/path) as /32 or /128 blocks; names resolved."""
    out: set[str] = set()
    for export in exports:
        server = export.partition(":")[0].strip("[]")
        try:
            addresses = [ipaddress.ip_address(server)]
        except ValueError:
            try:
                infos = socket.getaddrinfo(server, None)
            except OSError:
                log.warning("NFS server %s does not resolve; not allowed in its policy", server)
                continue
            addresses = [ipaddress.ip_address(i[4][0]) for i in infos]
        for a in addresses:
            out.add(f"{a}/{32 if a.version == 4 else 128}")
    return sorted(out)


def _name(obj: Any) -> str:
    return str(obj.metadata.name) if obj.metadata is not None else ""


def _node_of(pod: Any) -> str:
    return str(pod.spec.nodeName or "") if pod.spec is not None else ""


def _uid(obj: Any) -> str:
    return str(obj.metadata.uid) if obj.metadata is not None else ""


def _label(obj: Any, key: str) -> str:
    labels = (obj.metadata.labels if obj.metadata is not None else None) or {}
    return str(labels.get(key, ""))


def _ready(node: Node) -> bool:
    for cond in (node.status.conditions if node.status else None) or ():
        if cond.type == "Ready":
            return cond.status == "True"
    return False


def _status_message(reply: Any) -> str:
    try:
        return str(reply.json().get("message", reply.text))
    except ValueError:
        return str(reply.text)


def _http_for(config: SingleConfig) -> Any:
    return HttpClient(config, ConnectionParams())
