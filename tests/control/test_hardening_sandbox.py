"""Issue 13, point 3: the embedded default gave a tenant the host. The sandbox executor, tried
the way it was broken: a tenant's command that reads the credentials, the database and another
tenant's log, writes to the host, and leaves a ``setsid`` child behind.

Skips, saying why, where bubblewrap cannot run (``.ci/run`` installs it).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from gpucaas.control import SandboxExecutor, SandboxUnavailable, make_executor
from gpucaas.control._executor import ExecState, ExecStatus, Launch

BUDGET_S = 30.0
"""Generous: a busy 2-core machine."""


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A state directory as `gpucaas up` leaves it: the admin token, the database, and another
    tenant's container with a secret in its log."""
    state = tmp_path / "state"
    (state / "containers" / "other-tenant").mkdir(parents=True)
    (state / "credentials.json").write_text('{"admin_token": "gpc_ADMIN-SECRET"}')
    (state / "gpucaas.db").write_text("DB-SECRET")
    (state / "containers" / "other-tenant" / "log").write_text("OTHER-TENANT-SECRET\n")
    return state


def _sandbox(state_dir: Path, *hide: Path) -> SandboxExecutor:
    try:
        return SandboxExecutor.from_path(hide=[state_dir, *hide], grace_s=5)
    except SandboxUnavailable as err:
        pytest.skip(f"bubblewrap cannot make a sandbox on this machine: {err}")


def _launch(state_dir: Path, container_id: str, script: str) -> Launch:
    return Launch(
        container_id=container_id,
        image="",
        command=("sh", "-c", script),
        args=(),
        env={"TENANT_SECRET": "mine"},
        directory=state_dir / "containers" / container_id,
    )


def _wait(executor: SandboxExecutor, launch: Launch, state: ExecState) -> ExecStatus:
    deadline = time.monotonic() + BUDGET_S
    while True:
        status = executor.status(launch.container_id, launch.directory)
        if status.state is state:
            return status
        assert time.monotonic() < deadline, f"still {status} after {BUDGET_S:g} s"
        time.sleep(0.05)


def _wait_for_log(launch: Launch, needle: str) -> str:
    deadline = time.monotonic() + BUDGET_S
    while True:
        try:
            log = (launch.directory / "log").read_text(errors="replace")
        except FileNotFoundError:  # the supervisor is up, the workload not yet
            log = ""
        if needle in log:
            return log
        assert time.monotonic() < deadline, f"no {needle!r} in the log after {BUDGET_S:g} s: {log}"
        time.sleep(0.05)


def _processes_with(marker: str) -> list[int]:
    """The pids of host processes ``sleep <marker>``: what the tenant left behind."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"sleep\0{marker}\0".encode() == cmdline:
            found.append(int(entry.name))
    return found


def _real_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def _wait_gone(marker: str) -> None:
    deadline = time.monotonic() + BUDGET_S
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes {left} ({marker}) outlived their container"


def _marker() -> str:
    """A sleep duration no other process uses, to find the tenant's leftovers on the host."""
    return f"4242.{uuid.uuid4().int % 10**9:09d}"


def test_a_tenant_cannot_read_the_credentials_the_database_or_other_tenants_logs(
    state_dir: Path,
) -> None:
    this_tree = Path(__file__).resolve().parent  # a host path outside /tmp, hidden as asked
    executor = _sandbox(state_dir, this_tree)
    targets = {
        "credentials": state_dir / "credentials.json",
        "database": state_dir / "gpucaas.db",
        "other-log": state_dir / "containers" / "other-tenant" / "log",
        "hidden": Path(__file__).resolve(),
    }
    reads = "".join(
        f'cat "{path}" 2>/dev/null || echo "DENIED {name}"; ' for name, path in targets.items()
    )
    launch = _launch(
        state_dir,
        "attacker",
        reads
        + f'ls "{state_dir}" 2>/dev/null || echo "DENIED listing"; '
        + "touch /usr/gpucaas-escape 2>/dev/null || echo DENIED host-write; "
        + "echo interfaces $(tail -n +3 /proc/net/dev | cut -d: -f1); "
        + "echo pids $(ls /proc | grep -c '^[0-9]')",
    )
    executor.start(launch)
    status = _wait(executor, launch, ExecState.EXITED)
    log = (launch.directory / "log").read_text()
    assert status.reason == "exited", log
    for secret in ("ADMIN-SECRET", "DB-SECRET", "OTHER-TENANT-SECRET", "this_tree"):
        assert secret not in log
    for name in (*targets, "listing", "host-write"):
        assert f"DENIED {name}" in log, log
    assert not Path("/usr/gpucaas-escape").exists()
    assert log.split("interfaces", 1)[1].split("\n")[0].split() == ["lo"], log  # no network
    # Its own PID namespace: bubblewrap's init, sh, ls, grep and the subshell; not the host's.
    assert int(log.split("pids", 1)[1].split()[0]) < 10, log


def test_stop_kills_everything_the_command_started_after_its_grace(state_dir: Path) -> None:
    executor = _sandbox(state_dir)
    marker = _marker()
    launch = _launch(
        state_dir,
        "leaver",
        f"setsid sleep {marker} & trap 'echo got-term; exit 7' TERM; echo ready; sleep 1000 & wait",
    )
    executor.start(launch)
    _wait_for_log(launch, "ready")
    deadline = time.monotonic() + BUDGET_S
    while not (pids := _processes_with(marker)):
        assert time.monotonic() < deadline, "the setsid child never started"
        time.sleep(0.05)
    # On the host, the tenant's processes are an unprivileged user's: never root's.
    expected_uid = executor.run_as[0] if executor.run_as is not None else os.getuid()
    assert _real_uid(pids[0]) == expected_uid != 0 or os.getuid() != 0
    executor.stop(launch.container_id, launch.directory, 5)
    status = _wait(executor, launch, ExecState.EXITED)
    assert status.reason == "stopped"
    assert status.exit_code == 7  # the workload had its SIGTERM and grace period
    assert "got-term" in (launch.directory / "log").read_text()
    _wait_gone(marker)


def test_a_setsid_child_ends_with_the_command(state_dir: Path) -> None:
    executor = _sandbox(state_dir)
    marker = _marker()
    launch = _launch(
        state_dir,
        "quitter",
        f'setsid sleep {marker} & sleep 0.2; kill -0 "$!" && echo child-alive',
    )
    executor.start(launch)
    status = _wait(executor, launch, ExecState.EXITED)
    assert (status.reason, status.exit_code) == ("exited", 0)
    assert "child-alive" in (launch.directory / "log").read_text()
    _wait_gone(marker)


def test_max_runtime_ends_the_whole_sandbox(state_dir: Path) -> None:
    executor = _sandbox(state_dir)
    marker = _marker()
    launch = _launch(state_dir, "overstayer", f"setsid sleep {marker} & sleep 1000")
    launch = dataclasses.replace(launch, max_runtime_s=1)
    executor.start(launch)
    status = _wait(executor, launch, ExecState.EXITED)
    assert status.reason == "deadline"
    _wait_gone(marker)


def test_auto_takes_the_sandbox_without_an_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bubblewrap (bwrap) is not installed; .ci/run installs it")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bwrap").symlink_to(bwrap)
    monkeypatch.setenv("PATH", str(bin_dir))  # no podman, no docker
    try:
        executor = make_executor("auto", state_dir=tmp_path / "state")
    except SandboxUnavailable as err:
        pytest.skip(f"bubblewrap cannot make a sandbox on this machine: {err}")
    assert isinstance(executor, SandboxExecutor)
    assert (tmp_path / "state").resolve() in executor.hide


def test_loader_variables_reach_the_command_but_not_bubblewrap(state_dir: Path) -> None:
    # bubblewrap runs outside the sandbox with the supervisor's environment: a tenant's
    # LD_PRELOAD would make it load a host library there. The command still gets the variable.
    executor = _sandbox(state_dir)
    launch = dataclasses.replace(
        _launch(state_dir, "loader", 'echo "preload=$LD_PRELOAD"'),
        env={"LD_PRELOAD": "/nonexistent/evil.so"},
    )
    assert "LD_PRELOAD" not in executor._supervisor_env(launch)
    executor.start(launch)
    status = _wait(executor, launch, ExecState.EXITED)
    assert status.exit_code == 0
    assert "preload=/nonexistent/evil.so" in (launch.directory / "log").read_text()
