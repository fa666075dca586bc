"""Teams: real Bot Framework activities posted to `POST /api/messages` of `create_app()`.

The activities are shaped as Teams sends them. The bot's replies go, through the Microsoft 365
Agents SDK, to the activity's `serviceUrl`: a local aiohttp "capture server" that records every
request. That fake stands only for the Bot Connector service in Azure; everything on the bot's
side (the SDK, the adapter, the TeamsBot handlers, the service, the real seed index) is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import struct
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from conftest import make_settings
from test_http_api import QUESTION, Server, call, running
from test_http_api import make_server as make_server  # the fixture, shared

from bot import render
from bot.channels import ChannelConfigError
from bot.channels.teams import sdk_configuration
from bot.cli import main as cli_main

T = TypeVar("T")

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
FIXED_LABELS = {labels["sources"] for labels in render.LABELS.values()}
REPLY_SECONDS = 30

_ids = itertools.count(1700000000000)


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
    """A request the bot made to the Bot Connector (our capture server)."""

    method: str
    path: str
    body: dict[str, Any]


@contextlib.asynccontextmanager
async def capture_server() -> AsyncIterator[tuple[str, list[Captured]]]:
    """A stand-in for the Bot Connector service: records every request, answers 200 {"id"}."""
    captured: list[Captured] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        captured.append(Captured(request.method, request.path, body))
        return web.json_response({"id": f"reply-{len(captured)}"})

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

    async def ask(self, text: str, **fields: Any) -> dict[str, Any]:
        """Send a question; the one reply must be an Adaptive Card, returned as its content."""
        return card_of(only_message(await self.send(text, **fields)))


def converse(server: Server, scenario: Callable[[Teams], Awaitable[T]]) -> T:
    """Serve the bot and a capture server, and run `scenario` as a Teams user."""

    async def with_capture(client: aiohttp.ClientSession) -> T:
        async with capture_server() as (url, captured):
            return await scenario(Teams(client, url, captured))

    return server.run(with_capture)


def only_message(replies: list[Captured]) -> dict[str, Any]:
    messages = [r.body for r in replies if r.body.get("type") == "message"]
    assert len(messages) == 1, replies
    return messages[0]


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


# -- answers --------------------------------------------------------------------------------


def test_personal_chat_question_gets_an_adaptive_card(make_server: Callable[..., Server]):
    async def scenario(teams: Teams) -> list[Captured]:
        return await teams.send(QUESTION)

    replies = converse(make_server(), scenario)
    kinds = [r.body.get("type") for r in replies]
    assert kinds == ["typing", "message"], replies
    for reply in replies:
        assert reply.method == "POST"
        assert reply.path.startswith("/v3/conversations/a:1xyz/activities")
        assert reply.body["conversation"]["id"] == "a:1xyz"
        assert reply.body["recipient"]["id"] == USER["id"]
    message = replies[-1]
    assert message.body.get("replyToId")
    assert message.path == f"/v3/conversations/a:1xyz/activities/{message.body['replyToId']}"
    card = card_of(message.body)
    text = card_text(card)
    assert "kommunaldirektør" in text
    assert "Styringsdialogen – sånn gjør vi det her" in text and "lysbilde" in text
    submits = of_type(card, "Action.Submit")
    assert len(submits) == 2
    turns = {s["data"][render.ACTION_KEY]["turn"] for s in submits}
    assert len(turns) == 1 and all(isinstance(t, str) and t for t in turns)
    assert [s["data"][render.ACTION_KEY]["helpful"] for s in submits] == [True, False]
    assert all(s["data"][render.ACTION_KEY]["action"] == "feedback" for s in submits)


def test_expect_replies_returns_the_card_in_the_response(make_server: Callable[..., Server]):
    async def scenario(teams: Teams) -> tuple[int, Any, list[Captured]]:
        status, body = await teams.post(teams.activity(QUESTION, deliveryMode="expectReplies"))
        return status, body, list(teams.captured)

    status, body, captured = converse(make_server(), scenario)
    assert status == 200, body
    messages = [a for a in body["activities"] if a["type"] == "message"]
    assert len(messages) == 1, body
    assert "kommunaldirektør" in card_text(card_of(messages[0]))
    assert captured == []  # nothing went to serviceUrl


def test_follow_up_in_the_same_conversation(make_server: Callable[..., Server]):
    async def scenario(teams: Teams) -> tuple[dict[str, Any], dict[str, Any]]:
        return await teams.ask(QUESTION), await teams.ask("og hvem skriver referatet?")

    first, follow = converse(make_server(), scenario)
    assert "kommunaldirektør" in card_text(first)
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
    assert "kommunaldirektør" in card_text(card)
    assert "Styringsbot" not in card_text(card)
    assert all(r.body["conversation"]["id"] == CHANNEL["id"] for r in replies)


# -- feedback -------------------------------------------------------------------------------


@pytest.mark.parametrize("helpful", [False, True])
def test_feedback_from_the_card_is_stored(make_server: Callable[..., Server], helpful: bool):
    async def scenario(teams: Teams) -> str:
        card = await teams.ask(QUESTION)
        button = of_type(card, "Action.Submit")[0 if helpful else 1]
        # Teams posts an Action.Submit as a message with no text and the data as `value`.
        # replyToId: the card's id as the capture server gave it (typing was reply-1).
        return text_of(await teams.send(value=button["data"], replyToId="reply-2"))

    server = make_server()
    thanks = converse(server, scenario)
    assert thanks == render.THANKS[helpful]["nb"]
    events = server.events("up", "down")
    assert [(e.kind, e.channel) for e in events] == [("up" if helpful else "down", "teams")]
    assert events[0].question == QUESTION
    assert "kommunaldirektør" in events[0].answer
    assert events[0].citations and "lysbilde" in events[0].citations[0]["location"]


def test_second_vote_replaces_the_first(make_server: Callable[..., Server]):
    async def scenario(teams: Teams) -> None:
        card = await teams.ask(QUESTION)
        for button in of_type(card, "Action.Submit"):
            text_of(await teams.send(value=button["data"]))

    server = make_server()
    converse(server, scenario)
    assert [e.kind for e in server.events("up", "down")] == ["down"]


@pytest.mark.parametrize(
    "value",
    [
        {render.ACTION_KEY: {"action": "feedback", "turn": "0123456789ab", "helpful": True}},
        {render.ACTION_KEY: {"action": "feedback", "turn": 5, "helpful": True}},
        {render.ACTION_KEY: {"action": "other"}},
        {"something": "else"},
    ],
    ids=["unknown turn", "turn not a string", "unknown action", "foreign value"],
)
def test_odd_card_actions_get_a_polite_reply(make_server: Callable[..., Server], value: Any):
    server = make_server()
    reply = converse(server, lambda teams: teams.send(value=value))
    text = text_of(reply)
    assert "Traceback" not in text and text != render.say(render.FAILED, "nb")
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
    runs = [r["text"] for r in of_type(source, "TextRun")]
    assert all(paragraph.strip() in runs for paragraph in first.text.split("\n\n") if paragraph)
    assert first.title in card_text(source) and first.source in runs


def test_commands_get_polite_text_replies(make_server: Callable[..., Server]):
    async def scenario(teams: Teams) -> dict[str, list[Captured]]:
        before = {"kilde 1 (no answer yet)": await teams.send("kilde 1")}
        await teams.ask(QUESTION)
        commands = ["kilde 99", "kilde", "/kilde x", "hjelp", "/foo", "ny samtale", "kilde 2"]
        return before | {command: await teams.send(command) for command in commands}

    replies = converse(make_server(), scenario)
    assert "ingen kilder" in text_of(replies["kilde 1 (no answer yet)"])
    assert "kilde 1 til" in text_of(replies["kilde 99"])
    assert "et tall fra 1 til" in text_of(replies["kilde"])
    assert "et tall fra 1 til" in text_of(replies["/kilde x"])
    assert text_of(replies["hjelp"]) == render.help_text("nb", prefix="")
    assert "hjelp" in text_of(replies["/foo"])
    assert text_of(replies["ny samtale"]) == render.NEW_CONVERSATION["nb"]
    assert "ingen kilder" in text_of(replies["kilde 2"])  # "ny samtale" forgot the answer


def test_kilde_with_a_word_is_a_question(make_server: Callable[..., Server]):
    card = converse(make_server(), lambda teams: teams.ask("kilde x"))
    assert card_text(card).strip()


def test_ny_from_the_teams_command_list_starts_afresh(make_server: Callable[..., Server]):
    async def scenario(teams: Teams) -> list[Captured]:
        await teams.ask(QUESTION)
        return await teams.send("ny")

    offered = render.help_text("nb", prefix="")
    assert "ny starter en ny samtale" in offered  # what the bot tells Teams users to type
    assert text_of(converse(make_server(), scenario)) == render.NEW_CONVERSATION["nb"]


def test_an_image_without_text_gets_i_read_text(make_server: Callable[..., Server]):
    image = {"contentType": "image/png", "contentUrl": "https://example.invalid/bilde.png"}
    reply = converse(make_server(), lambda teams: teams.send(attachments=[image]))
    assert text_of(reply) == render.TEXT_ONLY["nb"]


# -- hostile input --------------------------------------------------------------------------


def test_markup_in_a_question_is_harmless(make_server: Callable[..., Server]):
    reply = converse(make_server(), lambda teams: teams.send("<b>x</b> & *y* _z_ [l](http://a)"))
    card = card_of(only_message(reply))  # TextBlocks checked to be labels only
    assert card_text(card).strip()
    assert of_type(card, "Action.Submit")


def test_a_10000_character_question_is_refused_politely(make_server: Callable[..., Server]):
    reply = converse(make_server(), lambda teams: teams.send("hvem " * 2000))
    assert "for langt" in text_of(reply)


def test_source_text_is_never_in_a_textblock(make_server: Callable[..., Server]):
    questions = [QUESTION, "Er et fagmøte styring?", "Hva står MRS for?", "Hva er TSL?"]

    async def scenario(teams: Teams) -> list[dict[str, Any]]:
        return [await teams.ask(question) for question in questions]

    cards = converse(make_server(), scenario)
    for card in cards:
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
        return result, await teams.ask(QUESTION)  # and the bot still answers

    (got, text), card = converse(make_server(), scenario)
    assert got == status, text
    assert "error" in json.loads(text)
    assert "kommunaldirektør" in card_text(card)


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
        text = text_of(replies)
        assert text.startswith(render.WELCOME["nb"]) and "kilde" in text
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
            "ask": await call(teams.client, "POST", "/api/ask", json={"question": QUESTION}),
            "healthz": await call(teams.client, "GET", "/healthz"),
            "captured": list(teams.captured),
        }

    results = converse(server, scenario)
    for case in ("none", "garbage", "not bearer"):
        status, body = results[case]
        assert status == 401, (case, body)
        assert isinstance(body, dict) and "error" in body, (case, body)
    assert results["ask"][0] == 200 and "kommunaldirektør" in results["ask"][1]["answer"]
    assert results["healthz"][0] == 200 and results["healthz"][1]["teams"] == "jwt"
    assert results["captured"] == []


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
        manifest = json.loads(archive.read("manifest.json"))
        assert _png_size(archive.read("color.png")) == (192, 192)
        assert _png_size(archive.read("outline.png")) == (32, 32)
    assert manifest["manifestVersion"]
    assert manifest["id"] == manifest["bots"][0]["botId"] == APP_ID
    assert {"personal", "team"} <= set(manifest["bots"][0]["scopes"])
    assert str(output) in capsys.readouterr().out


def test_teams_package_refuses_a_non_guid(
    tmp_path: Path, in_tmp_cwd: Path, capsys: pytest.CaptureFixture[str]
):
    output = tmp_path / "p.zip"
    assert cli_main(["teams-package", "--app-id", "not-a-guid", "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Feil:") and "GUID" in err and len(err.strip().splitlines()) == 1
    assert not output.exists()
