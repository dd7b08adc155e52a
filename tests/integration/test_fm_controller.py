"""The fm-controller as operators run it: ``gpucaas fabric serve --backend simulated`` in a
real process, driven by ``fmctl`` and :class:`RemoteFabric` over its socket.

Covers every fmctl command through the controller, clients racing for overlapping
partitions, kill -9 in the middle of a burst of operations, a Fabric Manager restart
(replayed by the reconcile loop), the shared token, SIGTERM and the JSON log lines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from gpucaas.errors import Conflict, InvalidRequest
from gpucaas.fabric import (
    FabricManagerDown,
    FabricManagerNotReady,
    PartitionInUse,
    RemoteFabric,
    SimulatedFabric,
)
from gpucaas.topology import get_model

H100 = get_model("hgx-h100-8")
TOKEN = "0123456789abcdef0123456789abcdef"
BIN = Path(sys.executable).parent
_T = TypeVar("_T")


def script(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(
            f"the {name} console script is not installed beside {sys.executable}; run `make test`"
        )
    return str(path)


def wait_for(check: Callable[[], _T | None], what: str, timeout: float = 15.0) -> _T:
    """Poll ``check`` until it returns something true; fail saying ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """One ``gpucaas fabric serve`` process and what it keeps on disk."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        address: str,
        state_dir: Path,
        log_path: Path,
        log_file: IO[bytes],
        token: str | None,
    ) -> None:
        self.proc = proc
        self.address = address
        self.state_dir = state_dir
        self.log_path = log_path
        self._log_file = log_file
        self.token = token
        self.http_port: int | None = None

    # -- what it says ------------------------------------------------------------------

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8").splitlines()

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records so far (other lines are checked in their own test)."""
        return [json.loads(line) for line in self.log_lines() if line.startswith("{")]

    def client(self, *, token: str | None = None, timeout_s: float = 10.0) -> RemoteFabric:
        return RemoteFabric(self.address, token=token or self.token, timeout_s=timeout_s)

    def http(self, path: str) -> tuple[int, bytes]:
        assert self.http_port is not None
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return int(reply.status), bytes(reply.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), bytes(exc.read())

    # -- what it keeps -----------------------------------------------------------------

    def desired_document(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state_dir / "desired.json").read_text())
        return data

    def desired(self) -> list[int]:
        path = self.state_dir / "desired.json"
        return list(self.desired_document()["desired"]) if path.exists() else []

    def fm_active(self) -> list[int]:
        """The simulated Fabric Manager's active set, from its state file."""
        path = self.state_dir / "simulated-fm.json"
        return sorted(json.loads(path.read_text())["active"]) if path.exists() else []

    # -- lifecycle ---------------------------------------------------------------------

    def wait_ready(self) -> None:
        def serving() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"the daemon exited with {self.proc.returncode}:\n"
                    + self.log_path.read_text(encoding="utf-8")
                )
            return next((r for r in self.records() if r["msg"] == "fm-controller serving"), None)

        self.http_port = wait_for(serving, "the daemon's 'serving' log line")["http_port"]

        def answers() -> bool:
            with self.client(timeout_s=2) as client:
                try:
                    client.list_partitions()
                except FabricManagerNotReady:
                    return True  # the controller answered for an FM still initialising
                except FabricManagerDown:
                    return False
            return True

        wait_for(answers, f"the daemon to answer on {self.address}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._log_file.close()

    def terminate(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log_file.close()


StartDaemon = Callable[..., Daemon]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short directory for unix sockets (their paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="gpucaas-fm-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_daemon(tmp_path: Path, scratch: Path) -> Iterator[StartDaemon]:
    """Start ``gpucaas fabric serve``; every daemon started is killed when the test ends."""
    started: list[Daemon] = []

    def start(
        *,
        state_dir: Path | None = None,
        listen: str | None = None,
        token: str | None = None,
        extra: Sequence[str] = (),
        ready: bool = True,
    ) -> Daemon:
        n = len(started)
        state_dir = state_dir or tmp_path / f"state{n}"
        listen = listen or str(scratch / f"fm{n}.sock")
        command = [
            script("gpucaas"),
            "fabric",
            "serve",
            "--backend",
            "simulated",
            "--listen",
            listen,
            "--state-dir",
            str(state_dir),
            "--http-listen",
            "127.0.0.1:0",
            "--reconcile-interval",
            "0.2",
            *extra,
        ]
        if token is not None:
            token_file = tmp_path / f"token{n}"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)  # the daemon refuses a token file open to others
            command += ["--token-file", str(token_file)]
        log_path = tmp_path / f"daemon{n}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed by kill()/terminate()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file)
        daemon = Daemon(proc, listen, state_dir, log_path, log_file, token)
        started.append(daemon)
        if ready:
            daemon.wait_ready()
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def fmctl(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(address: str, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        prefix = ["--address", address]
        if token is not None:
            token_file = tmp_path / "client-token"
            token_file.write_text(token)
            token_file.chmod(0o600)
            prefix += ["--token-file", str(token_file)]
        return subprocess.run(
            [script("fmctl"), *prefix, *args], capture_output=True, text=True, timeout=60
        )

    return run


Fmctl = Callable[..., subprocess.CompletedProcess[str]]


# -- fmctl through the controller ---------------------------------------------------------


def test_every_fmctl_command_goes_through_the_controller(
    start_daemon: StartDaemon, fmctl: Fmctl
) -> None:
    daemon = start_daemon()
    sock = daemon.address

    def ok(*args: str) -> str:
        done = fmctl(sock, *args)
        assert done.returncode == 0, done.stderr
        assert daemon.desired() == daemon.fm_active()
        return done.stdout

    def refused(code: int, *args: str) -> str:
        before = (daemon.desired(), daemon.fm_active())
        done = fmctl(sock, *args)
        assert done.returncode == code, (done.stdout, done.stderr)
        assert done.stdout == "" and done.stderr.startswith("fmctl: ")
        assert len(done.stderr.splitlines()) == 1  # one line, no traceback
        assert (daemon.desired(), daemon.fm_active()) == before
        return done.stderr

    listed = ok("list").splitlines()
    assert listed[0].split() == "PARTITION ID STATUS GPUs NVLINKS GPU PHYSICAL IDs".split()
    assert len(listed) == 17
    assert listed[2].split() == ["0", "Inactive", "8", "144", "1,2,3,4,5,6,7,8"]
    assert listed[16].split() == ["14", "Inactive", "1", "0", "8"]
    assert ok("activate", "3") == "partition 3 activated\n"
    assert ok("activate", "--gpus", "2,4") == "partition 4 activated\n"
    assert daemon.desired() == [3, 4]
    assert json.loads(ok("--json", "status")) == {
        "partitions": 15,
        "active": [3, 4],
        "gpus_in_active_partitions": [1, 2, 3, 4],
    }
    assert "partition 3 (GPUs 1,3)" in ok("status")

    # Fabric Manager refused: exit 1 with its code and meaning.
    assert "FM_ST_IN_USE (-7)" in refused(1, "activate", "1")
    assert "FM_ST_IN_USE (-7)" in refused(1, "activate", "3")
    assert "FM_ST_UNINITIALIZED (-4)" in refused(1, "deactivate", "5")
    assert "FM_ST_BADPARAM (-1)" in refused(1, "activate", "15")
    assert "FM_ST_IN_USE (-7)" in refused(1, "set-activated", "1,3")

    # Bad input: exit 2, and nothing reached Fabric Manager.
    assert "not exactly one partition" in refused(2, "activate", "--gpus", "1,2")
    assert "not both or neither" in refused(2, "activate")
    assert "non-negative integers" in refused(2, "set-activated", "3,x")

    assert ok("set-activated", "5,6") == "activated set is now: 5, 6\n"
    assert daemon.desired() == [5, 6]
    assert json.loads(ok("--json", "deactivate", "5")) == {"deactivated": 5}
    assert ok("failed-devices") == "no devices with failed NVLinks\n"
    assert json.loads(ok("--json", "failed-devices")) == {"gpus": [], "switches": []}
    parts = json.loads(ok("--json", "list"))
    assert [p["id"] for p in parts if p["active"]] == [6]
    assert ok("set-activated", "none") == "activated set is now: none\n"
    assert daemon.desired() == [] == daemon.fm_active()

    with daemon.client() as client:
        status = client.status()
    assert (status.board, status.model, status.backend) == ("hgx-h100-8",) * 2 + ("simulated",)
    assert status.in_sync and list(status.desired) == []

    # Unreachable: exit 3.
    done = fmctl(str(Path(sock).with_name("nobody.sock")), "list")
    assert done.returncode == 3 and "cannot reach the fm-controller" in done.stderr
    done = fmctl("not an address", "list")
    assert done.returncode == 2 and "use a unix socket path" in done.stderr


# -- concurrency --------------------------------------------------------------------------


def test_clients_racing_for_overlapping_partitions_get_one_success_per_round(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon()
    clients = [daemon.client() for _ in range(16)]
    try:
        for client in clients:
            client.list_partitions()  # connected before the race starts
        with ThreadPoolExecutor(len(clients)) as pool:
            for round_ in range(6):
                barrier = threading.Barrier(len(clients), timeout=20)

                def attempt(i: int, barrier: threading.Barrier = barrier) -> tuple[int, str]:
                    pid = 1 if i % 2 else 3  # GPUs 1-4 against GPUs 1,3
                    barrier.wait()
                    try:
                        clients[i].activate(pid)
                    except PartitionInUse:
                        return pid, "in use"
                    return pid, "ok"

                results = list(pool.map(attempt, range(len(clients))))
                winners = [pid for pid, result in results if result == "ok"]
                assert len(winners) == 1, results
                assert [r for _, r in results].count("in use") == len(clients) - 1
                assert daemon.desired() == winners == daemon.fm_active()
                if round_ < 5:
                    clients[0].deactivate(winners[0])
                    assert daemon.desired() == [] == daemon.fm_active()
        with daemon.client() as client:
            status = client.status()
        assert list(status.desired) == winners and status.in_sync
    finally:
        for client in clients:
            client.close()


# -- crashes and restarts -----------------------------------------------------------------

BURST = [
    ("activate", 3),
    ("activate", 4),
    ("activate", 1),  # refused: overlaps 3 and 4
    ("deactivate", 3),
    ("deactivate", 3),  # refused: inactive
    ("deactivate", 4),
    ("activate", 1),
    ("activate", 0),  # refused
    ("deactivate", 1),
    ("activate", 5),
    ("deactivate", 5),
]


def burst(daemon: Daemon, done: list[str], stop: threading.Event) -> None:
    """Run BURST in a loop until the daemon goes away."""
    with daemon.client(timeout_s=5) as client:
        while not stop.is_set():
            for op, pid in BURST:
                try:
                    getattr(client, op)(pid)
                except Conflict:
                    pass
                except FabricManagerDown:
                    return
                done.append(f"{op} {pid}")


@pytest.mark.parametrize("ops_before_kill", [7, 25, 52], ids=lambda n: f"after-{n}-ops")
def test_kill_9_during_a_burst_leaves_desired_equal_to_fabric_manager(
    start_daemon: StartDaemon, ops_before_kill: int
) -> None:
    daemon = start_daemon()
    done: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(target=burst, args=(daemon, done, stop))
    thread.start()
    try:
        wait_for(lambda: len(done) >= ops_before_kill, f"{ops_before_kill} operations")
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.kill()
    finally:
        stop.set()
        thread.join(timeout=30)
    sock = Path(daemon.address)
    assert sock.exists()  # the killed daemon could not clean up
    with daemon.client(timeout_s=2) as client, pytest.raises(FabricManagerDown):
        client.list_partitions()

    again = start_daemon(state_dir=daemon.state_dir, listen=daemon.address)
    assert again.desired_document()["pending"] is None  # the intent was settled
    assert again.desired() == again.fm_active()
    with again.client() as client:
        status = wait_for(lambda: (s := client.status()).in_sync and s, "in sync")
    assert list(status.desired) == again.fm_active()
    assert status.replays == 0  # settled from the intent, not papered over by a replay


def fm_restart(state_dir: Path) -> None:
    """What ``nv-fabricmanager --restart`` does to the simulated FM the daemon serves."""
    SimulatedFabric(H100, state_file=state_dir / "simulated-fm.json").restart()


def replay_count(daemon: Daemon) -> float:
    status, body = daemon.http("/metrics")
    assert status == 200
    found = re.search(rb"^gpucaas_fm_replay_seconds_count (\S+)$", body, re.MULTILINE)
    assert found, body
    return float(found.group(1))


def test_a_fabric_manager_restart_is_replayed_by_the_controller(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        client.activate(3)
        client.activate(6)
    assert replay_count(daemon) == 0
    fm = SimulatedFabric(H100, state_file=daemon.state_dir / "simulated-fm.json")

    fm_restart(daemon.state_dir)
    assert fm.awaiting_replay and fm.active_ids() == set()
    # The metric, not FM's state file: the controller counts a replay only after set-activated
    # has returned (and written the file), so a wait on the file can beat the count.
    wait_for(lambda: replay_count(daemon) >= 1, "the controller to replay the desired set", 30)
    assert not fm.awaiting_replay
    assert fm.active_ids() == {3, 6} and daemon.desired() == [3, 6]
    status, body = wait_for(lambda: (r := daemon.http("/healthz"))[0] == 200 and r, "healthz")
    health = json.loads(body)
    assert health["ok"] and health["in_sync"] and health["fabric_active"] == [3, 6]
    with daemon.client() as client:
        assert client.status().replays >= 1
        client.deactivate(3)  # partition calls work again
        client.deactivate(6)

    replays = replay_count(daemon)
    fm_restart(daemon.state_dir)  # an empty set must be replayed too, or FM aborts
    wait_for(lambda: replay_count(daemon) > replays, "the controller to replay the empty set", 30)
    assert not fm.awaiting_replay
    assert fm.active_ids() == set() and not fm.aborted
    # the log line follows the metric in the same call
    wait_for(
        lambda: any(r["msg"] == "replayed the desired set" for r in daemon.records()),
        "the replay's log line",
        10,
    )


def test_while_fabric_manager_initialises_calls_are_refused_and_health_is_503(
    start_daemon: StartDaemon, fmctl: Fmctl
) -> None:
    daemon = start_daemon(extra=["--sim-init-s", "4"])
    with daemon.client() as client, pytest.raises(FabricManagerNotReady):
        client.activate(3)
    status, body = daemon.http("/healthz")
    assert status == 503 and json.loads(body)["in_sync"] is False
    assert "FM_ST_NOT_CONFIGURED" in json.loads(body)["last_error"]
    done = fmctl(daemon.address, "list")
    if done.returncode != 0:  # unless FM finished initialising meanwhile
        assert done.returncode == 1 and "FM_ST_NOT_CONFIGURED (-8)" in done.stderr
    wait_for(lambda: daemon.http("/healthz")[0] == 200, "FM to finish initialising", 15)
    with daemon.client() as client:
        client.activate(3)
    assert daemon.desired() == [3] == daemon.fm_active()


# -- the token and refusals to start ---------------------------------------------------------


def test_tcp_with_a_token_refuses_clients_without_it(
    start_daemon: StartDaemon, fmctl: Fmctl
) -> None:
    port = free_port()
    daemon = start_daemon(listen=f"127.0.0.1:{port}", token=TOKEN)
    address = daemon.address

    done = fmctl(address, "list")
    assert done.returncode == 2 and "token" in done.stderr, done.stderr
    done = fmctl(address, "list", token="not-the-token-but-long-enough")
    assert done.returncode == 2 and "token" in done.stderr, done.stderr
    done = fmctl(address, "activate", "3", token=TOKEN)
    assert done.returncode == 0, done.stderr
    assert daemon.desired() == [3]

    with RemoteFabric(address) as anonymous, pytest.raises(InvalidRequest, match="token"):
        anonymous.activate(4)
    with daemon.client(token="x" * 32) as wrong, pytest.raises(InvalidRequest, match="token"):
        wrong.list_partitions()
    assert daemon.desired() == [3] == daemon.fm_active()


REFUSED_STARTS = {
    "any-address-without-token": (
        ["--listen", "0.0.0.0:{port}"],
        "refusing to listen on 0.0.0.0:",
    ),
    "short-token": (["--token-file", "{short}"], "shorter than 16 characters"),
    "corrupt-desired-set": ([], "desired.json is unusable"),
    "grpc-port-in-use": (["--listen", "127.0.0.1:{busy}"], "address in use"),
    "metrics-port-in-use": (["--http-listen", "127.0.0.1:{busy}"], "cannot serve metrics"),
    "socket-directory-impossible": (["--listen", "{short}/fm.sock"], "cannot listen on"),
}


@pytest.mark.parametrize(("args", "message"), REFUSED_STARTS.values(), ids=REFUSED_STARTS.keys())
def test_refuses_to_start_with_a_clear_message(
    tmp_path: Path, scratch: Path, args: list[str], message: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "short").write_text("tooshort\n")
    (tmp_path / "short").chmod(0o600)
    if "desired" in message:
        (state / "desired.json").write_text("{garbage")
    command = [
        script("gpucaas"),
        "fabric",
        "serve",
        "--backend",
        "simulated",
        "--listen",  # a later --listen in args wins
        str(scratch / "fm.sock"),
        "--state-dir",
        str(state),
        "--http-listen",
        "127.0.0.1:0",
    ]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command += [a.format(port=free_port(), busy=port, short=tmp_path / "short") for a in args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (scratch / "fm.sock").exists()  # nothing left serving or bound
    if "desired" in message:
        assert (state / "desired.json").read_text() == "{garbage"  # kept for the operator


# -- stopping and logging -------------------------------------------------------------------


def test_sigterm_stops_cleanly_and_removes_the_socket(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        client.activate(3)
    assert Path(daemon.address).exists()
    assert daemon.terminate() == 0
    assert not Path(daemon.address).exists()
    assert daemon.records()[-1]["msg"] == "stopping"
    assert daemon.records()[-1]["signal"] == signal.SIGTERM
    assert daemon.desired() == [3] == daemon.fm_active()  # the set outlives the daemon


def test_logs_on_stderr_are_one_json_object_per_line(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        client.activate(3)
        with pytest.raises(PartitionInUse):
            client.activate(1)
    fm_restart(daemon.state_dir)
    wait_for(lambda: any(r["msg"] == "replayed the desired set" for r in daemon.records()), "log")
    assert daemon.terminate() == 0

    lines = daemon.log_lines()
    # gRPC's C core may print its own lines on failures; this run has none, so every line
    # must be one JSON object.
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) for r in records)
    for record in records:
        assert isinstance(record["ts"], float | int)
        assert record["level"] in {"debug", "info", "warning", "error", "critical"}
        assert isinstance(record["msg"], str) and record["msg"]
    by_msg = {r["msg"]: r for r in records}
    assert {"msg": "fabric operation", "op": "activate", "partition": 3}.items() <= next(
        r for r in records if r.get("op") == "activate" and r["level"] == "info"
    ).items()
    refused = by_msg["fabric operation refused"]
    assert (refused["level"], refused["op"], refused["code"], refused["partition"]) == (
        "warning",
        "activate",
        "FM_ST_IN_USE",
        1,
    )
    assert by_msg["replayed the desired set"]["partitions"] == 1
    assert by_msg["stopping"]["signal"] == signal.SIGTERM
