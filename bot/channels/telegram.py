"""Telegram through python-telegram-bot: `styringsbot telegram`.

Long polling by default (works behind a firewall); a webhook with a secret token when
`TELEGRAM_WEBHOOK_URL` is set. Every reply is HTML with all source text escaped, split below
Telegram's 4096-character limit between paragraphs.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlparse

from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    Update,
)
from telegram.constants import ChatAction, ChatType, ParseMode
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import render
from bot.answer import Answer
from bot.channels import ChannelConfigError
from bot.config import Settings
from bot.conversation import ConversationService, RateLimiter, ServiceError
from bot.language import detect

log = logging.getLogger(__name__)

CHANNEL = "telegram"
COMMANDS = [
    BotCommand("hjelp", "Hva jeg kan svare på, og hvordan"),
    BotCommand("kilde", "Vis hele kilde N fra siste svar, f.eks. /kilde 1"),
    BotCommand("ny", "Start en ny samtale (glem den forrige)"),
    BotCommand("start", "Velkommen og hjelp"),
]
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
_CALLBACK = re.compile(r"^(fb|src):([0-9a-f]{1,32}):(\d{1,3})$")


class TelegramBot:
    """The handlers; one instance per running bot, holding no state of its own but the limiter."""

    def __init__(
        self,
        service: ConversationService,
        settings: Settings,
        message_limit: int = render.TELEGRAM_LIMIT,
    ) -> None:
        self.service = service
        self.message_limit = message_limit
        self.allowed = settings.telegram_chat_ids
        self.limiter = RateLimiter(settings.rate_limit)

    def register(self, app: Application) -> None:
        app.add_handler(TypeHandler(Update, self.guard), group=-1)
        app.add_handler(CommandHandler("start", self.start))
        app.add_handler(CommandHandler(["hjelp", "help"], self.help))
        app.add_handler(CommandHandler(["ny", "new"], self.new))
        app.add_handler(CommandHandler(["kilde", "source"], self.source))
        app.add_handler(CallbackQueryHandler(self.button))
        new_messages = filters.UpdateType.MESSAGE
        app.add_handler(MessageHandler(new_messages & filters.COMMAND, self.unknown_command))
        app.add_handler(MessageHandler(new_messages & filters.TEXT, self.question))
        # In groups, people share photos and files with each other: only a private chat is told
        # that the bot reads text.
        not_text = (
            new_messages & filters.ChatType.PRIVATE & ~filters.TEXT & ~filters.StatusUpdate.ALL
        )
        app.add_handler(MessageHandler(not_text, self.not_text))
        app.add_error_handler(self.failed)

    # -- guards -----------------------------------------------------------------------------

    async def guard(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Chats outside TELEGRAM_ALLOWED_CHATS get a polite refusal and nothing else."""
        chat = update.effective_chat
        if not self.allowed or (chat is not None and chat.id in self.allowed):
            return
        if update.callback_query is not None:
            await update.callback_query.answer(render.say(render.NOT_ALLOWED, "nb"))
        elif update.message is not None and _meant_for_bot(update.message, context.bot):
            await self._send(update.message, render.say(render.NOT_ALLOWED, "nb"))
        raise ApplicationHandlerStop

    # -- commands ---------------------------------------------------------------------------

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        text = f"{render.WELCOME['nb']}\n\n{render.help_text('nb')}"
        await self._send(update.effective_message, text)

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        language = "en" if _command_word(update) == "help" else "nb"
        await self._send(update.effective_message, render.help_text(language))

    async def new(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.service.forget(_chat_key(update))
        await self._send(update.effective_message, render.say(render.NEW_CONVERSATION, "nb"))

    async def source(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        argument = " ".join(context.args or [])
        try:
            view = self.service.source(_chat_key(update), argument)
        except ServiceError as exc:
            await self._send(update.effective_message, str(exc))
            return
        parts = render.telegram_source(view, self.message_limit)
        await self._send_html(update.effective_message, parts)

    async def unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        reply = render.say(render.UNKNOWN_COMMAND, "nb", help="/hjelp")
        await self._send(update.effective_message, reply)

    async def not_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._send(update.effective_message, render.say(render.TEXT_ONLY, "nb"))

    # -- questions --------------------------------------------------------------------------

    async def question(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message.chat.type != ChatType.PRIVATE and not _addressed_to(message, context.bot):
            return  # in a group, answer only when @mentioned or replied to
        text = _without_mention(message.text or "", context.bot.username)
        user = f"telegram:{update.effective_user.id if update.effective_user else '?'}"
        if not self.limiter.allow(user):
            seconds = max(1, round(self.limiter.retry_after(user)))
            reply = render.say(render.RATE_LIMITED, detect(text), seconds=seconds)
            await self._send(message, reply)
            return
        await context.bot.send_chat_action(
            message.chat_id, ChatAction.TYPING, message_thread_id=_thread(message)
        )
        try:
            turn = await self.service.run(self.service.ask, _chat_key(update), text, CHANNEL)
        except ServiceError as exc:
            await self._send(message, str(exc))
            return
        parts = render.telegram_answer(turn.answer, self.message_limit)
        await self._send_html(message, parts, keyboard=_keyboard(turn.answer, turn.id))

    async def button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        match = _CALLBACK.match(query.data or "")
        if match is None:
            await query.answer(render.say(render.UNKNOWN_COMMAND, "nb", help="/hjelp"))
            return
        kind, turn_id, value = match.groups()
        chat = _chat_key(update)
        try:
            if kind == "fb":
                turn = await self.service.run(
                    self.service.feedback, chat, turn_id, value == "1", CHANNEL
                )
                await query.answer(render.say(render.THANKS[value == "1"], turn.answer.language))
                return
            view = self.service.source(chat, value, turn_id=turn_id)
        except ServiceError as exc:
            await query.answer(str(exc), show_alert=True)
            return
        await query.answer()
        if query.message is not None and isinstance(query.message, Message):
            await self._send_html(query.message, render.telegram_source(view, self.message_limit))

    async def failed(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("Telegram update failed", exc_info=context.error)
        if isinstance(update, Update) and update.effective_message is not None:
            try:
                await self._send(update.effective_message, render.say(render.FAILED, "nb"))
            except TelegramError:
                log.warning("Could not tell the user about the failure either")

    # -- sending ----------------------------------------------------------------------------

    async def _send(self, message: Message | None, text: str) -> None:
        await self._send_html(message, render.telegram_text(text, self.message_limit))

    async def _send_html(
        self,
        message: Message | None,
        parts: list[str],
        keyboard: InlineKeyboardMarkup | None = None,
    ) -> None:
        if message is None:
            return
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            await message.get_bot().send_message(
                chat_id=message.chat_id,
                text=part,
                parse_mode=ParseMode.HTML,
                link_preview_options=_NO_PREVIEW,
                reply_markup=keyboard if last else None,
                message_thread_id=_thread(message),
            )


def _thread(message: Message) -> int | None:
    """The forum topic a message was sent in, so the reply lands in the same topic."""
    return message.message_thread_id if message.is_topic_message else None


def _keyboard(answer: Answer, turn_id: str) -> InlineKeyboardMarkup | None:
    if answer.abstained:
        return None
    labels = render.LABELS.get(answer.language, render.LABELS["nb"])
    rows = [
        [
            InlineKeyboardButton(labels["helpful"], callback_data=f"fb:{turn_id}:1"),
            InlineKeyboardButton(labels["unhelpful"], callback_data=f"fb:{turn_id}:0"),
        ]
    ]
    if answer.citations:
        rows.append(
            [
                InlineKeyboardButton(
                    labels["source"].format(n=c.n), callback_data=f"src:{turn_id}:{c.n}"
                )
                for c in answer.citations
            ]
        )
    return InlineKeyboardMarkup(rows)


def _chat_key(update: Update) -> str:
    # Per chat and per user, so two people in a group each keep their own follow-ups.
    chat = update.effective_chat.id if update.effective_chat else "?"
    user = update.effective_user.id if update.effective_user else "?"
    return f"telegram:{chat}:{user}"


def _command_word(update: Update) -> str:
    text = update.effective_message.text if update.effective_message else ""
    return (text or "").lstrip("/").split(" ", 1)[0].split("@", 1)[0].lower()


def _meant_for_bot(message: Message, bot: object) -> bool:
    """A new message the bot should react to: private, a command, or addressed to it in a group
    (never edits or channel posts, never the group's own conversation)."""
    if message.chat.type == ChatType.PRIVATE or (message.text or "").startswith("/"):
        return True
    return _addressed_to(message, bot)


def _addressed_to(message: Message, bot: object) -> bool:
    """A group message meant for the bot: it @mentions the bot or replies to one of its messages."""
    username = getattr(bot, "username", None)
    text = message.text or ""
    if username and f"@{username}".casefold() in text.casefold():
        return True
    replied = message.reply_to_message
    return bool(replied and replied.from_user and replied.from_user.id == getattr(bot, "id", None))


def _without_mention(text: str, username: str | None) -> str:
    if username:
        text = re.sub(rf"@{re.escape(username)}\b", " ", text, flags=re.IGNORECASE)
    return " ".join(text.split())


async def _set_commands(app: Application) -> None:
    """Show the commands in Telegram's menu (bokmål is the bot's language)."""
    await app.bot.set_my_commands(COMMANDS)


def check_settings(settings: Settings) -> None:
    """Fail before anything starts when the Telegram settings cannot work."""
    if not settings.telegram_bot_token:
        raise ChannelConfigError(
            "TELEGRAM_BOT_TOKEN er ikke satt; hent et token fra @BotFather og legg det i .env."
        )
    if settings.telegram_webhook_url and not settings.telegram_webhook_secret:
        raise ChannelConfigError(
            "TELEGRAM_WEBHOOK_URL er satt, men ikke TELEGRAM_WEBHOOK_SECRET; sett en hemmelig "
            "streng (A–Z, a–z, 0–9, _ og -) så bare Telegram kan sende til webhooken."
        )


def build_application(
    service: ConversationService, settings: Settings, message_limit: int = render.TELEGRAM_LIMIT
) -> Application:
    """The python-telegram-bot Application with every handler, built in one place.
    `message_limit` is Telegram's; a smaller one lets a test see answers split."""
    check_settings(settings)
    builder = Application.builder().token(settings.telegram_bot_token).post_init(_set_commands)
    if settings.telegram_base_url:
        base = settings.telegram_base_url.rstrip("/")
        builder = builder.base_url(base).base_file_url(re.sub(r"/bot$", "/file/bot", base))
    builder = builder.concurrent_updates(True)
    app = builder.build()
    TelegramBot(service, settings, message_limit).register(app)
    return app


def run(service: ConversationService, settings: Settings) -> None:
    """Run until Ctrl-C: long polling, or a webhook when TELEGRAM_WEBHOOK_URL is set."""
    app = build_application(service, settings)
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
