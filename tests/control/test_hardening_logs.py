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
