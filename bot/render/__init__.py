"""Renderers: an Answer or a Reply → what one channel shows (plain text, Telegram HTML, a Teams
card), each in its own module and each drawn from the same structure.

Every piece of source text is escaped for the channel it goes to, so a passage holding `<`, `&`,
`*` or `_` can never break a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.messages import course_labels

if TYPE_CHECKING:
    from bot.answer import Answer, Citation
    from bot.conversation import Reply
    from bot.intro import Verdict


def refs(cites: tuple[int, ...]) -> str:
    """ " [1][2]": the citation numbers a statement rests on."""
    return " " + "".join(f"[{n}]" for n in cites) if cites else ""


def lead_citation(a: Answer) -> Citation:
    """The citation the lead quote rests on (the first, unless the quote names another)."""
    quote = a.quote
    number = quote.cites[0] if quote is not None and quote.cites else 1
    return next((c for c in a.citations if c.n == number), a.citations[0])


def quoted(text: str) -> str:
    """«text», unless the passage is itself one quotation already («…» or "…")."""
    stripped = text.strip()
    pairs = (("«", "»"), ('"', '"'), ("“", "”"))
    if any(
        stripped.startswith(a)
        and stripped.endswith(b)
        and stripped.count(a) == (2 if a == b else 1)
        for a, b in pairs
        if len(stripped) > 1
    ):
        return stripped
    return f"«{text}»"


def numbers(count: int, language: str) -> str:
    """ "1, 2 eller 3" / "1, 2 or 3": the numbers of a check question's choices."""
    digits = [str(n) for n in range(1, count + 1)]
    word = " or " if language == "en" else " eller "
    return word.join([", ".join(digits[:-1]), digits[-1]]) if len(digits) > 1 else digits[0]


def course_parts(r: Reply) -> list[str]:
    """The order a course reply is shown in: the verdict on the check just answered, then the
    reply's own sentence (a welcome back, or the course's end), then the next lesson."""
    parts = ["verdict"] if r.verdict is not None else []
    if r.text:
        parts.append("text")
    if r.lesson is not None:
        parts.append("lesson")
    return parts


def verdict_line(v: Verdict) -> str:
    """ "✅ Riktig!", or "❌ Ikke helt. Riktig svar er 2: «…»": how a verdict opens."""
    words = course_labels(v.language)
    return words["right"] if v.right else words["wrong"].format(answer=v.answer, text=v.answer_text)
