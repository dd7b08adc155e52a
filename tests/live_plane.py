"""A real control plane for tests: ``ControlPlane`` served by uvicorn on a loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gpucaas.control import ControlPlane, ControlPlaneConfig, Credentials, LocalBackend

FINAL = {"succeeded", "failed", "stopped", "lost"}


@dataclass
class Live:
    url: str
    creds: Credentials
    plane: ControlPlane

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(self.creds.admin_token)

    def tenant(self) -> httpx.Client:
        return self.client(self.creds.tenant_token)

    def new_tenant(self, name: str, **quota: Any) -> str:
        with self.admin() as a:
            r = a.post("/v1/admin/tenants", json={"name": name, **quota})
            assert r.status_code == 201, r.text
            return str(r.json()["token"]["token"])


def free_port() -> int:
    """A loopback port nobody listens on (for servers started as subprocesses)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


GPUCAAS = Path(sys.executable).with_name("gpucaas")
"""The console script of this environment (what a user runs)."""


def start_up_process(
    state_dir: Path, port: int, log: Path, extra: Sequence[str] = (), budget_s: float = 60.0
) -> subprocess.Popen[bytes]:
    """``gpucaas up`` as a subprocess (2 boards, process executor) on 127.0.0.1:``port``,
    stdout and stderr appended to ``log``; returns once ``/healthz`` answers 200 (fails with the log
    if it exits or does not answer within ``budget_s``)."""
    argv = [str(GPUCAAS), "up", "--state-dir", str(state_dir), "--nodes", "2"]
    argv += ["--executor", "process", "--unsafe-process", "--listen", f"127.0.0.1:{port}"]
    with log.open("ab") as err:
        proc = subprocess.Popen([*argv, *extra], stdout=err, stderr=err)
    deadline = time.monotonic() + budget_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"gpucaas up did not answer in {budget_s:g} s"
        time.sleep(0.1)


def wait_state(
    client: httpx.Client, cid: str, states: set[str], timeout: float = 15.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/v1/containers/{cid}").json()
        if body["state"] in states:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{cid} stayed {body['state']} ({body['reason']}), not {states}")
        time.sleep(0.05)


@contextmanager
def live_plane(state_dir: Path, **config: Any) -> Iterator[Live]:
    config.setdefault("nodes", 4)
    config.setdefault("executor", "process")
    plane = ControlPlane(ControlPlaneConfig(state_dir=state_dir, grace_s=2.0, **config))
    server = uvicorn.Server(
        uvicorn.Config(plane.app, host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    try:
        plane.start()
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        creds = plane.bootstrap(url)
        assert creds is not None
        yield Live(url, creds, plane)
    finally:
        plane.followers.close()  # open log streams end, as in serve(); the server can stop
        server.should_exit = True
        thread.join(timeout=10)
        _stop_everything(plane)
        plane.stop()


def _stop_everything(plane: ControlPlane) -> None:
    """Stop every container still holding GPUs, so no process outlives the test."""
    backend = plane.backend
    if not isinstance(backend, LocalBackend):  # a Kubernetes backend's pods are the cluster's
        return
    for cid in plane.scheduler.container_ids().values():
        try:
            backend.executor.stop(cid, backend.directory(cid), 0.5)
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
