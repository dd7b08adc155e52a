"""gpucaas on a real node: kubelet + containerd 2.x (CDI on) + runc, our fm-controller and
device plugin over a fake HGX H100 board (sysfs fixture, ``/dev/vfio`` nodes by mknod).

Containers go in through the gpucaas HTTP API (Kubernetes backend); gpucaas picks the
partition and binds the pod; the kubelet asks our device plugin for devices; containerd
injects them by CDI name; runc makes the nodes in the container. The tests read what really
happened back from the container's output (through pods/log on the real kubelet), the
kubelet's PodResources API, the CDI spec dir and the fabric.
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import grpc
import httpx
import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node, Pod
from lightkube.resources.node_v1 import RuntimeClass
from lightkube.types import PatchType

from gpucaas.node.health import parse_unhealthy_annotation, unhealthy_annotation_patch
from gpucaas.runtime import RUNTIME_CLASS_NAME, runtime_class
from gpucaas.topology import get_model
from tests.e2e.kube_helpers import delete_if_exists, meta, namespaced_name, wait_for
from tests.e2e.real_node import GPU, RealNode, agent_client
from tests.live_plane import FINAL, Live, live_plane, wait_state

H100 = get_model("hgx-h100-8")
RUN = uuid.uuid4().hex[:6]
BOOT_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def kube(node_bed: RealNode) -> Iterator[Client]:
    client = node_bed.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def plane(
    node_bed: RealNode, kube: Client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    # The production RuntimeClass (handler, scheduling) with an overhead this 2-CPU, 24 GiB
    # machine can hold three of: its real overhead (82Gi) is sized for an HGX host.
    rc = runtime_class()
    rc["overhead"] = {"podFixed": {"memory": "64Mi", "cpu": "10m"}}
    delete_if_exists(kube, RuntimeClass, RUNTIME_CLASS_NAME)
    # lightkube types from_dict as returning its DictMixin base, not the class it is called on
    kube.create(cast(RuntimeClass, RuntimeClass.from_dict(rc)))
    try:
        with live_plane(
            tmp_path_factory.mktemp("real-node"),
            backend="kubernetes",
            kubeconfig=str(node_bed.kubeconfig),
            pod_cpu_per_gpu="50m",
            pod_memory_per_gpu="32Mi",
        ) as live:
            yield live
    finally:
        delete_if_exists(kube, RuntimeClass, RUNTIME_CLASS_NAME)


@pytest.fixture(scope="module")
def tenant(plane: Live) -> Iterator[httpx.Client]:
    token = plane.new_tenant(f"node-{RUN}", max_gpus=64, max_containers=64)
    with plane.client(token) as client:
        yield client
        for c in client.get("/v1/containers", params={"limit": 500}).json()["items"]:
            if c["state"] not in FINAL:
                client.delete(f"/v1/containers/{c['id']}")


def run(tenant: httpx.Client, node: RealNode, gpus: int, script: str) -> dict[str, Any]:
    reply = tenant.post(
        "/v1/containers",
        json={"image": node.image, "command": ["sh", "-c", script], "gpus": gpus},
    )
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


def pod_of(kube: Client, container: dict[str, Any]) -> Pod:
    pods = list(kube.list(Pod, namespace="*", labels={"gpucaas.io/container": container["id"]}))
    assert len(pods) == 1, f"{container['id']}: {len(pods)} pods"
    return pods[0]


def modules_of_devices(node: RealNode, device_ids: list[str]) -> list[int]:
    by_id = {g.device_id: int(g.module_id) for g in node.gpus}
    return sorted(by_id[d] for d in device_ids)


def vfio_listing(log: str) -> dict[str, str]:
    """``ls -l /dev/vfio`` lines → {name: mode string}."""
    out = {}
    for line in log.splitlines():
        fields = line.split()
        if len(fields) >= 9 and fields[0][:1] in "cbd-l":
            out[fields[-1]] = fields[0]
    return out


def logs(tenant: httpx.Client, cid: str) -> str:
    reply = tenant.get(f"/v1/containers/{cid}/logs")
    assert reply.status_code == 200, reply.text
    return reply.text


def expected_groups(node: RealNode, modules: list[int]) -> set[str]:
    return {str(g.iommu_group) for g in node.gpus if int(g.module_id) in modules}


def test_a_two_gpu_container_gets_exactly_its_partition_on_the_real_kubelet(
    node_bed: RealNode, plane: Live, tenant: httpx.Client, kube: Client
) -> None:
    node = node_bed
    t0 = time.monotonic()
    c = run(tenant, node, 2, "ls -l /dev/vfio; env | grep ^GPUCAAS_ | sort; sleep 6")
    body = wait_state(tenant, c["id"], {"running"} | FINAL, timeout=BOOT_TIMEOUT)
    submit_to_running = time.monotonic() - t0
    assert body["state"] == "running", body
    part = body["partition"]
    assert part["board"] == node.name
    assert H100.partition_for(part["module_ids"]).id == part["partition_id"]
    assert len(part["module_ids"]) == 2

    # While it runs: its partition, and only it, is active in the fabric.
    assert node.active_partitions() == {part["partition_id"]}

    # The Kata cold-plug contract: PodResources Get → device IDs → CDI names → the nodes.
    pod = pod_of(kube, body)
    devices = node.pod_devices(*namespaced_name(pod))
    assert list(devices) == ["main"]
    assert modules_of_devices(node, devices["main"]) == part["module_ids"]
    resolved = {path for d in devices["main"] for path in node.cdi_device_nodes(f"{GPU}={d}")}
    groups = expected_groups(node, part["module_ids"])
    assert resolved == {f"/dev/vfio/{g}" for g in groups} | {"/dev/vfio/vfio"}

    final = wait_state(tenant, c["id"], FINAL, timeout=60)
    assert final["state"] == "succeeded" and final["exit_code"] == 0, final
    out = logs(tenant, c["id"])  # through pods/log on the real kubelet
    listing = vfio_listing(out)
    assert set(listing) == groups | {"vfio"}, out
    assert all(mode.startswith("c") for mode in listing.values()), out
    env = dict(re.findall(r"^(GPUCAAS_[A-Z_]+)=(.*)$", out, re.M))
    # The device plugin's view (BDFs of the devices the kubelet gave) is the control plane's.
    by_bdf = {str(g.bdf): int(g.module_id) for g in node.gpus}
    assert sorted(by_bdf[b] for b in env["GPUCAAS_BDFS"].split(",")) == part["module_ids"]
    assert env["GPUCAAS_PARTITION_ID"] == str(part["partition_id"])

    # After it ends, the device plugin sees the pod gone and deactivates the partition.
    wait_for("the partition to be released", lambda: node.active_partitions() == set(), 45)
    print(
        f"\n[real node] cluster start {node.env['CLUSTER_START_S']} s, node with 8 GPUs "
        f"{node.env['NODE_READY_S']} s, submit→running {submit_to_running:.2f} s",
        file=sys.stderr,
    )


def test_the_kubelet_restarts_the_plugin_re_registers_and_pods_keep_their_devices(
    node_bed: RealNode, plane: Live, tenant: httpx.Client, kube: Client
) -> None:
    node = node_bed
    long = run(tenant, node, 2, "ls /dev/vfio; sleep 600")
    body = wait_state(tenant, long["id"], {"running"} | FINAL, timeout=BOOT_TIMEOUT)
    assert body["state"] == "running", body
    pod = pod_of(kube, body)
    assert pod.status is not None and pod.status.containerStatuses is not None
    before = pod.status.containerStatuses[0]
    devices_before = node.pod_devices(*namespaced_name(pod))
    registrations = _registrations(node)

    node.restart_kubelet()

    wait_for("the plugin to re-register", lambda: _registrations(node) > registrations, 60)
    wait_for("8 GPUs allocatable again", lambda: node.allocatable_gpus(kube) == 8, 60)
    namespace, name = namespaced_name(pod)
    pod = kube.get(Pod, name, namespace=namespace)
    assert pod.status is not None and pod.status.containerStatuses is not None
    after = pod.status.containerStatuses[0]
    assert after.containerID == before.containerID and after.restartCount == 0
    assert after.state is not None and after.state.running is not None
    # Right after a restart the kubelet answers "pod not found" until it has synced its pods
    # from the API server; then the same devices as before.
    assert wait_for(
        "PodResources to list the pod again",
        lambda: _devices_or_none(node, pod) == devices_before,
        30,
    )
    assert node.active_partitions() == {body["partition"]["partition_id"]}

    # A new pod after the restart gets a partition of its own.
    fresh = run(tenant, node, 2, "ls /dev/vfio")
    done = wait_state(tenant, fresh["id"], FINAL, timeout=BOOT_TIMEOUT)
    assert done["state"] == "succeeded" and done["exit_code"] == 0, done
    assert not set(done["partition"]["module_ids"]) & set(body["partition"]["module_ids"])
    assert set(logs(tenant, fresh["id"]).split()) == expected_groups(
        node, done["partition"]["module_ids"]
    ) | {"vfio"}

    assert tenant.delete(f"/v1/containers/{long['id']}").status_code == 200
    wait_state(tenant, long["id"], FINAL, timeout=60)
    wait_for("the partitions to be released", lambda: node.active_partitions() == set(), 45)


def _devices_or_none(node: RealNode, pod: Pod) -> dict[str, list[str]] | None:
    try:
        return node.pod_devices(*namespaced_name(pod))
    except grpc.RpcError:
        return None


def _registrations(node: RealNode) -> float:
    text = node.plugin_metrics()
    match = re.search(
        r'^gpucaas_device_plugin_registrations_total\{result="ok"\} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else 0.0


def test_a_gpu_whose_device_node_disappears_is_unhealthy_until_it_returns(
    node_bed: RealNode, plane: Live, tenant: httpx.Client, kube: Client
) -> None:
    node = node_bed
    gpu = node.gpus[-1]
    node.remove_vfio_node(gpu)
    try:
        wait_for("7 allocatable GPUs", lambda: node.allocatable_gpus(kube) == 7, 30)
        # The device plugin names it for the control plane (with its own, policy-bound
        # identity), and gpucaas places nothing on it: a whole-board container waits.
        wait_for("the annotation", lambda: _annotated(kube, node) == (int(gpu.module_id),), 30)
        wait_for(
            "gpucaas to see the GPU unhealthy",
            lambda: _gpu_state(plane, node, int(gpu.module_id)) == "unhealthy",
            30,
        )
        big = run(tenant, node, 8, "ls /dev/vfio")
        time.sleep(2)
        waiting = tenant.get(f"/v1/containers/{big['id']}").json()
        assert waiting["state"] == "queued", waiting
    finally:
        node.make_vfio_node(gpu)
    wait_for("8 allocatable GPUs again", lambda: node.allocatable_gpus(kube) == 8, 30)
    wait_for("the annotation to go", lambda: _annotated(kube, node) == (), 30)
    done = wait_state(tenant, big["id"], FINAL, timeout=BOOT_TIMEOUT)
    assert done["state"] == "succeeded" and done["exit_code"] == 0, done
    assert done["partition"]["module_ids"] == list(range(1, 9))
    wait_for("the board to be free", lambda: node.active_partitions() == set(), 45)


def _gpu_state(plane: Live, node: RealNode, module_id: int) -> str:
    with plane.admin() as admin:
        fleet = admin.get("/v1/admin/fleet").json()
    [board] = [b for b in fleet["boards"] if b["name"] == node.name]
    [gpu] = [g for g in board["gpus"] if g["module_id"] == module_id]
    return str(gpu["state"])


def _annotated(kube: Client, node: RealNode) -> tuple[int, ...]:
    return parse_unhealthy_annotation(meta(kube.get(Node, node.name)).annotations)


def test_the_admission_policy_lets_the_agent_write_only_its_annotation(
    node_bed: RealNode, kube: Client
) -> None:
    node = node_bed
    other = f"not-this-node-{RUN}"
    kube.create(Node(metadata=ObjectMeta(name=other)))
    agent = agent_client(node)
    try:
        agent.patch(Node, node.name, unhealthy_annotation_patch([3]), patch_type=PatchType.MERGE)
        assert _annotated(kube, node) == (3,)
        agent.patch(Node, node.name, unhealthy_annotation_patch([]), patch_type=PatchType.MERGE)
        assert _annotated(kube, node) == ()
        refused: list[tuple[str, dict[str, Any], str]] = [
            (
                node.name,
                {"metadata": {"labels": {"gpucaas.io/hgx": "false"}}},
                "only the annotation",
            ),
            (node.name, {"metadata": {"annotations": {"x": "y"}}}, "only the annotation"),
            (node.name, {"spec": {"unschedulable": True}}, "only the annotation"),
            (other, unhealthy_annotation_patch([1]), "only the Node it runs on"),
        ]
        for name, patch, message in refused:
            with pytest.raises(ApiError) as caught:
                agent.patch(Node, name, patch, patch_type=PatchType.MERGE)
            status = caught.value.status
            assert status.code == 403 and status.message is not None, patch
            assert message in status.message, patch
        labels = meta(kube.get(Node, node.name)).labels
        assert labels is not None and labels["gpucaas.io/hgx"] == "true"
        spec = kube.get(Node, node.name).spec
        assert spec is not None and not spec.unschedulable
    finally:
        agent.close()
        delete_if_exists(kube, Node, other)


def test_two_two_and_four_fill_the_board_and_a_fourth_pair_waits(
    node_bed: RealNode, plane: Live, tenant: httpx.Client, kube: Client
) -> None:
    node = node_bed
    wait_for("a free board", lambda: node.active_partitions() == set(), 45)
    first = [run(tenant, node, n, "ls /dev/vfio; sleep 600") for n in (2, 2, 4)]
    running = [
        wait_state(tenant, c["id"], {"running"} | FINAL, timeout=BOOT_TIMEOUT) for c in first
    ]
    assert [c["state"] for c in running] == ["running"] * 3, running
    modules = [set(c["partition"]["module_ids"]) for c in running]
    assert set().union(*modules) == set(range(1, 9)) and sum(map(len, modules)) == 8
    assert node.active_partitions() == {c["partition"]["partition_id"] for c in running}
    for c in running:  # every pod got what gpucaas chose, through the kubelet
        pod = pod_of(kube, c)
        devices = node.pod_devices(*namespaced_name(pod))["main"]
        assert modules_of_devices(node, devices) == c["partition"]["module_ids"]

    fourth = run(tenant, node, 2, "ls /dev/vfio")
    time.sleep(2)
    waiting = tenant.get(f"/v1/containers/{fourth['id']}").json()
    assert waiting["state"] == "queued", waiting
    assert not list(kube.list(Pod, namespace="*", labels={"gpucaas.io/container": fourth["id"]})), (
        "a queued container must have no pod on the node yet"
    )

    pair = running[0]
    assert tenant.delete(f"/v1/containers/{pair['id']}").status_code == 200
    done = wait_state(tenant, fourth["id"], FINAL, timeout=BOOT_TIMEOUT + 30)
    assert done["state"] == "succeeded" and done["exit_code"] == 0, done
    assert done["partition"]["module_ids"] == pair["partition"]["module_ids"]
    for c in running[1:]:
        assert tenant.delete(f"/v1/containers/{c['id']}").status_code == 200
    for c in running[1:]:
        wait_state(tenant, c["id"], FINAL, timeout=60)
    wait_for("the board to be free", lambda: node.active_partitions() == set(), 45)
