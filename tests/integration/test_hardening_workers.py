"""Issue 13, point 13: ``gpucaas up --api-workers 2`` serves the API from two worker
processes on one socket (the scheduler's process serves only what they forward). Requests
land on both; a submit through either is placed promptly (a worker wakes the leader's
scheduler); admin routes answer from the scheduler's process wherever they land; SIGTERM
stops every worker and releases the scheduler lease.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpucaas.control import Store

from .test_hardening_sigterm import (
    STOP_BOUND_S,
    Replica,
    credentials,
    store_url,
    wait_state,
)

WORKER_HEADER = "x-gpucaas-worker"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose, but only its parent can reap it; read its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Replica]:
    r = Replica(tmp_path / "a", store_url(tmp_path), extra=["--api-workers", "2"])
    try:
        yield r
    finally:
        r.cleanup()


def test_two_workers_serve_place_and_stop_together(plane: Replica, tmp_path: Path) -> None:
    creds = credentials(plane)
    tenant = {"Authorization": f"Bearer {creds['tenant_token']}"}
    admin = {"Authorization": f"Bearer {creds['admin_token']}"}
    pids: Counter[int] = Counter()
    # New connections each time: the kernel hands each to one of the processes.
    deadline = time.monotonic() + 60
    while len(pids) < 2:
        assert time.monotonic() < deadline, f"only {dict(pids)} served in 60 s"
        r = httpx.get(f"{plane.url}/v1/containers", headers=tenant, timeout=30)
        assert r.status_code == 200, r.text
        pids[int(r.headers[WORKER_HEADER])] += 1
    assert plane.proc.pid not in pids, "the scheduler's process serves only forwarded routes"
    workers = set(pids)

    # Submits through every process get placed promptly (the leader idles 0.5 s between
    # passes: a placement within 5 s on a busy machine means the worker woke it).
    placed: dict[int, float] = {}
    deadline = time.monotonic() + 60
    while len(placed) < 2:
        assert time.monotonic() < deadline, f"submits landed only on {list(placed)}"
        with httpx.Client(base_url=plane.url, headers=tenant, timeout=30) as t:
            r = t.post("/v1/containers", json={"image": "busybox", "gpus": 1, "command": ["true"]})
            assert r.status_code == 201, r.text
            by = int(r.headers[WORKER_HEADER])
            took = wait_state(t, r.json()["id"], {"starting", "running", "succeeded"}, 30)
            placed.setdefault(by, took)
    assert max(placed.values()) < 5.0, f"submit → placed took {placed}"

    # Admin routes read and change the scheduler's memory: a cordon sent to any process
    # shows in the fleet that every process answers with, and /healthz is the scheduler's.
    for _ in range(4):
        r = httpx.put(
            f"{plane.url}/v1/admin/boards/hgx-0001/cordon",
            json={"cordoned": True},
            headers=admin,
            timeout=30,
        )
        assert r.status_code == 200, r.text
    for _ in range(8):
        r = httpx.get(f"{plane.url}/v1/admin/fleet", headers=admin, timeout=30)
        assert r.status_code == 200, r.text
        boards = {b["name"]: b for b in r.json()["boards"]}
        assert boards["hgx-0001"]["cordoned"] and not boards["hgx-0000"]["cordoned"]
        h = httpx.get(f"{plane.url}/healthz", timeout=30)
        assert h.status_code == 200 and h.json()["scheduler_passes"] > 0, h.text

    rc, took = plane.signal_and_wait(signal.SIGTERM)
    assert rc == 0, plane.err.read_text()
    assert took < STOP_BOUND_S, f"the stop took {took:.1f} s"
    assert "Traceback" not in plane.err.read_text(), plane.err.read_text()
    assert not [w for w in workers if _alive(w)], f"workers {workers} outlived the leader"
    store = Store(store_url(tmp_path))
    try:
        assert store.acquire_lease("scheduler", "standby", 10.0)
    finally:
        store.close()
