"""The conversation service, its commands, the feedback store and gap report, the renderers, and the
`chat`/`report` commands — against the real seed engine and real SQLite files in tmp_path."""

from __future__ import annotations

import asyncio
import builtins
import html
import json
import re
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from bot import conversation, render
from bot.answer import Answer, Citation
from bot.cli import main
from bot.conversation import (
    EMPTY_QUESTION,
    FOLLOW_UP_SECONDS,
    GONE,
    HISTORY_TURNS,
    NO_SOURCES_IN_ANSWER,
    NO_SOURCES_YET,
    Command,
    ConversationService,
    RateLimiter,
    ServiceError,
    SourceView,
    is_follow_up,
    parse_command,
)
from bot.feedback import FILE_NAME, FeedbackStore, gaps

CHAIR = "Hvem leder etatsstyringsmøtet?"
MINUTES = "og hvem skriver referatet?"
MRS = "Hva står MRS for?"
OFF_TOPIC = "Hva er hovedstaden i Frankrike?"  # the seed corpus cannot answer it
ENGLISH = "Who chairs the agency governance meeting?"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    opened = FeedbackStore.in_data_dir(tmp_path / "data")
    yield opened
    opened.close()


@pytest.fixture
def make_service(seed_engine, store: FeedbackStore, clock: Clock):  # type: ignore[no-untyped-def]
    """ConversationService over the seed engine, the tmp store and the test's clock."""
    services: list[ConversationService] = []

    def make(**options: Any) -> ConversationService:
        options = {"store": store, "clock": clock, **options}
        service = ConversationService(seed_engine, **options)
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


@pytest.fixture
def service(make_service) -> ConversationService:  # type: ignore[no-untyped-def]
    return make_service()


def service_error(call, *args: Any) -> ServiceError:  # type: ignore[no-untyped-def]
    with pytest.raises(ServiceError) as caught:
        call(*args)
    return caught.value


# ---------------------------------------------------------------------------------------------
# parse_command


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
        ("/ny", Command("new")),
        ("ny samtale", Command("new")),
        ("New conversation.", Command("new")),
        ("/start", Command("start")),
        ("/bra", Command("feedback", "up")),
        ("/good", Command("feedback", "up")),
        ("/dårlig", Command("feedback", "down")),
        ("/darlig", Command("feedback", "down")),
        ("/foo", Command("unknown", "foo")),
        ("", Command("empty")),
        ("   ", Command("empty")),
    ],
)
def test_parse_command(text: str, expected: Command) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    "question",
    [
        MRS,
        "Kildene til styring er hva?",
        "Kilder og referanser for tildelingsbrev?",
        "Hjelp meg å forstå tildelingsbrevet",
        "Hvem er ny i ledergruppen?",
        "Show me the sources on governance",
    ],
)
def test_parse_command_reads_real_questions_as_questions(question: str) -> None:
    assert parse_command(f"  {question} ") == Command("ask", question)


@pytest.mark.parametrize("question", ["Kildekritikk?", "Kildeskatt?"])
def test_one_word_question_starting_with_kilde_is_a_question(question: str) -> None:
    assert parse_command(question) == Command("ask", question)


def test_help_with_question_mark_shows_help() -> None:
    assert parse_command("Hjelp?") == Command("help")


@pytest.mark.parametrize(
    ("question", "follows"),
    [
        (MINUTES, True),
        ("Hva med kontaktmøter?", True),
        ("and who writes the minutes?", True),
        ("hvem gjør det?", True),
        (MRS, False),
        (CHAIR, False),
    ],
)
def test_is_follow_up(question: str, follows: bool) -> None:
    assert is_follow_up(question) is follows


# ---------------------------------------------------------------------------------------------
# Turns and per-chat memory


def test_ask_returns_a_turn_with_an_answer(service: ConversationService, clock: Clock) -> None:
    turn = service.ask("c", CHAIR)
    assert re.fullmatch(r"[0-9a-f]{12}", turn.id)
    assert (turn.question, turn.context, turn.at) == (CHAIR, None, clock.now)
    assert not turn.answer.abstained
    assert "kommunaldirektør" in turn.answer.text
    assert service.last_turn("c") == turn
    assert service.turn("c", turn.id) == turn


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


def test_one_off_question_is_not_remembered(service: ConversationService) -> None:
    first = service.ask(None, CHAIR)
    assert not first.answer.abstained
    assert service.ask(None, MINUTES).context is None
    assert not service._chats


def test_chats_do_not_share_history(service: ConversationService) -> None:
    service.ask("a", CHAIR)
    assert service.ask("b", MINUTES).context is None
    assert service.last_turn("a").question == CHAIR  # type: ignore[union-attr]


def test_forget_starts_afresh(service: ConversationService) -> None:
    turn = service.ask("c", CHAIR)
    service.forget("c")
    service.forget("never-seen")  # no error
    assert service.last_turn("c") is None
    assert service.turn("c", turn.id) is None
    assert service.ask("c", MINUTES).context is None


def test_history_keeps_the_last_turns_only(service: ConversationService) -> None:
    turns = [service.ask("c", MRS) for _ in range(HISTORY_TURNS + 1)]
    assert service.turn("c", turns[0].id) is None
    assert all(service.turn("c", t.id) == t for t in turns[1:])
    assert str(service_error(service.source, "c", 1, turns[0].id)) == GONE["nb"]
    assert service.source("c", 1, turns[1].id).turn == turns[1].id


def test_least_recently_asked_chat_is_forgotten(
    service: ConversationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conversation, "MAX_CHATS", 3)
    for chat in "abcd":
        service.ask(chat, MRS)
    assert service.last_turn("a") is None
    assert all(service.last_turn(chat) for chat in "bcd")
    service.ask("b", MRS)  # b is now the most recent; c is the oldest
    service.ask("e", MRS)
    assert service.last_turn("c") is None
    assert all(service.last_turn(chat) for chat in "bde")


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_empty_question_is_refused_in_norwegian(
    service: ConversationService, question: str
) -> None:
    error = service_error(service.ask, "c", question)
    assert (str(error), error.language) == (EMPTY_QUESTION["nb"], "nb")
    assert service.last_turn("c") is None


@pytest.mark.parametrize(
    ("question", "language", "words"),
    [
        ("Hva er styring? " * 80, "nb", ("(1279 tegn)", "høyst 1000 tegn")),
        ("What " * 300, "en", ("too long (1499 characters)", "to 1000 at most")),
    ],
)
def test_over_long_question_names_the_limit_in_the_users_language(
    service: ConversationService, question: str, language: str, words: tuple[str, ...]
) -> None:
    error = service_error(service.ask, "c", question)
    assert error.language == language
    for word in words:
        assert word in str(error)
    assert service.last_turn("c") is None


def test_question_at_the_limit_is_answered(make_service) -> None:  # type: ignore[no-untyped-def]
    service = make_service(max_question_chars=len(MRS))
    assert service.ask("c", f"  {MRS}\n").question == MRS  # the ends do not count
    assert "(18 tegn)" in str(service_error(service.ask, "c", f"{MRS}!"))


# ---------------------------------------------------------------------------------------------
# Sources


def test_source_before_any_question(service: ConversationService) -> None:
    assert str(service_error(service.source, "c", 1)) == NO_SOURCES_YET["nb"]


def test_source_shows_the_whole_cited_passage(service: ConversationService) -> None:
    turn = service.ask("c", CHAIR)
    for citation in turn.answer.citations:
        view = service.source("c", f" {citation.n} ")
        assert view == SourceView(turn.id, citation, "nb")
        assert len(view.citation.text) > len(citation.quote)
    assert service.source("c", 1, turn_id=turn.id).citation == turn.answer.citations[0]


def test_source_of_an_earlier_turn_by_id(service: ConversationService) -> None:
    first = service.ask("c", CHAIR)
    service.ask("c", MRS)
    assert service.source("c", 2, turn_id=first.id).citation == first.answer.citations[1]


@pytest.mark.parametrize(
    ("number", "message"),
    [
        (0, "Det svaret har kilde 1 til {count}; prøv en av dem."),
        ("9", "Det svaret har kilde 1 til {count}; prøv en av dem."),
        ("-1", "Det svaret har kilde 1 til {count}; prøv en av dem."),
        ("to", "Skriv kilde og et tall fra 1 til {count}, for eksempel «/kilde 1»."),
        ("", "Skriv kilde og et tall fra 1 til {count}, for eksempel «/kilde 1»."),
    ],
)
def test_source_number_must_name_a_citation(
    service: ConversationService, number: str | int, message: str
) -> None:
    count = len(service.ask("c", CHAIR).answer.citations)
    assert str(service_error(service.source, "c", number)) == message.format(count=count)


def test_source_messages_follow_the_answers_language(service: ConversationService) -> None:
    service.ask("c", ENGLISH)
    error = service_error(service.source, "c", 9)
    assert error.language == "en"
    assert str(error).startswith("That answer has sources 1 to")


def test_source_of_a_forgotten_turn_is_gone(service: ConversationService) -> None:
    turn = service.ask("c", CHAIR)
    service.forget("c")
    assert str(service_error(service.source, "c", 1, turn.id)) == GONE["nb"]
    assert str(service_error(service.source, "c", 1)) == NO_SOURCES_YET["nb"]


def test_source_of_an_abstained_answer_is_a_polite_refusal(
    service: ConversationService,
) -> None:
    turn = service.ask("c", OFF_TOPIC)
    assert turn.answer.abstained
    assert turn.answer.citations == []
    assert str(service_error(service.source, "c", 1)) == NO_SOURCES_IN_ANSWER["nb"]


# ---------------------------------------------------------------------------------------------
# Feedback and the question log


def votes(store: FeedbackStore):  # type: ignore[no-untyped-def]
    return store.events("up", "down")


def test_feedback_stores_the_question_answer_and_citations(
    service: ConversationService, store: FeedbackStore
) -> None:
    turn = service.ask("c", CHAIR)
    assert service.feedback("c", turn.id, helpful=True, channel="telegram") == turn
    [event] = votes(store)
    assert (event.kind, event.channel, event.question) == ("up", "telegram", CHAIR)
    assert event.answer == turn.answer.text
    assert event.citations == [
        {"n": c.n, "title": c.title, "source": c.source, "location": c.location}
        for c in turn.answer.citations
    ]
    assert event.citations[0]["location"] == "lysbilde 11"


def test_feedback_on_a_follow_up_keeps_what_it_followed(
    service: ConversationService, store: FeedbackStore
) -> None:
    service.ask("c", CHAIR)
    turn = service.ask("c", MINUTES)
    service.feedback("c", turn.id, helpful=False)
    [event] = votes(store)
    assert (event.question, event.context) == (MINUTES, CHAIR)
    [gap] = gaps(store)
    assert gap.contexts == [CHAIR]  # an editor sees what "og hvem …" was about


def test_a_store_from_before_contexts_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL,"
        " kind TEXT NOT NULL, channel TEXT NOT NULL, turn TEXT NOT NULL, question TEXT NOT NULL,"
        " answer TEXT NOT NULL, citations TEXT NOT NULL)"
    )
    old.execute(
        "INSERT INTO events (created, kind, channel, turn, question, answer, citations)"
        " VALUES ('2026-01-01T00:00:00+00:00', 'abstained', 'http', 't1', 'Hva?', 'Vet ikke', '[]')"
    )
    old.commit()
    old.close()
    store = FeedbackStore(path)
    try:
        [event] = store.events("abstained")
        assert (event.question, event.context) == ("Hva?", "")
        assert [g.question for g in gaps(store)] == ["Hva?"]
    finally:
        store.close()


def test_a_second_vote_replaces_the_first(
    service: ConversationService, store: FeedbackStore
) -> None:
    turn = service.ask("c", CHAIR)
    other = service.ask("c", MRS)
    service.feedback("c", turn.id, helpful=True)
    service.feedback("c", other.id, helpful=True)
    service.feedback("c", turn.id, helpful=False)
    assert [(e.kind, e.question) for e in votes(store)] == [("up", MRS), ("down", CHAIR)]
    assert store.counts() == {"up": 1, "down": 1}


def test_feedback_on_an_unknown_turn_is_refused(service: ConversationService) -> None:
    turn = service.ask("a", CHAIR)
    for chat, turn_id in [("a", "000000000000"), ("b", turn.id)]:
        assert str(service_error(service.feedback, chat, turn_id, True)) == GONE["nb"]


def test_feedback_without_a_store(make_service) -> None:  # type: ignore[no-untyped-def]
    service = make_service(store=None)
    turn = service.ask("c", OFF_TOPIC)
    assert service.feedback("c", turn.id, helpful=False) == turn
    service.close()


@pytest.mark.parametrize(
    ("question_log", "logged"),
    [
        ("gaps", [("abstained", OFF_TOPIC)]),
        ("all", [("asked", CHAIR), ("abstained", OFF_TOPIC)]),
        ("off", []),
    ],
)
def test_question_log(
    make_service, store: FeedbackStore, question_log: str, logged: list[tuple[str, str]]
) -> None:  # type: ignore[no-untyped-def]
    service = make_service(question_log=question_log)
    answered = service.ask("c", CHAIR)
    service.ask("c", OFF_TOPIC)
    assert [(e.kind, e.question) for e in store.events("asked", "abstained")] == logged
    service.feedback("c", answered.id, helpful=False)  # votes are kept whatever the log says
    assert [(e.kind, e.question) for e in votes(store)] == [("down", CHAIR)]


def test_default_question_log_is_gaps(service: ConversationService) -> None:
    assert service.question_log == "gaps"


# ---------------------------------------------------------------------------------------------
# The gap report


def citation(n: int, title: str = "Styringsdialogen", **fields: Any) -> Citation:
    values = {
        "location": f"lysbilde {n}",
        "source": "styringsdialogen.txt",
        "text": f"Hele teksten til kilde {n}.",
        "quote": f"Sitat {n}.",
        **fields,
    }
    return Citation(n=n, title=title, **values)


def answer_to(question: str, *citations: Citation, language: str = "nb") -> Answer:
    if not citations:
        return Answer(question, "Jeg finner ikke svar.", abstained=True, language=language)
    return Answer(question, "Ifølge kildene …", False, language, citations=list(citations))


def test_gaps_group_count_and_order(store: FeedbackStore) -> None:
    record = store.record
    record("abstained", "telegram", "t1", answer_to("Hva er LIV?"))
    record("abstained", "teams", "t2", answer_to("  hva er   LIV "))
    record("abstained", "http", "t3", answer_to("HVA ER LIV!"))
    record("down", "teams", "t4", answer_to("Hvem eier budsjettet?", citation(2, location=None)))
    record("abstained", "telegram", "t5", answer_to("hvem eier budsjettet"))
    record("down", "teams", "t6", answer_to("Hva er et fagmøte?", citation(3), citation(4)))
    record("up", "teams", "t7", answer_to("Hva er MRS?", citation(1)))
    record("asked", "teams", "t8", answer_to("Hva er et kontaktmøte?", citation(1)))

    found = gaps(store)
    assert [(g.question, g.abstained, g.unhelpful) for g in found] == [
        ("Hva er LIV?", 3, 0),
        ("Hvem eier budsjettet?", 1, 1),
        ("Hva er et fagmøte?", 0, 1),
    ]
    liv, budget, fagmote = found
    assert liv.channels == "http, teams, telegram"
    assert liv.sources == []
    assert budget.sources == ["«Styringsdialogen»"]
    assert fagmote.sources == ["«Styringsdialogen», lysbilde 3", "«Styringsdialogen», lysbilde 4"]
    assert all(g.last_seen for g in found)
    assert fagmote.to_dict()["channels"] == ["teams"]


def test_gap_lists_each_source_once(store: FeedbackStore) -> None:
    for turn in ("t1", "t2"):
        store.record("down", "teams", turn, answer_to("Hva er et fagmøte?", citation(3)))
    [gap] = gaps(store)
    assert (gap.unhelpful, gap.sources) == (2, ["«Styringsdialogen», lysbilde 3"])


def test_no_gaps_in_an_empty_store(store: FeedbackStore) -> None:
    assert gaps(store) == []


def test_a_later_thumbs_up_clears_the_gap(store: FeedbackStore) -> None:
    store.record("down", "teams", "t1", answer_to("Hva er et fagmøte?", citation(3)))
    store.record("up", "teams", "t2", answer_to("hva er et fagmøte", citation(3)))
    assert gaps(store) == []


# ---------------------------------------------------------------------------------------------
# `styringsbot report`


def fill_store(seed_engine, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Two unanswered questions (one spelled differently), one 👎 and one 👍, via the service."""
    service = ConversationService(seed_engine, store=FeedbackStore.in_data_dir(data_dir))
    service.ask("r", OFF_TOPIC)
    service.ask("r", OFF_TOPIC.lower().rstrip("?"), channel="telegram")
    service.feedback("r", service.ask("r", CHAIR).id, helpful=False)
    service.feedback("r", service.ask("r", MRS).id, helpful=True)
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


def test_report_json(seed_engine, report_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    fill_store(seed_engine, report_dir)
    assert main(["report", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(g["question"], g["abstained"], g["unhelpful"]) for g in report] == [
        (OFF_TOPIC, 2, 0),
        (CHAIR, 0, 1),
    ]
    assert report[0]["channels"] == ["telegram", "terminal"]
    assert report[1]["sources"][0] == "«Styringsdialogen – sånn gjør vi det her», lysbilde 11"


def test_report_without_a_store(report_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert out == "Ingen tilbakemeldinger eller ubesvarte spørsmål er lagret ennå.\n"
    assert not (report_dir / FILE_NAME).exists()


def test_report_of_a_store_without_gaps(
    report_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = FeedbackStore.in_data_dir(report_dir)
    store.record("up", "teams", "t1", answer_to(MRS, citation(1)))
    store.close()
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert "Tilbakemeldinger: 1 👍, 0 👎. Spørsmål uten svar: 0." in out
    assert "Ingen kunnskapshull å vise." in out
    assert main(["report", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


# ---------------------------------------------------------------------------------------------
# `styringsbot chat`


def test_chat_session(
    seed_engine,
    seed_knowledge: Path,
    in_tmp_cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # type: ignore[no-untyped-def]
    data_dir = seed_engine.settings.data_dir
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
        "Det svaret har kilde 1 til 1; prøv en av dem.",
        "Ukjent kommando; /hjelp viser hva som finnes.",
        "Ny samtale.",
        NO_SOURCES_YET["nb"],
        "/slutt     avslutt",
    ]
    positions = [out.find(piece) for piece in pieces]
    assert -1 not in positions, [p for p, at in zip(pieces, positions, strict=True) if at < 0]
    assert positions == sorted(positions)

    store = FeedbackStore.in_data_dir(data_dir)
    try:
        assert MINUTES in [e.question for e in store.events("up")]
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# RateLimiter


def test_rate_limiter_sliding_window(clock: Clock) -> None:
    limiter = RateLimiter(3, 60, clock=clock)
    assert limiter.retry_after("u") == 0.0
    assert [limiter.allow("u") for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("u") == 60.0
    clock.advance(59)
    assert not limiter.allow("u")
    assert limiter.retry_after("u") == pytest.approx(1.0)
    clock.advance(1)
    assert limiter.allow("u")


def test_rate_limiter_keys_are_independent(clock: Clock) -> None:
    limiter = RateLimiter(1, 60, clock=clock)
    assert limiter.allow("a")
    assert not limiter.allow("a")
    assert limiter.allow("b")
    assert limiter.retry_after("b") == 60.0


def test_rate_limiter_zero_is_unlimited(clock: Clock) -> None:
    limiter = RateLimiter(0, 60, clock=clock)
    assert all(limiter.allow("u") for _ in range(1000))
    assert limiter.retry_after("u") == 0.0


# ---------------------------------------------------------------------------------------------
# Rendering


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
    assert len(message) <= render.TELEGRAM_LIMIT
    assert not re.search(r"&(?!amp;|lt;|gt;)", message), message  # every & is escaped
    parser = TelegramHTML()
    parser.feed(message)
    parser.close()
    assert not parser.stack, parser.stack
    return parser


def elements(messages: list[str], tag: str) -> list[str]:
    return [text for m in messages for name, text in parse_telegram(m).elements if name == tag]


def visible(messages: list[str]) -> str:
    return "\n\n".join("".join(parse_telegram(m).text) for m in messages)


NASTY_TITLE = "Rapport <b>fet</b> & *stjerne* _under_ [lenke](http://x)"
NASTY_QUOTE = "Sitat med <i>tagg</i>, & og *markdown* _her_."


def nasty_answer(language: str = "nb") -> Answer:
    lead = citation(1, NASTY_TITLE, quote=NASTY_QUOTE, text=f"Avsnitt <1> & *a*.\n\n{NASTY_QUOTE}")
    other = citation(2, f"Annen {NASTY_TITLE}", quote=f"Andre {NASTY_QUOTE}", location="side 4")
    answer = answer_to("Hva?", lead, other, language=language)
    answer.guide_lines = ["Kort svar <med> & tegn. [1]"]
    return answer


def test_telegram_answer_of_a_real_answer(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask(CHAIR)
    assert len(answer.citations) > 1
    messages = render.telegram_answer(answer)
    lead, *others = answer.citations
    assert f"«{lead.quote}» [1]" in elements(messages, "i")
    assert elements(messages, "blockquote") == [f"«{c.quote}»" for c in others]
    assert elements(messages, "b") == [f"Ifølge {render.where(lead, 'nb')}:", "Kilder:"]
    assert answer.guide_lines[0] in visible(messages)


def test_telegram_folds_the_criteria_of_a_decision_aid(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Er et kontaktmøte styring?")
    header = next(line for line in answer.guide_lines if line.endswith(":"))
    criteria = answer.guide_lines[answer.guide_lines.index(header) + 1 :]
    assert criteria
    messages = render.telegram_answer(answer)
    assert header in elements(messages, "b")
    # The criteria, one per line, in one expandable quote; the verdict stays in view.
    assert elements(messages, "blockquote")[0] == "\n".join(criteria)
    assert "<blockquote expandable>" in messages[0]
    assert answer.guide_lines[0] in visible(messages).split("\n\n")[0]


def test_teams_card_folds_the_criteria_of_a_decision_aid(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Er et kontaktmøte styring?")
    header = next(line for line in answer.guide_lines if line.endswith(":"))
    criteria = answer.guide_lines[answer.guide_lines.index(header) + 1 :]
    body = render.teams_card(answer, "t1")["body"]
    [hidden] = [e for e in body if e["type"] == "Container" and e.get("isVisible") is False]
    shown = [run["text"] for block in hidden["items"] for run in block["inlines"]]
    assert shown == criteria
    toggles = [
        action
        for e in body
        if e["type"] == "ActionSet"
        for action in e["actions"]
        if action["type"] == "Action.ToggleVisibility"
    ]
    assert [t["targetElements"] for t in toggles] == [[hidden["id"]]]


def test_telegram_answer_escapes_source_text() -> None:
    messages = render.telegram_answer(nasty_answer())
    raw = "\n".join(messages)
    assert "&lt;b&gt;fet&lt;/b&gt; &amp; *stjerne* _under_ [lenke](http://x)" in raw
    assert elements(messages, "i") == [f"«{NASTY_QUOTE}» [1]"]
    assert elements(messages, "blockquote") == [f"«Andre {NASTY_QUOTE}»"]
    text = visible(messages)
    assert "Kort svar <med> & tegn. [1]" in text
    assert f"[2] «Annen {NASTY_TITLE}», side 4" in text


def test_telegram_answer_in_english(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask(ENGLISH)
    assert answer.language == "en"
    bold = elements(render.telegram_answer(answer), "b")
    assert bold[0].startswith("According to «") and bold[0].endswith("(quoted in Norwegian):")
    assert "Sources:" in bold
    assert "slide 11" in bold[0]


def test_telegram_answer_of_an_abstained_answer(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask(OFF_TOPIC)
    assert render.telegram_answer(answer) == [html.escape(answer.text, quote=False)]
    answer.text = "Ingen svar på <b>x</b> & y."
    assert render.telegram_answer(answer) == ["Ingen svar på &lt;b&gt;x&lt;/b&gt; &amp; y."]


def test_telegram_splits_long_sources_between_tags() -> None:
    long_quote = "Dette er en setning med & og <tagg> i seg. " * 300
    answer = answer_to("Hva?", citation(1), citation(2, quote=long_quote.strip()))
    messages = render.telegram_answer(answer)
    assert len(messages) > 1
    quoted = "".join(elements(messages, "blockquote"))
    assert quoted.replace(" ", "") == f"«{long_quote.strip()}»".replace(" ", "")

    view = SourceView("t", citation(1, text="\n\n".join([long_quote] * 3)), "nb")
    source_messages = render.telegram_source(view)
    assert len(source_messages) > 3
    assert visible(source_messages).count("<tagg>") == 900


def test_telegram_text_escapes() -> None:
    assert render.telegram_text("a < b\n\nc & d") == ["a &lt; b\n\nc &amp; d"]


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


def test_teams_card_puts_source_text_in_text_runs_only() -> None:
    answer = nasty_answer()
    card = render.teams_card(answer, "turn123")
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.5")
    runs = "\n".join(texts(card, "TextRun"))
    blocks = texts(card, "TextBlock")
    assert blocks == ["Kilder:"]
    derived = [*answer.guide_lines]
    for c in answer.citations:
        derived += [c.title, c.quote, c.location or "", *c.text.split("\n\n")]
    for text in derived:
        assert text in runs
        assert not any(text in block for block in blocks)


def test_teams_card_feedback_buttons_carry_the_turn() -> None:
    card = render.teams_card(nasty_answer("en"), "turn123")
    submits = [a for a in card["actions"] if a["type"] == "Action.Submit"]
    assert [a["data"][render.ACTION_KEY] for a in submits] == [
        {"action": "feedback", "turn": "turn123", "helpful": True},
        {"action": "feedback", "turn": "turn123", "helpful": False},
    ]
    assert [a["title"] for a in submits] == ["👍 Helpful", "👎 Not helpful"]
    assert texts(card, "TextBlock") == ["Sources:"]


def test_teams_card_of_an_abstained_answer(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask(OFF_TOPIC)
    card = render.teams_card(answer, "t1")
    assert texts(card, "TextRun") == [answer.text]
    assert texts(card, "TextBlock") == []
    assert len(card["actions"]) == 2


def test_plain_source(service: ConversationService) -> None:
    turn = service.ask("c", CHAIR)
    citation = turn.answer.citations[0]
    text = render.plain_source(service.source("c", 1))
    for piece in (citation.title, "lysbilde 11", citation.source, citation.text):
        assert piece in text
    assert render.plain(turn.answer) == turn.answer.text


def test_help_text_prefix() -> None:
    bare = render.help_text("nb", prefix="")
    assert "kilde N viser" in bare
    assert "/kilde" not in bare and "/ny" not in bare
    assert "/kilde N viser" in render.help_text("nb")
    assert "/kilde N shows" in render.help_text("en")
    assert render.say(render.NEW_CONVERSATION, "de") == render.NEW_CONVERSATION["nb"]


# ---------------------------------------------------------------------------------------------
# Async use


def test_run_answers_off_the_event_loop(service: ConversationService) -> None:
    turn = asyncio.run(service.run(service.ask, "c", MRS))
    assert "mål- og resultatstyring" in turn.answer.text
    assert service.last_turn("c") == turn


def test_run_serializes_calls_on_one_worker(service: ConversationService) -> None:
    questions = [CHAIR, MRS, OFF_TOPIC, "Hva er et fagmøte?", ENGLISH] * 2
    expected = {q: service.engine.ask(q).text for q in set(questions)}
    threads: set[str] = set()
    active = 0
    overlaps = 0
    guard = threading.Lock()

    def ask(chat: str, question: str) -> conversation.Turn:
        nonlocal active, overlaps
        with guard:
            active += 1
            overlaps += active > 1
            threads.add(threading.current_thread().name)
        try:
            return service.ask(chat, question)
        finally:
            with guard:
                active -= 1

    async def all_at_once() -> list[conversation.Turn]:
        calls = [service.run(ask, f"chat{i}", q) for i, q in enumerate(questions)]
        return await asyncio.gather(*calls)

    turns = asyncio.run(all_at_once())
    assert [t.answer.text for t in turns] == [expected[q] for q in questions]
    assert overlaps == 0
    assert len(threads) == 1 and threads.pop().startswith("styringsbot")
