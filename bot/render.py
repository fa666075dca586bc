"""Answer → what each channel shows: plain text, Telegram HTML messages, a Teams Adaptive Card.

Every piece of source text is escaped for the channel it goes to, so a passage holding `<`, `&`,
`*` or `_` can never break a message.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from typing import Any

from bot.answer import Answer, Citation, localized_location
from bot.conversation import SourceView

TELEGRAM_LIMIT = 4096  # characters of one Telegram message, after entity parsing
CARD_QUOTE_CHARS = 400  # a cited passage is shown in full behind "Vis hele kilden"

HELP = {
    "nb": (
        "Jeg svarer på spørsmål om styring og roller i Oslo kommune, med sitater fra "
        "dokumentene jeg bygger på.\n\n"
        "Prøv for eksempel:\n"
        "• Hvem leder etatsstyringsmøtet?\n"
        "• Er et fagmøte styring?\n"
        "• Hva skal stå i et tildelingsbrev?\n"
        "• Hva står MRS for?\n\n"
        "Du kan spørre videre («og hvem skriver referatet?»).\n"
        "{source} N viser hele kilde N fra siste svar.\n"
        "{new} starter en ny samtale.\n"
        "{help} viser denne hjelpen."
    ),
    "en": (
        "I answer questions about governance and roles in Oslo kommune, quoting the documents "
        "I rely on (in Norwegian).\n\n"
        "For example:\n"
        "• Who chairs the agency governance meeting?\n"
        "• Is a fagmøte governance?\n"
        "• What goes in a tildelingsbrev?\n\n"
        "You can ask follow-up questions (“and who writes the minutes?”).\n"
        "{source} N shows all of source N from the last answer.\n"
        "{new} starts a new conversation.\n"
        "{help} shows this help."
    ),
}
WELCOME = {
    "nb": "Hei! Jeg er Styringsbot.",
    "en": "Hi! I am Styringsbot.",
}
UNKNOWN_COMMAND = {
    "nb": "Den kommandoen kjenner jeg ikke; {help} viser hva jeg kan.",
    "en": "I don't know that command; {help} shows what I can do.",
}
TEXT_ONLY = {
    "nb": "Jeg leser bare tekst. Skriv spørsmålet ditt, så svarer jeg.",
    "en": "I only read text. Type your question and I will answer.",
}
NEW_CONVERSATION = {
    "nb": "Ny samtale. Hva lurer du på?",
    "en": "New conversation. What would you like to know?",
}
THANKS = {
    True: {"nb": "Takk for tilbakemeldingen! 👍", "en": "Thanks for the feedback! 👍"},
    False: {
        "nb": "Takk! Svaret er merket som ikke godt nok, så det kan bli bedre. 👎",
        "en": "Thanks! The answer is marked as not good enough, so it can be improved. 👎",
    },
}
RATE_LIMITED = {
    "nb": "Du har stilt mange spørsmål på kort tid; vent {seconds} sekunder og prøv igjen.",
    "en": "You have asked many questions in a short time; wait {seconds} seconds and try again.",
}
NOT_ALLOWED = {
    "nb": "Beklager, denne boten er bare åpen for utvalgte chatter. Kontakt den som driver "
    "boten hvis du trenger tilgang.",
    "en": "Sorry, this bot is only open to selected chats. Contact whoever runs it for access.",
}
FAILED = {
    "nb": "Beklager, noe gikk galt da jeg skulle svare. Prøv igjen om litt.",
    "en": "Sorry, something went wrong while answering. Please try again shortly.",
}
LABELS = {
    "nb": {
        "sources": "Kilder:",
        "according": "Ifølge {where}:",
        "also": "Se også {refs}.",
        "helpful": "👍 Nyttig",
        "unhelpful": "👎 Ikke nyttig",
        "source": "Kilde {n}",
        "whole": "Vis hele kilden",
        "show": "Vis / skjul",
    },
    "en": {
        "sources": "Sources:",
        "according": "According to {where} (quoted in Norwegian):",
        "also": "See also {refs}.",
        "helpful": "👍 Helpful",
        "unhelpful": "👎 Not helpful",
        "source": "Source {n}",
        "whole": "Show the whole source",
        "show": "Show / hide",
    },
}


def say(messages: dict[str, str], language: str, **values: object) -> str:
    """A user-facing message in the user's language (bokmål when unsure)."""
    return messages.get(language, messages["nb"]).format(**values)


def help_text(language: str, *, prefix: str = "/") -> str:
    return say(HELP, language, source=f"{prefix}kilde", new=f"{prefix}ny", help=f"{prefix}hjelp")


def where(citation: Citation, language: str) -> str:
    location = localized_location(citation.location, language)
    return f"«{citation.title}»" + (f", {location}" if location else "")


# ---------------------------------------------------------------------------------------------
# Plain text (terminal, and the `text` fallback of other channels)


def plain(answer: Answer) -> str:
    return answer.text


def plain_source(view: SourceView) -> str:
    c = view.citation
    return f"[{c.n}] {where(c, view.language)}\n({c.source})\n\n{c.text}"


# ---------------------------------------------------------------------------------------------
# Telegram: HTML parse mode, messages of at most 4096 characters split between paragraphs


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


# A block is one paragraph: its plain text and how to mark it up. Splitting happens on the plain
# text, so a tag is never cut in two.
Block = tuple[str, Callable[[str], str]]


def _as_is(text: str) -> str:
    return _esc(text)


def _italic(text: str) -> str:
    return f"<i>{_esc(text)}</i>"


def _quote(text: str) -> str:
    return f"<blockquote expandable>{_esc(text)}</blockquote>"


def telegram_answer(answer: Answer, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """The answer as Telegram HTML messages: short answer, lead quote, then the sources."""
    if answer.abstained or not answer.citations:
        return pack_blocks([(answer.text, _as_is)], limit)
    labels = LABELS.get(answer.language, LABELS["nb"])
    lead, others = answer.citations[0], answer.citations[1:]
    blocks: list[Block] = [(answer.caveat, _italic)] if answer.caveat else []
    for header, lines in _sections(answer.guide_lines):
        if header:  # e.g. the criteria of a decision aid: folded, as they are long on a phone
            blocks += [(header, _bold), ("\n".join(lines), _quote)]
        else:
            blocks.append(("\n".join(lines), _as_is))
    blocks.append((labels["according"].format(where=where(lead, answer.language)), _bold))
    blocks.append((f"«{lead.quote}» [{lead.n}]", _italic))
    if others:
        refs = ", ".join(f"[{c.n}]" for c in others)
        blocks.append((labels["also"].format(refs=refs), _as_is))
    blocks.append((labels["sources"], _bold))
    for c in answer.citations:
        blocks.append((f"[{c.n}] {where(c, answer.language)}", _as_is))
        if c is not lead:
            blocks.append((f"«{c.quote}»", _quote))
    return pack_blocks(blocks, limit)


def _bold(text: str) -> str:
    return f"<b>{_esc(text)}</b>"


def _sections(lines: list[str]) -> list[tuple[str | None, list[str]]]:
    """The guide's lines in sections: a line ending in ":" heads the lines after it."""
    sections: list[tuple[str | None, list[str]]] = []
    for line in lines:
        if line.rstrip().endswith(":"):
            sections.append((line, []))
        elif sections:
            sections[-1][1].append(line)
        else:
            sections.append((None, [line]))
    return [(header, body) for header, body in sections if body or header is None]


def telegram_source(view: SourceView, limit: int = TELEGRAM_LIMIT) -> list[str]:
    c = view.citation
    blocks: list[Block] = [(f"[{c.n}] {where(c, view.language)}", _bold), (c.source, _italic)]
    blocks += [(paragraph, _as_is) for paragraph in re.split(r"\n\s*\n", c.text) if paragraph]
    return pack_blocks(blocks, limit)


def telegram_text(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Any other reply (help, errors) as escaped HTML."""
    return pack_blocks([(paragraph, _as_is) for paragraph in text.split("\n\n")], limit)


def pack_blocks(blocks: list[Block], limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Join rendered blocks into as few messages as fit, breaking only between blocks."""
    messages: list[str] = []
    current = ""
    for text, markup in blocks:
        if not text.strip():
            continue
        for piece in _pieces(text, markup, limit):
            joined = f"{current}\n\n{piece}" if current else piece
            if len(joined) <= limit:
                current = joined
            else:
                messages.append(current)
                current = piece
    if current:
        messages.append(current)
    return messages or [""]


def _pieces(text: str, markup: Callable[[str], str], limit: int) -> Iterator[str]:
    """One block, cut at line, sentence or word boundaries when its markup would not fit."""
    rendered = markup(text)
    if len(rendered) <= limit:
        yield rendered
        return
    budget = max(1, limit - len(markup("")))  # the wrapper's tags are a fixed overhead
    for part in _cut(text, budget):
        yield markup(part)


def _cut(text: str, budget: int) -> Iterator[str]:
    """Pieces of `text` whose escaped length is at most `budget`, cut where a reader would."""
    rest = text
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


# ---------------------------------------------------------------------------------------------
# Microsoft Teams: an Adaptive Card. Source text goes into TextRuns, which Teams never reads as
# markdown, so `*`, `_` and `[x](y)` in a document show as written.

CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.5"
ACTION_KEY = "styringsbot"  # marks our own Action.Submit payloads


def _runs(*parts: str | tuple[str, dict[str, Any]]) -> dict[str, Any]:
    runs = []
    for part in parts:
        text, style = (part, {}) if isinstance(part, str) else part
        runs.append({"type": "TextRun", "text": text, **style})
    return {"type": "RichTextBlock", "inlines": runs}


def teams_card(answer: Answer, turn_id: str) -> dict[str, Any]:
    """Lead text, the cited passages with title and location, and 👍/👎 buttons."""
    labels = LABELS.get(answer.language, LABELS["nb"])
    body: list[dict[str, Any]] = []
    if answer.abstained or not answer.citations:
        body.append(_runs(answer.text))
    else:
        lead = answer.citations[0]
        if answer.caveat:
            body.append(_runs((answer.caveat, {"italic": True})))
        for i, (header, lines) in enumerate(_sections(answer.guide_lines)):
            if header is None:
                body += [_runs(line) for line in lines]
            else:  # a decision aid's criteria: folded, long on a phone
                body += _folded(header, lines, f"section-{i}", labels["show"])
        body.append(
            _runs(
                (
                    labels["according"].format(where=where(lead, answer.language)),
                    {"weight": "Bolder"},
                ),
            )
            | {"spacing": "Medium" if answer.guide_lines else "None"}
        )
        body.append(_runs((f"«{lead.quote}»", {"italic": True}), f" [{lead.n}]"))
        body.append(
            {
                "type": "TextBlock",
                "text": labels["sources"],
                "weight": "Bolder",
                "spacing": "Medium",
                "separator": True,
            }
        )
        for c in answer.citations:
            body.append(_citation(c, answer.language, labels))
    actions = [
        _submit(labels["helpful"], {"action": "feedback", "turn": turn_id, "helpful": True}),
        _submit(labels["unhelpful"], {"action": "feedback", "turn": turn_id, "helpful": False}),
    ]
    return {
        "type": "AdaptiveCard",
        "$schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "body": body,
        "actions": actions,
        "msteams": {"width": "Full"},
    }


def _folded(header: str, lines: list[str], id_: str, show: str) -> list[dict[str, Any]]:
    return [
        _runs((header, {"weight": "Bolder"})) | {"spacing": "Medium"},
        {"type": "Container", "id": id_, "isVisible": False, "items": [_runs(x) for x in lines]},
        {"type": "ActionSet", "actions": [_toggle(show, id_)]},
    ]


def _toggle(title: str, target: str) -> dict[str, Any]:
    return {"type": "Action.ToggleVisibility", "title": title, "targetElements": [target]}


def _citation(c: Citation, language: str, labels: dict[str, str]) -> dict[str, Any]:
    full = c.text if len(c.text) <= 20_000 else c.text[:20_000] + " …"
    return {
        "type": "Container",
        "spacing": "Small",
        "items": [
            _runs((f"[{c.n}] ", {"weight": "Bolder"}), where(c, language)),
            _runs((f"«{_clip(c.quote, CARD_QUOTE_CHARS)}»", {"isSubtle": True})),
            {
                "type": "ActionSet",
                "actions": [
                    {
                        "type": "Action.ShowCard",
                        "title": labels["whole"],
                        "card": {
                            "type": "AdaptiveCard",
                            "version": CARD_VERSION,
                            "body": [_runs(p) for p in re.split(r"\n\s*\n", full) if p.strip()],
                        },
                    }
                ],
            },
        ],
    }


def _submit(title: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Action.Submit", "title": title, "data": {ACTION_KEY: data}}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def teams_source_card(view: SourceView) -> dict[str, Any]:
    c = view.citation
    return {
        "type": "AdaptiveCard",
        "$schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "body": [
            _runs((f"[{c.n}] ", {"weight": "Bolder"}), where(c, view.language)),
            _runs((c.source, {"isSubtle": True})),
            *[_runs(p) for p in re.split(r"\n\s*\n", c.text) if p.strip()],
        ],
        "msteams": {"width": "Full"},
    }
