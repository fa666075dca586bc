"""The question-answering core, opened once per process: index + embedder → retrieve → answer."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot.abstention import AbstentionModel, QuestionMemory
from bot.answer import Answer, Answerer, Citation
from bot.config import Settings
from bot.guide import Cite, Guide
from bot.query import FollowUpContext, QueryPlan
from bot.reader import Reader, ReaderModel, Reading
from bot.retrieval import Retriever, SearchResult
from ingest.embeddings import Embedder, shared
from ingest.remote import IngestLocked, RemoteStore, sync_local
from ingest.store import (
    STATE_FILE,
    Index,
    IndexMissing,
    IndexState,
    chroma_client,
    guide_files_of,
)

if TYPE_CHECKING:
    from bot.generate import Generator
    from bot.intro import Course
    from ingest.pipeline import SyncReport

log = logging.getLogger(__name__)

# How long a running bot waits before it tries again to open a new index it could not open.
RETRY_SECONDS = 30.0
# How often a replica looks for a new generation on the Chroma server.
FOLLOW_SECONDS = 2.0
# How long a replica waits for another process to build the first index.
BUILD_WAIT_SECONDS = 3600.0


def _remote_store(settings: Settings) -> RemoteStore | None:
    if not settings.chroma_host:
        return None
    return RemoteStore(chroma_client(settings.data_dir, settings.chroma_host, settings.chroma_port))


def _wait_for_index(remote: RemoteStore, settings: Settings) -> bool:
    """Wait until another process has published the first index, and copy it here. False when
    that process let go of the ingest lock without publishing (it failed or was stopped)."""
    holder = remote.locked() or "ukjent prosess"
    log.warning("Waiting for the ingest on %s to build the index on the Chroma server", holder)
    print(
        f"Venter på at ingesten på {holder} bygger indeksen på Chroma-serveren …",
        file=sys.stderr,
        flush=True,
    )
    deadline = time.monotonic() + BUILD_WAIT_SECONDS
    while time.monotonic() < deadline:
        if sync_local(remote, settings.data_dir) is not None:
            return True
        if remote.locked() is None:
            return sync_local(remote, settings.data_dir) is not None
        time.sleep(1.0)
    raise IndexMissing("Ingen indeks ble bygd i løpet av en time; kjør «styringsbot ingest».")


def sync_index(settings: Settings, **options: Any) -> SyncReport:
    """Bring the configured index in line with the configured knowledge folder."""
    from ingest.pipeline import sync  # loaders and splitters: not needed to answer questions

    return sync(
        settings.knowledge_dir,
        settings.data_dir,
        settings.embedder_spec,
        sentence_vectors=settings.sentence_vectors,
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
        self._closed = threading.Event()
        self.generator: Generator | None = None
        if settings.llm:
            from bot.generate import Generator, chat_model
            from bot.verifier import VerifierModel

            verifier = VerifierModel.for_index(settings.data_dir, embedder.id)
            self.generator = Generator(
                chat_model(settings), embedder, verifier, lambda: self.retriever.idf
            )
        # Why the newest index.json could not be taken into use (None: the newest is in use).
        self.index_problem: str | None = None
        self._failed_stamp = 0
        self._retry_at = 0.0
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
    def course(self) -> Course | None:
        """The onboarding course kept with the index generation in use (None: there is none)."""
        return self._core.retriever.guide.course

    def cited(self, cites: Sequence[Cite]) -> tuple[list[Citation], dict[Cite, int]]:
        """The indexed passages that hold these quotes, as citations numbered from 1 (one for
        each passage, quoting every one of the quotes it holds), and which number each quote
        got. A quote the index does not hold is left out (ingest warned about it)."""
        core = self._core
        chunks = core.index.chunks
        numbers: dict[Cite, int] = {}
        by_chunk: dict[int, list[Cite]] = {}
        for cite in cites:
            position = core.retriever.locate(cite)
            if position is not None:
                by_chunk.setdefault(position, []).append(cite)
        citations = []
        for n, (position, held) in enumerate(by_chunk.items(), 1):
            chunk = chunks[position]
            citations.append(
                Citation(
                    n=n,
                    title=chunk.title,
                    source=chunk.source,
                    location=chunk.location,
                    text=chunk.text,
                    quote=" … ".join(c.quote for c in held),
                    chunk_id=chunk.id,
                )
            )
            numbers.update(dict.fromkeys(held, n))
        return citations, numbers

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
        """Open the index; on a fresh checkout optionally build it first (with progress).

        With a Chroma server (CHROMA_HOST) the index is the one published there: it is copied
        into the data dir first, and a background thread keeps the copy current, so this
        replica follows every new generation. A replica never builds the index while another
        process holds the ingest lock: it waits for that process to publish, and says so."""
        spec = settings.embedder_spec
        remote = _remote_store(settings)
        if remote is not None:
            sync_local(remote, settings.data_dir)
        try:
            index = Index.open(
                settings.data_dir, spec.id, settings.chroma_host, settings.chroma_port
            )
            embedder = embedder or spec.build()
        except IndexMissing:
            if not build_if_missing:
                raise
            embedder = spec.build()
            # Build it here unless another process holds the ingest lock; then wait for what it
            # publishes, and build here after all if it lets go of the lock without publishing.
            while True:
                if remote is not None and remote.locked():
                    if _wait_for_index(remote, settings):
                        break
                    continue  # let go without publishing: build here if the lock stays free
                if on_build:
                    on_build()
                try:
                    sync_index(settings, progress=progress, embedder=embedder)
                    break
                except IngestLocked:  # another replica started building first: wait for it
                    continue
            index = Index.open(
                settings.data_dir, spec.id, settings.chroma_host, settings.chroma_port
            )
        embedder = shared(embedder, spec)
        engine = cls(settings, embedder, _core(settings, index, embedder))
        if remote is not None:
            engine._follow_remote(remote)
        return engine

    def _follow_remote(self, remote: RemoteStore) -> None:
        """Keep the data dir a copy of the server's current generation (a daemon thread); the
        next question then switches to it (`follow_index`)."""

        def follow() -> None:
            failing = False
            while not self._closed.wait(FOLLOW_SECONDS):
                try:
                    sync_local(remote, self.settings.data_dir)
                    failing = False
                except Exception as exc:
                    if not failing:  # one line when it starts failing, not one per poll
                        log.warning(
                            "Cannot read the index on the Chroma server (%s); still answering "
                            "from generation %d",
                            exc,
                            self.generation[1],
                        )
                    failing = True

        threading.Thread(target=follow, name="index-follower", daemon=True).start()

    def close(self) -> None:
        """Stop following the index on the Chroma server (nothing else needs closing)."""
        self._closed.set()

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
        from the new documents without a restart (the old generation is deleted by ingest).

        A new generation is taken into use only whole: its collection, chunks and guide all
        open, or the bot keeps answering from the one it has and logs one line (the reason is
        in `index_problem` until a generation opens); it tries again after RETRY_SECONDS."""
        try:
            stamp = (self.settings.data_dir / STATE_FILE).stat().st_mtime_ns
        except OSError:
            return False
        if stamp == self._state_stamp:
            return False
        with self._switch:  # one worker reopens; the others wait for it and find it done
            if stamp == self._state_stamp:
                return False
            if stamp == self._failed_stamp and time.monotonic() < self._retry_at:
                return False
            try:
                state = IndexState.read(self.settings.data_dir)
                if state is None or (state.index_id, state.generation) == self.generation:
                    self._state_stamp = stamp  # rewritten, but the generation in use is newest
                    self.index_problem = None
                    return False
                index = Index.open(
                    self.settings.data_dir,
                    self.settings.embedder_spec.id,
                    self.settings.chroma_host,
                    self.settings.chroma_port,
                )
                core = _core(self.settings, index, self.embedder)
            except Exception as exc:  # whatever it is, the generation in use keeps answering
                self._refuse(stamp, exc)
                return False
            self._core = core
            self._state_stamp = stamp
            self.index_problem = None
        log.info("Switched to index generation %d", state.generation)
        return True

    def _refuse(self, stamp: int, exc: Exception) -> None:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        self.index_problem = f"{exc.__class__.__name__}: {reason}" if reason else repr(exc)
        if stamp != self._failed_stamp:  # one line per new index.json, not one per question
            log.warning(
                "The new index cannot be used (%s); still answering from generation %d",
                self.index_problem,
                self.generation[1],
            )
        self._failed_stamp = stamp
        self._retry_at = time.monotonic() + RETRY_SECONDS

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
        if self.generator is not None:  # a language model is configured: its words, verified
            answer, _ = self.generator.answer(answer, context)
        return Trace(plan, result, reading, answer)


def _core(settings: Settings, index: Index, embedder: Embedder) -> Core:
    abstention = AbstentionModel.for_index(settings.data_dir, embedder.id)
    # The guide ingest checked and kept with this generation; the knowledge folder's own files
    # only for an index written before guides were kept (they may be mid-edit by now).
    kept = guide_files_of(settings.data_dir, index.state)
    guide = Guide.from_files(kept) if kept is not None else Guide.load(settings.knowledge_dir)
    retriever = Retriever(index, embedder, guide=guide)
    reader = retriever.reader(ReaderModel.for_index(settings.data_dir, embedder.id))
    memory = QuestionMemory.for_index(settings.data_dir, embedder.id)
    return Core(index, retriever, reader, Answerer(abstention, memory=memory))


@dataclass(frozen=True)
class Trace:
    """What each stage made of one question: the query plan, the ranked passages, the reader's
    sentences and the answer (with the abstention signals it weighed)."""

    plan: QueryPlan
    result: SearchResult
    reading: Reading
    answer: Answer
