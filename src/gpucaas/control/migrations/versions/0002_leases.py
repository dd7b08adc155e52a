"""Leases (one scheduler leads when replicas share a store), per-tenant usage counters
(the quota check reads one row instead of summing the tenant's containers), and an index
for the scheduler's "what was stopped lately" query.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )
    op.add_column("tenants", sa.Column("gpus_held", sa.Integer, nullable=False, server_default="0"))
    op.add_column(
        "tenants",
        sa.Column("containers_unfinished", sa.Integer, nullable=False, server_default="0"),
    )
    unfinished = "('queued', 'placing', 'starting', 'running')"
    op.execute(
        "UPDATE tenants SET "
        "gpus_held = (SELECT COALESCE(SUM(gpus_granted), 0) FROM containers "
        f"WHERE containers.tenant = tenants.name AND state IN {unfinished}), "
        "containers_unfinished = (SELECT COUNT(*) FROM containers "
        f"WHERE containers.tenant = tenants.name AND state IN {unfinished})"
    )
    op.create_index("ix_containers_state_updated_at", "containers", ["state", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_containers_state_updated_at", "containers")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("containers_unfinished")
        batch.drop_column("gpus_held")
    op.drop_table("leases")
