"""Kubernetes backend benchmark: a 1,000-container burst bound by gpucaas on a real apiserver.

Starts the test bed of ``scripts/k8s-testbed`` (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok; built from source with Go and cached), makes 100 kwok nodes labelled as
``hgx-h100-8`` boards (8 GPUs each: the seed's datacenter) and the Kata RuntimeClass, then:

1. **gpucaas**: ``gpucaas up --backend kubernetes`` as a subprocess; 1,000 containers of mixed
   sizes are submitted through the HTTP API at once (8 concurrent clients). For every
   container that got GPUs, *submit → bound* is the time from sending its POST to a WATCH
   first showing its pod bound to a node (created and bound through ``pods/binding``; the
   client's clock for both). Binding throughput = containers bound / (last bound − first
   submit).
2. **baseline**: the same burst as plain pods (same GPU requests, the counts gpucaas granted)
   created directly for the default kube-scheduler, in the same run on the same cluster:
   pods/s bound and create → bound latency. The default scheduler counts GPUs: it never picks
   a partition, so how many of its placements Fabric Manager would accept is not known here
   (``gpucaas sim --policy count-only`` measures that); the comparison is speed only.

Times are reported, never asserted. Needs Go (or cached binaries); says so and exits 0 without.

Run: .venv/bin/python benchmarks/bench_kubernetes.py [--containers N]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from lightkube import ApiError, Client, KubeConfig, codecs
from lightkube.models.core_v1 import (
    Container,
    NodeSpec,
    NodeStatus,
    PodSpec,
    ResourceRequirements,
    Taint,
    Toleration,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Node, Pod

from gpucaas.runtime import runtime_class

REPO = Path(__file__).resolve().parents[1]
TESTBED = REPO / "scripts" / "k8s-testbed"
NODES = 100
GPU = "nvidia.com/gpu"
SIZES = ([1, 2, 3, 4, 8], [40, 25, 5, 20, 10])
KWOK = "kwok.x-k8s.io/node"


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def row(name: str, values: Sequence[float]) -> str:
    if not values:
        return f"{name:<34}{'n/a':>8}"
    ms = [1000 * v for v in values]
    return (
        f"{name:<34}{len(ms):>6}{percentile(ms, 50):>10.1f}{percentile(ms, 90):>10.1f}"
        f"{percentile(ms, 99):>10.1f}{max(ms):>10.1f}"
    )


@contextmanager
def testbed() -> Iterator[Path]:
    build = subprocess.run([str(TESTBED), "build"], check=False)
    if build.returncode == 3:
        print("Go is not installed and no cached binaries: nothing to measure (see README).")
        sys.exit(0)
    build.check_returncode()
    workdir = Path(tempfile.mkdtemp(prefix="gpucaas-bench-k8s-"))
    out = subprocess.run(
        [str(TESTBED), "start", str(workdir), "--kwok"], capture_output=True, text=True, check=True
    )
    try:
        yield Path(out.stdout.strip())
    finally:
        subprocess.run([str(TESTBED), "stop", str(workdir)], check=False)


def make_fleet(kube: Client) -> None:
    kube.apply(codecs.from_dict(runtime_class()), force=True)
    capacity = {"cpu": "224", "memory": "2Ti", "pods": "110", GPU: "8"}
    for i in range(NODES):
        name = f"hgx-{i:03d}"
        kube.create(
            Node(
                metadata=ObjectMeta(
                    name=name,
                    annotations={KWOK: "fake"},
                    labels={
                        "type": "kwok",
                        "kubernetes.io/hostname": name,
                        "gpucaas.io/hgx": "true",
                        "gpucaas.io/board-model": "hgx-h100-8",
                    },
                ),
                spec=NodeSpec(taints=[Taint(key=KWOK, value="fake", effect="NoSchedule")]),
                status=NodeStatus(capacity=capacity, allocatable=capacity),
            )
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready = sum(
            1
            for n in kube.list(Node, labels={"gpucaas.io/hgx": "true"})
            for c in (n.status.conditions if n.status else None) or []
            if c.type == "Ready" and c.status == "True"
        )
        if ready == NODES:
            return
        time.sleep(0.5)
    raise SystemExit("kwok nodes did not become Ready")


class BindWatch:
    """Records, from a WATCH, when each pod of a namespace was first seen bound to a node
    (the client's clock, like the submit and create times it is compared with)."""

    def __init__(self, config: Any, namespace: str) -> None:
        self.bound: dict[str, float] = {}
        self._stop = threading.Event()
        self._client = Client(config, field_manager="bench-watch")
        self._thread = threading.Thread(target=self._run, args=(namespace,), daemon=True)
        self._thread.start()

    def _run(self, namespace: str) -> None:
        while not self._stop.is_set():
            try:
                for _, pod in self._client.watch(Pod, namespace=namespace, server_timeout=5):
                    if pod.spec and pod.spec.nodeName and pod.metadata and pod.metadata.name:
                        self.bound.setdefault(pod.metadata.name, time.time())
                    if self._stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - namespace not there yet, timeouts: again
                time.sleep(0.2)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_gpucaas(
    kubeconfig: Path, config: Any, sizes: list[int]
) -> list[tuple[int, float, float | None]]:
    """(GPUs granted, submit→bound s, submit→running s) of each container that got GPUs."""
    watch = BindWatch(config, "gpucaas-bench")
    state = Path(tempfile.mkdtemp(prefix="gpucaas-bench-state-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gpucaas = str(Path(sys.executable).with_name("gpucaas"))
    argv = [gpucaas, "up", "--backend", "kubernetes", "--kubeconfig", str(kubeconfig)]
    argv += ["--state-dir", str(state), "--listen", f"127.0.0.1:{port}"]
    argv += ["--toleration", f"{KWOK}=fake:NoSchedule"]
    with open(state / "server.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        creds = json.loads((state / "credentials.json").read_text())
        admin = {"Authorization": f"Bearer {creds['admin_token']}"}
        tenant = httpx.post(
            f"{url}/v1/admin/tenants",
            headers=admin,
            json={"name": "bench", "max_gpus": 100_000, "max_containers": 100_000},
        ).json()
        auth = {"Authorization": f"Bearer {tenant['token']['token']}"}
        with httpx.Client(base_url=url, headers=auth, timeout=60) as api:
            submitted: dict[str, float] = {}

            def submit(gpus: int) -> str:
                body = {"image": "registry.invalid/train:1", "gpus": gpus}
                at = time.time()
                cid = str(api.post("/v1/containers", json=body).json()["id"])
                submitted[cid] = at
                return cid

            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(submit, sizes))
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                page = api.get("/v1/containers", params={"state": ["placing", "starting"]})
                if not page.json()["items"]:
                    break
                time.sleep(0.5)
            time.sleep(1)
            out: list[tuple[int, float, float | None]] = []
            for cid in ids:
                c = api.get(f"/v1/containers/{cid}").json()
                stamps = c["timestamps"]
                seen = watch.bound.get(f"c-{cid}")
                if seen is not None:
                    queued = ts(stamps["queued"])
                    running = ts(stamps["running"]) - queued if "running" in stamps else None
                    out.append((c["gpus_granted"], seen - submitted[cid], running))
            for cid in ids:
                api.delete(f"/v1/containers/{cid}")
        return out
    finally:
        watch.close()
        proc.terminate()
        proc.wait(timeout=30)


def run_default_scheduler(kube: Client, config: Any, gpus: list[int]) -> list[float]:
    """create → bound of the same pods for the default scheduler (unbound ones left out)."""
    ns = "bench-default"
    kube.create(Namespace(metadata=ObjectMeta(name=ns)))
    watch = BindWatch(config, ns)
    toleration = Toleration(key=KWOK, operator="Exists", effect="NoSchedule")
    created: dict[str, float] = {}
    try:

        def create(item: tuple[int, int]) -> None:
            i, n = item
            name = f"p{i:04d}"
            pod = Pod(
                metadata=ObjectMeta(name=name, namespace=ns),
                spec=PodSpec(
                    tolerations=[toleration],
                    nodeSelector={"gpucaas.io/hgx": "true"},
                    containers=[
                        Container(
                            name="main",
                            image="registry.invalid/train:1",
                            resources=ResourceRequirements(
                                requests={GPU: str(n)}, limits={GPU: str(n)}
                            ),
                        )
                    ],
                ),
            )
            created[name] = time.time()
            kube.create(pod)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, enumerate(gpus)))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(watch.bound) < len(gpus):
            pending = [
                p
                for p in kube.list(Pod, namespace=ns)
                if p.spec and not p.spec.nodeName and p.status and p.status.conditions
            ]
            if len(pending) + len(watch.bound) >= len(gpus):
                break  # the rest were tried and found unschedulable
            time.sleep(1)
        time.sleep(2)
        return [watch.bound[n] - created[n] for n in watch.bound]
    finally:
        watch.close()
        try:
            kube.delete(Namespace, ns)
        except ApiError:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--containers", type=int, default=1000)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    sizes = rng.choices(*SIZES, k=args.containers)
    print(
        f"{args.containers} containers (sizes {dict(zip(*SIZES, strict=True))} by weight) on "
        f"{NODES} kwok hgx-h100-8 nodes = {NODES * 8} GPUs; 2-CPU machine, apiserver, etcd and "
        "client on it too"
    )
    with testbed() as kubeconfig:
        config = KubeConfig.from_file(str(kubeconfig)).get()
        kube = Client(config, field_manager="bench")
        make_fleet(kube)
        started = time.time()
        placed = run_gpucaas(kubeconfig, config, sizes)
        wall = time.time() - started
        bound = [b for _, b, _ in placed]
        # The same burst for the default scheduler: the pods gpucaas bound, same GPU counts.
        asked = [g for g, _, _ in placed]
        baseline = run_default_scheduler(kube, config, asked)
        kube.close()
    print(f"\n{'':<34}{'n':>6}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}   (ms)")
    print(row("gpucaas: submit → bound", bound))
    print(row("default scheduler: create → bound", baseline))
    gpus = sum(g for g, _, _ in placed)
    rate = len(bound) / max(bound) if bound else 0.0
    base_rate = len(baseline) / max(baseline) if baseline else 0.0
    print(
        f"\ngpucaas bound {len(bound)} containers ({gpus} GPUs of {NODES * 8}; the rest queued) "
        f"at {rate:.0f} pods/s (whole run incl. submits {wall:.0f} s).\nThe default scheduler, "
        f"given the same {len(asked)} pods, bound {len(baseline)} at {base_rate:.0f} pods/s "
        f"(ratio gpucaas/default {rate / base_rate if base_rate else float('nan'):.2f}×); "
        f"{len(asked) - len(baseline)} stayed Pending: counting GPUs, it left no node with "
        "enough free GPUs in one place for them."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
