"""Issue 13, point 7: the state directory's files were 0644 and its directories 0755, so any
local user read tenants' logs and environments. Now: directories 0700, files 0600, whatever
the umask, for everything `gpucaas up` writes (store, WAL, credentials, lock, container
directories and their logs, fabric state)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpucaas.control import (
    ContainerCreate,
    ControlPlane,
    ControlPlaneConfig,
    ProcessExecutor,
    TenantCreate,
)

BUDGET_S = 30.0


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default umask, which made every file world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _too_open(root: Path) -> list[str]:
    """Everything under ``root`` (itself included) that group or others may use."""
    found = []
    for path in [root, *root.rglob("*")]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue  # a temporary file renamed meanwhile (the scheduler still runs)
        if stat.S_ISSOCK(mode) or stat.S_ISLNK(mode):
            continue
        if mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return found


@pytest.mark.usefixtures("loose_umask")
def test_the_state_dir_is_the_owners_alone_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)  # a state dir from an older version, or made by hand
    os.chmod(state, 0o755)
    plane = ControlPlane(
        ControlPlaneConfig(state_dir=state, nodes=1, grace_s=2), executor=ProcessExecutor()
    )
    try:
        assert plane.bootstrap("http://127.0.0.1:1") is not None  # credentials.json
        plane.store.create_tenant(
            TenantCreate(name="t", max_gpus=8, max_containers=8, nfs_exports=[])
        )
        plane.start()
        body = ContainerCreate.model_validate(
            {"image": "busybox", "gpus": 2, "command": ["sh", "-c", "echo tenant-output"]}
        )
        row, _ = plane.store.submit("t", body, gpus_granted=2)
        plane.scheduler.wake()
        deadline = time.monotonic() + BUDGET_S
        while plane.store.container(row["id"])["state"] not in ("succeeded", "failed", "lost"):
            assert time.monotonic() < deadline, plane.store.container(row["id"])
            time.sleep(0.05)
        assert plane.store.container(row["id"])["state"] == "succeeded"
        written = {p.name for p in state.rglob("*")}
        # What the issue found readable: the store and its WAL, the admin token, the logs.
        assert {"gpucaas.db", "gpucaas.db-wal", "credentials.json", "log", "fabric.json"} <= written
        assert _too_open(state) == []
    finally:
        plane.stop()
    assert _too_open(state) == []
