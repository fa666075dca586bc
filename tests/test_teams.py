"""Teams: real Bot Framework activities posted to `POST /api/messages` of `create_app()`.

The activities are shaped as Teams sends them. The bot's replies go, through the Microsoft 365
Agents SDK, to the activity's `serviceUrl`: a local aiohttp "capture server" that records every
request. That fake stands only for the Bot Connector service in Azure; everything on the bot's
side (the SDK, the adapter, the TeamsBot handlers, the conversation service and its store, the
real seed index) is real. `test_teams_flow.py` drives the same bot with Microsoft's TestFlow.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import secrets
import socket
import struct
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import jwt
import pytest
from aiohttp import web
from app_server import Server, T, call, running
from conftest import make_settings
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from microsoft_agents.hosting.core.authorization._entra_issuers import (
    BOTFRAMEWORK_JWKS_URIS,
    BOTFRAMEWORK_PUBLIC_ISSUER,
)
from microsoft_agents.hosting.core.authorization.jwt.jwt_token_validator import (
    JwtTokenValidator,
    _JwkClientManager,
)

from bot import messages
from bot.channels import ChannelConfigError
from bot.channels import teams as teams_channel
from bot.channels.teams import TeamsBot, sdk_configuration
from bot.channels.teams_package import PackageInfo, manifest
from bot.cli import main as cli_main
from bot.commands import help_text, teams_commands
from bot.render import teams as render

QUESTION = "Hvem leder etatsstyringsmøtet?"
FOLLOW_UP = "og hvem skriver referatet?"
LEAD = "kommunaldirektør"  # what the answer to QUESTION says
SLOW_SECONDS = 0.8  # a slow answer: longer than the SDK's 500 ms before its typing indicator

BOT = {"id": "28:bot-app-id", "name": "Styringsbot"}
USER = {
    "id": "29:1abc",
    "name": "Kari Nordmann",
    "aadObjectId": "6f1e4c2a-0000-4000-8000-00000000a1",
}
TENANT = "72f988bf-0000-4000-8000-000000000001"
PERSONAL = {"conversationType": "personal", "tenantId": TENANT, "id": "a:1xyz"}
CHANNEL = {
    "conversationType": "channel",
    "tenantId": TENANT,
    "isGroup": True,
    "id": "19:abc@thread.tacv2;messageid=123",
}
MENTION = "<at>Styringsbot</at>"
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
APP_ID = "00000000-0000-0000-0000-000000000001"
# The only TextBlock texts a card may hold: fixed labels, never document or user text.
FIXED_LABELS = {
    text
    for words in messages.LABELS.values()
    for text in (
        words["sources"],
        words["voted"].format(vote=words["helpful"]),
        words["voted"].format(vote=words["unhelpful"]),
    )
}
REPLY_SECONDS = 30

_ids = itertools.count(1700000000000)


# -- Teams, and the Bot Connector it stands in front of ---------------------------------------


def activity(service_url: str, text: str | None = None, **fields: Any) -> dict[str, Any]:
    """A message activity as Teams posts it in personal chat; `fields` replace top-level keys."""
    message: dict[str, Any] = {
        "type": "message",
        "id": str(next(_ids)),
        "timestamp": "2026-11-23T10:00:00.000Z",
        "localTimestamp": "2026-11-23T11:00:00.000+01:00",
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": USER,
        "conversation": PERSONAL,
        "recipient": BOT,
        "textFormat": "plain",
        "locale": "nb-NO",
        "entities": [{"type": "clientInfo", "locale": "nb-NO", "country": "NO", "platform": "Web"}],
        "channelData": {"tenant": {"id": TENANT}},
    }
    if text is not None:
        message["text"] = text
    message.update(fields)
    return message


@dataclass
class Captured:
    """A request the bot made to the Bot Connector (our capture server), and the id it got."""

    method: str
    path: str
    body: dict[str, Any]
    id: str
    raw_path: str = ""  # the path as it came, percent-encoding and all


@contextlib.asynccontextmanager
async def capture_server(
    refuse_updates: bool = False,
) -> AsyncIterator[tuple[str, list[Captured]]]:
    """A stand-in for the Bot Connector service: records every request, answers 200 {"id"}
    (or, with `refuse_updates`, 404 to a PUT, as for a message Teams no longer lets one edit)."""
    captured: list[Captured] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        reply_id = f"reply-{len(captured) + 1}"
        captured.append(Captured(request.method, request.path, body, reply_id, request.raw_path))
        if refuse_updates and request.method == "PUT":
            return web.json_response({"error": {"code": "NotFound"}}, status=404)
        return web.json_response({"id": reply_id})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    async with running(app) as url:
        yield f"{url}/", captured


@dataclass
class Teams:
    """One user's side of a Teams chat with the bot."""

    client: aiohttp.ClientSession
    service_url: str
    captured: list[Captured]
    seen: int = 0  # how many captured requests earlier turns have consumed

    def activity(self, text: str | None = None, **fields: Any) -> dict[str, Any]:
        return activity(self.service_url, text, **fields)

    async def post(self, body: Any, **kwargs: Any) -> tuple[int, Any]:
        """POST to /api/messages; returns (status, JSON body or None)."""
        async with self.client.post("/api/messages", json=body, **kwargs) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def send(self, text: str | None = None, **fields: Any) -> list[Captured]:
        """Deliver one activity as Teams does and return what the bot sent back for it."""
        message = self.activity(text, **fields)
        status, body = await self.post(message)
        assert status == 202, (status, body)
        return await self.replies()

    async def replies(self, wait: float = REPLY_SECONDS) -> list[Captured]:
        """The new requests at serviceUrl, once a message (not only typing) has arrived."""
        deadline = time.monotonic() + wait
        while not any(c.body.get("type") == "message" for c in self.captured[self.seen :]):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        new = self.captured[self.seen :]
        self.seen = len(self.captured)
        return new

    async def ask(self, text: str, **fields: Any) -> tuple[dict[str, Any], str]:
        """Send a question; the one reply must be an Adaptive Card. Returns the card and the id
        the Bot Connector gave its message (what Teams later sends as `replyToId`)."""
        replies = await self.send(text, **fields)
        message = only_message(replies)
        return card_of(message), next(r.id for r in replies if r.body is message)


def converse(
    server: Server, scenario: Callable[[Teams], Awaitable[T]], refuse_updates: bool = False
) -> T:
    """Serve the bot and a capture server, and run `scenario` as a Teams user."""

    async def with_capture(client: aiohttp.ClientSession) -> T:
        async with capture_server(refuse_updates) as (url, captured):
            return await scenario(Teams(client, url, captured))

    return server.run(with_capture)


# -- reading what came back -----------------------------------------------------------------


def only_message(replies: list[Captured]) -> dict[str, Any]:
    found = [r.body for r in replies if r.body.get("type") == "message"]
    assert len(found) == 1, replies
    return found[0]


def card_of(reply: dict[str, Any]) -> dict[str, Any]:
    attachments = reply.get("attachments") or []
    assert len(attachments) == 1, reply
    assert attachments[0]["contentType"] == CARD_TYPE
    card = attachments[0]["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    assert_textblocks_are_labels(card)
    return card


def text_of(replies: list[Captured]) -> str:
    reply = only_message(replies)
    assert not reply.get("attachments"), reply
    assert isinstance(reply.get("text"), str) and reply["text"].strip(), reply
    return reply["text"]


def walk(node: Any) -> list[dict[str, Any]]:
    """Every JSON object in `node`, depth first."""
    if isinstance(node, dict):
        return [node, *(d for value in node.values() for d in walk(value))]
    if isinstance(node, list):
        return [d for item in node for d in walk(item)]
    return []


def card_texts(card: dict[str, Any]) -> list[str]:
    """Every "text" value in the card, nested cards included."""
    return [d["text"] for d in walk(card) if isinstance(d.get("text"), str)]


def card_text(card: dict[str, Any]) -> str:
    return " ".join(card_texts(card))


def of_type(card: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [d for d in walk(card) if d.get("type") == kind]


def assert_textblocks_are_labels(card: dict[str, Any]) -> None:
    """Teams reads a TextBlock as markdown: only fixed labels may be one; the rest is TextRuns."""
    for block in of_type(card, "TextBlock"):
        assert block["text"] in FIXED_LABELS, block


def feedback(card: dict[str, Any], helpful: bool) -> dict[str, Any]:
    """What Teams posts as `value` when the 👍 (or 👎) button of `card` is pressed."""
    buttons = of_type(card, "Action.Submit")
    assert len(buttons) == 2, buttons
    return buttons[0 if helpful else 1]["data"]


# -- answers --------------------------------------------------------------------------------


def test_personal_chat_question_gets_an_adaptive_card(make_server: Callable[..., Server]):
    replies = converse(make_server(), lambda teams: teams.send(QUESTION))
    # A quick answer needs no typing indicator: the SDK's starts after 500 ms, and ours is gone.
    assert [r.body.get("type") for r in replies] == ["message"], replies
    [message] = replies
    assert message.method == "POST"
    assert message.body["conversation"]["id"] == "a:1xyz"
    assert message.body["recipient"]["id"] == USER["id"]
    assert message.body.get("replyToId")
    assert message.path == f"/v3/conversations/a:1xyz/activities/{message.body['replyToId']}"
    assert LEAD in message.body["summary"]  # the notification preview
    card = card_of(message.body)
    text = card_text(card)
    assert LEAD in text
    assert "Styringsdialogen – sånn gjør vi det her" in text and "lysbilde" in text
    submits = of_type(card, "Action.Submit")
    assert len(submits) == 2
    turns = {s["data"][render.ACTION_KEY]["turn"] for s in submits}
    assert len(turns) == 1 and all(isinstance(t, str) and t for t in turns)
    assert [s["data"][render.ACTION_KEY]["helpful"] for s in submits] == [True, False]
    assert all(s["data"][render.ACTION_KEY]["action"] == "feedback" for s in submits)


def test_a_slow_answer_shows_one_typing_indicator_then_the_card(
    make_server: Callable[..., Server],
):
    replies = converse(make_server(delay=SLOW_SECONDS), lambda teams: teams.send(QUESTION))
    assert [r.body.get("type") for r in replies] == ["typing", "message"], replies
    typing = replies[0]
    assert typing.body["conversation"]["id"] == "a:1xyz"
    assert typing.path.startswith("/v3/conversations/a:1xyz/activities")
    assert LEAD in card_text(card_of(replies[1].body))


def test_the_card_is_accessible(make_server: Callable[..., Server]):
    """fallbackText for clients without cards, speak for screen readers, the card's language,
    and controls a screen reader can tell apart (each source button names its source)."""

    async def scenario(teams: Teams) -> list[dict[str, Any]]:
        return [
            (await teams.ask(question))[0]
            for question in (QUESTION, "Er et fagmøte styring?", "Who chairs the meeting?")
        ]

    cards = converse(make_server(), scenario)
    assert [card["lang"] for card in cards] == ["nb-NO", "nb-NO", "en-GB"]
    for card in cards:
        assert card["fallbackText"].strip() and card["speak"].strip()
        assert "<" not in card["speak"] and "[" not in card["speak"]  # words, not markup
        titles = [a["title"] for a in walk(card) if str(a.get("type")).startswith("Action.")]
        assert len(titles) == len(set(titles)), titles  # no two controls sound the same
        # Each source's button names its number, as the source's heading "[n] «Title» …" does.
        headings = [r["text"] for r in of_type(card, "TextRun") if r["text"].startswith("[")]
        numbers = [int(h.strip(" []")) for h in headings if h.strip(" []").isdigit()]
        words = messages.labels("en" if card["lang"] == "en-GB" else "nb")
        buttons = [a["title"] for a in of_type(card, "Action.ShowCard")]
        assert numbers and buttons == [words["whole"].format(n=n) for n in numbers], card
    first = cards[0]
    assert LEAD in first["fallbackText"] and "Kilder:" in first["fallbackText"]
    assert LEAD in first["speak"] and "Kilder" not in first["speak"]
    assert of_type(first, "Action.ShowCard")[0]["title"] == "Vis hele kilde 1"


def test_expect_replies_returns_the_card_in_the_response(make_server: Callable[..., Server]):
    async def scenario(teams: Teams) -> tuple[int, Any, list[Captured]]:
        status, body = await teams.post(teams.activity(QUESTION, deliveryMode="expectReplies"))
        return status, body, list(teams.captured)

    status, body, captured = converse(make_server(), scenario)
    assert status == 200, body
    found = [a for a in body["activities"] if a["type"] == "message"]
    assert len(found) == 1, body
    assert LEAD in card_text(card_of(found[0]))
    assert captured == []  # nothing went to serviceUrl


def test_follow_up_in_the_same_conversation(make_server: Callable[..., Server]):
    async def scenario(teams: Teams) -> tuple[dict[str, Any], dict[str, Any]]:
        return (await teams.ask(QUESTION))[0], (await teams.ask(FOLLOW_UP))[0]

    first, follow = converse(make_server(), scenario)
    assert LEAD in card_text(first)
    assert "referat" in card_text(follow).lower()


def test_channel_mention_is_stripped(make_server: Callable[..., Server]):
    mention = {"type": "mention", "text": MENTION, "mentioned": BOT}

    async def scenario(teams: Teams) -> tuple[dict[str, Any], list[Captured]]:
        replies = await teams.send(
            f"{MENTION} {QUESTION}",
            conversation=CHANNEL,
            entities=[mention, *teams.activity()["entities"]],
            channelData={"tenant": {"id": TENANT}, "teamsChannelId": "19:abc@thread.tacv2"},
        )
        return card_of(only_message(replies)), replies

    card, replies = converse(make_server(), scenario)
    assert LEAD in card_text(card)
    assert "Styringsbot" not in card_text(card)
    assert all(r.body["conversation"]["id"] == CHANNEL["id"] for r in replies)


# -- feedback -------------------------------------------------------------------------------


@pytest.mark.parametrize("helpful", [False, True])
def test_feedback_updates_the_card_it_came_from(make_server: Callable[..., Server], helpful: bool):
    async def scenario(teams: Teams) -> tuple[str, list[Captured]]:
        card, card_id = await teams.ask(QUESTION)
        # Teams posts an Action.Submit as a message with no text, the button's data as `value`
        # and the card's message id as `replyToId`.
        return card_id, await teams.send(value=feedback(card, helpful), replyToId=card_id)

    server = make_server()
    card_id, replies = converse(server, scenario)
    [update] = replies  # the card, updated in place: no new message
    assert update.method == "PUT"
    assert update.path == f"/v3/conversations/a:1xyz/activities/{card_id}"
    card = card_of(update.body)
    words = messages.labels("nb")
    vote = words["helpful"] if helpful else words["unhelpful"]
    assert words["voted"].format(vote=vote) in card_texts(card)
    assert ("Du svarte: 👍 Nyttig" in card_texts(card)) is helpful
    assert not of_type(card, "Action.Submit")  # no buttons left to press
    assert LEAD in card_text(card)  # still the same answer
    events = server.events("up", "down")
    assert [(e.kind, e.channel) for e in events] == [("up" if helpful else "down", "teams")]
    assert events[0].question == QUESTION
    assert LEAD in events[0].answer
    assert events[0].citations and "lysbilde" in events[0].citations[0]["location"]


def test_feedback_without_reply_to_id_is_thanked_in_a_message(
    make_server: Callable[..., Server],
):
    async def scenario(teams: Teams) -> list[str]:
        card, _ = await teams.ask(QUESTION)
        return [text_of(await teams.send(value=feedback(card, vote))) for vote in (True, False)]

    server = make_server()
    thanks = converse(server, scenario)
    assert thanks == [messages.THANKS[True]["nb"], messages.THANKS[False]["nb"]]
    assert [e.kind for e in server.events("up", "down")] == ["down"]  # the second replaced it


def test_a_card_teams_will_not_update_is_thanked_in_a_message(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
):
    async def scenario(teams: Teams) -> list[Captured]:
        card, card_id = await teams.ask(QUESTION)
        return await teams.send(value=feedback(card, True), replyToId=card_id)

    server = make_server()
    update, thanks = converse(server, scenario, refuse_updates=True)
    assert update.method == "PUT"
    assert thanks.method == "POST" and text_of([thanks]) == messages.THANKS[True]["nb"]
    assert [e.kind for e in server.events("up", "down")] == ["up"]
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    "value",
    [
        {render.ACTION_KEY: {"action": "feedback", "turn": "0123456789ab", "helpful": True}},
        {render.ACTION_KEY: {"action": "feedback", "turn": 5, "helpful": True}},
        {render.ACTION_KEY: {"action": "other"}},
        {render.ACTION_KEY: "not an object"},
        {"something": "else"},
    ],
    ids=["unknown turn", "turn not a string", "unknown action", "not an object", "foreign value"],
)
def test_odd_card_actions_get_a_polite_reply(make_server: Callable[..., Server], value: Any):
    server = make_server()
    text = text_of(converse(server, lambda teams: teams.send(value=value, replyToId="reply-9")))
    assert "Traceback" not in text and text != messages.say(messages.FAILED, "nb")
    assert server.events("up", "down") == []


# -- commands -------------------------------------------------------------------------------


def test_source_command_shows_the_whole_passage(
    make_server: Callable[..., Server], seed_engine: Any
):
    async def scenario(teams: Teams) -> list[Captured]:
        await teams.ask(QUESTION)
        return await teams.send("kilde 1")

    replies = converse(make_server(), scenario)
    first = seed_engine.ask(QUESTION).citations[0]
    source = card_of(only_message(replies))
    runs = [r["text"].strip() for r in of_type(source, "TextRun")]
    assert all(p.strip() in runs for p in first.text.split("\n\n") if p.strip())
    assert first.title in card_text(source) and first.source in runs
    assert source["fallbackText"].strip() and source["speak"].startswith("Kilde 1:")
    assert source["lang"] == "nb-NO"


def test_commands_get_polite_text_replies(make_server: Callable[..., Server]):
    async def scenario(teams: Teams) -> dict[str, list[Captured]]:
        before = {"kilde 1 (no answer yet)": await teams.send("kilde 1")}
        await teams.ask(QUESTION)
        commands = ["kilde 99", "kilde", "/kilde x", "hjelp", "/foo", "ny samtale", "kilde 2"]
        return before | {command: await teams.send(command) for command in commands}

    replies = converse(make_server(), scenario)
    assert text_of(replies["kilde 1 (no answer yet)"]) == messages.NO_SOURCES_YET["nb"]
    assert "kilde 1 til" in text_of(replies["kilde 99"])
    assert "et tall fra 1 til" in text_of(replies["kilde"])
    assert "et tall fra 1 til" in text_of(replies["/kilde x"])
    assert text_of(replies["hjelp"]) == help_text("nb", "teams")
    unknown = text_of(replies["/foo"])
    assert unknown == messages.say(messages.UNKNOWN_COMMAND, "nb", help="hjelp")
    assert text_of(replies["ny samtale"]) == messages.NEW_CONVERSATION["nb"]
    assert text_of(replies["kilde 2"]) == messages.NO_SOURCES_YET["nb"]  # "ny samtale" forgot


def test_kilde_with_a_word_is_a_question(make_server: Callable[..., Server]):
    card, _ = converse(make_server(), lambda teams: teams.ask("kilde x"))
    assert card_text(card).strip()


def test_ny_from_the_teams_command_list_starts_afresh(make_server: Callable[..., Server]):
    async def scenario(teams: Teams) -> tuple[list[Captured], list[Captured]]:
        await teams.ask(QUESTION)
        return await teams.send("ny"), await teams.send("kilde 1")

    offered = help_text("nb", "teams")
    assert "\nny – " in offered and "\nkilde N – " in offered  # what Teams users are told to type
    new, source = converse(make_server(), scenario)
    assert text_of(new) == messages.NEW_CONVERSATION["nb"]
    assert text_of(source) == messages.NO_SOURCES_YET["nb"]


def test_an_image_without_text_gets_i_read_text(make_server: Callable[..., Server]):
    image = {"contentType": "image/png", "contentUrl": "https://example.invalid/bilde.png"}
    reply = converse(make_server(), lambda teams: teams.send(attachments=[image]))
    assert text_of(reply) == messages.NOT_TEXT["nb"]


# -- hostile input --------------------------------------------------------------------------


def test_markup_in_a_question_is_harmless(make_server: Callable[..., Server]):
    # A real question in markup: answered, with its buttons (markup alone is no question).
    question = "<b>Hvem</b> leder *etatsstyringsmøtet*? & _z_ [l](http://a)"
    reply = converse(make_server(), lambda teams: teams.send(question))
    card = card_of(only_message(reply))  # TextBlocks checked to be labels only
    assert card_text(card).strip()
    assert of_type(card, "Action.Submit")


def test_a_10000_character_question_is_refused_politely(make_server: Callable[..., Server]):
    reply = converse(make_server(), lambda teams: teams.send("hvem " * 2000))
    assert "for langt" in text_of(reply)


def test_source_text_is_never_in_a_textblock(make_server: Callable[..., Server]):
    questions = [QUESTION, "Er et fagmøte styring?", "Hva står MRS for?", "Hva er TSL?"]

    async def scenario(teams: Teams) -> list[dict[str, Any]]:
        cards = [(await teams.ask(question))[0] for question in questions]
        cards.append(card_of(only_message(await teams.send("kilde 1"))))
        return cards

    for card in converse(make_server(), scenario):
        assert_textblocks_are_labels(card)
        assert of_type(card, "RichTextBlock")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"type": "message", "text": ', 400),
        (b'{"type": 5}', 400),
        (b"[1, 2]", 400),
        (b'{"type": "message", "text": "hei", "serviceUrl": "http://127.0.0.1:9/"}', 400),
    ],
    ids=["malformed JSON", "type not a string", "a JSON list", "missing conversation"],
)
def test_invalid_activities_are_400(make_server: Callable[..., Server], body: bytes, status: int):
    async def scenario(teams: Teams) -> tuple[tuple[int, Any], dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        async with teams.client.post("/api/messages", data=body, headers=headers) as response:
            result = response.status, await response.text()
        return result, (await teams.ask(QUESTION))[0]  # and the bot still answers

    (got, text), card = converse(make_server(), scenario)
    assert got == status, text
    assert "error" in json.loads(text)
    assert LEAD in card_text(card)


# -- hostile activities -----------------------------------------------------------------------


def _records(caplog: pytest.LogCaptureFixture, since: int, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records[since:] if r.levelno >= level]


HOSTILE_ACTIVITIES: dict[str, dict[str, Any]] = {
    "no serviceUrl": {"serviceUrl": None},
    "a relative serviceUrl": {"serviceUrl": "v3/conversations/"},
    "a file: serviceUrl": {"serviceUrl": "file:///etc/"},
    "a javascript: serviceUrl": {"serviceUrl": "javascript:alert(1)"},
    "a serviceUrl without a host": {"serviceUrl": "http:///v3/"},
    "a serviceUrl with a port out of range": {"serviceUrl": "http://127.0.0.1:99999/"},
    "a serviceUrl with a space in its host": {"serviceUrl": "http://exa mple.com/"},
    "a serviceUrl of 3000 characters": {"serviceUrl": "http://127.0.0.1:9/" + "a" * 3000},
    "an id of 100 000 characters": {"id": "1" * 100_000},
    "a replyToId of 1001 characters": {"replyToId": "r" * 1001},
    "a conversation.id of 1001 characters": {"conversation": {**PERSONAL, "id": "c" * 1001}},
    "a from.id of 1001 characters": {"from": {**USER, "id": "u" * 1001}},
    "a conversation.id with a line break": {"conversation": {**PERSONAL, "id": "a:1\r\nX: y"}},
    "a conversation.id that is ..": {"conversation": {**PERSONAL, "id": ".."}},
    # The SDK cuts a conversation.id to 150 characters: what is left must not be "..." either.
    "a conversation.id of 150 dots and more": {"conversation": {**PERSONAL, "id": "." * 150 + "x"}},
    "a from.id with a lone surrogate": {"from": {**USER, "id": "29:\ud800"}},
}


@pytest.mark.parametrize("case", list(HOSTILE_ACTIVITIES))
def test_a_hostile_activity_is_400_and_one_log_line(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture, case: str
):
    """Refused before the SDK sees it: one JSON sentence, one warning, nothing sent anywhere;
    and the bot still answers the next activity."""
    caplog.set_level(logging.INFO)

    async def scenario(teams: Teams) -> tuple[int, Any, list[logging.LogRecord], list[Any]]:
        message = teams.activity(QUESTION, **HOSTILE_ACTIVITIES[case])
        message = {k: v for k, v in message.items() if v is not None}
        before = len(caplog.records)
        status, body = await call(teams.client, "POST", "/api/messages", json=message)
        await asyncio.sleep(0.2)  # anything sent to serviceUrl would have arrived by now
        logged = _records(caplog, before, logging.WARNING)
        sent = list(teams.captured)
        await teams.ask(QUESTION)
        return status, body, logged, sent

    status, body, logged, sent = converse(make_server(), scenario)
    assert status == 400, body
    assert set(body) == {"error"} and "\n" not in body["error"], body
    assert [(r.name, r.levelname) for r in logged] == [("bot.channels.teams", "WARNING")], logged
    assert len(logged[0].getMessage()) < 300
    assert sent == []
    assert not [r for r in caplog.records if r.exc_info or r.stack_info]
    assert "Traceback" not in caplog.text


def test_ids_are_percent_encoded_in_the_connector_path(make_server: Callable[..., Server]):
    """The ids of an activity never build a path of their own at the Bot Connector: the reply
    (and a card update) arrive at /v3/conversations/{id}/activities/{id} with each id one
    percent-encoded segment; nothing arrives at /v3/other."""
    conversation = "../../v3/other?x=1#frag"
    activity_id = "1?y=2#g/../../v3/other"
    card_id = "r/../../../v3/other?z=3"

    async def scenario(teams: Teams) -> tuple[list[Captured], list[Captured]]:
        fields = {"conversation": {**PERSONAL, "id": conversation}}
        replies = await teams.send(QUESTION, id=activity_id, **fields)
        card = card_of(only_message(replies))
        update = await teams.send(value=feedback(card, True), replyToId=card_id, **fields)
        return replies, update

    server = make_server()
    replies, update = converse(server, scenario)
    [reply] = replies
    [put] = update
    for sent, method, last in ((reply, "POST", activity_id), (put, "PUT", card_id)):
        assert sent.method == method
        segments = sent.raw_path.split("/")
        assert segments[:3] == ["", "v3", "conversations"] and len(segments) == 6, sent.raw_path
        assert segments[4] == "activities", sent.raw_path
        assert unquote(segments[3]) == conversation and unquote(segments[5]) == last
        assert "?" not in sent.raw_path and "#" not in sent.raw_path
        assert sent.body["conversation"]["id"] == conversation  # the body keeps the id as is
    assert reply.body["replyToId"] == activity_id
    assert [e.kind for e in server.events("up", "down")] == ["up"]


# -- an unreachable Bot Connector -----------------------------------------------------------


def _closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("delay", [0.0, SLOW_SECONDS], ids=["quick answer", "slow answer"])
def test_an_unreachable_service_url_is_502_and_one_log_line(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture, delay: float
):
    """Nothing can be delivered: 502 with a JSON error, one error line, no traceback — also when
    the SDK's typing timer (which fires for the slow answer) has tried to send first."""
    dead = f"http://127.0.0.1:{_closed_port()}/"
    server = make_server(delay=delay)

    async def scenario(client: aiohttp.ClientSession) -> tuple[int, Any]:
        async with client.post("/api/messages", json=activity(dead, QUESTION)) as response:
            return response.status, await response.json()

    caplog.set_level(logging.DEBUG)
    status, body = server.run(scenario)
    assert status == 502
    assert set(body) == {"error"} and "Bot Connector" in body["error"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.name, r.levelname) for r in errors] == [("bot.channels.teams", "ERROR")], errors
    line = errors[0].getMessage()
    assert dead in line and "\n" not in line
    assert not [r for r in caplog.records if r.exc_info or r.stack_info]
    assert "Traceback" not in caplog.text
    if delay:  # the typing timer did try to send
        assert any("Activity type is typing" in r.getMessage() for r in caplog.records)
    # The question was answered all the same: its sources can be shown when Teams is back.
    assert server.service.last_turn(f"teams:a:1xyz:{USER['id']}") is not None


def test_an_unreachable_service_url_for_a_vote_is_502(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
):
    server = make_server()

    async def scenario(teams: Teams) -> tuple[int, Any]:
        card, card_id = await teams.ask(QUESTION)
        dead = f"http://127.0.0.1:{_closed_port()}/"
        return await teams.post(activity(dead, value=feedback(card, True), replyToId=card_id))

    status, body = converse(server, scenario)
    assert status == 502 and set(body) == {"error"}
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert "Traceback" not in caplog.text
    assert [e.kind for e in server.events("up", "down")] == ["up"]  # the vote itself counted


@contextlib.asynccontextmanager
async def odd_connector(kind: str) -> AsyncIterator[str]:
    """A serviceUrl that cannot take a reply: it closes each connection at once ("closes"),
    answers bytes that are not HTTP ("not HTTP"), or refuses with an HTTP error ("403")."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            if kind == "not HTTP":
                writer.write(b"SSH-2.0-OpenSSH_9.6\r\n" + b"\x00" * 64)
            elif kind == "403":
                body = b'{"error": {"code": "BotNotInConversationRoster"}}'
                writer.write(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["closes", "not HTTP", "403"])
def test_a_connector_that_cannot_take_the_reply_is_502_and_one_log_line(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture, kind: str
):
    server = make_server()

    async def scenario(client: aiohttp.ClientSession) -> tuple[int, Any]:
        async with (
            odd_connector(kind) as url,
            client.post("/api/messages", json=activity(url, QUESTION)) as response,
        ):
            return response.status, await response.json()

    caplog.set_level(logging.INFO)
    status, body = server.run(scenario)
    assert status == 502, body
    assert set(body) == {"error"} and "Bot Connector" in body["error"]
    said = "refused it (HTTP 403)" if kind == "403" else "did not answer"
    assert said in body["error"]
    ours = [r for r in caplog.records if r.name.startswith("bot.") and r.levelno >= logging.WARNING]
    assert [(r.name, r.levelname) for r in ours] == [("bot.channels.teams", "ERROR")], ours
    line = ours[0].getMessage()
    assert said in line and "\n" not in line and len(line) < 400, line
    assert not [r for r in caplog.records if r.exc_info or r.stack_info]
    assert "Traceback" not in caplog.text


# -- state survives a restart ---------------------------------------------------------------


def test_a_restart_keeps_the_conversation(make_server: Callable[..., Server], seed_engine: Any):
    """A question, then a new service and a new TeamsBot on the same store file: `kilde 1`, 👍
    on the card from before the restart, and a follow-up all still work."""
    server = make_server()
    card, card_id = converse(server, lambda teams: teams.ask(QUESTION))
    server.restart()

    async def after(teams: Teams) -> dict[str, list[Captured]]:
        return {
            "source": await teams.send("kilde 1"),
            "vote": await teams.send(value=feedback(card, True), replyToId=card_id),
            "follow-up": await teams.send(FOLLOW_UP),
        }

    replies = converse(server, after)
    first = seed_engine.ask(QUESTION).citations[0]
    source = card_of(only_message(replies["source"]))
    assert first.source in [r["text"] for r in of_type(source, "TextRun")]
    [update] = replies["vote"]
    assert update.method == "PUT" and update.path.endswith(f"/activities/{card_id}")
    assert "Du svarte: 👍 Nyttig" in card_texts(card_of(update.body))
    assert [e.kind for e in server.events("up", "down")] == ["up"]
    assert "referat" in card_text(card_of(only_message(replies["follow-up"]))).lower()


# -- conversation updates -------------------------------------------------------------------


def _members_added(teams: Teams, member: dict[str, Any], conversation: dict[str, Any]):
    return teams.activity(
        type="conversationUpdate", membersAdded=[member], conversation=conversation
    )


@pytest.mark.parametrize(
    ("member", "conversation", "welcomed"),
    [(BOT, PERSONAL, True), (USER, PERSONAL, False), (BOT, CHANNEL, False)],
    ids=["bot in personal chat", "a user", "bot in a team"],
)
def test_members_added_welcome(
    make_server: Callable[..., Server], member: Any, conversation: Any, welcomed: bool
):
    async def scenario(teams: Teams) -> list[Captured]:
        status, body = await teams.post(_members_added(teams, member, conversation))
        assert status == 202, body
        return await teams.replies(wait=REPLY_SECONDS if welcomed else 0.5)

    replies = converse(make_server(), scenario)
    if welcomed:
        card = card_of(only_message(replies))
        text = card["fallbackText"]
        assert text.startswith(messages.WELCOME["nb"])
        assert text.endswith(help_text("nb", "teams"))
        assert "kilde N" in text and "/kilde" not in text  # Teams users type the bare word
        assert "«intro»" not in text and "intro gir deg et kort kurs" in text  # the course offered
        (start,) = of_type(card, "Action.Submit")
        assert start["data"] == {"styringsbot": {"action": "intro"}}
    else:
        assert replies == []


# -- authentication -------------------------------------------------------------------------


def test_jwt_is_required_when_an_app_id_is_set(make_server: Callable[..., Server]):
    server = make_server(
        microsoft_app_id=APP_ID, microsoft_app_password="x", teams_allow_anonymous=False
    )

    async def scenario(teams: Teams) -> dict[str, Any]:
        message = teams.activity(QUESTION)
        return {
            "none": await teams.post(message),
            "garbage": await teams.post(message, headers={"Authorization": "Bearer abc.def.ghi"}),
            "not bearer": await teams.post(message, headers={"Authorization": "Basic eDp4"}),
            "healthz": await call(teams.client, "GET", "/healthz"),
            "captured": list(teams.captured),
        }

    results = converse(server, scenario)
    for case in ("none", "garbage", "not bearer"):
        status, body = results[case]
        assert status == 401, (case, body)
        assert isinstance(body, dict) and "error" in body, (case, body)
    assert results["healthz"][0] == 200 and results["healthz"][1]["teams"] == "jwt"
    assert results["captured"] == []


# Microsoft's token-signing keys, served by a local stand-in for login.botframework.com. The SDK
# has no setting for where it fetches them: it takes the address from its table of issuers
# (`BOTFRAMEWORK_JWKS_URIS`, _entra_issuers.py), which the tests point at the stand-in.


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**public, "kid": kid, "use": "sig", "alg": "RS256"}


def _claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": BOTFRAMEWORK_PUBLIC_ISSUER,
        "aud": APP_ID,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "serviceurl": "https://smba.trafficmanager.net/emea/",
    }


def _token(key: rsa.RSAPrivateKey, kid: str) -> str:
    return jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": kid})


def _unsigned(header: dict[str, Any]) -> str:
    """A token with exactly this header (PyJWT would not write one without a string kid)."""

    def part(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(_claims())}.{part('not a signature')}"


@contextlib.asynccontextmanager
async def key_server(
    monkeypatch: pytest.MonkeyPatch, keys: list[dict[str, Any]], up: bool = True
) -> AsyncIterator[list[str]]:
    """Serve `keys` (the list itself: add to it to publish a key) as Microsoft's JWKS, or 503
    when not `up`; the SDK fetches Bot Framework keys here. Yields the paths fetched."""
    fetched: list[str] = []

    async def serve(request: web.Request) -> web.Response:
        fetched.append(request.path)
        if not up:
            return web.json_response({"error": "down"}, status=503)
        return web.json_response({"keys": keys})

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    async with running(app) as url:
        keys_url = f"{url}/v1/.well-known/keys"
        monkeypatch.setitem(BOTFRAMEWORK_JWKS_URIS, BOTFRAMEWORK_PUBLIC_ISSUER, keys_url)
        yield fetched


@pytest.fixture
def jwt_server(
    make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> Callable[[], Server]:
    """`jwt_server()`: a server that requires Bot Framework tokens, with no keys cached yet."""
    monkeypatch.setattr(JwtTokenValidator, "_jwk_client_manager", _JwkClientManager())

    def make() -> Server:
        return make_server(
            microsoft_app_id=APP_ID, microsoft_app_password="x", teams_allow_anonymous=False
        )

    return make


@pytest.mark.parametrize("up", [True, False], ids=["keys served", "key server down"])
def test_forged_tokens_do_not_fetch_the_keys_each_time(
    jwt_server: Callable[[], Server],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    up: bool,
):
    """20 tokens signed with a key Microsoft never published, each naming a random kid: all
    401, and Microsoft's keys are fetched once, not once per token."""
    genuine, forger = _rsa_key(), _rsa_key()

    async def scenario(teams: Teams) -> tuple[list[tuple[int, Any]], list[str]]:
        async with key_server(monkeypatch, [_jwk(genuine, "key-1")], up=up) as fetched:

            async def forged() -> tuple[int, Any]:
                bearer = f"Bearer {_token(forger, secrets.token_hex(8))}"
                return await teams.post(teams.activity(QUESTION), headers={"Authorization": bearer})

            results = [await forged() for _ in range(10)]
            results += await asyncio.gather(*(forged() for _ in range(10)))
            return results, list(fetched)

    results, fetched = converse(jwt_server(), scenario)
    assert [status for status, _ in results] == [401] * 20, results
    assert all(set(body) == {"error"} for _, body in results)
    assert 1 <= len(fetched) <= 2, fetched
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    "header",
    [{"alg": "RS256", "typ": "JWT"}, {"alg": "RS256", "kid": 5}, {"alg": "RS256", "kid": ""}],
    ids=["no kid", "kid a number", "kid empty"],
)
def test_a_token_without_a_kid_is_401_and_one_log_line(
    jwt_server: Callable[[], Server],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    header: dict[str, Any],
):
    caplog.set_level(logging.INFO)

    async def scenario(teams: Teams) -> tuple[int, Any, list[str]]:
        async with key_server(monkeypatch, [_jwk(_rsa_key(), "key-1")]) as fetched:
            bearer = f"Bearer {_unsigned(header)}"
            status, body = await teams.post(
                teams.activity(QUESTION), headers={"Authorization": bearer}
            )
            return status, body, list(fetched)

    status, body, fetched = converse(jwt_server(), scenario)
    assert status == 401 and set(body) == {"error"}, body
    assert fetched == []  # nothing to look up
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1 and "\n" not in logged[0].getMessage(), logged
    assert not [r for r in caplog.records if r.exc_info or r.stack_info]
    assert "Traceback" not in caplog.text


def test_tokens_are_checked_against_cached_keys_and_new_keys_are_found(
    jwt_server: Callable[[], Server], monkeypatch: pytest.MonkeyPatch
):
    """The SDK's own JWT check, with the bot's key cache and the stand-in key server: a token
    signed with a published key passes (one fetch for any number of tokens); a key published
    later is fetched once the interval for unknown keys has passed, and then passes too."""
    server = jwt_server()
    first, second = _rsa_key(), _rsa_key()
    published = [_jwk(first, "key-1")]

    async def scenario(teams: Teams) -> dict[str, Any]:
        validator = JwtTokenValidator(TeamsBot(server.service, server.settings).auth_configuration)
        results: dict[str, Any] = {}
        async with key_server(monkeypatch, published) as fetched:
            claims = [await validator.validate_token(_token(first, "key-1")) for _ in range(3)]
            results["claims"] = [c.get_claim_value("aud") for c in claims]
            results["fetched once"] = len(fetched)
            published.append(_jwk(second, "key-2"))
            with pytest.raises(jwt.PyJWTError):
                await validator.validate_token(_token(second, "key-2"))  # too soon to refetch
            results["fetched too soon"] = len(fetched)
            monkeypatch.setattr(teams_channel, "UNKNOWN_KEY_SECONDS", 0.0)
            claims = await validator.validate_token(_token(second, "key-2"))
            results["new key"] = claims.get_claim_value("aud")
            results["fetched again"] = len(fetched)
        return results

    results = converse(server, scenario)
    assert results["claims"] == [APP_ID] * 3
    assert results["fetched once"] == 1 and results["fetched too soon"] == 1
    assert results["new key"] == APP_ID and results["fetched again"] == 2


def test_teams_not_configured_is_401_naming_the_setting(make_server: Callable[..., Server]):
    async def scenario(teams: Teams) -> tuple[tuple[int, Any], tuple[int, Any]]:
        return await teams.post(teams.activity(QUESTION)), await call(
            teams.client, "GET", "/healthz"
        )

    (status, body), (_, health) = converse(make_server(teams_allow_anonymous=False), scenario)
    assert status == 401
    assert set(body) == {"error"} and "MICROSOFT_APP_ID" in body["error"]
    assert health["teams"] == "not configured"


def test_sdk_configuration(tmp_path: Path, seed_knowledge: Path):
    def settings(**values: Any) -> Any:
        return make_settings(tmp_path, seed_knowledge, **values)

    with pytest.raises(ChannelConfigError, match="TEAMS_ALLOW_ANONYMOUS"):
        sdk_configuration(
            settings(
                microsoft_app_id=APP_ID, microsoft_app_password="x", teams_allow_anonymous=True
            )
        )
    with pytest.raises(ChannelConfigError, match="MICROSOFT_APP_PASSWORD"):
        sdk_configuration(settings(microsoft_app_id=APP_ID))
    connection = sdk_configuration(
        settings(microsoft_app_id=APP_ID, microsoft_app_password="x", microsoft_app_tenant_id="t")
    )["CONNECTIONS"]["SERVICE_CONNECTION"]["SETTINGS"]
    assert connection == {
        "ANONYMOUS_ALLOWED": False,
        "AUTHTYPE": "ClientSecret",
        "CLIENTID": APP_ID,
        "CLIENTSECRET": "x",
        "TENANTID": "t",
    }
    anonymous = sdk_configuration(settings(teams_allow_anonymous=True))
    assert anonymous["CONNECTIONS"]["SERVICE_CONNECTION"]["SETTINGS"] == {"ANONYMOUS_ALLOWED": True}


# -- the app package ------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_teams_package(tmp_path: Path, in_tmp_cwd: Path, capsys: pytest.CaptureFixture[str]):
    output = tmp_path / "p.zip"
    assert cli_main(["teams-package", "--app-id", APP_ID, "--output", str(output)]) == 0
    with zipfile.ZipFile(output) as archive:
        assert set(archive.namelist()) == {"manifest.json", "color.png", "outline.png"}
        manifest_ = json.loads(archive.read("manifest.json"))
        assert _png_size(archive.read("color.png")) == (192, 192)
        assert _png_size(archive.read("outline.png")) == (32, 32)
    assert manifest_["manifestVersion"]
    assert manifest_["id"] == manifest_["bots"][0]["botId"] == APP_ID
    assert {"personal", "team"} <= set(manifest_["bots"][0]["scopes"])
    [commands] = manifest_["bots"][0]["commandLists"]
    assert commands["commands"] == teams_commands()
    assert str(output) in capsys.readouterr().out


def test_the_manifest_offers_the_commands_teams_users_type():
    """The command list comes from bot/commands.py, as a Teams user sends each command."""
    commands = {c["title"]: c["description"] for c in teams_commands()}
    assert set(commands) == {"hjelp", "intro", "kilde 1", "ny"}
    assert all(0 < len(d) <= 128 for d in commands.values())
    assert "kilde 1" in commands["kilde 1"]
    [bot] = manifest(PackageInfo(APP_ID))["bots"]
    assert bot["commandLists"][0]["commands"] == teams_commands()
    offered = help_text("nb", "teams")
    assert all(title.split()[0] in offered for title in commands)


def test_teams_package_refuses_a_non_guid(
    tmp_path: Path, in_tmp_cwd: Path, capsys: pytest.CaptureFixture[str]
):
    output = tmp_path / "p.zip"
    assert cli_main(["teams-package", "--app-id", "not-a-guid", "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Feil:") and "GUID" in err and len(err.strip().splitlines()) == 1
    assert not output.exists()
