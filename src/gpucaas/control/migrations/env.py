"""Alembic environment: gpucaas passes the connection in (see gpucaas.control._migrate)."""

from alembic import context

from gpucaas.control._schema import metadata

conn = context.config.attributes.get("connection")
if conn is None:  # pragma: no cover - only reached when run by the alembic CLI by hand
    raise SystemExit("run migrations through gpucaas (they open a store), not the alembic CLI")
context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
