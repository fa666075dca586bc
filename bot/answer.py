"""Ranked passages and the reader's sentences → an extractive, cited Answer (no LLM), or an honest
"not in the documents" with the nearest passages as related reading."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.abstention import AbstentionModel, QuestionMemory
from bot.guide import FIELDS, Card, Cite
from bot.query import AnswerType, FollowUpContext, bounded_topic
from bot.reader import LEAD_CHARS, READ_PASSAGES, TYPED, Candidate, Reading
from bot.retrieval import Passage, SearchResult
from ingest.clean import fold as normalize

MAX_CITATIONS = 3
MAX_RELATED = 3
CITE_MARGIN = 1.0  # a further passage is cited when its fused score is this close to the best
SUPPORTING = 0.5  # … or when its best sentence scores at least this share of the lead's
MAX_GUIDE_CITATIONS = 4  # a decision aid may lean on one passage more
MAX_CRITERIA = 3  # read during a meeting: the decisive criteria, not all of them
HEDGE = 0.25  # an answer this close above the abstention threshold is not confident
RUNNER_UP = 0.8  # the lead quotes a second sentence scoring at least this share of the best's
RUNNERS_UP = 2  # … looking this far down the reader's list


@dataclass(frozen=True)
class Statement:
    """One thing the answer says, and the citations (by number) it rests on."""

    text: str
    cites: tuple[int, ...] = ()
    verbatim: bool = False  # the source's own words (a quote), not the role guide's

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "cites": list(self.cites), "verbatim": self.verbatim}


@dataclass(frozen=True)
class Citation:
    n: int
    title: str
    source: str
    location: str | None
    text: str  # the whole passage
    quote: str  # the whole sentence(s) of the passage that answer best
    chunk_id: str = ""
    also: tuple[str, ...] = ()  # other passages of the same page this citation quotes

    def to_dict(self) -> dict[str, Any]:
        """A citation in the `ask --json` / HTTP API objects."""
        return {
            "n": self.n,
            "title": self.title,
            "source": self.source,
            "location": self.location,
            "text": self.text,
            "quote": self.quote,
        }


@dataclass(frozen=True)
class Related:
    """A passage shown as "where to look" when the documents do not answer."""

    title: str
    source: str
    location: str | None
    text: str


@dataclass
class Answer:
    """Everything a channel shows of one answer; renderers draw it from these fields alone.

    `statements` is the lead: the role guide's own words (each with the citations it rests on),
    then the quote it rests on (`verbatim`); or the quote alone. `criteria` is a decision aid's
    list. Abstained: no statements, and `related` says where to look.
    """

    question: str
    language: str
    abstained: bool
    statements: list[Statement] = field(default_factory=list)
    criteria: list[Statement] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    related: list[Related] = field(default_factory=list)
    confident: bool = True  # False: the answer opens with a caveat (it may not answer this)
    topic: str = ""  # what the question was about, for a follow-up to build on
    confidence: float = 0.0  # the abstention rule's estimate that the documents answer it
    passages: list[Passage] = field(default_factory=list)  # the ranked candidates
    signals: dict[str, float] = field(default_factory=dict)  # what abstention weighed
    reading: Reading | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        """The answer as plain text (the terminal, and the `answer` of `ask --json`)."""
        from bot.render import plain

        return plain.answer(self)

    @property
    def quote(self) -> Statement | None:
        """The verbatim statement the lead rests on."""
        return next((s for s in self.statements if s.verbatim), None)

    @property
    def lead(self) -> str:
        """The first statement the answer gives as its answer, with the verbatim quote it rests
        on (the quote alone when the answer is a quote)."""
        if self.abstained or not self.statements:
            return ""
        first, quote = self.statements[0], self.quote
        if first.verbatim or quote is None:
            return first.text
        return f"{first.text} «{quote.text}»"

    def follow_up_context(self) -> FollowUpContext:
        """What a follow-up to this answer builds on: its question's topic and what it cited."""
        return FollowUpContext(
            question=self.question,
            topic=self.topic,
            cited=tuple(i for c in self.citations for i in (c.chunk_id, *c.also) if i),
        )

    def to_dict(self) -> dict[str, Any]:
        """The `ask --json` object; other tools depend on these keys."""
        return {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            "confident": not self.abstained and self.confident,
            "lead": self.lead,
            "statements": [s.to_dict() for s in self.statements],
            "criteria": [s.to_dict() for s in self.criteria],
            "citations": [c.to_dict() for c in self.citations],
            "related": [asdict(r) for r in self.related],
            "passages": [
                {
                    "title": p.title,
                    "source": p.chunk.source,
                    "location": p.location,
                    "text": p.text,
                    "score": round(p.score, 6),
                }
                for p in self.passages
            ],
        }

    def to_state(self) -> dict[str, Any]:
        """What the conversation store keeps of an answer: all a channel shows, a follow-up needs
        and feedback records (not the ranked passages or the reader's working)."""
        return {
            "question": self.question,
            "language": self.language,
            "abstained": self.abstained,
            "statements": [asdict(s) for s in self.statements],
            "criteria": [asdict(s) for s in self.criteria],
            "citations": [asdict(c) for c in self.citations],
            "related": [asdict(r) for r in self.related],
            "confident": self.confident,
            "topic": self.topic,
            "confidence": self.confidence,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Answer:
        return cls(
            question=data["question"],
            language=data["language"],
            abstained=data["abstained"],
            statements=[_statement(s) for s in data.get("statements", [])],
            criteria=[_statement(s) for s in data.get("criteria", [])],
            citations=[
                Citation(**{**c, "also": tuple(c.get("also", ()))})
                for c in data.get("citations", [])
            ],
            related=[Related(**r) for r in data.get("related", [])],
            confident=data.get("confident", True),
            topic=data.get("topic", ""),
            confidence=data.get("confidence", 0.0),
        )


def _statement(data: dict[str, Any]) -> Statement:
    return Statement(data["text"], tuple(data.get("cites", ())), bool(data.get("verbatim")))


_YEAR_RANGE = re.compile(r"\b((?:19|20)\d\d)\s*[-–—]\s*((?:19|20)?\d\d)\b")


def years_covered(years: tuple[int, ...], texts: list[str]) -> bool:
    """Whether some passage speaks of each year the question names (a range "2017–2020" covers
    2018); no year named: True."""
    if not years:
        return True
    found: set[int] = set()
    for text in texts:
        found.update(int(y) for y in re.findall(r"\b(?:19|20)\d\d\b", text))
        for start, end in _YEAR_RANGE.findall(text):
            first = int(start)
            last = int(end) if len(end) == 4 else int(start[:2] + end)
            if first <= last <= first + 30:
                found.update(range(first, last + 1))
    return all(year in found for year in years)


def signals_for(
    result: SearchResult, reading: Reading, guided: bool, like_answered: float = 0.0
) -> dict[str, float]:
    """What the abstention rule weighs for one question (`like_answered`: the question memory's
    signal, see `QuestionMemory`)."""
    plan = result.plan
    top = min(max(reading.top_score(), 1e-6), 1 - 1e-6)
    # A year the question names must stand where the reader found its best sentences.
    read = {c.passage for c in reading.candidates[:3]}
    texts = [p.text for i, p in enumerate(result.passages) if i in read]
    return {
        "dense_top": result.signals.dense_top,
        "coverage_top3": result.signals.coverage_top3,
        "unknown_share": result.signals.unknown_share,
        "english": float(result.signals.english),
        "unknown_name": float(result.signals.unknown_name),
        "reader_top": math.log(top / (1 - top)),
        "type_support": reading.type_support(),
        "type_unsupported": float(
            bool(plan) and plan.answer_type in TYPED and reading.type_support() < 0.5
        ),
        "lead_coverage": reading.coverage(),
        "year_missing": float(bool(plan and not years_covered(plan.years, texts))),
        "present": float(bool(plan and plan.present)),
        "errand": float(bool(plan and plan.errand)),
        "guided": float(guided),
        "like_answered": like_answered,
    }


class Answerer:
    """Chooses what to quote and cite; decides when to abstain."""

    def __init__(
        self,
        abstention: AbstentionModel,
        max_citations: int = MAX_CITATIONS,
        memory: QuestionMemory | None = None,
    ) -> None:
        self.abstention = abstention
        self.max_citations = max_citations
        self.memory = memory

    def like_answered(self, result: SearchResult) -> float:
        """The question memory's signal for this question (0 without a memory)."""
        return self.memory.like_answered(result.query_vector) if self.memory else 0.0

    def answer(self, result: SearchResult, reading: Reading) -> Answer:
        language = result.language
        fields = _fields_read(result, reading)
        guided = bool(fields) or (result.pinned > 0 and _guide_answers(result))
        signals = signals_for(result, reading, guided, self.like_answered(result))
        confidence = self.abstention.probability(signals) if result.passages else 0.0
        topic = bounded_topic(_topic(result))
        unanswerable = not result.passages or not reading.best or _unexpanded(result)
        settled = guide_settles(result)
        if unanswerable or (confidence < self.abstention.threshold and not settled):
            return Answer(
                question=result.query,
                language=language,
                abstained=True,
                related=[
                    Related(p.title, p.chunk.source, p.location, p.text)
                    for p in result.passages[:MAX_RELATED]
                ],
                topic=topic,
                confidence=confidence,
                passages=result.passages,
                signals=signals,
                reading=reading,
            )
        if fields:
            cited, quotes = self._fields(result, reading, fields)
        elif guided:
            cited, quotes = self._guided(result, reading)
        else:
            cited, quotes = self._read(result, reading)
        citations, numbers = _citations(cited, quotes)
        statements, criteria = guide_lead(result, numbers, fields) if guided else ([], [])
        statements.append(Statement(quotes[cited[0].chunk.id], (1,), verbatim=True))
        return Answer(
            question=result.query,
            language=language,
            abstained=False,
            statements=statements,
            criteria=criteria,
            citations=citations,
            confident=settled or confidence >= self.abstention.threshold + HEDGE,
            topic=topic,
            confidence=confidence,
            passages=result.passages,
            signals=signals,
            reading=reading,
        )

    def _fields(
        self, result: SearchResult, reading: Reading, fields: list[tuple[Card, str]]
    ) -> tuple[list[Passage], dict[str, str]]:
        """A card field answers: the reader's sentence leads, the other passages that field
        rests on follow."""
        best = reading.best
        assert best is not None
        passages = result.passages
        holding = {
            chunk_id for card, name, _, chunk_id in result.card_quotes if (card, name) in fields
        }
        cited = [passages[best.passage]]
        cited += [p for p in passages if p.chunk.id in holding and p not in cited]
        cited = self._supported(result, reading, cited)
        quotes = _quotes(result, reading, cited)
        quotes[cited[0].chunk.id] = lead_quote(result, reading)
        return cited, quotes

    def _read(self, result: SearchResult, reading: Reading) -> tuple[list[Passage], dict[str, str]]:
        """The lead is the reader's best sentence, wherever it stands; the passages holding the
        next-best sentences follow it."""
        best = reading.best
        assert best is not None
        cited = self._supported(result, reading, [result.passages[best.passage]])
        quotes = _quotes(result, reading, cited)
        quotes[cited[0].chunk.id] = lead_quote(result, reading)
        return cited, quotes

    def _supported(
        self, result: SearchResult, reading: Reading, cited: list[Passage]
    ) -> list[Passage]:
        """Add, in rank order, the passages whose best sentence scores close to the lead's or that
        score close to the best passage, up to the citation limit."""
        passages = result.passages
        best = reading.best
        cited = list(cited[: self.max_citations])
        if best is None:
            return cited
        supported = {
            c.passage for c in reading.candidates[1:] if c.score >= SUPPORTING * best.score
        }
        top = max(p.score for p in passages[:READ_PASSAGES])
        for i, passage in enumerate(passages[:READ_PASSAGES]):
            if len(cited) >= self.max_citations:
                break
            if passage not in cited and (i in supported or passage.score >= top - CITE_MARGIN):
                cited.append(passage)
        return cited

    def _guided(
        self, result: SearchResult, reading: Reading
    ) -> tuple[list[Passage], dict[str, str]]:
        """The guide's passages first, then those scored close to the best one."""
        limit = MAX_GUIDE_CITATIONS if result.guide.classify else self.max_citations
        passages = result.passages
        pinned = passages[: result.pinned]
        rest = passages[len(pinned) :]
        cited = list(pinned[:limit])
        if rest and len(cited) < limit:
            best = rest[0].score
            cited.extend(p for p in rest if p.score >= best - CITE_MARGIN)
        cited = cited[:limit]
        quotes = _guide_quotes(result)
        by_passage = _best_per_passage(reading)
        for i, p in enumerate(passages):
            if p in cited and p.chunk.id not in quotes:
                candidate = by_passage.get(i)
                quotes[p.chunk.id] = candidate.lead if candidate else p.text
        return cited, quotes


def _fields_read(result: SearchResult, reading: Reading) -> list[tuple[Card, str]]:
    """The card fields whose quotes hold the reader's best sentence: the guide's line for such a
    field leads the answer. None when the best sentence is no card's (the reader's own lead)."""
    best = reading.best
    if best is None or not result.card_quotes:
        return []
    chunk_id = result.passages[best.passage].chunk.id
    sentence = normalize(best.text)
    found: list[tuple[Card, str]] = []
    for card, name, cite, cited_chunk in result.card_quotes:
        quote = normalize(cite.quote)
        holds = cited_chunk == chunk_id and (sentence in quote or quote in sentence)
        if holds and (card, name) not in found:
            found.append((card, name))
    asked = [(card, name) for card, name in found if name in result.guide.fields]
    return (asked or found)[:1]


def lead_quote(result: SearchResult, reading: Reading) -> str:
    """The lead as quoted: the best sentence, and the runner-up when it stands in the same
    passage and the reader can barely tell them apart (in the source's order; " … " where the
    source has text between them). Whole sentences only, and short enough to read at a glance."""
    best = reading.best
    assert best is not None
    quote = best.lead
    passage = normalize(result.passages[best.passage].text.replace("\n", " "))
    for runner_up in reading.candidates[1 : RUNNERS_UP + 1]:
        if runner_up.passage != best.passage or runner_up.score < RUNNER_UP * best.score:
            continue
        if normalize(runner_up.text) in normalize(quote) or normalize(quote) in normalize(
            runner_up.lead
        ):
            continue
        if len(quote) + len(runner_up.lead) > LEAD_CHARS:
            break
        first, second = quote, runner_up.lead
        if passage.find(normalize(second)) < passage.find(normalize(first)):
            first, second = second, first
        adjacent = normalize(f"{first} {second}") in passage
        quote = f"{first} {second}" if adjacent else f"{first} … {second}"
        break
    return quote


def _quotes(result: SearchResult, reading: Reading, cited: list[Passage]) -> dict[str, str]:
    """Each cited passage's quote: the lead of its best sentence."""
    by_passage = _best_per_passage(reading)
    quotes = {}
    for i, p in enumerate(result.passages):
        if p in cited:
            candidate = by_passage.get(i)
            quotes[p.chunk.id] = candidate.lead if candidate else p.text
    return quotes


def _best_per_passage(reading: Reading) -> dict[int, Candidate]:
    """Each passage's best sentence, a statement rather than a bare heading where it has one."""
    best: dict[int, Candidate] = {}
    for candidate in reading.candidates:
        current = best.get(candidate.passage)
        if current is None or (current.features["heading"] and not candidate.features["heading"]):
            best[candidate.passage] = candidate
    return best


def _topic(result: SearchResult) -> str:
    """What a follow-up to this question is about: the meeting forms, documents and terms the
    guide found, else the question's rarest words that the documents have (the earlier topic
    when it names nothing). An English question's are its Norwegian words as searched: "How many
    top management teams …" is about «toppledergrupper», not «How many through»."""
    match = result.guide
    names = [card.name for card in match.cards] + [term.norwegian for term in match.terms]
    if names:
        unique: dict[str, str] = {}
        for name in names:
            unique.setdefault(name.lower(), name)  # a card and a glossary term of one name
        return " ".join(unique.values())
    plan = result.plan
    if plan and plan.context and plan.context.topic:
        return plan.context.topic
    weights = result.term_weights
    known = [t for t in weights if t in result.known_terms]
    rare = set(sorted(known, key=lambda t: (-weights[t], t))[:3])  # ties: not in hash order
    if not plan or not rare or result.analyzer is None:
        return ""
    analyze = result.analyzer
    kept: list[str] = []
    covered: set[str] = set()
    for word in re.findall(r"\w+", f"{plan.text} {result.expansion}"):
        terms = set(analyze.terms(word)) & rare
        if terms - covered:  # one word for each: not "toppledergrupper toppledergruppene"
            kept.append(word)
            covered |= terms
    return " ".join(kept)


def _unexpanded(result: SearchResult) -> bool:
    """ "Hva står SOL for?" where the documents never spell SOL out: not in the documents."""
    term = result.guide.definition
    return bool(term and result.guide.asks_expansion and not term.expansion)


def guide_settles(result: SearchResult) -> bool:
    """The role guide holds the answer itself, quoting the documents: the question asks what a
    term it defines is ("Hva er et tildelingsbrev?", "What is a tildelingsbrev?"), what an
    abbreviation the documents spell out stands for, or whether the meeting forms it names are
    governance. The abstention rule does not turn such a question away: how like an unanswered
    question it reads ("Hvilken mal brukes for tildelingsbrev?") does not change that the
    documents define the term."""
    match = result.guide
    if match.classify:
        return True
    term = match.definition
    if term is None or result.plan is None:
        return False
    if match.asks_expansion:
        return bool(term.expansion)
    return result.plan.answer_type is AnswerType.DEFINITION


def _guide_answers(result: SearchResult) -> bool:
    """The guide itself answers: a defined term or a classification (a card field answers when
    the reader finds its quote best, see `_fields_read`)."""
    match = result.guide
    return bool(match.definition or match.classify)


def _guide_quotes(result: SearchResult) -> dict[str, str]:
    """The guide's own verbatim quotes, by the passage that holds them."""
    quotes: dict[str, str] = {}
    for cite, chunk_id in result.guide_cites:
        quotes.setdefault(chunk_id, cite.quote)
    return quotes


def _citations(
    cited: list[Passage], quotes: dict[str, str]
) -> tuple[list[Citation], dict[str, int]]:
    """The cited passages as numbered citations, and each passage's number. Passages of one page
    (a slide cut in two) are one citation, quoting each in the source's order."""
    pages: dict[tuple[str, str] | str, list[Passage]] = {}
    for p in cited:
        key = (p.chunk.source, p.location) if p.location else p.chunk.id
        pages.setdefault(key, []).append(p)
    citations = []
    numbers: dict[str, int] = {}
    for n, group in enumerate(pages.values(), start=1):
        first = group[0]
        ordered = sorted(group, key=lambda p: p.chunk.id)  # ids hold the chunk's ordinal
        said: list[str] = []
        for p in ordered:
            if all(quotes[p.chunk.id] not in q for q in said):
                said.append(quotes[p.chunk.id])
        citations.append(
            Citation(
                n=n,
                title=first.title,
                source=first.chunk.source,
                location=first.location,
                text="\n\n".join(p.text for p in ordered),
                quote=" … ".join(said),
                chunk_id=first.chunk.id,
                also=tuple(p.chunk.id for p in group[1:]),
            )
        )
        numbers.update(dict.fromkeys((p.chunk.id for p in group), n))
    return citations, numbers


def guide_lead(
    result: SearchResult, number: dict[str, int], fields: list[tuple[Card, str]] | None = None
) -> tuple[list[Statement], list[Statement]]:
    """The guide's short answer in the user's language, each statement with the citations it
    rests on (`number`: each cited passage's citation number): a definition, a decision aid
    (verdicts, and its criteria apart), or the card fields the reader found answering."""
    english = result.language == "en"
    match = result.guide
    chunk_of = {cite: chunk_id for cite, chunk_id in result.guide_cites}
    chunk_of.update({cite: chunk_id for _, _, cite, chunk_id in result.card_quotes})

    def refs(cites: tuple[Cite, ...]) -> tuple[int, ...]:
        return tuple(sorted({number.get(chunk_of.get(c, ""), 0) for c in cites} - {0}))

    if match.definition is not None:
        term = match.definition
        ref = refs((term.cite,))
        statements = []
        if term.expansion:
            stands = "stands for" if english else "står for"
            statements.append(Statement(f"{term.term} {stands} «{term.expansion}».", ref))
        statements.append(Statement(term.text(english), ref))
        return statements, []
    if match.classify:
        verdicts = []
        for card in match.cards:
            role = card.fields.get("role")
            if role is None:
                continue
            kind = {True: ("styring", "governance"), False: ("ikke styring", "not governance")}
            verdict = kind.get(card.governance)  # type: ignore[arg-type]
            label = f" ({verdict[1] if english else verdict[0]})" if verdict else ""
            text = f"{card.display(english)}{label}: {role.body(english)}"
            verdicts.append(Statement(text, refs(role.cites)))
        # The criteria that rest on the passages cited, those naming the forms asked about first.
        names = [card.name.lower() for card in match.cards]
        criteria = sorted(
            (c for c in result.criteria if refs(c.cites)),
            key=lambda c: -sum(name[:6] in c.text.lower() for name in names),
        )[:MAX_CRITERIA]
        return verdicts, [Statement(c.body(english), refs(c.cites)) for c in criteria]
    statements = []
    for card, name in fields or []:
        card_field = card.fields[name]
        nb_label, en_label, _ = FIELDS[name]
        label = en_label if english else nb_label
        text = f"{card.display(english)} – {label}: {card_field.body(english)}"
        statements.append(Statement(text, refs(card_field.cites)))
    return statements, []
