"""Telegram: HTML parse mode, messages of at most 4096 characters split between paragraphs.

The long parts fold away on a phone: the cited passages and a decision aid's criteria sit in
expandable quotes. Buttons give 👍/👎 and each source.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.messages import CAVEAT, NO_ANSWER, RELATED, labels, say, where
from bot.render import lead_citation, quoted, refs
from ingest.clean import strip_unsafe

if TYPE_CHECKING:
    from bot.answer import Answer
    from bot.conversation import Reply, SourceView

TELEGRAM_LIMIT = 4096  # characters of one Telegram message, after entity parsing

# A block is one paragraph: its plain text and how to mark it up. Splitting happens on the plain
# text, so a tag is never cut in two.
Block = tuple[str, Callable[[str], str]]


def _esc(text: str) -> str:
    return html.escape(strip_unsafe(text), quote=False)


def _as_is(text: str) -> str:
    return _esc(text)


def _italic(text: str) -> str:
    return f"<i>{_esc(text)}</i>"


def _bold(text: str) -> str:
    return f"<b>{_esc(text)}</b>"


def _quote(text: str) -> str:
    return f"<blockquote expandable>{_esc(text)}</blockquote>"


def answer(a: Answer, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """The answer as Telegram HTML messages: caveat, the guide's words, the criteria folded, the
    lead quote, then the sources with their quotes folded."""
    if a.abstained or not a.citations:
        blocks: list[Block] = [(say(NO_ANSWER, a.language), _as_is)]
        if a.related:
            blocks.append((say(RELATED, a.language), _bold))
            lines = [f"• {where(r.title, r.location, a.language)}" for r in a.related]
            blocks.append(("\n".join(lines), _as_is))
        return pack_blocks(blocks, limit)
    words = labels(a.language)
    blocks = [(say(CAVEAT, a.language), _italic)] if not a.confident else []
    own = [s for s in a.statements if not s.verbatim]
    bullet = "• " if a.criteria else ""
    if own:
        blocks.append(("\n".join(f"{bullet}{s.text}{refs(s.cites)}" for s in own), _as_is))
    if a.criteria:  # long on a phone: folded, the verdicts stay in view
        blocks.append((words["criteria"], _bold))
        blocks.append(("\n".join(f"• {c.text}{refs(c.cites)}" for c in a.criteria), _quote))
    lead = lead_citation(a)
    quote = a.quote
    if quote is not None:
        where_ = where(lead.title, lead.location, a.language)
        blocks.append((words["according"].format(where=where_), _bold))
        blocks.append((quoted(quote.text) + refs(quote.cites), _italic))
    others = [c for c in a.citations if c is not lead]
    if others:
        blocks.append((words["also"].format(refs=", ".join(f"[{c.n}]" for c in others)), _as_is))
    blocks.append((words["sources"], _bold))
    for c in a.citations:
        blocks.append((f"[{c.n}] {where(c.title, c.location, a.language)}", _as_is))
        if c is not lead:
            blocks.append((quoted(c.quote), _quote))
    return pack_blocks(blocks, limit)


def source(view: SourceView, limit: int = TELEGRAM_LIMIT) -> list[str]:
    c = view.citation
    blocks: list[Block] = [(f"[{c.n}] {where(c.title, c.location, view.language)}", _bold)]
    blocks.append((c.source, _italic))
    blocks += [(paragraph, _as_is) for paragraph in c.text.split("\n\n") if paragraph.strip()]
    return pack_blocks(blocks, limit)


def text(message: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Any other reply (help, errors, receipts) as escaped HTML; nothing for blank text."""
    return pack_blocks([(paragraph, _as_is) for paragraph in message.split("\n\n")], limit)


def reply(r: Reply, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """The messages of one reply. Only an answer reply shows the answer: a feedback receipt
    carries the answer it thanks for, but shows its sentence."""
    if r.kind == "answer" and r.answer is not None:
        return answer(r.answer, limit)
    if r.kind == "source" and r.source is not None:
        return source(r.source, limit)
    return text(r.text, limit)


def keyboard(r: Reply) -> InlineKeyboardMarkup | None:
    """👍/👎 and one button a source under an answer; nothing under other replies."""
    a = r.answer
    if r.kind != "answer" or a is None or a.abstained or r.turn_id is None:
        return None
    words = labels(a.language)
    rows = [
        [
            InlineKeyboardButton(words["helpful"], callback_data=f"fb:{r.turn_id}:1"),
            InlineKeyboardButton(words["unhelpful"], callback_data=f"fb:{r.turn_id}:0"),
        ]
    ]
    if a.citations:
        rows.append(
            [
                InlineKeyboardButton(
                    words["source"].format(n=c.n), callback_data=f"src:{r.turn_id}:{c.n}"
                )
                for c in a.citations
            ]
        )
    return InlineKeyboardMarkup(rows)


def pack_blocks(blocks: list[Block], limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Join rendered blocks into as few messages as fit, breaking only between blocks; no
    message at all when every block is blank (Telegram refuses an empty message)."""
    messages: list[str] = []
    current = ""
    for plain, markup in blocks:
        if not plain.strip():
            continue
        for piece in _pieces(plain, markup, limit):
            joined = f"{current}\n\n{piece}" if current else piece
            if len(joined) <= limit:
                current = joined
            else:
                messages.append(current)
                current = piece
    if current:
        messages.append(current)
    return messages


def _pieces(plain: str, markup: Callable[[str], str], limit: int) -> Iterator[str]:
    """One block, cut at line, sentence or word boundaries when its markup would not fit."""
    rendered = markup(plain)
    if len(rendered) <= limit:
        yield rendered
        return
    budget = max(1, limit - len(markup("")))  # the wrapper's tags are a fixed overhead
    for part in _cut(plain, budget):
        yield markup(part)


def _cut(plain: str, budget: int) -> Iterator[str]:
    """Pieces of `plain` whose escaped length is at most `budget`, cut where a reader would."""
    rest = plain
    while len(_esc(rest)) > budget:
        n = budget
        while (excess := len(_esc(rest[:n])) - budget) > 0:  # "&" → "&amp;" lengthens
            n -= excess
        window = rest[:n]
        cut = max(window.rfind("\n"), window.rfind(". ") + 1, window.rfind(" "))
        if cut <= n // 4:
            cut = n
        piece = rest[:cut].rstrip()
        if piece:
            yield piece
        rest = rest[cut:].lstrip()
    if rest:
        yield rest
