"""The question-answering core, opened once per process: index + embedder → retrieve → answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.abstention import AbstentionModel
from bot.answer import Answer, Answerer
from bot.config import Settings
from bot.guide import Guide
from bot.retrieval import Retriever
from ingest.embeddings import Embedder
from ingest.store import Index, IndexMissing

if TYPE_CHECKING:
    from ingest.pipeline import SyncReport


def sync_index(settings: Settings, **options: Any) -> SyncReport:
    """Bring the configured index in line with the configured knowledge folder."""
    from ingest.pipeline import sync  # loaders and splitters: not needed to answer questions

    return sync(
        settings.knowledge_dir,
        settings.data_dir,
        settings.embedder_spec,
        chroma_host=settings.chroma_host,
        chroma_port=settings.chroma_port,
        **options,
    )


@dataclass
class Engine:
    settings: Settings
    index: Index
    embedder: Embedder
    retriever: Retriever
    answerer: Answerer

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        build_if_missing: bool = False,
        on_build: Callable[[], None] | None = None,
        progress: bool = True,
    ) -> Engine:
        """Open the index; on a fresh checkout optionally build it first (with progress)."""
        spec = settings.embedder_spec
        try:
            index = Index.open(
                settings.data_dir, spec.id, settings.chroma_host, settings.chroma_port
            )
            embedder = spec.build()
        except IndexMissing:
            if not build_if_missing:
                raise
            if on_build:
                on_build()
            embedder = spec.build()
            sync_index(settings, progress=progress, embedder=embedder)
            index = Index.open(
                settings.data_dir, spec.id, settings.chroma_host, settings.chroma_port
            )
        abstention = AbstentionModel.for_index(settings.data_dir, embedder.id)
        guide = Guide.load(settings.knowledge_dir)
        retriever = Retriever(index, embedder, guide=guide)
        return cls(settings, index, embedder, retriever, Answerer(abstention))

    def ask(self, question: str, k: int | None = None, context: str | None = None) -> Answer:
        """Answer one question; `context` (the earlier question) lets a follow-up be understood."""
        k = k or self.settings.top_k
        if context:
            result = self.retriever.search(context, k=k, follow_up=question)
        else:
            result = self.retriever.search(question, k=k)
        answer = self.answerer.answer(result)
        answer.question = question
        return answer
