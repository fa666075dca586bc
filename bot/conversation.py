"""The conversation service: the only thing a channel calls.

One message or action in, one `Reply` out: an answer, a source view, help, a new conversation, a
feedback receipt, "rate limited", a welcome or an error. The service owns how a message is read
(commands, follow-ups, language), the limits (length, rate), the conversation state (in the store,
so it survives a restart), 👍/👎 and the knowledge-gap log, and where answers are computed (a
bounded pool of workers, with a short-lived cache for the meeting where many ask the same thing).
A channel is its transport plus a renderer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Literal, TypeVar

from bot import messages
from bot.answer import Answer, Citation, Statement
from bot.commands import command, help_text, parse_command
from bot.intro import Course, Lesson, Step, Verdict
from bot.language import detect
from bot.messages import Messages, say
from bot.privacy import mask
from bot.query import FollowUpContext
from bot.store import Kind, Progress, Store, StoredTurn
from ingest import lexical

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.engine import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")

HISTORY_TURNS = 20  # answers a chat can still give feedback on or show sources of
FOLLOW_UP_SECONDS = 30 * 60  # a question after a longer pause starts afresh
MAX_QUESTION_CHARS = 1000
RATE_WINDOW = 60.0  # seconds: the rate limit counts questions per minute
CACHE_SECONDS = 300.0  # an answer is reused for the same question this long
CACHE_ANSWERS = 1000
PURGE_EVERY = 3600.0  # how often old question text is looked for (with a retention set)

QuestionLog = Literal["off", "gaps", "all"]

# "og hvem skriver referatet?", "hva med oppdragsstyringsmøter?", "and who writes the minutes?"
_FOLLOW_UP_START = re.compile(
    r"^(og|men|så|hva med|hvem da|hvordan da|enn|and|but|what about|how about)\b", re.IGNORECASE
)
# Words that point back ("… gjennomføre den?", "korleis blir dei sette saman?", "did it have?").
_PRONOUNS = re.compile(
    r"\b(det|den|dette|denne|disse|de|dem|der|dei|it|its|this|that|these|those|they|them|their"
    r"|there)\b",
    re.IGNORECASE,
)
# Question and function words the stop lists lack (ingest.lexical.words drops the others): what
# a question has besides them is what it names of its own.
_FUNCTION_TEXT = """
    hvilket kor frå utan vert ei ofte mye må måtte bør burde får fikk gjør gjøre gjort under
    what who whom where when why how which many much often any some about from been were do does
    did have has had can could should would shall must may might"""
_FUNCTION_WORDS = frozenset(_FUNCTION_TEXT.split())
FOLLOW_UP_WORDS = 3  # a question that points back and names at most this many words of its own


def is_follow_up(question: str) -> bool:
    """A question that leans on the previous turn: it starts like a follow-up ("og …", "and …"),
    or it points back (det, den, dei, it, they …) and names little of its own ("hvor ofte skal
    virksomhetene gjennomføre den?"; not "Hvor mange ansatte har Oslo kommune totalt?")."""
    text = question.strip()
    if _FOLLOW_UP_START.match(text):
        return True
    if not _PRONOUNS.search(text):
        return False
    own = [
        word
        for word in lexical.words(text)  # stop words dropped
        if word not in _FUNCTION_WORDS and not _PRONOUNS.fullmatch(word)
    ]
    return len(own) <= FOLLOW_UP_WORDS


# ---------------------------------------------------------------------------------------------
# What comes in, and what goes out


@dataclass(frozen=True)
class Vote:
    """👍/👎 on an answer (a button in Telegram or Teams)."""

    turn: str
    helpful: bool


@dataclass(frozen=True)
class ShowSource:
    """ "Show source n" of an answer (the latest when no turn is named)."""

    n: str
    turn: str | None = None


@dataclass(frozen=True)
class Question:
    """A question as such, never read as a command (the HTTP API, `styringsbot ask`)."""

    text: str


@dataclass(frozen=True)
class Welcome:
    """The bot was added to a chat, or started (Teams install, Telegram /start)."""


@dataclass(frozen=True)
class NotText:
    """A sticker, a photo, a file: nothing to read."""


@dataclass(frozen=True)
class Intro:
    """Start the onboarding course, or resume it where the chat left it ("/intro", a button);
    `restart` goes back to its first step. `language` None: the chat's own."""

    restart: bool = False
    language: str | None = None


@dataclass(frozen=True)
class Choose:
    """An answer to a course step's check question (a button, or its number typed)."""

    step: str
    choice: int  # 1-based


Incoming = str | Question | Vote | ShowSource | Welcome | NotText | Intro | Choose


class ReplyKind(StrEnum):
    ANSWER = "answer"
    SOURCE = "source"
    HELP = "help"
    WELCOME = "welcome"
    NEW = "new"
    LESSON = "lesson"  # a course step, and/or the verdict on the previous step's check
    FEEDBACK = "feedback"
    RATE_LIMITED = "rate_limited"
    REFUSED = "refused"
    NOT_TEXT = "not_text"
    QUIT = "quit"
    ERROR = "error"


@dataclass(frozen=True)
class SourceView:
    """A cited passage in full, for "show source n"."""

    turn: str
    citation: Citation
    language: str


@dataclass(frozen=True)
class Reply:
    """What a channel shows for one incoming message; renderers draw it.

    `text` is the sentence(s) of every reply but an answer or a source view. `problem` names what
    was wrong with a refused question ("empty", "too_long", …), for the HTTP status. A course
    reply has the verdict on the check just answered and/or the next lesson, `text` before them
    (a welcome back) or after (the course is done). `course_steps`: a welcome offers the course.
    """

    kind: ReplyKind
    language: str = "nb"
    text: str = ""
    answer: Answer | None = None
    turn_id: str | None = None
    source: SourceView | None = None
    helpful: bool | None = None
    retry_after: float | None = None
    problem: str = ""
    lesson: Lesson | None = None
    verdict: Verdict | None = None
    course_steps: int = 0


class ServiceError(Exception):
    """A message the service cannot take; the message is one sentence for the user."""

    def __init__(self, message: Messages, language: str = "nb", problem: str = "") -> None:
        self.language = language if language in message else "nb"
        self.problem = problem
        super().__init__(message[self.language])


def _message(template: Messages, **values: object) -> Messages:
    return {lang: text.format(**values) for lang, text in template.items()}


@dataclass(frozen=True)
class Turn:
    id: str
    chat: str | None
    question: str
    answer: Answer
    at: float  # seconds since the epoch
    context: FollowUpContext | None = None  # the earlier turn a follow-up builds on

    @property
    def built_on(self) -> str | None:
        """For the gap log: the earlier question a follow-up built on."""
        return self.context.question if self.context else None


# ---------------------------------------------------------------------------------------------


class ConversationService:
    """Answers every channel's messages; channels never reach into retrieval themselves."""

    def __init__(
        self,
        engine: Engine,
        store: Store | None = None,
        *,
        question_log: QuestionLog = "gaps",
        max_question_chars: int = MAX_QUESTION_CHARS,
        rate_limit: int = 0,
        api_rate_limit: int = 0,
        retention_days: int = 0,
        workers: int = 1,
        cache_seconds: float = CACHE_SECONDS,
        top_k: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.store = store if store is not None else Store("sqlite://")
        self.question_log = question_log
        self.max_question_chars = max_question_chars
        self.rate_limit = rate_limit
        self.api_rate_limit = api_rate_limit
        self.retention_days = retention_days
        self.workers = max(1, workers)
        self.cache_seconds = cache_seconds
        self.top_k = top_k
        self.clock = clock
        self._cache: OrderedDict[tuple, tuple[float, Answer]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._purged = 0.0

    @classmethod
    def from_settings(
        cls, engine: Engine, settings: Settings, **overrides: object
    ) -> ConversationService:
        values: dict[str, object] = {
            "question_log": settings.question_log,
            "max_question_chars": settings.max_question_chars,
            "rate_limit": settings.rate_limit,
            "api_rate_limit": settings.api_rate_limit,
            "retention_days": settings.retention_days,
            "workers": settings.workers or os.cpu_count() or 1,
            "cache_seconds": settings.cache_seconds,
        }
        values.update(overrides)
        store = Store.open(settings.database_url, settings.data_dir)
        return cls(engine, store, **values)  # type: ignore[arg-type]

    # -- one message in, one reply out ------------------------------------------------------

    def handle(
        self, chat: str | None, user: str | None, incoming: Incoming, channel: str = "terminal"
    ) -> Reply:
        """Read one message or action and answer it. Never raises for what a user sends."""
        self._purge_now_and_then()
        if isinstance(incoming, Welcome):
            return self._welcome(channel)
        if isinstance(incoming, NotText):
            return Reply(ReplyKind.NOT_TEXT, "nb", say(messages.NOT_TEXT, "nb"))
        try:
            if isinstance(incoming, Vote):
                return self._vote(chat, incoming.turn, incoming.helpful, channel)
            if isinstance(incoming, ShowSource):
                return self._source(chat, incoming.n, incoming.turn, channel)
            if isinstance(incoming, Question):
                return self._question(chat, user, incoming.text, channel)
            if isinstance(incoming, Intro):
                return self._intro(chat, incoming, channel)
            if isinstance(incoming, Choose):
                return self._choose(chat, incoming, channel)
            return self._message(chat, user, incoming, channel)
        except ServiceError as exc:
            return Reply(ReplyKind.ERROR, exc.language, str(exc), problem=exc.problem)

    async def reply(
        self, chat: str | None, user: str | None, incoming: Incoming, channel: str = "terminal"
    ) -> Reply:
        """`handle` on the service's workers, off the event loop."""
        return await self.run(self.handle, chat, user, incoming, channel)

    def _message(self, chat: str | None, user: str | None, text: str, channel: str) -> Reply:
        parsed = parse_command(text, channel)
        english_word = parsed.name != "ask" and _english_command(text)
        language = "en" if english_word else (detect(text) if text.strip() else "nb")
        if parsed.name == "empty":
            raise ServiceError(messages.EMPTY_QUESTION, language, "empty")
        if parsed.name == "start":
            return self.handle(chat, user, Welcome(), channel)
        if parsed.name == "help":
            return Reply(ReplyKind.HELP, language, help_text(language, channel))
        if parsed.name == "intro":
            return self._intro(chat, _intro_asked(text, parsed.argument), channel)
        if parsed.name == "ask" and chat is not None and (chosen := _CHOICE.match(text)):
            # "2" while a check question waits for its answer is that answer
            waiting = self._waiting_step(chat)
            if waiting is not None:
                return self._choose(chat, Choose(waiting, int(chosen.group(1))), channel)
        if parsed.name == "new":
            if chat is not None:
                self.store.forget(chat)
            return Reply(ReplyKind.NEW, language, say(messages.NEW_CONVERSATION, language))
        if parsed.name == "source":
            return self._source(chat, parsed.argument, None, channel)
        if parsed.name == "feedback":
            last = self.store.last_turn(chat) if chat is not None else None
            if last is None:
                raise ServiceError(messages.NO_SOURCES_YET, language, "no_turn")
            return self._vote(chat, last.id, parsed.argument == "up", channel)
        if parsed.name == "quit":
            return Reply(ReplyKind.QUIT, language)
        if parsed.name == "unknown":
            words = {"help": command("hjelp", channel)}
            return Reply(
                ReplyKind.ERROR,
                language,
                say(messages.UNKNOWN_COMMAND, language, **words),
                problem="unknown_command",
            )
        return self._question(chat, user, parsed.argument, channel)

    def _question(self, chat: str | None, user: str | None, text: str, channel: str) -> Reply:
        # A chat user, or for the HTTP API a client address: one may not take the service alone.
        limit = self.api_rate_limit if channel == "http" else self.rate_limit
        if user is not None and limit > 0:
            wait = self.store.hit(f"rate:{user}", limit, RATE_WINDOW, self.clock())
            if wait > 0:
                language = detect(text) if text.strip() else "nb"
                seconds = max(1, round(wait))
                text_ = say(messages.RATE_LIMITED, language, seconds=seconds)
                return Reply(ReplyKind.RATE_LIMITED, language, text_, retry_after=wait)
        turn = self.ask(chat, text, channel)
        return Reply(ReplyKind.ANSWER, turn.answer.language, answer=turn.answer, turn_id=turn.id)

    # -- the onboarding course ---------------------------------------------------------------

    def _welcome(self, channel: str) -> Reply:
        """Hello, what the bot does, and (when there is one) the course on offer."""
        parts = [say(messages.WELCOME, "nb")]
        course = self._course()
        if course is not None:
            intro = command("intro", channel)
            steps = len(course.steps)
            parts.append(say(messages.COURSE_INVITE, "nb", intro=intro, steps=steps))
        parts.append(help_text("nb", channel))
        steps = len(course.steps) if course is not None else 0
        return Reply(ReplyKind.WELCOME, "nb", "\n\n".join(parts), course_steps=steps)

    def _course(self) -> Course | None:
        return getattr(self.engine, "course", None)

    def _waiting_step(self, chat: str) -> str | None:
        """The step whose check question this chat was shown last and has not answered, as
        long as nothing else was said since."""
        progress = self.store.progress(chat)
        if progress is None or progress.answered or progress.turn is None:
            return None
        last = self.store.last_turn(chat)
        return progress.step if last is not None and last.id == progress.turn else None

    def _intro(self, chat: str | None, asked: Intro, channel: str) -> Reply:
        """Start the course, resume it where this chat left it, or start it over."""
        course = self._course()
        progress = self.store.progress(chat) if chat is not None else None
        last = self.store.last_turn(chat) if chat is not None else None
        language = (
            asked.language
            or (progress.language if progress else None)
            or (last.answer.get("language") if last else None)
            or "nb"
        )
        if course is None:
            raise ServiceError(messages.COURSE_MISSING, language, "no_course")
        if chat is None:
            raise ServiceError(messages.COURSE_NEEDS_CONVERSATION, language, "no_conversation")
        now = self.clock()
        total = len(course.steps)
        ours = progress if progress is not None and progress.course == course.id else None
        if ours is None or asked.restart or ours.position >= total:
            if progress is None:
                self.store.course_event(course.id, "started")
            fresh = Progress(
                chat,
                course.id,
                course.steps[0].id,
                0,
                None,
                False,
                0,
                language,
                now,
                now,
                progress.finished if progress is not None else None,
            )
            if ours is None:
                intro = command("intro", channel)
                lead = say(
                    messages.COURSE_START,
                    language,
                    title=course.say_title(language),
                    steps=total,
                    intro=intro,
                )
            else:
                lead = say(messages.COURSE_AGAIN, language)
            return self._show(fresh, course, 0, lead, channel)
        position = course.position(ours.step)
        if position is None:  # the course was edited and the step is gone: the same place
            position = min(ours.position, total - 1)
        restart = _restart_command(channel, language)
        lead = say(
            messages.COURSE_RESUME, language, number=position + 1, total=total, restart=restart
        )
        return self._show(replace(ours, language=language), course, position, lead, channel)

    def _show(
        self,
        progress: Progress,
        course: Course,
        position: int,
        text: str,
        channel: str,
        verdict: Verdict | None = None,
    ) -> Reply:
        """Show one step (kept as a turn of the conversation, so "kilde 2" shows its passage
        and a follow-up builds on it) and remember that the chat is there."""
        step = course.steps[position]
        language = progress.language
        citations, _ = self.engine.cited(step.cites)
        title = step.say("title", language)
        answer = Answer(
            question=title,
            language=language,
            abstained=False,
            statements=[Statement(step.say("text", language), tuple(c.n for c in citations))],
            citations=citations,
            topic=title,
        )
        now = self.clock()
        turn_id = uuid.uuid4().hex[:12]
        state = answer.to_state()
        chat = progress.chat
        self.store.add_turn(StoredTurn(turn_id, chat, now, title, state, None), keep=HISTORY_TURNS)
        self.store.save_progress(
            replace(
                progress,
                step=step.id,
                position=position,
                turn=turn_id,
                answered=False,
                updated=now,
            )
        )
        lesson = Lesson(
            course=course.say_title(language),
            step=step.id,
            number=position + 1,
            total=len(course.steps),
            title=title,
            text=step.say("text", language),
            citations=tuple(citations),
            question=step.say("question", language),
            choices=tuple(c.say(language) for c in step.choices),
            language=language,
            turn_id=turn_id,
        )
        return Reply(
            ReplyKind.LESSON, language, text, turn_id=turn_id, lesson=lesson, verdict=verdict
        )

    def _choose(self, chat: str | None, chosen: Choose, channel: str) -> Reply:
        """The verdict on a check answer, then the next step (or the course's end)."""
        course = self._course()
        progress = self.store.progress(chat) if chat is not None else None
        language = progress.language if progress is not None else "nb"
        if course is None:
            raise ServiceError(messages.COURSE_MISSING, language, "no_course")
        if chat is None:
            raise ServiceError(messages.COURSE_NEEDS_CONVERSATION, language, "no_conversation")
        position = course.position(chosen.step)
        if position is None:
            template = _message(messages.COURSE_STEP_GONE, intro=command("intro", channel))
            raise ServiceError(template, language, "gone")
        step = course.steps[position]
        if not 1 <= chosen.choice <= len(step.choices):
            template = _message(messages.COURSE_NO_SUCH_CHOICE, count=len(step.choices))
            raise ServiceError(template, language, "no_such_choice")
        now = self.clock()
        if progress is None or progress.course != course.id:  # a button from before a restart
            progress = Progress(chat, course.id, step.id, position, None, False, 0, language,
                                now, now, None)  # fmt: skip
            self.store.course_event(course.id, "started")
        right = chosen.choice == step.right
        current = progress.step == step.id and progress.position < len(course.steps)
        first = current and not progress.answered
        if first:  # the report counts each step's first answer, not a second try
            self.store.course_event(course.id, "answered", step.id, chosen.choice, right)
        verdict = self._verdict(step, chosen.choice, language, progress.turn if current else None)
        score = progress.right + int(right and first)
        following = position + 1
        if following < len(course.steps):
            return self._show(
                replace(progress, right=score), course, following, "", channel, verdict
            )
        finished = progress.finished
        if finished is None:
            finished = now
            self.store.course_event(course.id, "finished")
        self.store.save_progress(
            replace(
                progress,
                step=step.id,
                position=len(course.steps),
                answered=True,
                right=score,
                updated=now,
                finished=finished,
            )
        )
        restart = _restart_command(channel, language)
        total = len(course.steps)
        text = say(messages.COURSE_DONE, language, right=score, total=total, restart=restart)
        return Reply(ReplyKind.LESSON, language, text, verdict=verdict, turn_id=verdict.turn_id)

    def _verdict(self, step: Step, choice: int, language: str, turn: str | None) -> Verdict:
        citations, numbers = self.engine.cited(step.cites)
        number = numbers.get(step.explained_by())
        citation = next((c for c in citations if c.n == number), None)
        return Verdict(
            step=step.id,
            right=choice == step.right,
            chosen=choice,
            answer=step.right,
            answer_text=step.choices[step.right - 1].say(language),
            explanation=step.say("explanation", language),
            citation=citation,
            language=language,
            turn_id=turn,
        )

    # -- turns ------------------------------------------------------------------------------

    def ask(self, chat: str | None, question: str, channel: str = "terminal") -> Turn:
        """Answer one question in a chat (None: a one-off question, nothing remembered);
        raises ServiceError for empty or over-long text."""
        question = question.strip()
        language = detect(question) if question else "nb"
        if not question:
            raise ServiceError(messages.EMPTY_QUESTION, language, "empty")
        if len(question) > self.max_question_chars:
            raise ServiceError(
                _message(messages.TOO_LONG, n=len(question), limit=self.max_question_chars),
                language,
                "too_long",
            )
        now = self.clock()
        previous = self.store.last_turn(chat) if chat is not None else None
        context = None
        if previous and now - previous.created <= FOLLOW_UP_SECONDS and is_follow_up(question):
            context = Answer.from_state(previous.answer).follow_up_context()
        answer = self._answer(question, context)
        turn = Turn(uuid.uuid4().hex[:12], chat, question, answer, now, context)
        if chat is not None:
            state = answer.to_state()  # what is kept: personal numbers and addresses masked
            state["question"], state["topic"] = mask(state["question"]), mask(state["topic"])
            stored = StoredTurn(turn.id, chat, now, mask(question), state, _context_state(context))
            self.store.add_turn(stored, keep=HISTORY_TURNS)
        self._log(turn, channel)
        return turn

    def _answer(self, question: str, context: FollowUpContext | None) -> Answer:
        """The engine's answer, or the same answer again for the same question in the same
        context on the same index within a few minutes."""
        key = (
            " ".join(question.casefold().split()),
            (context.topic, context.cited) if context else None,
            self.engine.generation,
            self.top_k,
        )
        now = self.clock()
        with self._cache_lock:
            hit = self._cache.get(key) if self.cache_seconds > 0 else None
            if hit is not None and now - hit[0] <= self.cache_seconds:
                self._cache.move_to_end(key)
                return hit[1]
        answer = self.engine.ask(question, k=self.top_k, context=context)
        if self.cache_seconds <= 0:
            return answer
        with self._cache_lock:
            self._cache[key] = (now, answer)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_ANSWERS:
                self._cache.popitem(last=False)
        return answer

    def last_turn(self, chat: str) -> Turn | None:
        stored = self.store.last_turn(chat)
        return _restored(stored) if stored else None

    def turn(self, chat: str, turn_id: str) -> Turn | None:
        stored = self.store.turn(chat, turn_id)
        return _restored(stored) if stored else None

    def forget(self, chat: str) -> None:
        """Start the conversation afresh ("ny")."""
        self.store.forget(chat)

    # -- sources and feedback ---------------------------------------------------------------

    def _source(self, chat: str | None, number: str, turn_id: str | None, channel: str) -> Reply:
        view = self.source(chat, number, turn_id, channel)
        return Reply(ReplyKind.SOURCE, view.language, source=view, turn_id=view.turn)

    def source(
        self,
        chat: str | None,
        number: str | int,
        turn_id: str | None = None,
        channel: str = "terminal",
    ) -> SourceView:
        """The whole n-th cited passage of an answer (the latest unless a turn is named)."""
        turn = None
        if chat is not None:
            turn = self.turn(chat, turn_id) if turn_id else self.last_turn(chat)
        if turn is None:
            raise ServiceError(
                messages.GONE if turn_id else messages.NO_SOURCES_YET,
                "nb",
                "gone" if turn_id else "no_turn",
            )
        citations = turn.answer.citations
        language = turn.answer.language
        if not citations:
            raise ServiceError(messages.NO_SOURCES_IN_ANSWER, language, "no_sources")
        try:
            n = int(str(number).strip())
        except ValueError:
            template = _message(
                messages.NOT_A_NUMBER, count=len(citations), source=command("kilde", channel)
            )
            raise ServiceError(template, language, "not_a_number") from None
        citation = next((c for c in citations if c.n == n), None)
        if citation is None:
            template = _message(messages.NO_SUCH_SOURCE, count=len(citations))
            raise ServiceError(template, language, "no_such_source")
        return SourceView(turn.id, citation, language)

    def _vote(self, chat: str | None, turn_id: str, helpful: bool, channel: str) -> Reply:
        turn = self.feedback(chat, turn_id, helpful, channel)
        language = turn.answer.language
        return Reply(
            ReplyKind.FEEDBACK,
            language,
            say(messages.THANKS[helpful], language),
            answer=turn.answer,
            turn_id=turn.id,
            helpful=helpful,
        )

    def feedback(
        self, chat: str | None, turn_id: str, helpful: bool, channel: str = "terminal"
    ) -> Turn:
        """Store 👍/👎 for an answer in this chat; a second vote replaces the first."""
        turn = self.turn(chat, turn_id) if chat is not None else None
        if turn is None:
            raise ServiceError(messages.GONE, "nb", "gone")
        self._record("up" if helpful else "down", channel, turn)
        return turn

    # -- running off the event loop ---------------------------------------------------------

    async def run(self, function: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run a service call on the workers (at most one per core by default)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="styringsbot"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(function, *args, **kwargs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    # -- helpers ----------------------------------------------------------------------------

    def _log(self, turn: Turn, channel: str) -> None:
        if self.question_log == "off":
            return
        if turn.answer.abstained:
            self._record("abstained", channel, turn)
        elif self.question_log == "all":
            self._record("asked", channel, turn)

    def _record(self, kind: Kind, channel: str, turn: Turn) -> None:
        answer = turn.answer
        citations = [
            {"n": c.n, "title": c.title, "source": c.source, "location": c.location}
            for c in answer.citations
        ]
        built_on = mask(turn.built_on) if turn.built_on else None
        self.store.record(
            kind, channel, turn.id, mask(turn.question), answer.text, citations, built_on
        )

    def _purge_now_and_then(self) -> None:
        if self.retention_days <= 0:
            return
        now = self.clock()
        if now - self._purged < PURGE_EVERY:
            return
        self._purged = now
        try:
            changed = self.store.purge(self.retention_days)
        except Exception:  # the store is down: answering matters more than upkeep
            log.warning("Could not delete old question text", exc_info=True)
            return
        if changed:
            log.info(
                "Deleted question text older than %d days (%d rows)", self.retention_days, changed
            )


def _english_command(text: str) -> bool:
    word = text.strip().lstrip("/").split(" ", 1)[0].split("@", 1)[0].lower()
    if word in ("help", "new", "source", "good", "bad", "quit", "exit", "course", "get"):
        return True
    return word in ("intro", "kurs") and _intro_asked(text, "").language == "en"


def _restart_command(channel: str, language: str) -> str:
    """How a user starts the course over: "/intro på nytt", "intro restart" in English Teams."""
    return f"{command('intro', channel)} {'restart' if language == 'en' else 'på nytt'}"


_CHOICE = re.compile(r"^\s*([1-9])\s*[.)]?\s*$")  # "2", "2.", "2)"


def _intro_asked(text: str, argument: str) -> Intro:
    """What "/intro", "intro på nytt", "get started", "/course restart" … asks for."""
    words = text.casefold().lstrip("/").split()
    argument = argument.casefold().strip()
    english = (words[:1] == ["course"] or words[:2] == ["get", "started"]) or argument in (
        "en", "english", "restart", "again"
    )  # fmt: skip
    norwegian = words[:3] == ["kom", "i", "gang"] or words[:1] == ["kurs"]
    norwegian = norwegian or argument in ("nb", "norsk", "på nytt", "fra start", "fra starten")
    language = "en" if english else "nb" if norwegian else None
    restart = argument in ("på nytt", "fra start", "fra starten", "restart", "again")
    return Intro(restart=restart, language=language)


def _context_state(context: FollowUpContext | None) -> dict[str, object] | None:
    if context is None:
        return None
    question, topic = mask(context.question), mask(context.topic)
    return {"question": question, "topic": topic, "cited": list(context.cited)}


def _restored(stored: StoredTurn) -> Turn:
    context = None
    if stored.context:
        context = FollowUpContext(
            question=stored.context["question"],
            topic=stored.context.get("topic", ""),
            cited=tuple(stored.context.get("cited", ())),
        )
    return Turn(
        stored.id,
        stored.chat,
        stored.question,
        Answer.from_state(stored.answer),
        stored.created,
        context,
    )
