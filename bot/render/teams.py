"""Microsoft Teams: an Adaptive Card (1.5) drawn from the structured Answer.

Source text goes into TextRuns, which Teams never reads as markdown, so `*`, `_` and `[x](y)` in
a document show as written; only fixed labels go into TextBlocks. Each card carries `fallbackText`
(clients that cannot draw cards), `speak` (screen readers, voice) and `lang`, and every control
names the source it is about.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.messages import CAVEAT, NO_ANSWER, RELATED, course_labels, labels, say, where
from bot.render import course_parts, lead_citation, plain, quoted, refs, verdict_line
from ingest.clean import strip_unsafe

if TYPE_CHECKING:
    from bot.answer import Answer, Citation
    from bot.conversation import Reply, SourceView
    from bot.intro import Lesson, Verdict

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
    return {
        "type": "Container",
        "spacing": "Small",
        "items": [
            _runs((f"[{c.n}] ", {"weight": "Bolder"}), where(c.title, c.location, language)),
            _runs((quoted(_clip(c.quote, CARD_QUOTE_CHARS)), {"isSubtle": True})),
            # Each button names its source: a screen reader hears them apart.
            _whole(c, labels(language)["whole"].format(n=c.n)),
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


# -- the onboarding course ---------------------------------------------------------------------


def lesson_card(x: Lesson) -> dict[str, Any]:
    """A course step: the idea, its sources (each passage behind a button), the check question
    and a button a choice (its number; the choice is written out above and is the tooltip)."""
    words = course_labels(x.language)
    heading = words["step"].format(course=x.course, number=x.number, total=x.total)
    body: list[dict[str, Any]] = [
        _runs((heading, {"isSubtle": True})),
        _runs((x.title, {"weight": "Bolder", "size": "Medium"})),
        _runs(x.text + refs(tuple(c.n for c in x.citations))),
    ]
    if x.citations:
        body.append(
            {
                "type": "TextBlock",
                "text": labels(x.language)["sources"],
                "weight": "Bolder",
                "spacing": "Medium",
            }
        )
        body += [_passage_button(c, x.language) for c in x.citations]
    body.append(
        _runs((f"{words['check']} {x.question}", {"weight": "Bolder"})) | {"spacing": "Medium"}
    )
    body += [_runs(f"{n}. {choice}") for n, choice in enumerate(x.choices, 1)]
    actions = [
        _submit(str(n), {"action": "intro_choice", "step": x.step, "choice": n})
        | {"tooltip": strip_unsafe(choice)}
        for n, choice in enumerate(x.choices, 1)
    ]
    fallback = plain.lesson(x)
    speak = f"{x.title}. {x.text} {x.question} " + " ".join(
        f"{n}: {c}." for n, c in enumerate(x.choices, 1)
    )
    return _card(body, x.language, fallback, speak, actions)


def verdict_card(v: Verdict) -> dict[str, Any]:
    """Right, or the right answer; why, and the passage it rests on behind a button."""
    words = course_labels(v.language)
    first = verdict_line(v)
    body = [_runs((first, {"weight": "Bolder"})), _runs(v.explanation)]
    if v.citation is not None:
        c = v.citation
        read = words["read"].format(where=where(c.title, c.location, v.language))
        body.append(_runs((read, {"isSubtle": True})))
        body.append(_whole(c, words["passage"]))
    return _card(body, v.language, plain.verdict(v), f"{first} {v.explanation}")


def _passage_button(c: Citation, language: str) -> dict[str, Any]:
    return {
        "type": "Container",
        "spacing": "Small",
        "items": [
            _runs((f"[{c.n}] ", {"weight": "Bolder"}), where(c.title, c.location, language)),
            _whole(c, labels(language)["whole"].format(n=c.n)),
        ],
    }


def _whole(c: Citation, title: str) -> dict[str, Any]:
    """A button that shows the whole passage in the card."""
    full = c.text if len(c.text) <= 20_000 else c.text[:20_000] + " …"
    return {
        "type": "ActionSet",
        "actions": [
            {
                "type": "Action.ShowCard",
                "title": title,
                "card": {
                    "type": "AdaptiveCard",
                    "version": CARD_VERSION,
                    "body": [_runs(p) for p in full.split("\n\n") if p.strip()],
                },
            }
        ],
    }


def welcome_card(r: Reply) -> dict[str, Any]:
    """The welcome, with a button that starts the course."""
    body = [_runs(line) for line in r.text.split("\n") if line.strip()]
    start = _submit(course_labels(r.language)["start"], {"action": "intro"})
    return _card(body, r.language, r.text, r.text, [start])


def activities(r: Reply) -> list[dict[str, Any]]:
    """What a reply is sent as, in order: each {"card": …} or {"text": …}. A course reply is the
    verdict card, its sentence and the next lesson's card; every other reply is one."""
    if r.kind == "lesson":
        shown: list[dict[str, Any]] = []
        for part in course_parts(r):
            if part == "verdict" and r.verdict is not None:
                shown.append({"card": verdict_card(r.verdict)})
            elif part == "lesson" and r.lesson is not None:
                shown.append({"card": lesson_card(r.lesson), "summary": r.lesson.title})
            elif part == "text":
                shown.append({"text": r.text})
        return shown
    if r.kind == "welcome" and r.course_steps:
        return [{"card": welcome_card(r), "summary": r.text.splitlines()[0]}]
    return [reply(r)]


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
