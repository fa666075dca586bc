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
