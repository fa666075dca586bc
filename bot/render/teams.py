"""Microsoft Teams: an Adaptive Card (1.5) drawn from the structured Answer.

Source text goes into TextRuns, which Teams never reads as markdown, so `*`, `_` and `[x](y)` in
a document show as written; only fixed labels go into TextBlocks. Each card carries `fallbackText`
(clients that cannot draw cards), `speak` (screen readers, voice) and `lang`, and every control
names the source it is about.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.messages import CAVEAT, NO_ANSWER, RELATED, labels, say, where
from bot.render import lead_citation, plain, quoted, refs
from ingest.clean import strip_unsafe

if TYPE_CHECKING:
    from bot.answer import Answer, Citation
    from bot.conversation import Reply, SourceView

CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.5"
ACTION_KEY = "styringsbot"  # marks our own Action.Submit payloads
CARD_QUOTE_CHARS = 400  # a cited passage is shown in full behind "Vis hele kilde N"
SPEAK_CHARS = 600
LANG = {"nb": "nb-NO", "en": "en-GB"}


def _runs(*parts: str | tuple[str, dict[str, Any]]) -> dict[str, Any]:
    runs = []
    for part in parts:
        text, style = (part, {}) if isinstance(part, str) else part
        runs.append({"type": "TextRun", "text": strip_unsafe(text), **style})
    return {"type": "RichTextBlock", "inlines": runs}


def _card(
    body: list[dict[str, Any]],
    language: str,
    fallback: str,
    speak: str,
    actions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "lang": LANG.get(language, "nb-NO"),
        "fallbackText": fallback,
        "speak": _clip(strip_unsafe(speak), SPEAK_CHARS),
        "body": body,
        "msteams": {"width": "Full"},
    }
    if actions:
        card["actions"] = actions
    return card


def card(a: Answer, turn_id: str, voted: bool | None = None) -> dict[str, Any]:
    """The answer: a caveat when unsure, the guide's words, the criteria behind a toggle, the lead
    quote, the sources (each with its whole passage behind a button), and 👍/👎 — or, once
    voted, what the user answered."""
    words = labels(a.language)
    body: list[dict[str, Any]] = []
    if a.abstained or not a.citations:
        body.append(_runs(say(NO_ANSWER, a.language)))
        if a.related:
            body.append(_runs((say(RELATED, a.language), {"weight": "Bolder"})))
            body += [_runs(f"• {where(r.title, r.location, a.language)}") for r in a.related]
    else:
        if not a.confident:
            body.append(_runs((say(CAVEAT, a.language), {"italic": True})))
        own = [s for s in a.statements if not s.verbatim]
        bullet = "• " if a.criteria else ""
        body += [_runs(f"{bullet}{s.text}{refs(s.cites)}") for s in own]
        if a.criteria:  # long on a phone: folded behind a toggle
            body += _folded(
                words["criteria"],
                [f"• {c.text}{refs(c.cites)}" for c in a.criteria],
                f"criteria-{turn_id}",
                words["show"],
            )
        lead = lead_citation(a)
        quote = a.quote
        if quote is not None:
            where_ = where(lead.title, lead.location, a.language)
            body.append(
                _runs((words["according"].format(where=where_), {"weight": "Bolder"}))
                | {"spacing": "Medium" if own else "None"}
            )
            body.append(_runs((quoted(quote.text), {"italic": True}), refs(quote.cites)))
        body.append(
            {
                "type": "TextBlock",
                "text": words["sources"],
                "weight": "Bolder",
                "spacing": "Medium",
                "separator": True,
            }
        )
        body += [_citation(c, a.language) for c in a.citations]
    actions = None
    if voted is not None:
        vote = words["helpful"] if voted else words["unhelpful"]
        body.append(
            {"type": "TextBlock", "text": words["voted"].format(vote=vote), "isSubtle": True}
        )
    elif not a.abstained:
        actions = [
            _submit(words["helpful"], {"action": "feedback", "turn": turn_id, "helpful": True}),
            _submit(words["unhelpful"], {"action": "feedback", "turn": turn_id, "helpful": False}),
        ]
    return _card(body, a.language, plain.answer(a), _speak(a), actions)


def _speak(a: Answer) -> str:
    """What a screen reader or voice says first: the answer, not the list of sources."""
    if a.abstained or not a.statements:
        return say(NO_ANSWER, a.language)
    parts = [] if a.confident else [say(CAVEAT, a.language)]
    parts += [s.text for s in a.statements]
    return " ".join(parts)


def _folded(header: str, lines: list[str], id_: str, show: str) -> list[dict[str, Any]]:
    return [
        _runs((header, {"weight": "Bolder"})) | {"spacing": "Medium"},
        {"type": "Container", "id": id_, "isVisible": False, "items": [_runs(x) for x in lines]},
        {"type": "ActionSet", "actions": [_toggle(f"{show}: {header.rstrip(':')}", id_)]},
    ]


def _toggle(title: str, target: str) -> dict[str, Any]:
    return {"type": "Action.ToggleVisibility", "title": title, "targetElements": [target]}


def _citation(c: Citation, language: str) -> dict[str, Any]:
    words = labels(language)
    full = c.text if len(c.text) <= 20_000 else c.text[:20_000] + " …"
    return {
        "type": "Container",
        "spacing": "Small",
        "items": [
            _runs((f"[{c.n}] ", {"weight": "Bolder"}), where(c.title, c.location, language)),
            _runs((quoted(_clip(c.quote, CARD_QUOTE_CHARS)), {"isSubtle": True})),
            {
                "type": "ActionSet",
                "actions": [
                    {
                        "type": "Action.ShowCard",
                        # Each button names its source: a screen reader hears them apart.
                        "title": words["whole"].format(n=c.n),
                        "card": {
                            "type": "AdaptiveCard",
                            "version": CARD_VERSION,
                            "body": [_runs(p) for p in full.split("\n\n") if p.strip()],
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


def source_card(view: SourceView) -> dict[str, Any]:
    c = view.citation
    heading = labels(view.language)["source_of"].format(
        n=c.n, where=where(c.title, c.location, view.language)
    )
    body = [
        _runs((f"[{c.n}] ", {"weight": "Bolder"}), where(c.title, c.location, view.language)),
        _runs((c.source, {"isSubtle": True})),
        *[_runs(p) for p in c.text.split("\n\n") if p.strip()],
    ]
    return _card(body, view.language, plain.source(view), heading)


def reply(r: Reply) -> dict[str, Any]:
    """{"card": …} for an answer or a source, {"text": …} for everything else (a feedback
    receipt carries its answer too, but says thanks: the channel shows the vote on the card)."""
    from bot.conversation import ReplyKind

    if r.kind is ReplyKind.ANSWER and r.answer is not None:
        return {"card": card(r.answer, r.turn_id or ""), "summary": summary(r.answer)}
    if r.kind is ReplyKind.SOURCE and r.source is not None:
        return {"card": source_card(r.source)}
    return {"text": r.text}


def summary(a: Answer) -> str:
    """The notification preview: the first line of the answer."""
    first = plain.answer(a).strip().splitlines()[0]
    return _clip(first, 120)
