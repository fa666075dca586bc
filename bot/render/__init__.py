"""Renderers: an Answer or a Reply → what one channel shows (plain text, Telegram HTML, a Teams
card), each in its own module and each drawn from the same structure.

Every piece of source text is escaped for the channel it goes to, so a passage holding `<`, `&`,
`*` or `_` can never break a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.answer import Answer, Citation


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
