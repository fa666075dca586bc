"""Microsoft Teams through the Microsoft 365 Agents SDK: `POST /api/messages` on `serve`.

Transport only: an activity becomes a message or an action for the conversation service, and its
Reply goes back as a card or a text (`bot/render/teams.py`). Follow-ups are kept per conversation
and user; works in personal chat and when @mentioned in a channel. JWT auth is enforced whenever
`MICROSOFT_APP_ID` is set. The SDK's own typing timer shows that an answer is on its way (only
one: the bot sends no typing of its own). 👍/👎 on a card updates that card in place.

When the Bot Connector (the activity's `serviceUrl`) cannot be reached, nothing can be delivered:
`POST /api/messages` answers 502 and one line is logged, with no traceback (from the reply, the
card update or the SDK's typing timer alike).
"""

from __future__ import annotations

import logging
import re
import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from microsoft_agents.activity import Activity, ActivityTypes, Attachment, ResourceResponse
from microsoft_agents.authentication.msal import MsalConnectionManager
from microsoft_agents.hosting.aiohttp import (
    CloudAdapter,
    jwt_authorization_decorator,
    start_agent_process,
)
from microsoft_agents.hosting.core import (
    AgentApplication,
    ApplicationOptions,
    MemoryStorage,
    TurnContext,
    TurnState,
)
from pydantic import ValidationError

from bot import messages
from bot.channels import ChannelConfigError
from bot.config import Settings
from bot.conversation import ConversationService, Incoming, NotText, Reply, ReplyKind, Vote, Welcome
from bot.render import teams as render

log = logging.getLogger(__name__)

CHANNEL = "teams"
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
_MENTION = re.compile(r"<at>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")


class ConnectorUnreachable(Exception):
    """The Bot Connector (the activity's serviceUrl) could not be reached to send the reply."""


@dataclass
class _Delivery:
    """What became of one request's outgoing activities: the first error that says the Bot
    Connector could not be reached, if any."""

    unreachable: BaseException | None = None
    service_url: str = "?"


_DELIVERY: ContextVar[_Delivery | None] = ContextVar("teams_delivery", default=None)


class _Adapter(CloudAdapter):
    """The SDK's adapter, except that an unreachable Bot Connector is noted for `process` (which
    answers 502) instead of raised through the turn: the SDK would log a traceback for it in the
    application, and another (at debug level) in its typing timer."""

    async def send_activities(
        self, context: TurnContext, activities: list[Activity]
    ) -> list[ResourceResponse]:
        try:
            return await super().send_activities(context, activities)
        except Exception as error:
            if not _undeliverable(context, error):
                raise
            return [ResourceResponse() for _ in activities]

    async def update_activity(self, context: TurnContext, activity: Activity) -> Any:
        try:
            return await super().update_activity(context, activity)
        except Exception as error:
            if not _undeliverable(context, error):
                raise
            return ResourceResponse()


def _undeliverable(context: TurnContext, error: BaseException) -> bool:
    """Whether `error` says the Bot Connector is unreachable, and so is noted for this request
    (False when no request is being processed: then it is raised as it is)."""
    delivery = _DELIVERY.get()
    if delivery is None or not _unreachable(error):
        return False
    if delivery.unreachable is None:
        delivery.unreachable = error
        delivery.service_url = (context.activity.service_url if context.activity else None) or "?"
    return True


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
        config = sdk_configuration(settings)
        self.connections = MsalConnectionManager(**config)
        self.adapter = _Adapter(connection_manager=self.connections)
        self.adapter.on_turn_error = self._on_turn_error
        self.app = AgentApplication[TurnState](
            options=ApplicationOptions(storage=MemoryStorage(), start_typing_timer=True),
            connection_manager=self.connections,
        )
        self.app.error(self._on_app_error)
        self.app.conversation_update("membersAdded")(self._on_members_added)
        self.app.activity(ActivityTypes.message)(self._on_message)

    @property
    def auth_configuration(self) -> Any:
        return self.connections.get_default_connection_configuration()

    async def process(self, request: web.Request) -> web.StreamResponse:
        delivery = _Delivery()
        token = _DELIVERY.set(delivery)
        try:
            response = await start_agent_process(request, self.app, self.adapter)
        except ValidationError:
            return _json(400, "The body is not a valid Bot Framework activity.")
        except ConnectorUnreachable as error:  # raised as such outside a turn
            delivery.unreachable = delivery.unreachable or error.__cause__ or error
        finally:
            _DELIVERY.reset(token)
        if delivery.unreachable is not None:
            log.error(
                "Teams reply not delivered: the Bot Connector at %s did not answer (%s)",
                delivery.service_url,
                _describe(delivery.unreachable),
            )
            return _json(502, "The reply could not be delivered: the Bot Connector did not answer.")
        return response or web.Response(status=202)

    # -- handlers ---------------------------------------------------------------------------

    async def _on_members_added(self, context: TurnContext, _state: TurnState) -> None:
        activity = context.activity
        if (activity.conversation.conversation_type or "personal") != "personal":
            return  # in a team, people join all the time; greet only in personal chat
        bot_id = activity.recipient.id if activity.recipient else None
        if any(m.id == bot_id for m in activity.members_added or []):
            await self._respond(context, await self._reply(context, Welcome()))

    async def _on_message(self, context: TurnContext, _state: TurnState) -> None:
        activity = context.activity
        action = _card_action(activity.value)
        incoming: Incoming
        if action is not None:
            if action.get("action") != "feedback" or not isinstance(action.get("turn"), str):
                incoming = "/?"  # an action this bot did not make: read as an unknown command
            else:
                incoming = Vote(action["turn"], action.get("helpful") is True)
        elif not (activity.text or "").strip() and activity.attachments:
            incoming = NotText()
        else:
            incoming = _clean(activity.text or "")
        reply = await self._reply(context, incoming)
        if reply.kind is ReplyKind.FEEDBACK and activity.reply_to_id and reply.answer:
            # The vote shows on the card it came from, in place of the buttons.
            card = render.card(reply.answer, reply.turn_id or "", voted=reply.helpful)
            try:
                await context.update_activity(_card(card, activity_id=activity.reply_to_id))
                return
            except Exception as error:  # e.g. the card is too old for Teams to edit
                if _unreachable(error):
                    raise
                log.warning(
                    "Could not update the Teams card %s (%s); thanking in a message instead",
                    activity.reply_to_id,
                    _describe(error),
                )
        await self._respond(context, reply)

    async def _reply(self, context: TurnContext, incoming: Incoming) -> Reply:
        activity = context.activity
        return await self.service.reply(_chat_key(activity), _user_key(activity), incoming, CHANNEL)

    async def _respond(self, context: TurnContext, reply: Reply) -> None:
        shown = render.reply(reply)
        if "card" in shown:
            await context.send_activity(_card(shown["card"], summary=shown.get("summary")))
        else:
            await context.send_activity(_text(shown["text"]))

    async def _on_app_error(self, context: TurnContext, _error: Exception) -> None:
        """A handler failed; the SDK has logged it with its traceback. Say so to the user."""
        await self._say_failed(context)

    async def _on_turn_error(self, context: TurnContext, error: Exception) -> None:
        """Something failed outside the application's own error handling (the adapter's
        middleware, or `_on_app_error` itself)."""
        if _undeliverable(context, error):
            return  # `process` answers 502 and logs it
        if _unreachable(error):
            raise ConnectorUnreachable from error
        log.error("Teams turn failed", exc_info=error)
        await self._say_failed(context)

    async def _say_failed(self, context: TurnContext) -> None:
        try:
            await context.send_activity(_text(messages.say(messages.FAILED, "nb")))
        except Exception as again:
            if _unreachable(again):
                raise ConnectorUnreachable from again
            raise


def _unreachable(error: BaseException) -> bool:
    """Whether sending failed because the Bot Connector could not be reached."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, aiohttp.ClientConnectionError | ConnectorUnreachable | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(error: BaseException) -> str:
    """One line for the log: the error's class and message."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _json(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


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


def _card(
    card: dict[str, Any], summary: str | None = None, activity_id: str | None = None
) -> Activity:
    activity = Activity(
        type=ActivityTypes.message, attachments=[Attachment(content_type=CARD_TYPE, content=card)]
    )
    if summary:
        activity.summary = summary  # the notification preview in Teams
    if activity_id:
        activity.id = activity_id
    return activity


def add_teams_routes(app: web.Application, service: ConversationService, settings: Settings) -> str:
    """Mount `POST /api/messages`; returns how Teams requests are authenticated."""
    if not settings.microsoft_app_id and not settings.teams_allow_anonymous:

        async def not_configured(_request: web.Request) -> web.Response:
            return _json(
                401,
                "Teams is not configured; set MICROSOFT_APP_ID and MICROSOFT_APP_PASSWORD (or "
                "TEAMS_ALLOW_ANONYMOUS=true for local testing).",
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
