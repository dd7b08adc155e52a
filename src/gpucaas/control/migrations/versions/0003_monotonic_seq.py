"""Queue numbers are never reused: ``containers.seq`` gets SQLite's ``AUTOINCREMENT``.

A plain ``INTEGER PRIMARY KEY`` hands the highest deleted number out again, so after a
tenant's deletion removed the newest rows the next container got a number the scheduler had
already read past, and stayed ``queued`` until a restart. PostgreSQL's identity sequence
never goes back, so there this revision does nothing. The table is rebuilt (Alembic's batch
mode: copy, drop, rename); the store turns foreign-key enforcement off around migrations so
the rows of ``events`` and ``container_labels`` keep pointing at the same numbers, and the
migration checks them before it commits.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "containers",
        recreate="always",
        table_kwargs={"sqlite_autoincrement": autoincrement},
    ):
        pass
    broken = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration 0003 left dangling references: {broken[:5]}")


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
