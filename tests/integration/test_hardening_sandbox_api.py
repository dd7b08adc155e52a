"""Issue 13, point 3, through the API as it was found: on `gpucaas up`'s embedded default a
tenant's command read the admin token, the database and another tenant's log, and a
``setsid sleep`` survived DELETE while the container showed ``stopped``. With the sandbox
executor none of that works. Skips, saying why, where bubblewrap cannot run."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpucaas.control import SandboxExecutor, SandboxUnavailable
from tests.live_plane import FINAL, Live, live_plane, wait_state

BUDGET_S = 30.0


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    try:
        SandboxExecutor.from_path()
    except SandboxUnavailable as err:
        pytest.skip(f"bubblewrap cannot make a sandbox on this machine: {err}")
    with live_plane(tmp_path / "state", nodes=2, executor="sandbox") as plane:
        yield plane


def _submit(live: Live, token: str, script: str, **extra: object) -> str:
    with live.client(token) as client:
        r = client.post(
            "/v1/containers",
            json={"image": "busybox", "gpus": 1, "command": ["sh", "-c", script], **extra},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"sleep\0{marker}\0".encode() == (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _attack(live: Live) -> str:
    """Tenant 'demo' runs a container with a secret in its log and environment; then tenant
    'attacker' runs one that reads the state dir and lists processes: its log."""
    state = live.plane.config.state_dir.resolve()
    victim = _submit(
        live,
        live.creds.tenant_token,
        "echo VICTIM-LOG-SECRET",
        env={"VICTIM_ENV": "VICTIM-ENV-SECRET"},
    )
    with live.tenant() as tenant:
        wait_state(tenant, victim, {"succeeded"}, timeout=BUDGET_S)
    assert "VICTIM-LOG-SECRET" in (state / "containers" / victim / "log").read_text()
    attacker_token = live.new_tenant("attacker", max_gpus=8, max_containers=4)
    targets = [
        state / "credentials.json",
        state / "gpucaas.db",
        state / "gpucaas.db-wal",
        state / "containers" / victim / "log",
    ]
    script = "".join(f'cat "{t}" 2>/dev/null || echo "DENIED {t.name}"; ' for t in targets)
    script += f'ls -R "{state}" 2>/dev/null || echo DENIED listing; ps -e -o args'
    attacker = _submit(live, attacker_token, script)
    with live.client(attacker_token) as client:
        wait_state(client, attacker, {"succeeded"}, timeout=BUDGET_S)
        return client.get(f"/v1/containers/{attacker}/logs").text


def test_a_tenant_reads_nothing_of_the_service_or_other_tenants(live: Live) -> None:
    log = _attack(live)
    for secret in (live.creds.admin_token, "VICTIM-LOG-SECRET", "VICTIM-ENV-SECRET", "gpc_"):
        assert secret not in log, log
    for name in ("credentials.json", "gpucaas.db", "gpucaas.db-wal", "log", "listing"):
        assert f"DENIED {name}" in log, log
    processes = log.split("DENIED listing", 1)[1]
    assert "python" not in processes and "bwrap" in processes, f"it sees the host: {processes}"


def test_the_process_executor_is_the_hole_the_issue_found(tmp_path: Path) -> None:
    # Why `gpucaas up --executor process` needs --unsafe-process: the same attack succeeds.
    with live_plane(tmp_path / "state", nodes=2, executor="process") as live:
        log = _attack(live)
        assert live.creds.admin_token in log
        assert "VICTIM-LOG-SECRET" in log
        assert log.startswith("gpucaas: process executor: the command runs as a host process")


def test_delete_leaves_no_process_of_the_container_behind(live: Live) -> None:
    marker = f"4242.{uuid.uuid4().int % 10**9:09d}"
    cid = _submit(live, live.creds.tenant_token, f"setsid sleep {marker} & sleep 1000")
    with live.tenant() as tenant:
        wait_state(tenant, cid, {"running"}, timeout=BUDGET_S)
        deadline = time.monotonic() + BUDGET_S
        while not _processes_with(marker):
            assert time.monotonic() < deadline, "the setsid child never started"
            time.sleep(0.05)
        assert tenant.delete(f"/v1/containers/{cid}").status_code in (200, 202, 204)
        body = wait_state(tenant, cid, FINAL, timeout=BUDGET_S)
        assert body["state"] == "stopped", body
    deadline = time.monotonic() + BUDGET_S
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"{left} outlived container {cid}, which shows stopped"
