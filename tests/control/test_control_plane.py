"""``gpucaas up``'s assembly: first-start bootstrap, one process per state dir, bad options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpucaas.control import (
    ControlPlane,
    ControlPlaneConfig,
    SandboxUnavailable,
    StateDirBusy,
    TenantCreate,
    make_executor,
)
from gpucaas.errors import InvalidRequest


def test_first_start_creates_admin_and_demo_tenant_once(tmp_path: Path) -> None:
    plane = ControlPlane(ControlPlaneConfig(state_dir=tmp_path, nodes=2, executor="process"))
    try:
        creds = plane.bootstrap("http://127.0.0.1:1")
        assert creds is not None and creds.tenant == "demo"
        path = tmp_path / "credentials.json"
        assert path.stat().st_mode & 0o777 == 0o600
        assert json.loads(path.read_text())["admin_token"] == creds.admin_token
        assert plane.store.authenticate(creds.admin_token).admin
        assert plane.store.authenticate(creds.tenant_token).tenant == "demo"
        assert plane.bootstrap("http://127.0.0.1:1") is None  # not twice
    finally:
        plane.stop()


def test_one_control_plane_per_state_dir(tmp_path: Path) -> None:
    first = ControlPlane(ControlPlaneConfig(state_dir=tmp_path, nodes=1, executor="process"))
    try:
        with pytest.raises(StateDirBusy, match="another gpucaas up is running"):
            ControlPlane(ControlPlaneConfig(state_dir=tmp_path, nodes=1, executor="process"))
    finally:
        first.stop()
    ControlPlane(ControlPlaneConfig(state_dir=tmp_path, nodes=1, executor="process")).stop()


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"nodes": 0}, "--nodes"),
        ({"board": "hgx-x"}, "hgx-x"),
        ({"executor": "lxc"}, "--executor"),
        ({"policy": "worst-fit"}, "worst-fit"),
    ],
    ids=["no-nodes", "unknown-board", "unknown-executor", "unknown-policy"],
)
def test_bad_options_say_what(tmp_path: Path, config: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        ControlPlane(ControlPlaneConfig(state_dir=tmp_path, **config))  # type: ignore[arg-type]


@pytest.mark.parametrize("listen", ["8080", "host:", "x:99999", "a:b"])
def test_bad_listen_address(listen: str) -> None:
    with pytest.raises(InvalidRequest, match="HOST:PORT"):
        ControlPlaneConfig(state_dir=Path("."), listen=listen).host_port()


def test_auto_executor_without_an_engine_or_bubblewrap_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Never the unisolated process executor by default (tests/control/test_hardening_sandbox.py
    # covers auto choosing the sandbox).
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable, match="install bubblewrap"):
        make_executor("auto")


@pytest.mark.parametrize(
    ("executor", "options", "needle"),
    [
        ("process", {"cdi_kind": "nvidia.com/gpu"}, "--cdi-kind needs a container engine"),
        ("process", {"engine_args": ["--ulimit=nofile=1024:1024"]}, "--engine-arg needs"),
        ("auto", {"cdi_kind": "nvidia.com/gpu"}, "no working podman or docker was found"),
    ],
    ids=["process-with-cdi", "process-with-engine-args", "auto-without-engine-with-cdi"],
)
def test_engine_options_without_an_engine_are_refused(
    monkeypatch: pytest.MonkeyPatch, executor: str, options: dict[str, Any], needle: str
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InvalidRequest, match=needle):
        make_executor(executor, **options)


def test_an_operator_chosen_admin_token_is_installed_and_nothing_printed(tmp_path: Path) -> None:
    secret = "gpc_" + "k" * 43
    plane = ControlPlane(
        ControlPlaneConfig(state_dir=tmp_path, nodes=1, executor="process", admin_token=secret)
    )
    try:
        assert plane.bootstrap("http://x") is None
        assert plane.store.authenticate(secret).admin
        assert plane.store.tenants() == []  # no demo tenant in a deployment
        assert not (tmp_path / "credentials.json").exists()
    finally:
        plane.stop()


def test_a_weak_admin_token_is_refused(tmp_path: Path) -> None:
    plane = ControlPlane(
        ControlPlaneConfig(state_dir=tmp_path, nodes=1, executor="process", admin_token="hunter2")
    )
    try:
        with pytest.raises(InvalidRequest, match="gpc_"):
            plane.bootstrap("http://x")
        assert not plane.store.has_admin_token()
    finally:
        plane.stop()


def test_a_relative_state_dir_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `make up` passes --state-dir .gpucaas: supervisors run in their own directory, so every path
    # they get must be absolute.
    import time

    from gpucaas.control import ContainerCreate

    monkeypatch.chdir(tmp_path)
    plane = ControlPlane(
        ControlPlaneConfig(state_dir=Path(".gpucaas"), nodes=1, executor="process")
    )
    try:
        plane.store.create_tenant(
            TenantCreate(name="t", max_gpus=8, max_containers=8, nfs_exports=[])
        )
        plane.start()
        body = ContainerCreate.model_validate(
            {"image": "busybox", "gpus": 1, "command": ["sh", "-c", "echo ok"]}
        )
        row, _ = plane.store.submit("t", body, gpus_granted=1)
        plane.scheduler.wake()
        deadline = time.monotonic() + 15
        while plane.store.container(row["id"])["state"] not in ("succeeded", "failed", "lost"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert plane.store.container(row["id"])["state"] == "succeeded"
        assert (tmp_path / ".gpucaas" / "containers" / row["id"] / "exit.json").exists()
    finally:
        plane.stop()
