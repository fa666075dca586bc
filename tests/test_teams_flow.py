"""Teams with Microsoft's own test harness: `TestFlow` over `TestAdapter` (microsoft-agents-testing)
drives `TeamsBot(...).app` turn by turn, with the real conversation service and seed index.

The adapter stands in for the channel: what the bot sends lands in its queue, and an update
replaces the queued activity with the same id (it records nothing else). Timing is real, so a
slow answer shows the SDK's typing indicator — once, since the bot sends none of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from app_server import SlowEngine
from conftest import make_settings
from microsoft_agents.activity import Activity, ActivityTypes
from microsoft_agents.testing import TestAdapter, TestFlow
from test_teams import (
    CARD_TYPE,
    FOLLOW_UP,
    LEAD,
    QUESTION,
    SLOW_SECONDS,
    assert_textblocks_are_labels,
    card_text,
    card_texts,
    feedback,
    of_type,
)

from bot import messages
from bot.channels.teams import TeamsBot
from bot.commands import help_text
from bot.conversation import ConversationService
from bot.store import Store

Bot = Callable[..., tuple[TeamsBot, ConversationService]]


@pytest.fixture
def make_bot(seed_engine: Any, seed_knowledge: Path, tmp_path: Path) -> Iterator[Bot]:
    """`make_bot(delay=…, engine=…)`: a TeamsBot over a fresh service and store."""
    services: list[ConversationService] = []

    def make(delay: float = 0.0, engine: Any = None) -> tuple[TeamsBot, ConversationService]:
        engine = engine or (SlowEngine(seed_engine, delay) if delay else seed_engine)
        store = Store(f"sqlite:///{tmp_path / f'store{len(services)}.sqlite3'}")
        service = ConversationService(engine, store)
        services.append(service)
        settings = make_settings(tmp_path / "data", seed_knowledge, teams_allow_anonymous=True)
        return TeamsBot(service, settings), service

    yield make
    for service in services:
        service.close()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def flow(bot: TeamsBot) -> tuple[TestFlow, TestAdapter]:
    adapter = TestAdapter(channel_id="msteams")
    return TestFlow(adapter, bot.app.on_turn), adapter


def answer_card(*words: str) -> Callable[[Activity], None]:
    """A validator: the reply is one Adaptive Card whose text holds every one of `words`."""

    def validate(reply: Activity) -> None:
        assert reply.type == ActivityTypes.message, reply
        assert reply.attachments and len(reply.attachments) == 1, reply
        attachment = reply.attachments[0]
        assert attachment.content_type == CARD_TYPE
        card = attachment.content
        assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
        assert card["fallbackText"] and card["speak"] and card["lang"] == "nb-NO"
        assert_textblocks_are_labels(card)
        text = card_text(card).lower()
        assert all(word.lower() in text for word in words), (words, text)
        assert len(of_type(card, "Action.Submit")) == 2  # 👍/👎

    return validate


def test_a_slow_answer_shows_the_typing_indicator_once(make_bot: Bot):
    bot, _ = make_bot(delay=SLOW_SECONDS)

    async def scenario() -> None:
        test, _ = flow(bot)
        await (
            test.send(QUESTION)
            .assert_typing_indicator()
            .assert_reply(answer_card(LEAD), timeout=10)
            .assert_no_more_replies()
            .start_test()
        )

    run(scenario)


def test_a_quick_answer_comes_without_typing(make_bot: Bot):
    bot, _ = make_bot()

    async def scenario() -> None:
        test, _ = flow(bot)
        await (
            test.send(QUESTION)
            .assert_reply(answer_card(LEAD))
            .assert_no_more_replies()
            .start_test()
        )

    run(scenario)


def test_a_follow_up(make_bot: Bot):
    bot, _ = make_bot()

    async def scenario() -> None:
        test, _ = flow(bot)
        await (
            test.send(QUESTION)
            .assert_reply(answer_card(LEAD))
            .send(FOLLOW_UP)
            .assert_reply(answer_card("referat"))
            .start_test()
        )

    run(scenario)


def test_help_in_either_language(make_bot: Bot):
    bot, _ = make_bot()

    async def scenario() -> None:
        test, _ = flow(bot)
        await (
            test.test("hjelp", help_text("nb", "teams"))
            .test("help", help_text("en", "teams"))
            .test("kilde 1", messages.NO_SOURCES_YET["nb"])
            .assert_no_more_replies()
            .start_test()
        )

    run(scenario)


def test_the_bot_added_to_a_chat_says_welcome(make_bot: Bot):
    bot, _ = make_bot()

    async def scenario() -> None:
        test, adapter = flow(bot)

        def welcome(reply: Activity) -> None:
            card = reply.attachments[0].content
            assert card["fallbackText"].startswith(messages.WELCOME["nb"])
            assert card["fallbackText"].endswith(help_text("nb", "teams"))
            actions = of_type(card, "Action.Submit")
            assert [a["data"] for a in actions] == [{"styringsbot": {"action": "intro"}}]

        await (
            test.send_conversation_update([adapter.conversation.agent])
            .assert_reply(welcome)
            .send_conversation_update()  # the user: nothing to say
            .assert_no_more_replies()
            .start_test()
        )

    run(scenario)


@pytest.mark.parametrize("helpful", [True, False])
def test_feedback_updates_the_card_in_place(make_bot: Bot, helpful: bool):
    bot, service = make_bot()

    async def scenario() -> None:
        test, adapter = flow(bot)
        await test.send(QUESTION).start_test()
        [sent] = adapter.activity_queue  # left in the queue, so an update can replace it
        card = sent.attachments[0].content
        press = Activity(type=ActivityTypes.message, value=feedback(card, helpful))
        press.reply_to_id = sent.id  # as Teams sends an Action.Submit: from that card
        await TestFlow(adapter, bot.app.on_turn).send(press).start_test()

        [updated] = adapter.activity_queue  # replaced in place; nothing new was sent
        assert updated.id == sent.id
        after = updated.attachments[0].content
        words = messages.labels("nb")
        vote = words["voted"].format(vote=words["helpful" if helpful else "unhelpful"])
        assert vote in card_texts(after)
        assert not of_type(after, "Action.Submit")
        assert LEAD in card_text(after)

    run(scenario)
    assert [e.kind for e in service.store.events("up", "down")] == ["up" if helpful else "down"]


def test_a_failing_turn_gets_a_polite_reply_and_one_logged_error(
    make_bot: Bot, caplog: pytest.LogCaptureFixture
):
    class Broken:
        generation = 0

        def ask(self, *_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("the index is gone")

    bot, _ = make_bot(engine=Broken())

    async def scenario() -> None:
        test, _ = flow(bot)
        await test.test(QUESTION, messages.FAILED["nb"]).assert_no_more_replies().start_test()

    run(scenario)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info, errors  # one traceback: a bug to look into
    assert "the index is gone" in caplog.text
