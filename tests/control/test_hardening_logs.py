"""Issue 13, item 6: a container's 200 MB of stdout was kept and served whole. With a cap the
supervisor keeps the tail and marks the cut."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gpucaas.control import ProcessExecutor
from gpucaas.control._executor import ExecState
from gpucaas.control._supervisor import LOG_CUT_MARKER
from tests.control.test_control_executor import ended, make_launch

# 20 MB of numbered lines, then a last line the tail must keep.
FLOOD = (
    "import sys\n"
    "w = sys.stdout.buffer\n"
    "for i in range(400_000): w.write(b'line %08d ' % i + b'x' * 40 + b'\\n')\n"
    "w.write(b'the end\\n')\n"
)


def test_the_log_keeps_its_tail_and_marks_the_cut(tmp_path: Path) -> None:
    executor = ProcessExecutor(grace_s=1)
    executor.max_log_bytes = 100_000
    launch = make_launch(tmp_path, "flood", sys.executable, "-c", FLOOD)
    executor.start(launch)
    status = ended(executor, launch, timeout_s=120)
    assert status.state is ExecState.EXITED and status.exit_code == 0, status
    log = (launch.directory / "log").read_bytes()
    assert len(log) <= 100_000 + 200
    assert log.endswith(b"line 00399999 " + b"x" * 40 + b"\nthe end\n")
    first = log.split(b"\n", 1)[0].decode()
    assert first.startswith(LOG_CUT_MARKER) and "bytes of earlier output dropped" in first
    # Whole lines only after the marker, in order.
    numbers = [int(line.split()[1]) for line in log.split(b"\n")[1:-2]]
    assert numbers == list(range(numbers[0], 400_000))


def test_without_a_cap_the_log_is_whole(tmp_path: Path) -> None:
    executor = ProcessExecutor(grace_s=1)
    launch = make_launch(tmp_path, "small", "sh", "-c", "echo one; echo two >&2")
    executor.start(launch)
    ended(executor, launch)
    assert b"one\n" in (launch.directory / "log").read_bytes()


def test_a_capped_log_still_follows_a_running_container(tmp_path: Path) -> None:
    executor = ProcessExecutor(grace_s=1)
    executor.max_log_bytes = 10_000
    launch = make_launch(tmp_path, "slow", "sh", "-c", "echo started; sleep 30")
    executor.start(launch)
    try:
        deadline = time.monotonic() + 30
        while b"started" not in (launch.directory / "log").read_bytes():
            assert time.monotonic() < deadline, "output did not reach the log while running"
            time.sleep(0.05)
    finally:
        executor.stop(launch.container_id, launch.directory, 0.5)
    assert ended(executor, launch).state is ExecState.EXITED


def test_a_follower_keeps_its_place_across_cuts_of_the_head(tmp_path: Path) -> None:
    """The supervisor cuts a capped log's head while it runs; a follower that keeps pace
    sees every byte of output once, in order; one that fell behind gets the marker line and
    goes on from the kept tail."""
    import asyncio
    import os

    from gpucaas.control._local import follow_log_file
    from gpucaas.control._supervisor import _LogCap

    path = tmp_path / "log"
    lines = [b"line %04d ...........\n" % i for i in range(400)]
    read_fd, write_fd = os.pipe()
    state = {"ended": False}

    async def run() -> tuple[bytes, bytes]:
        with path.open("a+b") as log:  # as the supervisor opens it
            cap = _LogCap(log, read_fd, 1024)
            keeping = follow_log_file(path, lambda: state["ended"], poll_s=0.01)
            kept = b""
            for i in range(0, 200, 5):  # 5 lines at a time, read after each write
                os.write(write_fd, b"".join(lines[i : i + 5]))
                cap.pump()
                kept += await anext(keeping)
            late = follow_log_file(path, lambda: state["ended"], poll_s=0.01)
            for i in range(200, 400, 5):
                os.write(write_fd, b"".join(lines[i : i + 5]))
                cap.pump()
                kept += await anext(keeping)
            state["ended"] = True
            behind = b"".join([chunk async for chunk in late])
            return kept, behind

    try:
        kept, behind = asyncio.run(run())
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert kept == b"".join(lines), "a follower that kept pace lost or repeated output"
    first, rest = behind.split(b"\n", 1)
    assert first.decode().startswith(LOG_CUT_MARKER)
    assert b"".join(lines).endswith(rest) and rest.endswith(lines[-1]) and len(rest) < 1024
