"""Ranked passages → an extractive, cited Answer (no LLM), or an honest "not in the documents"."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bot.abstention import AbstentionModel
from bot.retrieval import Passage, SearchResult
from ingest.lexical import tokenize

MAX_CITATIONS = 3
# A further passage is cited when its fused score is this close to the best one.
CITE_RELATIVE = 0.9
QUOTE_CHARS = 320
SHORT_QUOTE_CHARS = 60  # a quote shorter than this takes the next sentence along as context
NUMBER_BONUS = 0.25  # "hvor mange …?" is answered by a sentence with a number in it
MIN_QUOTE_WORDS = 3
_SENTENCE_END = (".", "!", "?", ":", ";", "…")

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[«\"(]?[A-ZÆØÅ0-9•])|\n+")


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


def _sentences(text: str) -> list[str]:
    parts = [p.strip(" •–-") for p in _SENTENCE_SPLIT.split(text)]
    return [p for p in parts if any(ch.isalnum() for ch in p)]


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
    wants_number: bool = False,
    limit: int = QUOTE_CHARS,
) -> Quote:
    """The sentence that covers most of the question's terms, with what follows if it helps.

    Sentences are quoted as they stand; where the source broke a line without punctuation (bullets,
    a heading), the quote marks the break with " / ".
    """
    sentences = _sentences(text)
    if not sentences:
        return Quote(text[:limit], 0.0)
    total = sum(weights.values()) or 1.0

    def score(sentence: str) -> float:
        terms = set(tokenize(sentence))
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


class Answerer:
    """Chooses what to cite and phrases the lead; decides when to abstain."""

    def __init__(self, abstention: AbstentionModel, max_citations: int = MAX_CITATIONS) -> None:
        self.abstention = abstention
        self.max_citations = max_citations

    def answer(self, result: SearchResult) -> Answer:
        language = result.language
        confidence = self.abstention.probability(result.signals) if result.passages else 0.0
        if not result.passages or confidence < self.abstention.threshold:
            return Answer(
                question=result.query,
                text=NO_ANSWER[language],
                abstained=True,
                language=language,
                passages=result.passages,
                confidence=confidence,
            )
        top = result.passages[0].score
        cited = [p for p in result.passages if p.score >= CITE_RELATIVE * top]
        cited = cited[: self.max_citations]
        wants_number = bool(_ASKS_FOR_NUMBER.search(result.query))
        citations = []
        for n, p in enumerate(cited, start=1):
            quote = best_quote(p.text, result.term_weights, wants_number=wants_number)
            citations.append(
                Citation(
                    n=n,
                    title=p.title,
                    source=p.chunk.source,
                    location=p.location,
                    text=p.text,
                    quote=quote.text,
                )
            )
        return Answer(
            question=result.query,
            text=compose(citations, language),
            abstained=False,
            language=language,
            citations=citations,
            passages=result.passages,
            confidence=confidence,
        )


def _where(citation: Citation, language: str) -> str:
    location = localized_location(citation.location, language)
    return f"«{citation.title}»" + (f", {location}" if location else "")


def compose(citations: list[Citation], language: str) -> str:
    """Plain-text answer: a lead quoting the best passage, then every cited source."""
    lead = citations[0]
    if language == "en":
        opening = f"According to {_where(lead, language)} (quoted in Norwegian):"
        sources = "Sources:"
    else:
        opening = f"Ifølge {_where(lead, language)}:"
        sources = "Kilder:"
    lines = [opening, f"«{lead.quote}» [{lead.n}]"]
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
