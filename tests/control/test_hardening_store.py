"""Issue 13, the store's part: queue numbers are never reused (2), the last admin token stays
(4), a forged page token is a 400 (8). Each test reproduces the attack first."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from gpucaas.control import (
    ContainerCreate,
    LocalBackend,
    ProcessExecutor,
    Scheduler,
    State,
    StateConflict,
    Store,
    TenantCreate,
    sqlite_url,
)
from gpucaas.control._migrate import current, head, upgrade
from gpucaas.control._store import _encode_page
from gpucaas.errors import InvalidRequest
from gpucaas.topology import get_model

H100 = get_model("hgx-h100-8")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "state")
    else:
        url = request.getfixturevalue("postgres_db_url")
    s = Store(url)
    try:
        yield s
    finally:
        s.close()


def tenant(store: Store, name: str) -> str:
    _, secret, _ = store.create_tenant(
        TenantCreate(name=name, max_gpus=64, max_containers=64, nfs_exports=[])
    )
    return secret


def submit(store: Store, name: str, *cmd: str) -> tuple[int, str]:
    body = ContainerCreate.model_validate(
        {"image": "busybox", "gpus": 1, "command": list(cmd or ("true",))}
    )
    row, _ = store.submit(name, body, gpus_granted=1)
    return int(row["seq"]), str(row["id"])


# -- 2: a deleted tenant's queue numbers are not handed out again ---------------------------


def test_queue_numbers_of_a_deleted_tenant_are_never_reused(store: Store) -> None:
    tenant(store, "acme")
    tenant(store, "gone")
    submit(store, "acme")
    top = [submit(store, "gone")[0] for _ in range(3)]
    for seq in top:
        store.transition(seq, State.STOPPED, "Stopped")
    store.delete_tenant("gone")
    seq, _ = submit(store, "acme")
    assert seq > max(top)


def test_a_container_submitted_after_a_tenant_deletion_runs(tmp_path: Path) -> None:
    """The attack: the scheduler had read up to the deleted tenant's numbers, so a reused
    number stayed ``queued`` forever while later containers ran."""
    store = Store(sqlite_url(tmp_path))
    backend = LocalBackend(tmp_path, H100, 1, ProcessExecutor(grace_s=1))
    try:
        tenant(store, "acme")
        tenant(store, "gone")
        sched = Scheduler(store, backend)
        sched.recover()
        ids = [submit(store, "gone", "sleep", "30")[1] for _ in range(2)]
        sched.run_once()  # the scheduler has now seen those numbers
        for cid in ids:
            store.request_stop(cid, None)
        deadline = time.monotonic() + 30
        while store.count([State.STOPPED]) < 2:
            sched.run_once()
            assert time.monotonic() < deadline, "the stopped containers never ended"
            time.sleep(0.05)
        store.delete_tenant("gone")
        _, cid = submit(store, "acme")
        deadline = time.monotonic() + 30
        while store.container(cid)["state"] == State.QUEUED.value:
            sched.run_once()
            assert time.monotonic() < deadline, f"{cid} stuck queued after a tenant deletion"
            time.sleep(0.05)
    finally:
        for d in (tmp_path / "containers").glob("*"):
            backend.executor.stop(d.name, d, 0.5)
        store.close()


def test_migration_0003_keeps_the_data_and_stops_the_reuse(tmp_path: Path) -> None:
    """An existing SQLite store (schema 0002, containers with labels and events) upgrades:
    rows, foreign keys and numbers stay; the table gets AUTOINCREMENT."""
    db = tmp_path / "gpucaas.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        upgrade(conn, "0002")
    engine.dispose()
    old = Store(sqlite_url(tmp_path), migrate=False)
    tenant(old, "acme")
    seqs = [submit(old, "acme")[0] for _ in range(3)]
    body = ContainerCreate.model_validate({"image": "busybox", "gpus": 1, "labels": {"a": "b"}})
    labelled, _ = old.submit("acme", body, gpus_granted=1)
    old.close()
    with sqlite3.connect(db) as raw:
        ddl = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'containers'").fetchone()[0]
        assert "AUTOINCREMENT" not in ddl  # the old schema: numbers could come back

    store = Store(sqlite_url(tmp_path))  # migrates
    try:
        with store.engine.connect() as conn:
            assert current(conn) == head()
            assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        with sqlite3.connect(db) as raw:
            ddl = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'containers'").fetchone()
            assert "AUTOINCREMENT" in ddl[0]
        assert store.count() == 4
        rows, _ = store.containers("acme", labels={"a": "b"})
        assert [r["seq"] for r in rows] == [labelled["seq"]]
        assert [e["reason"] for e in store.events(seqs[0])] == ["Submitted"]
        top = int(labelled["seq"])
        store.transition(top, State.STOPPED, "Stopped")
        with store.engine.begin() as conn:  # the top row goes, as a tenant deletion does it
            conn.execute(text("DELETE FROM container_labels WHERE container_seq = :s"), {"s": top})
            conn.execute(text("DELETE FROM events WHERE container_seq = :s"), {"s": top})
            conn.execute(text("DELETE FROM containers WHERE seq = :s"), {"s": top})
        assert submit(store, "acme")[0] > top
    finally:
        store.close()


# -- 4: the operator cannot lock themselves out ---------------------------------------------


def test_the_last_active_admin_token_cannot_be_revoked(store: Store) -> None:
    _, first = store.create_token(None, "first")
    _, second = store.create_token(None, "second")
    store.revoke_token(second["id"])
    with pytest.raises(StateConflict, match="last active admin token") as caught:
        store.revoke_token(first["id"])
    assert caught.value.status == 409
    assert store.tokens()[0]["revoked_at"] is None
    assert store.revoke_token(second["id"])["revoked_at"] is not None  # still idempotent


def test_concurrent_revocations_leave_one_admin_token(store: Store) -> None:
    import threading

    rows = [store.create_token(None, f"t{i}")[1] for i in range(4)]
    barrier = threading.Barrier(len(rows))
    outcomes: list[str] = []

    def revoke(token_id: str) -> None:
        barrier.wait()
        try:
            store.revoke_token(token_id)
            outcomes.append("revoked")
        except StateConflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=revoke, args=(r["id"],)) for r in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["refused", "revoked", "revoked", "revoked"]
    assert store.has_admin_token()


def test_revoked_admin_tokens_do_not_count_as_admin_access(store: Store) -> None:
    _, row = store.create_token(None, "only")
    assert store.has_admin_token()
    with store.engine.begin() as conn:  # revoked by an older version, or by hand
        conn.execute(text("UPDATE tokens SET revoked_at = 1"))
    assert not store.has_admin_token()
    assert row["id"]


# -- 8: forged page tokens ------------------------------------------------------------------


@pytest.mark.parametrize(
    "seq", [10**30, -(10**30), 2**63, 10**4000], ids=["huge", "huge-negative", "2^63", "4000-digit"]
)
def test_a_page_token_with_a_huge_number_is_a_400(store: Store, seq: int) -> None:
    import sys

    sys.set_int_max_str_digits(0)
    try:
        token = _encode_page(seq)
    finally:
        sys.set_int_max_str_digits(4300)
    tenant(store, "acme")
    with pytest.raises(InvalidRequest, match="page_token"):
        store.containers("acme", page_token=token)
