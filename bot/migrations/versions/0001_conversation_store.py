"""The conversation store as it was when migrations began: turns, events, rate hits, course
progress and events, meta. A table that is already there (a store the bot created before, with
SQLAlchemy's create_all) is left as it is, so existing stores take this revision unchanged.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _create(
    name: str, *columns: sa.Column, indexes: tuple[tuple[str, list[str]], ...] = ()
) -> None:
    if sa.inspect(op.get_bind()).has_table(name):
        return
    op.create_table(name, *columns)
    for index, fields in indexes:
        op.create_index(index, name, fields)


def upgrade() -> None:
    _create(
        "turns",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("chat", sa.String(300), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=True),
        indexes=(("turns_chat", ["chat", "seq"]),),
    )
    _create(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("turn", sa.String(32), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("citations", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=False, server_default=""),
        indexes=(("events_kind", ["kind"]), ("events_turn", ["turn"])),
    )
    _create(
        "rate_hits",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        indexes=(("rate_hits_key", ["key", "at"]),),
    )
    _create(
        "course_progress",
        sa.Column("chat", sa.String(300), primary_key=True),
        sa.Column("course", sa.String(64), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("turn", sa.String(32), nullable=True),
        sa.Column("answered", sa.Integer, nullable=False, server_default="0"),
        sa.Column("right", sa.Integer, nullable=False, server_default="0"),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("finished", sa.Float, nullable=True),
    )
    _create(
        "course_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("course", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("step", sa.String(64), nullable=False, server_default=""),
        sa.Column("choice", sa.Integer, nullable=True),
        sa.Column("right", sa.Integer, nullable=True),
        indexes=(("course_events_kind", ["course", "kind"]),),
    )
    _create(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for name in ("meta", "course_events", "course_progress", "rate_hits", "events", "turns"):
        op.drop_table(name)
