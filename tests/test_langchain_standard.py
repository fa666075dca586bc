"""The LangChain retriever against LangChain's own standard retriever tests (`langchain-tests`),
on the real seed corpus, plus what the standard tests leave out: ids, metadata, bad `k`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests

from bot.langchain_retriever import MAX_K, StyringsbotRetriever

QUESTION = "Hvem leder etatsstyringsmøtet?"


class TestStyringsbotRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _seed_retriever(self, seed_engine) -> None:  # type: ignore[no-untyped-def]
        # The suite builds retrievers from `retriever_constructor_params` (also outside its
        # `retriever` fixture), so the session's seed index is handed over on the instance.
        self._retriever = seed_engine.retriever

    @property
    def retriever_constructor(self) -> type[StyringsbotRetriever]:
        return StyringsbotRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"retriever": self._retriever}

    @property
    def retriever_query_example(self) -> str:
        return QUESTION


@pytest.fixture
def retriever(seed_engine) -> StyringsbotRetriever:  # type: ignore[no-untyped-def]
    return StyringsbotRetriever.from_retriever(seed_engine.retriever)


def test_documents_carry_the_chunk_id_and_the_citation(seed_engine, retriever) -> None:  # type: ignore[no-untyped-def]
    documents = retriever.invoke(QUESTION)
    passages = seed_engine.retriever.search(QUESTION, k=5).passages

    assert len(documents) == 5  # the default k
    assert [d.id for d in documents] == [p.chunk.id for p in passages]
    assert [d.page_content for d in documents] == [p.text for p in passages]
    first, passage = documents[0], passages[0]
    assert first.metadata == {
        "id": passage.chunk.id,
        "title": passage.title,
        "source": passage.chunk.source,
        "location": passage.location,
        "heading": passage.chunk.heading,
        "score": passage.score,
    }
    assert any("Ledes av kommunaldirektør" in d.page_content for d in documents)


def test_k_per_call_overrides_the_retrievers_k(retriever) -> None:  # type: ignore[no-untyped-def]
    assert len(retriever.invoke(QUESTION, k=2)) == 2
    assert len(asyncio.run(retriever.ainvoke(QUESTION, k=2))) == 2
    assert len(retriever.invoke(QUESTION)) == retriever.k == 5  # the call did not change it


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1])
def test_k_out_of_range_is_refused(retriever, k: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=f"k must be between 1 and {MAX_K}"):
        retriever.invoke(QUESTION, k=k)
    with pytest.raises(ValueError, match="k"):
        StyringsbotRetriever(retriever=retriever.retriever, k=k)


@pytest.mark.parametrize("k", ["3", 2.0, True])
def test_k_that_is_not_an_integer_is_refused(retriever, k: object) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="k must be an integer"):
        retriever.invoke(QUESTION, k=k)
    with pytest.raises(ValueError, match="k"):
        StyringsbotRetriever(retriever=retriever.retriever, k=k)


def test_unknown_keyword_is_refused(retriever) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="top_k"):
        retriever.invoke(QUESTION, top_k=1)
