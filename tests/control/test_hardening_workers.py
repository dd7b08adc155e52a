"""``--api-workers`` (issue 13, point 13): what is refused before anything starts, and the
pieces a worker is made of (its scheduler wakes the leader's; admin routes go to the
leader). The processes themselves: tests/integration/test_hardening_workers.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gpucaas.control import ControlPlaneConfig, serve
from gpucaas.control._workers import WakePipe
from gpucaas.errors import InvalidRequest


@pytest.mark.parametrize(
    ("workers", "backend", "says"),
    [(0, "local", "at least 1"), (2, "kubernetes", "needs --backend local")],
    ids=["no workers", "kubernetes backend"],
)
def test_refused_before_anything_starts(
    tmp_path: Path, workers: int, backend: str, says: str
) -> None:
    config = ControlPlaneConfig(
        state_dir=tmp_path / "state", listen="127.0.0.1:0", api_workers=workers, backend=backend
    )
    with pytest.raises(InvalidRequest, match=says):
        serve(config, announce=lambda _line: None)
    assert not (tmp_path / "state").exists()


def test_the_wake_pipe_carries_submits_and_stops_and_ends_with_its_writers() -> None:
    pipe = WakePipe()
    got: list[bool] = []
    seen = threading.Event()

    def wake(stops: bool) -> None:
        got.append(stops)
        seen.set()

    relay = pipe.relay(wake)
    pipe.send(stops=False)
    assert seen.wait(30)
    seen.clear()
    pipe.send(stops=True)
    assert seen.wait(30)
    assert got[-1] is True
    pipe.close_writer()
    relay.join(30)
    assert not relay.is_alive()
    pipe.close_reader()
