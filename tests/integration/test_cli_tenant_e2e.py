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

from gpucaas.control import ControlPlane, UpConfig


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
    plane = ControlPlane(UpConfig(state_dir=state, nodes=4, executor="process", grace_s=2))
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


def run(
    server: Server, *args: str, token: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCAAS_")}
    env["GPUCAAS_URL"] = server.url
    env["GPUCAAS_TOKEN"] = server.tenant_token if token is None else token
    env["GPUCAAS_CONFIG"] = os.devnull  # never a developer's own config file
    return subprocess.run(
        [gpucaas(), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


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

    listed = run(server, "ps")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("ID ")
    assert cid in listed.stdout and "sleeper" in listed.stdout

    as_json = run(server, "ps", "--json")
    assert as_json.returncode == 0
    assert cid in [c["id"] for c in json.loads(as_json.stdout)["items"]]

    deadline = time.monotonic() + 10
    while "started" not in (logs := run(server, "logs", cid)).stdout:
        assert time.monotonic() < deadline, logs
        time.sleep(0.2)

    described = run(server, "describe", cid)
    assert described.returncode == 0, described.stderr
    for field in ("board:", "partition id:", "module ids:", "boot seconds:", "running:"):
        assert field in described.stdout

    stopped = run(server, "stop", cid)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith(cid)
    deadline = time.monotonic() + 10
    while (state := json.loads(run(server, "describe", cid, "--json").stdout)["state"]) != (
        "stopped"
    ):
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert cid not in run(server, "ps").stdout
    assert cid in run(server, "ps", "--all").stdout


def test_admin_tenants_and_tokens(server: Server) -> None:
    admin = server.admin_token
    created = run(server, "admin", "tenant", "create", "vision", "--max-gpus", "4",
                  "--nfs-export", "nfs1:/datasets", token=admin)  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "vision" in created.stdout and "gpc_" in created.stdout

    listed = run(server, "admin", "tenant", "list", token=admin)
    assert listed.returncode == 0
    assert {"demo", "vision"} <= {line.split()[0] for line in listed.stdout.splitlines()[1:]}

    new = run(server, "admin", "token", "create", "--tenant", "vision", "--label", "ci",
              "--json", token=admin)  # fmt: skip
    assert new.returncode == 0, new.stderr
    token = json.loads(new.stdout)
    assert run(server, "ps", token=token["token"]).returncode == 0
    assert token["id"] in run(server, "admin", "token", "list", "--tenant", "vision",
                              token=admin).stdout  # fmt: skip

    revoked = run(server, "admin", "token", "revoke", token["id"], token=admin)
    assert revoked.returncode == 0, revoked.stderr
    refused = run(server, "ps", token=token["token"])
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: ") and "revoked" in refused.stderr
    assert "Traceback" not in refused.stderr

    forbidden = run(server, "admin", "tenant", "list")  # a tenant token
    assert forbidden.returncode == 2 and "admin token" in forbidden.stderr


def test_admin_fleet_shows_every_board(server: Server) -> None:
    done = run(server, "admin", "fleet", token=server.admin_token)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["BOARD", "CORDONED", "GPUS"]
    boards = [line.split() for line in lines[1:5]]
    assert len(boards) == 4 and all(len(b[2]) == 8 for b in boards)
    assert "4 boards, 32 GPUs" in done.stdout


def test_bad_input_exits_2_naming_the_field(server: Server) -> None:
    done = run(server, "run", "--gpus", "9", "busybox", "--", "true")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "gpus" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_token_exits_2_saying_how_to_give_one(server: Server) -> None:
    done = run(server, "ps", token="")
    assert done.returncode == 2
    assert "no API token" in done.stderr and "GPUCAAS_TOKEN" in done.stderr


def test_an_unreachable_server_names_the_url(server: Server) -> None:
    done = run(server, "ps", "--url", "http://127.0.0.1:1")
    assert done.returncode == 2
    assert "http://127.0.0.1:1" in done.stderr and "gpucaas up" in done.stderr
