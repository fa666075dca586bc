"""Telegram through python-telegram-bot: `styringsbot telegram`.

Transport only: each update becomes a message or an action for the conversation service, and its
Reply goes back as HTML (`bot/render/telegram.py`), split below Telegram's 4096 characters. Long
polling by default (works behind a firewall); a webhook with a secret token when
`TELEGRAM_WEBHOOK_URL` is set. Sends are retried with backoff when Telegram answers 429 or 5xx
or the connection drops. An update python-telegram-bot cannot read is skipped with one log line,
in both modes. In a group the bot speaks only when addressed, and quotes the question it answers
(so anyone's 👍/👎 or "Kilde" under an answer finds the asker's conversation).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import weakref
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlparse

from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    MaybeInaccessibleMessage,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatType, ParseMode
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    Updater,
    filters,
)
from telegram.ext._utils.webhookhandler import TelegramHandler
from telegram.request import HTTPXRequest
from tornado.web import Application as TornadoApplication

from bot import messages
from bot.channels import ChannelConfigError
from bot.commands import parse_command, telegram_menu
from bot.config import Settings
from bot.conversation import (
    Choose,
    ConversationService,
    Incoming,
    Intro,
    NotText,
    Reply,
    ReplyKind,
    ShowSource,
    Vote,
    Welcome,
)
from bot.render import telegram as render

log = logging.getLogger(__name__)

CHANNEL = "telegram"
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
_CALLBACK = re.compile(r"^(fb|src):([0-9a-f]{1,32}):(\d{1,3})$")
_CHOICE = re.compile(r"^ch:([a-z0-9-]{1,40}):(\d)$")  # a course step's check answer
RETRIES = 3  # a send that meets 429 or a server error is tried again this many times
BACKOFF = 0.5  # seconds before the first retry; doubled each time
POPUP_LIMIT = 200  # characters of a callback answer (the note a button shows)
REASON_LIMIT = 200  # characters of why an update could not be read, in its log line


class RetryingRateLimiter(AIORateLimiter):
    """python-telegram-bot's rate limiter (which waits out a 429's retry_after), and besides a
    retry with backoff when Telegram answers 5xx or the connection drops."""

    def __init__(self, retries: int = RETRIES, backoff: float = BACKOFF) -> None:
        super().__init__(max_retries=retries)
        self._retries = retries
        self._backoff = backoff

    async def process_request(self, *args: Any, **kwargs: Any) -> Any:
        delay = self._backoff
        for attempt in range(self._retries + 1):
            try:
                return await super().process_request(*args, **kwargs)
            except NetworkError as exc:
                # Only the plain NetworkError is a server error or a dropped connection; its
                # subclasses (BadRequest, TimedOut …) are not worth repeating.
                if type(exc) is not NetworkError or attempt == self._retries:
                    raise
                log.warning("Telegram request failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


# -- updates python-telegram-bot cannot read --------------------------------------------------
#
# python-telegram-bot parses a whole getUpdates batch at once: one update it cannot read (a field
# of an unexpected type) fails them all. Its Updater then logs the batch with a traceback and asks
# again at once with the same offset, gets the same batch, and so on: a tight loop that floods the
# log and never gets past that update. Through the webhook, the update is answered 400 with the
# same log, and Telegram sends it again and again (for up to a day, slowing other updates down).
# So each update is tried on its own first; one that fails is handed on as its bare update_id (an
# empty Update no handler takes, whose id still moves the offset past it) with one log line.


def _readable(raw: Any, bot: Bot) -> Any:
    """`raw`, an update as Telegram sent it, when python-telegram-bot can read it; else only its
    update_id (logged once, with the reason); None when not even that can be read."""
    update_id = raw.get("update_id") if isinstance(raw, dict) else None
    if type(update_id) is not int:
        log.warning("Skipped an update from Telegram without an update_id")
        return None
    try:
        Update.de_json(raw, bot)
    except Exception as exc:  # whatever a malformed field makes the parser raise
        log.warning(
            "Skipped Telegram update %d, which could not be read (%s)", update_id, _why(exc)
        )
        return {"update_id": update_id}
    return raw


def _why(exc: Exception) -> str:
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


class SkippingBot(ExtBot[dict[str, Any]]):
    """python-telegram-bot's ExtBot, except that getUpdates hands on only updates it can read
    (each one that cannot be read becomes its bare update_id). The request, its timeouts and the
    parsing are PTB's own `get_updates`: only the result is vetted on its way there."""

    __slots__ = ()

    async def _post(self, endpoint: str, *args: Any, **kwargs: Any) -> Any:
        result = await super()._post(endpoint, *args, **kwargs)
        if endpoint != "getUpdates" or not isinstance(result, list):
            return result
        return [update for raw in result if (update := _readable(raw, self)) is not None]


class _WebhookHandler(TelegramHandler):
    """python-telegram-bot's webhook endpoint, except that an update it cannot read is answered
    200 (so Telegram does not send it again) and handed on as its bare update_id."""

    async def post(self) -> None:
        self._validate_post()  # a request without the secret is refused before anything is read
        try:
            raw = json.loads(self.request.body)
        except ValueError:
            pass  # not JSON at all: PTB answers it as it always has
        else:
            update = _readable(raw, self.bot)
            if update is None:
                return  # 200, and nothing to hand on
            if update is not raw:
                self.request.body = json.dumps(update).encode()
        await super().post()


class SkippingUpdater(Updater):
    """python-telegram-bot's Updater, with `_WebhookHandler` serving its webhook."""

    async def start_webhook(self, *args: Any, **kwargs: Any) -> asyncio.Queue[object]:
        queue = await super().start_webhook(*args, **kwargs)
        # PTB builds its webhook server inside start_webhook: its one route gets the handler
        # above, before any request is read (nothing awaited since the server started).
        server = getattr(getattr(self, "_httpd", None), "_http_server", None)
        app = getattr(server, "request_callback", None)
        routes = app.wildcard_router.rules if isinstance(app, TornadoApplication) else []
        for route in routes:
            if route.target is TelegramHandler:
                route.target = _WebhookHandler
                return queue
        log.warning(
            "python-telegram-bot's webhook server was not found: an update it cannot read will "
            "be answered 400 (and sent again by Telegram) instead of skipped"
        )
        return queue


class TelegramBot:
    """The handlers: each update becomes a message or an action for the conversation service."""

    def __init__(
        self,
        service: ConversationService,
        settings: Settings,
        message_limit: int = render.TELEGRAM_LIMIT,
    ) -> None:
        self.service = service
        self.message_limit = message_limit
        self.allowed = settings.telegram_chat_ids
        # One turn at a time per conversation: with concurrent updates, a follow-up sent right
        # after a question must still be read after that question's answer.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def register(self, app: Application) -> None:
        if self.allowed:
            # Chats outside TELEGRAM_ALLOWED_CHATS get a polite refusal and nothing else.
            outside = ~filters.Chat(chat_id=self.allowed)
            app.add_handler(MessageHandler(outside, self.refuse), group=-1)
        app.add_handler(CallbackQueryHandler(self.button))
        new_messages = filters.UpdateType.MESSAGE
        app.add_handler(MessageHandler(new_messages & filters.TEXT, self.message))
        not_text = new_messages & ~filters.TEXT & ~filters.StatusUpdate.ALL
        app.add_handler(MessageHandler(not_text, self.not_text))
        joined = new_messages & filters.StatusUpdate.NEW_CHAT_MEMBERS
        app.add_handler(MessageHandler(joined, self.joined))
        app.add_error_handler(self.failed)

    async def refuse(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message  # new messages only: never edits or channel posts
        if message is not None and _meant_for_bot(message, context.bot):
            await self._send_text(_Target.of(message), messages.say(messages.NOT_ALLOWED, "nb"))
        raise ApplicationHandlerStop

    # -- messages and buttons ---------------------------------------------------------------

    async def message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        text = message.text or ""
        if not _meant_for_bot(message, context.bot):
            return  # in a group, answer only when @mentioned, replied to or given a command
        text = _without_mention(text, context.bot.username)
        key = _chat_key(update)
        async with self._lock(key):
            if parse_command(text).name == "ask":  # commands and blank text answer at once
                await self._typing(message)
            await self._answer(update, key, message, text)

    async def not_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        # In groups, people share photos and files with each other: only a private chat, or a
        # reply to the bot, is told that the bot reads text.
        message = update.effective_message
        if _meant_for_bot(message, context.bot):
            await self._answer(update, _chat_key(update), message, NotText())

    async def joined(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Added to a group: say hello and what the bot can do."""
        message = update.effective_message
        if any(member.id == context.bot.id for member in message.new_chat_members):
            target = replace(_Target.of(message), reply_to=None)
            reply = await self.service.reply(_chat_key(update), None, Welcome(), CHANNEL)
            parts = render.reply(reply, self.message_limit)
            await self._send(target, parts, keyboard=render.keyboard(reply))

    async def button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        chat = update.effective_chat
        if self.allowed and (chat is None or chat.id not in self.allowed):
            await query.answer(_popup(messages.say(messages.NOT_ALLOWED, "nb")))
            return
        incoming = _button(query.data or "")
        key = _owner_key(update, context.bot)
        async with self._lock(key):
            reply = await self.service.reply(key, _user_key(update), incoming, CHANNEL)
            if reply.kind in (ReplyKind.SOURCE, ReplyKind.LESSON):
                await query.answer()  # the button stops spinning; the passage or lesson follows
                if query.message is not None:
                    target = _Target.of(query.message)
                    if reply.kind == ReplyKind.LESSON:
                        await self._send_course(target, reply)
                    else:
                        await self._send(target, render.reply(reply, self.message_limit))
                return
        await query.answer(_popup(reply.text), show_alert=reply.kind == ReplyKind.ERROR)

    async def failed(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("Telegram update failed", exc_info=context.error)
        if not isinstance(update, Update):
            return
        sorry = messages.say(messages.FAILED, "nb")
        try:
            if update.callback_query is not None:
                await update.callback_query.answer(_popup(sorry), show_alert=True)
            elif update.effective_message is not None:
                await self._send_text(_Target.of(update.effective_message), sorry)
        except TelegramError:
            log.warning("Could not tell the user about the failure either")

    # -- replying ---------------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _typing(self, message: Message) -> None:
        """ "typing…" while the answer is found; a failure here must not cost the answer."""
        try:
            await message.get_bot().send_chat_action(
                message.chat_id, ChatAction.TYPING, message_thread_id=_thread(message)
            )
        except TelegramError as exc:
            log.warning("Could not show 'typing': %s", exc)

    async def _answer(self, update: Update, key: str, message: Message, incoming: Incoming) -> None:
        reply = await self.service.reply(key, _user_key(update), incoming, CHANNEL)
        if reply.kind == ReplyKind.LESSON:
            await self._send_course(_Target.of(message), reply)
            return
        parts = render.reply(reply, self.message_limit)
        await self._send(_Target.of(message), parts, keyboard=render.keyboard(reply))

    async def _send_course(self, target: _Target, reply: Reply) -> None:
        """A course reply: the verdict, then the next lesson, each with its own buttons."""
        for parts, keyboard in render.course(reply, self.message_limit):
            await self._send(target, parts, keyboard=keyboard)

    async def _send_text(self, target: _Target, text: str) -> None:
        await self._send(target, render.text(text, self.message_limit))

    async def _send(
        self,
        target: _Target,
        parts: list[str],
        keyboard: InlineKeyboardMarkup | None = None,
    ) -> None:
        quoted = (
            ReplyParameters(target.reply_to, allow_sending_without_reply=True)
            if target.reply_to is not None
            else None
        )
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            await target.bot.send_message(
                chat_id=target.chat_id,
                text=part,
                parse_mode=ParseMode.HTML,
                link_preview_options=_NO_PREVIEW,
                reply_markup=keyboard if last else None,
                message_thread_id=target.thread,
                reply_parameters=quoted,
            )


@dataclass(frozen=True)
class _Target:
    """Where a reply goes: the chat, its forum topic, and in a group the message it answers (so
    everyone sees whose question it is, and the buttons know whose conversation it belongs to)."""

    bot: Bot
    chat_id: int
    thread: int | None = None
    reply_to: int | None = None

    @classmethod
    def of(cls, message: MaybeInaccessibleMessage) -> _Target:
        group = message.chat.type != ChatType.PRIVATE
        if not isinstance(message, Message):  # a button under a message older than 48 hours
            return cls(message.get_bot(), message.chat.id)
        return cls(
            message.get_bot(),
            message.chat_id,
            _thread(message),
            message.message_id if group else None,
        )


def _button(data: str) -> Incoming:
    """What a button of this bot's asks for: 👍/👎, a source, a course answer or the course."""
    if match := _CALLBACK.match(data):
        kind, turn_id, value = match.groups()
        return Vote(turn_id, value == "1") if kind == "fb" else ShowSource(value, turn_id)
    if match := _CHOICE.match(data):
        return Choose(match.group(1), int(match.group(2)))
    if data == "intro":
        return Intro()
    return "/?"  # not a button of this bot: read as an unknown command


def _popup(text: str) -> str:
    """A callback answer's text: Telegram shows at most 200 characters."""
    return text if len(text) <= POPUP_LIMIT else text[: POPUP_LIMIT - 1].rstrip() + "…"


def _thread(message: Message) -> int | None:
    """The forum topic a message was sent in, so the reply lands in the same topic."""
    return message.message_thread_id if message.is_topic_message else None


def _chat_key(update: Update) -> str:
    # Per chat and per user, so two people in a group each keep their own follow-ups.
    chat = update.effective_chat.id if update.effective_chat else "?"
    user = update.effective_user.id if update.effective_user else "?"
    return f"telegram:{chat}:{user}"


def _owner_key(update: Update, bot: Bot) -> str:
    """The conversation a button belongs to. In a group, anyone may press 👎 or "Kilde 1" under
    someone else's answer: the answer replies to its question, so the asker is known."""
    message = update.callback_query.message if update.callback_query else None
    if isinstance(message, Message) and message.chat.type != ChatType.PRIVATE:
        question = message.reply_to_message
        # (In a forum topic a message that quotes nothing "replies" to the topic's first message.)
        quoted = question is not None and not question.forum_topic_created
        asker = question.from_user if quoted and question is not None else None
        if asker is not None and asker.id != bot.id:
            return f"telegram:{message.chat_id}:{asker.id}"
    return _chat_key(update)


def _user_key(update: Update) -> str:
    return f"telegram:{update.effective_user.id if update.effective_user else '?'}"


def _meant_for_bot(message: Message, bot: Bot) -> bool:
    """A new message the bot should react to: anything in a private chat; in a group a command
    for this bot, an @mention of it, a reply to it or its being added (never the group's own
    conversation)."""
    if message.chat.type == ChatType.PRIVATE:
        return True
    if any(member.id == bot.id for member in message.new_chat_members):
        return True
    text = message.text or ""
    if text.startswith("/"):
        return not _for_another_bot(text, bot.username)
    return _addressed_to(message, bot)


def _for_another_bot(text: str, username: str | None) -> bool:
    """ "/hjelp@AnnenBot": in a group with several bots, a command one of the others."""
    word = text.split(maxsplit=1)[0] if text.strip() else ""
    _, at, name = word.partition("@")
    return bool(at) and name.casefold() != (username or "").casefold()


def _addressed_to(message: Message, bot: Bot) -> bool:
    """A group message meant for the bot: it @mentions the bot or replies to one of its messages."""
    text = message.text or message.caption or ""
    if bot.username and _mention(bot.username).search(text):
        return True
    replied = message.reply_to_message
    return bool(replied and replied.from_user and replied.from_user.id == bot.id)


def _mention(username: str) -> re.Pattern[str]:
    return re.compile(rf"@{re.escape(username)}(?![A-Za-z0-9_])", re.IGNORECASE)


def _without_mention(text: str, username: str | None) -> str:
    if username:
        text = _mention(username).sub(" ", text)
    return " ".join(text.split())


async def _set_commands(app: Application) -> None:
    """Show the commands in Telegram's menu (bokmål is the bot's language)."""
    await app.bot.set_my_commands([BotCommand(word, text) for word, text in telegram_menu()])


def check_settings(settings: Settings, *, connect: bool = False) -> None:
    """Fail before anything starts when the Telegram settings cannot work: a missing token or
    webhook secret, and (with `connect`) no way to reach Telegram or a token it rejects. Each is
    one sentence, before the engine is opened."""
    if not settings.telegram_bot_token:
        raise ChannelConfigError(
            "TELEGRAM_BOT_TOKEN er ikke satt; hent et token fra @BotFather og legg det i .env."
        )
    if settings.telegram_webhook_url and not settings.telegram_webhook_secret:
        raise ChannelConfigError(
            "TELEGRAM_WEBHOOK_URL er satt, men ikke TELEGRAM_WEBHOOK_SECRET; sett en hemmelig "
            "streng (A–Z, a–z, 0–9, _ og -) så bare Telegram kan sende til webhooken."
        )
    if connect:
        check_connection(settings)


def _base_urls(settings: Settings) -> dict[str, str]:
    if not settings.telegram_base_url:
        return {}
    base = settings.telegram_base_url.rstrip("/")
    return {"base_url": base, "base_file_url": re.sub(r"/bot$", "/file/bot", base)}


def check_connection(settings: Settings) -> None:
    """Reach Telegram once before starting, so a missing network or a rejected token is one
    sentence instead of a traceback. Not retried: at start-up an answer now beats a wait."""
    token = settings.telegram_bot_token or ""

    async def who_am_i() -> None:
        async with Bot(token, **_base_urls(settings)) as bot:
            await bot.get_me()

    try:
        asyncio.run(who_am_i())
    except InvalidToken as exc:
        raise ChannelConfigError(
            "Telegram avviste TELEGRAM_BOT_TOKEN; hent et nytt token fra @BotFather."
        ) from exc
    except TelegramError as exc:
        where = settings.telegram_base_url or "api.telegram.org"
        reason = " ".join(str(exc).split())
        if token:
            reason = reason.replace(token, "***")  # never print the token
        raise ChannelConfigError(
            f"Fikk ikke kontakt med Telegram ({where}: {reason}); sjekk nettverket, eller "
            "TELEGRAM_BASE_URL for en egen Bot API-server."
        ) from exc


def build_application(
    service: ConversationService,
    settings: Settings,
    message_limit: int = render.TELEGRAM_LIMIT,
    *,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    updater: bool = True,
) -> Application:
    """The python-telegram-bot Application with every handler, built in one place.
    `message_limit` is Telegram's; a smaller one lets a test see answers split. `retries` and
    `backoff` are how a send that meets 429 or a server error is repeated. Without an
    `updater`, the caller puts the updates on its queue (`add_webhook_route`)."""
    check_settings(settings)
    bot = SkippingBot(
        settings.telegram_bot_token or "",
        # The connection pools ApplicationBuilder gives its own bot.
        request=HTTPXRequest(connection_pool_size=256),
        get_updates_request=HTTPXRequest(connection_pool_size=1),
        rate_limiter=RetryingRateLimiter(retries, backoff),
        **_base_urls(settings),
    )
    builder = Application.builder()
    # An updater brings its bot; without one, the Application takes the bot itself.
    if updater:
        builder = builder.updater(SkippingUpdater(bot, asyncio.Queue()))
    else:
        builder = builder.bot(bot).updater(None)
    app = builder.post_init(_set_commands).concurrent_updates(True).build()
    TelegramBot(service, settings, message_limit).register(app)
    return app


def add_webhook_route(
    app: web.Application, service: ConversationService, settings: Settings
) -> str:
    """Telegram's webhook as a route of `serve`'s web app (python-telegram-bot's custom-webhook
    pattern: an Application without an Updater, fed by this route), for TELEGRAM_BOT_TOKEN and
    TELEGRAM_WEBHOOK_URL. One process and one engine then serve the HTTP API, Teams and
    Telegram, and any number of replicas can sit behind the webhook's URL. Returns what the
    start line says about Telegram."""
    check_settings(settings)
    assert settings.telegram_webhook_url is not None
    telegram = build_application(service, settings, updater=False)
    path = "/" + urlparse(settings.telegram_webhook_url).path.lstrip("/")
    secret = (settings.telegram_webhook_secret or "").encode()

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "").encode()
        if not hmac.compare_digest(given, secret):
            return web.Response(status=403)  # only Telegram knows the secret
        try:
            raw = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400)
        update = _readable(raw, telegram.bot)
        if update is not None:  # one it cannot read: 200 all the same, or Telegram sends it again
            await telegram.update_queue.put(Update.de_json(update, telegram.bot))
        return web.Response()

    async def start(_app: web.Application) -> None:
        await telegram.initialize()
        await _set_commands(telegram)
        await telegram.start()
        # Every replica registers the same URL; Telegram keeps one webhook per bot.
        await telegram.bot.set_webhook(
            settings.telegram_webhook_url,
            secret_token=settings.telegram_webhook_secret,
            allowed_updates=Update.ALL_TYPES,
        )

    async def stop(_app: web.Application) -> None:
        if telegram.running:
            await telegram.stop()
        await telegram.shutdown()

    app.router.add_post(path, receive)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return f"webhook på {path}"


def run(service: ConversationService, settings: Settings) -> None:
    """Run until Ctrl-C: long polling, or a webhook when TELEGRAM_WEBHOOK_URL is set."""
    app = build_application(service, settings)  # `styringsbot telegram` checked the connection
    if settings.telegram_webhook_url:
        app.run_webhook(
            listen=settings.telegram_webhook_listen,
            port=settings.telegram_webhook_port,
            url_path=urlparse(settings.telegram_webhook_url).path.lstrip("/"),
            webhook_url=settings.telegram_webhook_url,
            secret_token=settings.telegram_webhook_secret,
            allowed_updates=Update.ALL_TYPES,
        )
    else:
        app.run_polling(allowed_updates=Update.ALL_TYPES)
