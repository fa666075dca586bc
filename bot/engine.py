"""The question-answering core, opened once per process: index + embedder → retrieve → answer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot.abstention import AbstentionModel
from bot.answer import Answer, Answerer
from bot.config import Settings
from bot.guide import Guide
from bot.query import FollowUpContext, QueryPlan
from bot.reader import Reader, ReaderModel, Reading
from bot.retrieval import Retriever, SearchResult
from ingest.embeddings import Embedder, shared
from ingest.store import STATE_FILE, Index, IndexMissing, IndexState, IndexStoreError

if TYPE_CHECKING:
    from ingest.pipeline import SyncReport

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Core:
    """The parts that answer from one index generation; swapped as one when ingest writes a new
    generation, so a question never mixes two."""

    index: Index
    retriever: Retriever
    reader: Reader
    answerer: Answerer


class Engine:
    """Opens the index and the model once; answers questions from any thread."""

    def __init__(self, settings: Settings, embedder: Embedder, core: Core) -> None:
        self.settings = settings
        self.embedder = embedder
        self._core = core
        self._switch = threading.Lock()
        try:
            self._state_stamp = (self.settings.data_dir / STATE_FILE).stat().st_mtime_ns
        except OSError:
            self._state_stamp = 0

    # The current generation's parts (assigning one replaces it in a new Core: benchmarks and
    # calibration swap a part in place).
    @property
    def index(self) -> Index:
        return self._core.index

    @property
    def retriever(self) -> Retriever:
        return self._core.retriever

    @retriever.setter
    def retriever(self, value: Retriever) -> None:
        self._core = replace(self._core, retriever=value)

    @property
    def reader(self) -> Reader:
        return self._core.reader

    @reader.setter
    def reader(self, value: Reader) -> None:
        self._core = replace(self._core, reader=value)

    @property
    def answerer(self) -> Answerer:
        return self._core.answerer

    @property
    def generation(self) -> tuple[str, int]:
        """Which index answers: (index id, generation)."""
        state = self._core.index.state
        return state.index_id, state.generation

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        build_if_missing: bool = False,
        on_build: Callable[[], None] | None = None,
        progress: bool = True,
        embedder: Embedder | None = None,
    ) -> Engine:
        """Open the index; on a fresh checkout optionally build it first (with progress)."""
        spec = settings.embedder_spec
        try:
            index = Index.open(
                settings.data_dir, spec.id, settings.chroma_host, settings.chroma_port
            )
            embedder = embedder or spec.build()
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
        embedder = shared(embedder, spec)
        return cls(settings, embedder, _core(settings, index, embedder))

    def ask(
        self, question: str, k: int | None = None, context: FollowUpContext | None = None
    ) -> Answer:
        """Answer one question; `context` (the earlier turn) lets a follow-up be understood."""
        self.follow_index()
        try:
            return self._ask(question, k, context)
        except Exception:
            if self.follow_index():  # `ingest` replaced the index while this question ran
                return self._ask(question, k, context)
            raise

    def follow_index(self) -> bool:
        """Reopen the index if `ingest` has written a new one since; a running bot then answers
        from the new documents without a restart (the old generation is deleted by ingest)."""
        try:
            stamp = (self.settings.data_dir / STATE_FILE).stat().st_mtime_ns
        except OSError:
            return False
        if stamp == self._state_stamp:
            return False
        with self._switch:  # one worker reopens; the others wait for it and find it done
            if stamp == self._state_stamp:
                return False
            self._state_stamp = stamp
            try:
                state = IndexState.read(self.settings.data_dir)
            except IndexStoreError:
                return False
            if state is None or (state.index_id, state.generation) == self.generation:
                return False
            try:
                index = Index.open(
                    self.settings.data_dir,
                    self.settings.embedder_spec.id,
                    self.settings.chroma_host,
                    self.settings.chroma_port,
                )
                self._core = _core(self.settings, index, self.embedder)
            except IndexStoreError as exc:
                log.warning("The index changed but cannot be opened yet: %s", exc)
                return False
        log.info("Switched to index generation %d", state.generation)
        return True

    def _ask(self, question: str, k: int | None, context: FollowUpContext | None) -> Answer:
        return self.trace(question, k, context).answer

    def trace(
        self, question: str, k: int | None = None, context: FollowUpContext | None = None
    ) -> Trace:
        """One question through every stage, each stage's result kept (for `explain`)."""
        k = k or self.settings.top_k
        core = self._core  # one generation for the whole question
        plan = core.retriever.plan(question, context)
        result = core.retriever.search(plan, k=k)
        reading = core.reader.read(result)
        answer = core.answerer.answer(result, reading)
        answer.question = question
        return Trace(plan, result, reading, answer)


def _core(settings: Settings, index: Index, embedder: Embedder) -> Core:
    abstention = AbstentionModel.for_index(settings.data_dir, embedder.id)
    guide = Guide.load(settings.knowledge_dir)
    retriever = Retriever(index, embedder, guide=guide)
    reader = retriever.reader(ReaderModel.for_index(settings.data_dir, embedder.id))
    return Core(index, retriever, reader, Answerer(abstention))


@dataclass(frozen=True)
class Trace:
    """What each stage made of one question: the query plan, the ranked passages, the reader's
    sentences and the answer (with the abstention signals it weighed)."""

    plan: QueryPlan
    result: SearchResult
    reading: Reading
    answer: Answer
