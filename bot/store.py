"""Everything a user relies on between messages, in one store that survives a restart.

Conversations (each chat's recent turns, with their answers, citations and ids), feedback and
the knowledge-gap log, the rate-limit windows, and where each chat is in the onboarding course.
Through SQLAlchemy: an SQLite file in the data dir by default, a server database (PostgreSQL) by
URL (`STYRINGSBOT_DATABASE_URL`), so several bot processes can share one. Never stores who
asked: a chat key is the channel's own id.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

log = logging.getLogger(__name__)

FILE_NAME = "styringsbot.sqlite3"
OLD_FEEDBACK_FILE = "feedback.sqlite3"  # the feedback store before conversations were kept
Kind = Literal["up", "down", "abstained", "asked"]
EVENT_KINDS = ("up", "down", "abstained", "asked")

metadata = MetaData()
turns = Table(
    "turns",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("chat", String(300), nullable=False),
    Column("seq", Integer, nullable=False),  # the turn's number in its chat: 1, 2, …
    Column("created", Float, nullable=False),  # seconds since the epoch
    Column("question", Text, nullable=False),
    Column("answer", Text, nullable=False),  # Answer.to_state() as JSON
    Column("context", Text, nullable=True),  # the FollowUpContext it built on, as JSON
    Index("turns_chat", "chat", "seq"),
)
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created", String(40), nullable=False),  # ISO 8601, UTC
    Column("kind", String(16), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("turn", String(32), nullable=False),
    Column("question", Text, nullable=False),
    Column("answer", Text, nullable=False),
    Column("citations", Text, nullable=False),
    Column("context", Text, nullable=False, default=""),
    Index("events_kind", "kind"),
    Index("events_turn", "turn"),
)
rate_hits = Table(
    "rate_hits",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False),
    Column("at", Float, nullable=False),
    Index("rate_hits_key", "key", "at"),
)
# The onboarding course: where each chat is (kept like a conversation, deleted with old ones)…
course_progress = Table(
    "course_progress",
    metadata,
    Column("chat", String(300), primary_key=True),
    Column("course", String(64), nullable=False),
    Column("step", String(64), nullable=False),  # the step shown last
    Column("position", Integer, nullable=False),  # its index, should an edit remove the step
    Column("turn", String(32), nullable=True),  # the turn its lesson was kept as ("kilde N")
    Column("answered", Integer, nullable=False, default=0),  # its check question answered
    Column("right", Integer, nullable=False, default=0),  # checks answered right this round
    Column("language", String(8), nullable=False),
    Column("started", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("finished", Float, nullable=True),
)
# … and what happened in it, with no chat: the report's figures (started, finished, answers).
course_events = Table(
    "course_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created", String(40), nullable=False),  # ISO 8601, UTC
    Column("course", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # started, finished, answered
    Column("step", String(64), nullable=False, default=""),
    Column("choice", Integer, nullable=True),
    Column("right", Integer, nullable=True),
    Index("course_events_kind", "course", "kind"),
)
meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


class StoreError(Exception):
    """The store cannot be opened or reached; the message says what to do."""


@dataclass(frozen=True)
class StoredTurn:
    id: str
    chat: str
    created: float
    question: str
    answer: dict[str, Any]
    context: dict[str, Any] | None


@dataclass(frozen=True)
class Progress:
    """Where a chat is in the onboarding course."""

    chat: str
    course: str
    step: str
    position: int
    turn: str | None
    answered: bool
    right: int
    language: str
    started: float
    updated: float
    finished: float | None


@dataclass(frozen=True)
class CourseFigures:
    """For those who run onboarding: how many started and finished, and each check question's
    answers (step id → (answered, answered wrongly))."""

    started: int
    finished: int
    answers: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Event:
    created: str
    kind: Kind
    channel: str
    question: str
    answer: str
    citations: list[dict[str, str | int | None]]
    context: str = ""  # for a follow-up, the question it built on


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / FILE_NAME}"


# Any fixed number: the PostgreSQL advisory lock that lets one process at a time migrate.
MIGRATION_LOCK = 0x5753_7462  # "WStb"


# The newest revision in bot/migrations (a test checks it against Alembic's own view): a store
# already there is opened without loading Alembic, 0.2 s of every fresh `ask`.
HEAD_REVISION = "0001"


def at_head(engine: Engine) -> bool:
    """Whether the store's schema is already at HEAD_REVISION (no table yet: not)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        return list(versions) == [HEAD_REVISION]


def migrate(engine: Engine) -> None:
    """Create or bring the schema up to date with Alembic (bot/migrations). On PostgreSQL an
    advisory lock, held until the migration commits, makes replicas that start together migrate
    one at a time (each CREATE TABLE at once: one of them fails on the catalog's unique index)."""
    if at_head(engine):
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def drop_everything(engine: Engine) -> None:
    """Remove every table of the store and its migration record (for tests and resets)."""
    metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


class Store:
    """The conversation store. Safe to share between threads and between processes."""

    def __init__(self, url: str) -> None:
        self.url = url
        sqlite = url.startswith("sqlite")
        if sqlite and url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        memory = sqlite and url.rstrip("/") in ("sqlite:", "sqlite:///:memory:")
        try:
            self._engine: Engine = create_engine(
                url,
                pool_pre_ping=not sqlite,
                connect_args={"timeout": 30, "check_same_thread": False} if sqlite else {},
                # An in-memory database lives in one connection: every thread must share it.
                **({"poolclass": StaticPool} if memory else {}),
            )
            if sqlite:
                event.listen(self._engine, "connect", _sqlite_pragmas)
            migrate(self._engine)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"Fikk ikke åpnet samtalelageret ({_safe(url)}: {exc.__class__.__name__}); sjekk "
                "STYRINGSBOT_DATABASE_URL og at databasen kjører."
            ) from exc
        # SQLite allows one writer at a time; a lock keeps this process's writers in line (other
        # processes wait on SQLite's own lock, up to the timeout).
        self._write = threading.Lock() if sqlite else _NoLock()

    @classmethod
    def open(cls, url: str | None, data_dir: Path) -> Store:
        """The configured store, or the SQLite file in the data dir (importing the feedback of
        an older data dir the first time)."""
        store = cls(url or default_url(data_dir))
        if url is None:
            store.import_feedback(Path(data_dir) / OLD_FEEDBACK_FILE)
        return store

    # -- conversations ----------------------------------------------------------------------

    def add_turn(self, turn: StoredTurn, keep: int) -> None:
        """Save a turn; only a chat's `keep` latest turns are kept."""
        with self._write, self._engine.begin() as db:
            last = db.execute(select(func.max(turns.c.seq)).where(turns.c.chat == turn.chat))
            seq = (last.scalar() or 0) + 1
            db.execute(
                insert(turns).values(
                    id=turn.id,
                    chat=turn.chat,
                    seq=seq,
                    created=turn.created,
                    question=turn.question,
                    answer=json.dumps(turn.answer, ensure_ascii=False),
                    context=json.dumps(turn.context, ensure_ascii=False) if turn.context else None,
                )
            )
            db.execute(delete(turns).where(turns.c.chat == turn.chat, turns.c.seq <= seq - keep))

    def last_turn(self, chat: str) -> StoredTurn | None:
        query = select(turns).where(turns.c.chat == chat).order_by(turns.c.seq.desc()).limit(1)
        with self._engine.connect() as db:
            row = db.execute(query).first()
        return _turn(row) if row else None

    def turn(self, chat: str, turn_id: str) -> StoredTurn | None:
        query = select(turns).where(turns.c.chat == chat, turns.c.id == turn_id)
        with self._engine.connect() as db:
            row = db.execute(query).first()
        return _turn(row) if row else None

    def forget(self, chat: str) -> None:
        with self._write, self._engine.begin() as db:
            db.execute(delete(turns).where(turns.c.chat == chat))

    # -- feedback and the knowledge-gap log -------------------------------------------------

    def record(
        self,
        kind: Kind,
        channel: str,
        turn: str,
        question: str,
        answer: str,
        citations: list[dict[str, Any]],
        context: str | None = None,
    ) -> None:
        """Append an event; a vote replaces an earlier vote on the same answer."""
        row = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "kind": kind,
            "channel": channel,
            "turn": turn,
            "question": question,
            "answer": answer,
            "citations": json.dumps(citations, ensure_ascii=False),
            "context": context or "",
        }
        with self._write, self._engine.begin() as db:
            if kind in ("up", "down"):
                db.execute(
                    delete(events).where(events.c.turn == turn, events.c.kind.in_(("up", "down")))
                )
            db.execute(insert(events).values(**row))

    def events(self, *kinds: Kind) -> list[Event]:
        query = select(events).where(events.c.kind.in_(kinds)).order_by(events.c.id)
        with self._engine.connect() as db:
            rows = db.execute(query).all()
        return [
            Event(
                r.created,
                r.kind,
                r.channel,
                r.question,
                r.answer,
                json.loads(r.citations),
                r.context,
            )
            for r in rows
        ]

    def counts(self) -> dict[str, int]:
        query = select(events.c.kind, func.count()).group_by(events.c.kind)
        with self._engine.connect() as db:
            return {kind: int(n) for kind, n in db.execute(query).all()}

    # -- the onboarding course --------------------------------------------------------------

    def progress(self, chat: str) -> Progress | None:
        with self._engine.connect() as db:
            row = db.execute(select(course_progress).where(course_progress.c.chat == chat)).first()
        if row is None:
            return None
        return Progress(
            row.chat,
            row.course,
            row.step,
            int(row.position),
            row.turn,
            bool(row.answered),
            int(row.right),
            row.language,
            float(row.started),
            float(row.updated),
            float(row.finished) if row.finished is not None else None,
        )

    def save_progress(self, progress: Progress) -> None:
        """Insert or replace a chat's place in the course."""
        values = {
            "course": progress.course,
            "step": progress.step,
            "position": progress.position,
            "turn": progress.turn,
            "answered": int(progress.answered),
            "right": progress.right,
            "language": progress.language,
            "started": progress.started,
            "updated": progress.updated,
            "finished": progress.finished,
        }
        with self._write, self._engine.begin() as db:
            changed = db.execute(
                update(course_progress)
                .where(course_progress.c.chat == progress.chat)
                .values(**values)
            ).rowcount
            if not changed:
                db.execute(insert(course_progress).values(chat=progress.chat, **values))

    def course_event(
        self,
        course: str,
        kind: Literal["started", "finished", "answered"],
        step: str = "",
        choice: int | None = None,
        right: bool | None = None,
    ) -> None:
        row = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "course": course,
            "kind": kind,
            "step": step,
            "choice": choice,
            "right": None if right is None else int(right),
        }
        with self._write, self._engine.begin() as db:
            db.execute(insert(course_events).values(**row))

    def course_figures(self, course: str) -> CourseFigures:
        kinds = (
            select(course_events.c.kind, func.count())
            .where(course_events.c.course == course, course_events.c.kind != "answered")
            .group_by(course_events.c.kind)
        )
        wrong = func.sum(1 - course_events.c.right)
        answers = (
            select(course_events.c.step, func.count(), wrong)
            .where(course_events.c.course == course, course_events.c.kind == "answered")
            .group_by(course_events.c.step)
        )
        with self._engine.connect() as db:
            counts = {kind: int(n) for kind, n in db.execute(kinds).all()}
            per_step = {step: (int(n), int(w or 0)) for step, n, w in db.execute(answers).all()}
        return CourseFigures(counts.get("started", 0), counts.get("finished", 0), per_step)

    # -- rate limits ------------------------------------------------------------------------

    def hit(self, key: str, limit: int, seconds: float, now: float) -> float:
        """Count one request of `key` in a sliding window of `seconds`: 0 when allowed, else how
        many seconds until the oldest request in the window expires (nothing counted)."""
        if limit <= 0:
            return 0.0
        since = now - seconds
        with self._write, self._engine.begin() as db:
            db.execute(delete(rate_hits).where(rate_hits.c.key == key, rate_hits.c.at <= since))
            count, oldest = db.execute(
                select(func.count(), func.min(rate_hits.c.at)).where(rate_hits.c.key == key)
            ).one()
            if count >= limit:
                return max(0.0, seconds - (now - float(oldest)))
            db.execute(insert(rate_hits).values(key=key, at=now))
        return 0.0

    # -- privacy and upkeep -----------------------------------------------------------------

    def purge(self, days: int, now: datetime | None = None) -> int:
        """Delete question text older than `days` days: old conversations go, old events keep
        their kind, channel and date (the report's counts) but lose question, answer and
        citations. Returns how many rows were changed."""
        if days <= 0:
            return 0
        cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
        changed = 0
        with self._write, self._engine.begin() as db:
            changed += db.execute(
                delete(turns).where(turns.c.created < cutoff.timestamp())
            ).rowcount
            changed += db.execute(
                delete(course_progress).where(course_progress.c.updated < cutoff.timestamp())
            ).rowcount
            changed += db.execute(
                update(events)
                .where(
                    events.c.created < cutoff.isoformat(timespec="seconds"),
                    events.c.question != "",
                )
                .values(question="", answer="", citations="[]", context="")
            ).rowcount
            # Rate-limit windows are a minute long: an hour-old hit counts for nothing.
            hour_ago = (now or datetime.now(UTC)).timestamp() - 3600
            db.execute(delete(rate_hits).where(rate_hits.c.at < hour_ago))
        return changed

    def ping(self) -> bool:
        """Whether the store answers (for readiness checks)."""
        try:
            with self._engine.connect() as db:
                db.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def import_feedback(self, path: Path) -> int:
        """Copy the events of the feedback store of earlier versions, once."""
        if not path.exists():
            return 0
        with self._engine.connect() as db:
            done = db.execute(select(meta.c.value).where(meta.c.key == "imported_feedback")).first()
        if done:
            return 0
        try:
            old = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            columns = {row[1] for row in old.execute("PRAGMA table_info(events)")}
            context = "context" if "context" in columns else "''"
            rows = old.execute(
                "SELECT created, kind, channel, turn, question, answer, citations, "
                f"{context} FROM events ORDER BY id"
            ).fetchall()
            old.close()
        except sqlite3.Error as exc:
            log.warning("Could not read the old feedback store %s: %s", path, exc)
            return 0
        names = ("created", "kind", "channel", "turn", "question", "answer", "citations", "context")
        with self._write, self._engine.begin() as db:
            if rows:
                db.execute(insert(events), [dict(zip(names, row, strict=True)) for row in rows])
            db.execute(insert(meta).values(key="imported_feedback", value=str(path.name)))
        log.info("Imported %d feedback events from %s", len(rows), path)
        return len(rows)

    def close(self) -> None:
        self._engine.dispose()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _turn(row: Any) -> StoredTurn:
    return StoredTurn(
        id=row.id,
        chat=row.chat,
        created=float(row.created),
        question=row.question,
        answer=json.loads(row.answer),
        context=json.loads(row.context) if row.context else None,
    )


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}://{rest}"
