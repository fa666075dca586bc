"""Hybrid retrieval: dense (Chroma) and lexical (BM25) candidates, fused into ranked passages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bot.language import detect as detect_language
from ingest.embeddings import Embedder
from ingest.lexical import tokenize
from ingest.model import Chunk
from ingest.store import Index, lexical_text

# Reciprocal-rank fusion constant and candidate depth on each side; set on the dev set
# (see README, "How it works").
RRF_K = 60
CANDIDATES = 30


@dataclass(frozen=True)
class Passage:
    """A ranked chunk with the evidence behind its rank."""

    chunk: Chunk
    score: float  # fused score: what the ranking is by
    dense: float  # cosine similarity of query and passage
    lexical: float  # BM25 score
    coverage: float  # IDF-weighted share of the query's terms found in the passage

    @property
    def title(self) -> str:
        return self.chunk.title

    @property
    def location(self) -> str | None:
        return self.chunk.location

    @property
    def text(self) -> str:
        return self.chunk.text


@dataclass(frozen=True)
class Signals:
    """What the abstention rule weighs: does anything in the index answer this question?"""

    dense_top: float = 0.0  # best cosine similarity among the candidates
    coverage_top3: float = 0.0  # best IDF-weighted query-term coverage among the first three
    unknown_share: float = 1.0  # IDF-weighted share of query terms that occur nowhere in the index
    english: bool = False

    def as_vector(self) -> list[float]:
        return [self.dense_top, self.coverage_top3, self.unknown_share, float(self.english)]


@dataclass
class SearchResult:
    query: str
    passages: list[Passage] = field(default_factory=list)
    signals: Signals = field(default_factory=Signals)
    language: str = "nb"
    term_weights: dict[str, float] = field(default_factory=dict)  # stemmed query term → IDF


class Retriever:
    """Finds the passages that answer a question; knows nothing about channels or answers."""

    def __init__(self, index: Index, embedder: Embedder, candidates: int = CANDIDATES) -> None:
        self.index = index
        self.embedder = embedder
        self.candidates = candidates
        self._chunk_terms = [set(tokenize(lexical_text(c))) for c in index.chunks]
        n = max(len(index.chunks), 1)
        df: dict[str, int] = {}
        for terms in self._chunk_terms:
            for term in terms:
                df[term] = df.get(term, 0) + 1
        self._idf = {t: float(np.log(1 + (n - d + 0.5) / (d + 0.5))) for t, d in df.items()}
        self._unseen_idf = float(np.log(1 + (n + 0.5) / 0.5))

    def search(self, query: str, k: int = 5) -> SearchResult:
        query = query.strip()
        language = detect_language(query)
        if not query or not self.index.chunks:
            return SearchResult(query, language=language)
        dense = self.index.dense(self.embedder.embed_query(query), self.candidates)
        lexical_scores = self.index.lexical.scores(query)
        order = np.argsort(-lexical_scores, kind="stable")[: self.candidates]
        lexical = [(int(i), float(lexical_scores[i])) for i in order if lexical_scores[i] > 0]

        fused: dict[int, float] = {}
        for rank, (position, _) in enumerate(dense):
            fused[position] = fused.get(position, 0.0) + 1.0 / (RRF_K + rank + 1)
        for rank, (position, _) in enumerate(lexical):
            fused[position] = fused.get(position, 0.0) + 1.0 / (RRF_K + rank + 1)

        dense_by_position = dict(dense)
        query_terms = set(tokenize(query))
        ranked = sorted(fused.items(), key=lambda item: -item[1])[: max(k, 3)]
        passages = [
            Passage(
                chunk=self.index.chunks[position],
                score=score,
                dense=dense_by_position.get(position, 0.0),
                lexical=float(lexical_scores[position]),
                coverage=self._coverage(query_terms, position),
            )
            for position, score in ranked
        ]
        signals = Signals(
            dense_top=max((score for _, score in dense), default=0.0),
            coverage_top3=max((p.coverage for p in passages[:3]), default=0.0),
            unknown_share=self._unknown_share(query_terms),
            english=language == "en",
        )
        return SearchResult(query, passages[:k], signals, language, self._weights(query_terms))

    def _weights(self, query_terms: set[str]) -> dict[str, float]:
        return {t: self._idf.get(t, self._unseen_idf) for t in query_terms}

    def _unknown_share(self, query_terms: set[str]) -> float:
        if not query_terms:
            return 1.0
        weights = self._weights(query_terms)
        unknown = sum(w for t, w in weights.items() if t not in self._idf)
        return unknown / sum(weights.values())

    def _coverage(self, query_terms: set[str], position: int) -> float:
        if not query_terms:
            return 0.0
        weights = self._weights(query_terms)
        found = sum(w for t, w in weights.items() if t in self._chunk_terms[position])
        return found / sum(weights.values())
