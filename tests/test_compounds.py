"""Compound splitting in the lexical index: splitter, analyzer terms, BM25 effect, save/load."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ingest.lexical import (
    WORDS_FILE,
    Analyzer,
    CompoundSplitter,
    LexicalIndex,
    word_counts,
)

CORPUS = [
    "Styring av etaten skjer i møter. Etat og styring henger sammen.",
    "Møtet ledes av direktøren. Et møte om oppdrag. Oppdrag gis i programmet.",
    "Toppleder deltar i program for toppleder. Styringen er god. Møtene er mange.",
    "Etatens styring og oppdragets styring drøftes for og imot i møtet.",
]

# The query's compound "oppdragsstyringsmøtene" occurs in no passage; the first passage has its
# parts apart. The second shares only "leder" with the query, twice.
PASSAGES = [
    "Oppdragsstyring gjelder styring av større oppdrag. Møtet ledes av kommunaldirektør.",
    "Fagmøtet har en leder, og hver leder skriver oppsummering.",
    "Tildelingsbrevet sendes til virksomheten hvert år med mål og budsjett.",
    "Kontaktmøter holdes ved behov med byråden.",
]
QUERY = "Hvem leder oppdragsstyringsmøtene?"


@pytest.fixture(scope="module")
def splitter() -> CompoundSplitter:
    return CompoundSplitter(word_counts(CORPUS))


def test_word_counts_are_lower_case_alphabetic_words() -> None:
    counts = word_counts(["Møte 2024: møtet, MØTE og e-post"])

    assert counts["møte"] == 2
    assert counts["møtet"] == 1
    assert "2024" not in counts


def test_compound_splits_into_corpus_words_without_the_linking_s(
    splitter: CompoundSplitter,
) -> None:
    parts = splitter.split("etatsstyringsmøtene")

    assert parts == ("etat", "styring", "møtene")


def test_unseen_compound_of_known_parts_splits(splitter: CompoundSplitter) -> None:
    assert splitter.split("oppdragsstyringsmøtet") == ("oppdrag", "styring", "møtet")
    assert splitter.split("topplederprogrammet") == ("toppleder", "programmet")


def test_short_word_is_never_split() -> None:
    splitter = CompoundSplitter(Counter({"mål": 10, "råd": 10}))

    assert splitter.split("målråd") == ("målråd",)  # six letters
    assert splitter.split("målsråd") == ("mål", "råd")  # seven: long enough


def test_word_of_unknown_parts_stays_whole(splitter: CompoundSplitter) -> None:
    assert splitter.split("xylofonkatt") == ("xylofonkatt",)
    assert splitter.split("styringxyz") == ("styringxyz",)


def test_stop_words_are_never_parts() -> None:
    counts = Counter({"for": 500, "også": 500, "etter": 500, "styring": 20, "møte": 20})
    splitter = CompoundSplitter(counts)

    for word in ("forstyring", "ogsåstyring", "ettermøte"):
        assert splitter.split(word) == (word,)


def test_rare_three_letter_part_is_not_used() -> None:
    splitter = CompoundSplitter(Counter({"fag": 1, "møte": 20}))

    assert splitter.split("fagmøte") == ("fagmøte",)
    assert CompoundSplitter(Counter({"fag": 3, "møte": 20})).split("fagmøte") == ("fag", "møte")


def test_frequent_whole_word_stays_whole_when_its_parts_are_rarer() -> None:
    frequent_whole = CompoundSplitter(Counter({"styringsmøte": 50, "styring": 2, "møte": 2}))
    frequent_parts = CompoundSplitter(Counter({"styringsmøte": 1, "styring": 50, "møte": 50}))

    assert frequent_whole.split("styringsmøte") == ("styringsmøte",)
    assert frequent_parts.split("styringsmøte") == ("styring", "møte")


def test_analyzer_adds_the_stems_of_compound_parts(splitter: CompoundSplitter) -> None:
    with_parts = Analyzer(splitter).terms("etatsstyringsmøtene")
    without = Analyzer(None, bigrams=False).terms("etatsstyringsmøtene")

    assert {"etat", "styring", "møt"} <= set(with_parts)
    assert without == ["etatsstyringsmøt"]


def test_analyzer_joins_neighbouring_stems_into_a_bigram() -> None:
    terms = Analyzer(CompoundSplitter(Counter())).terms("instruks for virksomhetsstyring")

    assert "instruks_virksomhetsstyring" in terms
    assert "for" not in terms


def test_compound_query_finds_the_passage_with_the_parts_apart() -> None:
    scores = LexicalIndex.build(PASSAGES).scores(QUERY)
    plain = LexicalIndex.build(PASSAGES, compounds=False).scores(QUERY)

    assert int(np.argmax(scores)) == 0
    assert scores[0] > 0
    assert int(np.argmax(plain)) != 0, plain
    assert plain[0] < scores[0]


def test_saved_index_loads_with_its_splitter(tmp_path: Path) -> None:
    index = LexicalIndex.build(PASSAGES)
    index.save(tmp_path / "lexical")

    loaded = LexicalIndex.load(tmp_path / "lexical")

    assert (tmp_path / "lexical" / WORDS_FILE).is_file()
    assert loaded.analyzer.splitter is not None
    word = "oppdragsstyringsmøtene"
    assert loaded.analyzer.splitter.split(word) == index.analyzer.splitter.split(word)
    assert len(loaded.analyzer.splitter.split(word)) > 1
    np.testing.assert_allclose(loaded.scores(QUERY), index.scores(QUERY))
    assert int(np.argmax(loaded.scores(QUERY))) == 0


def test_loading_a_folder_without_the_word_list_fails(tmp_path: Path) -> None:
    LexicalIndex.build(PASSAGES).save(tmp_path / "lexical")
    (tmp_path / "lexical" / WORDS_FILE).unlink()

    with pytest.raises(FileNotFoundError):
        LexicalIndex.load(tmp_path / "lexical")
