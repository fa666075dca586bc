"""The knowledge gaps: questions the documents could not answer and answers users marked 👎.

Read from the conversation store's event log (`bot/store.py`), which keeps only what an editor
needs to fill the gaps — the question, the answer and its citations, the channel's name — never
who asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.store import Store

DELETED = "(spørsmålsteksten er slettet etter oppbevaringstiden)"


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


def gaps(store: Store) -> list[Gap]:
    """The knowledge gaps, most frequent first: abstained questions and answers voted 👎.
    A question whose latest vote is 👍 is not a gap, even if an earlier answer got 👎."""
    found: dict[str, Gap] = {}
    channels: dict[str, set[str]] = {}
    latest_vote: dict[str, str] = {}
    for event in store.events("abstained", "down", "up"):
        key = " ".join(event.question.casefold().split()).rstrip("?!. ")
        question = event.question or DELETED  # older than the retention period
        if event.kind == "up":
            latest_vote[key] = "up"
            continue
        gap = found.setdefault(key, Gap(question))
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
