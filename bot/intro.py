"""The onboarding course, "Kom i gang" (`/intro`): content read from `knowledge/intro.yaml`.

A course is a few short steps, each one idea with the quotes it rests on and a check question
with three choices. The file is part of the role guide's files: ingest checks it before anything is
written, keeps it with the index generation and warns about quotes the index does not hold, so an
edited document cannot silently break a lesson. What is shown of a step is drawn here (`Lesson`,
`Verdict`); where a user is in the course is kept in the conversation store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.guide import INTRO_FILE, Cite, GuideError, _cites, _list, _optional_text, _text
from ingest.clean import fold

if TYPE_CHECKING:
    from bot.answer import Citation

MAX_STEPS = 30
MIN_CHOICES, MAX_CHOICES = 2, 4
STEP_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MAX_ID_CHARS = 40  # a step id travels in a Telegram button's 64 bytes of callback data


@dataclass(frozen=True)
class Choice:
    text: str
    text_en: str | None
    right: bool

    def say(self, language: str) -> str:
        return self.text_en if language == "en" and self.text_en else self.text


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    text: str
    cites: tuple[Cite, ...]
    question: str
    choices: tuple[Choice, ...]
    explanation: str
    english: dict[str, str]  # title, text, question, explanation in English (where given)

    def say(self, field: str, language: str) -> str:
        """A field in the user's language: English where the course has it, else bokmål."""
        if language == "en" and self.english.get(field):
            return self.english[field]
        return str(getattr(self, field))

    @property
    def right(self) -> int:
        """The right choice's number (1-based, as users see it)."""
        return next(i for i, c in enumerate(self.choices, 1) if c.right)

    def explained_by(self) -> Cite:
        """The quote the explanation rests on: the one whose words it shares most."""
        words = set(fold(self.explanation).split())
        return max(self.cites, key=lambda c: len(words & set(fold(c.quote).split())))


@dataclass(frozen=True)
class Course:
    id: str
    title: str
    title_en: str | None
    steps: tuple[Step, ...]

    def say_title(self, language: str) -> str:
        return self.title_en if language == "en" and self.title_en else self.title

    def position(self, step_id: str) -> int | None:
        """A step's index in the course (0-based), or None when there is no such step."""
        return next((i for i, s in enumerate(self.steps) if s.id == step_id), None)

    def cites(self) -> list[tuple[str, Cite]]:
        """Every quote of the course, with the step that cites it."""
        return [(f"{INTRO_FILE}: steg «{s.id}»", c) for s in self.steps for c in s.cites]

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Course:
        """The course in a parsed intro.yaml; a GuideError names what to fix, in one sentence."""
        raw_steps = _list(data, "steps")
        if not raw_steps:
            raise GuideError(f"{INTRO_FILE} har ingen steg («steps»); legg til minst ett.")
        if len(raw_steps) > MAX_STEPS:
            raise GuideError(
                f"{INTRO_FILE} har {len(raw_steps)} steg; et kurs kan ha høyst {MAX_STEPS}."
            )
        steps: list[Step] = []
        for number, item in enumerate(raw_steps, 1):
            step_id = item.get("id")
            if (
                not isinstance(step_id, str)
                or len(step_id) > MAX_ID_CHARS
                or not STEP_ID.fullmatch(step_id)
            ):
                raise GuideError(
                    f"Steg {number} i {INTRO_FILE} mangler en «id» av små bokstaver, tall og "
                    f"bindestrek (høyst {MAX_ID_CHARS} tegn); gi det en."
                )
            if any(s.id == step_id for s in steps):
                raise GuideError(
                    f"Steg-id «{step_id}» står to ganger i {INTRO_FILE}; gjør den unik."
                )
            check = item.get("check")
            if not isinstance(check, dict):
                raise GuideError(
                    f"Steget «{step_id}» i {INTRO_FILE} mangler kontrollspørsmålet («check»)."
                )
            choices = _choices(check.get("choices"), step_id)
            english = {
                key: value
                for key, value in (
                    ("title", _optional_text(item, "title_en")),
                    ("text", _optional_text(item, "text_en")),
                    ("question", _optional_text(check, "question_en")),
                    ("explanation", _optional_text(check, "explanation_en")),
                )
                if value
            }
            steps.append(
                Step(
                    id=step_id,
                    title=_text(item, "title", INTRO_FILE),
                    text=_text(item, "text", INTRO_FILE),
                    cites=_cites(item.get("cite"), INTRO_FILE, f" i steget «{step_id}»"),
                    question=_text(check | {"id": step_id}, "question", INTRO_FILE),
                    choices=choices,
                    explanation=_text(check | {"id": step_id}, "explanation", INTRO_FILE),
                    english=english,
                )
            )
        course_id = data.get("id") if isinstance(data.get("id"), str) else "intro"
        return cls(
            id=course_id[:MAX_ID_CHARS],
            title=_text(data | {"id": "kurset"}, "title", INTRO_FILE),
            title_en=_optional_text(data, "title_en"),
            steps=tuple(steps),
        )


def _choices(value: Any, step_id: str) -> tuple[Choice, ...]:
    items = value if isinstance(value, list) else []
    choices = []
    for item in items:
        text = item.get("text") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise GuideError(
                f"Et svaralternativ i steget «{step_id}» i {INTRO_FILE} mangler tekst."
            )
        english = item.get("text_en")
        choices.append(
            Choice(
                " ".join(text.split()),
                " ".join(english.split()) if isinstance(english, str) and english.strip() else None,
                item.get("right") is True,
            )
        )
    if not MIN_CHOICES <= len(choices) <= MAX_CHOICES or sum(c.right for c in choices) != 1:
        raise GuideError(
            f"Steget «{step_id}» i {INTRO_FILE} skal ha {MIN_CHOICES}–{MAX_CHOICES} "
            "svaralternativer, og nøyaktig ett med «right: true»."
        )
    return tuple(choices)


# -- what a channel shows -----------------------------------------------------------------------


@dataclass(frozen=True)
class Lesson:
    """One step as shown: its text, the passages it rests on, and its check question."""

    course: str  # the course's title
    step: str  # the step's id (buttons answer it by id)
    number: int  # 1-based
    total: int
    title: str
    text: str
    citations: tuple[Citation, ...]
    question: str
    choices: tuple[str, ...]
    language: str
    turn_id: str | None = None  # the stored turn its sources are shown from ("kilde N")

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "number": self.number,
            "total": self.total,
            "title": self.title,
            "text": self.text,
            "citations": [c.to_dict() for c in self.citations],
            "question": self.question,
            "choices": list(self.choices),
        }


@dataclass(frozen=True)
class Verdict:
    """What a check answer was: right or not, the right choice, and why (with its passage)."""

    step: str
    right: bool
    chosen: int  # 1-based
    answer: int  # the right choice, 1-based
    answer_text: str
    explanation: str
    citation: Citation | None  # the passage the explanation rests on
    language: str
    turn_id: str | None = None  # the step's lesson turn, for its sources

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "right": self.right,
            "chosen": self.chosen,
            "answer": self.answer,
            "answer_text": self.answer_text,
            "explanation": self.explanation,
            "citation": self.citation.to_dict() if self.citation else None,
        }
