"""Executors run real processes under a real supervisor; nothing of the supervisor is mocked.

The container engine is a fake CLI (fake_engine.py) that records its argv and runs the
command after the image as a plain process, so logs, exit codes and stops work end to end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpucaas.control import (
    AlreadyRunning,
    EngineNotFound,
    ExecutorRefused,
    LocalBackend,
    Phase,
    Workload,
)
from gpucaas.control._executor import (
    EngineExecutor,
    ExecState,
    ExecStatus,
    Executor,
    Launch,
    NfsVolume,
    ProcessExecutor,
)
from gpucaas.control._supervisor import proc_start_time
from gpucaas.errors import InvalidRequest, Unavailable
from gpucaas.topology import get_model

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")


def wait_for(what: Callable[[], bool], timeout_s: float = 10.0, message: str = "") -> None:
    """Poll ``what`` every 20 ms until it is true; fail after ``timeout_s``."""
    give_up = time.monotonic() + timeout_s
    while not what():
        if time.monotonic() > give_up:
            pytest.fail(f"not true after {timeout_s} s: {message or what}")
        time.sleep(0.02)


def ended(executor: Executor, launch: Launch, timeout_s: float = 10.0) -> ExecStatus:
    """The status once the container has exited."""
    wait_for(
        lambda: executor.status(launch.container_id, launch.directory).state is ExecState.EXITED,
        timeout_s,
        f"{launch.container_id} exited",
    )
    return executor.status(launch.container_id, launch.directory)


def make_launch(tmp_path: Path, container_id: str, *command: str, **kw: Any) -> Launch:
    fields: dict[str, Any] = {
        "container_id": container_id,
        "image": "docker.io/library/busybox:1",
        "command": command,
        "args": (),
        "env": {},
        "directory": tmp_path / container_id,
    }
    fields.update(kw)
    return Launch(**fields)


def _pid_record(path: Path) -> tuple[int, int] | None:
    try:
        record = json.loads(path.read_text())
        return int(record["pid"]), int(record["start_time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _kill_leftovers(directory: Path) -> None:
    """SIGKILL the supervisor and the workload's group if they are still the recorded processes."""
    for name, group in (("shim.pid", False), ("started.json", True)):
        record = _pid_record(directory / name)
        if record is None or proc_start_time(record[0]) != record[1]:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if group else os.kill)(record[0], signal.SIGKILL)


Start = Callable[[Executor, Launch], Launch]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start a launch; at teardown, stop it and kill whatever it left running."""
    runs: list[tuple[Executor, Launch]] = []

    def _start(executor: Executor, launch: Launch) -> Launch:
        runs.append((executor, launch))
        executor.start(launch)
        return launch

    yield _start
    for executor, launch in runs:
        with contextlib.suppress(Exception):
            executor.stop(launch.container_id, launch.directory, grace_s=0.2)
        _kill_leftovers(launch.directory)


# -- the process executor ------------------------------------------------------------------


def test_a_command_that_exits_0_is_exited_with_its_output_after_the_banner(
    tmp_path: Path, start: Start
) -> None:
    executor = ProcessExecutor()
    launch = start(executor, make_launch(tmp_path, "c1", "sh", "-c", "echo hello; echo oops >&2"))
    status = ended(executor, launch)
    assert (status.state, status.exit_code, status.reason) == (ExecState.EXITED, 0, "exited")
    assert status.started_at and status.finished_at
    lines = (launch.directory / "log").read_text().splitlines()
    assert lines[0].startswith("gpucaas: process executor: the command runs as a host process")
    assert "'docker.io/library/busybox:1' is ignored" in lines[0]
    assert sorted(lines[1:]) == ["hello", "oops"]


def test_exit_code_3_is_reported(tmp_path: Path, start: Start) -> None:
    executor = ProcessExecutor()
    launch = start(executor, make_launch(tmp_path, "c3", "sh", "-c", "exit 3"))
    status = ended(executor, launch)
    assert (status.exit_code, status.reason, status.signal) == (3, "exited", None)
    assert "code 3" in status.message


def test_args_alone_are_the_command(tmp_path: Path, start: Start) -> None:
    executor = ProcessExecutor()
    launch = start(executor, make_launch(tmp_path, "a", args=("sh", "-c", "exit 4")))
    assert ended(executor, launch).exit_code == 4


def test_past_max_runtime_the_container_is_stopped_with_reason_deadline(
    tmp_path: Path, start: Start
) -> None:
    executor = ProcessExecutor(grace_s=1)
    launch = start(executor, make_launch(tmp_path, "late", "sleep", "30", max_runtime_s=1))
    assert executor.status("late", launch.directory).state is ExecState.RUNNING
    status = ended(executor, launch, timeout_s=4)
    assert status.reason == "deadline"
    assert status.signal == signal.SIGTERM and status.exit_code is None
    assert "max runtime of 1 s" in status.message


def test_stop_ends_a_running_container_as_stopped_and_is_idempotent(
    tmp_path: Path, start: Start
) -> None:
    executor = ProcessExecutor()
    launch = start(executor, make_launch(tmp_path, "s", "sleep", "30"))
    wait_for(lambda: executor.status("s", launch.directory).started_at is not None)
    running = executor.status("s", launch.directory)
    assert running.state is ExecState.RUNNING and running.started_at
    executor.stop("s", launch.directory, grace_s=2)
    status = executor.status("s", launch.directory)
    assert (status.state, status.reason, status.signal) == (
        ExecState.EXITED,
        "stopped",
        signal.SIGTERM,
    )
    executor.stop("s", launch.directory, grace_s=2)
    assert executor.status("s", launch.directory) == status


def test_stop_kills_a_workload_that_ignores_sigterm_after_the_grace(
    tmp_path: Path, start: Start
) -> None:
    executor = ProcessExecutor()
    script = "trap '' TERM; echo deaf-now; sleep 30"
    launch = start(executor, make_launch(tmp_path, "deaf", "sh", "-c", script))
    log = launch.directory / "log"
    wait_for(lambda: log.exists() and "deaf-now" in log.read_text(), timeout_s=10)
    began = time.monotonic()
    executor.stop("deaf", launch.directory, grace_s=0.5)
    status = executor.status("deaf", launch.directory)
    assert (status.reason, status.signal) == ("stopped", signal.SIGKILL)
    assert time.monotonic() - began > 0.4  # the grace period was given


def test_stop_before_start_and_status_of_a_never_started_container(tmp_path: Path) -> None:
    executor = ProcessExecutor()
    executor.stop("ghost", tmp_path / "ghost")
    status = executor.status("ghost", tmp_path / "ghost")
    assert status.state is ExecState.LOST and status.reason.startswith("never started")


def test_a_missing_program_is_spawn_failed_naming_it(tmp_path: Path, start: Start) -> None:
    executor = ProcessExecutor()
    launch = start(executor, make_launch(tmp_path, "m", "/no/such/program", "--flag"))
    status = ended(executor, launch)
    assert (status.reason, status.exit_code) == ("spawn-failed", None)
    assert "'/no/such/program'" in status.message and "executable" in status.message
    assert "/no/such/program" in (launch.directory / "log").read_text()


def test_a_killed_supervisor_is_lost_and_stop_ends_its_orphaned_workload(
    tmp_path: Path, start: Start
) -> None:
    executor = ProcessExecutor()
    launch = start(executor, make_launch(tmp_path, "k", "sleep", "30"))
    wait_for(lambda: (launch.directory / "started.json").exists())
    supervisor = json.loads((launch.directory / "shim.pid").read_text())["pid"]
    workload = json.loads((launch.directory / "started.json").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: executor.status("k", launch.directory).state is ExecState.LOST)
    status = executor.status("k", launch.directory)
    assert f"the shim (pid {supervisor}) is gone without writing an exit status" in status.reason
    assert f"workload (pid {workload}) is still running" in status.reason
    executor.stop("k", launch.directory, grace_s=1)
    wait_for(lambda: proc_start_time(workload) is None, message="the orphan is gone")


def test_a_container_outlives_a_crashed_control_plane(tmp_path: Path) -> None:
    """The crash-recovery property: a new executor in a new process re-adopts the container."""
    directory = tmp_path / "survivor"
    program = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from gpucaas.control._executor import Launch, ProcessExecutor\n"
        "ProcessExecutor().start(Launch('survivor', '', ('sh', '-c', 'sleep 0.8; echo done'),"
        " (), {}, Path(sys.argv[1])))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    control_plane = subprocess.run([sys.executable, "-c", program, str(directory)], check=False)
    assert control_plane.returncode == -signal.SIGKILL
    executor = ProcessExecutor()  # the restarted control plane
    launch = make_launch(tmp_path, "survivor", "unused")
    try:
        assert executor.status("survivor", directory).state is ExecState.RUNNING
        status = ended(executor, launch)
        assert (status.exit_code, status.reason) == (0, "exited")
        assert (directory / "log").read_text().splitlines()[-1] == "done"
    finally:
        _kill_leftovers(directory)


def test_a_reused_pid_is_not_taken_for_the_supervisor(tmp_path: Path) -> None:
    executor = ProcessExecutor()
    directory = tmp_path / "reused"
    directory.mkdir()
    mine = proc_start_time(os.getpid())
    assert mine is not None
    (directory / "shim.pid").write_text(json.dumps({"pid": os.getpid(), "start_time": mine}))
    assert executor.status("reused", directory).state is ExecState.RUNNING  # the guard's twin
    (directory / "shim.pid").write_text(json.dumps({"pid": os.getpid(), "start_time": mine - 1}))
    status = executor.status("reused", directory)
    assert status.state is ExecState.LOST
    assert f"the shim (pid {os.getpid()}) is gone" in status.reason


@pytest.mark.parametrize("name", ["exit.json", "shim.pid"])
def test_a_corrupt_state_file_is_lost_naming_the_file(tmp_path: Path, name: str) -> None:
    executor = ProcessExecutor()
    directory = tmp_path / "bad"
    directory.mkdir()
    (directory / "shim.pid").write_text(json.dumps({"pid": 1, "start_time": 1}))
    (directory / name).write_text("{not json")
    status = executor.status("bad", directory)
    assert status.state is ExecState.LOST
    assert str(directory / name) in status.reason and "not valid JSON" in status.reason
    executor.stop("bad", directory, grace_s=0.1)  # does not crash either


def test_the_environment_is_env_and_gpu_env_and_nothing_of_the_parent(
    tmp_path: Path, start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUCAAS_TEST_PARENT_ONLY", "leak")
    executor = ProcessExecutor()
    launch = make_launch(
        tmp_path,
        "env",
        "env",
        env={
            "TENANT_VAR": "a b=c",
            "GPUCAAS_PARTITION": "tenant-says",
            "PYTHONHOME": "/nonexistent",  # for the workload, not for the supervisor
        },
        gpu_env={"GPUCAAS_PARTITION": "3", "GPUCAAS_GPU_MODULES": "1,2"},
    )
    ended(executor, start(executor, launch))
    lines = (launch.directory / "log").read_text().splitlines()[1:]
    env = dict(line.split("=", 1) for line in lines)
    assert env["TENANT_VAR"] == "a b=c"
    assert env["GPUCAAS_PARTITION"] == "3"  # gpu_env wins
    assert env["GPUCAAS_GPU_MODULES"] == "1,2"
    assert env["HOME"] == str(launch.directory)
    assert env["PYTHONHOME"] == "/nonexistent"
    assert "GPUCAAS_TEST_PARENT_ONLY" not in env
    assert set(env) <= {"TENANT_VAR", "GPUCAAS_PARTITION", "GPUCAAS_GPU_MODULES", "HOME"} | {
        "PYTHONHOME",
        "PATH",
        "LANG",
        "PWD",
        "SHLVL",
        "_",
    }


def test_the_process_executor_refuses_nfs_and_an_empty_command(tmp_path: Path) -> None:
    executor = ProcessExecutor()
    nfs = make_launch(tmp_path, "n", "true", nfs=(NfsVolume("10.0.0.5", "/export", "/data"),))
    with pytest.raises(ExecutorRefused) as refused:
        executor.start(nfs)
    assert isinstance(refused.value, InvalidRequest)
    assert refused.value.field == "nfs"
    assert "nfs=['/data']" in str(refused.value)
    assert "start gpucaas up with --executor podman or docker" in str(refused.value)
    with pytest.raises(ExecutorRefused, match="a process needs a command"):
        executor.check(make_launch(tmp_path, "e"))
    with pytest.raises(ExecutorRefused, match="container_id"):
        executor.check(make_launch(tmp_path, "../x", "true"))
    assert not (tmp_path / "n").exists()


def test_starting_a_running_container_again_is_a_conflict(tmp_path: Path, start: Start) -> None:
    executor = ProcessExecutor()
    launch = start(executor, make_launch(tmp_path, "twice", "sleep", "30"))
    with pytest.raises(AlreadyRunning, match="already running"):
        executor.start(launch)


# -- the engine executor (a fake CLI) ------------------------------------------------------


@pytest.fixture
def fake_engine(tmp_path: Path) -> Path:
    engine = tmp_path / "bin" / "podman"
    engine.parent.mkdir()
    engine.write_text(f"#!{sys.executable}\n" + FAKE_ENGINE.read_text())
    engine.chmod(0o755)
    return engine


def engine_calls(engine: Path) -> list[list[str]]:
    record = engine.with_name(engine.name + ".argv")
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_the_engine_runs_the_exact_argv_and_reports_the_exit_code(
    tmp_path: Path, start: Start, fake_engine: Path
) -> None:
    executor = EngineExecutor("podman", str(fake_engine))
    launch = make_launch(
        tmp_path,
        "e1",
        "sh",
        "-c",
        args=("echo from-the-container; exit 7",),
        env={"A": "1"},
        gpu_env={"GPUCAAS_PARTITION": "2"},
        nfs=(
            NfsVolume("10.0.0.5", "/export/data", "/data", read_only=True),
            NfsVolume("nfs.example", "/scratch", "/scratch"),
        ),
    )
    status = ended(executor, start(executor, launch))
    assert (status.exit_code, status.reason) == (7, "exited")
    assert "from-the-container" in (launch.directory / "log").read_text()
    assert engine_calls(fake_engine) == [
        [
            "run",
            "--rm",
            "--name",
            "gpucaas-e1",
            "--label",
            "gpucaas.container=e1",
            "-e",
            "A=1",
            "-e",
            "GPUCAAS_PARTITION=2",
            "--mount",
            "type=volume,dst=/data,volume-driver=local,volume-opt=type=nfs,"
            'volume-opt=device=10.0.0.5:/export/data,"volume-opt=o=addr=10.0.0.5,ro",readonly',
            "--mount",
            "type=volume,dst=/scratch,volume-driver=local,volume-opt=type=nfs,"
            "volume-opt=device=nfs.example:/scratch,volume-opt=o=addr=nfs.example",
            "--entrypoint",
            "sh",
            "docker.io/library/busybox:1",
            "-c",
            "echo from-the-container; exit 7",
        ]
    ]


def test_engine_args_and_cdi_devices_come_before_the_environment(
    tmp_path: Path, start: Start, fake_engine: Path
) -> None:
    executor = EngineExecutor(
        "podman",
        str(fake_engine),
        engine_args=("--runtime", "runc", "--ulimit", "nofile=1024:1024"),
        cdi_kind="nvidia.com/gpu",
    )
    launch = make_launch(tmp_path, "g1", "true", env={"A": "1"}, gpu_devices=("2", "3"))
    assert ended(executor, start(executor, launch)).exit_code == 0
    assert engine_calls(fake_engine)[0][6:16] == [
        "--runtime",
        "runc",
        "--ulimit",
        "nofile=1024:1024",
        "--device",
        "nvidia.com/gpu=2",
        "--device",
        "nvidia.com/gpu=3",
        "-e",
        "A=1",
    ]


def test_without_a_cdi_kind_gpus_are_not_passed_as_devices(
    tmp_path: Path, start: Start, fake_engine: Path
) -> None:
    executor = EngineExecutor("podman", str(fake_engine))
    launch = make_launch(tmp_path, "g2", "true", gpu_devices=("0",))
    assert ended(executor, start(executor, launch)).exit_code == 0
    assert "--device" not in engine_calls(fake_engine)[0]


def test_the_local_backend_passes_a_partitions_gpus_by_device_id(
    tmp_path: Path, fake_engine: Path
) -> None:
    """Device IDs are indexes in module-ID order, as the device plugin and CDI spec use."""
    model = get_model("hgx-h100-8")
    executor = EngineExecutor("podman", str(fake_engine), cdi_kind="nvidia.com/gpu")
    backend = LocalBackend(tmp_path, model, 1, executor)
    partition = model.partition_for((5, 7))
    workload = Workload(
        "g4", "acme", "busybox", ("true",), (), {}, (), {}, None, 2,
        board=backend.boards()[0].name,
        partition_id=int(partition.id),
        module_ids=(5, 7),
    )  # fmt: skip
    backend.start(workload)
    wait_for(lambda: backend.status(workload).phase is Phase.EXITED)
    call = engine_calls(fake_engine)[0]
    devices = [call[i + 1] for i, arg in enumerate(call) if arg == "--device"]
    assert devices == ["nvidia.com/gpu=4", "nvidia.com/gpu=6"]
    backend.release(workload)


def test_a_bad_cdi_kind_or_device_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="invalid CDI kind"):
        EngineExecutor("podman", "podman", cdi_kind="gpu")
    executor = EngineExecutor("podman", "podman", cdi_kind="nvidia.com/gpu")
    with pytest.raises(ExecutorRefused, match="gpu_devices='-1'"):
        executor.check(make_launch(tmp_path, "g3", "true", gpu_devices=("-1",)))


def test_without_a_command_the_args_follow_the_image(
    tmp_path: Path, start: Start, fake_engine: Path
) -> None:
    executor = EngineExecutor("docker", str(fake_engine))
    launch = make_launch(tmp_path, "e2", args=("true",))
    assert ended(executor, start(executor, launch)).exit_code == 0
    call = engine_calls(fake_engine)[0]
    assert "--entrypoint" not in call and call[-2:] == ["docker.io/library/busybox:1", "true"]


def test_engine_stop_runs_engine_stop_and_reports_stopped(
    tmp_path: Path, start: Start, fake_engine: Path
) -> None:
    executor = EngineExecutor("podman", str(fake_engine))
    launch = start(executor, make_launch(tmp_path, "e3", "sleep", "30"))
    wait_for(lambda: (launch.directory / "started.json").exists())
    executor.stop("e3", launch.directory, grace_s=1.5)
    status = executor.status("e3", launch.directory)
    assert (status.state, status.reason) == (ExecState.EXITED, "stopped")
    assert ["stop", "-t", "2", "gpucaas-e3"] in engine_calls(fake_engine)
    calls = len(engine_calls(fake_engine))
    executor.stop("e3", launch.directory)  # ended: the engine is not asked again
    assert len(engine_calls(fake_engine)) == calls


def test_engine_stop_ignores_no_such_container(
    tmp_path: Path, start: Start, fake_engine: Path
) -> None:
    executor = EngineExecutor("podman", str(fake_engine))
    launch = start(executor, make_launch(tmp_path, "e4", "sleep", "30"))
    fake_engine.with_name("podman.missing").touch()
    executor.stop("e4", launch.directory, grace_s=1)
    assert executor.status("e4", launch.directory).reason == "stopped"


def test_the_engine_executor_refuses_a_launch_without_an_image(tmp_path: Path) -> None:
    with pytest.raises(ExecutorRefused, match="image=''"):
        EngineExecutor("podman", "podman").check(make_launch(tmp_path, "i", "true", image=""))


def test_from_path_without_the_engine_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(EngineNotFound) as missing:
        EngineExecutor.from_path("podman")
    assert isinstance(missing.value, Unavailable)
    assert str(missing.value).startswith(
        "podman not found on PATH; install it or start with --executor process"
    )


def test_from_path_finds_the_engine(fake_engine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(fake_engine.parent))
    executor = EngineExecutor.from_path("podman")
    assert (executor.name, executor.binary) == ("podman", str(fake_engine))


def test_supervisors_come_from_the_launcher_and_outlive_it(tmp_path: Path, start: Start) -> None:
    from gpucaas.control import _executor

    executor = ProcessExecutor()
    first = start(executor, make_launch(tmp_path, "l1", "sleep", "30"))
    launcher = _executor._LAUNCHER._proc
    assert launcher is not None and launcher.poll() is None
    supervisor = json.loads((first.directory / "shim.pid").read_text())["pid"]
    assert supervisor != launcher.pid
    launcher.kill()  # the launcher dies; its supervisors do not, and a new one takes over
    launcher.wait()
    second = start(executor, make_launch(tmp_path, "l2", "sleep", "30"))
    assert executor.status("l1", first.directory).state is ExecState.RUNNING
    assert executor.status("l2", second.directory).state is ExecState.RUNNING
    assert _executor._LAUNCHER._proc is not launcher


def test_without_a_launcher_each_supervisor_is_a_fresh_interpreter(
    tmp_path: Path, start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpucaas.control import _executor

    monkeypatch.setattr(_executor, "_LAUNCHER", _executor._Launcher())
    monkeypatch.setattr(_executor._LAUNCHER, "_broken", True)
    executor = ProcessExecutor()
    launch = start(executor, make_launch(tmp_path, "fresh", "sh", "-c", "echo fresh"))
    assert ended(executor, launch).exit_code == 0
    assert "fresh" in (launch.directory / "log").read_text()
