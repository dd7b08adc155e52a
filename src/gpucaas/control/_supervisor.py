"""The process supervisor: a tiny process that runs one container's workload and records how
it ended (the local backend's; not the Kata containerd shim of the Kubernetes backend).

Like conmon or containerd-shim, one supervisor runs per container and outlives the control
plane (it is in its own session and, with ``--detach``, reparented away from its starter), so
a control plane restarted after a crash re-adopts running containers, or reads how they
ended, from files in the container's directory::

    python -m gpucaas.control._supervisor --dir DIR [--max-runtime-s N] [--grace-s G]
        [--banner TEXT] [--stop-cmd JSON] [--detach] -- ARGV...

or, as the executors do, ``python -I path/to/_supervisor.py ...`` (standard library only, so
it needs no import path and ignores the PYTHON* variables meant for the workload).

Files in DIR (their names predate the module's and stay, so a control plane re-adopts the
containers an older one started): ``shim.pid`` (the supervisor's pid and /proc start time,
which guards against pid reuse), ``log`` (the workload's stdout and stderr),
``started.json`` (the workload's pid and start time), ``exit.json`` (written last: exit
code, signal, reason, message), ``stop.json`` (written by a stopper before it sends SIGTERM:
the grace period it asks for) and ``shim.log`` (the supervisor's own errors, written by
whoever started it).

On SIGTERM (or SIGINT) the supervisor sends SIGTERM to the workload's process group, runs the
``--stop-cmd`` if any (an engine's ``stop``), waits the grace period, then sends SIGKILL;
past ``--max-runtime-s`` it does the same with reason ``deadline``.

How the workload is launched, for the sandbox executor: ``--run-as UID:GID`` starts it as that
user with no supplementary groups (a root supervisor runs bubblewrap unprivileged), and
``--info-fd`` passes it a pipe in place of the argument ``{info_fd}`` on which bubblewrap
writes ``{"child-pid": N}``, its sandbox's first process: SIGTERM then goes to that
process's group (the workload inside the sandbox: bubblewrap's outer process dies at once on
SIGTERM, taking the whole PID namespace with it), so the workload gets its grace period; the
SIGKILL after it still goes to bubblewrap, which ends everything in the namespace.

It imports only the standard library and the stdlib-only leaf :mod:`gpucaas._files`, so it
starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from gpucaas._files import write_atomically

SUPERVISOR_PID = "shim.pid"
"""The supervisor's pid and /proc start time: ``{"pid": int, "start_time": int}``."""
LOG = "log"
"""The workload's stdout and stderr (appended; with ``--max-log-bytes``, its tail)."""
LOG_CUT_MARKER = "gpucaas: [log cut:"
"""How the line that replaces a cut head of the log begins."""
STARTED = "started.json"
"""``{"pid": int, "start_time": int | null, "started_at": ISO-8601}`` of the workload."""
EXIT = "exit.json"
"""How the workload ended: exit_code, signal, reason, message, finished_at."""
STOP_REQUEST = "stop.json"
"""``{"grace_s": float}``, written by a stopper just before it sends SIGTERM to the supervisor."""
SUPERVISOR_LOG = "shim.log"
"""The supervisor's own stdout and stderr (its tracebacks, the stop command's errors)."""

DEFAULT_GRACE_S = 10.0
"""Seconds between SIGTERM and SIGKILL when nobody asks for another grace period."""
GRACE_PLACEHOLDER = "{grace}"
"""In ``--stop-cmd``, replaced by the grace period in whole seconds (rounded up)."""
INFO_FD_PLACEHOLDER = "{info_fd}"
"""With ``--info-fd``, the workload argument replaced by the fd of the info pipe."""
LOG_MODE = 0o600
"""The mode of the files the supervisor creates (the log holds the tenant's output)."""
_ENGINE_STOP_MARGIN_S = 5.0
"""Extra wait for a workload being stopped by a stop command, before SIGKILL."""


def now_iso() -> str:
    """The current time, ISO-8601 in UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def proc_start_time(pid: int) -> int | None:
    """The start time (clock ticks after boot) of live process ``pid``; None if it is gone.

    A zombie counts as gone. Comparing start times tells a process from a later one that
    got the same pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


class _Signals:
    """SIGTERM and SIGINT as a flag plus a readable fd, so a select() wakes up on them."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        self.received: int | None = None
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.read_fd, 512):
                pass


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gpucaas.control._supervisor",
        description="Run one container's workload, supervised, and record how it ended.",
    )
    parser.add_argument("--dir", required=True, type=Path, help="the container's directory")
    parser.add_argument("--max-runtime-s", type=float, default=None)
    parser.add_argument("--grace-s", type=float, default=DEFAULT_GRACE_S)
    parser.add_argument("--banner", default=None, help="a line written to the log first")
    parser.add_argument(
        "--max-log-bytes",
        type=int,
        default=None,
        help="keep at most this much of the log: past it the head is cut (the newest output "
        "stays) and a marker line says how much went",
    )
    parser.add_argument(
        "--stop-cmd",
        default=None,
        help=f"a JSON list, run on stop or deadline; {GRACE_PLACEHOLDER} becomes the grace",
    )
    parser.add_argument(
        "--run-as",
        default=None,
        help="UID:GID: start the workload as this user, with no supplementary groups",
    )
    parser.add_argument(
        "--info-fd",
        action="store_true",
        help=f"pass a pipe as {INFO_FD_PLACEHOLDER}; SIGTERM the group of its child-pid",
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="fork; the parent exits once shim.pid is written (so nobody must reap the supervisor)",
    )
    parser.add_argument("argv", nargs="+", help="the workload, after --")
    opts = parser.parse_args(argv)
    if opts.stop_cmd is not None:
        stop_cmd = json.loads(opts.stop_cmd)
        if not isinstance(stop_cmd, list) or not all(isinstance(a, str) for a in stop_cmd):
            parser.error(f"--stop-cmd must be a JSON list of strings, not {opts.stop_cmd!r}")
        opts.stop_cmd = stop_cmd
    if opts.run_as is not None:
        uid, sep, gid = opts.run_as.partition(":")
        if not sep or not uid.isdigit() or not gid.isdigit():
            parser.error(f"--run-as must be UID:GID, not {opts.run_as!r}")
        opts.run_as = (int(uid), int(gid))
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the supervisor; with ``--detach``, the caller's process returns once it is up."""
    opts = _parse(sys.argv[1:] if argv is None else argv)
    directory: Path = opts.dir
    directory.mkdir(parents=True, exist_ok=True)
    if not opts.detach:
        return _supervise(opts, ready_fd=None)
    ready_r, ready_w = os.pipe()
    if os.fork():
        # The parent: exit once the child has written shim.pid (or died trying).
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            return 0 if ready.read(1) == b"1" else 1
    os.close(ready_r)
    os.setsid()
    return _supervise(opts, ready_fd=ready_w)


def _supervise(opts: argparse.Namespace, ready_fd: int | None) -> int:
    directory: Path = opts.dir
    signals = _Signals()  # before shim.pid exists: nobody signals a supervisor it cannot find
    pid = os.getpid()
    write_atomically(
        directory / SUPERVISOR_PID, json.dumps({"pid": pid, "start_time": proc_start_time(pid)})
    )
    if ready_fd is not None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    argv: list[str] = opts.argv
    info_r: int | None = None
    pass_fds: tuple[int, ...] = ()
    if opts.info_fd:
        info_r, info_w = os.pipe()
        os.set_blocking(info_r, False)
        argv = [str(info_w) if arg == INFO_FD_PLACEHOLDER else arg for arg in argv]
        pass_fds = (info_w,)
    run_as: dict[str, Any] = {}
    if opts.run_as is not None:
        run_as = {"user": opts.run_as[0], "group": opts.run_as[1], "extra_groups": []}
    capped = opts.max_log_bytes is not None
    # With a cap the output goes through us (a cut reads the tail: read and write).
    flags = (os.O_RDWR if capped else os.O_WRONLY) | os.O_APPEND | os.O_CREAT
    log_fd = os.open(directory / LOG, flags, LOG_MODE)
    with open(log_fd, "a+b" if capped else "ab") as log:
        if opts.banner:
            log.write(f"{opts.banner}\n".encode())
            log.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capped else log,
                stderr=subprocess.STDOUT if capped else log,
                cwd=directory,
                start_new_session=True,
                pass_fds=pass_fds,
                **run_as,
            )
        except OSError as err:
            message = (
                f"cannot start {argv[0]!r}: {err.strerror or err}; check that the program "
                "exists (on PATH, or in the image) and is executable, or fix the command"
            )
            log.write(f"gpucaas: {message}\n".encode())
            _write_exit(directory, None, None, "spawn-failed", message)
            return 0
        finally:
            for fd in pass_fds:
                os.close(fd)
        opts.info_r = info_r
        cap = None
        if proc.stdout is not None:
            cap = _LogCap(log, proc.stdout.fileno(), opts.max_log_bytes)
        with proc:
            write_atomically(
                directory / STARTED,
                json.dumps(
                    {
                        "pid": proc.pid,
                        "start_time": proc_start_time(proc.pid),
                        "started_at": now_iso(),
                    }
                ),
            )
            _wait(proc, opts, signals, cap)
    return 0


class _LogCap:
    """Copies the workload's output (a pipe) into the log, keeping at most ``limit`` bytes:
    past it, the head is cut, half the limit of the newest output stays, and a marker line
    says how many bytes went. The supervisor is the file's only writer, so the cut loses
    nothing of the tail; a reader that holds an offset past the new end reads from the top."""

    def __init__(self, log: Any, fd: int, limit: int) -> None:
        self.log = log
        self.fd = fd
        self.limit = max(limit, 1024)
        self.size = os.fstat(log.fileno()).st_size
        self.cut = 0
        self.marker = 0  # bytes of the marker line at the file's head (not output)
        self.open = True
        os.set_blocking(fd, False)

    def pump(self, budget: int = 1 << 20) -> None:
        """Copy what the pipe holds now (at most ``budget`` bytes: a flood cannot starve the
        supervisor's other duties)."""
        while self.open and budget > 0:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self.open = False
                return
            budget -= len(chunk)
            self.log.write(chunk)
            self.log.flush()
            self.size += len(chunk)
            if self.size > self.limit:
                self._cut()

    def _cut(self) -> None:
        fd = self.log.fileno()
        keep = self.limit // 2
        tail = os.pread(fd, keep, self.size - keep)
        start = tail.find(b"\n")  # begin at a line when one is near
        if 0 <= start < 4096:
            tail = tail[start + 1 :]
        self.cut += self.size - self.marker - len(tail)
        marker = (
            f"{LOG_CUT_MARKER} {self.cut} bytes of earlier output dropped; the log keeps "
            f"about the last {self.limit} bytes]\n"
        ).encode()
        os.ftruncate(fd, 0)  # the file is O_APPEND: the next write lands at the new end
        self.log.write(marker + tail)
        self.log.flush()
        self.size = len(marker) + len(tail)
        self.marker = len(marker)


def log_cut(head: bytes) -> tuple[int, int]:
    """Where a capped log's kept output starts: ``(dropped, marker_length)`` read from the
    file's first bytes, ``(0, 0)`` when the head was never cut. Byte ``p`` of the
    workload's output is at file offset ``marker_length + p - dropped`` (when ``p >=
    dropped``), which lets a follower keep its place across a cut."""
    if not head.startswith(LOG_CUT_MARKER.encode()):
        return 0, 0
    end = head.find(b"\n")
    fields = head[len(LOG_CUT_MARKER) : max(end, 0)].split()
    if end < 0 or not fields or not fields[0].isdigit():
        return 0, 0
    return int(fields[0]), end + 1


def _wait(
    proc: subprocess.Popen[bytes],
    opts: argparse.Namespace,
    signals: _Signals,
    cap: _LogCap | None = None,
) -> None:
    """Wait for the workload, terminating it on a signal or past its deadline."""
    directory: Path = opts.dir
    started = time.monotonic()
    deadline = None if opts.max_runtime_s is None else started + opts.max_runtime_s
    reason = "exited"
    grace: float = opts.grace_s
    kill_at: float | None = None
    stopper: subprocess.Popen[bytes] | None = None
    try:
        pidfd: int | None = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if reason == "exited" and signals.received is not None:
                reason, grace = "stopped", _requested_grace(directory, opts.grace_s)
            elif reason == "exited" and deadline is not None and now >= deadline:
                reason = "deadline"
            if reason != "exited" and kill_at is None:
                stopper = _terminate(proc, opts.stop_cmd, grace, _term_group(opts, proc.pid))
                margin = _ENGINE_STOP_MARGIN_S if stopper is not None else 0.0
                kill_at = now + grace + margin
            elif kill_at is not None and now >= kill_at:
                _killpg(proc.pid, signal.SIGKILL)
                kill_at = math.inf
            wake_at = [t for t in (deadline if reason == "exited" else None, kill_at) if t]
            timeout = max(min(wake_at) - now, 0.0) if wake_at else None
            if timeout == math.inf:
                timeout = None
            if pidfd is None:
                timeout = 0.2 if timeout is None else min(timeout, 0.2)
            watched = [signals.read_fd] if pidfd is None else [signals.read_fd, pidfd]
            if cap is not None and cap.open:
                watched.append(cap.fd)
            select.select(watched, [], [], timeout)
            signals.drain()
            if cap is not None:
                cap.pump()
    finally:
        if pidfd is not None:
            os.close(pidfd)
    if cap is not None:
        cap.pump(budget=64 << 20)  # what it wrote before it ended (a child may hold the pipe)
    if reason != "exited":
        _killpg(proc.pid, signal.SIGKILL)  # what the workload left behind in its group
    code = proc.returncode
    exit_code, signum = (None, -code) if code < 0 else (code, None)
    outcome = _describe(exit_code, signum)
    if reason == "stopped":
        message = f"stopped on request (SIGTERM, SIGKILL after {grace:g} s): {outcome}"
    elif reason == "deadline":
        message = f"ran past its max runtime of {opts.max_runtime_s:g} s and was stopped: {outcome}"
    else:
        message = outcome
    _write_exit(directory, exit_code, signum, reason, message)
    if stopper is not None:
        try:
            stopper.wait(timeout=grace + _ENGINE_STOP_MARGIN_S)
        except subprocess.TimeoutExpired:
            stopper.kill()
            stopper.wait()


def _requested_grace(directory: Path, default: float) -> float:
    """The grace period a stopper asked for in stop.json, else ``default``."""
    try:
        grace = json.loads((directory / STOP_REQUEST).read_text(encoding="utf-8"))["grace_s"]
    except (OSError, ValueError, KeyError, TypeError):
        return default
    if isinstance(grace, int | float) and not isinstance(grace, bool) and grace >= 0:
        return float(grace)
    return default


def _term_group(opts: argparse.Namespace, workload_pid: int) -> int:
    """The process group that gets SIGTERM: the workload's, or with ``--info-fd`` the group of
    the sandbox's first process as bubblewrap reported it (the workload's if it has not yet)."""
    info_r: int | None = getattr(opts, "info_r", None)
    if info_r is None:
        return workload_pid
    try:
        data = os.read(info_r, 1 << 16)
        child = json.loads(data)["child-pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return workload_pid
    if not isinstance(child, int) or isinstance(child, bool) or child <= 0:
        return workload_pid
    return child


def _terminate(
    proc: subprocess.Popen[bytes], stop_cmd: list[str] | None, grace: float, group: int
) -> subprocess.Popen[bytes] | None:
    """SIGTERM ``group`` and start the stop command, if any (not waited for)."""
    _killpg(group, signal.SIGTERM)
    if not stop_cmd:
        return None
    seconds = str(math.ceil(grace))
    argv = [seconds if arg == GRACE_PLACEHOLDER else arg for arg in stop_cmd]
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    except OSError as err:
        print(f"gpucaas shim: cannot run the stop command {argv}: {err}", file=sys.stderr)
        return None


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _describe(exit_code: int | None, signum: int | None) -> str:
    if signum is not None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"the command was killed by {name}"
    return f"the command exited with code {exit_code}"


def _write_exit(
    directory: Path, exit_code: int | None, signum: int | None, reason: str, message: str
) -> None:
    record: dict[str, Any] = {
        "exit_code": exit_code,
        "signal": signum,
        "reason": reason,
        "message": message,
        "finished_at": now_iso(),
    }
    write_atomically(directory / EXIT, json.dumps(record))


LAUNCHER_FLAG = "--launcher"


def serve_launcher() -> int:
    """``--launcher``: start supervisors by ``fork()`` from this small, already-loaded process.

    Starting a supervisor as a new interpreter costs tens of milliseconds of CPU; forking this
    one costs about one. Requests arrive on stdin, one JSON object per line:
    ``{"argv": [supervisor arguments], "env": {...}, "cwd": DIR, "log": PATH}``; each is run as
    :func:`main` with those arguments in a forked child (stdout and stderr to ``log``), and
    ``{"rc": N}`` is answered on stdout once that child returned (with ``--detach``: once
    the supervisor is up). Exits at end of input; the supervisors it started live on.
    """
    for line in sys.stdin:
        try:
            request = json.loads(line)
            argv = [str(a) for a in request["argv"]]
            env = {str(k): str(v) for k, v in request["env"].items()}
            cwd, log_path = str(request["cwd"]), str(request["log"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            sys.stdout.write(json.dumps({"rc": 2, "error": f"bad request: {err}"}) + "\n")
            sys.stdout.flush()
            continue
        pid = os.fork()
        if pid == 0:  # the child: becomes the starter of one supervisor
            code = 1
            try:
                null = os.open(os.devnull, os.O_RDONLY)
                log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
                os.dup2(null, 0)
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
                os.close(null)
                os.close(log_fd)
                sys.stdin = open(os.devnull)  # noqa: SIM115 - this process ends below
                os.chdir(cwd)
                os.environ.clear()
                os.environ.update(env)
                code = main(argv)
            except BaseException:  # noqa: BLE001 - report, then leave this forked child
                import traceback

                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                    sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == [LAUNCHER_FLAG]:
        raise SystemExit(serve_launcher())
    raise SystemExit(main())
