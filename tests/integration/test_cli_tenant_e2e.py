"""The tenant and admin commands end to end: a real control plane served by uvicorn on a
free port, and the installed ``gpucaas`` console script run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from gpucaas.client import Client
from gpucaas.control import ControlPlane, ControlPlaneConfig


@dataclass
class Server:
    url: str
    admin_token: str
    tenant_token: str


def gpucaas() -> str:
    script = Path(sys.executable).parent / "gpucaas"
    if script.exists():
        return str(script)
    found = shutil.which("gpucaas")
    if found is None:
        pytest.skip("the gpucaas console script is not installed; run `make test` (pip -e .)")
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("control")
    plane = ControlPlane(
        ControlPlaneConfig(state_dir=state, nodes=4, executor="process", grace_s=2)
    )
    uv = uvicorn.Server(
        uvicorn.Config(plane.app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 10
        while not uv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = uv.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        creds = plane.bootstrap(url)
        assert creds is not None
        plane.start()
        yield Server(url, creds.admin_token, creds.tenant_token)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        plane.stop()


def start(server: Server, *args: str, token: str | None = None) -> subprocess.Popen[str]:
    """The console script with the server's URL and a token (the tenant's by default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCAAS_")}
    env["GPUCAAS_URL"] = server.url
    env["GPUCAAS_TOKEN"] = server.tenant_token if token is None else token
    env["GPUCAAS_CONFIG"] = os.devnull  # never a developer's own config file
    return subprocess.Popen(
        [gpucaas(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args!r} ran past {timeout}s: {out}{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run(server: Server, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    return finish(start(server, *args, token=token))


def run_all(
    server: Server, *calls: tuple[str, ...], token: str | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Several commands at once (each start costs the interpreter's import time)."""
    procs = [start(server, *args, token=token) for args in calls]
    return [finish(p) for p in procs]


def api(server: Server, token: str | None = None) -> Client:
    return Client(server.url, token or server.tenant_token)


def test_run_wait_exits_with_the_containers_code(server: Server) -> None:
    done = run(server, "run", "--gpus", "3", "--wait", "busybox", "--", "sh", "-c",
               "echo hi; exit 3")  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "partition size 4" in done.stdout
    assert "failed, exit code 3" in done.stderr


def test_run_follow_prints_the_output(server: Server) -> None:
    done = run(server, "run", "--follow", "--label", "suite=e2e", "busybox", "--", "sh", "-c",
               "echo hello from the container")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "hello from the container" in done.stdout


def test_ps_describe_logs_and_stop(server: Server) -> None:
    done = run(server, "run", "--name", "sleeper", "busybox", "--", "sh", "-c",
               "echo started; sleep 30")  # fmt: skip
    assert done.returncode == 0, done.stderr
    cid = done.stdout.split()[0]
    with api(server) as client:
        client.wait(cid, states=["running"], timeout=10)
        deadline = time.monotonic() + 10
        while b"started" not in b"".join(client.logs(cid)):
            assert time.monotonic() < deadline, "no output"
            time.sleep(0.1)

    listed, described, described_json, logs = run_all(
        server, ("ps",), ("describe", cid), ("describe", cid, "--json"), ("logs", cid)
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("ID ")
    assert cid in listed.stdout and "sleeper" in listed.stdout
    assert described.returncode == 0, described.stderr
    for field in ("board:", "partition id:", "module ids:", "boot seconds:", "running:"):
        assert field in described.stdout
    # The measured submit -> running spans, next to a Kata VM's estimate for the partition.
    assert "boot, measured:" in described.stdout
    for span in ("queued", "placing", "starting", "total"):
        assert any(line.split()[:1] == [span] for line in described.stdout.splitlines()), span
    assert "boot, estimate for a Kata GPU VM (1 GPUs, 160 GiB, 1 GiB hugepages)" in (
        described.stdout
    )
    assert "guest cdi spec" in described.stdout
    assert described_json.returncode == 0, described_json.stderr
    body = json.loads(described_json.stdout)
    assert body["id"] == cid and "timestamps" in body and "boot_seconds" in body  # unchanged
    measured = body["boot"]["measured"]
    assert all(measured[k] is not None and measured[k] >= 0 for k in measured)
    assert measured["total_s"] == pytest.approx(body["boot_seconds"], abs=0.002)
    assert measured["total_s"] == pytest.approx(
        measured["queued_s"] + measured["placing_s"] + measured["starting_s"], abs=0.002
    )
    assert body["boot"]["estimate"]["gpus"] == body["gpus_granted"] == 1
    assert body["boot"]["estimate"]["total_seconds"] > measured["total_s"]  # a process, no VM
    assert logs.returncode == 0 and "started" in logs.stdout

    stopped = run(server, "stop", cid)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith(cid)
    with api(server) as client:
        assert client.wait(cid, timeout=10).state == "stopped"
    active, everything = run_all(server, ("ps",), ("ps", "--all", "--json"))
    assert cid not in active.stdout
    mine = [c for c in json.loads(everything.stdout)["items"] if c["id"] == cid]
    assert [c["state"] for c in mine] == ["stopped"]


def test_admin_tenants_tokens_and_fleet(server: Server) -> None:
    admin = server.admin_token
    created = run(server, "admin", "tenant", "create", "vision", "--max-gpus", "4",
                  "--nfs-export", "nfs1:/datasets", token=admin)  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "vision" in created.stdout and "gpc_" in created.stdout

    listed, new, fleet = run_all(
        server,
        ("admin", "tenant", "list"),
        ("admin", "token", "create", "--tenant", "vision", "--label", "ci", "--json"),
        ("admin", "fleet"),
        token=admin,
    )
    assert listed.returncode == 0, listed.stderr
    assert {"demo", "vision"} <= {line.split()[0] for line in listed.stdout.splitlines()[1:]}
    assert new.returncode == 0, new.stderr
    token = json.loads(new.stdout)
    assert fleet.returncode == 0, fleet.stderr
    lines = fleet.stdout.splitlines()
    assert lines[0].split()[:3] == ["BOARD", "CORDONED", "GPUS"]
    boards = [line.split() for line in lines[1:5]]
    assert len(boards) == 4 and all(len(b[2]) == 8 for b in boards)
    assert "4 boards, 32 GPUs" in fleet.stdout

    works = start(server, "ps", token=token["token"])
    tokens = finish(start(server, "admin", "token", "list", "--tenant", "vision", token=admin))
    assert finish(works).returncode == 0
    assert token["id"] in tokens.stdout and "ci" in tokens.stdout

    revoked = run(server, "admin", "token", "revoke", token["id"], token=admin)
    assert revoked.returncode == 0, revoked.stderr
    refused = start(server, "ps", token=token["token"])
    forbidden = finish(start(server, "admin", "tenant", "list"))  # a tenant token
    refused_done = finish(refused)
    assert refused_done.returncode == 2
    assert refused_done.stderr.startswith("error: ") and "revoked" in refused_done.stderr
    assert "Traceback" not in refused_done.stderr
    assert forbidden.returncode == 2 and "admin token" in forbidden.stderr


def test_user_errors_exit_2_and_an_unreachable_api_3_with_one_line(server: Server) -> None:
    procs = [
        start(server, "run", "--gpus", "9", "busybox", "--", "true"),
        start(server, "ps", token=""),
        start(server, "ps", "--url", "http://127.0.0.1:1"),
    ]
    bad, no_token, unreachable = (finish(p) for p in procs)
    assert (bad.returncode, no_token.returncode, unreachable.returncode) == (2, 2, 3)
    for done in (bad, no_token, unreachable):
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "gpus" in bad.stderr
    assert "no API token" in no_token.stderr and "GPUCAAS_TOKEN" in no_token.stderr
    assert "http://127.0.0.1:1" in unreachable.stderr and "gpucaas up" in unreachable.stderr
