"""kill -9 of ``gpucaas up`` while containers run and requests arrive, then a restart.

Every container is re-adopted (its supervisor outlived the control plane) or ends with how it
ended (exit code read from the supervisor's files) or is ``lost`` with a reason; no GPU is
allocated twice; the fabric holds exactly the partitions of the containers that hold GPUs;
every request that got a 201 exists after the restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_plane import FINAL, free_port, start_up_process


class Server:
    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir = state_dir
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_up_process(
            self.state_dir, self.port, self.state_dir / "server.log", budget_s=30
        )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path, free_port())
    try:
        yield srv
    finally:
        srv.stop()
        # Nothing may outlive the test: stop every supervisor we started.
        for supervisor in (tmp_path / "containers").glob("*/shim.pid"):
            try:
                os.kill(json.loads(supervisor.read_text())["pid"], signal.SIGKILL)
            except (OSError, ValueError, KeyError):
                pass
        for started in (tmp_path / "containers").glob("*/started.json"):
            try:
                os.killpg(json.loads(started.read_text())["pid"], signal.SIGKILL)
            except (OSError, ValueError, KeyError):
                pass


def wait_for(
    client: httpx.Client, cid: str, states: set[str], timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/v1/containers/{cid}").json()
        if body["state"] in states:
            return body
        assert time.monotonic() < deadline, f"{cid}: {body['state']} {body['reason']}"
        time.sleep(0.1)


def test_kill9_while_running_and_submitting_then_restart(server: Server) -> None:
    server.start()
    creds = json.loads((server.state_dir / "credentials.json").read_text())
    admin_auth = {"Authorization": f"Bearer {creds['admin_token']}"}
    made = httpx.post(
        f"{server.url}/v1/admin/tenants",
        headers=admin_auth,
        json={"name": "crash", "max_gpus": 10_000, "max_containers": 10_000},
    )
    auth = {"Authorization": f"Bearer {made.json()['token']['token']}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=10) as t:
        check_crash_recovery(server, t, auth, admin_auth)


def check_crash_recovery(
    server: Server, t: httpx.Client, auth: dict[str, str], admin_auth: dict[str, str]
) -> None:

    def run(gpus: int, script: str) -> str:
        r = t.post(
            "/v1/containers",
            json={"image": "busybox", "gpus": gpus, "command": ["sh", "-c", script]},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    long8 = run(8, "sleep 60")
    ends_while_down = run(4, "sleep 3; exit 5")
    long2 = run(2, "sleep 60")
    supervisor_dies = run(1, "sleep 60")
    for cid in (long8, ends_while_down, long2, supervisor_dies):
        wait_for(t, cid, {"running"})
    waits = run(4, "sleep 60")  # 8 + 4 + 2 + 1 of 16 GPUs: no room for 4 more
    time.sleep(0.5)
    assert t.get(f"/v1/containers/{waits}").json()["state"] == "queued"
    before = {c: t.get(f"/v1/containers/{c}").json() for c in (long8, long2)}
    supervisor_pids = {
        c: json.loads((server.state_dir / "containers" / c / "shim.pid").read_text())["pid"]
        for c in (long8, long2, supervisor_dies)
    }

    # Requests keep arriving while the server dies.
    accepted: list[str] = []
    stop_submitting = threading.Event()

    def submit_forever() -> None:
        with httpx.Client(base_url=server.url, headers=auth, timeout=2) as c:
            while not stop_submitting.is_set():
                try:
                    r = c.post(
                        "/v1/containers", json={"image": "busybox", "gpus": 1, "command": ["true"]}
                    )
                    if r.status_code == 201:
                        accepted.append(r.json()["id"])
                except httpx.TransportError:
                    pass
                time.sleep(0.02)

    submitter = threading.Thread(target=submit_forever)
    submitter.start()
    time.sleep(0.5)
    server.kill9()
    os.kill(supervisor_pids[supervisor_dies], signal.SIGKILL)  # this one cannot be re-adopted
    time.sleep(3.5)  # ends_while_down exits (code 5) while nobody watches
    server.start()
    time.sleep(0.5)
    stop_submitting.set()
    submitter.join()

    # Re-adopted: same partition, same supervisor, still running.
    for cid in (long8, long2):
        now = t.get(f"/v1/containers/{cid}").json()
        assert now["state"] == "running", now
        assert now["partition"] == before[cid]["partition"]
        pid = json.loads((server.state_dir / "containers" / cid / "shim.pid").read_text())["pid"]
        assert pid == supervisor_pids[cid]
    # Ended while the control plane was down: the exit code survived.
    ended = wait_for(t, ends_while_down, FINAL)
    assert ended["state"] == "failed" and ended["exit_code"] == 5
    lost = wait_for(t, supervisor_dies, FINAL)
    assert lost["state"] == "lost" and "shim" in lost["message"]
    # The queued one starts on the GPUs that were freed.
    wait_for(t, waits, {"running"})
    # Every accepted request survived.
    assert accepted, "no request was accepted around the crash"
    for cid in accepted:
        assert t.get(f"/v1/containers/{cid}").status_code == 200
    for cid in accepted:
        wait_for(t, cid, FINAL)

    # No GPU held twice, and the fabric agrees with the store.
    fleet = httpx.get(f"{server.url}/v1/admin/fleet", headers=admin_auth).json()
    holding = [
        c
        for c in t.get("/v1/containers", params={"limit": 500}).json()["items"]
        if c["state"] in ("placing", "starting", "running")
    ]
    for board in fleet["boards"]:
        used = [m for p in board["partitions"] for m in p["module_ids"]]
        assert len(used) == len(set(used)), board
        from_store = sorted(
            m
            for c in holding
            if c["partition"]["board"] == board["name"]
            for m in c["partition"]["module_ids"]
        )
        assert sorted(used) == from_store
        fabric = json.loads(
            (server.state_dir / "fabric" / board["name"] / "desired.json").read_text()
        )
        active = sorted(fabric.get("desired", fabric.get("active", [])))
        assert active == sorted(p["partition_id"] for p in board["partitions"]), (fabric, board)
    for cid in (long8, long2, waits):
        t.delete(f"/v1/containers/{cid}")
    for cid in (long8, long2, waits):
        assert wait_for(t, cid, FINAL)["state"] == "stopped"
