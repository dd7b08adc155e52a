"""Executors: how the local backend really runs a container on this machine.

Every container runs under a process supervisor (:mod:`gpucaas.control._supervisor`), a small
process that outlives the control plane: after a crash, a new :class:`Executor` reads a container's
:meth:`~Executor.status` from the files in its directory, so running containers are
re-adopted and ended ones report how they ended.

- :class:`SandboxExecutor` runs the command in a bubblewrap (``bwrap``) sandbox: an
  unprivileged user in its own user, mount, PID, network, IPC and UTS namespaces, with a
  read-only view of the host, a private /tmp, and the state directory hidden; stopping it ends
  every process it started (the PID namespace dies with bubblewrap). The embedded default.
- :class:`ProcessExecutor` runs the command as a host process: no isolation, development only
  (``gpucaas up --executor process --unsafe-process``).
- :class:`EngineExecutor` runs it with ``podman run`` or ``docker run``; with a CDI kind it
  passes the container's GPUs as CDI devices (``--device nvidia.com/gpu=0``), which the engine
  resolves through the host's CDI specs (``gpucaas node cdi generate``).

The supervisor is started as a script, ``python -I .../_supervisor.py --detach ...`` (see
:data:`SUPERVISOR_SCRIPT`), with ``--detach``: it forks, and the process the executor started exits
as soon as the supervisor has written ``shim.pid``. The executor waits for that process (so it
leaves no zombie and no ResourceWarning, and :meth:`~Executor.start` returns with the supervisor
up); the supervisor itself is reparented, so nobody in the control plane has to reap it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import enum
import json
import math
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gpucaas._files import write_atomically
from gpucaas.cdi import CdiError, qualified_name

from . import _supervisor
from ._errors import (
    AlreadyRunning,
    EngineCommandFailed,
    EngineNotFound,
    ExecutorRefused,
    SandboxUnavailable,
    ShimStartFailed,
)
from ._supervisor import (
    DEFAULT_GRACE_S,
    EXIT,
    GRACE_PLACEHOLDER,
    INFO_FD_PLACEHOLDER,
    LOG_MODE,
    STARTED,
    STOP_REQUEST,
    SUPERVISOR_LOG,
    SUPERVISOR_PID,
    now_iso,
    proc_start_time,
)

PROCESS_BANNER = (
    "gpucaas: process executor: the command runs as a host process with no isolation "
    "(development only)"
)
"""The first line of a process-executor container's log."""

SUPERVISOR_START_TIMEOUT_S = 30.0
"""How long :meth:`Executor.start` waits for the supervisor to write shim.pid."""
STOP_MARGIN_S = 5.0
"""How long :meth:`Executor.stop` waits for exit.json beyond the grace period."""
_POLL_S = 0.02

_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ENV_NAME = re.compile(r"[^=\x00]+")
SUPERVISOR_SCRIPT = Path(_supervisor.__file__)
"""The supervisor, run as a script with ``python -I``: it needs only the standard library, so it
imports nothing of gpucaas (whatever ``gpucaas.control`` imports) and ignores the PYTHON*
variables of the environment it passes on to the workload."""


@dataclass(frozen=True)
class NfsVolume:
    """An NFS export the engine mounts into the container as a volume (needs a container
    engine). The executor's own plain copy of the API's :class:`gpucaas._wire.NfsMount`: it
    checks its fields itself, since a :class:`Launch` may come from anywhere."""

    server: str
    path: str
    mount_path: str
    read_only: bool = False


@dataclass(frozen=True)
class Launch:
    """What to run for one container, and where its files live.

    ``gpu_env`` (the workload's board, GPU module IDs and partition) is merged over ``env``.
    ``gpu_devices`` are the GPUs' device IDs, which are also their CDI device names: "0".."7"
    in module-ID order, as the device plugin and ``gpucaas node cdi generate`` name them.
    """

    container_id: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: Mapping[str, str]
    directory: Path
    max_runtime_s: int | None = None
    nfs: tuple[NfsVolume, ...] = ()
    gpu_env: Mapping[str, str] = field(default_factory=dict)
    gpu_devices: tuple[str, ...] = ()

    def workload_env(self) -> dict[str, str]:
        """``env`` with ``gpu_env`` over it."""
        return {**self.env, **self.gpu_env}


class ExecState(enum.Enum):
    """Where a container stands, as far as its supervisor's files tell."""

    RUNNING = "running"
    EXITED = "exited"
    LOST = "lost"


@dataclass(frozen=True)
class ExecStatus:
    """A container's state; ``reason`` is exited|stopped|deadline|spawn-failed, or why lost."""

    state: ExecState
    exit_code: int | None
    reason: str
    message: str
    started_at: str | None
    finished_at: str | None
    signal: int | None = None


class Executor(Protocol):
    """Runs containers under a supervisor and reports on them from the supervisor's files."""

    name: str

    def check(self, launch: Launch) -> None:
        """Raise :class:`ExecutorRefused` if this executor cannot run ``launch``."""
        ...

    def start(self, launch: Launch) -> None:
        """Start ``launch`` under a supervisor; returns once the supervisor is up."""
        ...

    def stop(
        self,
        container_id: str,
        directory: Path,
        grace_s: float = DEFAULT_GRACE_S,
        *,
        wait: bool = True,
    ) -> None:
        """Stop the container (SIGTERM, SIGKILL after ``grace_s``); no-op once it ended.

        With ``wait=False`` it only asks the supervisor (which keeps the grace period) and returns.
        """
        ...

    def status(self, container_id: str, directory: Path) -> ExecStatus:
        """The container's state, read from its directory (works after a restart)."""
        ...


class _Corrupt(Exception):
    """A state file that cannot be read; ``str()`` names it and says what is wrong."""


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if it does not exist; :class:`_Corrupt` if bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _Corrupt(f"{path} cannot be read: {err}") from err
    try:
        data = json.loads(text)
    except ValueError as err:
        raise _Corrupt(f"{path} is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise _Corrupt(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def _get(data: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    """``data[key]`` if it is a ``kind`` (None if absent); :class:`_Corrupt` otherwise."""
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise _Corrupt(f"{path} has {key}={value!r}, which is not a {kind.__name__}")
    return value


def _lost(reason: str, message: str) -> ExecStatus:
    return ExecStatus(ExecState.LOST, None, reason, message, None, None)


def _alive(pid: object, start_time: object) -> bool:
    """Whether process ``pid`` is the one that started at ``start_time`` (not a reused pid)."""
    if not isinstance(pid, int) or not isinstance(start_time, int) or pid <= 0:
        return False
    return proc_start_time(pid) == start_time


class _SupervisedExecutor:
    """What both executors share: starting the supervisor, reading its files, stopping it."""

    name: str = "supervisor"
    max_log_bytes: int | None = None
    """Keep at most this much of each container's log (the tail; ``--max-log-bytes`` of the
    supervisor). None: all of it. ``gpucaas up --max-log-bytes`` sets it."""

    def __init__(self, *, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.grace_s = grace_s

    # -- to be provided by each executor ---------------------------------------------------

    def _workload(self, launch: Launch) -> list[str]:
        raise NotImplementedError

    def _supervisor_env(self, launch: Launch) -> dict[str, str]:
        raise NotImplementedError

    def _banner(self, launch: Launch) -> str | None:
        return None

    def _stop_cmd(self, launch: Launch) -> list[str] | None:
        return None

    def _launch_options(self, launch: Launch) -> list[str]:
        """Supervisor options on how to launch the workload (``--run-as``, ``--info-fd``)."""
        return []

    def _after_signal(
        self, container_id: str, directory: Path, grace_s: float, supervisor_alive: bool
    ) -> None:
        """Called by :meth:`stop` after signalling the supervisor (``supervisor_alive``) or
        finding it gone."""

    # -- shared ----------------------------------------------------------------------------

    def _refuse(self, launch: Launch, field: str, value: object, reason: str) -> ExecutorRefused:
        return ExecutorRefused(self.name, launch.container_id, field, value, reason)

    def check(self, launch: Launch) -> None:
        """Raise :class:`ExecutorRefused` if ``launch`` cannot be run as given."""
        if not _CONTAINER_ID.fullmatch(launch.container_id):
            raise self._refuse(
                launch,
                "container_id",
                launch.container_id,
                "use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit",
            )
        for name, value in launch.workload_env().items():
            if not _ENV_NAME.fullmatch(name) or "\x00" in value:
                raise self._refuse(
                    launch,
                    "env",
                    name,
                    "names must be non-empty without '=' or NUL, values without NUL",
                )
        if launch.max_runtime_s is not None and launch.max_runtime_s <= 0:
            raise self._refuse(
                launch, "max_runtime_s", launch.max_runtime_s, "give a positive number of seconds"
            )

    def start(self, launch: Launch) -> None:
        """Start ``launch`` under a detached supervisor; returns once it has written its pid."""
        self.check(launch)
        directory = launch.directory.resolve()  # the supervisor runs in it: no relative paths
        launch = dataclasses.replace(launch, directory=directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.status(launch.container_id, directory).state is ExecState.RUNNING:
            raise AlreadyRunning(launch.container_id, directory)
        for stale in (SUPERVISOR_PID, STARTED, EXIT, STOP_REQUEST):
            (directory / stale).unlink(missing_ok=True)
        supervisor_args = [
            "--detach",
            "--dir",
            str(directory),
            "--grace-s",
            repr(float(self.grace_s)),
        ]
        if launch.max_runtime_s is not None:
            supervisor_args += ["--max-runtime-s", str(launch.max_runtime_s)]
        if self.max_log_bytes is not None:
            supervisor_args += ["--max-log-bytes", str(self.max_log_bytes)]
        banner = self._banner(launch)
        if banner:
            supervisor_args += ["--banner", banner]
        stop_cmd = self._stop_cmd(launch)
        if stop_cmd:
            supervisor_args += ["--stop-cmd", json.dumps(stop_cmd)]
        supervisor_args += self._launch_options(launch)
        supervisor_args += ["--", *self._workload(launch)]
        env = self._supervisor_env(launch)
        code = _LAUNCHER.start(supervisor_args, env, directory)
        if code is None:  # no launcher: a fresh interpreter per supervisor (slower, same result)
            code = self._start_interpreter(launch, supervisor_args, env)
        if code != 0:
            raise ShimStartFailed(launch.container_id, directory, f"it exited with code {code}")

    def _start_interpreter(
        self, launch: Launch, supervisor_args: list[str], env: dict[str, str]
    ) -> int:
        directory = launch.directory
        argv = [sys.executable, "-I", str(SUPERVISOR_SCRIPT), *supervisor_args]
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        with open(os.open(directory / SUPERVISOR_LOG, flags, LOG_MODE), "ab") as supervisor_log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=supervisor_log,
                stderr=supervisor_log,
                env=env,
                cwd=directory,
                start_new_session=True,
            )
        with proc:
            try:
                return proc.wait(timeout=SUPERVISOR_START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise ShimStartFailed(
                    launch.container_id,
                    directory,
                    f"no shim.pid after {SUPERVISOR_START_TIMEOUT_S:g} s",
                ) from None

    def status(self, container_id: str, directory: Path) -> ExecStatus:
        """The container's state, read from the supervisor's files in ``directory``."""
        try:
            return self._status(directory)
        except _Corrupt as err:
            return _lost(str(err), "the container's state is unknown: fix or remove the file")

    def _status(self, directory: Path) -> ExecStatus:
        ended = self._exited(directory)
        if ended is not None:
            return ended
        pid_path = directory / SUPERVISOR_PID
        supervisor = _read_json(pid_path)
        if supervisor is None:
            return _lost(
                f"never started: no {SUPERVISOR_PID} in {directory}",
                "start the container (start() was not called here, or it failed)",
            )
        pid = _get(supervisor, "pid", int, pid_path)
        if _alive(pid, _get(supervisor, "start_time", int, pid_path)):
            started = _read_json(directory / STARTED) or {}
            started_at = _get(started, "started_at", str, directory / STARTED)
            return ExecStatus(ExecState.RUNNING, None, "running", "", started_at, None)
        ended = self._exited(directory)  # it may have finished between the two reads
        if ended is not None:
            return ended
        workload = self._workload_pid(directory)
        still = (
            f"; its workload (pid {workload}) is still running"
            if workload is not None
            else "; its workload is not running"
        )
        return _lost(
            f"the shim (pid {pid}) is gone without writing an exit status{still}",
            f"how the container ended is unknown (see {directory / SUPERVISOR_LOG}); stop it to "
            "make sure nothing is left running, then start it again",
        )

    def _exited(self, directory: Path) -> ExecStatus | None:
        exit_path = directory / EXIT
        record = _read_json(exit_path)
        if record is None:
            return None
        started = _read_json(directory / STARTED) or {}
        reason = _get(record, "reason", str, exit_path)
        if reason is None:
            raise _Corrupt(f"{exit_path} has no reason")
        return ExecStatus(
            ExecState.EXITED,
            _get(record, "exit_code", int, exit_path),
            reason,
            _get(record, "message", str, exit_path) or "",
            _get(started, "started_at", str, directory / STARTED),
            _get(record, "finished_at", str, exit_path),
            _get(record, "signal", int, exit_path),
        )

    def _workload_pid(self, directory: Path) -> int | None:
        """The workload's pid if it is still the process the supervisor started, else None."""
        try:
            started = _read_json(directory / STARTED)
        except _Corrupt:
            return None
        if started is None:
            return None
        pid, start_time = started.get("pid"), started.get("start_time")
        return pid if isinstance(pid, int) and _alive(pid, start_time) else None

    def stop(
        self,
        container_id: str,
        directory: Path,
        grace_s: float = DEFAULT_GRACE_S,
        *,
        wait: bool = True,
    ) -> None:
        """Stop the container and wait (up to ``grace_s`` + a margin) for it to end.

        Idempotent: nothing happens for a container that ended or never started. With
        ``wait=False`` a live supervisor is only signalled (it keeps the grace period itself), and
        an orphaned workload is killed at once; the call never blocks for the grace period.
        """
        try:
            supervisor = _read_json(directory / SUPERVISOR_PID)
            if supervisor is None or _read_json(directory / EXIT) is not None:
                return
        except _Corrupt:
            supervisor = {}
        pid, start_time = supervisor.get("pid"), supervisor.get("start_time")
        supervisor_alive = _alive(pid, start_time)
        if supervisor_alive:
            assert isinstance(pid, int)
            write_atomically(
                directory / STOP_REQUEST,
                json.dumps({"grace_s": grace_s, "requested_at": now_iso()}),
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if not wait:
            if not supervisor_alive:
                self._after_signal(container_id, directory, 0.0, supervisor_alive)
            return
        self._after_signal(container_id, directory, grace_s, supervisor_alive)
        if not supervisor_alive:
            return
        give_up = time.monotonic() + grace_s + STOP_MARGIN_S
        while time.monotonic() < give_up:
            if (directory / EXIT).exists() or not _alive(pid, start_time):
                return
            time.sleep(_POLL_S)


class _Launcher:
    """One long-lived ``_supervisor.py --launcher`` process that forks supervisors on request.

    A supervisor started by ``fork()`` from a loaded interpreter costs about a millisecond of CPU
    instead of a new interpreter's tens; on a busy control plane that is the difference
    between starting containers and starving the API. Shared by every executor in this
    process, started on first use, restarted once if it died. ``start`` returns None when
    no launcher can run, and the caller starts a fresh interpreter instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._broken = False

    def start(self, supervisor_args: list[str], env: Mapping[str, str], cwd: Path) -> int | None:
        request = {
            "argv": supervisor_args,
            "env": dict(env),
            "cwd": str(cwd),
            "log": str(cwd / SUPERVISOR_LOG),
        }
        line = (json.dumps(request) + "\n").encode()
        with self._lock:
            for _attempt in range(2):
                proc = self._running()
                if proc is None:
                    return None
                assert proc.stdin is not None and proc.stdout is not None
                try:
                    proc.stdin.write(line)
                    proc.stdin.flush()
                    ready, _, _ = select.select([proc.stdout], [], [], SUPERVISOR_START_TIMEOUT_S)
                    answer = proc.stdout.readline() if ready else b""
                except OSError:
                    answer = b""
                if answer:
                    try:
                        return int(json.loads(answer)["rc"])
                    except (ValueError, KeyError, TypeError):
                        return 1
                self._drop()  # died or hung: one fresh launcher, then give up on it
            self._broken = True
            return None

    def _running(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._broken:
            return None
        self._drop()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", str(SUPERVISOR_SCRIPT), _supervisor.LAUNCHER_FLAG],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            self._broken = True
            return None
        return self._proc

    def _drop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        with self._lock:
            self._drop()


_LAUNCHER = _Launcher()
atexit.register(_LAUNCHER.close)


class ProcessExecutor(_SupervisedExecutor):
    """Runs the command as a host process: no isolation, no image, development only.

    The workload's environment is only PATH (the control plane's), HOME (the container's
    directory), LANG, then ``env`` and ``gpu_env``.
    """

    name = "process"

    def check(self, launch: Launch) -> None:
        super().check(launch)
        if launch.nfs:
            raise self._refuse(
                launch,
                "nfs",
                [m.mount_path for m in launch.nfs],
                "NFS mounts need a container engine: start gpucaas up with --executor podman "
                "or docker",
            )
        if not launch.command and not launch.args:
            raise self._refuse(
                launch, "command", launch.command, "a process needs a command: give command or args"
            )

    def _workload(self, launch: Launch) -> list[str]:
        return [*launch.command, *launch.args]

    def _supervisor_env(self, launch: Launch) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(launch.directory),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            **launch.workload_env(),
        }

    def _banner(self, launch: Launch) -> str | None:
        ignored = f"; image {launch.image!r} is ignored" if launch.image else ""
        return PROCESS_BANNER + ignored

    def _after_signal(
        self, container_id: str, directory: Path, grace_s: float, supervisor_alive: bool
    ) -> None:
        """With the supervisor gone, stop an orphaned workload's process group directly."""
        if supervisor_alive:
            return  # the supervisor does it
        pid = self._workload_pid(directory)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        give_up = time.monotonic() + grace_s
        while time.monotonic() < give_up and self._workload_pid(directory) is not None:
            time.sleep(_POLL_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH inside the sandbox: the host's system directories (the control plane's own PATH may
name directories the sandbox hides)."""
SANDBOX_USER = "nobody"
"""The user a root control plane runs sandboxes as (``gpucaas up --sandbox-user``)."""
SANDBOX_PROBE_TIMEOUT_S = 10.0
"""How long the trial sandbox of :meth:`SandboxExecutor.probe` may take."""
_SANDBOX_PRIVATE = ("/tmp", "/var/tmp", "/run", "/dev/shm")
"""Host directories replaced by an empty private tmpfs in every sandbox: scratch space that
tenants must not share, and /run's daemon sockets (a read-only mount does not stop connect())."""


def _loads_code(name: str) -> bool:
    """Whether environment variable ``name`` makes the dynamic loader or glibc load code
    (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, GCONV_PATH...)."""
    return name.startswith("LD_") or name == "GCONV_PATH"


def _reachable(path: Path, uid: int, gid: int) -> bool:
    """Whether user ``uid``/``gid`` can walk down to ``path`` (search permission on each
    parent), as bubblewrap, running as that user, must to mount over it."""
    for parent in reversed(path.parents):
        try:
            st = parent.stat()
        except OSError:
            return False
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return False
    return True


class SandboxExecutor(ProcessExecutor):
    """Runs the command in a bubblewrap sandbox on this host: the embedded default.

    The workload runs as an unprivileged user (when the control plane is root, ``user``, by
    default ``nobody``, never root's own uid; otherwise the control plane's user) in new
    user, mount, PID, network, IPC, UTS and cgroup namespaces: ``/`` is the host's,
    read-only; /tmp, /var/tmp, /run and /dev/shm are private and empty; the state directory
    (the store, credentials.json, every container's log) and ``hide`` are covered by an empty
    tmpfs (for a non-root control plane, its user's home too); the network is a loopback
    interface only. ``--die-with-parent`` and the PID namespace make stop, max runtime and the
    workload's own exit end every process it started, ``setsid`` or not. The image is
    ignored, as with the process executor: the host's programs run. Not a VM: the kernel is
    shared, and there are no CPU, memory or disk limits.

    Parameters:
        binary: the ``bwrap`` command.
        user: the user (name or uid) to run sandboxes as when the control plane is root.
        hide: more host paths to cover with an empty tmpfs (the state directory).
        grace_s: as for every executor.

    Raises:
        SandboxUnavailable: the control plane is root and ``user`` does not exist or is root.
    """

    name = "sandbox"

    def __init__(
        self,
        binary: str = "bwrap",
        *,
        user: str | int = SANDBOX_USER,
        hide: Sequence[Path | str] = (),
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        super().__init__(grace_s=grace_s)
        self.binary = binary
        self.run_as: tuple[int, int] | None = None
        hidden = [Path(h).resolve() for h in hide]
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
            except KeyError:
                raise SandboxUnavailable(f"there is no user {user!r} to run sandboxes as") from None
            if entry.pw_uid == 0:
                raise SandboxUnavailable(f"user {user!r} is root; give an unprivileged user")
            self.run_as = (entry.pw_uid, entry.pw_gid)
        else:
            home = Path.home().resolve()
            if home != Path("/"):
                hidden.append(home)
        self.hide = tuple(hidden)

    @classmethod
    def from_path(
        cls,
        *,
        user: str | int = SANDBOX_USER,
        hide: Sequence[Path | str] = (),
        grace_s: float = DEFAULT_GRACE_S,
    ) -> SandboxExecutor:
        """The executor with ``bwrap`` from PATH, once a trial sandbox ran.

        Raises:
            SandboxUnavailable: no ``bwrap`` on PATH, or it cannot make a sandbox here
                (unprivileged user namespaces disabled, no such ``user``).
        """
        binary = shutil.which("bwrap")
        if binary is None:
            raise SandboxUnavailable(f"bwrap is not on PATH ({os.environ.get('PATH', '')!r})")
        # The real file: the sandbox's user starts it, and may not reach a link's directory.
        executor = cls(os.path.realpath(binary), user=user, hide=hide, grace_s=grace_s)
        executor.probe()
        return executor

    def probe(self) -> None:
        """Run ``true`` in a sandbox made like a container's.

        Raises:
            SandboxUnavailable: it did not run, with bubblewrap's own reason.
        """
        argv = [*self._sandbox_args(()), "--", "true"]
        run_as: dict[str, Any] = {}
        if self.run_as is not None:
            run_as = {"user": self.run_as[0], "group": self.run_as[1], "extra_groups": []}
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=SANDBOX_PROBE_TIMEOUT_S,
                check=False,
                cwd="/",
                env={"PATH": SANDBOX_PATH},
                **run_as,
            )
        except (OSError, subprocess.SubprocessError) as err:
            raise SandboxUnavailable(f"{self.binary} cannot be run: {err}") from err
        if done.returncode != 0:
            why = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            raise SandboxUnavailable(f"a trial sandbox failed: {why[0]}")

    def _sandbox_args(self, extra_hidden: Sequence[Path]) -> list[str]:
        argv = [
            self.binary,
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
        ]
        covered: list[Path] = []
        for path in [*map(Path, _SANDBOX_PRIVATE), *self.hide, *extra_hidden]:
            if any(path == c or c in path.parents for c in covered) or not path.is_dir():
                continue  # hidden already, or nothing there to hide
            if self.run_as is not None and not _reachable(path, *self.run_as):
                continue  # the sandbox's user cannot get there anyway (e.g. under /root)
            argv += ["--tmpfs", str(path)]
            covered.append(path)
        return [*argv, "--chdir", "/tmp"]

    def _workload(self, launch: Launch) -> list[str]:
        # The containers' root, whoever built this executor: other tenants' logs live there.
        sandbox = self._sandbox_args([launch.directory.parent])
        for name, value in launch.workload_env().items():
            if _loads_code(name):
                sandbox += ["--setenv", name, value]
        return [*sandbox, "--info-fd", INFO_FD_PLACEHOLDER, "--", *super()._workload(launch)]

    def _launch_options(self, launch: Launch) -> list[str]:
        options = ["--info-fd"]
        if self.run_as is not None:
            options += ["--run-as", f"{self.run_as[0]}:{self.run_as[1]}"]
        return options

    def _supervisor_env(self, launch: Launch) -> dict[str, str]:
        env = {
            "PATH": SANDBOX_PATH,
            "HOME": "/tmp",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            **launch.workload_env(),
        }
        # bubblewrap itself runs outside the sandbox with this environment: no tenant variable
        # may make it load code (those reach the command through --setenv instead).
        return {name: value for name, value in env.items() if not _loads_code(name)}

    def _banner(self, launch: Launch) -> str | None:
        if not launch.image:
            return None
        return (
            "gpucaas: sandbox executor: the command runs this host's programs in a sandbox; "
            f"image {launch.image!r} is ignored"
        )


class EngineExecutor(_SupervisedExecutor):
    """Runs the container with a container engine's CLI (``podman`` or ``docker``).

    Parameters:
        engine: the engine's name, for messages and the default binary.
        binary: the command to run (a path, or a name looked up on PATH); default ``engine``.
        grace_s: the grace period when the supervisor stops a container past its deadline.
        engine_args: extra options of ``<engine> run``, placed before the container's own
            (e.g. ``--runtime runc``, ``--ulimit nofile=1024:1024`` where the engine's
            defaults do not work on this host).
        cdi_kind: pass each of a container's GPUs as the CDI device ``<cdi_kind>=<device ID>``
            (``--device nvidia.com/gpu=0``). Needs a CDI spec for that kind on the host that
            the engine reads (podman 4.3 reads /etc/cdi and /var/run/cdi, and only specs up
            to cdiVersion 0.5.0). None (the default): GPUs are only named in the environment.

    Raises:
        CdiError: ``cdi_kind`` is not a CDI kind (``vendor/class``).
    """

    def __init__(
        self,
        engine: str = "podman",
        binary: str | None = None,
        *,
        grace_s: float = DEFAULT_GRACE_S,
        engine_args: Sequence[str] = (),
        cdi_kind: str | None = None,
    ) -> None:
        super().__init__(grace_s=grace_s)
        self.name = engine
        self.engine = engine
        self.binary = binary or engine
        self.engine_args = tuple(engine_args)
        if cdi_kind is not None:
            qualified_name(cdi_kind, "0")  # a bad kind fails here, not at the first GPU
        self.cdi_kind = cdi_kind

    @classmethod
    def from_path(
        cls,
        engine: str,
        *,
        grace_s: float = DEFAULT_GRACE_S,
        engine_args: Sequence[str] = (),
        cdi_kind: str | None = None,
    ) -> EngineExecutor:
        """The executor for ``engine`` found on PATH; :class:`EngineNotFound` if it is not."""
        binary = shutil.which(engine)
        if binary is None:
            raise EngineNotFound(engine, os.environ.get("PATH", ""))
        return cls(engine, binary, grace_s=grace_s, engine_args=engine_args, cdi_kind=cdi_kind)

    @staticmethod
    def container_name(container_id: str) -> str:
        """The engine-side name of a container."""
        return f"gpucaas-{container_id}"

    def check(self, launch: Launch) -> None:
        super().check(launch)
        if not launch.image:
            raise self._refuse(launch, "image", launch.image, "a container engine needs an image")
        for mount in launch.nfs:
            for name in ("server", "path", "mount_path"):
                value = getattr(mount, name)
                if not value or any(c in value for c in ',"\n\x00'):
                    raise self._refuse(
                        launch,
                        f"nfs.{name}",
                        value,
                        "give a non-empty value without commas, quotes or newlines",
                    )
            if not mount.mount_path.startswith("/"):
                raise self._refuse(
                    launch, "nfs.mount_path", mount.mount_path, "give an absolute path"
                )
        self._cdi_devices(launch)

    def _cdi_devices(self, launch: Launch) -> list[str]:
        """The fully qualified CDI names of the container's GPUs (none without a kind)."""
        if self.cdi_kind is None:
            return []
        names = []
        for device in launch.gpu_devices:
            try:
                names.append(qualified_name(self.cdi_kind, device))
            except CdiError as err:
                raise self._refuse(launch, "gpu_devices", device, str(err)) from err
        return names

    def _workload(self, launch: Launch) -> list[str]:
        argv = [
            self.binary,
            "run",
            "--rm",
            "--name",
            self.container_name(launch.container_id),
            "--label",
            f"gpucaas.container={launch.container_id}",
            *self.engine_args,
        ]
        for device in self._cdi_devices(launch):
            argv += ["--device", device]
        for name, value in launch.workload_env().items():
            argv += ["-e", f"{name}={value}"]
        for mount in launch.nfs:
            argv += ["--mount", nfs_mount_option(mount)]
        rest = list(launch.args)
        if launch.command:
            argv += ["--entrypoint", launch.command[0]]
            rest = [*launch.command[1:], *rest]
        return [*argv, launch.image, *rest]

    def _supervisor_env(self, launch: Launch) -> dict[str, str]:
        return dict(os.environ)  # the engine's CLI needs its own settings (XDG_*, DOCKER_*)

    def _stop_cmd(self, launch: Launch) -> list[str]:
        return [
            self.binary,
            "stop",
            "-t",
            GRACE_PLACEHOLDER,
            self.container_name(launch.container_id),
        ]

    def _after_signal(
        self, container_id: str, directory: Path, grace_s: float, supervisor_alive: bool
    ) -> None:
        """Run ``<engine> stop -t <grace> gpucaas-<id>``; a container already gone is fine."""
        argv = [self.binary, "stop", "-t", str(math.ceil(grace_s))]
        argv.append(self.container_name(container_id))
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=grace_s + 30,
                check=False,
            )
        except FileNotFoundError:
            raise EngineNotFound(self.binary, os.environ.get("PATH", "")) from None
        except subprocess.TimeoutExpired as err:
            raise EngineCommandFailed(argv, -1, f"no answer after {err.timeout:g} s") from None
        if done.returncode != 0 and "no such container" not in done.stderr.lower():
            raise EngineCommandFailed(argv, done.returncode, done.stderr)


def nfs_mount_option(mount: NfsVolume) -> str:
    """The ``--mount`` value of an NFS volume (the local driver), in the engine's CSV syntax.

    The ``o=`` option holds a comma when read-only, so that field is quoted.
    """
    options = f"addr={mount.server}" + (",ro" if mount.read_only else "")
    parts = [
        "type=volume",
        f"dst={mount.mount_path}",
        "volume-driver=local",
        "volume-opt=type=nfs",
        f"volume-opt=device={mount.server}:{mount.path}",
        f'"volume-opt=o={options}"' if "," in options else f"volume-opt=o={options}",
    ]
    if mount.read_only:
        parts.append("readonly")
    return ",".join(parts)
