"""Plain text: the terminal, the `answer` of `ask --json`, and a fallback for the other channels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.messages import CAVEAT, NO_ANSWER, RELATED, labels, say, where
from bot.render import lead_citation, quoted, refs
from ingest.clean import strip_unsafe

if TYPE_CHECKING:
    from bot.answer import Answer
    from bot.conversation import Reply, SourceView


def answer(a: Answer) -> str:
    """A caveat when unsure, the guide's words, a decision aid's criteria, the lead quote with
    where it stands, then every source; or "not in the documents" and where to look. Control
    and bidi characters never reach the terminal (here as in every renderer)."""
    return strip_unsafe(_answer(a))


def _answer(a: Answer) -> str:
    if a.abstained or not a.citations:
        lines = [say(NO_ANSWER, a.language)]
        if a.related:
            lines += ["", say(RELATED, a.language)]
            lines += [f"• {where(r.title, r.location, a.language)}" for r in a.related]
        return "\n".join(lines)
    words = labels(a.language)
    lines = [say(CAVEAT, a.language), ""] if not a.confident else []
    own = [s for s in a.statements if not s.verbatim]
    bullet = "• " if a.criteria else ""  # a decision aid lists its verdicts and criteria
    lines += [f"{bullet}{s.text}{refs(s.cites)}" for s in own]
    if a.criteria:
        lines.append(words["criteria"])
        lines += [f"• {c.text}{refs(c.cites)}" for c in a.criteria]
    if own or a.criteria:
        lines.append("")
    lead = lead_citation(a)
    quote = a.quote
    if quote is not None:
        lines.append(words["according"].format(where=where(lead.title, lead.location, a.language)))
        lines.append(quoted(quote.text) + refs(quote.cites))
    others = [c for c in a.citations if c is not lead]
    if others:
        lines.append(words["also"].format(refs=", ".join(f"[{c.n}]" for c in others)))
    lines += ["", words["sources"]]
    for c in a.citations:
        lines.append(f"[{c.n}] {where(c.title, c.location, a.language)}")
        if c is not lead:
            lines.append("    " + quoted(c.quote))
    return "\n".join(lines)


def source(view: SourceView) -> str:
    c = view.citation
    where_ = where(c.title, c.location, view.language)
    return strip_unsafe(f"[{c.n}] {where_}\n({c.source})\n\n{c.text}")


def reply(r: Reply) -> str:
    if r.kind == "answer" and r.answer is not None:
        return answer(r.answer)
    if r.kind == "source" and r.source is not None:
        return source(r.source)
    return strip_unsafe(r.text)
