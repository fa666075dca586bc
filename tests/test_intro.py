"""The onboarding course's content (`knowledge/intro.yaml`): its shape, the phone-screen limits of
each step, and every quote found in an indexed passage of the document it names."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from conftest import SEED_KNOWLEDGE

from ingest.clean import fold

COURSE = SEED_KNOWLEDGE / "intro.yaml"
LIMITS = {"text": 450, "question": 150, "choice": 80, "explanation": 250, "quote": 300}


@pytest.fixture(scope="module")
def course() -> dict[str, Any]:
    return yaml.safe_load(COURSE.read_text(encoding="utf-8"))


def test_the_course_has_eight_to_twelve_steps_with_stable_ids(course: dict[str, Any]) -> None:
    steps = course["steps"]
    assert 8 <= len(steps) <= 12
    ids = [step["id"] for step in steps]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", i) for i in ids)
    assert course["title"] and course["title_en"]


def test_each_step_fits_a_phone_screen_in_both_languages(course: dict[str, Any]) -> None:
    too_long = []
    for step in course["steps"]:
        check = step["check"]
        fields = [("text", step["text"]), ("text", step["text_en"])]
        fields += [("question", check["question"]), ("question", check["question_en"])]
        fields += [("explanation", check["explanation"]), ("explanation", check["explanation_en"])]
        fields += [("choice", c[key]) for c in check["choices"] for key in ("text", "text_en")]
        fields += [("quote", cite["quote"]) for cite in step["cite"]]
        too_long += [
            f"{step['id']}: {kind} {len(value)}"
            for kind, value in fields
            if not value.strip() or len(value) > LIMITS[kind]
        ]
    assert not too_long


def test_each_check_question_has_three_choices_and_one_right(course: dict[str, Any]) -> None:
    for step in course["steps"]:
        choices = step["check"]["choices"]
        assert len(choices) == 3, step["id"]
        assert [bool(c.get("right")) for c in choices].count(True) == 1, step["id"]
        assert len({fold(c["text"]) for c in choices}) == 3, step["id"]


def test_every_quote_of_the_course_is_found_in_the_index(seed_engine, course) -> None:  # type: ignore[no-untyped-def]
    """As for the role guide: an edited document cannot silently break a lesson."""
    passages: dict[str, list[str]] = {}
    for chunk in seed_engine.index.chunks:
        passages.setdefault(chunk.source, []).append(fold(chunk.text))
    missing = [
        f"{step['id']}: {cite['source']}: {cite['quote'][:60]}"
        for step in course["steps"]
        for cite in step["cite"]
        if not any(fold(cite["quote"]) in text for text in passages.get(cite["source"], []))
    ]
    assert sum(len(step["cite"]) for step in course["steps"]) >= len(course["steps"])
    assert not missing, f"quotes not found in an indexed passage: {missing}"


# -- the course as the conversation service runs it ------------------------------------------

CHAT = "terminal:course"


@pytest.fixture
def service(seed_engine, tmp_path):  # type: ignore[no-untyped-def]
    from bot.conversation import ConversationService
    from bot.store import Store

    service = ConversationService(seed_engine, Store(f"sqlite:///{tmp_path / 's.sqlite3'}"))
    yield service
    service.close()


def _reopened(service):  # type: ignore[no-untyped-def]
    """A new service on the same store file: what a restarted process has."""
    from bot.conversation import ConversationService
    from bot.store import Store

    url = service.store.url
    service.close()
    return ConversationService(service.engine, Store(url))


def test_the_whole_course_runs_with_resume_after_a_restart(service, seed_engine) -> None:  # type: ignore[no-untyped-def]
    from bot.conversation import Choose, ReplyKind
    from bot.render import plain

    course = seed_engine.course
    total = len(course.steps)
    first = service.handle(CHAT, None, "/intro", "terminal")
    assert first.kind is ReplyKind.LESSON and first.verdict is None
    assert first.lesson.number == 1 and first.lesson.total == total
    assert f"{total} korte steg" in first.text
    # Each lesson cites the indexed passages its quotes stand in, and "kilde N" shows one whole.
    assert first.lesson.citations and all(c.location for c in first.lesson.citations)
    shown = service.handle(CHAT, None, "kilde 1", "terminal")
    assert shown.kind is ReplyKind.SOURCE
    assert shown.source.citation.text == first.lesson.citations[0].text

    # A wrong answer (typed as its number) gets the right one, why, and the passage.
    step = course.steps[0]
    wrong = next(n for n in range(1, 4) if n != step.right)
    reply = service.handle(CHAT, None, str(wrong), "terminal")
    assert reply.verdict is not None and not reply.verdict.right
    assert reply.verdict.answer == step.right
    assert reply.verdict.answer_text == step.choices[step.right - 1].text
    quote = fold(step.explained_by().quote)
    assert reply.verdict.citation is not None and quote in fold(reply.verdict.citation.text)
    assert reply.lesson.number == 2
    text = plain.reply(reply)
    assert text.index("Ikke helt") < text.index(step.choices[step.right - 1].text)
    assert text.index("Les mer i") < text.index("steg 2 av")

    # Right answers through buttons, then an ordinary question leaves the course for a while.
    for step in course.steps[1:4]:
        reply = service.handle(CHAT, None, Choose(step.id, step.right))
        assert reply.verdict.right
    assert reply.lesson.number == 5
    asked = service.handle(CHAT, None, "Hvem leder etatsstyringsmøtet?", "terminal")
    assert asked.kind is ReplyKind.ANSWER and not asked.answer.abstained
    # … and a number now is a question again, not an answer to the check.
    assert service.handle(CHAT, None, "2", "terminal").kind is not ReplyKind.LESSON

    # The process stops; the next one resumes at step 5.
    service = _reopened(service)
    resumed = service.handle(CHAT, None, "/intro", "terminal")
    assert resumed.lesson.number == 5 and "steg 5 av" in resumed.text
    for step in course.steps[4:]:
        reply = service.handle(CHAT, None, Choose(step.id, step.right))
    assert reply.lesson is None and reply.verdict.right
    assert f"riktig på {total - 1} av {total}" in reply.text

    # /intro after the end starts over; "på nytt" in the middle too.
    again = service.handle(CHAT, None, "/intro", "terminal")
    assert again.lesson.number == 1
    service.handle(CHAT, None, Choose(course.steps[0].id, course.steps[0].right))
    assert service.handle(CHAT, None, "/intro på nytt", "terminal").lesson.number == 1

    figures = service.store.course_figures(course.id)
    assert (figures.started, figures.finished) == (1, 1)
    first_step = course.steps[0].id
    # the first round's wrong answer, and the second round's right one
    assert figures.answers[first_step] == (2, 1)
    assert all(figures.answers[s.id] == (1, 0) for s in course.steps[1:])
    service.close()


def test_english_course_translates_the_lessons_and_quotes_as_written(service, seed_engine) -> None:  # type: ignore[no-untyped-def]
    from bot.conversation import Choose

    course = seed_engine.course
    reply = service.handle(CHAT, None, "/course", "telegram")
    assert reply.language == "en" and "short steps" in reply.text
    step = course.steps[0]
    assert (
        reply.lesson.text == step.english["text"]
        and reply.lesson.question == step.english["question"]
    )
    reply = service.handle(CHAT, None, Choose(step.id, step.right))
    assert reply.verdict.explanation == step.english["explanation"]
    assert step.explained_by().quote in reply.verdict.citation.quote  # the source's own words
    # A resumed course keeps its language whatever the command.
    assert service.handle(CHAT, None, "intro", "teams").lesson.language == "en"


def test_a_step_removed_by_an_edit_or_a_stranger_button_is_explained(service) -> None:  # type: ignore[no-untyped-def]
    from bot.conversation import Choose, ReplyKind

    service.handle(CHAT, None, "/intro", "terminal")
    gone = service.handle(CHAT, None, Choose("no-such-step", 1))
    assert gone.kind is ReplyKind.ERROR and gone.problem == "gone" and "/intro" in gone.text
    step = service.engine.course.steps[0]
    bad = service.handle(CHAT, None, Choose(step.id, 9))
    assert bad.kind is ReplyKind.ERROR and bad.text == "Velg et svar fra 1 til 3."
    one_off = service.handle(None, None, "/intro", "terminal")
    assert one_off.kind is ReplyKind.ERROR and one_off.problem == "no_conversation"


def test_each_rendered_step_fits_a_phone_screen(service, seed_engine) -> None:  # type: ignore[no-untyped-def]
    """A lesson with its sources and choices, as each channel shows it, in both languages: one
    Telegram message of at most PHONE_CHARS visible characters."""
    from test_telegram import visible_text

    from bot.conversation import Choose
    from bot.render import plain
    from bot.render import telegram as telegram_render

    longest = 0
    for command, chat in (("/intro", "nb"), ("/course", "en")):
        reply = service.handle(chat, None, command, "telegram")
        while reply.lesson is not None:
            messages = telegram_render.lesson(reply.lesson)
            assert len(messages) == 1
            longest = max(longest, len(visible_text(messages[0])), len(plain.lesson(reply.lesson)))
            step = reply.lesson.step
            reply = service.handle(chat, None, Choose(step, 1))
    assert longest <= PHONE_CHARS, longest


PHONE_CHARS = 1200  # about 28 lines of 43 characters: a phone screen in a chat app


def test_a_newcomer_finishes_in_under_ten_minutes(course: dict[str, Any]) -> None:
    """Reading the whole course at 180 words a minute (slow, for a second language) plus 15 s
    to answer each check question."""
    words = 0
    for step in course["steps"]:
        check = step["check"]
        parts = [step["title"], step["text"], check["question"], check["explanation"]]
        parts += [c["text"] for c in check["choices"]]
        words += sum(len(part.split()) for part in parts)
    minutes = words / 180 + len(course["steps"]) * 15 / 60
    assert minutes < 10, minutes


def test_a_broken_course_file_stops_ingest_and_a_lost_quote_is_reported(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import make_settings

    from ingest.pipeline import IngestError, sync

    knowledge = tmp_path / "knowledge"
    knowledge.mkdir()
    (knowledge / "doc.txt").write_text("Fagmøter\n\nFagmøter er uformelle møter.\n", "utf-8")
    step = {
        "id": "fagmote",
        "title": "Fagmøtet",
        "text": "Et fagmøte er uformelt.",
        "cite": [{"source": "doc.txt", "quote": "Fagmøter er uformelle møter."}],
        "check": {
            "question": "Er fagmøter formelle?",
            "choices": [{"text": "Ja"}, {"text": "Nei", "right": True}, {"text": "Vet ikke"}],
            "explanation": "«Fagmøter er uformelle møter.»",
        },
    }
    course = {"title": "Kurs", "steps": [step]}
    two_right = yaml.safe_dump(
        course
        | {
            "steps": [
                step
                | {
                    "check": step["check"]
                    | {"choices": [{"text": "A", "right": True}, {"text": "B", "right": True}]}
                }
            ]
        },
        allow_unicode=True,
    )
    (knowledge / "intro.yaml").write_text(two_right, "utf-8")
    settings = make_settings(tmp_path / "data", knowledge)
    with pytest.raises(IngestError) as refused:
        sync(knowledge, settings.data_dir, settings.embedder_spec, progress=False)
    assert "nøyaktig ett med «right: true»" in str(refused.value)
    assert "indeksen er ikke endret" in str(refused.value)
    assert not (settings.data_dir / "index.json").exists()

    lost = step | {"cite": [{"source": "doc.txt", "quote": "Fagmøter er styring."}]}
    (knowledge / "intro.yaml").write_text(
        yaml.safe_dump(course | {"steps": [lost]}, allow_unicode=True), "utf-8"
    )
    from bot.guide import Guide
    from ingest.store import IndexState, read_chunks

    sync(knowledge, settings.data_dir, settings.embedder_spec, progress=False)
    chunks = read_chunks(settings.data_dir, IndexState.read(settings.data_dir))
    missing = Guide.load(knowledge).missing_quotes([(c.source, c.text) for c in chunks])
    assert missing == ["intro.yaml: steg «fagmote» (doc.txt)"]
