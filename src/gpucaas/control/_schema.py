"""The store's tables (SQLAlchemy Core). Alembic migrations build exactly this schema; a test
compares the two so a change here without a migration fails."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# SQLite autoincrements only INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identity.
SEQ = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tenants = Table(
    "tenants",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("max_gpus", Integer, nullable=False),
    Column("max_containers", Integer, nullable=False),
    Column("nfs_exports", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    # What the quota counts, kept in step with every insert and final transition.
    Column("gpus_held", Integer, nullable=False, server_default="0"),
    Column("containers_unfinished", Integer, nullable=False, server_default="0"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("tenant", String(40), ForeignKey("tenants.name"), nullable=True),
    Column("hash", String(64), nullable=False, unique=True),
    Column("label", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

containers = Table(
    "containers",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("id", String(16), nullable=False, unique=True),
    Column("tenant", String(40), ForeignKey("tenants.name"), nullable=False),
    Column("name", String(63), nullable=True),
    Column("image", String(512), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("gpus", Integer, nullable=False),
    Column("gpus_granted", Integer, nullable=False),
    Column("max_runtime_s", Integer, nullable=True),
    Column("state", String(16), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("exit_code", Integer, nullable=True),
    Column("board", String(253), nullable=True),
    Column("partition_id", Integer, nullable=True),
    Column("module_ids", JSON, nullable=True),
    Column("stop_requested", Boolean, nullable=False),
    Column("stop_reason", String(64), nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("request_hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("tenant", "idempotency_key"),
    Index(None, "tenant", "seq"),
    Index(None, "state", "seq"),
    Index(None, "tenant", "state"),
    Index(None, "state", "updated_at"),
    # A queue number is never handed out twice, even after the top rows were deleted
    # (a tenant's deletion): the scheduler reads only numbers above the last it saw.
    # PostgreSQL's identity sequence already never goes back; migration 0003.
    sqlite_autoincrement=True,
)

container_labels = Table(
    "container_labels",
    metadata,
    Column("container_seq", SEQ, ForeignKey("containers.seq"), primary_key=True),
    Column("key", String(317), primary_key=True),
    Column("value", String(63), nullable=False),
    Index(None, "key", "value"),
)

events = Table(
    "events",
    metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("container_seq", SEQ, ForeignKey("containers.seq"), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("message", Text, nullable=False),
)

cordons = Table(
    "cordons",
    metadata,
    Column("board", String(253), primary_key=True),
    Column("module_id", Integer, primary_key=True),  # 0: the whole board
    Column("created_at", Float, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
)
