"""The Kubernetes test cluster itself: what the gpucaas Kubernetes backend will rely on.

kwok-driven fake GPU nodes become Ready; the default scheduler places GPU pods and kwok marks
them Running; a pod for a secondary scheduler ("gpucaas") waits until it is bound through the
``pods/binding`` subresource; a ResourceQuota on ``requests.nvidia.com/gpu`` is enforced (403);
namespace deletion completes (kube-controller-manager runs).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import httpx2  # lightkube's HTTP client: its client adapter builds httpx2 clients
import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.config.client_adapter import Client as HttpxClient
from lightkube.config.client_adapter import ConnectionParams
from lightkube.models.core_v1 import (
    Container,
    NodeSpec,
    NodeStatus,
    PodSpec,
    ResourceQuotaSpec,
    ResourceRequirements,
    Taint,
    Toleration,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import (
    Namespace,
    Node,
    Pod,
    ResourceQuota,
    ServiceAccount,
)

T = TypeVar("T")
# kube_cluster is tests/e2e/conftest.py's KubeCluster (kubeconfig, api_url, built_version)

GPU = "nvidia.com/gpu"
KWOK_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}
KWOK_TAINT = Taint(key="kwok.x-k8s.io/node", value="fake", effect="NoSchedule")
KWOK_TOLERATION = Toleration(key="kwok.x-k8s.io/node", operator="Exists", effect="NoSchedule")
RUN = uuid.uuid4().hex[:6]
NODE_NAMES = [f"gpucaas-e2e-{RUN}-{i}" for i in range(3)]
GPU_QUOTA = 4


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except ApiError as exc:
            last_error, result = exc, None
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


@pytest.fixture(scope="module")
def kube(kube_cluster: Any) -> Iterator[Client]:
    config = KubeConfig.from_file(str(kube_cluster.kubeconfig))
    client = Client(config, field_manager="gpucaas-e2e")
    yield client
    client.close()


def ready_node(kube: Client, name: str) -> Node | None:
    node = kube.get(Node, name)
    conditions = (node.status and node.status.conditions) or []
    return node if any(c.type == "Ready" and c.status == "True" for c in conditions) else None


@pytest.fixture(scope="module")
def kwok_nodes(kube: Client) -> Iterator[list[str]]:
    """Three fake 8-GPU nodes driven by kwok (annotation kwok.x-k8s.io/node=fake)."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", GPU: "8"}
    for name in NODE_NAMES:
        kube.create(
            Node(
                metadata=ObjectMeta(
                    name=name,
                    annotations=dict(KWOK_ANNOTATION),
                    labels={"type": "kwok", "kubernetes.io/hostname": name, "gpucaas-e2e": RUN},
                ),
                spec=NodeSpec(taints=[KWOK_TAINT]),
                status=NodeStatus(capacity=capacity, allocatable=capacity),
            )
        )
    try:
        yield NODE_NAMES
    finally:
        for name in NODE_NAMES:
            try:
                kube.delete(Node, name)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise


@pytest.fixture(scope="module")
def namespace(kube: Client, kwok_nodes: list[str]) -> Iterator[str]:
    """A namespace with a GPU ResourceQuota, ready for pods (default SA, quota computed)."""
    name = f"gpucaas-e2e-{RUN}"
    kube.create(Namespace(metadata=ObjectMeta(name=name, labels={"gpucaas-e2e": RUN})))
    kube.create(
        ResourceQuota(
            metadata=ObjectMeta(name="gpus"),
            spec=ResourceQuotaSpec(hard={f"requests.{GPU}": str(GPU_QUOTA)}),
        ),
        namespace=name,
    )
    # ServiceAccount admission needs the namespace's default SA (KCM creates it), and
    # ResourceQuota admission refuses pods until the quota controller has filled status.hard.
    wait_for(
        "the default ServiceAccount", lambda: kube.get(ServiceAccount, "default", namespace=name)
    )
    wait_for(
        "the ResourceQuota's status",
        lambda: (q := kube.get(ResourceQuota, "gpus", namespace=name)).status and q.status.hard,
    )
    try:
        yield name
    finally:
        delete_namespace(kube, name)


def delete_namespace(kube: Client, name: str, timeout: float = 90.0) -> None:
    try:
        kube.delete(Namespace, name)
    except ApiError as exc:
        if exc.status.code == 404:
            return
        raise

    def gone() -> bool:
        try:
            kube.get(Namespace, name)
        except ApiError as exc:
            if exc.status.code == 404:
                return True
            raise
        return False

    wait_for(f"namespace {name} to be deleted", gone, timeout=timeout)


def gpu_pod(name: str, gpus: int, scheduler: str | None = None) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, labels={"gpucaas-e2e": RUN}),
        spec=PodSpec(
            schedulerName=scheduler,
            nodeSelector={"type": "kwok"},
            tolerations=[KWOK_TOLERATION],
            automountServiceAccountToken=False,
            containers=[
                Container(
                    name="main",
                    image="registry.invalid/gpucaas/e2e:never-pulled",
                    resources=ResourceRequirements(
                        requests={GPU: str(gpus), "cpu": "100m"},
                        limits={GPU: str(gpus)},
                    ),
                )
            ],
        ),
    )


def running(kube: Client, name: str, namespace: str) -> Pod | None:
    pod = kube.get(Pod, name, namespace=namespace)
    if pod.status and pod.status.phase == "Running" and pod.spec and pod.spec.nodeName:
        return pod
    return None


def http_client(kube_cluster: Any) -> httpx2.Client:
    """A plain httpx client for the cluster (base URL, CA and client cert from the kubeconfig)."""
    config = KubeConfig.from_file(str(kube_cluster.kubeconfig)).get()
    assert config is not None
    return HttpxClient(config, ConnectionParams())


def test_server_version_is_the_built_one(kube_cluster: Any) -> None:
    with http_client(kube_cluster) as http:
        response = http.get("/version")
    assert response.status_code == httpx.codes.OK, response.text
    version = response.json()
    assert version["gitVersion"].startswith("v1."), version
    if kube_cluster.built_version is not None:
        assert version["gitVersion"] == kube_cluster.built_version, version
        major, minor = kube_cluster.built_version.removeprefix("v").split(".")[:2]
        assert (version["major"], version["minor"]) == (major, minor), version


def test_kwok_nodes_become_ready(kube: Client, kwok_nodes: list[str]) -> None:
    for name in kwok_nodes:
        node = wait_for(f"node {name} Ready", functools.partial(ready_node, kube, name))
        assert node.status is not None and node.status.allocatable is not None
        assert node.status.allocatable[GPU] == "8"


def test_default_scheduler_places_gpu_pod(
    kube: Client, namespace: str, kwok_nodes: list[str]
) -> None:
    kube.create(gpu_pod("default-sched", 2), namespace=namespace)
    pod = wait_for("pod default-sched Running", lambda: running(kube, "default-sched", namespace))
    assert pod.spec is not None and pod.spec.nodeName in kwok_nodes


def test_secondary_scheduler_pod_waits_until_bound(
    kube: Client, kube_cluster: Any, namespace: str, kwok_nodes: list[str]
) -> None:
    kube.create(gpu_pod("gpucaas-sched", 2, scheduler="gpucaas"), namespace=namespace)
    time.sleep(3)  # the default scheduler would have bound it by now if it were its pod
    pod = kube.get(Pod, "gpucaas-sched", namespace=namespace)
    assert pod.spec is not None and pod.spec.nodeName is None
    assert pod.status is not None and pod.status.phase == "Pending"

    target = kwok_nodes[-1]
    # POST pods/<name>/binding, as a secondary scheduler does. (Not lightkube's PodBinding:
    # the API answers with a Status, which lightkube would try to decode as a Binding.)
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "gpucaas-sched", "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": target},
    }
    with http_client(kube_cluster) as http:
        response = http.post(
            f"/api/v1/namespaces/{namespace}/pods/gpucaas-sched/binding",
            json=binding,
        )
    assert response.status_code == httpx.codes.CREATED, response.text
    pod = wait_for("pod gpucaas-sched Running", lambda: running(kube, "gpucaas-sched", namespace))
    assert pod.spec is not None and pod.spec.nodeName == target


def test_gpu_quota_is_enforced(kube: Client, namespace: str) -> None:
    with pytest.raises(ApiError) as excinfo:
        kube.create(gpu_pod("too-many-gpus", GPU_QUOTA + 1), namespace=namespace)
    assert excinfo.value.status.code == 403
    assert "exceeded quota" in (excinfo.value.status.message or "")


def test_namespace_deletion_completes(kube: Client, kwok_nodes: list[str]) -> None:
    name = f"gpucaas-e2e-{RUN}-del"
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    wait_for(
        "the default ServiceAccount", lambda: kube.get(ServiceAccount, "default", namespace=name)
    )
    kube.create(gpu_pod("doomed", 1), namespace=name)
    wait_for("pod doomed Running", lambda: running(kube, "doomed", name))
    delete_namespace(kube, name)
