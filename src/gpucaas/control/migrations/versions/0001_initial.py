"""The first schema: tenants, tokens, containers, labels, events, cordons.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("max_gpus", sa.Integer, nullable=False),
        sa.Column("max_containers", sa.Integer, nullable=False),
        sa.Column("nfs_exports", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_tenants"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(40), nullable=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.ForeignKeyConstraint(["tenant"], ["tenants.name"], name="fk_tokens_tenant_tenants"),
        sa.UniqueConstraint("hash", name="uq_tokens_hash"),
    )
    op.create_table(
        "containers",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(40), nullable=False),
        sa.Column("name", sa.String(63), nullable=True),
        sa.Column("image", sa.String(512), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("gpus_granted", sa.Integer, nullable=False),
        sa.Column("max_runtime_s", sa.Integer, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("board", sa.String(253), nullable=True),
        sa.Column("partition_id", sa.Integer, nullable=True),
        sa.Column("module_ids", sa.JSON, nullable=True),
        sa.Column("stop_requested", sa.Boolean, nullable=False),
        sa.Column("stop_reason", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_containers"),
        sa.ForeignKeyConstraint(["tenant"], ["tenants.name"], name="fk_containers_tenant_tenants"),
        sa.UniqueConstraint("id", name="uq_containers_id"),
        sa.UniqueConstraint(
            "tenant", "idempotency_key", name="uq_containers_tenant_idempotency_key"
        ),
    )
    op.create_index("ix_containers_tenant_seq", "containers", ["tenant", "seq"])
    op.create_index("ix_containers_state_seq", "containers", ["state", "seq"])
    op.create_index("ix_containers_tenant_state", "containers", ["tenant", "state"])
    op.create_table(
        "container_labels",
        sa.Column("container_seq", SEQ, nullable=False),
        sa.Column("key", sa.String(317), nullable=False),
        sa.Column("value", sa.String(63), nullable=False),
        sa.PrimaryKeyConstraint("container_seq", "key", name="pk_container_labels"),
        sa.ForeignKeyConstraint(
            ["container_seq"],
            ["containers.seq"],
            name="fk_container_labels_container_seq_containers",
        ),
    )
    op.create_index("ix_container_labels_key_value", "container_labels", ["key", "value"])
    op.create_table(
        "events",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("container_seq", SEQ, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(
            ["container_seq"], ["containers.seq"], name="fk_events_container_seq_containers"
        ),
    )
    op.create_index("ix_events_container_seq", "events", ["container_seq"])
    op.create_table(
        "cordons",
        sa.Column("board", sa.String(253), nullable=False),
        sa.Column("module_id", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("board", "module_id", name="pk_cordons"),
    )


def downgrade() -> None:
    op.drop_table("cordons")
    op.drop_index("ix_events_container_seq", "events")
    op.drop_table("events")
    op.drop_index("ix_container_labels_key_value", "container_labels")
    op.drop_table("container_labels")
    op.drop_index("ix_containers_tenant_state", "containers")
    op.drop_index("ix_containers_state_seq", "containers")
    op.drop_index("ix_containers_tenant_seq", "containers")
    op.drop_table("containers")
    op.drop_table("tokens")
    op.drop_table("tenants")
