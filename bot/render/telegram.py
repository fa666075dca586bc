"""Telegram: HTML parse mode, messages of at most 4096 characters split between paragraphs.

The long parts fold away on a phone: the cited passages and a decision aid's criteria sit in
expandable quotes. Buttons give 👍/👎 and each source.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.messages import CAVEAT, NO_ANSWER, RELATED, course_labels, labels, say, where
from bot.render import course_parts, lead_citation, quoted, refs, verdict_line
from ingest.clean import strip_unsafe

if TYPE_CHECKING:
    from bot.answer import Answer
    from bot.conversation import Reply, SourceView
    from bot.intro import Lesson, Verdict

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
    if r.kind == "lesson":
        return [part for parts, _ in course(r, limit) for part in parts]
    return text(r.text, limit)


def keyboard(r: Reply) -> InlineKeyboardMarkup | None:
    """👍/👎 and one button a source under an answer, "Kom i gang" under a welcome that offers
    the course; nothing under other replies (a course reply has its own: `course`)."""
    if r.kind == "welcome":
        return welcome_keyboard(r)
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


# -- the onboarding course ---------------------------------------------------------------------

Sent = tuple[list[str], InlineKeyboardMarkup | None]  # messages, and the buttons under the last


def course(r: Reply, limit: int = TELEGRAM_LIMIT) -> list[Sent]:
    """A course reply as messages, each with its own buttons: the verdict (with a button to the
    passage it rests on), the reply's sentence, then the next lesson (a button for each choice
    and each source)."""
    sent: list[Sent] = []
    for part in course_parts(r):
        if part == "verdict" and r.verdict is not None:
            sent.append((verdict(r.verdict, limit), _verdict_keyboard(r.verdict)))
        elif part == "lesson" and r.lesson is not None:
            sent.append((lesson(r.lesson, limit), lesson_keyboard(r.lesson)))
        elif part == "text":
            sent.append((text(r.text, limit), None))
    return [(parts, markup) for parts, markup in sent if parts]


def lesson(x: Lesson, limit: int = TELEGRAM_LIMIT) -> list[str]:
    words = course_labels(x.language)
    heading = words["step"].format(course=x.course, number=x.number, total=x.total)
    blocks: list[Block] = [(heading, _italic), (x.title, _bold)]
    blocks.append((x.text + refs(tuple(c.n for c in x.citations)), _as_is))
    if x.citations:
        lines = [f"[{c.n}] {where(c.title, c.location, x.language)}" for c in x.citations]
        blocks.append((labels(x.language)["sources"] + "\n" + "\n".join(lines), _as_is))
    blocks.append((f"{words['check']} {x.question}", _bold))
    blocks.append(("\n".join(f"{n}. {c}" for n, c in enumerate(x.choices, 1)), _as_is))
    return pack_blocks(blocks, limit)


def verdict(v: Verdict, limit: int = TELEGRAM_LIMIT) -> list[str]:
    words = course_labels(v.language)
    first = verdict_line(v)
    blocks: list[Block] = [(first, _bold), (v.explanation, _as_is)]
    if v.citation is not None:
        c = v.citation
        blocks.append((words["read"].format(where=where(c.title, c.location, v.language)), _italic))
    return pack_blocks(blocks, limit)


def lesson_keyboard(x: Lesson) -> InlineKeyboardMarkup:
    """One button a choice (its number: the choices are written out above), then one a source."""
    rows = [
        [
            InlineKeyboardButton(str(n), callback_data=f"ch:{x.step}:{n}")
            for n in range(1, len(x.choices) + 1)
        ]
    ]
    if x.citations and x.turn_id:
        words = labels(x.language)
        buttons = [
            InlineKeyboardButton(
                words["source"].format(n=c.n), callback_data=f"src:{x.turn_id}:{c.n}"
            )
            for c in x.citations
        ]
        rows += [buttons[i : i + 3] for i in range(0, len(buttons), 3)]
    return InlineKeyboardMarkup(rows)


def _verdict_keyboard(v: Verdict) -> InlineKeyboardMarkup | None:
    if v.citation is None or v.turn_id is None:
        return None
    title = course_labels(v.language)["passage"]
    data = f"src:{v.turn_id}:{v.citation.n}"
    return InlineKeyboardMarkup([[InlineKeyboardButton(title, callback_data=data)]])


def welcome_keyboard(r: Reply) -> InlineKeyboardMarkup | None:
    """Under the welcome: a button that starts the course, when there is one."""
    if r.kind != "welcome" or not r.course_steps:
        return None
    title = course_labels(r.language)["start"]
    return InlineKeyboardMarkup([[InlineKeyboardButton(title, callback_data="intro")]])


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
