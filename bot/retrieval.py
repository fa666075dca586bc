"""Hybrid retrieval: dense (Chroma) and lexical (BM25) candidates, fused into ranked passages."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bot.guide import Cite, Criterion, Guide, GuideMatch
from bot.language import detect as detect_language
from ingest.embeddings import Embedder
from ingest.lexical import Analyzer
from ingest.model import Chunk
from ingest.store import Index, lexical_text


@dataclass(frozen=True)
class Ranking:
    """How the dense and lexical candidates are fused, and what the role guide adds.

    Score fusion: the dense cosine as a z-score over the dense candidates, plus `lexical_weight`
    times the BM25 score relative to the best BM25 score. Reciprocal-rank fusion ("rrf") is kept
    for comparison. Set on the dev and calibration sets with `benchmarks/ablation.py`.
    """

    fusion: str = "score"  # "score" | "rrf"
    candidates: int = 30  # depth of each candidate list
    lexical_weight: float = 3.0
    # The best-matching sentence of a passage, beside the passage as a whole: a short answer
    # inside a long slide is found.
    sentence_weight: float = 1.0
    # English questions share few words with Norwegian passages: the multilingual dense side leads.
    lexical_weight_english: float = 1.0
    rrf_k: int = 60
    expand: bool = True  # search with the glossary's Norwegian terms for abbreviations/English
    pin: bool = True  # put the passages the role guide cites for this question first


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
    guide: GuideMatch = field(default_factory=GuideMatch)
    pinned: int = 0  # how many of the first passages the role guide put there
    guide_cites: list[tuple[Cite, str]] = field(default_factory=list)  # (quote, chunk id)
    criteria: list[Criterion] = field(default_factory=list)  # for a classification question
    analyzer: Analyzer | None = None


class Retriever:
    """Finds the passages that answer a question; knows nothing about channels or answers."""

    def __init__(
        self,
        index: Index,
        embedder: Embedder,
        ranking: Ranking | None = None,
        guide: Guide | None = None,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.ranking = ranking or Ranking()
        self.guide = guide or Guide()
        # Resolved once: a question's guide passages are then dictionary look-ups.
        self._cite_positions = self.guide.locate([(c.source, c.text) for c in index.chunks])
        self.analyzer = index.lexical.analyzer
        self._chunk_terms = [set(self.analyzer.terms(lexical_text(c))) for c in index.chunks]
        n = max(len(index.chunks), 1)
        df: dict[str, int] = {}
        for terms in self._chunk_terms:
            for term in terms:
                df[term] = df.get(term, 0) + 1
        self._idf = {t: float(np.log(1 + (n - d + 0.5) / (d + 0.5))) for t, d in df.items()}
        self._unseen_idf = float(np.log(1 + (n + 0.5) / 0.5))

    def locate(self, cite: Cite) -> int | None:
        """Position of the indexed passage that holds a quote of the role guide, if any."""
        return self._cite_positions.get(cite)

    def search(self, query: str, k: int = 5, follow_up: str | None = None) -> SearchResult:
        """Rank passages for `query`; with `follow_up`, `query` is the earlier question(s) and
        the follow-up together, and the guide reads the follow-up for what is asked now."""
        context = query.strip()
        follow_up = follow_up.strip() if follow_up else None
        query = f"{context} {follow_up}" if follow_up else context
        language = detect_language(query)
        if not query or not self.index.chunks:
            return SearchResult(query, language=language)
        ranking = self.ranking
        match = (
            self.guide.match_follow_up(context, follow_up) if follow_up else self.guide.match(query)
        )
        search_text = f"{query} {match.expansion}" if ranking.expand and match.expansion else query
        query_vector = self.embedder.embed_query(search_text)
        dense = self.index.dense(query_vector, ranking.candidates)
        sentence_scores = self.index.sentence_scores(query_vector)
        lexical_scores = self.index.lexical.scores(search_text)
        order = np.argsort(-lexical_scores, kind="stable")[: ranking.candidates]
        lexical = [(int(i), float(lexical_scores[i])) for i in order if lexical_scores[i] > 0]
        lexical_weight = (
            ranking.lexical_weight_english if language == "en" else ranking.lexical_weight
        )
        if ranking.fusion == "rrf":
            fused = _rrf(dense, lexical, lexical_weight, ranking.rrf_k)
        else:
            sentences = None
            if sentence_scores is not None and ranking.sentence_weight:
                sentences = [(p, float(sentence_scores[p])) for p, _ in dense]
            fused = _score_fusion(
                dense, lexical, lexical_weight, sentences, ranking.sentence_weight
            )

        ranked = sorted(fused, key=lambda position: -fused[position])
        # The passage the guide leans on most for this question first, then by relevance.
        cites = self._cites(match) if ranking.pin else []
        pins = Counter(position for _, position in cites)
        pinned = sorted(pins, key=lambda p: (-pins[p], -fused.get(p, float("-inf"))))
        ranked = pinned + [p for p in ranked if p not in pinned]
        ranked = ranked[: max(k, 3)]

        dense_by_position = dict(dense)
        query_terms = set(self.analyzer.terms(search_text))
        passages = [
            Passage(
                chunk=self.index.chunks[position],
                score=fused.get(position, 0.0),
                dense=dense_by_position.get(position, 0.0),
                lexical=float(lexical_scores[position]),
                coverage=self._coverage(query_terms, position),
            )
            for position in ranked
        ]
        signals = Signals(
            dense_top=max((score for _, score in dense), default=0.0),
            coverage_top3=max((p.coverage for p in passages[:3]), default=0.0),
            unknown_share=self._unknown_share(query_terms),
            english=language == "en",
        )
        return SearchResult(
            query,
            passages[:k],
            signals,
            language,
            self._weights(query_terms),
            guide=match,
            pinned=min(len(pinned), k),
            guide_cites=[(cite, self.index.chunks[p].id) for cite, p in cites],
            criteria=self.guide.criteria if match.classify else [],
            analyzer=self.analyzer,
        )

    def _cites(self, match: GuideMatch) -> list[tuple[Cite, int]]:
        """The role guide's quotes for what this question asks, with the passages holding them."""
        cites: list[Cite] = []
        if match.classify:
            for card in match.cards:
                if "role" in card.fields:
                    cites.extend(card.fields["role"].cites)
            for criterion in self.guide.criteria:
                cites.extend(criterion.cites)
        elif match.definition is not None:
            cites.append(match.definition.cite)
        else:
            for card in match.cards:
                for name in match.fields:
                    if name in card.fields:
                        cites.extend(card.fields[name].cites)
        located = [(cite, self.locate(cite)) for cite in cites]
        return [(cite, p) for cite, p in located if p is not None]

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


def _rrf(
    dense: list[tuple[int, float]], lexical: list[tuple[int, float]], weight: float, k: int
) -> dict[int, float]:
    fused: dict[int, float] = {}
    for side_weight, candidates in ((1.0, dense), (weight, lexical)):
        for rank, (position, _) in enumerate(candidates):
            fused[position] = fused.get(position, 0.0) + side_weight / (k + rank + 1)
    return fused


def _zscores(scores: list[tuple[int, float]]) -> tuple[dict[int, float], float]:
    values = np.array([score for _, score in scores], dtype=float)
    if not len(values):
        return {}, 0.0
    mean, spread = float(values.mean()), float(values.std()) or 1.0
    z = {position: (score - mean) / spread for position, score in scores}
    return z, (float(values.min()) - mean) / spread


def _score_fusion(
    dense: list[tuple[int, float]],
    lexical: list[tuple[int, float]],
    weight: float,
    sentences: list[tuple[int, float]] | None = None,
    sentence_weight: float = 0.0,
) -> dict[int, float]:
    """z-scored cosine (over the dense candidates), plus the z-scored best-sentence cosine, plus
    weight × BM25 relative to the best BM25 score."""
    fused, floor = _zscores(dense)
    if sentences:
        sentence_z, sentence_floor = _zscores(sentences)
        for position in fused:
            fused[position] += sentence_weight * sentence_z[position]
        floor += sentence_weight * sentence_floor
    best = max((score for _, score in lexical), default=0.0) or 1.0
    for position, score in lexical:
        fused[position] = fused.get(position, floor) + weight * score / best
    return fused
