"""The control plane's durable state: tenants, tokens, containers, events, cordons.

SQLAlchemy Core over SQLite (WAL, the default, one file in the state directory) or
PostgreSQL (by URL, for several control-plane replicas). The schema is built and upgraded
by the Alembic migrations in ``migrations/`` when a store opens.

Every write that must not race (quota checks on submit, the scheduler's reservation) runs in
one transaction that takes the write lock first: ``BEGIN IMMEDIATE`` on SQLite, a row lock on
the tenant on PostgreSQL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from gpucaas._files import private_file
from gpucaas._wire import ACTIVE_STATES, FINAL_STATES, ContainerCreate, State, TenantCreate
from gpucaas.errors import InvalidRequest

from . import _schema as s
from ._dberrors import map_db_errors
from ._errors import (
    AlreadyExists,
    BadStoreUrl,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
    QuotaExceeded,
    StateConflict,
    StoreConflict,
    StoreUnavailable,
    Unauthenticated,
)

TOKEN_PREFIX = "gpc_"
DEFAULT_PAGE = 50
MAX_PAGE = 500
_READ_ONLY = "gpucaas_read_only"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token speaks for: a tenant, or the operator (``tenant is None``)."""

    token_id: str
    tenant: str | None

    @property
    def admin(self) -> bool:
        return self.tenant is None


@dataclass(frozen=True, slots=True)
class Reservation:
    """Where the scheduler put a container (recorded before the backend hears of it)."""

    board: str
    partition_id: int | None
    module_ids: tuple[int, ...]
    gpus_granted: int


def hash_token(secret: str) -> str:
    """Tokens are 256-bit random strings, so one SHA-256 is enough (no password stretching)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def request_hash(body: ContainerCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def sqlite_url(state_dir: Path | str) -> str:
    return f"sqlite:///{Path(state_dir) / 'gpucaas.db'}"


class Store:
    """The store. Thread-safe: each call takes a connection from the engine's pool.

    Parameters:
        url: ``sqlite:///PATH`` or ``postgresql+psycopg://…``.
        migrate: upgrade the schema to the newest migration on open (default).
        clock: the wall clock (seconds since the epoch) that stamps rows and events and
            times leases; tests pass a fake one, as :class:`Scheduler` takes ``clock``.
    """

    def __init__(
        self, url: str, *, migrate: bool = True, clock: Callable[[], float] = time.time
    ) -> None:
        self.url = url
        self._clock = clock
        try:
            with map_db_errors(_safe(url)):
                self.engine = _engine(url)
        except ValueError as exc:  # SQLAlchemy's URL parser: e.g. a port that is no number
            raise BadStoreUrl(_safe(url)) from exc
        self.dialect = self.engine.dialect.name
        if migrate:
            self.migrate()

    def close(self) -> None:
        self.engine.dispose()

    def migrate(self) -> None:
        from ._migrate import upgrade

        with map_db_errors(_safe(self.url)), self.engine.connect() as conn:
            if self.dialect != "sqlite":
                with conn.begin():
                    upgrade(conn)
                return
            # A migration that rebuilds a table (0003) drops and renames it; SQLite's
            # foreign-key enforcement would refuse that, and the pragma is ignored inside a
            # transaction, so it is turned off before BEGIN and on again after (the
            # migration checks the references itself).
            raw = conn.connection.dbapi_connection
            assert raw is not None
            raw.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin():
                    upgrade(conn)
            finally:
                raw.execute("PRAGMA foreign_keys=ON")

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, read: bool = False) -> Iterator[Connection]:
        with map_db_errors(_safe(self.url)), self.engine.connect() as conn:
            if read:
                conn = conn.execution_options(**{_READ_ONLY: True})
            with conn.begin():
                yield conn

    def _lock_tenant(self, conn: Connection, tenant: str) -> RowMapping:
        q = select(s.tenants).where(s.tenants.c.name == tenant)
        if self.dialect == "postgresql":
            q = q.with_for_update()
        row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFound("tenant", tenant)
        return row

    # -- tenants and tokens -----------------------------------------------------------------

    def create_tenant(self, spec: TenantCreate) -> tuple[RowMapping, str, RowMapping]:
        """Create a tenant and its first token; returns (tenant, secret, token row)."""
        try:
            with self._tx() as conn:
                conn.execute(
                    insert(s.tenants).values(
                        name=spec.name,
                        max_gpus=spec.max_gpus,
                        max_containers=spec.max_containers,
                        nfs_exports=list(spec.nfs_exports),
                        created_at=self._clock(),
                    )
                )
                secret, token = self._new_token(conn, spec.name, "created with the tenant")
                tenant = self._tenant(conn, spec.name)
        except StoreConflict as exc:
            raise AlreadyExists("tenant", spec.name) from exc
        return tenant, secret, token

    def _tenant(self, conn: Connection, name: str) -> RowMapping:
        row = conn.execute(select(s.tenants).where(s.tenants.c.name == name)).mappings().first()
        if row is None:
            raise NotFound("tenant", name)
        return row

    def tenant(self, name: str) -> RowMapping:
        with self._tx(read=True) as conn:
            return self._tenant(conn, name)

    def tenants(self) -> list[RowMapping]:
        with self._tx(read=True) as conn:
            return list(conn.execute(select(s.tenants).order_by(s.tenants.c.name)).mappings().all())

    def usage(self) -> dict[str, tuple[int, int]]:
        """tenant → (GPUs held or asked for by unfinished containers, unfinished containers)."""
        t = s.tenants.c
        q = select(t.name, t.gpus_held, t.containers_unfinished)
        with self._tx(read=True) as conn:
            return {name: (int(g), int(n)) for name, g, n in conn.execute(q).all()}

    def delete_tenant(self, name: str) -> None:
        """Delete a tenant that has no unfinished containers; revokes its tokens."""
        with self._tx() as conn:
            self._lock_tenant(conn, name)
            active = conn.execute(
                select(func.count())
                .select_from(s.containers)
                .where(
                    s.containers.c.tenant == name,
                    s.containers.c.state.in_([x.value for x in ACTIVE_STATES]),
                )
            ).scalar_one()
            if active:
                raise StateConflict(
                    f"tenant {name!r} has {active} unfinished containers; stop them first"
                )
            seqs = select(s.containers.c.seq).where(s.containers.c.tenant == name)
            conn.execute(delete(s.events).where(s.events.c.container_seq.in_(seqs)))
            conn.execute(
                delete(s.container_labels).where(s.container_labels.c.container_seq.in_(seqs))
            )
            conn.execute(delete(s.containers).where(s.containers.c.tenant == name))
            conn.execute(delete(s.tokens).where(s.tokens.c.tenant == name))
            conn.execute(delete(s.tenants).where(s.tenants.c.name == name))

    def _new_token(
        self, conn: Connection, tenant: str | None, label: str, secret: str | None = None
    ) -> tuple[str, RowMapping]:
        secret = secret or TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(6)
        conn.execute(
            insert(s.tokens).values(
                id=token_id,
                tenant=tenant,
                hash=hash_token(secret),
                label=label,
                created_at=self._clock(),
                revoked_at=None,
            )
        )
        row = conn.execute(select(s.tokens).where(s.tokens.c.id == token_id)).mappings().one()
        return secret, row

    def create_token(
        self, tenant: str | None, label: str = "", *, secret: str | None = None
    ) -> tuple[str, RowMapping]:
        """A new token for ``tenant`` (None: an admin token); returns (secret, row).

        ``secret`` installs a token chosen by the operator (e.g. from a Kubernetes Secret);
        it must look like one we make: ``gpc_`` and at least 32 more characters."""
        if secret is not None and (
            not secret.startswith(TOKEN_PREFIX) or not 32 <= len(secret) - len(TOKEN_PREFIX) <= 96
        ):
            raise InvalidRequest(
                "the admin token must be 'gpc_' followed by 32-96 random characters; make one "
                "with: python -c \"import secrets; print('gpc_' + secrets.token_urlsafe(32))\""
            )
        with self._tx() as conn:
            if tenant is not None:
                self._tenant(conn, tenant)
            return self._new_token(conn, tenant, label, secret)

    def tokens(self, tenant: str | None = None) -> list[RowMapping]:
        """Tokens of ``tenant``, or all of them."""
        q = select(s.tokens).order_by(s.tokens.c.created_at, s.tokens.c.id)
        if tenant is not None:
            q = q.where(s.tokens.c.tenant == tenant)
        with self._tx(read=True) as conn:
            return list(conn.execute(q).mappings().all())

    def revoke_token(self, token_id: str) -> RowMapping:
        """Revoke a token; idempotent (a revoked token keeps its first revocation time).

        Raises :class:`StateConflict` for the last active admin token: revoking it would lock
        the operator out (make another admin token first)."""
        tok = s.tokens.c
        with self._tx() as conn:
            row = conn.execute(select(s.tokens).where(tok.id == token_id)).mappings().first()
            if row is not None and row["tenant"] is None and row["revoked_at"] is None:
                if self.dialect == "postgresql":  # two revocations must not both pass
                    conn.execute(text("LOCK TABLE tokens IN SHARE ROW EXCLUSIVE MODE"))
                others = conn.execute(
                    select(func.count())
                    .select_from(s.tokens)
                    .where(tok.tenant.is_(None), tok.revoked_at.is_(None), tok.id != token_id)
                ).scalar_one()
                if not others:
                    raise StateConflict(
                        f"token {token_id} is the last active admin token; revoking it would "
                        "lock every operator out. Create another admin token first "
                        "(POST /v1/admin/tokens)"
                    )
            conn.execute(
                update(s.tokens)
                .where(s.tokens.c.id == token_id, s.tokens.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            found = (
                conn.execute(select(s.tokens).where(s.tokens.c.id == token_id)).mappings().first()
            )
            if found is None:
                raise NotFound("token", token_id)
            return found

    def authenticate(self, secret: str) -> Principal:
        """The principal a bearer token speaks for. Raises :class:`Unauthenticated`."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 100:
            raise Unauthenticated(
                "the bearer token is malformed; gpucaas tokens start with "
                f"{TOKEN_PREFIX!r} (ask the operator for one)"
            )
        with self._tx(read=True) as conn:
            row = conn.execute(
                select(s.tokens.c.id, s.tokens.c.tenant, s.tokens.c.revoked_at).where(
                    s.tokens.c.hash == hash_token(secret)
                )
            ).first()
        if row is None:
            raise Unauthenticated("unknown token; check it, or ask the operator for a new one")
        if row.revoked_at is not None:
            raise Unauthenticated(f"token {row.id} was revoked; ask the operator for a new one")
        return Principal(row.id, row.tenant)

    def has_admin_token(self, *, include_revoked: bool = False) -> bool:
        """Whether an admin token that is not revoked exists (revoked ones give no access);
        ``include_revoked``: whether any admin token was ever made (not a first start)."""
        q = select(s.tokens.c.id).where(s.tokens.c.tenant.is_(None)).limit(1)
        if not include_revoked:
            q = q.where(s.tokens.c.revoked_at.is_(None))
        with self._tx(read=True) as conn:
            return conn.execute(q).first() is not None

    def install_admin_token(self, secret: str, label: str) -> RowMapping:
        """Make ``secret`` an active admin token: insert it, or lift its revocation when it was
        one already (the operator's way back in after every admin token was revoked).

        Raises :class:`InvalidRequest` when it is malformed or is a tenant's token."""
        if secret.startswith(TOKEN_PREFIX):
            with self._tx() as conn:
                tok = s.tokens.c
                row = (
                    conn.execute(select(s.tokens).where(tok.hash == hash_token(secret)))
                    .mappings()
                    .first()
                )
                if row is not None:
                    if row["tenant"] is not None:
                        raise InvalidRequest(
                            "GPUCAAS_ADMIN_TOKEN is a tenant's token (id "
                            f"{row['id']}); give a new admin token instead"
                        )
                    conn.execute(
                        update(s.tokens).where(tok.id == row["id"]).values(revoked_at=None)
                    )
                    return (
                        conn.execute(select(s.tokens).where(tok.id == row["id"])).mappings().one()
                    )
        return self.create_token(None, label, secret=secret)[1]

    # -- containers: the API's side ----------------------------------------------------------

    def submit(
        self,
        tenant: str,
        body: ContainerCreate,
        *,
        gpus_granted: int,
        idempotency_key: str | None = None,
        check: Callable[[], None] | None = None,
    ) -> tuple[RowMapping, bool]:
        """Store a new container as ``queued``; returns (row, created).

        With an ``idempotency_key`` already used by this tenant for the same body, returns
        the existing container and ``created=False``. Raises :class:`QuotaExceeded`,
        :class:`Forbidden` (NFS export not allowed) and :class:`IdempotencyMismatch`;
        ``check`` (the backend's refusals) runs after the export check, before the quota's.
        """
        digest = request_hash(body)
        for _attempt in range(3):
            try:
                with self._tx() as conn:
                    if idempotency_key is not None:
                        found = self._by_key(conn, tenant, idempotency_key, digest)
                        if found is not None:
                            return found, False
                    t = self._lock_tenant(conn, tenant)
                    self._check_exports(t, body)
                    if check is not None:
                        check()
                    self._check_quota(t, gpus_granted)
                    return self._insert(
                        conn, tenant, body, gpus_granted, idempotency_key, digest
                    ), True
            except StoreConflict:
                # The same key raced in from another request: answer with the winner.
                if idempotency_key is None:
                    raise
        raise StoreUnavailable(_safe(self.url), "could not store the container after 3 tries")

    def _by_key(self, conn: Connection, tenant: str, key: str, digest: str) -> RowMapping | None:
        c = s.containers.c
        row = (
            conn.execute(select(s.containers).where(c.tenant == tenant, c.idempotency_key == key))
            .mappings()
            .first()
        )
        if row is not None and row["request_hash"] != digest:
            raise IdempotencyMismatch(key, row["id"])
        return row

    @staticmethod
    def _check_exports(tenant: RowMapping, body: ContainerCreate) -> None:
        allowed: list[str] = list(tenant["nfs_exports"])
        for i, mount in enumerate(body.nfs):
            if not any(_under(mount.export, a) for a in allowed):
                raise Forbidden(
                    f"nfs[{i}]: tenant {tenant['name']!r} may not mount {mount.export}; "
                    f"allowed exports: {', '.join(allowed) or 'none'} (ask the operator)"
                )

    @staticmethod
    def _check_quota(tenant: RowMapping, gpus: int) -> None:
        name = tenant["name"]
        used_containers = int(tenant["containers_unfinished"])
        used_gpus = int(tenant["gpus_held"])
        if used_containers + 1 > tenant["max_containers"]:
            raise QuotaExceeded(
                name, "unfinished containers", tenant["max_containers"], used_containers, 1
            )
        if used_gpus + gpus > tenant["max_gpus"]:
            raise QuotaExceeded(name, "GPUs", tenant["max_gpus"], used_gpus, gpus)

    @staticmethod
    def _count(conn: Connection, tenant: str, gpus: int, containers: int) -> None:
        t = s.tenants.c
        conn.execute(
            update(s.tenants)
            .where(t.name == tenant)
            .values(
                gpus_held=t.gpus_held + gpus,
                containers_unfinished=t.containers_unfinished + containers,
            )
        )

    def _insert(
        self,
        conn: Connection,
        tenant: str,
        body: ContainerCreate,
        gpus_granted: int,
        key: str | None,
        digest: str,
    ) -> RowMapping:
        t = self._clock()
        spec = body.model_dump(mode="json", include={"command", "args", "env", "nfs", "labels"})
        cid = secrets.token_hex(6)
        seq = conn.execute(
            insert(s.containers)
            .values(
                id=cid,
                tenant=tenant,
                name=body.name,
                image=body.image,
                spec=spec,
                gpus=body.gpus,
                gpus_granted=gpus_granted,
                max_runtime_s=body.max_runtime_s,
                state=State.QUEUED.value,
                reason="Submitted",
                message="",
                exit_code=None,
                board=None,
                partition_id=None,
                module_ids=None,
                stop_requested=False,
                stop_reason="",
                idempotency_key=key,
                request_hash=digest,
                created_at=t,
                updated_at=t,
            )
            .returning(s.containers.c.seq)
        ).scalar_one()
        self._count(conn, tenant, gpus_granted, 1)
        if body.labels:
            conn.execute(
                insert(s.container_labels),
                [{"container_seq": seq, "key": k, "value": v} for k, v in body.labels.items()],
            )
        conn.execute(
            insert(s.events).values(
                container_seq=seq, at=t, state=State.QUEUED.value, reason="Submitted", message=""
            )
        )
        return conn.execute(select(s.containers).where(s.containers.c.seq == seq)).mappings().one()

    def container(self, cid: str, tenant: str | None = None) -> RowMapping:
        """One container; a tenant's view sees only its own (others are NotFound)."""
        q = select(s.containers).where(s.containers.c.id == cid)
        if tenant is not None:
            q = q.where(s.containers.c.tenant == tenant)
        with self._tx(read=True) as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFound("container", cid)
        return row

    def containers(
        self,
        tenant: str | None,
        *,
        states: Sequence[State] = (),
        labels: Mapping[str, str] | None = None,
        limit: int = DEFAULT_PAGE,
        page_token: str | None = None,
    ) -> tuple[list[RowMapping], str | None]:
        """A page of containers, newest first; returns (rows, next page token or None)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        c = s.containers.c
        q = select(s.containers).order_by(c.seq.desc()).limit(limit + 1)
        if tenant is not None:
            q = q.where(c.tenant == tenant)
        if states:
            q = q.where(c.state.in_([x.value for x in states]))
        for key, value in (labels or {}).items():
            lab = s.container_labels.c
            q = q.where(
                exists().where(lab.container_seq == c.seq, lab.key == key, lab.value == value)
            )
        if page_token:
            q = q.where(c.seq < _decode_page(page_token))
        with self._tx(read=True) as conn:
            rows = list(conn.execute(q).mappings().all())
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (_encode_page(rows[-1]["seq"]) if more and rows else None)

    def events(self, seq: int) -> list[RowMapping]:
        q = select(s.events).where(s.events.c.container_seq == seq).order_by(s.events.c.id)
        with self._tx(read=True) as conn:
            return list(conn.execute(q).mappings().all())

    def request_stop(self, cid: str, tenant: str | None, reason: str = "Stopped") -> RowMapping:
        """Ask for a container to stop. Idempotent. A queued one stops at once."""
        c = s.containers.c
        with self._tx() as conn:
            q = select(s.containers).where(c.id == cid)
            if tenant is not None:
                q = q.where(c.tenant == tenant)
            row = conn.execute(q).mappings().first()
            if row is None:
                raise NotFound("container", cid)
            state = State(row["state"])
            if state.final:
                return row
            if state is State.QUEUED:
                self._transition(conn, row, State.STOPPED, reason, "stopped before it was placed")
            elif not row["stop_requested"]:
                conn.execute(
                    update(s.containers)
                    .where(c.seq == row["seq"])
                    .values(stop_requested=True, stop_reason=reason, updated_at=self._clock())
                )
            return conn.execute(select(s.containers).where(c.seq == row["seq"])).mappings().one()

    # -- containers: the scheduler's side ----------------------------------------------------

    def queued_after(self, seq: int, limit: int = 1000) -> list[RowMapping]:
        """seq, GPUs granted and tenant of containers queued after ``seq``, oldest first."""
        c = s.containers.c
        q = (
            select(c.seq, c.gpus_granted, c.tenant)
            .where(c.state == State.QUEUED.value, c.seq > seq)
            .order_by(c.seq)
            .limit(limit)
        )
        with self._tx(read=True) as conn:
            return list(conn.execute(q).mappings().all())

    def holding(self) -> list[RowMapping]:
        """Containers that hold GPUs (placing, starting, running)."""
        c = s.containers.c
        q = (
            select(s.containers)
            .where(c.state.in_([State.PLACING.value, State.STARTING.value, State.RUNNING.value]))
            .order_by(c.seq)
        )
        with self._tx(read=True) as conn:
            return list(conn.execute(q).mappings().all())

    def stop_changes(self, since: float) -> list[tuple[int, str, str | None]]:
        """(seq, state, stop reason) of containers asked to stop while holding GPUs, and of
        queued ones stopped since ``since``: what the scheduler loop must act on."""
        c = s.containers.c
        holding = [State.PLACING.value, State.STARTING.value, State.RUNNING.value]
        q = select(c.seq, c.state, c.stop_reason).where(
            or_(
                and_(c.state.in_(holding), c.stop_requested.is_(True)),
                and_(c.state == State.STOPPED.value, c.updated_at >= since),
            )
        )
        with self._tx(read=True) as conn:
            return [
                (
                    int(r.seq),
                    str(r.state),
                    (r.stop_reason or "Stopped") if r.state in holding else None,
                )
                for r in conn.execute(q)
            ]

    def reserve(self, seq: int, where: Reservation) -> RowMapping | None:
        """queued → placing with the GPUs recorded; returns the updated row, or None when it is
        no longer queued."""
        c = s.containers.c
        with self._tx() as conn:
            row = (
                conn.execute(
                    select(s.containers).where(c.seq == seq, c.state == State.QUEUED.value)
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            if where.gpus_granted != row["gpus_granted"]:
                self._count(conn, row["tenant"], where.gpus_granted - row["gpus_granted"], 0)
            conn.execute(
                update(s.containers)
                .where(c.seq == seq)
                .values(
                    board=where.board,
                    partition_id=where.partition_id,
                    module_ids=list(where.module_ids),
                    gpus_granted=where.gpus_granted,
                )
            )
            self._transition(
                conn,
                row,
                State.PLACING,
                "Reserved",
                f"{where.board} partition {where.partition_id} GPUs "
                f"{','.join(map(str, where.module_ids))}",
            )
            return conn.execute(select(s.containers).where(c.seq == seq)).mappings().one()

    def transition(
        self,
        seq: int,
        to: State,
        reason: str,
        message: str = "",
        *,
        exit_code: int | None = None,
        at: float | None = None,
    ) -> bool:
        """Move a container to ``to`` unless it is final already; records the event."""
        with self._tx() as conn:
            row = (
                conn.execute(select(s.containers).where(s.containers.c.seq == seq))
                .mappings()
                .first()
            )
            if row is None or State(row["state"]).final or row["state"] == to.value:
                return False
            self._transition(conn, row, to, reason, message, exit_code=exit_code, at=at)
            return True

    def _transition(
        self,
        conn: Connection,
        row: RowMapping,
        to: State,
        reason: str,
        message: str,
        *,
        exit_code: int | None = None,
        at: float | None = None,
    ) -> None:
        # A backend's time (another host's clock, a truncated second) never puts a state
        # before the one it follows.
        t = max(at, float(row["updated_at"])) if at is not None else self._clock()
        values: dict[str, Any] = {
            "state": to.value,
            "reason": reason,
            "message": message,
            "updated_at": t,
        }
        if exit_code is not None:
            values["exit_code"] = exit_code
        if to.final and not State(row["state"]).final:
            self._count(conn, row["tenant"], -int(row["gpus_granted"]), -1)
        conn.execute(update(s.containers).where(s.containers.c.seq == row["seq"]).values(**values))
        conn.execute(
            insert(s.events).values(
                container_seq=row["seq"], at=t, state=to.value, reason=reason, message=message
            )
        )

    def note(self, seq: int, reason: str, message: str) -> None:
        """Record an event without a state change (e.g. the node went NotReady)."""
        with self._tx() as conn:
            row = (
                conn.execute(select(s.containers).where(s.containers.c.seq == seq))
                .mappings()
                .first()
            )
            if row is None:
                return
            conn.execute(
                insert(s.events).values(
                    container_seq=seq,
                    at=self._clock(),
                    state=row["state"],
                    reason=reason,
                    message=message,
                )
            )

    def purge_finished(
        self,
        *,
        keep_per_tenant: int | None = None,
        older_than: float | None = None,
        batch: int = 500,
    ) -> list[str]:
        """Delete finished containers (with their events and labels): those that ended before
        ``older_than`` (wall clock), and each tenant's beyond its newest ``keep_per_tenant``
        finished ones. At most ``batch`` per call; returns their IDs. Unfinished containers
        are never touched, so the quota counters stay as they are."""
        c = s.containers.c
        final = [x.value for x in FINAL_STATES]
        doomed: list[tuple[int, str]] = []
        with self._tx(read=True) as conn:
            if older_than is not None:
                q = (
                    select(c.seq, c.id)
                    .where(c.state.in_(final), c.updated_at < older_than)
                    .order_by(c.seq)
                    .limit(batch)
                )
                doomed += [(int(r.seq), str(r.id)) for r in conn.execute(q)]
            if keep_per_tenant is not None:
                for (name,) in conn.execute(select(s.tenants.c.name)).all():
                    if len(doomed) >= batch:
                        break
                    q = (
                        select(c.seq, c.id)
                        .where(c.tenant == name, c.state.in_(final))
                        .order_by(c.seq.desc())
                        .offset(keep_per_tenant)
                        .limit(batch - len(doomed))
                    )
                    doomed += [(int(r.seq), str(r.id)) for r in conn.execute(q)]
        seqs = sorted({seq for seq, _ in doomed})
        if not seqs:
            return []
        with self._tx() as conn:
            gone = (c.seq.in_(seqs)) & c.state.in_(final)  # still finished: final states stick
            keep = select(c.seq).where(gone)
            conn.execute(delete(s.events).where(s.events.c.container_seq.in_(keep)))
            conn.execute(
                delete(s.container_labels).where(s.container_labels.c.container_seq.in_(keep))
            )
            conn.execute(delete(s.containers).where(gone))
        return sorted({cid for _, cid in doomed})

    def count(self, states: Iterable[State] | None = None) -> int:
        q = select(func.count()).select_from(s.containers)
        if states is not None:
            q = q.where(s.containers.c.state.in_([x.value for x in states]))
        with self._tx(read=True) as conn:
            return int(conn.execute(q).scalar_one())

    # -- leases -------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl_s`` seconds; False while another
        holder's lease has not expired. Replicas sharing a store elect one scheduler so."""
        t = self._clock()
        lease = s.leases.c
        with self._tx() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("LOCK TABLE leases IN SHARE ROW EXCLUSIVE MODE"))
            row = conn.execute(select(s.leases).where(lease.name == name)).mappings().first()
            if row is None:
                conn.execute(
                    insert(s.leases).values(name=name, holder=holder, expires_at=t + ttl_s)
                )
                return True
            if row["holder"] != holder and row["expires_at"] > t:
                return False
            conn.execute(
                update(s.leases)
                .where(lease.name == name)
                .values(holder=holder, expires_at=t + ttl_s)
            )
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self._tx() as conn:
            conn.execute(
                delete(s.leases).where(s.leases.c.name == name, s.leases.c.holder == holder)
            )

    # -- cordons -------------------------------------------------------------------------------

    def set_cordon(self, board: str, module_id: int, cordoned: bool) -> None:
        """Record a cordon (``module_id`` 0: the whole board). Idempotent."""
        with self._tx() as conn:
            key = and_(s.cordons.c.board == board, s.cordons.c.module_id == module_id)
            conn.execute(delete(s.cordons).where(key))
            if cordoned:
                conn.execute(
                    insert(s.cordons).values(
                        board=board, module_id=module_id, created_at=self._clock()
                    )
                )

    def cordons(self) -> list[tuple[str, int]]:
        with self._tx(read=True) as conn:
            return [(r.board, r.module_id) for r in conn.execute(select(s.cordons))]


def _under(export: str, allowed: str) -> bool:
    server, _, path = export.partition(":")
    a_server, _, a_path = allowed.partition(":")
    if server != a_server:
        return False
    a_path = a_path.rstrip("/") or "/"
    return path == a_path or path.startswith(a_path.rstrip("/") + "/")


_MAX_SEQ = 2**63


def _encode_page(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _decode_page(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, value = text.partition(":")
        seq = int(value)
        # Numbers outside a BIGINT are no seq we gave out (and overflow the database).
        if kind != "seq" or not 0 <= seq < _MAX_SEQ:
            raise ValueError(kind)
        return seq
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(
            f"page_token {token[:40]!r} is not one this API gave out; start from the first page"
        ) from None


def _safe(url: str) -> str:
    """The URL without its password."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, cred = head.partition("://")
    user = cred.split(":")[0]
    return f"{scheme}://{user}:***@{tail}" if ":" in cred else url


def _engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # The database holds token hashes and tenants' environments: 0600, whatever the
            # umask; SQLite gives its -wal and -shm files the database's mode.
            for private in (
                path,
                path.with_name(path.name + "-wal"),
                path.with_name(path.name + "-shm"),
            ):
                if private == path or private.exists():
                    private_file(private)
        except OSError as exc:
            raise StoreUnavailable(url, f"cannot create {path.parent}: {exc}") from exc
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=10,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Writers take the write lock at BEGIN, so a transaction that reads, checks and
            # then writes (quota, reservation) cannot deadlock or act on stale reads. Readers
            # begin deferred and never wait for writers (WAL).
            read = conn.get_execution_options().get(_READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

        return engine
    if url.startswith(("postgresql+psycopg://", "postgresql://")):
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    raise BadStoreUrl(url)
