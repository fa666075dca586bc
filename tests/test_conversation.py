"""The conversation service and its reply model, the command table, the conversation store (real
SQLite files), the gap report, the renderers, and the `chat`/`report` commands — against the real
seed engine."""

from __future__ import annotations

import asyncio
import builtins
import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from bot import messages
from bot.answer import Answer, Citation, Related, Statement
from bot.cli import main
from bot.commands import (
    COMMANDS,
    Command,
    help_text,
    parse_command,
    teams_commands,
    telegram_menu,
)
from bot.conversation import (
    FOLLOW_UP_SECONDS,
    HISTORY_TURNS,
    ConversationService,
    NotText,
    Question,
    ReplyKind,
    ShowSource,
    SourceView,
    Vote,
    Welcome,
    is_follow_up,
)
from bot.feedback import DELETED, gaps
from bot.privacy import mask
from bot.query import TOPIC_CHARS, TOPIC_WORDS, bounded_topic
from bot.render import plain, quoted
from bot.render import teams as teams_render
from bot.render import telegram as telegram_render
from bot.store import FILE_NAME, OLD_FEEDBACK_FILE, Store, StoredTurn

CHAIR = "Hvem leder etatsstyringsmøtet?"
MINUTES = "og hvem skriver referatet?"
MRS = "Hva står MRS for?"
OFF_TOPIC = "Hva er hovedstaden i Frankrike?"  # the seed corpus cannot answer it
ENGLISH = "Who chairs the agency governance meeting?"


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / FILE_NAME}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def make_service(seed_engine, store: Store, clock: Clock):  # type: ignore[no-untyped-def]
    """ConversationService over the seed engine, the tmp store and the test's clock."""
    services: list[ConversationService] = []

    def make(**options: Any) -> ConversationService:
        service = ConversationService(seed_engine, options.pop("store", store), clock=clock,
                                      **options)  # fmt: skip
        services.append(service)
        return service

    yield make
    for service in services:
        if service._pool is not None:
            service._pool.shutdown(wait=True)


@pytest.fixture
def service(make_service) -> ConversationService:  # type: ignore[no-untyped-def]
    return make_service()


# ---------------------------------------------------------------------------------------------
# The command table


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/kilde 2", Command("source", "2")),
        ("/kilde@StyringsBot 2", Command("source", "2")),
        ("  /KILDE 2  ", Command("source", "2")),
        ("/kilde", Command("source", "")),
        ("/source 1", Command("source", "1")),
        ("kilde 2", Command("source", "2")),
        ("vis kilde 2", Command("source", "2")),
        ("show source 3", Command("source", "3")),
        ("/hjelp", Command("help")),
        ("/help", Command("help")),
        ("hjelp", Command("help")),
        ("Hjelp!", Command("help")),
        ("Hjelp?", Command("help")),
        ("/ny", Command("new")),
        ("ny samtale", Command("new")),
        ("New conversation.", Command("new")),
        ("/start", Command("start")),
        ("/bra", Command("feedback", "up")),
        ("/good", Command("feedback", "up")),
        ("/dårlig", Command("feedback", "down")),
        ("/darlig", Command("feedback", "down")),
        ("/slutt", Command("quit")),
        ("/foo", Command("unknown", "foo")),
        ("", Command("empty")),
        ("   ", Command("empty")),
    ],
)
def test_parse_command(text: str, expected: Command) -> None:
    assert parse_command(text) == expected


def test_a_command_the_channel_does_not_offer_is_unknown() -> None:
    assert parse_command("/slutt", "terminal") == Command("quit")
    assert parse_command("/slutt", "telegram") == Command("unknown", "slutt")
    assert parse_command("/bra", "teams") == Command("unknown", "bra")
    assert parse_command("/start", "telegram") == Command("start")
    assert parse_command("/kilde 1", "teams") == Command("source", "1")


@pytest.mark.parametrize(
    "question",
    [
        MRS,
        "Kildene til styring er hva?",
        "Kilder og referanser for tildelingsbrev?",
        "Hjelp meg å forstå tildelingsbrevet",
        "Hvem er ny i ledergruppen?",
        "Show me the sources on governance",
        "Kildekritikk?",
    ],
)
def test_parse_command_reads_real_questions_as_questions(question: str) -> None:
    assert parse_command(f"  {question} ") == Command("ask", question)


def test_one_table_feeds_every_menu_and_help() -> None:
    words = {spec.word for spec in COMMANDS}
    menu = [word for word, _ in telegram_menu()]
    assert set(menu) <= words and {"hjelp", "kilde", "ny", "start"} <= set(menu)
    assert all(re.fullmatch(r"[a-z0-9_]{1,32}", word) for word in menu)  # Telegram's rule
    assert [c["title"] for c in teams_commands()] == ["hjelp", "intro", "kilde 1", "ny"]
    teams = help_text("nb", "teams")
    assert "kilde N – Vis hele kilde N" in teams and "/kilde" not in teams
    assert "/kilde N – Vis hele kilde N" in help_text("nb", "telegram")
    terminal = help_text("nb", "terminal")
    assert "/bra – " in terminal and "/slutt – " in terminal and "/bra" not in teams
    assert "/kilde N – Show all of source N" in help_text("en", "telegram")
    for spec in COMMANDS:
        for channel in spec.channels:
            if spec.name != "start":
                assert spec.description["nb"] in help_text("nb", channel)


@pytest.mark.parametrize(
    ("question", "follows"),
    [
        (MINUTES, True),
        ("Hva med kontaktmøter?", True),
        ("and who writes the minutes?", True),
        ("hvem gjør det?", True),
        ("hvor ofte skal virksomhetene gjennomføre den?", True),
        ("korleis blir dei sette saman?", True),
        ("how many sessions did it have?", True),
        (MRS, False),
        (CHAIR, False),
        ("Hvilke kjennetegn skal tillitsbasert styring og ledelse ha ifølge byrådssaken?", False),
        ("Hva er det viktigste formålet med etatsstyringsmøtet i byrådsavdelingen?", False),
        ("What does the document say they should do about detailed management?", False),
    ],
)
def test_is_follow_up(question: str, follows: bool) -> None:
    assert is_follow_up(question) is follows


# ---------------------------------------------------------------------------------------------
# One message in, one reply out


def test_a_question_gets_an_answer_reply(service: ConversationService) -> None:
    reply = service.handle("c", "u", CHAIR)
    assert reply.kind is ReplyKind.ANSWER
    assert reply.answer is not None and not reply.answer.abstained
    assert "kommunaldirektør" in reply.answer.lead
    assert re.fullmatch(r"[0-9a-f]{12}", reply.turn_id or "")
    assert service.last_turn("c").id == reply.turn_id  # type: ignore[union-attr]


def test_every_kind_of_reply(service: ConversationService) -> None:
    answer = service.handle("c", "u", CHAIR)
    assert service.handle("c", "u", Vote(answer.turn_id or "", True)).kind is ReplyKind.FEEDBACK
    assert service.handle("c", "u", ShowSource("1")).kind is ReplyKind.SOURCE
    kinds = {
        "/hjelp": ReplyKind.HELP,
        "kilde 1": ReplyKind.SOURCE,
        "/foo": ReplyKind.ERROR,
        "/ny": ReplyKind.NEW,
        "/slutt": ReplyKind.QUIT,
    }
    for text, kind in kinds.items():
        assert service.handle("c", "u", text).kind is kind, text
    welcome = service.handle("c", "u", Welcome(), "telegram")
    assert welcome.kind is ReplyKind.WELCOME
    assert welcome.text.startswith(messages.WELCOME["nb"]) and "/kilde N" in welcome.text
    assert service.handle("c", "u", "/start", "telegram").kind is ReplyKind.WELCOME
    not_text = service.handle("c", "u", NotText())
    assert (not_text.kind, not_text.text) == (ReplyKind.NOT_TEXT, messages.NOT_TEXT["nb"])
    unknown = service.handle("c", "u", "/foo", "teams")
    assert unknown.text == "Den kommandoen kjenner jeg ikke; hjelp viser hva jeg kan."


def test_help_follows_the_command_word_and_the_channel(service: ConversationService) -> None:
    assert service.handle("c", "u", "/help", "telegram").text == help_text("en", "telegram")
    assert service.handle("c", "u", "hjelp", "teams").text == help_text("nb", "teams")


def test_a_question_is_never_read_as_a_command(service: ConversationService) -> None:
    reply = service.handle("c", "u", Question("hjelp"))
    assert reply.kind is ReplyKind.ANSWER


@pytest.mark.parametrize(
    ("pause", "follows"),
    [(0, True), (FOLLOW_UP_SECONDS, True), (FOLLOW_UP_SECONDS + 1, False)],
)
def test_follow_up_uses_the_previous_question_within_the_window(
    service: ConversationService, clock: Clock, pause: float, follows: bool
) -> None:
    service.ask("c", CHAIR)
    clock.advance(pause)
    turn = service.ask("c", MINUTES)
    if follows:
        assert turn.context is not None
        assert (turn.context.question, turn.context.topic) == (CHAIR, "Etatsstyringsmøte")
        assert "referat" in turn.answer.text.lower()
    else:
        assert turn.context is None
    assert turn.answer.question == MINUTES


def test_follow_up_context_chains_and_a_new_topic_starts_afresh(
    service: ConversationService,
) -> None:
    service.ask("c", CHAIR)
    service.ask("c", MINUTES)
    often = service.ask("c", "og hvor ofte?")
    # The topic carries on from turn to turn; it does not grow with every follow-up.
    assert often.context is not None
    assert (often.context.question, often.context.topic) == (MINUTES, "Etatsstyringsmøte")
    assert "fire møter i året" in often.answer.lead
    assert service.ask("c", MRS).context is None


def test_one_off_questions_and_separate_chats(service: ConversationService) -> None:
    assert not service.ask(None, CHAIR).answer.abstained
    assert service.ask(None, MINUTES).context is None
    service.ask("a", CHAIR)
    assert service.ask("b", MINUTES).context is None
    assert service.last_turn("a").question == CHAIR  # type: ignore[union-attr]


def test_new_conversation_forgets(service: ConversationService) -> None:
    first = service.handle("c", "u", CHAIR)
    assert service.handle("c", "u", "ny").kind is ReplyKind.NEW
    assert service.last_turn("c") is None
    assert service.turn("c", first.turn_id or "") is None
    assert service.ask("c", MINUTES).context is None


def test_history_keeps_the_last_turns_only(service: ConversationService, clock: Clock) -> None:
    turns = []
    for _ in range(HISTORY_TURNS + 1):
        turns.append(service.ask("c", MRS))
        clock.advance(1)
    assert service.turn("c", turns[0].id) is None
    assert all(service.turn("c", t.id) is not None for t in turns[1:])
    gone = service.handle("c", "u", ShowSource("1", turns[0].id))
    assert (gone.kind, gone.text, gone.problem) == (ReplyKind.ERROR, messages.GONE["nb"], "gone")


# ---------------------------------------------------------------------------------------------
# State that survives a restart


def test_a_restarted_service_remembers_the_conversation(
    seed_engine, store_url: str, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    before = ConversationService(seed_engine, Store(store_url), clock=clock)
    answer = before.handle("c", "u", CHAIR)
    before.close()

    after = ConversationService(seed_engine, Store(store_url), clock=clock)
    try:
        source = after.handle("c", "u", "kilde 1")
        assert source.kind is ReplyKind.SOURCE and source.source is not None
        assert source.source.citation == answer.answer.citations[0]  # type: ignore[union-attr]
        vote = after.handle("c", "u", Vote(answer.turn_id or "", True))
        assert vote.kind is ReplyKind.FEEDBACK
        follow = after.handle("c", "u", MINUTES)
        assert follow.answer is not None and "utkast skrives av" in follow.answer.lead.lower()
        assert after.last_turn("c").context.question == CHAIR  # type: ignore[union-attr]
        assert [e.kind for e in after.store.events("up")] == ["up"]
    finally:
        after.close()


def test_a_stored_answer_renders_as_the_original(service: ConversationService) -> None:
    reply = service.handle("c", "u", "Er et kontaktmøte styring?")
    restored = service.last_turn("c").answer  # type: ignore[union-attr]
    original = reply.answer
    assert original is not None and original.criteria
    assert restored.text == original.text
    assert telegram_render.answer(restored) == telegram_render.answer(original)
    assert teams_render.card(restored, "t") == teams_render.card(original, "t")


def test_rate_limits_survive_a_restart_and_slide(seed_engine, store_url: str, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    first = ConversationService(seed_engine, Store(store_url), rate_limit=2, clock=clock)
    assert first.handle("c", "user", MRS).kind is ReplyKind.ANSWER
    clock.advance(30)
    assert first.handle("c", "user", MRS).kind is ReplyKind.ANSWER
    first.close()
    again = ConversationService(seed_engine, Store(store_url), rate_limit=2, clock=clock)
    try:
        limited = again.handle("c", "user", MRS)
        assert limited.kind is ReplyKind.RATE_LIMITED
        assert limited.retry_after == pytest.approx(30.0)
        assert limited.text == messages.RATE_LIMITED["nb"].format(seconds=30)
        assert again.handle("c", "other-user", MRS).kind is ReplyKind.ANSWER
        assert again.handle("c", "user", "/hjelp").kind is ReplyKind.HELP  # commands are free
        clock.advance(30.1)
        assert again.handle("c", "user", MRS).kind is ReplyKind.ANSWER
        assert again.handle("c", None, MRS).kind is ReplyKind.ANSWER  # no user: no limit
    finally:
        again.close()


# ---------------------------------------------------------------------------------------------
# What a user can get wrong: one sentence each


def test_empty_and_over_long_questions(make_service) -> None:  # type: ignore[no-untyped-def]
    service = make_service(max_question_chars=20)
    empty = service.handle("c", "u", Question("   "))
    assert (empty.kind, empty.text, empty.problem) == (
        ReplyKind.ERROR,
        messages.EMPTY_QUESTION["nb"],
        "empty",
    )
    long = service.handle("c", "u", "Who chairs the meeting of them all?")
    assert long.problem == "too_long"
    assert long.text == messages.TOO_LONG["en"].format(n=35, limit=20)
    assert service.handle("c", "u", "x" * 20).kind is ReplyKind.ANSWER


def test_source_problems(service: ConversationService) -> None:
    assert service.handle("c", "u", "kilde 1").text == messages.NO_SOURCES_YET["nb"]
    service.ask("c", CHAIR)
    count = len(service.last_turn("c").answer.citations)  # type: ignore[union-attr]
    nine = service.handle("c", "u", "kilde 9", "teams")
    assert nine.text == messages.NO_SUCH_SOURCE["nb"].format(count=count)
    word = service.handle("c", "u", "/kilde abc", "telegram")
    assert word.text == messages.NOT_A_NUMBER["nb"].format(count=count, source="/kilde")
    service.ask("c", OFF_TOPIC)
    assert service.handle("c", "u", "kilde 1").text == messages.NO_SOURCES_IN_ANSWER["nb"]
    service.ask("e", ENGLISH)
    assert service.handle("e", "u", "kilde 9").text.startswith("That answer has sources")


def test_a_vote_on_an_unknown_turn_is_refused(service: ConversationService) -> None:
    reply = service.handle("c", "u", Vote("nope", True))
    assert (reply.kind, reply.text) == (ReplyKind.ERROR, messages.GONE["nb"])
    assert service.handle("c", "u", "/bra").text == messages.NO_SOURCES_YET["nb"]


# ---------------------------------------------------------------------------------------------
# Feedback, the gap log and the report


def test_feedback_stores_the_question_answer_and_citations(service: ConversationService) -> None:
    answer = service.handle("c", "u", CHAIR, "telegram")
    service.handle("c", "u", Vote(answer.turn_id or "", False), "telegram")
    [event] = service.store.events("down")
    assert (event.kind, event.channel, event.question) == ("down", "telegram", CHAIR)
    assert event.answer == answer.answer.text  # type: ignore[union-attr]
    assert event.citations[0]["location"] == "lysbilde 11"
    # A second vote on the same answer replaces the first.
    service.handle("c", "u", Vote(answer.turn_id or "", True), "telegram")
    assert service.store.counts() == {"up": 1}


def test_a_follow_up_vote_keeps_what_it_followed(service: ConversationService) -> None:
    service.ask("c", CHAIR)
    service.handle("c", "u", MINUTES)
    assert service.handle("c", "u", "/dårlig").kind is ReplyKind.FEEDBACK
    [event] = service.store.events("down")
    assert (event.question, event.context) == (MINUTES, CHAIR)


@pytest.mark.parametrize(
    ("log", "kinds"),
    [("off", set()), ("gaps", {"abstained"}), ("all", {"abstained", "asked"})],
)
def test_question_log(make_service, log: str, kinds: set[str]) -> None:  # type: ignore[no-untyped-def]
    service = make_service(question_log=log)
    service.ask("c", CHAIR)
    service.ask("c", OFF_TOPIC)
    assert set(service.store.counts()) == kinds


def record(store: Store, kind: str, question: str, location: str = "lysbilde 11") -> None:
    citations = [{"n": 1, "title": "Styringsdialogen", "source": "s.txt", "location": location}]
    turn = f"t{len(store.events('up', 'down', 'abstained', 'asked'))}"
    store.record(kind, "teams", turn, question, "svar", citations)  # type: ignore[arg-type]


def test_gaps_group_count_and_order(store: Store) -> None:
    record(store, "abstained", "Hva er X?")
    record(store, "abstained", "hva er x")
    record(store, "down", "Hva er Y?")
    record(store, "down", "Hva er Y?", location="side 2")
    record(store, "abstained", "Hva er Z?")
    found = gaps(store)
    assert [(g.question, g.abstained, g.unhelpful) for g in found] == [
        ("Hva er X?", 2, 0),
        ("Hva er Y?", 0, 2),
        ("Hva er Z?", 1, 0),
    ]
    assert found[1].sources == ["«Styringsdialogen», lysbilde 11", "«Styringsdialogen», side 2"]
    record(store, "up", "Hva er Y?")  # a later 👍 clears the 👎
    assert "Hva er Y?" not in [g.question for g in gaps(store)]


def test_retention_deletes_old_question_text_and_keeps_counts(store: Store, clock: Clock) -> None:
    now = datetime.now(UTC).timestamp()
    store.add_turn(StoredTurn("old", "c", now - 100 * 86400, "gammelt", {"a": 1}, None), 20)
    store.add_turn(StoredTurn("new", "c", now + 10 * 86400, "nytt", {"a": 1}, None), 20)
    record(store, "abstained", "Et gammelt spørsmål med et navn i?")
    later = datetime.now(UTC) + timedelta(days=91)
    assert store.purge(90, now=later) >= 1
    [event] = store.events("abstained")
    assert (event.question, event.answer, event.citations) == ("", "", [])
    assert store.counts() == {"abstained": 1}
    assert [g.question for g in gaps(store)] == [DELETED]
    assert store.turn("c", "old") is None and store.turn("c", "new") is not None
    assert store.purge(0) == 0


def test_the_service_purges_now_and_then(make_service, store: Store, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    service = make_service(retention_days=1)
    store.record("abstained", "teams", "t", "Hei?", "svar", [])
    with sqlite3.connect(store.url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE events SET created = '2000-01-01T00:00:00+00:00'")
    service.handle("c", "u", "/hjelp")
    assert store.events("abstained")[0].question == ""


def test_feedback_of_an_older_data_dir_is_imported_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / OLD_FEEDBACK_FILE) as old:
        old.execute(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, created TEXT, kind TEXT, channel TEXT,"
            " turn TEXT, question TEXT, answer TEXT, citations TEXT)"
        )
        old.execute(
            "INSERT INTO events VALUES (1, '2024-01-01T00:00:00+00:00', 'down', 'teams', 't1',"
            " 'Hva er Q?', 'svar', '[]')"
        )
    store = Store.open(None, data)
    assert [e.question for e in store.events("down")] == ["Hva er Q?"]
    store.close()
    store = Store.open(None, data)  # not twice
    assert store.counts() == {"down": 1}
    store.close()


def fill_store(seed_engine, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Two unanswered questions (one spelled differently), one 👎 and one 👍, via the service."""
    service = ConversationService(seed_engine, Store.open(None, data_dir))
    service.handle("r", "u", OFF_TOPIC)
    service.handle("r", "u", OFF_TOPIC.lower().rstrip("?"), "telegram")
    service.handle("r", "u", Vote(service.handle("r", "u", CHAIR).turn_id or "", False))
    service.handle("r", "u", Vote(service.handle("r", "u", MRS).turn_id or "", True))
    service.close()


@pytest.fixture
def report_dir(in_tmp_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data_dir = in_tmp_cwd / "data"
    monkeypatch.setenv("STYRINGSBOT_DATA_DIR", str(data_dir))
    return data_dir


def test_report_prints_the_summary_and_gaps(
    seed_engine, report_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    fill_store(seed_engine, report_dir)
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert "Tilbakemeldinger: 1 👍, 1 👎. Spørsmål uten svar: 2." in out
    assert f"• {OFF_TOPIC}  [uten svar ×2; sist " in out
    assert ", telegram, terminal]" in out
    assert f"• {CHAIR}  [👎 ×1; sist " in out
    assert "    svarte med «Styringsdialogen – sånn gjør vi det her», lysbilde 11" in out
    assert out.index(OFF_TOPIC) < out.index(CHAIR)
    assert MRS not in out
    assert main(["report", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(g["question"], g["abstained"], g["unhelpful"]) for g in report] == [
        (OFF_TOPIC, 2, 0),
        (CHAIR, 0, 1),
    ]


def test_report_without_a_store(report_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report"]) == 0
    assert capsys.readouterr().out == (
        "Ingen tilbakemeldinger eller ubesvarte spørsmål er lagret ennå.\n"
    )
    assert not (report_dir / FILE_NAME).exists()


# ---------------------------------------------------------------------------------------------
# `styringsbot chat`


def test_chat_session(
    seed_engine,
    seed_knowledge: Path,
    in_tmp_cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # type: ignore[no-untyped-def]
    data_dir = in_tmp_cwd / "chat-data"
    import shutil

    shutil.copytree(seed_engine.settings.data_dir, data_dir)
    monkeypatch.setenv("STYRINGSBOT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("STYRINGSBOT_KNOWLEDGE_DIR", str(seed_knowledge))
    typed = [CHAIR, MINUTES, "/kilde 1", "/bra", "", "/kilde 9", "/foo", "/ny", "/kilde 1"]
    lines = iter([*typed, "/hjelp", "/slutt", "never read"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))

    assert main(["chat"]) == 0
    out = capsys.readouterr().out
    assert next(lines) == "never read"
    pieces = [
        "/hjelp gir hjelp",
        "Møtet ledes av kommunaldirektør.",  # the answer
        "skrives av byrådsavdelingen",  # the follow-up understood
        "[1] «Styringsdialogen – sånn gjør vi det her», lysbilde 11\n"
        "(styringsdialogen-sann-gjor-vi-det-her-2019.txt)",  # /kilde 1
        "Takk for tilbakemeldingen! 👍",
        "Det svaret har kilde 1 til",
        "Den kommandoen kjenner jeg ikke; /hjelp viser hva jeg kan.",
        messages.NEW_CONVERSATION["nb"],
        messages.NO_SOURCES_YET["nb"],
        "/slutt – Avslutt",
    ]
    positions = [out.find(piece) for piece in pieces]
    assert -1 not in positions, [p for p, at in zip(pieces, positions, strict=True) if at < 0]
    assert positions == sorted(positions)
    store = Store.open(None, data_dir)
    try:
        assert MINUTES in [e.question for e in store.events("up")]
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# Rendering: every channel draws the same structured Answer

ALLOWED_TAGS = {"b", "i", "blockquote"}


class TelegramHTML(HTMLParser):
    """Checks a message is Telegram HTML we emit; collects each element's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, list[str]]] = []
        self.elements: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in ALLOWED_TAGS, tag
        assert attrs == ([("expandable", None)] if tag == "blockquote" else []), attrs
        self.stack.append((tag, []))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1][0] == tag, (tag, self.stack)
        name, parts = self.stack.pop()
        self.elements.append((name, "".join(parts)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for _, parts in self.stack:
            parts.append(data)


def parse_telegram(message: str) -> TelegramHTML:
    assert len(message) <= telegram_render.TELEGRAM_LIMIT
    assert not re.search(r"&(?!amp;|lt;|gt;)", message), message  # every & is escaped
    parser = TelegramHTML()
    parser.feed(message)
    parser.close()
    assert not parser.stack, parser.stack
    return parser


def elements(rendered: list[str], tag: str) -> list[str]:
    return [text for m in rendered for name, text in parse_telegram(m).elements if name == tag]


def visible(rendered: list[str]) -> str:
    return "\n\n".join("".join(parse_telegram(m).text) for m in rendered)


def nodes(tree: Any) -> Iterator[dict[str, Any]]:
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from nodes(value)


def texts(card: dict[str, Any], kind: str) -> list[str]:
    return [node["text"] for node in nodes(card) if node.get("type") == kind]


def citation(n: int, title: str = "Styringsdialogen", **fields: Any) -> Citation:
    values = {"source": "s.txt", "location": f"lysbilde {n}", "text": f"Avsnitt {n}.",
              "quote": f"Sitat {n}."} | fields  # fmt: skip
    return Citation(n=n, title=title, **values)


NASTY_TITLE = "Rapport <b>fet</b> & *stjerne* _under_ [lenke](http://x)"
NASTY_QUOTE = "Sitat med <i>tagg</i>, & og *markdown* _her_."


def made_by_hand(language: str = "nb", confident: bool = True) -> Answer:
    """An Answer made without the extractive answerer (as a generated answer would be):
    statements in its own words, each citing passages, with hostile text everywhere."""
    lead = citation(1, NASTY_TITLE, quote=NASTY_QUOTE, text=f"Avsnitt <1> & *a*.\n\n{NASTY_QUOTE}")
    other = citation(2, f"Annen {NASTY_TITLE}", quote=f"Andre {NASTY_QUOTE}", location="side 4")
    return Answer(
        question="Hva?",
        language=language,
        abstained=False,
        statements=[
            Statement("Første påstand <med> & tegn.", (1,)),
            Statement("Andre påstand, fra kilde 2.", (2,)),
            Statement(NASTY_QUOTE, (1,), verbatim=True),
        ],
        citations=[lead, other],
        confident=confident,
    )


def test_every_renderer_draws_the_structure_alone() -> None:
    answer = made_by_hand()
    statements = ["Første påstand <med> & tegn. [1]", "Andre påstand, fra kilde 2. [2]"]
    text = plain.answer(answer)
    for statement in statements:
        assert statement in text
    shown = visible(telegram_render.answer(answer))
    for statement in statements:
        assert statement in shown
    card = teams_render.card(answer, "turn123")
    runs = "\n".join(texts(card, "TextRun"))
    for statement in statements:
        assert statement in runs
    assert card["fallbackText"] == text
    assert statements[0].rsplit(" [", 1)[0] in card["speak"]


def test_telegram_escapes_and_folds_the_sources() -> None:
    rendered = telegram_render.answer(made_by_hand())
    raw = "\n".join(rendered)
    assert "&lt;b&gt;fet&lt;/b&gt; &amp; *stjerne* _under_ [lenke](http://x)" in raw
    assert elements(rendered, "i") == [f"«{NASTY_QUOTE}» [1]"]
    assert elements(rendered, "blockquote") == [f"«Andre {NASTY_QUOTE}»"]
    assert f"[2] «Annen {NASTY_TITLE}», side 4" in visible(rendered)


def test_telegram_answer_of_a_real_answer(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask(CHAIR)
    assert len(answer.citations) > 1
    rendered = telegram_render.answer(answer)
    lead, *others = answer.citations
    assert f"{quoted(answer.quote.text)} [1]" in elements(rendered, "i")
    assert elements(rendered, "blockquote") == [quoted(c.quote) for c in others]
    where = messages.where(lead.title, lead.location, "nb")
    assert elements(rendered, "b") == [f"Ifølge {where}:", "Kilder:"]
    assert answer.statements[0].text in visible(rendered)


def test_the_criteria_of_a_decision_aid_fold(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Er et kontaktmøte styring?")
    assert answer.criteria
    lines = [f"• {c.text} " + "".join(f"[{n}]" for n in c.cites) for c in answer.criteria]
    rendered = telegram_render.answer(answer)
    assert messages.LABELS["nb"]["criteria"] in elements(rendered, "b")
    assert elements(rendered, "blockquote")[0] == "\n".join(lines)
    assert answer.statements[0].text in visible(rendered).split("\n\n")[0]
    body = teams_render.card(answer, "t1")["body"]
    [hidden] = [e for e in body if e["type"] == "Container" and e.get("isVisible") is False]
    assert [run["text"] for block in hidden["items"] for run in block["inlines"]] == lines
    toggles = [a for e in body if e["type"] == "ActionSet" for a in e["actions"]
               if a["type"] == "Action.ToggleVisibility"]  # fmt: skip
    assert [t["targetElements"] for t in toggles] == [[hidden["id"]]]


def test_an_english_answer_in_every_rendering(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask(ENGLISH)
    bold = elements(telegram_render.answer(answer), "b")
    assert bold[0].startswith("According to «") and bold[0].endswith("(quoted in Norwegian):")
    assert "slide 11" in bold[0] and "Sources:" in bold
    card = teams_render.card(answer, "t")
    assert card["lang"] == "en-GB"
    assert [a["title"] for a in card["actions"]] == ["👍 Helpful", "👎 Not helpful"]
    assert texts(card, "TextBlock") == ["Sources:"]


def test_an_abstained_answer_in_every_rendering(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask(OFF_TOPIC)
    assert answer.abstained and answer.related
    assert plain.answer(answer).startswith(messages.NO_ANSWER["nb"])
    shown = visible(telegram_render.answer(answer))
    assert shown.startswith(messages.NO_ANSWER["nb"])
    assert messages.where(answer.related[0].title, answer.related[0].location, "nb") in shown
    card = teams_render.card(answer, "t1")
    assert texts(card, "TextRun")[0] == messages.NO_ANSWER["nb"]
    assert "actions" not in card  # nothing to vote on
    assert telegram_render.keyboard(_reply_of(answer)) is None


def _reply_of(answer: Answer):  # type: ignore[no-untyped-def]
    from bot.conversation import Reply

    return Reply(ReplyKind.ANSWER, answer.language, answer=answer, turn_id="t1")


def test_an_unsure_answer_opens_with_the_caveat() -> None:
    answer = made_by_hand(confident=False)
    caveat = messages.CAVEAT["nb"]
    assert plain.answer(answer).startswith(caveat)
    assert telegram_render.answer(answer)[0].startswith(f"<i>{caveat}</i>")
    card = teams_render.card(answer, "t")
    assert card["body"][0]["inlines"][0]["text"] == caveat
    assert card["speak"].startswith(caveat)


def test_teams_card_keeps_document_text_out_of_text_blocks() -> None:
    answer = made_by_hand()
    card = teams_render.card(answer, "turn123")
    assert (card["type"], card["version"], card["lang"]) == ("AdaptiveCard", "1.5", "nb-NO")
    runs = "\n".join(texts(card, "TextRun"))
    blocks = texts(card, "TextBlock")
    assert blocks == ["Kilder:"]
    for c in answer.citations:
        for piece in (c.title, c.quote, c.location or "", *c.text.split("\n\n")):
            assert piece in runs
            assert not any(piece in block for block in blocks)
    submits = [a for a in card["actions"] if a["type"] == "Action.Submit"]
    assert [a["data"][teams_render.ACTION_KEY] for a in submits] == [
        {"action": "feedback", "turn": "turn123", "helpful": True},
        {"action": "feedback", "turn": "turn123", "helpful": False},
    ]
    # One button per source, each naming its source for a screen reader.
    shows = [n["title"] for n in nodes(card) if n.get("type") == "Action.ShowCard"]
    assert shows == ["Vis hele kilde 1", "Vis hele kilde 2"]
    voted = teams_render.card(answer, "turn123", voted=True)
    assert "actions" not in voted
    assert texts(voted, "TextBlock")[-1] == "Du svarte: 👍 Nyttig"


def test_telegram_splits_long_sources_between_tags() -> None:
    long_quote = "Dette er en setning med & og <tagg> i seg. " * 300
    answer = Answer(
        question="Hva?", language="nb", abstained=False,
        statements=[Statement("Sitat 1.", (1,), verbatim=True)],
        citations=[citation(1), citation(2, quote=long_quote.strip())],
    )  # fmt: skip
    rendered = telegram_render.answer(answer)
    assert len(rendered) > 1
    quoted = "".join(elements(rendered, "blockquote"))
    assert quoted.replace(" ", "") == f"«{long_quote.strip()}»".replace(" ", "")
    view = SourceView("t", citation(1, text="\n\n".join([long_quote] * 3)), "nb")
    source_messages = telegram_render.source(view)
    assert len(source_messages) > 3
    assert visible(source_messages).count("<tagg>") == 900
    assert telegram_render.text("a < b\n\nc & d") == ["a &lt; b\n\nc &amp; d"]


def test_plain_source_and_the_related_passages_of_an_abstained_answer(
    service: ConversationService,
) -> None:
    service.ask("c", CHAIR)
    view = service.source("c", 1)
    text = plain.source(view)
    for piece in (view.citation.title, "lysbilde 11", view.citation.source, view.citation.text):
        assert piece in text
    related = Related("T", "t.txt", "side 2", "…")
    answer = Answer("Q?", "en", True, related=[related])
    assert (
        plain.answer(answer)
        == f"{messages.NO_ANSWER['en']}\n\n{messages.RELATED['en']}\n• «T», page 2"
    )


# ---------------------------------------------------------------------------------------------
# Workers and the answer cache


class CountingEngine:
    """The real engine, counting how often it is asked (and by how many threads at once)."""

    def __init__(self, engine) -> None:  # type: ignore[no-untyped-def]
        self._engine = engine
        self.asked = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def ask(self, *args: Any, **kwargs: Any) -> Answer:
        with self._lock:
            self.asked += 1
            self.threads.add(threading.current_thread().name)
        return self._engine.ask(*args, **kwargs)


def test_a_repeated_question_is_answered_from_the_cache(
    seed_engine, store: Store, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    engine = CountingEngine(seed_engine)
    service = ConversationService(engine, store, clock=clock, cache_seconds=300)  # type: ignore[arg-type]
    first = service.handle("a", "u", CHAIR)
    again = service.handle("b", "v", "  hvem LEDER etatsstyringsmøtet? ")
    assert engine.asked == 1
    assert again.answer is first.answer and again.turn_id != first.turn_id
    # Another context, or the cache's time past: asked again.
    service.handle("a", "u", MINUTES)
    assert engine.asked == 2
    clock.advance(301)
    service.handle("c", "w", CHAIR)
    assert engine.asked == 3


def test_answers_run_on_a_bounded_pool_off_the_event_loop(seed_engine, store: Store) -> None:  # type: ignore[no-untyped-def]
    engine = CountingEngine(seed_engine)
    service = ConversationService(engine, store, workers=2, cache_seconds=0)  # type: ignore[arg-type]
    questions = [CHAIR, MRS, OFF_TOPIC, "Hva er et fagmøte?", ENGLISH] * 2
    expected = {q: seed_engine.ask(q).text for q in set(questions)}

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(
            *(service.reply(f"chat{i}", None, q) for i, q in enumerate(questions))
        )

    replies = asyncio.run(all_at_once())
    assert [r.answer.text for r in replies] == [expected[q] for q in questions]
    assert 1 <= len(engine.threads) <= 2
    assert all(name.startswith("styringsbot") for name in engine.threads)
    service.close()


@pytest.mark.parametrize(
    ("passage", "shown"),
    [
        ("Ledes av kommunaldirektør.", "«Ledes av kommunaldirektør.»"),
        ("«hvor politisk relevant en virksomhet er»", "«hvor politisk relevant en virksomhet er»"),
        ('"Tillit er å gi handlingsrom"', '"Tillit er å gi handlingsrom"'),
        # Two quotations side by side are not one: they get the outer quotes.
        ("«ja» eller «nei»", "««ja» eller «nei»»"),
    ],
)
def test_a_passage_that_is_a_quotation_is_not_quoted_twice(passage: str, shown: str) -> None:
    assert quoted(passage) == shown


CONTROLS = "\x1b[2J\x1b[31m\x07\x00\x9b\u202e\u2066\r"  # clear, recolour, bell, NUL, CSI, RLO…
UNPRINTABLE = {ch for ch in CONTROLS if not ch.isprintable()}


def test_control_and_bidi_characters_never_reach_a_user() -> None:
    """Text from a document (title, quote, passage) and a statement, laced with a terminal's
    escape sequences and bidi overrides: no rendering carries any of them."""
    hostile = f"Møtet{CONTROLS} ledes av kommunaldirektør."
    answer = Answer(
        question="Hvem?",
        language="nb",
        abstained=False,
        statements=[Statement(hostile, (1,))],
        citations=[
            citation(1, f"Tittel{CONTROLS}", quote=hostile, text=f"Avsnitt{CONTROLS}\n\n{hostile}"),
            citation(2, quote=hostile, location=f"side{CONTROLS} 2"),
        ],
    )
    view = SourceView("t1", answer.citations[0], "nb")
    card = teams_render.card(answer, "t1")
    rendered = {
        "plain": plain.answer(answer) + plain.source(view),
        "telegram": "".join(telegram_render.answer(answer) + telegram_render.source(view)),
        "teams": json.dumps([card, teams_render.source_card(view)], ensure_ascii=False),
    }
    for channel, text in rendered.items():
        bad = sorted({f"U+{ord(ch):04X}" for ch in text if ch in UNPRINTABLE})
        assert not bad, f"{channel} shows {bad}"
        assert "Møtet[2J[31m ledes av kommunaldirektør." in text or channel == "teams"
    assert "Møtet[2J[31m ledes" in "".join(texts(card, "TextRun"))


def test_ingest_strips_control_characters_from_documents() -> None:
    from ingest.clean import normalize

    text = f"Linje{CONTROLS.rstrip()} en\nlinje\tto\x0cside"
    assert normalize(text) == "Linje[2J[31m en\nlinje to\nside"


PERSONAL = (
    "Jeg har fødselsnummer 010190 12345, telefon 22 86 50 00 og e-post kari.nordmann@oslo.no; "
    "hvem er min personalleder?"
)


def test_personal_numbers_and_addresses_are_masked_before_they_are_kept(
    make_service, store: Store
) -> None:  # type: ignore[no-untyped-def]
    service = make_service(question_log="all")
    first = service.handle("c", "u", PERSONAL)
    follow = service.handle("c", "u", "og hva med 01019012345?")
    assert first.kind is ReplyKind.ANSWER and follow.kind is ReplyKind.ANSWER
    kept = json.dumps(
        [store.turn("c", r.turn_id or "").__dict__ for r in (first, follow)]
        + [e.__dict__ for e in store.events("asked", "abstained")],
        ensure_ascii=False,
        default=str,
    )
    for secret in ("010190 12345", "22 86 50 00", "kari.nordmann", "01019012345"):
        assert secret not in kept
    assert "[fødselsnummer]" in kept and "[telefonnummer]" in kept and "[e-post]" in kept
    assert len(store.events("asked", "abstained")) == 2


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("fnr 01019012345.", "fnr [fødselsnummer]."),
        ("ring +47 228 65 000 i dag", "ring [telefonnummer] i dag"),
        ("Budsjettet var 10 000 000 kr i 2022 2023", "Budsjettet var 10 000 000 kr i 2022 2023"),
        ("Byrådssak 1055/17, punkt 3,14159265358", "Byrådssak 1055/17, punkt 3,14159265358"),
    ],
)
def test_masking_keeps_what_is_not_personal(text: str, kept: str) -> None:
    assert mask(text) == kept


def test_a_chain_of_long_follow_ups_does_not_grow_what_is_searched(
    service: ConversationService, store: Store
) -> None:
    """Each follow-up searches its own text and the earlier turn's topic, a few words: not the
    whole chain. (benchmarks/follow_up_chain.py times 40 such follow-ups.)"""
    filler = " ".join(["tildelingsbrev etatsstyringsmøte fagmøte byrådsavdeling"] * 40)
    service.handle("c", "u", "Hvem leder etatsstyringsmøtet?")
    topics = []
    for n in range(10):
        question = f"og hva med dette, {n}? {filler}"[:1000]
        reply = service.handle("c", "u", question)
        assert reply.kind is ReplyKind.ANSWER
        stored = store.turn("c", reply.turn_id or "")
        assert stored is not None and stored.context is not None  # it was a follow-up
        topics.append(stored.context["topic"])
    assert all(len(t) <= TOPIC_CHARS and len(t.split()) <= TOPIC_WORDS for t in topics)
    assert bounded_topic(" ".join(["ord"] * 100)) == " ".join(["ord"] * TOPIC_WORDS)
    assert len(bounded_topic("x" * 50 + " " + "y" * 200)) <= TOPIC_CHARS
