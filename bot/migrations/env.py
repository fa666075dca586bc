"""Alembic's environment: always run by `bot.store.migrate` on a connection it gives (and, on
PostgreSQL, holds an advisory lock on, so replicas starting together migrate one at a time)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
