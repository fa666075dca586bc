"""Ranked passages → an extractive, cited Answer (no LLM), or an honest "not in the documents"."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bot.abstention import AbstentionModel
from bot.guide import FIELDS, Cite
from bot.retrieval import Passage, SearchResult
from ingest.lexical import Analyzer, tokenize
from ingest.split import sentences as split_sentences

MAX_CITATIONS = 3
QUOTE_CHARS = 320
SHORT_QUOTE_CHARS = 60  # a quote shorter than this takes the next sentence along as context
NUMBER_BONUS = 0.25  # "hvor mange …?" is answered by a sentence with a number in it
MIN_QUOTE_WORDS = 3
_SENTENCE_END = (".", "!", "?", ":", ";", "…")


@dataclass(frozen=True)
class Citation:
    n: int
    title: str
    source: str
    location: str | None
    text: str
    quote: str  # the sentences of the passage that answer best


@dataclass
class Answer:
    question: str
    text: str
    abstained: bool
    language: str
    citations: list[Citation] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    confidence: float = 0.0
    guide_lines: list[str] = field(default_factory=list)  # the role guide's short answer, if any

    def to_dict(self) -> dict[str, Any]:
        """The `ask --json` object; other tools depend on these keys."""
        return {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            "citations": [
                {
                    "n": c.n,
                    "title": c.title,
                    "source": c.source,
                    "location": c.location,
                    "text": c.text,
                }
                for c in self.citations
            ],
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


NO_ANSWER = {
    "nb": (
        "Jeg finner ikke svar på dette i dokumentene jeg kjenner. Prøv å spørre på en annen måte, "
        "eller spør om styringsdialogen, møteformene (etatsstyringsmøte, fagmøte, kontaktmøte), "
        "tildelingsbrev eller tillitsbasert styring og ledelse."
    ),
    "en": (
        "I can't find an answer to this in the documents I know. Try asking another way, or ask "
        "about the governance dialogue, the meeting types (etatsstyringsmøte, fagmøte, "
        "kontaktmøte), allocation letters (tildelingsbrev) or trust-based management."
    ),
}


def localized_location(location: str | None, language: str) -> str | None:
    if location and language == "en":
        return location.replace("lysbilde", "slide").replace("side", "page")
    return location


_ASKS_FOR_NUMBER = re.compile(
    r"\b(hvor mange|hvor ofte|hvor lenge|når|siden når|hvilket år|how many|how often|when)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Quote:
    text: str
    score: float  # share of the question's (IDF-weighted) terms it covers, plus small bonuses


def best_quote(
    text: str,
    weights: dict[str, float],
    *,
    analyzer: Analyzer | None = None,
    wants_number: bool = False,
    limit: int = QUOTE_CHARS,
) -> Quote:
    """The sentence that covers most of the question's terms, with what follows if it helps.

    Sentences are quoted as they stand; where the source broke a line without punctuation (bullets,
    a heading), the quote marks the break with " / ".
    """
    sentences = split_sentences(text)
    if not sentences:
        return Quote(text[:limit], 0.0)
    total = sum(weights.values()) or 1.0
    analyze = analyzer.terms if analyzer is not None else tokenize

    def score(sentence: str) -> float:
        terms = set(analyze(sentence))
        value = sum(w for t, w in weights.items() if t in terms) / total
        if wants_number and re.search(r"\d", sentence):
            value += NUMBER_BONUS
        return value

    scores = [score(s) for s in sentences]
    # A bare heading or list item ("Etatsstyringsmøte") repeats the question's words but answers
    # nothing: prefer real sentences.
    candidates = [
        i
        for i, s in enumerate(sentences)
        if len(s.split()) >= MIN_QUOTE_WORDS and sum(ch.isalpha() for ch in s) >= 8
    ] or [0]
    best = max(candidates, key=lambda i: (scores[i], -i))
    if scores[best] == 0:
        best = candidates[0]  # nothing in common on the surface (an English question, say)
    quote = sentences[best]
    following = best + 1
    while following < len(sentences) and len(quote) + len(sentences[following]) < limit:
        if scores[following] == 0 and len(quote) >= SHORT_QUOTE_CHARS:
            break
        joiner = " " if quote.endswith(_SENTENCE_END) else " / "
        quote = f"{quote}{joiner}{sentences[following]}"
        following += 1
    if len(quote) > limit:
        quote = quote[: limit - 1].rsplit(" ", 1)[0] + "…"
    return Quote(quote, scores[best])


CITE_MARGIN = 1.0  # a further passage is cited when its fused score is this close to the best
MAX_GUIDE_CITATIONS = 4  # a decision aid may lean on one passage more
MAX_CRITERIA = 3  # read during a meeting: the decisive criteria, not all of them


class Answerer:
    """Chooses what to cite and phrases the lead; decides when to abstain."""

    def __init__(self, abstention: AbstentionModel, max_citations: int = MAX_CITATIONS) -> None:
        self.abstention = abstention
        self.max_citations = max_citations

    def answer(self, result: SearchResult) -> Answer:
        language = result.language
        confidence = self.abstention.probability(result.signals) if result.passages else 0.0
        guided = result.pinned > 0 and _guide_answers(result)
        if not result.passages or (confidence < self.abstention.threshold and not guided):
            return Answer(
                question=result.query,
                text=NO_ANSWER[language],
                abstained=True,
                language=language,
                passages=result.passages,
                confidence=confidence,
            )
        cited = self._choose(result, guided)
        wants_number = bool(_ASKS_FOR_NUMBER.search(result.query))
        quotes = _guide_quotes(result) if guided else {}
        citations = []
        for n, p in enumerate(cited, start=1):
            quote = (
                quotes.get(p.chunk.id)
                or best_quote(
                    p.text, result.term_weights, analyzer=result.analyzer, wants_number=wants_number
                ).text
            )
            citations.append(
                Citation(
                    n=n,
                    title=p.title,
                    source=p.chunk.source,
                    location=p.location,
                    text=p.text,
                    quote=quote,
                )
            )
        guide_lines = guide_lead(result, cited) if guided else []
        return Answer(
            question=result.query,
            text=compose(citations, language, guide_lines),
            abstained=False,
            language=language,
            citations=citations,
            passages=result.passages,
            confidence=max(confidence, self.abstention.threshold) if guided else confidence,
            guide_lines=guide_lines,
        )

    def _choose(self, result: SearchResult, guided: bool) -> list[Passage]:
        """The guide's passages first, then those scored close to the best one."""
        limit = MAX_GUIDE_CITATIONS if guided and result.guide.classify else self.max_citations
        passages = result.passages
        pinned = passages[: result.pinned] if guided else []
        rest = passages[len(pinned) :]
        cited = list(pinned[:limit])
        if rest and len(cited) < limit:
            best = rest[0].score
            if not cited:
                cited.append(rest[0])
            cited.extend(p for p in rest[1:] if p.score >= best - CITE_MARGIN)
        return cited[:limit]


def _guide_answers(result: SearchResult) -> bool:
    """The guide itself answers: a defined term, a card field asked for, or a classification."""
    match = result.guide
    return bool(match.definition or match.classify or (match.cards and match.fields))


def _guide_quotes(result: SearchResult) -> dict[str, str]:
    """The guide's own verbatim quotes, by the passage that holds them."""
    quotes: dict[str, str] = {}
    for cite, chunk_id in result.guide_cites:
        quotes.setdefault(chunk_id, cite.quote)
    return quotes


def guide_lead(result: SearchResult, cited: list[Passage]) -> list[str]:
    """The guide's short answer, each statement marked with the citation it rests on."""
    english = result.language == "en"
    match = result.guide
    number = {p.chunk.id: n for n, p in enumerate(cited, start=1)}
    chunk_of = {cite: chunk_id for cite, chunk_id in result.guide_cites}

    def refs(cites: tuple[Cite, ...]) -> str:
        found = {number.get(chunk_of.get(c, ""), 0) for c in cites} - {0}
        return " " + "".join(f"[{n}]" for n in sorted(found)) if found else ""

    lines: list[str] = []
    if match.definition is not None:
        term = match.definition
        ref = refs((term.cite,))
        if term.expansion:
            lines.append(
                f"{term.term} stands for «{term.expansion}».{ref}"
                if english
                else f"{term.term} står for «{term.expansion}».{ref}"
            )
        lines.append(f"{term.definition}{ref}")
        return lines
    if match.classify:
        for card in match.cards:
            role = card.fields.get("role")
            if role is None:
                continue
            kind = {True: ("styring", "governance"), False: ("ikke styring", "not governance")}
            verdict = kind.get(card.governance)  # type: ignore[arg-type]
            label = f" ({verdict[1] if english else verdict[0]})" if verdict else ""
            lines.append(f"• {card.name}{label}: {role.text}{refs(role.cites)}")
        header = (
            "What tells governance (styring) from other dialogue, according to the sources "
            "(in Norwegian):"
            if english
            else "Slik skiller kildene styring fra annen dialog:"
        )
        # The criteria that rest on the passages cited, those naming the forms asked about first.
        names = [card.name.lower() for card in match.cards]
        criteria = sorted(
            (c for c in result.criteria if refs(c.cites)),
            key=lambda c: -sum(name[:6] in c.text.lower() for name in names),
        )[:MAX_CRITERIA]
        if criteria:
            lines.append(header)
            lines.extend(f"• {c.text}{refs(c.cites)}" for c in criteria)
        return lines
    for card in match.cards:
        for name in match.fields:
            card_field = card.fields.get(name)
            if card_field is None:
                continue
            nb_label, en_label, _ = FIELDS[name]
            label = en_label if english else nb_label
            lines.append(f"{card.name} – {label}: {card_field.text}{refs(card_field.cites)}")
    return lines


def _where(citation: Citation, language: str) -> str:
    location = localized_location(citation.location, language)
    return f"«{citation.title}»" + (f", {location}" if location else "")


def compose(citations: list[Citation], language: str, guide_lines: list[str] | None = None) -> str:
    """Plain-text answer: the guide's short answer if any, a lead quoting the best passage, then
    every cited source."""
    lead = citations[0]
    if language == "en":
        opening = f"According to {_where(lead, language)} (quoted in Norwegian):"
        sources = "Sources:"
    else:
        opening = f"Ifølge {_where(lead, language)}:"
        sources = "Kilder:"
    lines = [*guide_lines, ""] if guide_lines else []
    lines += [opening, f"«{lead.quote}» [{lead.n}]"]
    others = [c for c in citations if c is not lead]
    if others:
        also = ", ".join(f"[{c.n}]" for c in others)
        lines.append(f"See also {also}." if language == "en" else f"Se også {also}.")
    lines.extend(["", sources])
    for c in citations:
        lines.append(f"[{c.n}] {_where(c, language)}")
        if c is not lead:
            lines.append(f"    «{c.quote}»")
    return "\n".join(lines)
