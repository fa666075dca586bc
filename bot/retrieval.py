"""Hybrid retrieval: dense (Chroma) and lexical (BM25) candidates, fused into ranked passages."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bot.guide import Card, Cite, Criterion, Guide, GuideMatch
from bot.language import Lexicon
from bot.query import AnswerType, FollowUpContext, QueryPlan, Speller
from bot.query import plan as make_plan
from bot.reader import Reader, ReaderModel, count_focus
from ingest.clean import shorten
from ingest.embeddings import Embedder
from ingest.lexical import Analyzer
from ingest.model import Chunk
from ingest.store import Index


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
    # English questions: the lexicon's Norwegian words join the lexical search, and the dense
    # query is the question's vector plus this many times that of its Norwegian words,
    # normalized ("chain of command" reaches «linjeprinsippet»).
    translate: bool = True
    translation_blend: float = 1.0
    # A follow-up: the passages the earlier answer cited get this much of a head start.
    earlier_weight: float = 1.0
    spelling: bool = True  # mend misspelt words into the index's own


@dataclass(frozen=True)
class Passage:
    """A ranked chunk with the evidence behind its rank."""

    chunk: Chunk
    score: float  # fused score: what the ranking is by
    dense: float  # cosine similarity of query and passage
    lexical: float  # BM25 score
    coverage: float  # IDF-weighted share of the query's terms found in the passage
    sentence: float = 0.0  # cosine of the query with the passage's best-matching sentence
    pinned: bool = False  # the role guide put it first

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
    # The question names something (a capitalised word inside it: "Bergen", "GDPR") that occurs
    # nowhere in the index, after spelling and translation: the documents say nothing of it.
    unknown_name: bool = False

    def as_vector(self) -> list[float]:
        return [self.dense_top, self.coverage_top3, self.unknown_share, float(self.english)]


@dataclass
class SearchResult:
    query: str
    plan: QueryPlan | None = None
    passages: list[Passage] = field(default_factory=list)
    signals: Signals = field(default_factory=Signals)
    language: str = "nb"
    term_weights: dict[str, float] = field(default_factory=dict)  # stemmed query term → IDF
    known_terms: frozenset[str] = frozenset()  # of those, the ones the index has
    guide: GuideMatch = field(default_factory=GuideMatch)
    pinned: int = 0  # how many of the first passages the role guide put there
    guide_cites: list[tuple[Cite, str]] = field(default_factory=list)  # (quote, chunk id)
    # Every located quote of the named cards' fields: (card, field name, quote, chunk id).
    card_quotes: list[tuple[Card, str, Cite, str]] = field(default_factory=list)
    criteria: list[Criterion] = field(default_factory=list)  # for a classification question
    analyzer: Analyzer | None = None
    query_vector: np.ndarray | None = None
    expansion: str = ""  # Norwegian words searched with the question (glossary, lexicon)
    focus: str = ""  # what a "hvor mange …?" question counts, in the documents' language


# A capitalised word inside a sentence (after a word or a comma and a space, or an opening
# parenthesis or quote).
_NAME = re.compile(r"(?:(?<=[\w,;] )|(?<=[(«'\"]))[A-ZÆØÅ][\wæøåÆØÅ]{2,}")

# What of a question the model reads (BM25 reads it all). The model's time grows faster than the
# text: 15 ms for a question of 50 characters, 0.16 s for 300, 0.85 s for 1000, so a long message
# would hold a worker for long; the questions of every set here are under 130 characters.
DENSE_CHARS = 400


class Retriever:
    """Finds the passages that answer a question; knows nothing about channels or answers."""

    def __init__(
        self,
        index: Index,
        embedder: Embedder,
        ranking: Ranking | None = None,
        guide: Guide | None = None,
        lexicon: Lexicon | None = None,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.ranking = ranking or Ranking()
        self.guide = guide or Guide()
        # Resolved once: a question's guide passages are then dictionary look-ups.
        self._cite_positions = self.guide.locate([(c.source, c.text) for c in index.chunks])
        self.analyzer = index.lexical.analyzer
        # Read from the lexical index's postings, not by analyzing every chunk again (which took
        # 8 of the 12 seconds of opening an index of 50 000 chunks).
        n = max(len(index.chunks), 1)
        df = index.lexical.document_frequencies()
        self._idf = {t: float(np.log(1 + (n - d + 0.5) / (d + 0.5))) for t, d in df.items()}
        self._unseen_idf = float(np.log(1 + (n + 0.5) / 0.5))
        self.lexicon = lexicon if lexicon is not None else Lexicon.bundled()
        counts = index.lexical.counts
        self.speller = Speller(counts) if counts else None

    @property
    def idf(self) -> tuple[dict[str, float], float]:
        """Each indexed term's IDF, and the IDF of a term the index has never seen."""
        return self._idf, self._unseen_idf

    def reader(self, model: ReaderModel) -> Reader:
        """The answer reader over this index, with the same words and weights as the search."""
        return Reader(self.index, self.analyzer, self._idf, self._unseen_idf, model)

    def locate(self, cite: Cite) -> int | None:
        """Position of the indexed passage that holds a quote of the role guide, if any."""
        return self._cite_positions.get(cite)

    def plan(self, question: str, context: FollowUpContext | None = None) -> QueryPlan:
        """Read a question for searching: language, nynorsk, spelling, answer type."""
        speller = self.speller if self.ranking.spelling else None
        return make_plan(question, speller, context)

    def search(self, query: str | QueryPlan, k: int = 5) -> SearchResult:
        """Rank passages for a question (or its plan; a follow-up's plan carries the earlier
        turn's topic, which is searched with it, and the guide reads the follow-up for what is
        asked now)."""
        plan = query if isinstance(query, QueryPlan) else self.plan(query)
        language = plan.language
        text = plan.search_text.strip()
        if not text or not self.index.chunks:
            return SearchResult(plan.question, plan, language=language)
        ranking = self.ranking
        if plan.context and plan.context.topic:
            match = self.guide.match_follow_up(plan.context.topic, plan.text)
        else:
            match = self.guide.match(plan.text)
        expansion = match.expansion if ranking.expand else ""
        translation = untranslated = ""
        if language == "en" and ranking.translate:
            translation, untranslated = self.lexicon.read(text)
        dense_text = " ".join(part for part in (text, expansion) if part)
        lexical_text_ = " ".join(part for part in (text, expansion, translation) if part)
        query_vector = self.embedder.embed_query(shorten(dense_text, DENSE_CHARS, mark=""))
        if translation and ranking.translation_blend:
            translated = self.embedder.embed_query(shorten(translation, DENSE_CHARS, mark=""))
            blended = query_vector + ranking.translation_blend * translated
            query_vector = blended / (np.linalg.norm(blended) or 1.0)
        dense = self.index.dense(query_vector, ranking.candidates)
        lexical_scores = self.index.lexical.scores(lexical_text_)
        order = np.argsort(-lexical_scores, kind="stable")[: ranking.candidates]
        lexical = [(int(i), float(lexical_scores[i])) for i in order if lexical_scores[i] > 0]
        sentence_scores = self.index.sentence_scores(
            query_vector, [p for p, _ in dense] + [p for p, _ in lexical]
        )
        lexical_weight = (
            ranking.lexical_weight_english if language == "en" else ranking.lexical_weight
        )
        if ranking.fusion == "rrf":
            fused = _rrf(dense, lexical, lexical_weight, ranking.rrf_k)
        else:
            sentences = None
            if sentence_scores is not None and ranking.sentence_weight:
                sentences = [(p, sentence_scores[p]) for p, _ in dense]
            fused = _score_fusion(
                dense, lexical, lexical_weight, sentences, ranking.sentence_weight
            )
        if plan.context and plan.context.cited and ranking.earlier_weight:
            for chunk_id in plan.context.cited:
                position = self.index.position(chunk_id)
                if position is not None and position in fused:
                    fused[position] += ranking.earlier_weight

        ranked = sorted(fused, key=lambda position: -fused[position])
        # The passage the guide leans on most for this question first, then by relevance.
        cites = self._cites(match) if ranking.pin else []
        pins = Counter(position for _, position in cites)
        pinned = sorted(pins, key=lambda p: (-pins[p], -fused.get(p, float("-inf"))))
        ranked = pinned + [p for p in ranked if p not in pinned]
        ranked = ranked[: max(k, 3)]

        if sentence_scores is not None:  # a passage the guide pinned may be neither candidate
            missing = [p for p in ranked if p not in sentence_scores]
            sentence_scores |= self.index.sentence_scores(query_vector, missing) or {}
        dense_by_position = dict(dense)
        # Single words and compound parts: a word pair the index lacks says little about a topic.
        # An English question is weighed by its Norwegian words, and the words without one.
        weighed = " ".join((translation, expansion, untranslated)) if translation else lexical_text_
        query_terms = {t for t in self.analyzer.terms(weighed) if "_" not in t}
        passages = [
            Passage(
                chunk=self.index.chunks[position],
                score=fused.get(position, 0.0),
                dense=dense_by_position.get(position, 0.0),
                lexical=float(lexical_scores[position]),
                coverage=self._coverage(query_terms, position),
                sentence=sentence_scores[position] if sentence_scores is not None else 0.0,
                pinned=position in pins,
            )
            for position in ranked
        ]
        signals = Signals(
            dense_top=max((score for _, score in dense), default=0.0),
            coverage_top3=max((p.coverage for p in passages[:3]), default=0.0),
            unknown_share=self._unknown_share(query_terms),
            english=language == "en",
            unknown_name=self._unknown_name(plan.text, query_terms),
        )
        return SearchResult(
            plan.question,
            plan,
            passages[:k],
            signals,
            language,
            self._weights(query_terms),
            guide=match,
            pinned=min(len(pinned), k),
            guide_cites=[(cite, self.index.chunks[p].id) for cite, p in cites],
            card_quotes=self._card_quotes(match),
            criteria=self.guide.criteria if match.classify else [],
            analyzer=self.analyzer,
            query_vector=query_vector,
            expansion=" ".join(part for part in (expansion, translation) if part),
            focus=self._focus(plan),
            known_terms=frozenset(t for t in query_terms if t in self._idf),
        )

    def _focus(self, plan: QueryPlan) -> str:
        if plan.answer_type is not AnswerType.COUNT:
            return ""
        word = count_focus(plan.text) or ""
        if word and plan.language == "en":
            return self.lexicon.translate(word) or word
        return word

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

    def _card_quotes(self, match: GuideMatch) -> list[tuple[Card, str, Cite, str]]:
        """The quotes of every field of the cards a question names (the reader may find that
        another field than the one the cue words point to answers it)."""
        if match.classify or match.definition is not None:
            return []
        found = []
        for card in match.cards:
            for name, card_field in card.fields.items():
                for cite in card_field.cites:
                    position = self.locate(cite)
                    if position is not None:
                        found.append((card, name, cite, self.index.chunks[position].id))
        return found

    def _weights(self, query_terms: set[str]) -> dict[str, float]:
        return {t: self._idf.get(t, self._unseen_idf) for t in query_terms}

    def _unknown_share(self, query_terms: set[str]) -> float:
        if not query_terms:
            return 1.0
        weights = self._weights(query_terms)
        unknown = sum(w for t, w in weights.items() if t not in self._idf)
        return unknown / sum(weights.values())

    def _unknown_name(self, text: str, query_terms: set[str]) -> bool:
        """Whether a name inside the question (a capitalised word of three letters or more that
        does not open a sentence) is one of its words the index has never seen, nor a word a
        typo away."""
        unknown = {t for t in query_terms if t not in self._idf}
        if not unknown:
            return False
        for name in _NAME.findall(text):
            terms = [t for t in self.analyzer.terms(name) if "_" not in t]
            if any(t in unknown for t in terms) and not (
                self.speller and self.speller.resembles(name)
            ):
                return True
        return False

    def _coverage(self, query_terms: set[str], position: int) -> float:
        if not query_terms:
            return 0.0
        weights = self._weights(query_terms)
        found = sum(w for t, w in weights.items() if self.index.lexical.holds(t, position))
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
