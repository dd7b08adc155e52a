"""Issue 13, item 6: finished containers counted toward no limit, so the store grew without
bound. The leader purges them past a count per tenant or an age; the quota stays right."""

from __future__ import annotations

from pathlib import Path

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
from gpucaas.control._scheduler import Retention
from gpucaas.topology import get_model

H100 = get_model("hgx-h100-8")


def submit(store: Store, tenant: str) -> tuple[int, str]:
    body = ContainerCreate.model_validate({"image": "b", "gpus": 1, "command": ["true"]})
    row, _ = store.submit(tenant, body, gpus_granted=1)
    return int(row["seq"]), str(row["id"])


def test_finished_containers_are_purged_past_the_count_and_files_go_too(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    backend = LocalBackend(tmp_path, H100, 1, ProcessExecutor(grace_s=1))
    try:
        for name in ("acme", "other"):
            store.create_tenant(
                TenantCreate(name=name, max_gpus=8, max_containers=50, nfs_exports=[])
            )
        done = []
        for _ in range(5):
            seq, cid = submit(store, "acme")
            store.transition(seq, State.SUCCEEDED, "Exited", exit_code=0)
            backend.directory(cid).mkdir(parents=True)
            (backend.directory(cid) / "log").write_text("out\n")
            done.append(cid)
        _, running = submit(store, "acme")  # unfinished: never purged
        seq, other = submit(store, "other")
        store.transition(seq, State.FAILED, "Error", exit_code=1)
        sched = Scheduler(
            store,
            backend,
            retention=Retention(keep_per_tenant=2, max_age_s=None),
            on_purged=backend.forget,
        )
        assert sorted(sched.purge()) == sorted(done[:3])
        left = {r["id"] for r in store.containers("acme")[0]}
        assert left == {done[3], done[4], running}
        assert store.container(other)["state"] == "failed"  # another tenant's stays
        assert not backend.directory(done[0]).exists() and backend.directory(done[4]).exists()
        assert store.usage()["acme"] == (1, 1)  # the quota counts only the queued one
        assert sched.purge() == []
    finally:
        store.close()


def test_finished_containers_are_purged_past_their_age(tmp_path: Path) -> None:
    clock = [1_800_000_000.0]
    store = Store(sqlite_url(tmp_path), clock=lambda: clock[0])
    try:
        store.create_tenant(
            TenantCreate(name="acme", max_gpus=8, max_containers=50, nfs_exports=[])
        )
        seq, old = submit(store, "acme")
        store.transition(seq, State.STOPPED, "Stopped")
        clock[0] += 86400 * 8
        seq, new = submit(store, "acme")
        store.transition(seq, State.STOPPED, "Stopped")
        assert store.purge_finished(older_than=clock[0] - 7 * 86400) == [old]
        assert [r["id"] for r in store.containers("acme")[0]] == [new]
        assert store.events(seq)  # the kept one keeps its history
    finally:
        store.close()
