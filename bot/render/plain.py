"""Plain text: the terminal, the `answer` of `ask --json`, and a fallback for the other channels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.messages import CAVEAT, NO_ANSWER, RELATED, course_labels, labels, say, where
from bot.render import course_parts, lead_citation, numbers, quoted, refs, verdict_line
from ingest.clean import strip_unsafe

if TYPE_CHECKING:
    from bot.answer import Answer
    from bot.conversation import Reply, SourceView
    from bot.intro import Lesson, Verdict


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


def lesson(x: Lesson) -> str:
    """A course step: where it stands, the idea, its sources, and the check question with its
    choices numbered (typed as a number in the terminal)."""
    words = course_labels(x.language)
    lines = [words["step"].format(course=x.course, number=x.number, total=x.total), x.title, ""]
    lines.append(x.text + refs(tuple(c.n for c in x.citations)))
    if x.citations:
        lines += ["", labels(x.language)["sources"]]
        lines += [f"[{c.n}] {where(c.title, c.location, x.language)}" for c in x.citations]
    lines += ["", f"{words['check']} {x.question}"]
    lines += [f"{n}. {choice}" for n, choice in enumerate(x.choices, 1)]
    lines.append(words["choose"].format(numbers=numbers(len(x.choices), x.language)))
    return strip_unsafe("\n".join(lines))


def verdict(v: Verdict) -> str:
    """Right, or the right answer; why, and the passage it rests on."""
    words = course_labels(v.language)
    first = verdict_line(v)
    lines = [first, v.explanation]
    if v.citation is not None:
        c = v.citation
        lines.append(words["read"].format(where=where(c.title, c.location, v.language)) + ".")
    return strip_unsafe("\n".join(lines))


def reply(r: Reply) -> str:
    if r.kind == "answer" and r.answer is not None:
        return answer(r.answer)
    if r.kind == "source" and r.source is not None:
        return source(r.source)
    if r.kind == "lesson":
        shown = {
            "verdict": lambda: verdict(r.verdict) if r.verdict else "",
            "text": lambda: strip_unsafe(r.text),
            "lesson": lambda: lesson(r.lesson) if r.lesson else "",
        }
        return "\n\n".join(shown[part]() for part in course_parts(r))
    return strip_unsafe(r.text)
