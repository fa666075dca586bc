"""Microsoft Teams through the Microsoft 365 Agents SDK: `POST /api/messages` on `serve`.

Answers are Adaptive Cards; follow-ups are kept per conversation and user; works in personal chat
and when @mentioned in a channel. JWT auth is enforced whenever `MICROSOFT_APP_ID` is set.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

from aiohttp import web
from microsoft_agents.activity import Activity, ActivityTypes, Attachment
from microsoft_agents.authentication.msal import MsalConnectionManager
from microsoft_agents.hosting.aiohttp import (
    CloudAdapter,
    jwt_authorization_decorator,
    start_agent_process,
)
from microsoft_agents.hosting.core import AgentApplication, MemoryStorage, TurnContext, TurnState
from pydantic import ValidationError

from bot import render
from bot.channels import ChannelConfigError
from bot.config import Settings
from bot.conversation import ConversationService, RateLimiter, ServiceError, parse_command
from bot.language import detect

log = logging.getLogger(__name__)

CHANNEL = "teams"
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
_MENTION = re.compile(r"<at>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")


def sdk_configuration(settings: Settings) -> dict[str, Any]:
    """The Agents SDK's connection settings, from our MICROSOFT_* settings."""
    if settings.microsoft_app_id and settings.teams_allow_anonymous:
        raise ChannelConfigError(
            "TEAMS_ALLOW_ANONYMOUS=true er bare for lokal testing og kan ikke brukes sammen med "
            "MICROSOFT_APP_ID; fjern en av dem."
        )
    connection: dict[str, Any] = {"ANONYMOUS_ALLOWED": settings.teams_allow_anonymous}
    if settings.microsoft_app_id:
        if not settings.microsoft_app_password:
            raise ChannelConfigError(
                "MICROSOFT_APP_ID er satt, men ikke MICROSOFT_APP_PASSWORD; sett "
                "klienthemmeligheten fra appregistreringen til boten."
            )
        connection |= {
            "AUTHTYPE": "ClientSecret",
            "CLIENTID": settings.microsoft_app_id,
            "CLIENTSECRET": settings.microsoft_app_password,
        }
        if settings.microsoft_app_tenant_id:
            connection["TENANTID"] = settings.microsoft_app_tenant_id
    return {"CONNECTIONS": {"SERVICE_CONNECTION": {"SETTINGS": connection}}}


class TeamsBot:
    """Turns Teams activities into conversation-service calls and answers with cards."""

    def __init__(self, service: ConversationService, settings: Settings) -> None:
        self.service = service
        self.limiter = RateLimiter(settings.rate_limit)
        config = sdk_configuration(settings)
        self.connections = MsalConnectionManager(**config)
        self.adapter = CloudAdapter(connection_manager=self.connections)
        self.adapter.on_turn_error = self._on_turn_error
        self.app = AgentApplication[TurnState](
            storage=MemoryStorage(), connection_manager=self.connections
        )
        self.app.conversation_update("membersAdded")(self._on_members_added)
        self.app.activity(ActivityTypes.message)(self._on_message)

    @property
    def auth_configuration(self) -> Any:
        return self.connections.get_default_connection_configuration()

    async def process(self, request: web.Request) -> web.StreamResponse:
        try:
            response = await start_agent_process(request, self.app, self.adapter)
        except ValidationError:
            return web.json_response(
                {"error": "The body is not a valid Bot Framework activity."}, status=400
            )
        return response or web.Response(status=202)

    # -- handlers ---------------------------------------------------------------------------

    async def _on_members_added(self, context: TurnContext, _state: TurnState) -> None:
        activity = context.activity
        if (activity.conversation.conversation_type or "personal") != "personal":
            return  # in a team, people join all the time; greet only in personal chat
        bot_id = activity.recipient.id if activity.recipient else None
        if any(m.id == bot_id for m in activity.members_added or []):
            text = f"{render.WELCOME['nb']}\n\n{render.help_text('nb', prefix='')}"
            await context.send_activity(_text(text))

    async def _on_message(self, context: TurnContext, _state: TurnState) -> None:
        activity = context.activity
        chat = _chat_key(activity)
        action = _card_action(activity.value)
        if action is not None:
            await self._on_card_action(context, chat, action)
            return
        raw = activity.text or ""
        if not raw.strip() and activity.attachments:
            await context.send_activity(_text(render.say(render.TEXT_ONLY, "nb")))
            return
        text = _clean(raw)
        command = parse_command(text)
        language = detect(text) if text else "nb"
        if command.name in ("start", "help"):
            await context.send_activity(_text(render.help_text(language, prefix="")))
        elif command.name == "new":
            self.service.forget(chat)
            await context.send_activity(_text(render.say(render.NEW_CONVERSATION, language)))
        elif command.name == "unknown":
            reply = render.say(render.UNKNOWN_COMMAND, language, help="hjelp")
            await context.send_activity(_text(reply))
        elif command.name == "source":
            try:
                view = self.service.source(chat, command.argument)
            except ServiceError as exc:
                await context.send_activity(_text(str(exc)))
                return
            await context.send_activity(_card(render.teams_source_card(view)))
        elif command.name == "empty":
            await context.send_activity(_text(render.help_text("nb", prefix="")))
        else:
            await self._answer(context, chat, command.argument)

    async def _answer(self, context: TurnContext, chat: str, question: str) -> None:
        user = _user_key(context.activity)
        language = detect(question)
        if not self.limiter.allow(user):
            seconds = max(1, round(self.limiter.retry_after(user)))
            await context.send_activity(
                _text(render.say(render.RATE_LIMITED, language, seconds=seconds))
            )
            return
        if context.activity.delivery_mode != "expectReplies":
            await context.send_activity(Activity(type=ActivityTypes.typing))
        try:
            turn = await self.service.run(self.service.ask, chat, question, CHANNEL)
        except ServiceError as exc:
            await context.send_activity(_text(str(exc)))
            return
        card = render.teams_card(turn.answer, turn.id)
        await context.send_activity(_card(card, summary=_summary(turn.answer.text)))

    async def _on_card_action(self, context: TurnContext, chat: str, action: dict) -> None:
        if action.get("action") != "feedback" or not isinstance(action.get("turn"), str):
            await context.send_activity(
                _text(render.say(render.UNKNOWN_COMMAND, "nb", help="hjelp"))
            )
            return
        helpful = action.get("helpful") is True
        try:
            turn = await self.service.run(
                self.service.feedback, chat, action["turn"], helpful, CHANNEL
            )
        except ServiceError as exc:
            await context.send_activity(_text(str(exc)))
            return
        await context.send_activity(_text(render.say(render.THANKS[helpful], turn.answer.language)))

    async def _on_turn_error(self, context: TurnContext, error: Exception) -> None:
        log.error("Teams turn failed", exc_info=error)
        await context.send_activity(_text(render.say(render.FAILED, "nb")))


def _clean(text: str) -> str:
    """The question without the bot's @mention or any markup Teams put around it."""
    return " ".join(_TAG.sub(" ", _MENTION.sub(" ", text)).split())


def _chat_key(activity: Activity) -> str:
    # One history per conversation (a channel thread has its own id) and per user in it.
    user = activity.from_property.id if activity.from_property else "?"
    return f"teams:{activity.conversation.id}:{user}"


def _user_key(activity: Activity) -> str:
    user = activity.from_property.id if activity.from_property else "?"
    return f"teams:{user}"


def _card_action(value: object) -> dict | None:
    if isinstance(value, dict) and isinstance(value.get(render.ACTION_KEY), dict):
        return value[render.ACTION_KEY]
    return None


def _text(text: str) -> Activity:
    return Activity(type=ActivityTypes.message, text=text, text_format="plain")


def _card(card: dict[str, Any], summary: str | None = None) -> Activity:
    activity = Activity(
        type=ActivityTypes.message, attachments=[Attachment(content_type=CARD_TYPE, content=card)]
    )
    if summary:
        activity.summary = summary  # the notification preview in Teams
    return activity


def _summary(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= 120 else first[:119] + "…"


def add_teams_routes(app: web.Application, service: ConversationService, settings: Settings) -> str:
    """Mount `POST /api/messages`; returns how Teams requests are authenticated."""
    if not settings.microsoft_app_id and not settings.teams_allow_anonymous:

        async def not_configured(_request: web.Request) -> web.Response:
            return web.json_response(
                {
                    "error": "Teams is not configured; set MICROSOFT_APP_ID and "
                    "MICROSOFT_APP_PASSWORD (or TEAMS_ALLOW_ANONYMOUS=true for local testing)."
                },
                status=401,
            )

        app.router.add_post("/api/messages", not_configured)
        return "not configured"
    bot = TeamsBot(service, settings)
    with warnings.catch_warnings():
        # The SDK's JWT check reads this plain string key; aiohttp would prefer an AppKey.
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["agent_configuration"] = bot.auth_configuration
    app.router.add_post("/api/messages", jwt_authorization_decorator(bot.process))
    return "anonymous (local testing only)" if settings.teams_allow_anonymous else "jwt"
