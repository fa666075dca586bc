"""The answer step on the real seed index: query plan, answer reader, answer-type abstention,
follow-ups, the user's language, `explain`, `eval` with lead hit and pairs, and `calibrate`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import SEED_KNOWLEDGE, console_script, make_settings, subprocess_env

from bot.answer import guide_settles, years_covered
from bot.conversation import ConversationService
from bot.messages import NO_ANSWER
from bot.query import AnswerType, from_nynorsk, plan
from bot.reader import FEATURES, ReaderModel, expands, leads, type_match
from ingest.clean import fold
from ingest.split import lines, sentences

# ---------------------------------------------------------------------------------------------
# Query plan: answer type, nynorsk, spelling


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("Hvem leder etatsstyringsmøtet?", AnswerType.WHO),
        ("Hvem er møteleder på etatsstyringsmøtene?", AnswerType.WHO),
        ("Hvem er byråd for finans i dag?", AnswerType.PERSON),
        ("Who is the director of UKE?", AnswerType.PERSON),
        ("Hvor mange ansatte har Oslo kommune?", AnswerType.COUNT),
        ("How many employees does Oslo kommune have?", AnswerType.COUNT),
        ("Hva kostet topplederprogrammet?", AnswerType.AMOUNT),
        ("Hvor ofte holdes kontaktmøter?", AnswerType.FREQUENCY),
        ("Når på året sendes tildelingsbrevet?", AnswerType.DATE),
        ("Siden når har Oslo hatt parlamentarisme?", AnswerType.DATE),
        ("Hvorfor er tillit viktig?", AnswerType.PURPOSE),
        ("Hva er formålet med instruksen?", AnswerType.PURPOSE),
        ("Hva er et oppdragsbrev?", AnswerType.DEFINITION),
        ("Kan etaten spille inn saker når kommunaldirektøren møter den?", AnswerType.RULE),
        ("Er referatet offentlig?", AnswerType.RULE),
        ("Should the minutes list names?", AnswerType.RULE),
        ("Hvordan bygges prososial motivasjon?", AnswerType.HOW),
        ("Hvor tett bør byråden og etaten møtes?", AnswerType.FREQUENCY),
        ("Hva sa byrådslederen om detaljstyring?", AnswerType.QUOTE),
        ("What did the commission conclude about trust?", AnswerType.QUOTE),
        ("Hvilke dilemmaer har tillitsbasert styring?", AnswerType.LIST),
        ("What are the three sub-goals?", AnswerType.LIST),
        ("Which documents govern the administration?", AnswerType.LIST),
        ("What kinds of topics came up at the gatherings?", AnswerType.LIST),
        ("Which room is the meeting held in?", AnswerType.OTHER),  # one room, not a list
        ("Står det noe i tildelingsbrevet om hospitering?", AnswerType.RULE),
        ("Møter alle virksomheter byråden jevnlig?", AnswerType.RULE),
        ("Referater fra fagmøter?", AnswerType.OTHER),
        ("Hvor lenge varer et etatsstyringsmøte?", AnswerType.DURATION),
        ("How long does a kontaktmøte last?", AnswerType.DURATION),
        ("How many hours of coaching does each leader get?", AnswerType.DURATION),
        ("Hva står TB for?", AnswerType.EXPANSION),
        ("What does OVK stand for?", AnswerType.EXPANSION),
        ("Hva er forkortelsen MRS?", AnswerType.EXPANSION),
        ("Hva står det i tildelingsbrevet om bemanning?", AnswerType.DEFINITION),
        ("Hvem står for opplæringen av nye ledere?", AnswerType.WHO),
        ("TB står for hva?", AnswerType.EXPANSION),
        ("TSL – hva står det for?", AnswerType.OTHER),  # "det" is no abbreviation
        ("How high was unemployment, in percent?", AnswerType.AMOUNT),
    ],
)
def test_answer_type(question: str, kind: AnswerType) -> None:
    assert plan(question).answer_type is kind


def test_nynorsk_question_words_read_as_bokmal() -> None:
    assert from_nynorsk("Kven leiar etatsstyringsmøta?") == "Hvem leder etatsstyringsmøtene?"
    assert from_nynorsk("Kor ofte er verksemdsstyring ikkje nok?") == (
        "Hvor ofte er virksomhetsstyring ikke nok?"
    )
    nynorsk = plan("Kva er føremålet med tildelingsbrevet?")
    assert nynorsk.language == "nb"
    assert nynorsk.answer_type is AnswerType.PURPOSE


def test_plan_reads_time_errands_and_markup() -> None:
    assert plan("Hvem er byrådsleder nå?").present
    assert not plan("Hvem leder etatsstyringsmøtet?").present
    assert plan("Hva kostet programmet i 2022 og 2023?").years == (2022, 2023)
    assert plan("Hvordan søker jeg på en stilling?").errand
    assert not plan("Hvordan bygges tillit?").errand
    assert plan("Hva er <b>MRS</b>?").text == "Hva er MRS ?"


def test_misspelt_words_are_mended_to_the_index_words(seed_engine) -> None:  # type: ignore[no-untyped-def]
    mended = seed_engine.retriever.plan("Hvem leder etatstyringsmøtet?")
    assert mended.corrections == {"etatstyringsmøtet": "etatsstyringsmøte"}
    # English words are not Norwegian typos; a known word is never "mended".
    english = seed_engine.retriever.plan("Is it part of the formal dialogue?")
    assert english.corrections == {}
    assert seed_engine.retriever.plan("Hvem leder kontaktmøtene?").corrections == {}


def test_a_typo_and_nynorsk_reach_the_role_guide(seed_engine) -> None:  # type: ignore[no-untyped-def]
    for question in ("Hvem leder etatstyringsmøtet?", "Kven leiar etatsstyringsmøtet?"):
        answer = seed_engine.ask(question)
        assert not answer.statements[0].verbatim, question
        assert answer.statements[0].text.startswith("Etatsstyringsmøte – Ledes av"), question
        assert "Ledes av kommunaldirektør" in answer.lead


# ---------------------------------------------------------------------------------------------
# Sentences and leads: whole sentences, never a cut fragment

SLIDE = (
    "Etatsstyringsmøte\n\n"
    "Hovedtilnærming er inntil fire møter i året.\n"
    "• Ledes av kommunaldirektør. Fra BYR:\n"
    "ledergruppe/utvalgte medarbeidere. Fra virksomheten: etatssjef.\n"
    "• Sakspapirer fra etat i rimelig tid før møtet\n"
    "(skop/acos)\n"
    "3 overordnede forutsetninger for MRS:\n"
    "• Strategisk styring mot overordnede mål\n"
    "• Delegering av myndighet\n"
    "Byrådssak nr. 1 innleder.\n"
)


def test_lines_join_a_sentence_the_source_broke() -> None:
    assert lines(SLIDE)[2] == (
        "• Ledes av kommunaldirektør. Fra BYR: ledergruppe/utvalgte medarbeidere. "
        "Fra virksomheten: etatssjef."
    )
    assert "• Sakspapirer fra etat i rimelig tid før møtet (skop/acos)" in lines(SLIDE)
    assert "Byrådssak nr. 1 innleder." in sentences(SLIDE)  # "nr." ends no sentence


def test_leads_are_whole_sentences_with_their_line_or_their_list() -> None:
    quoted = leads(SLIDE)
    assert quoted[fold("Ledes av kommunaldirektør.")] == (
        "Ledes av kommunaldirektør. Fra BYR: ledergruppe/utvalgte medarbeidere."
    )
    assert quoted[fold("3 overordnede forutsetninger for MRS:")] == (
        "3 overordnede forutsetninger for MRS: / Strategisk styring mot overordnede mål / "
        "Delegering av myndighet"
    )
    # A bullet of a list does not quote its siblings.
    assert quoted[fold("Delegering av myndighet")] == "Delegering av myndighet"


def test_a_question_over_bullets_and_bullets_that_ask_are_quoted_as_a_list() -> None:
    slide = (
        "Hvorfor er tillit viktig?\n"
        "• Kostnadseffektivt\n"
        "• Motiverende\n"
        "Skal bygges rundt følgende spørsmål:\n"
        "• Hvilke samfunnsutfordringer skal håndteres?\n"
        "• Hvilke verdier skal skapes?\n"
        "Hva gjør vi nå?\n"
        "Vi skriver referat.\n"
    )
    quoted = leads(slide)
    assert quoted[fold("Hvorfor er tillit viktig?")] == (
        "Hvorfor er tillit viktig? / Kostnadseffektivt / Motiverende"
    )
    assert quoted[fold("Skal bygges rundt følgende spørsmål:")] == (
        "Skal bygges rundt følgende spørsmål: / Hvilke samfunnsutfordringer skal håndteres? / "
        "Hvilke verdier skal skapes?"
    )
    # A question over a plain sentence introduces nothing.
    assert quoted[fold("Hva gjør vi nå?")] == "Hva gjør vi nå?"


def test_every_lead_of_the_seed_corpus_is_made_of_whole_sentences(seed_engine) -> None:  # type: ignore[no-untyped-def]
    for chunk in seed_engine.index.chunks:
        whole = sentences(chunk.text)
        for lead in leads(chunk.text).values():
            # It starts where a sentence starts and ends where a sentence ends.
            assert any(lead.startswith(s) for s in whole), (chunk.id, lead)
            assert any(lead.endswith(s) for s in whole), (chunk.id, lead)


# ---------------------------------------------------------------------------------------------
# The reader


def test_type_match_reads_numbers_roles_and_frequencies() -> None:
    assert type_match(AnswerType.COUNT, "Over 50 000 ansatte", {"ansatt"}) == 1.0
    assert type_match(AnswerType.COUNT, "En av landets største organisasjoner") == 0.0
    assert type_match(AnswerType.COUNT, "Kommunal parlamentarisme fra 1986") == 0.0  # a year
    assert type_match(AnswerType.COUNT, "3. Tilbud til toppledere 2017-2020") == 0.0  # a section
    # what is counted, inflected or in nynorsk ("Kor mange folkevalde nivå …?"), or not at all
    assert type_match(AnswerType.COUNT, "med to folkevalgte nivåer", {"folkevald"}) == 1.0
    assert type_match(AnswerType.COUNT, "15 bydeler og 50 etater", {"byrådsavdeling"}) == 0.5
    assert type_match(AnswerType.WHO, "Ledes av kommunaldirektør.") == 1.0
    assert type_match(AnswerType.PERSON, "Ledes av kommunaldirektør.") < 1.0
    assert type_match(AnswerType.PERSON, "Byrådsleder Raymond Johansen") == 1.0
    assert type_match(AnswerType.FREQUENCY, "anbefaler ikke oftere enn månedlig") == 1.0
    assert type_match(AnswerType.AMOUNT, "Det kostet 2 millioner kroner.") == 1.0
    assert type_match(AnswerType.AMOUNT, "Tilbudet hadde 6 samlinger.") < 1.0
    assert type_match(AnswerType.QUOTE, "«Politikere skal ikke styre i detalj.»") == 1.0
    assert type_match(AnswerType.QUOTE, "Politikere skal ikke styre i detalj.") == 0.0
    assert type_match(AnswerType.LIST, "Åpenhet, medvirkning og samskaping i alle ledd.") == 1.0
    assert type_match(AnswerType.LIST, "Standardisering vs handlingsrom") == 1.0
    assert type_match(AnswerType.LIST, "Formelle utgangspunkt / Byrådssaker / Instrukser") == 1.0
    assert type_match(AnswerType.LIST, "Ledes av kommunaldirektør.") == 0.0
    assert type_match(AnswerType.DURATION, "Møtet varer i 2 timer.") == 1.0
    assert type_match(AnswerType.DURATION, "Heldagsmøte med byråden") == 1.0
    assert type_match(AnswerType.DURATION, "Kommunal parlamentarisme fra 1986") == 1.0
    assert type_match(AnswerType.DURATION, "Møtet holdes våren 2019.") == 0.0


@pytest.mark.parametrize(
    ("abbreviation", "sentence", "spelt"),
    [
        ("TB", "Tildelingsbrev + evt supplerende TB", True),  # a compound's parts
        ("MRS", "mål- og resultatstyring (MRS)", True),  # linking words are skipped
        ("EHA", "Byrådsavdeling for eldre, helse og arbeid", True),
        ("UKE", "Utviklings- og kompetanseetaten", True),
        ("BYR", "Fra byrådsavdelingen: ledergruppe", True),  # the word it begins
        ("SOL", "i tett dialog med SOL", False),  # named, not spelt out
        ("SOL", "samordnet ledelse og styring", False),  # letters out of order
        ("OVK", "Oslo kommune", False),
    ],
)
def test_an_abbreviation_is_spelt_out_by_the_words_it_is_made_of(
    abbreviation: str, sentence: str, spelt: bool
) -> None:
    assert expands(abbreviation, sentence) is spelt
    kind = AnswerType.EXPANSION
    assert type_match(kind, sentence, abbreviation=abbreviation) == float(spelt)


def test_an_abbreviation_the_documents_do_not_spell_out_is_not_answered(seed_engine) -> None:  # type: ignore[no-untyped-def]
    """SOL is named in the documents ("i tett dialog med SOL") but never spelt out, and the
    glossary does not know it; TB and EHA are spelt out by the glossary."""
    assert seed_engine.ask("Hva står SOL for?").abstained
    for question, words in (("Hva står TB for?", "tildelingsbrev"), ("Hva står EHA for?", "helse")):
        answer = seed_engine.ask(question)
        assert not answer.abstained, question
        assert words in answer.text.lower(), question


def test_the_reader_quotes_the_sentence_that_answers(seed_engine) -> None:  # type: ignore[no-untyped-def]
    cases = {
        "Hvem leder etatsstyringsmøtet?": "ledes av kommunaldirektør",
        "Hvor ofte bør kontaktmøter med politisk ledelse holdes?": "ikke oftere enn månedlig",
        "Skal navn på deltakerne stå i referatet fra etatsstyringsmøtet?": "ingen navn",
        "Hvem skriver utkastet til referat fra etatsstyringsmøtet?": "utkast skrives av",
    }
    for question, phrase in cases.items():
        answer = seed_engine.ask(question)
        assert not answer.abstained, question
        assert phrase in fold(answer.lead), (question, answer.lead)


def _trace_weighing(engine, question: str, **weights: float):  # type: ignore[no-untyped-def]
    """The engine's trace of a question, read by a reader with these weights (not the fit's)."""
    fitted = engine.reader.model
    engine.reader.model = ReaderModel(
        fitted.embedder,
        mean=[0.0] * len(FEATURES),
        scale=[1.0] * len(FEATURES),
        coef=[weights.get(f, 0.0) for f in FEATURES],
        intercept=0.0,
        fitted_on="test",
    )
    try:
        return engine.trace(question)
    finally:
        engine.reader.model = fitted


def test_the_lead_may_come_from_a_passage_below_the_first(seed_engine) -> None:  # type: ignore[no-untyped-def]
    """Whatever the fitted weights: a reader that weighs what the question asks for (here a
    number) above the passage's rank leads with the number from the fourth passage, and the
    citations follow the lead."""
    trace = _trace_weighing(
        seed_engine, "Hvor mange ansatte har Oslo kommune?", type_match=3.0, overlap=1.0
    )
    best = trace.reading.best
    assert best is not None and best.passage > 0
    assert "50 000" in trace.answer.lead
    assert trace.answer.citations[0].text == trace.result.passages[best.passage].text
    assert trace.result.passages[0].text != trace.answer.citations[0].text


def test_a_slide_cut_in_two_is_cited_once(seed_engine) -> None:  # type: ignore[no-untyped-def]
    """Slide 11 is two passages of the index; both are cited for who leads the
    etatsstyringsmøte, as one citation that quotes each and that a follow-up builds on whole."""
    answer = seed_engine.ask("Hvem leder etatsstyringsmøtet?")
    pages = [(c.source, c.location) for c in answer.citations]
    assert len(pages) == len(set(pages))
    slide = answer.citations[0]
    assert slide.location == "lysbilde 11" and slide.also
    assert "Ledes av kommunaldirektør" in slide.quote and " … " in slide.quote
    assert answer.quote is not None and " … " not in answer.quote.text
    assert set(answer.follow_up_context().cited) >= {slide.chunk_id, *slide.also}
    again = type(answer).from_state(json.loads(json.dumps(answer.to_state())))
    assert again.citations == answer.citations


def test_the_sentence_with_the_asked_for_number_leads_one_without_it(
    seed_engine, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A reader that prefers the first passage scores a sentence about employees without a number
    highest; the sentence holding "Over 50 000 ansatte" leads all the same, and the first passage
    is still cited. Without the rule the lead has no number."""
    weights = {"rank": 3.0, "overlap": 1.0, "type_match": 0.5}
    question = "Hvor mange ansatte har Oslo kommune?"
    trace = _trace_weighing(seed_engine, question, **weights)
    assert trace.answer.lead == "Over 50 000 ansatte"
    assert trace.reading.top_score() > trace.reading.best.score  # the rule, not the weights
    assert trace.result.passages[0].text in [c.text for c in trace.answer.citations]
    monkeypatch.setattr("bot.reader.TYPED_LEAD", 10.0)
    assert "50 000" not in _trace_weighing(seed_engine, question, **weights).answer.lead


def test_reader_candidates_carry_every_feature(seed_engine) -> None:  # type: ignore[no-untyped-def]
    reading = seed_engine.trace("Hva er et oppdragsstyringsmøte?").reading
    assert reading.candidates
    scores = [c.score for c in reading.candidates]
    assert scores == sorted(scores, reverse=True)
    assert all(set(c.features) == set(FEATURES) for c in reading.candidates)


# ---------------------------------------------------------------------------------------------
# Abstention that checks the answer


def test_years_covered_reads_ranges() -> None:
    assert years_covered((2018,), ["Tilbudet 2017–2020 besto av …"])
    assert years_covered((2019,), ["i perioden 2017-19"])
    assert not years_covered((2022,), ["Tilbudet 2017–2020", "Budsjett 2021"])
    assert years_covered((), [])


def test_a_near_domain_question_gets_not_in_the_documents_with_related_passages(
    seed_engine,
) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Hvem er byråd for finans i dag?")
    assert answer.abstained
    assert not answer.citations
    assert answer.related
    assert answer.text.startswith(NO_ANSWER["nb"])
    for passage in answer.related:
        assert f"«{passage.title}»" in answer.text
    assert answer.to_dict()["related"][0]["title"] == answer.related[0].title


def test_off_domain_questions_abstain_in_both_languages(seed_engine) -> None:  # type: ignore[no-untyped-def]
    assert seed_engine.ask("Hvordan søker jeg om byggetillatelse i Oslo?").abstained
    english = seed_engine.ask("How do I renew my passport?")
    assert english.abstained
    assert english.text.startswith(NO_ANSWER["en"])


def test_the_question_memory_tells_questions_like_the_unanswered_ones(
    seed_engine,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A question phrased like labelled ones the documents do not answer gets a negative signal,
    one phrased like answered ones a positive one; with one kind only there is nothing to tell.
    (Six labelled questions: each is compared with the nearest one of each kind.)"""
    from bot import abstention
    from bot.abstention import QuestionMemory
    from bot.calibration import held_out_like

    monkeypatch.setattr(abstention, "NEIGHBOURS", 1)

    labelled = {
        "Hvem leder etatsstyringsmøtet?": True,
        "Hvor ofte holdes etatsstyringsmøter?": True,
        "Hva er et tildelingsbrev?": True,
        "Hvem signerer tildelingsbrevet?": False,
        "Hva kostet lederprogrammet i 2022?": False,
        "Hvordan organiserer Bergen kommune styringsdialogen?": False,
    }
    embed = seed_engine.embedder.embed_query
    memory = QuestionMemory(
        seed_engine.embedder.id,
        np.array([embed(q) for q in labelled], dtype=np.float32),
        np.array(list(labelled.values())),
        tuple(labelled),
    )
    assert memory.like_answered(embed("Hvem godkjenner tildelingsbrevet?")) < 0
    assert memory.like_answered(embed("Hvem leder oppdragsstyringsmøtet?")) > 0
    assert memory.like_answered(None) == 0.0
    answered_only = np.array([0, 1, 2])
    assert memory.like_answered(embed("Hvem signerer tildelingsbrevet?"), among=answered_only) == 0
    nearest = memory.nearest(embed("Hvem godkjenner tildelingsbrevet?"), n=1)
    assert [(q, kind) for q, kind, _ in nearest] == [
        ("Hva er et tildelingsbrev?", True),
        ("Hvem signerer tildelingsbrevet?", False),
    ]
    # In a fit, a question is never compared with itself: held out, "Hvem signerer …" is judged
    # by the others alone, and so scores otherwise than against a memory that holds it.
    held = held_out_like(memory, list(range(6)), folds=6)
    assert held[3] != memory.like_answered(memory.vectors[3])
    assert held[3] == memory.like_answered(memory.vectors[3], among=np.array([0, 1, 2, 4, 5]))


def test_the_memory_leaves_out_unanswered_questions_another_signal_explains(
    monkeypatch, seed_engine
) -> None:  # type: ignore[no-untyped-def]
    """ "Hvor mange ansatte hadde Oslo kommune i 2023?" is unanswered for its year, which the
    year signal weighs: it is no reason to think the documents do not say how many work there."""
    from bot import abstention
    from bot.abstention import QuestionMemory

    monkeypatch.setattr(abstention, "NEIGHBOURS", 1)
    labelled = {
        "Hva er et tildelingsbrev?": (True, False),
        "Hvor mange ansatte hadde Oslo kommune i 2023?": (False, True),
        "Hvem signerer tildelingsbrevet?": (False, False),
    }
    embed = seed_engine.embedder.embed_query
    vectors = np.array([embed(q) for q in labelled], dtype=np.float32)
    answered = np.array([a for a, _ in labelled.values()])
    explained = np.array([e for _, e in labelled.values()])
    probe = embed("Hvor mange ansatte har Oslo kommune?")
    every = QuestionMemory(seed_engine.embedder.id, vectors, answered, tuple(labelled))
    memory = QuestionMemory(seed_engine.embedder.id, vectors, answered, tuple(labelled), explained)
    assert every.like_answered(probe) < memory.like_answered(probe) - 0.02
    assert [q for q, kind, _ in memory.nearest(probe, n=1) if not kind] == [
        "Hvem signerer tildelingsbrevet?"
    ]


def test_the_signals_that_explain_a_question_away_are_abstention_signals() -> None:
    from bot.abstention import FEATURES as SIGNALS
    from bot.calibration import EXPLAINED_BY

    assert set(EXPLAINED_BY) <= set(SIGNALS)


def test_the_question_memory_is_saved_and_loaded(tmp_path: Path, seed_engine) -> None:  # type: ignore[no-untyped-def]
    from bot.abstention import QuestionMemory

    embed = seed_engine.embedder.embed_query
    questions = ("Hvem leder etatsstyringsmøtet?", "Hvem signerer tildelingsbrevet?")
    memory = QuestionMemory(
        seed_engine.embedder.id,
        np.array([embed(q) for q in questions], dtype=np.float32),
        np.array([True, False]),
        questions,
        np.array([False, True]),
    )
    memory.save(tmp_path / "questions.npz")
    loaded = QuestionMemory.load(tmp_path / "questions.npz")
    assert loaded.questions == questions and loaded.embedder == memory.embedder
    assert loaded.explained is not None and loaded.explained.tolist() == [False, True]
    probe = embed("Hvem godkjenner tildelingsbrevet?")
    assert abs(loaded.like_answered(probe) - memory.like_answered(probe)) < 1e-2
    # Another embedder's memory is not used: its vectors cannot be compared.
    assert QuestionMemory.for_index(tmp_path, "another/model") is None
    assert QuestionMemory.for_index(tmp_path, memory.embedder).questions == questions


# ---------------------------------------------------------------------------------------------
# Follow-ups


@pytest.mark.parametrize(
    ("first", "follow_up", "phrase"),
    [
        ("Hvem leder kontaktmøtene med politisk ledelse?", "og hvor ofte?", "månedlig"),
        ("Hvem leder etatsstyringsmøtet?", "og hvem skriver referatet?", "utkast skrives av"),
        ("Hva er et oppdragsstyringsmøte?", "hvem leder det?", "ledes av kommunaldirektør"),
    ],
)
def test_a_follow_up_is_answered_on_what_it_asks(seed_engine, first, follow_up, phrase) -> None:  # type: ignore[no-untyped-def]
    service = ConversationService(seed_engine)
    service.ask("chat", first)
    turn = service.ask("chat", follow_up)
    assert turn.context is not None
    assert not turn.answer.abstained
    assert phrase in fold(turn.answer.lead), turn.answer.lead


def test_an_english_questions_topic_is_the_norwegian_words_the_documents_have(seed_engine) -> None:  # type: ignore[no-untyped-def]
    """A follow-up searches with its earlier question's topic; for an English question that names
    no meeting form or term, the topic is its rarest words as searched in Norwegian, never the
    untranslated English ones the index does not have ("How many through")."""
    question = "How many top management teams went through the development programme in 2017–2019?"
    topic = seed_engine.ask(question).follow_up_context().topic
    assert "toppledergrupper" in topic.split(), topic
    assert not {"how", "many", "through", "teams"} & set(topic.lower().split()), topic


def test_a_follow_up_asks_for_something_new_not_its_earlier_question(seed_engine) -> None:  # type: ignore[no-untyped-def]
    """ "hvilket annet dilemma nevnes?" after «Kan tillitsbasert styring føre til mer
    forskjellsbehandling?»: the slide's own question, in the earlier question's words, is marked
    as restating it, and another dilemma on that slide leads."""
    first = "Kan tillitsbasert styring føre til mer forskjellsbehandling?"
    context = seed_engine.ask(first).follow_up_context()
    trace = seed_engine.trace("hvilket annet dilemma nevnes?", context=context)
    restating = [c for c in trace.reading.candidates if "forskjellsbehandling?" in c.text]
    assert restating and restating[0].features["restates"] > 0.5
    best = trace.reading.best
    assert best is not None and best.features["restates"] < 0.1, best.text
    assert "forskjellsbehandling" not in best.lead
    alone = seed_engine.trace(first)  # a question on its own restates nothing
    assert all(c.features["restates"] == 0.0 for c in alone.reading.candidates)


def test_a_follow_up_is_supported_by_the_passage_its_earlier_answer_cited(seed_engine) -> None:  # type: ignore[no-untyped-def]
    """ "hvor ofte skal virksomhetene gjennomføre den?" after «Hva er 10-faktor?»: the sentence
    that answers ("hvert annet år") stands in the passage the first answer cited, without the
    topic's words; it still counts as a sentence about the question, so the asked-for frequency
    is found there (the abstention rule's type support)."""
    context = seed_engine.ask("Hva er 10-faktor?").follow_up_context()
    trace = seed_engine.trace("hvor ofte skal virksomhetene gjennomføre den?", context=context)
    answering = [c for c in trace.reading.candidates if "hvert annet år" in c.text]
    assert answering, [c.text for c in trace.reading.candidates[:5]]
    assert answering[0].features["earlier"] == 1.0
    assert answering[0].anchored
    assert trace.reading.type_support() == 1.0
    alone = seed_engine.trace("hvor ofte skal virksomhetene gjennomføre den?")
    assert alone.reading.type_support() < 1.0  # alone, nothing says what "den" is


def test_the_follow_up_context_stays_short_however_long_the_chain(seed_engine) -> None:  # type: ignore[no-untyped-def]
    service = ConversationService(seed_engine)
    service.ask("chat", "Hvem leder etatsstyringsmøtet?")
    for _ in range(6):
        turn = service.ask("chat", "og hvem skriver referatet?")
    assert turn.context is not None
    assert turn.context.topic == "Etatsstyringsmøte"
    assert len(turn.context.cited) <= 3


# ---------------------------------------------------------------------------------------------
# The user's language

NORWEGIAN_FRAMING = ("Ifølge", "Kilder:", "Se også", "Ledes av:", "Slik skiller", "Jeg finner")


def _outside_quotes(text: str) -> str:
    return re.sub(r"«[^»]*»", "«…»", text)


@pytest.mark.parametrize(
    "question",
    [
        "What is a tildelingsbrev?",
        "Who chairs the agency governance meeting?",
        "How often should contact meetings with the political leadership be held?",
        "Is a fagmøte governance?",
        "What does MRS stand for?",
        "What did the leadership programme cost in 2022?",
    ],
)
def test_english_questions_get_english_answer_text(seed_engine, question: str) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask(question)
    assert answer.language == "en"
    framing = _outside_quotes(answer.text)
    assert not any(word in framing for word in NORWEGIAN_FRAMING), framing
    if answer.abstained:
        assert answer.text.startswith(NO_ANSWER["en"])
        return
    assert "Sources:" in framing
    assert "(quoted in Norwegian)" in framing
    for statement in [*answer.statements, *answer.criteria]:
        if statement.verbatim:
            continue
        # The guide's own words are English; Norwegian terms appear glossed in parentheses.
        line = _outside_quotes(statement.text)
        assert re.search(r"\b(the|is|are|of|and|stands|in|by|to)\b", line), line


def test_english_guide_lines_use_the_english_texts(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Who chairs the agency governance meeting?")
    assert answer.statements[0].text.startswith(
        "Etatsstyringsmøte (agency governance meeting) – Chaired by:"
    )
    assert "kommunaldirektør" in answer.lead  # the quote stays as the source wrote it


# ---------------------------------------------------------------------------------------------
# The command line: explain, eval with lead hit and pairs, calibrate


def _run(tmp_path: Path, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(console_script("styringsbot")), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=tmp_path,
        env=subprocess_env(
            STYRINGSBOT_DATA_DIR=str(data), STYRINGSBOT_KNOWLEDGE_DIR=str(SEED_KNOWLEDGE)
        ),
        timeout=300,
    )


@pytest.fixture(scope="module")
def seed_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the seed index, copied from the session's engine for the CLI tests."""
    from ingest.pipeline import sync

    data = tmp_path_factory.mktemp("answers") / "data"
    settings = make_settings(data, SEED_KNOWLEDGE)
    sync(SEED_KNOWLEDGE, data, settings.embedder_spec, progress=False)
    return data


def test_explain_shows_every_stage(tmp_path: Path, seed_data: Path) -> None:
    result = _run(tmp_path, seed_data, "explain", "Hvem leder etatsstyringsmøtet?")
    assert result.returncode == 0, result.stderr
    for stage in ("1. Query plan", "2. Passages", "3. Reader", "4. Abstention", "5. Answer"):
        assert stage in result.stdout
    assert "answer type who" in result.stdout
    assert "Styringsdialogen" in result.stdout
    data = json.loads(
        _run(
            tmp_path,
            seed_data,
            "explain",
            "--json",
            "og hvor ofte?",
            "--after",
            "Hvem leder kontaktmøtene?",
        ).stdout
    )
    assert data["plan"]["follow_up"]["topic"] == "Kontaktmøte"
    assert data["plan"]["answer_type"] == "frequency"
    assert {"dense", "sentence", "bm25", "fused"} <= set(data["passages"][0])
    assert set(data["reader"][0]["features"]) == set(FEATURES)
    assert data["abstention"]["abstained"] is False
    # The labelled questions the memory signal compares it with, of both kinds.
    near = data["abstention"]["nearest_labelled"]
    assert {n["answered"] for n in near} == {True, False} and all(n["question"] for n in near)
    assert "like_answered" in data["abstention"]["signals"]


def test_eval_reports_lead_hit_and_follow_up_pairs(tmp_path: Path, seed_data: Path) -> None:
    questions = tmp_path / "q.jsonl"
    rows = [
        {
            "id": "s1",
            "question": "Hvem leder etatsstyringsmøtet?",
            "expect_any": ["ledes av kommunaldirektør"],
            "abstain": False,
            "lang": "nb",
        },
        {
            "id": "s2",
            "question": "Hvem er byråd for finans i dag?",
            "expect_any": [],
            "abstain": True,
            "lang": "nb",
            "near_domain": True,
        },
        {
            "id": "p1",
            "first": "Hvem leder kontaktmøtene med politisk ledelse?",
            "follow_up": "og hvor ofte?",
            "expect_any": ["ikke oftere enn månedlig"],
        },
    ]
    questions.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    result = _run(tmp_path, seed_data, "eval", str(questions))
    assert result.returncode == 0, result.stderr
    assert re.search(r"lead hit\s+1\.000", result.stdout), result.stdout
    assert re.search(r"follow-up pairs\s+1\s", result.stdout), result.stdout
    assert re.search(r"near-domain oos\s+0\s+-.*1\s+1\.000", result.stdout), result.stdout
    report = json.loads(_run(tmp_path, seed_data, "eval", "--json", str(questions)).stdout)
    pair = next(q for q in report["questions"] if q["id"] == "p1")
    assert pair["follow_up"] and pair["lead_relevant"]


def test_calibrate_fits_the_reader_and_the_rule_into_the_data_dir(
    tmp_path: Path, seed_data: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(seed_data, data)
    labelled = tmp_path / "labelled.jsonl"
    fit = Path(__file__).resolve().parent.parent / "benchmarks" / "fit" / "calibration.jsonl"
    labelled.write_text(fit.read_text(encoding="utf-8"), encoding="utf-8")
    result = _run(tmp_path, data, "calibrate", str(labelled))
    assert result.returncode == 0, result.stderr
    assert "Kryssvalidert: lead hit" in result.stdout
    reader = ReaderModel.load(data / "reader.json")
    assert reader.features == FEATURES and reader.fitted_on == "labelled.jsonl"
    assert np.any(np.array(reader.coef) != 0)
    rule = json.loads((data / "abstention.json").read_text(encoding="utf-8"))
    assert 0.05 <= rule["threshold"] <= 0.5
    # Both are used from then on.
    from bot.engine import Engine

    engine = Engine.open(make_settings(data, SEED_KNOWLEDGE), progress=False)
    assert engine.reader.model.fitted_on == "labelled.jsonl"
    assert engine.answerer.abstention.fitted_on == "labelled.jsonl"
    # … and the question memory: every labelled question, with whether the documents answer it.
    memory = engine.answerer.memory
    assert memory is not None and len(memory.questions) == len(fit.read_text().splitlines())
    assert memory.answered.any() and not memory.answered.all()
    assert "like_answered" in rule["features"]

    only_answerable = tmp_path / "answerable.jsonl"
    only_answerable.write_text(
        json.dumps({"question": "Hva står MRS for?", "expect_any": ["mål- og resultatstyring"]})
        + "\n",
        encoding="utf-8",
    )
    refused = _run(tmp_path, data, "calibrate", str(only_answerable))
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr and refused.stderr.startswith("Feil: ")


def test_calibrate_fits_the_verifier_on_pairs_and_eval_measures_it(
    tmp_path: Path, seed_data: Path
) -> None:
    """Statement–passage pairs fit the verifier of generated answers into the data dir, where an
    engine with a language model configured takes it; eval reports it on other pairs."""
    data = tmp_path / "data"
    shutil.copytree(seed_data, data)
    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text((benchmarks / "fit" / "verifier-pairs.jsonl").read_text(encoding="utf-8"))
    result = _run(tmp_path, data, "calibrate", str(pairs))
    assert result.returncode == 0, result.stderr
    assert "Lagret verifikatoren" in result.stdout and "(170 par)" in result.stdout
    assert not (data / "reader.json").exists()  # no questions: the reader is left as it was
    fitted = json.loads((data / "verifier.json").read_text(encoding="utf-8"))
    assert fitted["fitted_on"] == "pairs.jsonl" and 0.05 <= fitted["threshold"] <= 0.95
    from bot.engine import Engine

    settings = make_settings(
        data, SEED_KNOWLEDGE, llm="openai:stand-in", llm_base_url="http://127.0.0.1:9/v1"
    )
    engine = Engine.open(settings, progress=False)
    assert engine.generator is not None
    assert engine.generator.verifier.fitted_on == "pairs.jsonl"

    measured = _run(tmp_path, data, "eval", str(benchmarks / "measure" / "verifier-pairs.jsonl"))
    assert measured.returncode == 0, measured.stderr
    assert re.search(r"verifier \(threshold 0\.\d\d\): 165 pairs", measured.stdout)
    assert "kind subtle-error" in measured.stdout

    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"statement": "Uten kilde.", "passage": 3}) + "\n")
    refused = _run(tmp_path, data, "calibrate", str(broken))
    assert refused.returncode == 2 and refused.stderr.startswith("Feil: Linje 1")
    one_kind = tmp_path / "one-kind.jsonl"
    row = {"statement": "Møtet ledes av kommunaldirektør.", "passage": "Ledes av kommunaldirektør."}
    one_kind.write_text(json.dumps(row | {"supported": True}, ensure_ascii=False) + "\n")
    refused = _run(tmp_path, data, "calibrate", str(one_kind))
    assert refused.returncode == 2 and "Verifikatoren trenger" in refused.stderr


def test_an_index_without_sentence_texts_still_reads_sentences(
    tmp_path: Path, seed_data: Path
) -> None:
    """Indexes written before sentence texts were stored (one row per sentence, named by its
    chunk's id, float32): the texts are split again."""
    from bot.engine import Engine
    from ingest.store import SENTENCES_FILE, IndexState

    data = tmp_path / "data"
    shutil.copytree(seed_data, data)
    state = IndexState.read(data)
    assert state is not None
    path = data / state.lexical_dirname / SENTENCES_FILE
    with np.load(path) as stored:
        vectors = stored["vectors"].astype(np.float32)
        owners = np.repeat(stored["chunk_ids"], stored["counts"])
    np.savez(path, vectors=vectors, owners=owners)
    engine = Engine.open(make_settings(data, SEED_KNOWLEDGE), progress=False)
    assert len(engine.index.sentence_texts) == len(vectors)
    assert "Ledes av kommunaldirektør" in engine.ask("Hvem leder etatsstyringsmøtet?").lead


@pytest.mark.parametrize(
    ("question", "settled"),
    [
        ("What is a tildelingsbrev?", True),  # the guide defines the term asked about
        ("Hva står MRS for?", True),  # … and spells the abbreviation out
        ("Er et fagmøte styring?", True),  # the decision aid classifies the meeting form
        ("Hvilken mal brukes for tildelingsbrev?", False),  # names a defined term, asks more
        ("Hva står SOL for?", False),  # the documents never spell it out
    ],
)
def test_what_the_role_guide_answers_itself_is_never_turned_away(
    seed_engine, monkeypatch, question: str, settled: bool
) -> None:  # type: ignore[no-untyped-def]
    """A rule that would turn every question away still lets through the questions the role guide
    answers itself (a defined term, a spelt-out abbreviation, a classification): a question that
    reads like unanswered ones ("Hvilken mal brukes for tildelingsbrev?") must not make the bot
    refuse "What is a tildelingsbrev?"."""
    strict = replace(seed_engine.answerer.abstention, threshold=1.01)
    monkeypatch.setattr(seed_engine.answerer, "abstention", strict)
    answer = seed_engine.ask(question)
    assert guide_settles(seed_engine.trace(question).result) is settled
    assert answer.abstained is not settled
    if settled:
        assert answer.confident and answer.citations
