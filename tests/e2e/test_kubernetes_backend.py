"""The Kubernetes backend on a real kube-apiserver with 100 kwok HGX nodes (the seed's
datacenter): 1,000 containers through the gpucaas HTTP API, bound by gpucaas, never two on
one GPU, always a valid partition; tenant objects; cordon and NotReady; kill -9 and restart.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import (
    Namespace,
    Node,
    Pod,
    ResourceQuota,
    ServiceAccount,
)
from lightkube.resources.networking_v1 import NetworkPolicy

from gpucaas.topology import get_model
from tests.e2e.kube_helpers import (
    GPU,
    NODES,
    annotations_of,
    delete_if_exists,
    labels_of,
    meta,
    pod_spec,
    wait_for,
)
from tests.live_plane import FINAL, Live, live_plane

H100 = get_model("hgx-h100-8")
KWOK_TAINT = "kwok.x-k8s.io/node=fake:NoSchedule"
RUN = uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def plane(
    kube_cluster: Any,
    hgx_nodes: list[str],
    kata_runtime_class: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    with live_plane(
        tmp_path_factory.mktemp("k8s"),
        backend="kubernetes",
        kubeconfig=str(kube_cluster.kubeconfig),
        tolerations=[{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
    ) as live:
        yield live


def tenant_name(base: str) -> str:
    return f"{base}-{RUN}"


@pytest.fixture(scope="module")
def tenants(plane: Live, kube: Client) -> Iterator[dict[str, str]]:
    tokens = {
        "alpha": plane.new_tenant(tenant_name("alpha"), max_gpus=100_000, max_containers=100_000),
        "beta": plane.new_tenant(
            tenant_name("beta"), max_gpus=16, max_containers=100, nfs_exports=["10.9.8.7:/exports"]
        ),
    }
    try:
        yield tokens
    finally:
        for base in tokens:
            with plane.client(tokens[base]) as t:
                for c in t.get("/v1/containers", params={"limit": 500}).json()["items"]:
                    if c["state"] not in FINAL:
                        t.delete(f"/v1/containers/{c['id']}")
            delete_if_exists(kube, Namespace, f"gpucaas-{tenant_name(base)}")


def submit(client: httpx.Client, gpus: int, **extra: Any) -> dict[str, Any]:
    r = client.post(
        "/v1/containers",
        json={"image": "registry.invalid/train:1", "command": ["train"], "gpus": gpus, **extra},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def ids_in(client: httpx.Client, state: str) -> set[str]:
    """Every container of the client's tenant in ``state`` (all pages)."""
    out: set[str] = set()
    token = None
    while True:
        params: dict[str, Any] = {"limit": 500, "state": state}
        if token:
            params["page_token"] = token
        page = client.get("/v1/containers", params=params).json()
        out |= {c["id"] for c in page["items"]}
        token = page["next_page_token"]
        if not token:
            return out


def holding(plane: Live) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with plane.admin() as a:
        token = None
        while True:
            params: dict[str, Any] = {"limit": 500, "state": ["placing", "starting", "running"]}
            if token:
                params["page_token"] = token
            page = a.get("/v1/containers", params=params).json()
            out += page["items"]
            token = page["next_page_token"]
            if not token:
                return out


def check_gpu_sets(plane: Live, kube: Client) -> dict[str, Pod]:
    """Store and cluster agree; per node, GPU sets never overlap and are partitions."""
    held = holding(plane)
    used: dict[str, list[int]] = defaultdict(list)
    for c in held:
        part = c["partition"]
        assert H100.partition_for(part["module_ids"]).id == part["partition_id"]
        used[part["board"]] += part["module_ids"]
    for board, modules in used.items():
        assert len(modules) == len(set(modules)), f"{board}: a GPU is held twice: {modules}"
    pods = {
        labels_of(p)["gpucaas.io/container"]: p
        for p in kube.list(Pod, namespace="*", labels={"gpucaas.io/container": None})
        if p.status
        and p.status.phase not in ("Succeeded", "Failed")
        and meta(p).deletionTimestamp is None
    }
    running = {c["id"]: c for c in held if c["state"] == "running"}
    for cid, c in running.items():
        pod = pods.get(cid)
        assert pod is not None, f"{cid} is running in the store but has no pod"
        assert pod_spec(pod).nodeName == c["partition"]["board"], cid
        assert pod_spec(pod).schedulerName == "gpucaas"
        assert annotations_of(pod)["gpucaas.io/module-ids"] == ",".join(
            map(str, c["partition"]["module_ids"])
        )
        resources = pod_spec(pod).containers[0].resources
        assert resources is not None and resources.limits is not None
        assert resources.limits[GPU] == str(c["gpus_granted"])
    stray = set(pods) - {c["id"] for c in held}
    assert not stray, f"pods without a container holding GPUs: {sorted(stray)[:5]}"
    return pods


def test_tenant_objects(plane: Live, kube: Client, tenants: dict[str, str]) -> None:
    ns = f"gpucaas-{tenant_name('beta')}"
    namespace = kube.get(Namespace, ns)
    assert labels_of(namespace)["gpucaas.io/tenant"] == tenant_name("beta")
    quota = kube.get(ResourceQuota, "gpucaas", namespace=ns)
    assert quota.spec is not None
    assert quota.spec.hard == {f"requests.{GPU}": "16", "count/pods": "100"}
    sa = kube.get(ServiceAccount, "gpucaas-tenant", namespace=ns)
    assert sa.automountServiceAccountToken is False
    policy = kube.get(NetworkPolicy, "gpucaas-tenant-isolation", namespace=ns)
    assert policy.spec is not None
    assert policy.spec.policyTypes == ["Ingress", "Egress"]
    selector = policy.spec.podSelector
    assert selector is not None and selector.matchLabels is None  # every pod of the tenant
    egress = policy.spec.egress
    assert egress is not None
    cidrs = [peer.ipBlock.cidr for rule in egress for peer in (rule.to or []) if peer.ipBlock]
    assert cidrs == ["10.9.8.7/32"]  # the tenant's NFS server, and nothing else outside
    assert any(p.port == 53 for rule in egress for p in (rule.ports or []))


def test_a_thousand_containers_on_a_hundred_boards(
    plane: Live, kube: Client, tenants: dict[str, str]
) -> None:
    rng = random.Random(7)
    sizes = rng.choices([1, 2, 3, 4, 8], weights=[40, 25, 5, 20, 10], k=1000)
    with plane.client(tenants["alpha"]) as t, ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda g: submit(t, g), sizes))
    assert len({c["id"] for c in made}) == 1000
    granted = sum(c["gpus_granted"] for c in made)
    assert granted > NODES * 8  # more than the fleet: some must queue

    def settled() -> bool:
        held = holding(plane)
        if any(c["state"] != "running" for c in held):
            return False
        # Nothing queued fits any more: the free GPUs of every board are fewer than asked.
        granted: int = sum(c["gpus_granted"] for c in held)
        return granted >= NODES * 8 - 64

    wait_for("the fleet to fill", settled, timeout=240)
    pods = check_gpu_sets(plane, kube)
    per_node = Counter(pod_spec(p).nodeName for p in pods.values())
    assert len(per_node) == NODES
    with plane.admin() as a:
        fleet = a.get("/v1/admin/fleet").json()
    assert fleet["queued"] > 0

    # Queued containers start as others finish.
    with plane.client(tenants["alpha"]) as t:
        waiting = ids_in(t, "queued")
        running = [c for c in holding(plane) if c["state"] == "running"][:40]
        for c in running:
            assert t.delete(f"/v1/containers/{c['id']}").status_code == 200
        wait_for(
            "stopped containers' pods to go",
            lambda: all(
                t.get(f"/v1/containers/{c['id']}").json()["state"] == "stopped" for c in running
            ),
        )

        def started() -> bool:
            return len(waiting & ids_in(t, "running")) >= 10

        wait_for("queued containers to start on the freed GPUs", started)
    check_gpu_sets(plane, kube)


def test_quota_holds(plane: Live, tenants: dict[str, str]) -> None:
    with plane.client(tenants["beta"]) as t:
        a = submit(t, 8)
        b = submit(t, 8)
        r = t.post("/v1/containers", json={"image": "x", "gpus": 1})
        assert r.status_code == 429 and "16 of 16 GPUs" in r.json()["error"]["message"]
        for c in (a, b):
            t.delete(f"/v1/containers/{c['id']}")


def test_other_tenants_see_nothing(plane: Live, tenants: dict[str, str]) -> None:
    with plane.client(tenants["alpha"]) as a, plane.client(tenants["beta"]) as b:
        theirs = a.get("/v1/containers", params={"limit": 1}).json()["items"][0]
        assert b.get(f"/v1/containers/{theirs['id']}").status_code == 404
        assert b.get(f"/v1/containers/{theirs['id']}/logs").status_code == 404
        assert all(
            c["tenant"] == tenant_name("beta") for c in b.get("/v1/containers").json()["items"]
        )


def test_cordoned_and_not_ready_nodes_get_no_new_containers(
    plane: Live, kube: Client, tenants: dict[str, str], hgx_nodes: list[str]
) -> None:
    with plane.client(tenants["alpha"]) as t:
        # Free the whole fleet first, so every board could take new work.
        for cid in ids_in(t, "queued") | ids_in(t, "running"):
            t.delete(f"/v1/containers/{cid}")
        wait_for("an empty fleet", lambda: not ids_in(t, "running") and not holding(plane))
        # A 4-GPU container whose board is about to go NotReady: it is reported, not moved.
        victim = submit(t, 4)
        wait_for(
            "it to run",
            lambda: t.get(f"/v1/containers/{victim['id']}").json()["state"] == "running",
        )
        not_ready = t.get(f"/v1/containers/{victim['id']}").json()["partition"]["board"]
        cordoned = next(n for n in hgx_nodes if n != not_ready)
        kube.patch(Node, cordoned, {"spec": {"unschedulable": True}})
        # kwok keeps its nodes Ready: stop it managing this one, then report it NotReady.
        kube.patch(Node, not_ready, {"metadata": {"annotations": {"kwok.x-k8s.io/node": None}}})
        kube.patch(
            Node.Status,
            not_ready,
            {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Test"}]}},
        )
        try:
            with plane.admin() as a:
                wait_for(
                    "the fleet view to close both boards",
                    lambda: all(
                        b["cordoned"]
                        for b in a.get("/v1/admin/fleet").json()["boards"]
                        if b["name"] in (cordoned, not_ready)
                    ),
                )
            events = t.get(f"/v1/containers/{victim['id']}/events").json()["items"]
            assert any(e["reason"] == "NodeNotReady" for e in events), events
            made = [submit(t, 8)["id"] for _ in range(NODES - 2)]
            wait_for("98 more containers running", lambda: len(ids_in(t, "running")) == NODES - 1)
            boards = [c["partition"]["board"] for c in holding(plane) if c["id"] != victim["id"]]
            assert cordoned not in boards and not_ready not in boards
            assert t.get(f"/v1/containers/{victim['id']}").json()["state"] == "running"
            extra = submit(t, 1)
            time.sleep(2)
            assert t.get(f"/v1/containers/{extra['id']}").json()["state"] == "queued"
            for cid in [*made, extra["id"], victim["id"]]:
                t.delete(f"/v1/containers/{cid}")
        finally:
            kube.patch(Node, cordoned, {"spec": {"unschedulable": False}})
            kube.patch(
                Node, not_ready, {"metadata": {"annotations": {"kwok.x-k8s.io/node": "fake"}}}
            )


def test_removing_a_tenant_deletes_its_namespace(plane: Live, kube: Client) -> None:
    name = tenant_name("gamma")
    token = plane.new_tenant(name, max_gpus=8, max_containers=4)
    ns = f"gpucaas-{name}"
    assert labels_of(kube.get(Namespace, ns))["gpucaas.io/tenant"] == name
    with plane.client(token) as t:
        c = submit(t, 2)
        wait_for(
            "it to run", lambda: t.get(f"/v1/containers/{c['id']}").json()["state"] == "running"
        )
        with plane.admin() as a:
            r = a.delete(f"/v1/admin/tenants/{name}")
            assert r.status_code == 409 and "unfinished" in r.text  # its container runs
            t.delete(f"/v1/containers/{c['id']}")
            wait_for(
                "it to stop",
                lambda: t.get(f"/v1/containers/{c['id']}").json()["state"] == "stopped",
            )
            assert a.delete(f"/v1/admin/tenants/{name}").status_code == 204

    def going() -> bool:
        try:
            return meta(kube.get(Namespace, ns)).deletionTimestamp is not None
        except ApiError as exc:
            return exc.status.code == 404

    wait_for("the tenant's namespace to go", going)
