"""kill -9 of a `gpucaas up --backend kubernetes` during a burst of submissions, then a
restart, against a real kube-apiserver with 100 kwok HGX nodes (its own module: one control
plane per cluster, so the other module's control plane is gone by now)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
from lightkube import Client
from lightkube.resources.core_v1 import Namespace, Pod

from tests.e2e.kube_helpers import delete_if_exists, labels_of, meta, pod_spec, wait_for
from tests.live_plane import free_port

KWOK_TAINT = "kwok.x-k8s.io/node=fake:NoSchedule"
TENANT = "crash"


def test_kill9_during_a_burst_then_restart(
    kube_cluster: Any,
    kube: Client,
    hgx_nodes: list[str],
    kata_runtime_class: str,
    tmp_path: Path,
) -> None:
    """A separate `gpucaas up --backend kubernetes` is killed -9 while 300 containers arrive;
    after a restart no pod is bound twice, none is lost, and store and cluster agree."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        str(Path(sys.executable).with_name("gpucaas")),
        "up",
        "--backend",
        "kubernetes",
        "--kubeconfig",
        str(kube_cluster.kubeconfig),
        "--state-dir",
        str(tmp_path),
        "--listen",
        f"127.0.0.1:{port}",
        "--toleration",
        KWOK_TAINT,
    ]

    def start() -> subprocess.Popen[bytes]:
        with open(tmp_path / "server.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log)
        wait_for("gpucaas up", lambda: _healthy(url) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
        return proc

    proc = start()
    try:
        creds = json.loads((tmp_path / "credentials.json").read_text())
        admin = {"Authorization": f"Bearer {creds['admin_token']}"}
        made = httpx.post(
            f"{url}/v1/admin/tenants",
            headers=admin,
            json={"name": TENANT, "max_gpus": 100_000, "max_containers": 100_000},
        ).json()
        auth = {"Authorization": f"Bearer {made['token']['token']}"}
        accepted: list[str] = []
        stop = threading.Event()

        def burst() -> None:
            rng = random.Random(3)
            with httpx.Client(base_url=url, headers=auth, timeout=2) as c:
                while not stop.is_set() and len(accepted) < 300:
                    try:
                        r = c.post(
                            "/v1/containers",
                            json={
                                "image": "registry.invalid/x:1",
                                "gpus": rng.choice([1, 2, 4, 8]),
                            },
                        )
                        if r.status_code == 201:
                            accepted.append(r.json()["id"])
                    except httpx.TransportError:
                        time.sleep(0.1)

        sender = threading.Thread(target=burst)
        sender.start()
        wait_for("the burst to be under way", lambda: len(accepted) >= 100)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = start()
        sender.join(timeout=120)
        stop.set()
        assert len(accepted) >= 100
        with httpx.Client(base_url=url, headers=auth, timeout=10) as t:
            last: Counter[str] = Counter()

            def settled() -> bool:
                last.clear()
                last.update(t.get(f"/v1/containers/{cid}").json()["state"] for cid in accepted)
                return last.keys() <= {"running", "queued"} and last["running"] > 0

            try:
                wait_for("every accepted container to run or queue", settled, timeout=180)
            except AssertionError:
                log = (tmp_path / "server.log").read_text()[-3000:]
                raise AssertionError(f"states {dict(last)}; server log:\n{log}") from None
            # Every container of the tenant: a request whose 201 the kill cut off may exist too.
            seen: dict[str, Any] = {}
            token = None
            while True:
                params: dict[str, Any] = {"limit": 500, **({"page_token": token} if token else {})}
                page = t.get("/v1/containers", params=params).json()
                seen |= {c["id"]: c for c in page["items"]}
                token = page["next_page_token"]
                if not token:
                    break
            assert set(accepted) <= set(seen)
        assert not [c for c in seen.values() if c["state"] == "lost"]
        pods = [
            p
            for p in kube.list(Pod, namespace=f"gpucaas-{TENANT}")
            if meta(p).deletionTimestamp is None
        ]
        by_container = Counter(labels_of(p)["gpucaas.io/container"] for p in pods)
        assert max(by_container.values()) == 1  # one pod per container, never two
        running = {
            cid: c for cid, c in seen.items() if c["state"] in ("placing", "starting", "running")
        }
        diff = set(by_container) ^ set(running)
        assert not diff, {cid: seen[cid]["state"] for cid in diff}  # store and cluster agree
        used: dict[str, list[int]] = defaultdict(list)
        for p in pods:
            c = running[labels_of(p)["gpucaas.io/container"]]
            node_name = pod_spec(p).nodeName
            assert node_name is not None and node_name == c["partition"]["board"]
            used[node_name] += c["partition"]["module_ids"]
        assert all(len(m) == len(set(m)) for m in used.values())
        with httpx.Client(base_url=url, headers=auth, timeout=10) as t:
            for cid in seen:
                t.delete(f"/v1/containers/{cid}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        delete_if_exists(kube, Namespace, f"gpucaas-{TENANT}")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
