"""The store on SQLite (WAL) and on a real PostgreSQL server: the same tests on both."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text

from gpucaas.control import (
    AlreadyExists,
    BadStoreUrl,
    ContainerCreate,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
    QuotaExceeded,
    State,
    StateConflict,
    Store,
    StoreUnavailable,
    TenantCreate,
    Unauthenticated,
)
from gpucaas.control._migrate import current, head
from gpucaas.control._schema import metadata, tokens
from gpucaas.control._store import Reservation, hash_token
from gpucaas.errors import InvalidRequest


class FakeClock:
    """A wall clock that moves only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'gpucaas.db'}"
    url: str = request.getfixturevalue("postgres_db_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def clocked_store(store_url: str, clock: FakeClock) -> Iterator[Store]:
    """A store whose time is :func:`clock`'s."""
    s = Store(store_url, clock=clock)
    try:
        yield s
    finally:
        s.close()


def tenant(store: Store, name: str = "acme", **quota: object) -> str:
    _, secret, _ = store.create_tenant(TenantCreate.model_validate({"name": name, **quota}))
    return secret


def body(gpus: int = 1, **extra: object) -> ContainerCreate:
    return ContainerCreate.model_validate({"image": "busybox", "gpus": gpus, **extra})


def test_migrations_build_exactly_the_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert current(conn) == head()
    if store.dialect == "sqlite":
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_opening_twice_is_a_no_op_migration(store: Store) -> None:
    tenant(store)
    again = Store(store.url)
    try:
        assert [t["name"] for t in again.tenants()] == ["acme"]
    finally:
        again.close()


def test_tokens_are_stored_only_as_hashes(store: Store) -> None:
    secret = tenant(store)
    assert secret.startswith("gpc_") and len(secret) > 40
    with store.engine.connect() as conn:
        hashes = [r.hash for r in conn.execute(select(tokens.c.hash))]
    assert hash_token(secret) in hashes
    assert all(secret not in h for h in hashes)
    who = store.authenticate(secret)
    assert who.tenant == "acme" and not who.admin


def test_revoked_and_unknown_tokens_are_refused(store: Store) -> None:
    secret, row = store.create_token(None, "ops")
    store.create_token(None, "another, since the last admin token cannot be revoked")
    assert store.authenticate(secret).admin
    store.revoke_token(row["id"])
    with pytest.raises(Unauthenticated, match="revoked"):
        store.authenticate(secret)
    first = store.revoke_token(row["id"])["revoked_at"]
    assert store.revoke_token(row["id"])["revoked_at"] == first
    with pytest.raises(Unauthenticated, match="unknown"):
        store.authenticate("gpc_" + "a" * 43)
    with pytest.raises(Unauthenticated, match="malformed"):
        store.authenticate("Bearer x")
    with pytest.raises(NotFound):
        store.revoke_token("nope")


def test_tenant_names_are_unique_and_deletion_needs_no_running_work(store: Store) -> None:
    tenant(store)
    with pytest.raises(AlreadyExists):
        tenant(store)
    row, _ = store.submit("acme", body(), gpus_granted=1)
    with pytest.raises(StateConflict, match="1 unfinished"):
        store.delete_tenant("acme")
    assert [t["name"] for t in store.tenants()] == ["acme"]  # nothing lost
    store.request_stop(row["id"], "acme")
    store.delete_tenant("acme")
    assert store.tenants() == []
    with pytest.raises(NotFound):
        store.tenant("acme")


def test_idempotency(store: Store) -> None:
    tenant(store)
    a, created_a = store.submit("acme", body(2), gpus_granted=2, idempotency_key="k")
    b, created_b = store.submit("acme", body(2), gpus_granted=2, idempotency_key="k")
    assert created_a and not created_b and a["id"] == b["id"]
    with pytest.raises(IdempotencyMismatch):
        store.submit("acme", body(4), gpus_granted=4, idempotency_key="k")
    tenant(store, "other")
    c, created_c = store.submit("other", body(2), gpus_granted=2, idempotency_key="k")
    assert created_c and c["id"] != a["id"]  # keys are per tenant
    assert store.count() == 2


def test_quota_counts_granted_gpus_of_unfinished_containers(store: Store) -> None:
    tenant(store, max_gpus=8, max_containers=3)
    first, _ = store.submit("acme", body(3), gpus_granted=4)
    store.submit("acme", body(4), gpus_granted=4)
    with pytest.raises(QuotaExceeded) as err:
        store.submit("acme", body(1), gpus_granted=1)
    assert err.value.status == 429 and "8 of 8" in str(err.value)
    with pytest.raises(QuotaExceeded) as err:
        store.submit("acme", body(8, image="x"), gpus_granted=16)
    assert err.value.status == 403
    store.request_stop(first["id"], "acme")
    store.submit("acme", body(1), gpus_granted=1)
    store.submit("acme", body(1), gpus_granted=1)
    with pytest.raises(QuotaExceeded, match="3 of 3 unfinished containers"):
        store.submit("acme", body(1), gpus_granted=1)


def test_concurrent_submits_never_exceed_the_quota(store: Store) -> None:
    tenant(store, max_gpus=10, max_containers=100)
    results: list[str] = []
    lock = threading.Lock()

    def go() -> None:
        try:
            store.submit("acme", body(1), gpus_granted=1)
            outcome = "ok"
        except QuotaExceeded:
            outcome = "quota"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=go) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 10 and results.count("quota") == 14
    assert store.usage()["acme"] == (10, 10)


def test_nfs_exports_allow_subpaths_only(store: Store) -> None:
    tenant(store, nfs_exports=["nas:/exports/team"])

    def mount(path: str, server: str = "nas") -> ContainerCreate:
        return body(1, nfs=[{"server": server, "path": path, "mount_path": "/d"}])

    store.submit("acme", mount("/exports/team"), gpus_granted=1)
    store.submit("acme", mount("/exports/team/x/y"), gpus_granted=1)
    for bad in (mount("/exports/teamx"), mount("/exports"), mount("/exports/team", "nas2")):
        with pytest.raises(Forbidden, match="may not mount"):
            store.submit("acme", bad, gpus_granted=1)


def test_pages_filters_and_tenant_scope(store: Store) -> None:
    tenant(store, max_containers=100, max_gpus=100)
    tenant(store, "other")
    made = [
        store.submit("acme", body(1, labels={"n": str(i % 3)}), gpus_granted=1)[0]["id"]
        for i in range(10)
    ]
    store.submit("other", body(1), gpus_granted=1)
    seen: list[str] = []
    token = None
    while True:
        rows, token = store.containers("acme", limit=4, page_token=token)
        seen += [r["id"] for r in rows]
        if token is None:
            break
    assert seen == made[::-1]
    rows, _ = store.containers("acme", labels={"n": "1"})
    assert [r["id"] for r in rows] == [made[i] for i in (7, 4, 1)]
    rows, _ = store.containers(None, limit=500)
    assert len(rows) == 11
    with pytest.raises(NotFound):
        store.container(made[0], "other")
    with pytest.raises(InvalidRequest, match="page_token"):
        store.containers("acme", page_token="!!")
    with pytest.raises(InvalidRequest, match="limit"):
        store.containers("acme", limit=0)


def test_reservation_happens_once_and_not_after_a_stop(store: Store) -> None:
    tenant(store)
    a, _ = store.submit("acme", body(2), gpus_granted=2)
    b, _ = store.submit("acme", body(2), gpus_granted=2)
    where = Reservation("hgx-0000", 3, (1, 3), 2)
    assert store.reserve(a["seq"], where)
    assert not store.reserve(a["seq"], where)  # no longer queued
    store.request_stop(b["id"], "acme")
    assert not store.reserve(b["seq"], where)
    held = store.holding()
    assert [(r["id"], r["board"], r["module_ids"]) for r in held] == [(a["id"], "hgx-0000", [1, 3])]
    assert store.container(b["id"])["state"] == State.STOPPED.value


def test_transitions_record_events_and_final_states_stick(store: Store) -> None:
    tenant(store)
    a, _ = store.submit("acme", body(1), gpus_granted=1)
    seq = a["seq"]
    assert store.transition(seq, State.FAILED, "Error", "exit 3", exit_code=3)
    assert not store.transition(seq, State.RUNNING, "Running")
    row = store.container(a["id"])
    assert (row["state"], row["exit_code"]) == ("failed", 3)
    assert [e["state"] for e in store.events(seq)] == ["queued", "failed"]


def test_a_backend_time_never_puts_a_state_before_the_one_it_follows(store: Store) -> None:
    tenant(store)
    a, _ = store.submit("acme", body(2), gpus_granted=2)
    assert store.reserve(a["seq"], Reservation("hgx-0000", 3, (1, 3), 2))
    assert store.transition(a["seq"], State.STARTING, "Started")
    # A pod's startedAt is a truncated second on the kubelet's clock: it can be earlier.
    store.transition(a["seq"], State.RUNNING, "Running", at=time.time() - 5)
    at = {e["state"]: e["at"] for e in store.events(a["seq"])}
    assert at["running"] >= at["starting"]
    later = time.time() + 3
    store.transition(a["seq"], State.SUCCEEDED, "Completed", exit_code=0, at=later)
    assert store.container(a["id"])["updated_at"] == pytest.approx(later)


def test_stop_of_running_work_is_a_request(store: Store) -> None:
    tenant(store)
    a, _ = store.submit("acme", body(1), gpus_granted=1)
    store.reserve(a["seq"], Reservation("b", 7, (1,), 1))
    row = store.request_stop(a["id"], "acme")
    assert row["state"] == "placing" and row["stop_requested"]
    assert store.stop_changes(0) == [(a["seq"], "placing", "Stopped")]
    with pytest.raises(NotFound):
        store.request_stop(a["id"], "someone-else")


def test_cordons_persist(store: Store) -> None:
    store.set_cordon("hgx-0001", 0, True)
    store.set_cordon("hgx-0001", 0, True)
    store.set_cordon("hgx-0002", 5, True)
    assert sorted(store.cordons()) == [("hgx-0001", 0), ("hgx-0002", 5)]
    store.set_cordon("hgx-0001", 0, False)
    assert store.cordons() == [("hgx-0002", 5)]


def test_bad_urls_and_unreachable_servers_say_so(tmp_path: Path) -> None:
    with pytest.raises(BadStoreUrl, match="sqlite:///PATH"):
        Store("mysql://x")
    with pytest.raises(StoreUnavailable, match="unavailable") as err:
        Store("postgresql+psycopg://me:secret@127.0.0.1:1/nothing")
    assert "secret" not in str(err.value)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable):
        Store(f"sqlite:///{blocker / 'sub' / 'x.db'}")


def test_one_lease_holder_at_a_time(clocked_store: Store, clock: FakeClock) -> None:
    store = clocked_store
    assert store.acquire_lease("scheduler", "a", 30)
    assert not store.acquire_lease("scheduler", "b", 30)
    clock.advance(20)
    assert store.acquire_lease("scheduler", "a", 30)  # renew: now until 50
    clock.advance(29)
    assert not store.acquire_lease("scheduler", "b", 10)  # renewed, so not expired yet
    clock.advance(2)
    assert store.acquire_lease("scheduler", "b", 10)  # a stopped renewing
    assert not store.acquire_lease("scheduler", "a", 10)
    store.release_lease("scheduler", "a")  # not a's: nothing happens
    assert not store.acquire_lease("scheduler", "a", 10)
    store.release_lease("scheduler", "b")
    assert store.acquire_lease("scheduler", "a", 10)


def test_usage_counters_match_a_recount(store: Store) -> None:
    from sqlalchemy import func

    from gpucaas.control._schema import containers

    tenant(store, max_gpus=1000, max_containers=1000)
    rows = [store.submit("acme", body(g), gpus_granted=g)[0] for g in (1, 2, 4, 8, 1, 2)]
    store.request_stop(rows[0]["id"], "acme")  # queued -> stopped
    store.reserve(rows[1]["seq"], Reservation("b", 3, (1, 3), 2))
    store.transition(rows[1]["seq"], State.SUCCEEDED, "Completed", exit_code=0)
    store.reserve(rows[2]["seq"], Reservation("b", 1, (1, 2, 3, 4), 4))
    store.transition(rows[3]["seq"], State.FAILED, "NeverFits")
    store.transition(rows[3]["seq"], State.FAILED, "again")  # final stays final: no double count
    with store.engine.connect() as conn:
        gpus, count = conn.execute(
            select(func.coalesce(func.sum(containers.c.gpus_granted), 0), func.count()).where(
                containers.c.state.in_(["queued", "placing", "starting", "running"])
            )
        ).one()
    assert store.usage()["acme"] == (gpus, count) == (4 + 1 + 2, 3)
