"""The conversation service: the only thing a channel calls.

One turn in, one answer out, with per-chat memory so a follow-up ("og hvem skriver referatet?") is
understood; "show source n"; 👍/👎 feedback; and the commands every channel shares.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, TypeVar

from bot.answer import Answer, Citation
from bot.engine import Engine
from bot.feedback import FeedbackStore
from bot.language import detect
from bot.query import FollowUpContext
from ingest.lexical import tokenize

T = TypeVar("T")

HISTORY_TURNS = 20  # answers a chat can still give feedback on or show sources of
FOLLOW_UP_SECONDS = 30 * 60  # a question after a longer pause starts afresh
MAX_CHATS = 10_000  # chats kept in memory; the least recently used is forgotten first
MAX_QUESTION_CHARS = 1000

# "og hvem skriver referatet?", "hva med oppdragsstyringsmøter?", "and who writes the minutes?"
_FOLLOW_UP_START = re.compile(
    r"^(og|men|så|hva med|hvem da|hvordan da|enn|and|but|what about|how about)\b", re.IGNORECASE
)
_PRONOUNS = re.compile(
    r"\b(det|den|dette|denne|disse|de|dem|der|it|this|that|they|them|there)\b", re.IGNORECASE
)

QuestionLog = Literal["off", "gaps", "all"]


def is_follow_up(question: str) -> bool:
    """A question that leans on the previous turn: starts like a follow-up, or is too thin alone."""
    text = question.strip()
    if _FOLLOW_UP_START.match(text):
        return True
    return len(tokenize(text)) <= 2 and bool(_PRONOUNS.search(text))


# ---------------------------------------------------------------------------------------------
# Commands shared by every channel

CommandName = Literal["ask", "start", "help", "new", "source", "feedback", "unknown", "empty"]

_COMMANDS: dict[str, CommandName] = {
    "start": "start",
    "hjelp": "help",
    "help": "help",
    "ny": "new",
    "new": "new",
    "kilde": "source",
    "source": "source",
}
_VOTES = {"bra": "up", "good": "up", "dårlig": "down", "darlig": "down", "bad": "down"}
# Typed without a slash, e.g. in Teams where "/" opens the command box: "kilde 2", "vis kilde 2".
_BARE_SOURCE = re.compile(r"^(?:vis\s+|show\s+)?(?:kilde|source)(?:\s+(\d+))?[.!]?$", re.IGNORECASE)
_BARE_COMMAND = re.compile(
    r"^(hjelp|help|ny|new|ny samtale|new conversation)[.!?]?$", re.IGNORECASE
)


@dataclass(frozen=True)
class Command:
    name: CommandName
    argument: str = ""


def parse_command(text: str) -> Command:
    """What a chat message asks for; anything that is not a command is a question."""
    text = text.strip()
    if not text:
        return Command("empty")
    if text.startswith("/"):
        head, _, rest = text[1:].partition(" ")
        name = head.split("@", 1)[0].lower()  # Telegram groups send "/kilde@Styringsbot 2"
        if name in _VOTES:
            return Command("feedback", _VOTES[name])
        return Command(_COMMANDS.get(name, "unknown"), rest.strip() if name in _COMMANDS else head)
    if match := _BARE_SOURCE.match(text):
        return Command("source", match.group(1) or "")
    if match := _BARE_COMMAND.match(text):
        word = match.group(1).lower()
        return Command("help" if word in ("hjelp", "help") else "new")
    return Command("ask", text)


# ---------------------------------------------------------------------------------------------
# Outcomes a channel renders


class ServiceError(Exception):
    """A turn the service cannot take; the message is one sentence for the user."""

    def __init__(self, message: dict[str, str], language: str = "nb") -> None:
        self.language = language if language in message else "nb"
        super().__init__(message[self.language])


EMPTY_QUESTION = {
    "nb": "Skriv et spørsmål om styring eller roller i Oslo kommune, så svarer jeg.",
    "en": "Write a question about governance or roles in Oslo kommune and I will answer.",
}
TOO_LONG = {
    "nb": "Spørsmålet er for langt ({n} tegn); skriv det kortere, høyst {limit} tegn.",
    "en": "The question is too long ({n} characters); please keep it to {limit} at most.",
}
NO_SOURCES_YET = {
    "nb": "Det er ingen kilder å vise ennå; still et spørsmål først.",
    "en": "There are no sources to show yet; ask a question first.",
}
NO_SOURCES_IN_ANSWER = {
    "nb": "Det svaret fant ikke noe i dokumentene, så det har ingen kilder å vise.",
    "en": "That answer found nothing in the documents, so it has no sources to show.",
}
NOT_A_NUMBER = {
    "nb": "Skriv kilde og et tall fra 1 til {count}, for eksempel «/kilde 1».",
    "en": "Write source and a number from 1 to {count}, for example “/kilde 1”.",
}
NO_SUCH_SOURCE = {
    "nb": "Det svaret har kilde 1 til {count}; prøv en av dem.",
    "en": "That answer has sources 1 to {count}; try one of those.",
}
GONE = {
    "nb": "Det svaret er ikke lenger i samtalen (den er ny eller boten er startet på nytt); "
    "still spørsmålet igjen.",
    "en": "That answer is no longer in the conversation (it was reset or the bot restarted); "
    "please ask again.",
}


def _message(template: dict[str, str], **values: object) -> dict[str, str]:
    return {lang: text.format(**values) for lang, text in template.items()}


@dataclass(frozen=True)
class Turn:
    id: str
    question: str
    answer: Answer
    at: float
    context: FollowUpContext | None = None  # the earlier turn a follow-up builds on

    @property
    def built_on(self) -> str | None:
        """For the feedback store: the earlier question a follow-up built on."""
        return self.context.question if self.context else None


@dataclass(frozen=True)
class SourceView:
    """A cited passage in full, for "show source n"."""

    turn: str
    citation: Citation
    language: str


# ---------------------------------------------------------------------------------------------


@dataclass
class ConversationService:
    """Answers turns for every channel; channels never reach into retrieval themselves."""

    engine: Engine
    store: FeedbackStore | None = None
    question_log: QuestionLog = "gaps"
    max_question_chars: int = MAX_QUESTION_CHARS
    clock: Callable[[], float] = time.monotonic
    top_k: int | None = None  # passages per answer (None: the engine's setting)
    _chats: OrderedDict[str, deque[Turn]] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _worker: ThreadPoolExecutor | None = field(default=None, repr=False)

    # -- turns ------------------------------------------------------------------------------

    def ask(self, chat: str | None, question: str, channel: str = "terminal") -> Turn:
        """Answer one question in a chat (None: a one-off question, nothing remembered);
        raises ServiceError for empty or over-long text."""
        question = question.strip()
        language = detect(question) if question else "nb"
        if not question:
            raise ServiceError(EMPTY_QUESTION, language)
        if len(question) > self.max_question_chars:
            raise ServiceError(
                _message(TOO_LONG, n=len(question), limit=self.max_question_chars),
                language,
            )
        now = self.clock()
        previous = self._last(chat) if chat is not None else None
        context = None
        if previous and now - previous.at <= FOLLOW_UP_SECONDS and is_follow_up(question):
            context = previous.answer.follow_up_context()
        answer = self.engine.ask(question, k=self.top_k, context=context)
        turn = Turn(uuid.uuid4().hex[:12], question, answer, now, context)
        self._log(turn, channel)
        if chat is None:
            return turn
        with self._lock:
            turns = self._chats.pop(chat, None) or deque(maxlen=HISTORY_TURNS)
            turns.append(turn)
            self._chats[chat] = turns
            while len(self._chats) > MAX_CHATS:
                self._chats.popitem(last=False)
        return turn

    def forget(self, chat: str) -> None:
        """Start the conversation afresh ("/ny")."""
        with self._lock:
            self._chats.pop(chat, None)

    def last_turn(self, chat: str) -> Turn | None:
        return self._last(chat)

    def turn(self, chat: str, turn_id: str) -> Turn | None:
        with self._lock:
            return next((t for t in self._chats.get(chat, ()) if t.id == turn_id), None)

    # -- sources and feedback ---------------------------------------------------------------

    def source(self, chat: str, number: str | int, turn_id: str | None = None) -> SourceView:
        """The whole n-th cited passage of an answer (the latest unless a turn is named)."""
        turn = self.turn(chat, turn_id) if turn_id else self._last(chat)
        if turn is None:
            raise ServiceError(GONE if turn_id else NO_SOURCES_YET)
        citations = turn.answer.citations
        language = turn.answer.language
        if not citations:
            raise ServiceError(NO_SOURCES_IN_ANSWER, language)
        try:
            n = int(str(number).strip())
        except ValueError:
            raise ServiceError(_message(NOT_A_NUMBER, count=len(citations)), language) from None
        citation = next((c for c in citations if c.n == n), None)
        if citation is None:
            raise ServiceError(_message(NO_SUCH_SOURCE, count=len(citations)), language)
        return SourceView(turn.id, citation, language)

    def feedback(self, chat: str, turn_id: str, helpful: bool, channel: str = "terminal") -> Turn:
        """Store 👍/👎 for an answer in this chat; a second vote replaces the first."""
        turn = self.turn(chat, turn_id)
        if turn is None:
            raise ServiceError(GONE)
        if self.store is not None:
            self.store.record(
                "up" if helpful else "down", channel, turn.id, turn.answer, turn.built_on
            )
        return turn

    # -- async use from channels ------------------------------------------------------------

    async def run(self, function: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run a service call off the event loop; one worker keeps the engine single-threaded."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="styringsbot")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, partial(function, *args, **kwargs))

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            self.store.close()

    # -- helpers ----------------------------------------------------------------------------

    def _last(self, chat: str) -> Turn | None:
        with self._lock:
            turns = self._chats.get(chat)
            return turns[-1] if turns else None

    def _log(self, turn: Turn, channel: str) -> None:
        if self.store is None or self.question_log == "off":
            return
        if turn.answer.abstained:
            self.store.record("abstained", channel, turn.id, turn.answer, turn.built_on)
        elif self.question_log == "all":
            self.store.record("asked", channel, turn.id, turn.answer, turn.built_on)


class RateLimiter:
    """At most `limit` turns per `seconds` for each key (a user), as a sliding window."""

    def __init__(
        self, limit: int, seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.seconds = seconds
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        if self.limit <= 0:
            return True
        now = self.clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= self.seconds:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            if len(self._hits) > MAX_CHATS:  # forget idle users so memory stays bounded
                for idle in [k for k, v in self._hits.items() if now - v[-1] >= self.seconds]:
                    del self._hits[idle]
            return True

    def retry_after(self, key: str) -> float:
        with self._lock:
            hits = self._hits.get(key)
            return max(0.0, self.seconds - (self.clock() - hits[0])) if hits else 0.0
