"""The Telegram channel end to end, through python-telegram-bot's own networking stack.

Telegram's servers cannot be reached from the tests, so `FakeBotAPI` — a small aiohttp server on
127.0.0.1 — stands in for them, and only for them: it speaks the Bot API over HTTP (getMe,
getUpdates long polling, sendMessage, …), queues the updates a user would send, records every
call the bot makes, and can fail calls the way Telegram does (429 with retry_after, 5xx, a dropped
connection, 401 for a token it does not know). Everything else is real: the Application from
`build_application`, PTB's HTTP client, rate limiter and updater, the handlers, the
ConversationService over the real seed corpus with the real embedding model, and its conversation
store (in memory, or an SQLite file where state must outlive the bot).

Every message the bot sends, in every test, is checked to be HTML that Telegram would accept.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import html
import itertools
import json
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import SEED_KNOWLEDGE, console_script, make_settings, subprocess_env
from telegram.ext import filters

from bot import messages
from bot.answer import Answer, Citation, Statement
from bot.channels import ChannelConfigError
from bot.channels.telegram import build_application, check_connection
from bot.commands import help_text, telegram_menu
from bot.config import Settings
from bot.conversation import ConversationService, Reply, ReplyKind, SourceView
from bot.feedback import gaps
from bot.render import telegram as render
from bot.store import Store

TOKEN = "123:TEST"
CHAT = 4242  # a private chat; its id is also the user's id
QUESTION = "Hvem leder etatsstyringsmøtet?"
FOLLOW_UP = "og hvem skriver referatet?"
LEAD = "kommunaldirektør"  # what the answer to QUESTION says
MINUTES = "Utkast skrives av byrådsavdelingen"  # what the answer to FOLLOW_UP says
WAIT_SECONDS = 20.0
BACKOFF = 0.05  # seconds before a failed send is repeated in these tests (doubled each time)
BOT_USER = {
    "id": 123,
    "is_bot": True,
    "first_name": "Styringsbot",
    "username": "StyringsTestBot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


# ---------------------------------------------------------------------------------------------
# What Telegram accepts as parse_mode=HTML

TELEGRAM_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
    "blockquote", "tg-spoiler", "span",
}  # fmt: skip
_BARE_AMPERSAND = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)")


class _TelegramHTML(HTMLParser):
    """Collects what Telegram's HTML parser would reject, and the text a user would read."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.open: list[str] = []
        self.problems: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_TAGS:
            self.problems.append(f"tag <{tag}> is not allowed")
        self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.problems.append(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            self.problems.append(f"bare < or > in {data[:60]!r}")
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        self.text.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.text.append(html.unescape(f"&#{name};"))

    def handle_comment(self, data: str) -> None:
        self.problems.append("comment")

    def handle_decl(self, decl: str) -> None:
        self.problems.append("declaration")

    def handle_pi(self, data: str) -> None:
        self.problems.append("processing instruction")

    def unknown_decl(self, data: str) -> None:
        self.problems.append("unknown declaration")


def html_problems(text: str) -> list[str]:
    """Why Telegram would refuse `text` as a parse_mode=HTML message (empty: it would not)."""
    problems = []
    if not text.strip():
        problems.append("empty text")
    if len(text) > render.TELEGRAM_LIMIT:
        problems.append(f"{len(text)} characters")
    if match := _BARE_AMPERSAND.search(text):
        problems.append(f"bare & at {match.start()}")
    parser = _TelegramHTML()
    parser.feed(text)
    parser.close()
    if parser.open:
        problems.append(f"unclosed {parser.open}")
    return problems + parser.problems


def assert_telegram_html(text: str) -> None:
    assert not html_problems(text), (html_problems(text), text)


def visible_text(text: str) -> str:
    """What the user reads: tags dropped, entities resolved."""
    parser = _TelegramHTML()
    parser.feed(text)
    parser.close()
    return "".join(parser.text)


# ---------------------------------------------------------------------------------------------
# The fake Bot API server


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    result: Any = None
    status: int = 200  # what the fake answered: 0 for a dropped connection
    at: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return str(self.params.get("text", ""))

    @property
    def buttons(self) -> list[dict[str, str]]:
        markup = self.params.get("reply_markup") or {}
        return [button for row in markup.get("inline_keyboard", []) for button in row]


def _decode(key: str, value: Any) -> Any:
    """PTB form-encodes parameters; nested objects (reply_markup, …) and booleans arrive as JSON."""
    if key == "text" or not isinstance(value, str):
        return value
    if value in ("true", "false"):
        return value == "true"
    if value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _telegram_error(
    description: str, code: int = 400, parameters: dict[str, Any] | None = None
) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)


# How the fake fails a call: an HTTP status, (429, retry_after seconds), or DROP the connection.
DROP = "drop"
Failure = int | tuple[int, float] | str


@dataclass
class FakeBotAPI:
    """Telegram's Bot API for one bot token, on a random local port."""

    token: str = TOKEN  # any other token is answered 401 Unauthorized, as Telegram does
    calls: list[Call] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    chats: dict[int, dict[str, Any]] = field(default_factory=dict)  # as users' updates show them
    rejected: list[tuple[Call, list[str]]] = field(default_factory=list)  # what Telegram refuses
    failures: dict[str, list[Failure]] = field(default_factory=dict)  # method → what to answer
    messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # to reply to
    port: int = 0
    _runner: web.AppRunner | None = None
    _message_id: int = 1000

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": len(self.updates) + 1, **update}
        if "message" in update:
            sent = update["message"]
            self.chats[sent["chat"]["id"]] = sent["chat"]
            self.messages[(sent["chat"]["id"], sent["message_id"])] = sent
        self.updates.append(update)
        return update

    def fail(self, method: str, *failures: Failure) -> None:
        """Answer the next calls of `method` with these failures, in order, then normally."""
        self.failures.setdefault(method, []).extend(failures)

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def delivered(self, method: str) -> list[Call]:
        """The calls of `method` that succeeded."""
        return [c for c in self.called(method) if c.status == 200]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _telegram_error("Unauthorized", 401)
        if request.content_type == "application/json":
            body = await request.json()
        else:
            body = dict(await request.post())
        call = Call(request.match_info["method"], {k: _decode(k, v) for k, v in body.items()})
        self.calls.append(call)
        if pending := self.failures.get(call.method):
            return self._failure(request, call, pending.pop(0))
        if call.method == "sendMessage" and (problems := html_problems(call.text)):
            call.status = 400
            self.rejected.append((call, problems))
            return _telegram_error(f"Bad Request: can't parse entities: {problems}")
        call.result = await self._result(call)
        return web.json_response({"ok": True, "result": call.result})

    def _failure(self, request: web.Request, call: Call, failure: Failure) -> web.StreamResponse:
        if failure == DROP:
            call.status = 0
            assert request.transport is not None
            request.transport.abort()  # the connection drops before any answer
            return web.Response()
        if isinstance(failure, tuple):
            call.status, retry_after = failure
            return _telegram_error(
                f"Too Many Requests: retry after {retry_after}",
                call.status,
                {"retry_after": retry_after},
            )
        assert isinstance(failure, int)
        call.status = failure
        return _telegram_error("Internal Server Error", failure)

    async def _result(self, call: Call) -> Any:
        if call.method == "getMe":
            return BOT_USER
        if call.method == "getUpdates":
            return await self._poll(call.params)
        if call.method == "sendMessage":
            self._message_id += 1
            chat_id = int(call.params["chat_id"])
            sent: dict[str, Any] = {
                "message_id": self._message_id,
                "date": int(time.time()),
                "chat": self.chats.get(chat_id, private(chat_id)),
                "from": BOT_USER,
                "text": call.text,
            }
            if call.params.get("message_thread_id"):
                sent |= {"message_thread_id": int(call.params["message_thread_id"])}
                sent |= {"is_topic_message": True}
            if call.params.get("reply_markup"):
                sent["reply_markup"] = call.params["reply_markup"]
            quoted = (call.params.get("reply_parameters") or {}).get("message_id")
            if quoted is not None and (chat_id, int(quoted)) in self.messages:
                sent["reply_to_message"] = self.messages[(chat_id, int(quoted))]
            self.messages[(chat_id, self._message_id)] = sent
            return sent
        return True  # deleteWebhook, setMyCommands, sendChatAction, answerCallbackQuery, …

    async def _poll(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), 0.5)
        while True:
            pending = [u for u in self.updates if u["update_id"] >= offset]
            if pending or time.monotonic() >= deadline:
                return pending
            await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# A Telegram user talking to the running bot


def person(user_id: int = CHAT) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": "Kari", "language_code": "nb"}


def private(chat_id: int) -> dict[str, Any]:
    return {"id": chat_id, "type": "private", "first_name": "Kari"}


_message_ids = itertools.count(1)


def message(chat: dict[str, Any], user: int, text: str | None = None, **content: Any) -> dict:
    """A message update as Telegram sends it; a leading /command gets its bot_command entity."""
    body: dict[str, Any] = {
        "message_id": next(_message_ids),
        "date": int(time.time()),
        "chat": chat,
        "from": person(user),
        **content,
    }
    if text is not None:
        body["text"] = text
        if text.startswith("/"):
            command = text.split(" ", 1)[0]
            body["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return {"message": body}


NewMessages = Callable[[list[Call]], bool]


@dataclass
class User:
    """One person in one chat; `extra` goes into every message they send (a forum topic, …)."""

    fake: FakeBotAPI
    chat: dict[str, Any] = field(default_factory=lambda: private(CHAT))
    user: int = CHAT
    extra: dict[str, Any] = field(default_factory=dict)

    def other(self, chat: int | dict[str, Any], user: int | None = None, **extra: Any) -> User:
        """Someone else talking to the same bot (by default alone, in a private chat)."""
        chat = private(chat) if isinstance(chat, int) else chat
        return User(self.fake, chat, chat["id"] if user is None else user, extra)

    def message(self, text: str | None = None, **content: Any) -> dict[str, Any]:
        return message(self.chat, self.user, text, **self.extra, **content)

    def messages(self) -> list[Call]:
        """The messages the bot got through to this chat (failed attempts left out)."""
        chat = self.chat["id"]
        return [c for c in self.fake.delivered("sendMessage") if int(c.params["chat_id"]) == chat]

    async def wait_for(self, condition: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + WAIT_SECONDS
        while not (found := condition()):
            if self.fake.rejected:
                pytest.fail(f"Telegram would refuse {self.fake.rejected}")
            if time.monotonic() > deadline:
                calls = [(c.method, c.params) for c in self.fake.calls if c.method != "getUpdates"]
                pytest.fail(f"no {what} within {WAIT_SECONDS} s; calls: {calls}")
            await asyncio.sleep(0.01)
        return found

    async def send(self, update: dict[str, Any], until: NewMessages = bool) -> list[Call]:
        """Push an update; the bot's new messages to this chat once `until` holds for them."""
        before = len(self.messages())
        self.fake.push(update)
        return await self.wait_for(
            lambda: (new := self.messages()[before:]) and until(new) and new, f"reply to {update}"
        )

    async def say(self, text: str) -> str:
        """Send text; the one reply (visible text)."""
        replies = await self.send(self.message(text))
        assert len(replies) == 1, replies
        return visible_text(replies[0].text)

    async def ask(self, question: str) -> Call:
        """Ask a question that has an answer; the message carrying the answer's buttons."""
        replies = await self.send(self.message(question), lambda new: new[-1].buttons)
        return replies[-1]

    async def press(self, data: str, on: Call, replies: int = 0) -> tuple[Call, list[Call]]:
        """Press an inline button; Telegram's answerCallbackQuery call and any new messages."""
        before = len(self.messages())
        update = self.fake.push(
            {
                "callback_query": {
                    "id": f"cq{len(self.fake.updates)}",
                    "from": person(self.user),
                    "chat_instance": "1",
                    "message": on.result,
                    "data": data,
                }
            }
        )
        query_id = update["callback_query"]["id"]
        answered = await self.wait_for(
            lambda: [
                c
                for c in self.fake.called("answerCallbackQuery")
                if c.params["callback_query_id"] == query_id
            ],
            f"answer to callback {data!r}",
        )
        if replies:
            await self.wait_for(
                lambda: len(self.messages()) >= before + replies, f"messages after {data!r}"
            )
        return answered[0], self.messages()[before:]


Scenario = Callable[[User], Awaitable[None]]


def run_bot(
    service: ConversationService,
    settings: Settings,
    scenario: Scenario,
    message_limit: int = render.TELEGRAM_LIMIT,
    backoff: float = BACKOFF,
) -> FakeBotAPI:
    """Run the real Application against a fresh fake Bot API while `scenario` talks to it."""

    async def main() -> FakeBotAPI:
        fake = FakeBotAPI()
        await fake.start()
        try:
            local = settings.model_copy(update={"telegram_base_url": fake.base_url})
            app = build_application(service, local, message_limit, backoff=backoff)
            async with app:  # initialize (getMe) … shutdown
                if app.post_init is not None:  # only run_polling/run_webhook call it
                    await app.post_init(app)
                await app.start()
                await app.updater.start_polling(poll_interval=0.0, timeout=dtm.timedelta(seconds=1))
                try:
                    await scenario(User(fake))
                finally:
                    await app.updater.stop()
                    await app.stop()
        finally:
            await fake.stop()
        return fake

    fake = asyncio.run(main())
    assert_all_sent_messages_valid(fake)
    return fake


def assert_all_sent_messages_valid(fake: FakeBotAPI) -> None:
    """Every message the bot tried to send is HTML Telegram accepts, and none says it failed."""
    assert not fake.rejected, fake.rejected
    for sent in fake.called("sendMessage"):
        assert_telegram_html(sent.text)
        assert messages.FAILED["nb"] not in visible_text(sent.text), "a handler failed"


# ---------------------------------------------------------------------------------------------
# Fixtures


def telegram_settings(data_dir: Path, **overrides: Any) -> Settings:
    return make_settings(data_dir, SEED_KNOWLEDGE, **{"telegram_bot_token": TOKEN, **overrides})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return telegram_settings(data_dir)


@pytest.fixture
def service(seed_engine) -> Iterator[ConversationService]:  # type: ignore[no-untyped-def]
    service = ConversationService(seed_engine, Store("sqlite://"))
    yield service
    service.close()


@pytest.fixture
def stored_service(seed_engine, data_dir: Path) -> Iterator[ConversationService]:  # type: ignore[no-untyped-def]
    """The service as `styringsbot telegram` builds it: its store is the data dir's SQLite file
    (so `styringsbot report` reads what the bot recorded)."""
    service = ConversationService(seed_engine, Store.open(None, data_dir))
    yield service
    service.close()


def buttons(answer: Call, prefix: str) -> dict[str, str]:
    """callback_data → label of the answer's buttons whose data starts with `prefix`."""
    return {
        b["callback_data"]: b["text"] for b in answer.buttons if b["callback_data"][:3] == prefix
    }


def turn_of(answer: Call) -> str:
    return answer.buttons[0]["callback_data"].split(":")[1]


def conversation(chat: int, user: int = CHAT) -> str:
    """The conversation of one person in one chat, as the channel names it to the service."""
    return f"telegram:{chat}:{user}"


# ---------------------------------------------------------------------------------------------
# Questions


def test_question_is_answered_in_html_with_feedback_and_source_buttons(service, settings):
    seen: dict[str, Call] = {}

    async def scenario(user: User) -> None:
        seen["answer"] = await user.ask(QUESTION)

    fake = run_bot(service, settings, scenario)
    answer = seen["answer"]
    assert answer.params["parse_mode"] == "HTML"
    assert answer.params["link_preview_options"] == {"is_disabled": True}
    assert "reply_parameters" not in answer.params  # a private chat needs no quote
    assert LEAD in visible_text(answer.text)
    assert "lysbilde" in visible_text(answer.text)
    turn = turn_of(answer)
    assert re.fullmatch(r"[0-9a-f]{12}", turn)
    assert buttons(answer, "fb:") == {f"fb:{turn}:1": "👍 Nyttig", f"fb:{turn}:0": "👎 Ikke nyttig"}
    sources = buttons(answer, "src")
    assert sources and sources == {
        f"src:{turn}:{n}": f"Kilde {n}" for n in range(1, 1 + len(sources))
    }
    # The bot showed "typing…" before it answered, and set its command menu at start-up.
    methods = [c.method for c in fake.calls]
    typing = fake.called("sendChatAction")
    assert typing and typing[0].params == {"chat_id": str(CHAT), "action": "typing"}
    assert methods.index("sendChatAction") < methods.index("sendMessage")
    (menu,) = fake.called("setMyCommands")
    assert [(c["command"], c["description"]) for c in menu.params["commands"]] == telegram_menu()
    assert [c["command"] for c in menu.params["commands"]] == [
        "hjelp",
        "intro",
        "kilde",
        "ny",
        "start",
    ]
    assert fake.called("getMe") and fake.called("deleteWebhook")


def test_follow_up_question_builds_on_the_previous_answer(service, settings):
    seen: dict[str, Call] = {}

    async def scenario(user: User) -> None:
        await user.ask(QUESTION)
        seen["follow-up"] = await user.ask(FOLLOW_UP)

    run_bot(service, settings, scenario)
    text = visible_text(seen["follow-up"].text)
    assert "referat" in text.lower()
    assert MINUTES in text


def test_a_follow_up_sent_right_away_waits_for_the_answer_it_builds_on(seed_engine, settings):
    """Updates are handled concurrently and the service has several workers, yet one person's
    messages are answered in order: the follow-up sees the question's answer."""
    service = ConversationService(seed_engine, Store("sqlite://"), workers=4)
    seen: dict[str, list[Call]] = {}

    async def scenario(user: User) -> None:
        user.fake.push(user.message(QUESTION))
        user.fake.push(user.message(FOLLOW_UP))
        seen["answers"] = await user.wait_for(
            lambda: (answers := [m for m in user.messages() if m.buttons])[1:] and answers,
            "two answers",
        )

    try:
        run_bot(service, settings, scenario)
    finally:
        service.close()
    first, second = seen["answers"]
    assert LEAD in visible_text(first.text)
    assert MINUTES in visible_text(second.text)


# ---------------------------------------------------------------------------------------------
# Buttons and /kilde


def test_thumbs_down_is_stored_and_listed_as_a_knowledge_gap(
    stored_service, settings, data_dir, in_tmp_cwd, monkeypatch, capsys
):
    service = stored_service
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        answer = seen["answer"] = await user.ask(QUESTION)
        seen["thanks"], seen["new"] = await user.press(f"fb:{turn_of(answer)}:0", on=answer)

    run_bot(service, settings, scenario)
    assert seen["thanks"].params["text"] == messages.THANKS[False]["nb"]
    assert not seen["thanks"].params.get("show_alert")
    assert seen["new"] == []
    (event,) = service.store.events("down")
    assert (event.channel, event.question) == ("telegram", QUESTION)
    assert LEAD in event.answer
    assert event.citations and event.citations[0]["location"] == "lysbilde 11"
    (gap,) = gaps(service.store)
    assert (gap.question, gap.unhelpful, gap.channels) == (QUESTION, 1, "telegram")

    from bot import cli

    monkeypatch.setenv("STYRINGSBOT_DATA_DIR", str(data_dir))
    assert cli.main(["report"]) == 0
    out = capsys.readouterr().out
    assert "0 👍, 1 👎" in out
    assert f"• {QUESTION}" in out


def test_a_second_vote_replaces_the_first(service, settings):
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        answer = await user.ask(QUESTION)
        await user.press(f"fb:{turn_of(answer)}:0", on=answer)
        seen["thanks"], _ = await user.press(f"fb:{turn_of(answer)}:1", on=answer)

    run_bot(service, settings, scenario)
    assert seen["thanks"].params["text"] == messages.THANKS[True]["nb"]
    assert [e.question for e in service.store.events("up", "down")] == [QUESTION]
    assert service.store.events("down") == [] and gaps(service.store) == []


def test_source_button_and_kilde_command_show_the_whole_passage(service, settings):
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        seen["before"] = await user.say("/kilde 1")
        answer = seen["answer"] = await user.ask(QUESTION)
        seen["pressed"], seen["button"] = await user.press(f"src:{turn_of(answer)}:1", answer, 1)
        seen["kilde 1"] = await user.say("/kilde 1")
        seen["bare"] = await user.say("kilde 1")  # typed without the slash
        seen["kilde 99"] = await user.say("/kilde 99")
        seen["kilde abc"] = await user.say("/kilde abc")

    fake = run_bot(service, settings, scenario)
    assert seen["before"] == messages.NO_SOURCES_YET["nb"]
    assert seen["pressed"].params.get("text") is None  # the button just stops spinning
    (shown,) = seen["button"]
    assert shown.buttons == []
    assert visible_text(shown.text) == seen["kilde 1"] == seen["bare"]
    turn = service.turn(conversation(CHAT), turn_of(seen["answer"]))
    citation = turn.answer.citations[0]
    title, source, *passage = seen["kilde 1"].split("\n\n")
    assert title == f"[1] «{citation.title}», lysbilde 11"
    assert source == citation.source
    assert " ".join(" ".join(passage).split()) == " ".join(citation.text.split())
    count = len(turn.answer.citations)
    assert seen["kilde 99"] == messages.NO_SUCH_SOURCE["nb"].format(count=count)
    assert seen["kilde abc"] == messages.NOT_A_NUMBER["nb"].format(count=count, source="/kilde")
    assert len(fake.called("sendChatAction")) == 1  # only the question: commands answer at once


def test_buttons_of_forgotten_or_unknown_answers_explain_themselves(service, settings):
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        answer = await user.ask(QUESTION)
        turn = turn_of(answer)
        seen["ny"] = await user.say("/ny")
        for data in (f"src:{turn}:1", f"fb:{turn}:1", "src:deadbeef0000:1", "fb:deadbeef0000:0"):
            seen[data], new = await user.press(data, on=answer)
            assert new == []
        for garbage in ("xyz", "src:ZZZ:1", "fb:" + "a" * 60 + ":1", ""):
            seen[f"garbage {garbage!r}"], new = await user.press(garbage, on=answer)
            assert new == []

    run_bot(service, settings, scenario)
    assert seen.pop("ny") == messages.NEW_CONVERSATION["nb"]
    unknown = messages.say(messages.UNKNOWN_COMMAND, "nb", help="/hjelp")
    for data in [k for k in seen if k.startswith("garbage")]:
        assert seen.pop(data).params["text"] == unknown, data
    for data, alert in seen.items():
        assert (alert.params["text"], alert.params.get("show_alert")) == (
            messages.GONE["nb"],
            True,
        ), data
    assert len(messages.GONE["nb"]) <= 200  # what Telegram shows of a button's note
    assert service.store.events("up", "down") == []


# ---------------------------------------------------------------------------------------------
# Commands and awkward messages


def test_commands_get_polite_replies(service, settings):
    replies: dict[str, str] = {}

    async def scenario(user: User) -> None:
        for command in (
            "/start",
            "/hjelp",
            "/help",
            "/ny",
            "/foo",
            "/hjelp@StyringsTestBot",
            "hjelp",
            "/slutt",  # the terminal's command: nothing to quit in a chat
        ):
            replies[command] = await user.say(command)

    fake = run_bot(service, settings, scenario)
    nb_help = help_text("nb", "telegram")
    assert replies["/start"] == welcome_text(service)
    assert replies["/hjelp"] == nb_help == replies["/hjelp@StyringsTestBot"] == replies["hjelp"]
    assert "/kilde N" in nb_help
    assert replies["/help"] == help_text("en", "telegram")
    assert replies["/ny"] == messages.NEW_CONVERSATION["nb"]
    unknown = messages.say(messages.UNKNOWN_COMMAND, "nb", help="/hjelp")
    assert replies["/foo"] == unknown == replies["/slutt"]
    assert fake.called("sendChatAction") == []
    start, *others = fake.called("sendMessage")
    assert start.buttons == [{"text": "▶ Kom i gang", "callback_data": "intro"}]  # the course
    assert all(m.buttons == [] for m in others)


def welcome_text(service: ConversationService) -> str:
    """Hello, the course on offer, and the help: what /start and being added to a group say."""
    steps = len(service.engine.course.steps)
    invite = messages.say(messages.COURSE_INVITE, "nb", intro="/intro", steps=steps)
    return f"{messages.WELCOME['nb']}\n\n{invite}\n\n{help_text('nb', 'telegram')}"


def test_markup_in_questions_is_shown_as_text_never_as_markup(service, settings):
    seen: dict[str, Any] = {}
    hostile = "<b>hei</b> & *fet* _kursiv_ `kode` [lenke](http://x)"

    async def scenario(user: User) -> None:
        seen["hostile"] = await user.say(hostile)
        seen["script"] = await user.say("Hva er <script>alert('x')</script> & <i>?")
        seen["answered"] = await user.ask(f"{QUESTION} <script>alert('x')</script> & <b>")

    fake = run_bot(service, settings, scenario)
    assert seen["hostile"].startswith(messages.NO_ANSWER["nb"])
    assert seen["script"].startswith(messages.NO_ANSWER["nb"])
    assert LEAD in visible_text(seen["answered"].text)
    assert all("<script" not in m.text for m in fake.called("sendMessage"))


def test_too_long_and_blank_questions_get_one_sentence(service, settings):
    replies: dict[str, str] = {}

    async def scenario(user: User) -> None:
        replies["long"] = await user.say("x" * 10_000)
        replies["blank"] = await user.say("     ")
        replies["mention only"] = await user.say("@StyringsTestBot")

    fake = run_bot(service, settings, scenario)
    assert replies["long"] == messages.TOO_LONG["nb"].format(n=10_000, limit=1000)
    assert replies["blank"] == messages.EMPTY_QUESTION["nb"] == replies["mention only"]
    assert len(fake.called("sendChatAction")) == 1  # for the long question only


FILE = {"file_id": "AgAD", "file_unique_id": "AQAD"}
NOT_TEXT = {
    "sticker": {**FILE, "type": "regular", "width": 512, "height": 512, "is_animated": False,
                "is_video": False, "emoji": "👍"},
    "photo": [{**FILE, "width": 90, "height": 90}],
    "document": {**FILE, "file_name": "referat.pdf", "mime_type": "application/pdf"},
    "voice": {**FILE, "duration": 3},
}  # fmt: skip


def test_non_text_messages_are_asked_for_text(service, settings):
    replies: dict[str, str] = {}

    async def scenario(user: User) -> None:
        for kind, content in NOT_TEXT.items():
            (reply,) = await user.send(user.message(**{kind: content}))
            replies[kind] = visible_text(reply.text)

    fake = run_bot(service, settings, scenario)
    assert replies == dict.fromkeys(NOT_TEXT, messages.NOT_TEXT["nb"])
    assert fake.called("sendChatAction") == []


FORUM = {"id": -1001, "type": "supergroup", "title": "Styringsgruppa", "is_forum": True}


def ask_in_forum_topic(service: ConversationService, settings: Settings) -> FakeBotAPI:
    """Someone in a forum group's topic asks the bot by @mention, then asks for source 1."""

    async def scenario(user: User) -> None:
        member = user.other(FORUM, user=5, message_thread_id=77, is_topic_message=True)
        await member.ask("@StyringsTestBot hvem leder etatsstyringsmøtet?")
        await member.say("/kilde@StyringsTestBot 1")

    return run_bot(service, settings, scenario)


def test_questions_in_a_forum_topic_are_answered_in_that_topic(service, settings):
    fake = ask_in_forum_topic(service, settings)
    answer, source = fake.called("sendMessage")
    assert LEAD in visible_text(answer.text)
    assert "lysbilde 11" in visible_text(source.text)
    assert [(m.params["chat_id"], m.params["message_thread_id"]) for m in (answer, source)] == [
        ("-1001", "77"),
        ("-1001", "77"),
    ]
    # In a group each reply quotes what it answers.
    assert answer.result["reply_to_message"]["text"].startswith("@StyringsTestBot hvem leder")
    assert source.result["reply_to_message"]["text"] == "/kilde@StyringsTestBot 1"
    # One person's conversation in the group, without the @mention in the question.
    assert service.last_turn(conversation(-1001, 5)).question == "hvem leder etatsstyringsmøtet?"


def test_typing_shows_in_the_forum_topic_of_the_question(service, settings):
    fake = ask_in_forum_topic(service, settings)
    (typing,) = fake.called("sendChatAction")
    assert typing.params.get("message_thread_id") == "77"


GROUP = {"id": -2002, "type": "group", "title": "Ledergruppa"}


def test_in_a_group_the_bot_speaks_only_when_addressed(service, settings):
    """Group members talk among themselves: the bot answers an @mention, a reply to itself or a
    command for it, and stays quiet on other messages, photos and other bots' commands."""
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        member = user.other(GROUP, user=6)
        fake = user.fake
        for update in (
            member.message("Hvem leder etatsstyringsmøtet?"),  # said to the others
            member.message(photo=NOT_TEXT["photo"]),
            member.message("/hjelp@AnnenBot"),  # another bot's command
            member.message("Spør @StyringsTestBotten om det"),  # someone else's name
            member.message(new_chat_members=[person(9)]),  # someone else joined
        ):
            fake.push(update)
        seen["answer"] = await member.ask("@StyringsTestBot hvem leder etatsstyringsmøtet?")
        reply_to = {"reply_to_message": seen["answer"].result}
        seen["follow_up"] = await member.send(
            member.message("og hvem skriver referatet?", **reply_to)
        )
        seen["sticker"] = await member.send(member.message(sticker=NOT_TEXT["sticker"], **reply_to))

    fake = run_bot(service, settings, scenario)
    sent = fake.called("sendMessage")
    assert [visible_text(m.text) for m in sent] == [
        visible_text(seen["answer"].text),
        *(visible_text(m.text) for m in seen["follow_up"]),
        messages.NOT_TEXT["nb"],
    ]
    assert LEAD in visible_text(seen["answer"].text)
    assert "referat" in visible_text(seen["follow_up"][-1].text).lower()
    assert service.last_turn(conversation(-2002, 6)).question == "og hvem skriver referatet?"


def test_in_a_group_anyone_can_use_the_buttons_under_an_answer(service, settings):
    """The buttons under one member's answer work for a colleague too: the vote is stored for
    that answer, and the source is shown."""
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        member = user.other(GROUP, user=6)
        colleague = user.other(GROUP, user=8)
        answer = seen["answer"] = await member.ask("@StyringsTestBot " + QUESTION)
        turn = turn_of(answer)
        seen["thanks"], _ = await colleague.press(f"fb:{turn}:0", on=answer)
        _, seen["source"] = await colleague.press(f"src:{turn}:1", on=answer, replies=1)

    run_bot(service, settings, scenario)
    assert seen["thanks"].params["text"] == messages.THANKS[False]["nb"]
    (event,) = service.store.events("down")
    assert event.question == QUESTION
    (source,) = seen["source"]
    assert "lysbilde 11" in visible_text(source.text)
    assert source.params["reply_parameters"]["message_id"] == seen["answer"].result["message_id"]
    assert service.last_turn(conversation(-2002, 8)) is None  # the colleague asked nothing


def test_the_bot_says_hello_when_added_to_a_group(service, settings):
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        admin = user.other(GROUP, user=6)
        (seen["hello"],) = await admin.send(admin.message(new_chat_members=[BOT_USER]))

    run_bot(service, settings, scenario)
    hello = seen["hello"]
    assert visible_text(hello.text) == welcome_text(service)
    assert [b["callback_data"] for b in hello.buttons] == ["intro"]
    assert "reply_parameters" not in hello.params


# ---------------------------------------------------------------------------------------------
# Long messages (render only: no passage of the seed corpus is near Telegram's limit)

PARAGRAPH = "Styring <i> & ledelse i Oslo kommune, avsnitt {n}: " + "ord & <tegn> " * 20


def _long_view(text: str) -> SourceView:
    citation = Citation(1, "Tittel <med> & tegn", "dokument.pdf", "side 3", text, quote=text)
    return SourceView("0123456789ab", citation, "nb")


def assert_split_keeps_every_word(parts: list[str], text: str, limit: int = 4096) -> None:
    assert len(parts) > 1
    for part in parts:
        assert_telegram_html(part)
        assert len(part) <= limit
    words = " ".join(" ".join(visible_text(p) for p in parts).split())
    assert " ".join(text.split()) in words


def test_long_source_splits_between_paragraphs_below_the_limit():
    paragraphs = [PARAGRAPH.format(n=n) for n in range(40)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 9_000
    parts = render.source(_long_view(text))
    assert_split_keeps_every_word(parts, text)
    shown = [block for part in parts for block in visible_text(part).split("\n\n")]
    assert shown == ["[1] «Tittel <med> & tegn», side 3", "dokument.pdf", *paragraphs]


def test_one_huge_paragraph_is_cut_between_words():
    text = " ".join(f"ord{n} & <x>" for n in range(1_500))
    assert len(text) > 9_000 and "\n" not in text
    assert_split_keeps_every_word(render.source(_long_view(text)), text)


def test_long_answer_splits_into_valid_messages():
    text = " ".join(PARAGRAPH.format(n=n) for n in range(40))
    citation = _long_view(text).citation
    answer = Answer(
        QUESTION,
        "nb",
        False,
        statements=[Statement(text, (1,)), Statement(text, (1,), verbatim=True)],
        citations=[citation, replace(citation, n=2)],
    )
    parts = render.answer(answer)
    assert_split_keeps_every_word(parts, text)
    assert_split_keeps_every_word(render.answer(answer, 500), text, 500)


def test_replies_render_what_they_are():
    """A feedback receipt carries the answer it thanks for, but shows only its sentence and no
    buttons; a reply with nothing to say is no message at all (Telegram refuses empty text)."""
    answer = Answer(QUESTION, "nb", False, statements=[Statement("Svar.", (1,))])
    answer.citations = [Citation(1, "T", "t.pdf", None, "Svar.", "Svar.")]
    thanks = messages.THANKS[True]["nb"]
    receipt = Reply(ReplyKind.FEEDBACK, "nb", thanks, answer=answer, turn_id="t1", helpful=True)
    assert render.reply(receipt) == [html.escape(thanks, quote=False)]
    assert render.keyboard(receipt) is None
    assert render.keyboard(Reply(ReplyKind.ANSWER, "nb", answer=answer, turn_id="t1"))
    assert render.reply(Reply(ReplyKind.QUIT, "nb")) == []
    assert render.text("  \n\n ") == []


SMALL_LIMIT = 300  # no seed passage is near 4096 characters; a smaller limit splits real answers


def test_long_answer_and_source_reach_telegram_as_several_valid_messages(service, settings):
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        seen["answer"] = await user.ask(QUESTION)
        turn = service.last_turn(conversation(CHAT))
        seen["turn"] = turn
        view = service.source(conversation(CHAT), 1, turn.id)
        expected = len(render.source(view, SMALL_LIMIT))
        _, seen["source"] = await user.press(
            f"src:{turn.id}:1", on=seen["answer"], replies=expected
        )
        seen["view"] = view

    fake = run_bot(service, settings, scenario, message_limit=SMALL_LIMIT)
    sent = fake.called("sendMessage")
    answer_parts = sent[: sent.index(seen["answer"]) + 1]
    whole = render.answer(seen["turn"].answer)  # the same answer in one message
    assert len(whole) == 1 and len(answer_parts) > 1
    assert all(len(m.text) <= SMALL_LIMIT for m in [*answer_parts, *seen["source"]])
    assert [bool(m.buttons) for m in answer_parts] == [False] * (len(answer_parts) - 1) + [True]
    assert_split_keeps_every_word([m.text for m in answer_parts], visible_text(whole[0]))
    assert len(seen["source"]) > 1
    assert_split_keeps_every_word([m.text for m in seen["source"]], seen["view"].citation.text)


# ---------------------------------------------------------------------------------------------
# When Telegram fails: 429 and server errors are retried with backoff


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # PTB on RetryAfter.retry_after's type
def test_a_send_refused_with_429_waits_out_retry_after_and_is_sent(service, settings):
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        user.fake.fail("sendMessage", (429, 0.3))  # Telegram's flood control
        seen["answer"] = await user.ask(QUESTION)

    fake = run_bot(service, settings, scenario)
    refused, sent = fake.called("sendMessage")
    assert (refused.status, sent.status) == (429, 200)
    assert refused.text == sent.text and sent is seen["answer"]
    assert sent.at - refused.at >= 0.3
    assert LEAD in visible_text(sent.text)


def test_sends_are_retried_with_backoff_on_server_errors_and_dropped_connections(service, settings):
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        user.fake.fail("sendMessage", 500, 502, DROP)
        user.fake.fail("sendChatAction", 503)
        seen["answer"] = await user.ask(QUESTION)
        user.fake.fail("answerCallbackQuery", 500)
        seen["thanks"], _ = await user.press(f"fb:{turn_of(seen['answer'])}:1", seen["answer"])

    fake = run_bot(service, settings, scenario, backoff=BACKOFF)
    attempts = fake.called("sendMessage")
    assert [c.status for c in attempts] == [500, 502, 0, 200]
    assert len({c.text for c in attempts}) == 1 and attempts[-1] is seen["answer"]
    waits = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    assert [wait >= BACKOFF * 2**n for n, wait in enumerate(waits)] == [True, True, True], waits
    assert LEAD in visible_text(seen["answer"].text)
    assert [c.status for c in fake.called("sendChatAction")] == [503, 200]
    assert [c.status for c in fake.called("answerCallbackQuery")] == [500, 200]
    assert seen["thanks"].params["text"] == messages.THANKS[True]["nb"]
    assert len(service.store.events("up")) == 1


def test_a_bad_request_is_not_repeated(service, settings):
    """Only 429, 5xx and dropped connections are worth another try: a 400 is final (here, a
    typing indicator Telegram refuses), and the answer still comes."""
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        user.fake.fail("sendChatAction", 400)
        seen["answer"] = await user.ask(QUESTION)

    fake = run_bot(service, settings, scenario)
    assert [c.status for c in fake.called("sendChatAction")] == [400]
    assert LEAD in visible_text(seen["answer"].text)


# ---------------------------------------------------------------------------------------------
# An update the bot cannot read is skipped, once, in one log line

# A message whose fields have the wrong types: python-telegram-bot cannot make an Update of it.
UNREADABLE = {"message": {"message_id": "not-a-number", "date": "x", "chat": 5}}


def test_an_update_that_cannot_be_read_is_skipped_and_the_rest_answered(service, settings, caplog):
    """One getUpdates batch holds a good update, one python-telegram-bot cannot parse, and
    another good one. Both good ones are answered; the bad one is confirmed with the rest (the
    next getUpdates asks for what follows the last), so it is fetched once and never again; and
    the log says so in one line, without a traceback or the batch (PTB alone would log the
    whole batch with a traceback and fetch it again at once, forever)."""
    caplog.set_level(logging.WARNING)  # as `styringsbot telegram` logs
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        fake = user.fake
        # Pushed without a pause in between, so the bot gets all three in one batch.
        seen["a"] = fake.push(user.message("/hjelp"))
        seen["b"] = {"update_id": len(fake.updates) + 1, **UNREADABLE}
        fake.updates.append(seen["b"])
        seen["c"] = fake.push(user.message("/kilde 1"))
        await user.wait_for(lambda: user.messages()[1:], "answers to A and C")
        await asyncio.sleep(2)  # long enough for PTB to have fetched the bad batch many times

    fake = run_bot(service, settings, scenario)
    a, b, c = (seen[key]["update_id"] for key in "abc")
    # (Updates are handled concurrently: the two answers may come in either order.)
    replies = [visible_text(m.text) for m in User(fake).messages()]
    assert sorted(replies) == sorted([help_text("nb", "telegram"), messages.NO_SOURCES_YET["nb"]])
    polls = fake.called("getUpdates")
    served_b = [i for i, p in enumerate(polls) if b in [u["update_id"] for u in p.result or []]]
    assert len(served_b) == 1, [p.params.get("offset") for p in polls]
    assert [u["update_id"] for u in polls[served_b[0]].result] == [a, b, c]
    assert int(polls[served_b[0] + 1].params["offset"]) == c + 1
    assert {int(p.params.get("offset") or 0) for p in polls[served_b[0] + 1 :]} == {c + 1}
    about_b = [r for r in caplog.records if str(b) in r.getMessage()]
    assert 1 <= len(about_b) <= 2, caplog.text
    assert all(r.exc_info is None and r.stack_info is None for r in caplog.records)
    assert "Traceback" not in caplog.text and "not-a-number" not in caplog.text
    assert len(caplog.text) < 2000, caplog.text[:2000]


def test_a_webhook_update_that_cannot_be_read_is_accepted_and_skipped(service, settings, caplog):
    """Through the webhook, an update python-telegram-bot cannot read is answered 200 (PTB alone
    answers 400 and logs it with a traceback, and Telegram sends it again for up to a day), and
    logged in one line; the next update is answered as always, and a forged one still refused."""
    caplog.set_level(logging.WARNING)
    port, secret = _free_port(), "s3cret_Webhook-1"
    signed = {"X-Telegram-Bot-Api-Secret-Token": secret}
    bad = {"update_id": 7, **UNREADABLE}
    good = {"update_id": 8, **message(private(CHAT), CHAT, "/hjelp")}

    async def main() -> tuple[list[int], list[Call]]:
        fake = FakeBotAPI()
        await fake.start()
        try:
            local = settings.model_copy(update={"telegram_base_url": fake.base_url})
            app = build_application(service, local)
            async with app:
                await app.start()
                await app.updater.start_webhook(  # as `run` starts it
                    listen="127.0.0.1",
                    port=port,
                    url_path="tg/hook",
                    webhook_url="https://bot.example.org/tg/hook",
                    secret_token=secret,
                )
                try:
                    url = f"http://127.0.0.1:{port}/tg/hook"
                    statuses = []
                    async with aiohttp.ClientSession() as session:
                        for body, headers in [(bad, signed), (good, {}), (good, signed)]:
                            async with session.post(url, json=body, headers=headers) as response:
                                statuses.append(response.status)
                    replies = await User(fake).wait_for(User(fake).messages, "the answer")
                finally:
                    await app.updater.stop()
                    await app.stop()
        finally:
            await fake.stop()
        return statuses, replies

    statuses, replies = asyncio.run(main())
    assert statuses == [200, 403, 200]
    assert [visible_text(m.text) for m in replies] == [help_text("nb", "telegram")]
    (skipped,) = caplog.records
    assert skipped.getMessage().startswith("Skipped Telegram update 7, which could not be read")
    assert skipped.exc_info is None and "Traceback" not in caplog.text


def test_serve_takes_telegrams_webhook_beside_the_http_api(service, settings, caplog):
    """`serve` with TELEGRAM_WEBHOOK_URL: the webhook is a route of the same web app as the
    HTTP API (python-telegram-bot's custom-webhook pattern), so replicas behind one URL all take
    Telegram's updates. Telegram is the fake Bot API here (its servers cannot be reached); the
    web app, python-telegram-bot and the engine are real."""
    from app_server import running

    from bot.channels.http import TELEGRAM_STATUS_KEY, create_app

    caplog.set_level(logging.WARNING)
    secret = "s3cret_Webhook-2"
    signed = {"X-Telegram-Bot-Api-Secret-Token": secret}
    good = {"update_id": 11, **message(private(CHAT), CHAT, "Hvem leder etatsstyringsmøtet?")}
    bad = {"update_id": 12, **UNREADABLE}

    async def main() -> tuple[list[int], list[Call], FakeBotAPI, dict, str]:
        fake = FakeBotAPI()
        await fake.start()
        try:
            local = settings.model_copy(
                update={
                    "telegram_base_url": fake.base_url,
                    "telegram_webhook_url": "https://bot.example.org/tg/hook",
                    "telegram_webhook_secret": secret,
                }
            )
            app = create_app(service, local)
            async with running(app) as base, aiohttp.ClientSession() as session:
                statuses = []
                for body, headers in [(good, {}), (bad, signed), (good, signed)]:
                    async with session.post(f"{base}/tg/hook", json=body, headers=headers) as r:
                        statuses.append(r.status)
                replies = await User(fake).wait_for(User(fake).messages, "the answer")
                async with session.post(
                    f"{base}/api/ask", json={"question": "Hva er et fagmøte?"}
                ) as r:
                    api = await r.json()
        finally:
            await fake.stop()
        return statuses, replies, fake, api, app[TELEGRAM_STATUS_KEY]

    statuses, replies, fake, api, status = asyncio.run(main())
    assert statuses == [403, 200, 200]
    assert "kommunaldirektør" in visible_text(replies[0].text)
    (hook,) = fake.called("setWebhook")
    assert hook.params["url"] == "https://bot.example.org/tg/hook"
    assert hook.params["secret_token"] == secret
    assert fake.called("setMyCommands")
    assert status == "webhook på /tg/hook"
    assert api["citations"]  # the HTTP API of the same app answers as before
    (skipped,) = [r for r in caplog.records if "Skipped Telegram update" in r.getMessage()]
    assert "12" in skipped.getMessage()


# ---------------------------------------------------------------------------------------------
# State survives a restart


def test_buttons_and_follow_ups_work_after_a_restart(seed_engine, settings, tmp_path):
    """Ask, stop the bot, start a new application and service on the same store file: the old
    answer's 👍 and "Kilde 1" buttons still work, and a follow-up still builds on it."""
    url = f"sqlite:///{tmp_path / 'state' / 's.sqlite3'}"
    seen: dict[str, Any] = {}

    async def before(user: User) -> None:
        seen["answer"] = await user.ask(QUESTION)

    async def after(user: User) -> None:
        answer = seen["answer"]
        turn = turn_of(answer)
        seen["thanks"], _ = await user.press(f"fb:{turn}:1", on=answer)
        _, seen["source"] = await user.press(f"src:{turn}:1", on=answer, replies=1)
        seen["follow-up"] = await user.ask(FOLLOW_UP)

    first = ConversationService(seed_engine, Store(url))
    try:
        run_bot(first, settings, before)
    finally:
        first.close()
    again = ConversationService(seed_engine, Store(url))
    try:
        run_bot(again, settings, after)
        (up,) = again.store.events("up")
        assert up.question == QUESTION
        assert again.last_turn(conversation(CHAT)).question == FOLLOW_UP
    finally:
        again.close()
    assert seen["thanks"].params["text"] == messages.THANKS[True]["nb"]
    assert not seen["thanks"].params.get("show_alert")
    (source,) = seen["source"]
    assert "lysbilde 11" in visible_text(source.text)
    assert MINUTES in visible_text(seen["follow-up"].text)


# ---------------------------------------------------------------------------------------------
# Settings: allowed chats, rate limit, misconfiguration

OUTSIDE_GROUP = {"id": -3003, "type": "group", "title": "Naboetaten"}


def test_only_allowed_chats_get_answers(service, data_dir):
    settings = telegram_settings(data_dir, telegram_allowed_chats="42; -1001")
    seen: dict[str, Any] = {}
    refusal = messages.NOT_ALLOWED["nb"]

    async def scenario(user: User) -> None:
        stranger = user.other(7)
        seen["question"] = await stranger.say(QUESTION)
        seen["start"] = await stranger.say("/start")
        seen["sticker"] = await stranger.send(stranger.message(sticker=NOT_TEXT["sticker"]))
        seen["button"], seen["new"] = await stranger.press(
            "fb:deadbeef0000:1", on=Call("sendMessage", {}, stranger.message("hei")["message"])
        )
        # In a group outside the list, only what is meant for the bot gets the refusal.
        neighbour = user.other(OUTSIDE_GROUP, user=8)
        user.fake.push(neighbour.message("Hvem leder etatsstyringsmøtet?"))
        seen["mention"] = await neighbour.say("@StyringsTestBot " + QUESTION)
        on = Call("sendMessage", {}, neighbour.message("hei")["message"])
        seen["group button"], _ = await neighbour.press("src:deadbeef0000:1", on=on)
        seen["added"] = await neighbour.send(neighbour.message(new_chat_members=[BOT_USER]))
        # The chats on the list work as always.
        seen["allowed"] = await user.other(42).ask(QUESTION)
        member = user.other(FORUM, user=5)
        seen["allowed group"] = await member.ask("@StyringsTestBot " + QUESTION)

    fake = run_bot(service, settings, scenario)
    assert seen["question"] == seen["start"] == seen["mention"] == refusal
    assert [visible_text(m.text) for m in seen["sticker"]] == [refusal]
    assert (seen["button"].params["text"], seen["new"]) == (refusal, [])
    assert seen["group button"].params["text"] == refusal
    assert [visible_text(m.text) for m in seen["added"]] == [refusal]  # no welcome
    assert [visible_text(m.text) for m in fake.called("sendMessage")].count(refusal) == 5
    assert LEAD in visible_text(seen["allowed"].text)
    assert LEAD in visible_text(seen["allowed group"].text)
    assert [int(c.params["chat_id"]) for c in fake.called("sendChatAction")] == [42, -1001]
    assert service.store.events("up", "down") == []
    assert service.last_turn(conversation(7)) is None
    assert service.last_turn(conversation(-3003, 8)) is None


def test_the_allowlist_is_a_chat_filter_ahead_of_every_handler(service, data_dir):
    settings = telegram_settings(data_dir, telegram_allowed_chats="42; -1001")
    app = build_application(service, settings)
    (guard,) = app.handlers[-1]  # the group that runs before all others
    chats = getattr(guard.filters, "inv_filter", None)
    assert isinstance(chats, filters.Chat) and chats.chat_ids == {42, -1001}
    assert -1 not in build_application(service, telegram_settings(data_dir)).handlers


def test_rate_limit_stops_the_third_question_in_a_minute(seed_engine, settings):
    service = ConversationService(seed_engine, Store("sqlite://"), rate_limit=2)
    seen: dict[str, Any] = {}

    async def scenario(user: User) -> None:
        await user.ask(QUESTION)
        await user.ask(FOLLOW_UP)
        seen["third"] = await user.say(QUESTION)
        seen["help"] = await user.say("/hjelp")  # commands are not questions
        seen["kilde"] = await user.say("/kilde 1")
        seen["neighbour"] = await user.other(CHAT, user=99).ask(QUESTION)

    try:
        fake = run_bot(service, settings, scenario)
    finally:
        service.close()
    pattern = re.escape(messages.RATE_LIMITED["nb"]).replace(re.escape("{seconds}"), r"(\d+)")
    wait = re.fullmatch(pattern, seen["third"])
    assert wait and 50 <= int(wait[1]) <= 60, seen["third"]
    assert seen["help"] == help_text("nb", "telegram")
    assert seen["kilde"].startswith("[1] «")
    assert LEAD in visible_text(seen["neighbour"].text)
    assert len(fake.called("sendChatAction")) == 4  # the questions, not the commands


@pytest.mark.parametrize("token", [None, "", "   "])
def test_build_without_token_is_a_config_error(service, data_dir, token):
    settings = telegram_settings(data_dir, telegram_bot_token=token)
    with pytest.raises(ChannelConfigError, match="TELEGRAM_BOT_TOKEN"):
        build_application(service, settings)


def test_webhook_without_secret_is_a_config_error(service, data_dir):
    settings = telegram_settings(data_dir, telegram_webhook_url="https://bot.example/telegram")
    with pytest.raises(ChannelConfigError, match="TELEGRAM_WEBHOOK_SECRET"):
        build_application(service, settings)


def test_malformed_allowed_chats_are_refused_with_the_settings():
    with pytest.raises(ValueError, match="'abc' er ikke en chat-id"):
        telegram_settings(Path("data"), telegram_allowed_chats="42, abc")
    assert telegram_settings(
        Path("data"), telegram_allowed_chats=" 42;-1001 ,"
    ).telegram_chat_ids == {
        42,
        -1001,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_and_a_rejected_token_are_config_errors(data_dir):
    closed = telegram_settings(data_dir, telegram_base_url=f"http://127.0.0.1:{_free_port()}/bot")
    with pytest.raises(ChannelConfigError, match="Fikk ikke kontakt med Telegram") as unreachable:
        check_connection(closed)
    assert "\n" not in str(unreachable.value) and TOKEN not in str(unreachable.value)

    async def rejected() -> None:
        fake = FakeBotAPI(token="999:OTHER")
        await fake.start()
        try:
            local = telegram_settings(data_dir, telegram_base_url=fake.base_url)
            with pytest.raises(ChannelConfigError, match="avviste TELEGRAM_BOT_TOKEN"):
                await asyncio.to_thread(check_connection, local)
        finally:
            await fake.stop()

    asyncio.run(rejected())


@pytest.mark.parametrize(
    ("environment", "fragment"),
    [
        ({"TELEGRAM_ALLOWED_CHATS": "42, abc"}, "TELEGRAM_ALLOWED_CHATS"),
        ({"TELEGRAM_BOT_TOKEN": ""}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_WEBHOOK_URL": "https://bot.example/telegram"}, "TELEGRAM_WEBHOOK_SECRET"),
        ({}, "Fikk ikke kontakt med Telegram"),  # nothing listens on port 9
    ],
)
def test_cli_telegram_misconfigured_is_one_sentence_before_the_engine_opens(
    data_dir, in_tmp_cwd, monkeypatch, capsys, environment, fragment
):
    from bot import cli

    def no_engine(settings: Settings) -> None:
        raise AssertionError("the engine was opened before the settings were checked")

    monkeypatch.setattr(cli, "_open_engine", no_engine)
    environment = {
        "STYRINGSBOT_DATA_DIR": str(data_dir),
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_BASE_URL": "http://127.0.0.1:9/bot",  # never the real Telegram
        **environment,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["telegram"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Feil: ") and fragment in err and err.count("\n") == 1, err


# ---------------------------------------------------------------------------------------------
# The real `styringsbot telegram` command


def _bot_env(seed_engine, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return subprocess_env(
        STYRINGSBOT_DATA_DIR=str(seed_engine.settings.data_dir),
        STYRINGSBOT_KNOWLEDGE_DIR=str(SEED_KNOWLEDGE),
        STYRINGSBOT_QUESTION_LOG="off",
        TELEGRAM_BOT_TOKEN=TOKEN,
        **extra,
    )


async def _run_to_exit(env: dict[str, str]) -> tuple[int, str]:
    bot = await asyncio.create_subprocess_exec(
        str(console_script("styringsbot")),
        "telegram",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(bot.communicate(), 60)
    finally:
        if bot.returncode is None:
            bot.kill()
    assert bot.returncode is not None
    return bot.returncode, err.decode()


def assert_one_sentence(err: str, fragment: str) -> None:
    assert "Traceback" not in err, err
    assert err.startswith("Feil: ") and err.count("\n") == 1, err
    assert fragment in err and TOKEN not in err, err


def test_cli_telegram_without_network_exits_2_with_one_sentence(seed_engine):  # type: ignore[no-untyped-def]
    env = _bot_env(seed_engine, TELEGRAM_BASE_URL=f"http://127.0.0.1:{_free_port()}/bot")
    code, err = asyncio.run(_run_to_exit(env))
    assert code == 2
    assert_one_sentence(err, "Fikk ikke kontakt med Telegram")


def test_cli_telegram_with_a_rejected_token_exits_2_with_one_sentence(seed_engine):  # type: ignore[no-untyped-def]
    async def scenario() -> tuple[int, str, list[Call]]:
        fake = FakeBotAPI(token="999:THE-REAL-ONE")  # Telegram does not know TOKEN
        await fake.start()
        try:
            code, err = await _run_to_exit(_bot_env(seed_engine, TELEGRAM_BASE_URL=fake.base_url))
        finally:
            await fake.stop()
        return code, err, fake.calls

    code, err, calls = asyncio.run(scenario())
    assert code == 2
    assert_one_sentence(err, "Telegram avviste TELEGRAM_BOT_TOKEN")
    assert calls == []  # the fake answered 401 before recording anything


async def _listening(port: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nothing listens on port {port} within {WAIT_SECONDS} s")
            await asyncio.sleep(0.02)
        else:
            writer.close()
            await writer.wait_closed()
            return


def test_webhook_mode_refuses_requests_without_the_secret(seed_engine):  # type: ignore[no-untyped-def]
    """`styringsbot telegram` with TELEGRAM_WEBHOOK_URL registers the webhook with its secret,
    refuses an update that lacks the secret, and answers one that carries it."""
    port = _free_port()
    secret = "s3cret_Webhook-1"
    update = {"update_id": 1, **message(private(CHAT), CHAT, QUESTION)}

    async def scenario() -> tuple[Call, int, int, int, list[Call], FakeBotAPI]:
        fake = FakeBotAPI()
        await fake.start()
        env = _bot_env(
            seed_engine,
            TELEGRAM_BASE_URL=fake.base_url,
            TELEGRAM_WEBHOOK_URL="https://bot.example.org/tg/hook",
            TELEGRAM_WEBHOOK_SECRET=secret,
            TELEGRAM_WEBHOOK_LISTEN="127.0.0.1",
            TELEGRAM_WEBHOOK_PORT=str(port),
        )
        bot = await asyncio.create_subprocess_exec(
            str(console_script("styringsbot")),
            "telegram",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            user = User(fake)
            (registered,) = await user.wait_for(lambda: fake.called("setWebhook"), "setWebhook")
            await _listening(port)  # PTB registers the webhook just before it starts serving
            url = f"http://127.0.0.1:{port}/tg/hook"
            async with aiohttp.ClientSession() as session:
                async with session.post(url, json=update) as response:
                    unsigned = response.status
                wrong = {"X-Telegram-Bot-Api-Secret-Token": "not-the-secret"}
                async with session.post(url, json=update, headers=wrong) as response:
                    forged = response.status
                header = {"X-Telegram-Bot-Api-Secret-Token": secret}
                async with session.post(url, json=update, headers=header) as response:
                    signed = response.status
            replies = await user.wait_for(
                lambda: [m for m in user.messages() if m.buttons], "an answer"
            )
        finally:
            bot.terminate()
            await asyncio.wait_for(bot.wait(), 30)
            await fake.stop()
        return registered, unsigned, forged, signed, replies, fake

    registered, unsigned, forged, signed, replies, fake = asyncio.run(scenario())
    assert registered.params["url"] == "https://bot.example.org/tg/hook"
    assert registered.params["secret_token"] == secret
    assert (unsigned, forged, signed) == (403, 403, 200)
    assert len(replies) == 1  # the update with the secret, once
    assert LEAD in visible_text(replies[-1].text)
    assert_all_sent_messages_valid(fake)
