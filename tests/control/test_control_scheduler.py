"""The scheduler loop over the real store (SQLite) and the real local backend: the crash
windows a restart must close, reconstructed by hand."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpucaas.control import (
    ContainerCreate,
    LocalBackend,
    ProcessExecutor,
    Scheduler,
    State,
    Store,
    TenantCreate,
    sqlite_url,
)
from gpucaas.control._store import Reservation
from gpucaas.topology import get_model

H100 = get_model("hgx-h100-8")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(sqlite_url(tmp_path))
    s.create_tenant(TenantCreate(name="acme", max_gpus=64, max_containers=64, nfs_exports=[]))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    b = LocalBackend(tmp_path, H100, 2, ProcessExecutor(grace_s=1))
    try:
        yield b
    finally:
        for d in (tmp_path / "containers").glob("*"):
            b.executor.stop(d.name, d, 0.5)


def submit(store: Store, gpus: int, *cmd: str) -> tuple[int, str]:
    body = ContainerCreate.model_validate(
        {"image": "busybox", "gpus": gpus, "command": list(cmd or ("sleep", "30"))}
    )
    row, _ = store.submit("acme", body, gpus_granted=H100.size_for(gpus))
    return int(row["seq"]), str(row["id"])


def settle(sched: Scheduler, store: Store, cid: str, states: set[str], timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        sched.run_once()
        state = str(store.container(cid)["state"])
        if state in states:
            return state
        assert time.monotonic() < deadline, f"{cid} stuck in {state}"
        time.sleep(0.05)


def test_a_reservation_made_before_a_crash_is_started_on_recovery(
    store: Store, backend: LocalBackend
) -> None:
    seq, cid = submit(store, 2)
    partition = H100.partition_for([1, 3])
    # The scheduler recorded the reservation, then died before telling the backend.
    assert store.reserve(seq, Reservation("hgx-0000", partition.id, (1, 3), 2))
    sched = Scheduler(store, backend)
    sched.recover()
    assert settle(sched, store, cid, {"running"}) == "running"
    row = store.container(cid)
    assert (row["board"], row["module_ids"]) == ("hgx-0000", [1, 3])  # where it was reserved
    assert partition.id in backend.fabric("hgx-0000").status().desired


def test_work_the_backend_never_heard_of_is_lost_with_a_reason(
    store: Store, backend: LocalBackend
) -> None:
    seq, cid = submit(store, 1)
    store.reserve(seq, Reservation("hgx-0001", H100.partition_for([5]).id, (5,), 1))
    store.transition(seq, State.STARTING, "Started")
    sched = Scheduler(store, backend)
    sched.recover()
    row = store.container(cid)
    assert row["state"] == "lost" and "no such workload" in row["message"]
    assert sched.fleet.allocated_gpus == 0


def test_a_double_allocation_in_the_store_is_refused_not_adopted(
    store: Store, backend: LocalBackend
) -> None:
    a, first = submit(store, 4)
    b, second = submit(store, 2)
    store.reserve(a, Reservation("hgx-0000", H100.partition_for([1, 2, 3, 4]).id, (1, 2, 3, 4), 4))
    store.reserve(b, Reservation("hgx-0000", H100.partition_for([1, 3]).id, (1, 3), 2))
    sched = Scheduler(store, backend)
    sched.recover()
    assert settle(sched, store, first, {"starting", "running"}) in ("starting", "running")
    lost = store.container(second)
    assert lost["state"] == "lost" and "double allocation" in lost["message"]
    assert sched.fleet.allocated_gpus == 4


def test_stray_partitions_are_deactivated_at_start(store: Store, backend: LocalBackend) -> None:
    stray = H100.partition_for([5, 6, 7, 8]).id
    backend.fabric("hgx-0001").activate(stray)
    Scheduler(store, backend).recover()
    assert backend.fabric("hgx-0001").status().desired == ()


def test_fifo_with_backfill_and_release_on_exit(store: Store, backend: LocalBackend) -> None:
    sched = Scheduler(store, backend)
    sched.recover()
    _, big1 = submit(store, 8, "sleep", "0.5")
    _, big2 = submit(store, 8)
    _, big3 = submit(store, 8)
    _, small = submit(store, 1, "true")
    settle(sched, store, big2, {"running"})
    # big1 holds its GPUs; starts run in a pool, so under load big2 may be running while
    # big1's start is still being handed to the backend (placing).
    assert store.container(big1)["state"] in ("placing", "starting", "running")
    assert store.container(big3)["state"] == "queued"
    # The head waits; a small one behind it does not fit either (both boards are full).
    assert store.container(small)["state"] == "queued"
    assert settle(sched, store, big1, {"succeeded"}) == "succeeded"
    settle(sched, store, big3, {"running", "starting"})
    assert settle(sched, store, small, {"succeeded", "queued"}) == "queued"
    store.request_stop(big2, None)
    sched.wake()
    assert settle(sched, store, big2, {"stopped"}) == "stopped"
    assert settle(sched, store, small, {"succeeded"}) == "succeeded"


def test_cordons_survive_a_restart(store: Store, backend: LocalBackend) -> None:
    sched = Scheduler(store, backend)
    sched.recover()
    sched.cordon("hgx-0000", 0, True)
    sched.cordon("hgx-0001", 3, True)
    again = Scheduler(store, backend)
    again.recover()
    assert again.fleet.board("hgx-0000").cordoned
    assert again.fleet.board("hgx-0001").cordoned_gpus == 1 << 2


def test_only_the_lease_holder_schedules_and_a_standby_takes_over(
    store: Store, backend: LocalBackend
) -> None:
    leader = Scheduler(store, backend, holder="replica-a")
    standby = Scheduler(store, backend, holder="replica-b")
    assert leader.lead() and not standby.lead()
    _, cid = submit(store, 2)
    settle(leader, store, cid, {"running"})
    leader.resign()
    assert standby.lead()
    # The new leader adopted the running container: same GPUs, still running.
    assert standby.fleet.allocated_gpus == 2
    assert standby.container_ids() == {int(store.container(cid)["seq"]): cid}
    store.request_stop(cid, None)
    standby.wake()
    assert settle(standby, store, cid, {"stopped"}) == "stopped"
