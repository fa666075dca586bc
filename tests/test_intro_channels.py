"""The onboarding course through each channel's real adapter, with a restart in the middle.

Telegram: python-telegram-bot's Application against the fake Bot API server of test_telegram.py
(Telegram's servers cannot run here), pressing the inline buttons as callback queries. Teams: the
`serve` app with the Microsoft 365 Agents SDK adapter, posting activities with the cards' own
Action.Submit data, the Bot Connector a capture server (test_teams.py). HTTP: `POST /api/intro`.
The terminal chat is run as a process in test_cli.py. Everything else is real: the seed index,
the embedding model and an SQLite store file shared across the restart.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from app_server import Server, call
from conftest import SEED_KNOWLEDGE
from test_teams import (
    BOT,
    PERSONAL,
    Captured,
    Teams,
    card_of,
    card_text,
    converse,
    of_type,
)
from test_telegram import (
    CHAT,
    User,
    conversation,
    run_bot,
    telegram_settings,
    visible_text,
)

from bot.conversation import ConversationService
from bot.guide import Guide
from bot.store import Store

COURSE = Guide.load(SEED_KNOWLEDGE).course
assert COURSE is not None
TOTAL = len(COURSE.steps)
HALF = TOTAL // 2


def wrong(step_number: int) -> int:
    """A wrong choice of a step (1-based)."""
    step = COURSE.steps[step_number - 1]
    return next(n for n in range(1, len(step.choices) + 1) if n != step.right)


# -- Telegram ---------------------------------------------------------------------------------


def test_the_course_in_telegram_with_buttons_and_a_restart(seed_engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = telegram_settings(tmp_path / "data")
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    seen: dict[str, Any] = {}

    async def first_half(user: User) -> None:
        (hello,) = await user.send(user.message("/start"))
        assert [b["callback_data"] for b in hello.buttons] == ["intro"]
        _, (start, lesson) = await user.press("intro", on=hello, replies=2)
        assert "12 korte steg" in visible_text(start.text) and not start.buttons
        seen["first"] = lesson
        for number in range(1, HALF + 1):
            step = COURSE.steps[number - 1]
            assert f"steg {number} av {TOTAL}" in visible_text(lesson.text)
            data = [b["callback_data"] for b in lesson.buttons]
            choices = [f"ch:{step.id}:{n}" for n in range(1, len(step.choices) + 1)]
            assert data[: len(choices)] == choices
            assert all(d.startswith("src:") for d in data[len(choices) :]) and data[len(choices) :]
            choice = wrong(1) if number == 1 else step.right
            _, (verdict, lesson) = await user.press(f"ch:{step.id}:{choice}", on=lesson, replies=2)
            seen.setdefault("verdicts", []).append(verdict)
        seen["source"] = await user.press(
            seen["verdicts"][0].buttons[0]["callback_data"], on=seen["verdicts"][0], replies=1
        )

    async def second_half(user: User) -> None:
        start, lesson = await user.send(user.message("/intro"), lambda new: len(new) >= 2)
        assert f"steg {HALF + 1} av {TOTAL}" in visible_text(lesson.text)
        assert "Velkommen tilbake" in visible_text(start.text)
        for number in range(HALF + 1, TOTAL + 1):
            step = COURSE.steps[number - 1]
            # the verdict, then the next lesson or the course's end
            _, replies = await user.press(f"ch:{step.id}:{step.right}", on=lesson, replies=2)
            lesson = replies[-1]
        seen["end"] = replies

    first = ConversationService(seed_engine, Store(url))
    try:
        run_bot(first, settings, first_half)
    finally:
        first.close()
    again = ConversationService(seed_engine, Store(url))
    try:
        run_bot(again, settings, second_half)
        figures = again.store.course_figures(COURSE.id)
        progress = again.store.progress(conversation(CHAT))
    finally:
        again.close()

    wrong_verdict = visible_text(seen["verdicts"][0].text)
    right_text = COURSE.steps[0].choices[COURSE.steps[0].right - 1].text
    assert wrong_verdict.startswith("❌ Ikke helt") and right_text in wrong_verdict
    assert "Les mer i «" in wrong_verdict
    assert all(visible_text(v.text).startswith("✅ Riktig") for v in seen["verdicts"][1:])
    _, (passage,) = seen["source"]
    assert "lysbilde" in visible_text(passage.text)
    verdict, done = seen["end"]
    assert visible_text(verdict.text).startswith("✅")
    assert f"riktig på {TOTAL - 1} av {TOTAL}" in visible_text(done.text)
    assert (figures.started, figures.finished) == (1, 1)
    assert figures.answers[COURSE.steps[0].id] == (1, 1)
    assert progress is not None and progress.position == TOTAL and progress.finished


# -- Teams ------------------------------------------------------------------------------------


async def _messages(teams: Teams, count: int, wait: float = 30.0) -> list[dict[str, Any]]:
    """The next `count` messages the bot sent to the Bot Connector."""
    deadline = time.monotonic() + wait
    while True:
        new = [c for c in teams.captured[teams.seen :] if c.body.get("type") == "message"]
        if len(new) >= count or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    found: list[Captured] = [
        c for c in teams.captured[teams.seen :] if c.body.get("type") == "message"
    ]
    teams.seen = len(teams.captured)
    assert len(found) == count, [c.body for c in found]
    return [c.body for c in found]


async def _press(teams: Teams, data: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Press a card's Action.Submit: Teams posts its data as the activity's value."""
    status, body = await teams.post(teams.activity(None, value=data))
    assert status == 202, body
    return await _messages(teams, count)


def _choice(card: dict[str, Any], number: int) -> dict[str, Any]:
    (button,) = [b for b in of_type(card, "Action.Submit") if b["title"] == str(number)]
    return button["data"]


def test_the_course_in_teams_with_card_actions_and_a_restart(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server()
    seen: dict[str, Any] = {}

    async def first_half(teams: Teams) -> None:
        update = teams.activity(
            type="conversationUpdate", membersAdded=[BOT], conversation=PERSONAL
        )
        status, _ = await teams.post(update)
        assert status == 202
        (welcome,) = await _messages(teams, 1)
        (start,) = of_type(card_of(welcome), "Action.Submit")
        text, lesson = await _press(teams, start["data"], 2)
        assert "12 korte steg" in text["text"]
        for number in range(1, HALF + 1):
            card = card_of(lesson)
            step = COURSE.steps[number - 1]
            assert f"steg {number} av {TOTAL}" in card_text(card)
            assert card["lang"] == "nb-NO" and step.question in card["fallbackText"]
            tooltips = [b.get("tooltip") for b in of_type(card, "Action.Submit")]
            assert tooltips == [c.text for c in step.choices]  # a screen reader hears each
            shown = [s["title"] for s in of_type(card, "Action.ShowCard")]
            assert shown and all(t.startswith("Vis hele kilde") for t in shown)
            choice = wrong(1) if number == 1 else step.right
            verdict, lesson = await _press(teams, _choice(card, choice), 2)
            seen.setdefault("verdicts", []).append(card_of(verdict))

    async def second_half(teams: Teams) -> None:
        status, _ = await teams.post(teams.activity("intro"))
        assert status == 202
        text, lesson = await _messages(teams, 2)
        assert "Velkommen tilbake" in text["text"]
        for number in range(HALF + 1, TOTAL + 1):
            step = COURSE.steps[number - 1]
            card = card_of(lesson)
            assert f"steg {number} av {TOTAL}" in card_text(card)
            verdict, lesson = await _press(teams, _choice(card, step.right), 2)
        seen["end"] = (card_of(verdict), lesson)

    converse(server, first_half)
    server.restart()  # a new process: only the store file is left
    converse(server, second_half)

    wrong_card = seen["verdicts"][0]
    right_text = COURSE.steps[0].choices[COURSE.steps[0].right - 1].text
    assert "❌ Ikke helt" in card_text(wrong_card) and right_text in card_text(wrong_card)
    (passage,) = of_type(wrong_card, "Action.ShowCard")  # the passage it rests on, in full
    quote = COURSE.steps[0].explained_by().quote
    assert quote.split()[0] in card_text(passage["card"])
    verdict, done = seen["end"]
    assert "✅" in card_text(verdict)
    assert f"riktig på {TOTAL - 1} av {TOTAL}" in done["text"]
    figures = server.store.course_figures(COURSE.id)
    assert (figures.started, figures.finished) == (1, 1)


# -- HTTP -------------------------------------------------------------------------------------


def test_the_course_over_the_http_api(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server()

    async def scenario(client: aiohttp.ClientSession) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        seen["no_id"] = await call(client, "POST", "/api/intro", json={})
        seen["bad"] = await call(
            client, "POST", "/api/intro", json={"conversation_id": "k", "answer": {"step": 1}}
        )
        seen["start"] = await call(
            client, "POST", "/api/intro", json={"conversation_id": "k", "language": "en"}
        )
        step = COURSE.steps[0]
        answer = {"step": step.id, "choice": wrong(1)}
        seen["answered"] = await call(
            client, "POST", "/api/intro", json={"conversation_id": "k", "answer": answer}
        )
        seen["resumed"] = await call(client, "POST", "/api/intro", json={"conversation_id": "k"})
        return seen

    seen = server.run(scenario)
    assert seen["no_id"][0] == 400 and "conversation_id" in seen["no_id"][1]["error"]
    assert seen["bad"][0] == 400 and '"answer"' in seen["bad"][1]["error"]
    status, start = seen["start"]
    assert status == 200 and start["verdict"] is None and not start["finished"]
    lesson = start["lesson"]
    assert lesson["number"] == 1 and lesson["total"] == TOTAL and len(lesson["choices"]) == 3
    assert lesson["text"] == COURSE.steps[0].english["text"]
    assert {"n", "title", "location", "text", "quote"} <= set(lesson["citations"][0])
    status, answered = seen["answered"]
    verdict = answered["verdict"]
    assert (
        status == 200 and verdict["right"] is False and verdict["answer"] == COURSE.steps[0].right
    )
    assert verdict["citation"]["location"] and answered["lesson"]["number"] == 2
    status, resumed = seen["resumed"]
    assert resumed["lesson"]["number"] == 2 and "step 2 of" in resumed["text"]
