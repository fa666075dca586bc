"""What users tell us about answers: 👍/👎 and the questions the documents could not answer.

Kept in one SQLite file in the data dir. Only what an editor needs to fill the knowledge gaps is
stored: the question, the answer and its citations, the channel's name — never who asked.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from bot.answer import Answer

FILE_NAME = "feedback.sqlite3"
Kind = Literal["up", "down", "abstained", "asked"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('up', 'down', 'abstained', 'asked')),
    channel TEXT NOT NULL,
    turn TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    citations TEXT NOT NULL,
    context TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind);
CREATE UNIQUE INDEX IF NOT EXISTS one_vote_per_turn ON events (turn)
    WHERE kind IN ('up', 'down');
"""


@dataclass(frozen=True)
class Event:
    created: str
    kind: Kind
    channel: str
    question: str
    answer: str
    citations: list[dict[str, str | int | None]]
    context: str = ""  # for a follow-up, the question(s) it built on


class FeedbackStore:
    """Append-only events; one vote per answer (a second click changes it)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # Channels call from the event loop and from a worker thread; the lock serialises them.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        if "context" not in columns:  # a store from before follow-ups were recorded
            self._db.execute("ALTER TABLE events ADD COLUMN context TEXT NOT NULL DEFAULT ''")

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> FeedbackStore:
        return cls(Path(data_dir) / FILE_NAME)

    def record(
        self, kind: Kind, channel: str, turn: str, answer: Answer, context: str | None = None
    ) -> None:
        citations = [
            {"n": c.n, "title": c.title, "source": c.source, "location": c.location}
            for c in answer.citations
        ]
        row = (
            datetime.now(UTC).isoformat(timespec="seconds"),
            kind,
            channel,
            turn,
            answer.question,
            answer.text,
            json.dumps(citations, ensure_ascii=False),
            context or "",
        )
        with self._lock:
            if kind in ("up", "down"):
                self._db.execute(
                    "DELETE FROM events WHERE turn = ? AND kind IN ('up', 'down')", (turn,)
                )
            self._db.execute(
                "INSERT INTO events"
                " (created, kind, channel, turn, question, answer, citations, context)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def events(self, *kinds: Kind) -> list[Event]:
        marks = ", ".join("?" for _ in kinds)
        with self._lock:
            rows = self._db.execute(
                "SELECT created, kind, channel, question, answer, citations, context FROM events"
                f" WHERE kind IN ({marks}) ORDER BY id",
                kinds,
            ).fetchall()
        return [
            Event(created, kind, channel, question, answer, json.loads(citations), context)
            for created, kind, channel, question, answer, citations, context in rows
        ]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall()
        return dict(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class Gap:
    """One question (as users wrote it, grouped case- and space-insensitively) worth an editor's
    look: it got no answer, or its answer got 👎."""

    question: str
    abstained: int = 0
    unhelpful: int = 0
    last_seen: str = ""
    channels: str = ""
    sources: list[str] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)  # what a follow-up question built on

    def to_dict(self) -> dict[str, object]:
        return {
            "question": self.question,
            "abstained": self.abstained,
            "unhelpful": self.unhelpful,
            "last_seen": self.last_seen,
            "channels": self.channels.split(", ") if self.channels else [],
            "sources": self.sources,
            "contexts": self.contexts,
        }


def gaps(store: FeedbackStore) -> list[Gap]:
    """The knowledge gaps, most frequent first: abstained questions and answers voted 👎.
    A question whose latest vote is 👍 is not a gap, even if an earlier answer got 👎."""
    found: dict[str, Gap] = {}
    channels: dict[str, set[str]] = {}
    latest_vote: dict[str, str] = {}
    for event in store.events("abstained", "down", "up"):
        key = " ".join(event.question.casefold().split()).rstrip("?!. ")
        if event.kind == "up":
            latest_vote[key] = "up"
            continue
        gap = found.setdefault(key, Gap(event.question))
        if event.context and event.context not in gap.contexts:
            gap.contexts.append(event.context)
        if event.kind == "abstained":
            gap.abstained += 1
        else:
            latest_vote[key] = "down"
            gap.unhelpful += 1
            for c in event.citations:
                where = f"«{c['title']}»" + (f", {c['location']}" if c.get("location") else "")
                if where not in gap.sources:
                    gap.sources.append(where)
        gap.last_seen = max(gap.last_seen, event.created)
        channels.setdefault(key, set()).add(event.channel)
    for key, gap in list(found.items()):
        if latest_vote.get(key) == "up" and not gap.abstained:
            del found[key]
            continue
        gap.channels = ", ".join(sorted(channels[key]))
    return sorted(found.values(), key=lambda g: (-(g.abstained + g.unhelpful), g.question))
