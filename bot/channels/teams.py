"""Microsoft Teams through the Microsoft 365 Agents SDK: `POST /api/messages` on `serve`.

Transport only: an activity becomes a message or an action for the conversation service, and its
Reply goes back as a card or a text (`bot/render/teams.py`). Follow-ups are kept per conversation
and user; works in personal chat and when @mentioned in a channel. JWT auth is enforced whenever
`MICROSOFT_APP_ID` is set. The SDK's own typing timer shows that an answer is on its way (only
one: the bot sends no typing of its own). 👍/👎 on a card updates that card in place.

When the Bot Connector (the activity's `serviceUrl`) cannot be reached, or refuses the reply,
nothing can be delivered: `POST /api/messages` answers 502 and one line is logged, with no
traceback (from the reply, the card update or the SDK's typing timer alike).

Hostile input: an activity whose ids are over 1000 characters, hold control characters or are
dots alone, or whose `serviceUrl` is not an absolute http(s) URL, is answered 400 with one log line
before the SDK sees it; the ids that go into the Bot Connector's URL paths are percent-encoded
(the SDK puts them in as they are); Microsoft's token-signing keys are cached (`_SigningKeys`), so
forged tokens cannot make the bot fetch them once per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import warnings
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from jwt import PyJWK, PyJWKSet, PyJWTError
from jwt.exceptions import PyJWKClientError
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
    ConnectorClient,
    MemoryStorage,
    RestChannelServiceClientFactory,
    TurnContext,
    TurnState,
)
from microsoft_agents.hosting.core.authorization.jwt.jwt_token_validator import (
    JwtTokenValidator,
    _JwkClientManager,
)
from microsoft_agents.hosting.core.connector.client.connector_client import (
    ConversationsOperations,
)
from pydantic import ValidationError
from yarl import URL

from bot import messages
from bot.channels import ChannelConfigError
from bot.config import Settings
from bot.conversation import (
    Choose,
    ConversationService,
    Incoming,
    Intro,
    NotText,
    Reply,
    ReplyKind,
    Vote,
    Welcome,
)
from bot.render import teams as render

log = logging.getLogger(__name__)

CHANNEL = "teams"
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
_MENTION = re.compile(r"<at>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")

MAX_ID_CHARS = 1000  # an activity's ids (Teams' are well under 200 characters)
MAX_URL_CHARS = 2048
# The ids of an activity the bot keeps or puts into a Bot Connector URL.
_IDS = (("id",), ("replyToId",), ("conversation", "id"), ("from", "id"), ("recipient", "id"))
# Control characters and lone surrogates (JSON allows "\ud800"): never in an id or a URL.
_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_URL_HOST = re.compile(r"[A-Za-z0-9._:-]+")  # a DNS name (IDNA-encoded) or an IP address
# Delivery modes whose replies go back in the response, not to serviceUrl.
_NO_SERVICE_URL = {"expectReplies", "stream"}
BAD_ACTIVITY = "The body is not a valid Bot Framework activity."

# Microsoft's token-signing keys (`_SigningKeys`): kept an hour; a token naming a key not among
# them makes the bot fetch them again at most every 5 minutes (Microsoft publishes a new key long
# before it signs with it), and a failed fetch is retried at most every 30 seconds.
KEYS_SECONDS = 3600.0
UNKNOWN_KEY_SECONDS = 300.0
RETRY_KEYS_SECONDS = 30.0
KEYS_TIMEOUT = 10.0
MAX_KEYS_BYTES = 1024 * 1024


class ConnectorUnreachable(Exception):
    """The Bot Connector (the activity's serviceUrl) could not be reached to send the reply."""


@dataclass
class _Delivery:
    """What became of one request's outgoing activities: the first error that says the Bot
    Connector could not be reached or refused a reply, if any."""

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
            # A refused message is as undelivered as an unreachable Connector (a refused card
            # update is not: `_on_message` thanks in a message instead).
            if not _undeliverable(context, error, refused=True):
                raise
            return [ResourceResponse() for _ in activities]

    async def update_activity(self, context: TurnContext, activity: Activity) -> Any:
        try:
            return await super().update_activity(context, activity)
        except Exception as error:
            if not _undeliverable(context, error):
                raise
            return ResourceResponse()


def _undeliverable(context: TurnContext, error: BaseException, refused: bool = False) -> bool:
    """Whether `error` says the Bot Connector is unreachable (or, with `refused`, answered with
    an HTTP error), and so is noted for this request (False when no request is being processed:
    then it is raised as it is)."""
    delivery = _DELIVERY.get()
    if delivery is None or not (_unreachable(error) or (refused and _refused(error))):
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


class _PathSafeConversations(ConversationsOperations):
    """The SDK's Bot Connector calls, with every id percent-encoded where it becomes a segment of
    the URL path. The SDK formats `v3/conversations/{conversation_id}/activities/{activity_id}`
    (connector_client.py) with the activity's ids as they are, so a conversation.id such as
    `../../v3/other?x=1#frag` would post the reply to `/v3/other` on the serviceUrl's host."""

    def _normalize_conversation_id(
        self, conversation_id: str, activity: Activity | None = None
    ) -> str:
        return _segment(super()._normalize_conversation_id(conversation_id, activity))

    async def reply_to_activity(
        self, conversation_id: str, activity_id: str, body: Activity
    ) -> ResourceResponse:
        return await super().reply_to_activity(conversation_id, _segment(activity_id), body)

    async def update_activity(
        self, conversation_id: str, activity_id: str, body: Activity
    ) -> ResourceResponse:
        return await super().update_activity(conversation_id, _segment(activity_id), body)

    async def delete_activity(self, conversation_id: str, activity_id: str) -> None:
        await super().delete_activity(conversation_id, _segment(activity_id))

    async def get_activity_members(self, conversation_id: str, activity_id: str) -> Any:
        return await super().get_activity_members(conversation_id, _segment(activity_id))

    async def get_conversation_member(self, conversation_id: str, member_id: str) -> Any:
        return await super().get_conversation_member(conversation_id, _segment(member_id))

    async def delete_conversation_member(self, conversation_id: str, member_id: str) -> None:
        await super().delete_conversation_member(conversation_id, _segment(member_id))


def _segment(value: str) -> str:
    """`value` as one segment of a URL path: percent-encoded, never a "." or ".." segment."""
    if not value:
        return value  # the SDK refuses a missing id itself
    if not value.strip("."):
        raise ValueError(f"{value!r} cannot be an id in a URL path")
    return quote(value, safe="")


class _ClientFactory(RestChannelServiceClientFactory):
    """The SDK's factory of Bot Connector clients, whose conversation calls encode their ids."""

    async def create_connector_client(self, *args: Any, **kwargs: Any) -> Any:
        client = await super().create_connector_client(*args, **kwargs)
        if isinstance(client, ConnectorClient):
            client._conversations = _PathSafeConversations(client.client)
            if not isinstance(client.conversations, _PathSafeConversations):
                raise RuntimeError("The Agents SDK's ConnectorClient ignores _conversations")
        return client


@dataclass
class _KeySet:
    """One JWKS endpoint's signing keys, by kid, and when they were fetched."""

    keys: dict[str, PyJWK] = field(default_factory=dict)
    fetched: float = -math.inf  # the last successful fetch (time.monotonic)
    tried: float = -math.inf  # the last fetch, successful or not
    fetching: asyncio.Task[None] | None = None


class _SigningKeys(_JwkClientManager):
    """Microsoft's token-signing keys for the SDK's JWT check (`JwtTokenValidator`), cached.

    The SDK's own manager asks PyJWT's `PyJWKClient` for the token's `kid`, which raises KeyError
    (500) for a token without one, and fetches the keys again for every kid it does not know
    while the last fetch failed: every forged token costs a request to Microsoft, made with
    blocking urllib in a thread, one at a time. Here the keys are kept KEYS_SECONDS, an unknown
    kid refetches them at most every UNKNOWN_KEY_SECONDS, a failed fetch is retried at most every
    RETRY_KEYS_SECONDS, concurrent requests share one fetch, and a token without a kid is
    refused like any other invalid token (401, one log line by the SDK)."""

    def __init__(self) -> None:
        super().__init__()
        self._sets: dict[str, _KeySet] = {}

    @classmethod
    def install(cls) -> None:
        """Make the SDK's JWT check use this cache (it keeps its key manager on the class)."""
        if not isinstance(JwtTokenValidator._jwk_client_manager, cls):
            JwtTokenValidator._jwk_client_manager = cls()

    async def get_signing_key(self, jwks_uri: str, header: dict[str, Any]) -> PyJWK:
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise PyJWKClientError("The token does not name its signing key (kid).")
        keys = self._sets.setdefault(jwks_uri, _KeySet())
        if keys.fetching is not None and keys.fetching.get_loop() is not asyncio.get_running_loop():
            keys.fetching = None  # left behind by an event loop that is gone
        if keys.fetching is None or keys.fetching.done():
            now = time.monotonic()
            fresh = now - keys.fetched < KEYS_SECONDS
            if fresh and kid in keys.keys:
                return keys.keys[kid]
            if now - keys.tried >= (UNKNOWN_KEY_SECONDS if fresh else RETRY_KEYS_SECONDS):
                keys.tried = now
                keys.fetching = asyncio.ensure_future(self._fetch(jwks_uri, keys))
        if keys.fetching is not None and not keys.fetching.done():
            await asyncio.shield(keys.fetching)
        if kid not in keys.keys:
            raise PyJWKClientError("The token's signing key (kid) is not one of Microsoft's.")
        return keys.keys[kid]

    @staticmethod
    async def _fetch(uri: str, keys: _KeySet) -> None:
        """Fetch the keys at `uri` into `keys`; on failure, log one line and keep the old ones."""
        try:
            timeout = aiohttp.ClientTimeout(total=KEYS_TIMEOUT)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(uri, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise aiohttp.ClientResponseError(
                        response.request_info, (), status=response.status
                    )
                data = b""
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > MAX_KEYS_BYTES:
                        raise ValueError(f"over {MAX_KEYS_BYTES // 1024} KB")
            payload = json.loads(data)
            if not isinstance(payload, dict):
                raise ValueError("the keys are not a JSON object")
            found = PyJWKSet.from_dict(payload).keys
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, PyJWTError) as error:
            log.warning(
                "Could not fetch Microsoft's token-signing keys from %s (%s)",
                uri,
                _describe(error),
            )
            return
        keys.keys = {k.key_id: k for k in found if k.key_id and k.public_key_use in ("sig", None)}
        keys.fetched = time.monotonic()


class TeamsBot:
    """Turns Teams activities into conversation-service calls and answers with cards."""

    def __init__(self, service: ConversationService, settings: Settings) -> None:
        self.service = service
        config = sdk_configuration(settings)
        self.connections = MsalConnectionManager(**config)
        self.adapter = _Adapter(
            connection_manager=self.connections,
            channel_service_client_factory=_ClientFactory(self.connections),
        )
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
        problem = await _activity_problem(request)
        if problem is not None:
            log.warning("Teams activity refused with 400: %s", problem)
            return _json(400, problem)
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
            status = _refused(delivery.unreachable)
            log.error(
                "Teams reply not delivered: the Bot Connector at %s %s",
                delivery.service_url[:200],
                f"refused it (HTTP {status})"
                if status
                else f"did not answer ({_describe(delivery.unreachable)})",
            )
            said = f"refused it (HTTP {status})" if status else "did not answer"
            return _json(502, f"The reply could not be delivered: the Bot Connector {said}.")
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
            incoming = _action(action)
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
        for shown in render.activities(reply):
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


async def _activity_problem(request: web.Request) -> str | None:
    """What makes the posted activity unusable, in one sentence, or None. Checked before the SDK
    sees it; the SDK's own model checks (pydantic) come after."""
    try:
        body = json.loads(await request.read())
    except (ValueError, RecursionError):  # not UTF-8 or not JSON, or nested too deeply
        return BAD_ACTIVITY
    if not isinstance(body, dict):
        return BAD_ACTIVITY
    for path in _IDS:
        value: Any = body
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, str):
            continue  # absent (the SDK decides whether it may be) or not a string (pydantic)
        name = ".".join(path)
        if len(value) > MAX_ID_CHARS:
            return f"The activity's {name} is over {MAX_ID_CHARS} characters."
        # Dots alone would be a "." or ".." path segment, which percent-encoding does not hide
        # (yarl decodes %2E); the SDK cuts a conversation.id to 150 characters first.
        if _NOT_TEXT.search(value) or (value and not value[:150].strip(".")):
            return f"The activity's {name} is not a usable id."
    service_url = body.get("serviceUrl")
    if service_url is None and body.get("deliveryMode") in _NO_SERVICE_URL:
        return None
    if not isinstance(service_url, str) or not _http_url(service_url):
        return "The activity's serviceUrl is not an absolute http or https URL to reply to."
    return None


def _http_url(text: str) -> bool:
    """Whether `text` is an absolute http(s) URL with a plausible host (and nothing odd)."""
    if len(text) > MAX_URL_CHARS or _NOT_TEXT.search(text) or any(c.isspace() for c in text):
        return False
    try:
        url = URL(text)
        host = url.raw_host
        url.port  # noqa: B018 - a port out of range raises here
    except ValueError:
        return False
    return (
        url.scheme in ("http", "https")
        and url.absolute
        and bool(host)
        and _URL_HOST.fullmatch(host or "") is not None
    )


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and the errors it was raised from or while handling."""
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _unreachable(error: BaseException) -> bool:
    """Whether sending failed because the Bot Connector could not be reached (or what answered
    at serviceUrl did not speak HTTP: aiohttp's parser failed on it)."""
    unreachable = (
        aiohttp.ClientConnectionError,
        aiohttp.InvalidURL,
        ConnectorUnreachable,
        TimeoutError,
        HttpProcessingError,
    )
    return any(isinstance(seen, unreachable) for seen in _chain(error))


def _refused(error: BaseException) -> int | None:
    """The HTTP status with which the Bot Connector refused a request, if it did."""
    if _unreachable(error):
        return None
    for seen in _chain(error):
        if isinstance(seen, aiohttp.ClientResponseError):
            return seen.status
    return None


def _describe(error: BaseException) -> str:
    """One line for the log: the error's class and message."""
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _json(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": message}, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False)
    )


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


def _action(action: dict[str, Any]) -> Incoming:
    """What a card button of this bot's asks for: 👍/👎, the course, or a course answer."""
    kind = action.get("action")
    if kind == "feedback" and isinstance(action.get("turn"), str):
        return Vote(action["turn"], action.get("helpful") is True)
    if kind == "intro":
        return Intro()
    step, choice = action.get("step"), action.get("choice")
    if kind == "intro_choice" and isinstance(step, str) and type(choice) is int:
        return Choose(step[:64], choice)
    return "/?"  # an action this bot did not make: read as an unknown command


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
    _SigningKeys.install()  # the SDK checks a token whenever one is sent, anonymous or not
    with warnings.catch_warnings():
        # The SDK's JWT check reads this plain string key; aiohttp would prefer an AppKey.
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["agent_configuration"] = bot.auth_configuration
    app.router.add_post("/api/messages", jwt_authorization_decorator(bot.process))
    return "anonymous (local testing only)" if settings.teams_allow_anonymous else "jwt"
