"""The conversation store's schema, created and migrated with Alembic (`bot.store.migrate`)."""
