"""Real-node benchmark: submit → running of GPU containers on a real kubelet, against plain pods.

Starts the test bed's real node (``scripts/k8s-testbed start --node``: kubelet + containerd
2.x with CDI + runc, root only) with gpucaas's node agent on fake GPUs — the same set-up as
``tests/e2e/test_real_node.py``, imported from there (the sysfs fixture and the node agent's
wiring are test helpers; duplicating them here would let the two drift) — then, one at a time:

1. **gpucaas**: a 2-GPU container through the gpucaas HTTP API (Kubernetes backend): submit
   (POST) → the API says ``running``. The path: API + store, placement, pod create and
   ``pods/binding``, the kubelet's GetPreferredAllocation/Allocate/PreStartContainer to our
   device plugin (which activates the partition through the fm-controller), containerd's CDI
   injection, runc.
2. **baseline**: the pod gpucaas created (same namespace and quota, same requests including
   2 GPUs, RuntimeClass, image and command) created directly for the default scheduler:
   create → the pod's phase is Running, read with the same polling interval. The kubelet, our
   device plugin (Allocate, PreStartContainer with the fabric activation), containerd's CDI
   injection and runc do the same work for it.

Each container sleeps 1 s and is waited for before the next (one board). The ratio says what
gpucaas's own path (API, store, placement, pod create + ``pods/binding``, following the pod
to running) costs against the default scheduler's on the same pod; runc stands in
for Kata, so neither includes a VM boot (``gpucaas node boot-budget`` estimates that). Times
are reported, never asserted. Skips (exit 0, saying why) without root, runc, the CNI plugins,
a static busybox, or Go/cached binaries.

Run: sudo .venv/bin/python benchmarks/bench_real_node.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from lightkube import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod
from lightkube.resources.node_v1 import RuntimeClass

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests package: its live plane and real node

from tests.e2e.kube_helpers import meta, pod_spec  # noqa: E402
from tests.e2e.real_node import missing_prerequisite, real_node  # noqa: E402
from tests.live_plane import FINAL, live_plane  # noqa: E402

from gpucaas.runtime import runtime_class  # noqa: E402

POLL_S = 0.02


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<9} n={len(values)}  p50 {_pct(values, 0.5) * 1000:7.0f} ms  "
        f"p90 {_pct(values, 0.9) * 1000:7.0f} ms  mean {statistics.fmean(values) * 1000:7.0f} ms"
    )


def gpucaas_round(tenant: Any, image: str) -> float:
    t0 = time.monotonic()
    reply = tenant.post(
        "/v1/containers", json={"image": image, "command": ["sh", "-c", "sleep 1"], "gpus": 2}
    )
    assert reply.status_code == 201, reply.text
    cid = reply.json()["id"]
    while True:
        state = tenant.get(f"/v1/containers/{cid}").json()["state"]
        if state == "running":
            took = time.monotonic() - t0
            break
        assert state not in FINAL, f"{cid} ended {state} before running"
        time.sleep(POLL_S)
    while tenant.get(f"/v1/containers/{cid}").json()["state"] not in FINAL:
        time.sleep(0.1)
    return took


def baseline_round(kube: Any, template: Pod, i: int) -> float:
    """The pod gpucaas made last (same namespace, quota, resources with 2 GPUs, RuntimeClass,
    image), created directly for the default scheduler: the device plugin, containerd and
    runc do the same work; gpucaas's API, store, placement and binding are left out."""
    # lightkube types from_dict as returning its DictMixin base, not the class it is called on
    pod = cast(Pod, Pod.from_dict(template.to_dict()))
    namespace = meta(pod).namespace
    name = f"plain-{i}"
    pod.metadata = ObjectMeta(name=name, namespace=namespace)  # no gpucaas labels: not ours
    pod_spec(pod).nodeName = None
    pod_spec(pod).schedulerName = None
    pod.status = None
    t0 = time.monotonic()
    kube.create(pod)
    while True:
        phase = kube.get(Pod, name, namespace=namespace).status.phase
        if phase == "Running":
            took = time.monotonic() - t0
            break
        assert phase not in ("Succeeded", "Failed"), f"{name} ended {phase} before running"
        time.sleep(POLL_S)
    while kube.get(Pod, name, namespace=namespace).status.phase not in ("Succeeded", "Failed"):
        time.sleep(0.1)
    kube.delete(Pod, name, namespace=namespace, grace_period=0)
    while True:  # its GPUs back before the next gpucaas round
        try:
            kube.get(Pod, name, namespace=namespace)
        except ApiError:
            return took
        time.sleep(0.05)


def last_gpucaas_pod(kube: Any) -> Pod:
    pods = list(kube.list(Pod, namespace="*", labels={"gpucaas.io/container": None}))
    newest: Pod = max(pods, key=lambda p: p.metadata.creationTimestamp)
    return newest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    why = missing_prerequisite()
    if why:
        print(f"bench_real_node: skipped: {why}")
        return
    with real_node(runtime_config=True) as node:
        print(
            f"test bed + real node: cluster start {node.env['CLUSTER_START_S']} s, "
            f"node with 8 GPUs advertised {node.env['NODE_READY_S']} s"
        )
        kube = node.client()
        rc = runtime_class()
        rc["overhead"] = {"podFixed": {"memory": "64Mi", "cpu": "10m"}}
        kube.create(cast(RuntimeClass, RuntimeClass.from_dict(rc)))
        with (
            tempfile.TemporaryDirectory(prefix="gpucaas-bench-node-") as state,
            live_plane(
                Path(state),
                backend="kubernetes",
                kubeconfig=str(node.kubeconfig),
                pod_cpu_per_gpu="50m",
                pod_memory_per_gpu="32Mi",
            ) as live,
        ):
            token = live.new_tenant("bench", max_gpus=8, max_containers=100)
            with live.client(token) as tenant:
                gpucaas_round(tenant, node.image)  # warm-up: tenant namespace, first pod
                template = last_gpucaas_pod(kube)
                baseline_round(kube, template, -1)
                ours, plain = [], []
                for i in range(args.rounds):  # interleaved: drift hits both alike
                    ours.append(gpucaas_round(tenant, node.image))
                    plain.append(baseline_round(kube, template, i))
        print(_summary("gpucaas", ours))
        print(_summary("baseline", plain))
        ratio = statistics.median(ours) / statistics.median(plain)
        print(
            f"submit→running, 2-GPU container via gpucaas vs the same pod via the default "
            f"scheduler: "
            f"{ratio:.2f}× (median)"
        )


if __name__ == "__main__":
    main()
