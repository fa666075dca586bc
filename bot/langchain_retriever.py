"""The hybrid retriever as a LangChain retriever, for chains and agents built on LangChain."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from bot.retrieval import Retriever


class StyringsbotRetriever(BaseRetriever):
    """`invoke(question)` returns the ranked passages as Documents with citation metadata."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any  # bot.retrieval.Retriever; typed loosely so pydantic does not inspect it
    k: int = 5

    @classmethod
    def from_retriever(cls, retriever: Retriever, k: int = 5) -> StyringsbotRetriever:
        return cls(retriever=retriever, k=k)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        result = self.retriever.search(query, k=self.k)
        return [
            Document(
                page_content=p.text,
                metadata={
                    "id": p.chunk.id,
                    "title": p.title,
                    "source": p.chunk.source,
                    "location": p.location,
                    "heading": p.chunk.heading,
                    "score": p.score,
                },
            )
            for p in result.passages
        ]
