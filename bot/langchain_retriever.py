"""The hybrid retriever as a LangChain retriever, for chains and agents built on LangChain.

`invoke(question)` returns the ranked passages as Documents: `Document.id` is the chunk id, and
the metadata carries the citation (id, title, source, location, heading, score). The number of
passages is `k`, set on the retriever or per call (`invoke(question, k=3)`). It passes LangChain's
standard retriever tests (tests/test_langchain_standard.py).
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field

from bot.retrieval import Retriever

MAX_K = 50  # the most passages one call returns, as for STYRINGSBOT_TOP_K


def _checked_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
    return k


class StyringsbotRetriever(BaseRetriever):
    """`invoke(question, k=…)` returns the ranked passages as Documents with citation metadata."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any  # bot.retrieval.Retriever; typed loosely so pydantic does not inspect it
    k: int = Field(5, ge=1, le=MAX_K, strict=True)  # passages per call unless the call says

    @classmethod
    def from_retriever(cls, retriever: Retriever, k: int = 5) -> StyringsbotRetriever:
        return cls(retriever=retriever, k=k)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
    ) -> list[Document]:
        result = self.retriever.search(query, k=self.k if k is None else _checked_k(k))
        return [
            Document(
                id=p.chunk.id,
                page_content=p.text,
                metadata={
                    "id": p.chunk.id,  # also in metadata, as before Document.id was set
                    "title": p.title,
                    "source": p.chunk.source,
                    "location": p.location,
                    "heading": p.chunk.heading,
                    "score": p.score,
                },
            )
            for p in result.passages
        ]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
    ) -> list[Document]:
        # The search is CPU-bound: run it off the event loop (the base class would drop `k`).
        return await run_in_executor(
            None,
            self._get_relevant_documents,
            query,
            run_manager=run_manager.get_sync(),
            k=k,
        )
