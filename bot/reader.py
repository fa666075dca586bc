"""The answer reader: which sentence of the top passages answers *this* question.

Retrieval ranks passages by topic; a slide about the etatsstyringsmøte holds who leads it, how often
it meets and what its minutes say. The reader scores each sentence and bullet of the first passages
for answering the question: its own vector against the question, the question's words in it
(IDF-weighted), its passage's rank, and whether it holds what the question asks for (the answer
type: a role for "hvem", a number for "hvor mange", a frequency for "hvor ofte" …). The weights are
fitted on labelled sentences (`styringsbot calibrate`), not set by hand.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from bot import logistic
from bot.query import AnswerType, QueryPlan
from ingest.clean import fold as normalize
from ingest.lexical import Analyzer
from ingest.split import lines as split_lines
from ingest.split import sentences as split_sentences

READ_PASSAGES = 5  # the reader looks for the answer in this many of the first passages
ANCHORS = 3  # a typed answer must stand beside one of the question's this many rarest words
TYPED_LEAD = 0.25  # a sentence with the asked-for type leads if it scores this share of the best
DEFAULT_PATH = Path(__file__).with_name("fitted") / "reader.json"
FITTED_NAME = "reader.json"

FEATURES = (
    "cos",  # cosine of the sentence's vector with the question's
    "cos_gap",  # … minus the best such cosine among the candidates
    "overlap",  # IDF-weighted share of the question's words in the sentence
    "overlap_context",  # … in the sentence together with its passage's heading
    "soft_overlap",  # … counting a word as far as its letter 4-grams stand in the sentence
    "lead_overlap",  # … in the lead as quoted (the sentence with the list it introduces)
    "listing",  # the lead quotes a list after the sentence
    "phrase",  # share of the question's word pairs the sentence has
    "rank",  # 1 / (passage rank)
    "passage_gap",  # the passage's fused score minus the best passage's
    "type_match",  # holds what the question asks for (0–1), for questions with a clear type
    "type_missing",  # a question with a clear type, and the sentence lacks it
    "form_match",  # has the form of a purpose, definition, rule, way, quotation or list asked for
    "guide",  # the role guide quotes this sentence for what the question asks
    "card",  # the role guide quotes it for another field of a meeting form or document named
    "earlier",  # the passage the earlier answer cited (follow-ups)
    "restates",  # IDF-weighted share of the earlier question's words in it (follow-ups)
    "heading",  # a bare heading or label, not a statement
    "question",  # the sentence is itself a question
    "length",  # log of its number of words
)

# Types whose answer has a recognisable form (a name, a number, a frequency, a date, a role).
TYPED = {
    AnswerType.PERSON,
    AnswerType.WHO,
    AnswerType.AMOUNT,
    AnswerType.COUNT,
    AnswerType.FREQUENCY,
    AnswerType.DATE,
    AnswerType.DURATION,
    AnswerType.EXPANSION,
}
# Types whose answer has a looser form: a sentence may answer without it.
FORMS = {
    AnswerType.PURPOSE,
    AnswerType.DEFINITION,
    AnswerType.RULE,
    AnswerType.HOW,
    AnswerType.QUOTE,
    AnswerType.LIST,
}

# "en"/"ett" are also the indefinite article, "flere" says nothing of how many: left out.
_NUMBER_WORDS = (
    r"én|to|tre|fire|fem|seks|sju|syv|åtte|ni|ti|elleve|tolv|femten|tjue|tretti|førti"
    r"|femti|hundre|tusen|million|millioner|milliard|milliarder|halvparten|dobbelt"
)
_DIGIT = re.compile(r"\d")
_NUMBERING = re.compile(r"^\s*\d{1,2}[.)]\s")  # "3. Tilbud til toppledere": a section, not a count
_YEAR = re.compile(r"\b(19[5-9]\d|20[0-4]\d)\b")
_COUNT = re.compile(rf"(?<![\d.])\d+(?![\d.]*\d{{3}}\b)|\b({_NUMBER_WORDS})\b", re.IGNORECASE)
_AMOUNT = re.compile(
    r"\d[\d  .,]*\s*(kr\b|kroner|mill|mrd|milliard|nok\b|prosent|%)|\b(kr|nok)\.?\s*\d",
    re.IGNORECASE,
)
_FREQUENCY = re.compile(
    r"\b(månedlig\w*|ukentlig\w*|årlig\w*|daglig\w*|kvartalsvis|halvårlig\w*|i året|per år"
    r"|pr\.? år|i måneden|per måned|hver(t|e)?|ganger?|oftere|sjeldnere|annethvert|jevnlig\w*"
    r"|løpende|fortløpende|ved behov|møtehyppighet|frekvens|hyppighet|regelmessig\w*)\b",
    re.IGNORECASE,
)
_DATE = re.compile(
    r"\b(19[5-9]\d|20[0-4]\d|januar|februar|mars|april|mai|juni|juli|august|september|oktober"
    r"|november|desember|våren|høsten|sommeren|vinteren|forkant|etterkant|frist\w*|dato"
    r"|tidspunkt\w*)\b|\d{1,2}\.\s?(\d{1,2}|[a-zæøå]+)\b"
    rf"|\b(\d+|{_NUMBER_WORDS}) (år|måneder|måned|uker|uke|dager|dag|timer)\b",
    re.IGNORECASE,
)
_DURATION = re.compile(
    rf"\b(\d+(?:[,.]\d+)?|en|ett|ei|halv|halvannen|{_NUMBER_WORDS})\s*[-–]?\s*(?:\d+\s)?"
    r"(minutt\w*|min|timer?|dager?|døgn|uker?|måned\w*|år|hours?|minutes?|days?|weeks?|months?"
    r"|years?)\b|\b(heldag\w*|halvdag\w*)\b|\b(siden|fra|since) (19|20)\d\d\b",
    re.IGNORECASE,
)
_ROLE = re.compile(
    r"\b\w*(leder|ledere|lederen|lederne|ledelse|ledelsen|sjef|sjefen|direktør|direktøren"
    r"|sekretær|byråd|byråden|byrådet|avdeling|avdelingen|avdelingene|etat|etaten|etatene"
    r"|virksomhet|virksomheten|virksomhetene|medarbeider|medarbeidere|ansatte|politiker"
    r"|politikere|ledergruppe|ledergrupper|departement|departementet|bydel|bydeler|bydelene"
    r"|utvalg|styret|rådgiver|rådgivere|innbyggere|innbyggerne|deltakere|toppledere)\b"
    r"|\b(BYR|UKE|BLK|SOL|KD|PL|POL|KMD|DFØ|EHA|EHS)\b",
    re.IGNORECASE,
)
_PERSON = re.compile(r"\b[A-ZÆØÅ][a-zæøåé]+(?:-[A-ZÆØÅ][a-zæøåé]+)?\s+[A-ZÆØÅ][a-zæøåé]{2,}\b")
_PURPOSE = re.compile(
    r"\b(formål\w*|for å|bidra\w* til|slik at|hensikt\w*|målet|mål om|skal sikre|sikre|sikrer"
    r"|ønske om|styrke|skal gi|for at)\b",
    re.IGNORECASE,
)
_DEFINES = re.compile(
    r"\b(er|betyr|innebærer|handler om|defineres|favner|omfatter|står for|dvs|kjennetegn\w*"
    r"|basert på|består av|knyttet til)\b|:",
    re.IGNORECASE,
)
_RULE = re.compile(
    r"\b(skal|må|bør|kan|ikke|lov|alltid|aldri|ingen|krav|plikt\w*|forutsetter|anbefaler"
    r"|vurderes|avhengig)\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"[«»\"“”]")
# "åpenhet, medvirkning og samskaping", "standardisering vs handlingsrom", or list lines (" / ")
_ENUMERATION = re.compile(
    r"\w+, \w+[\w ]*\b(og|eller|samt|and|or)\b \w+|\w+ vs\.? \w+| / ", re.IGNORECASE
)
_HOW = re.compile(
    r"\b(ved å|gjennom|slik|bygges|skjer|gjøres|ved at|basert på|i samspill|i dialog)\b",
    re.IGNORECASE,
)


def type_match(
    kind: AnswerType,
    sentence: str,
    focus: set[str] | None = None,
    day: bool = False,
    abbreviation: str = "",
) -> float:
    """How well a sentence has the form the question's answer takes (0–1). `focus`: what a
    count counts; `day`: a date question asks for a time of year, not a year; `abbreviation`:
    what an expansion expands."""
    if kind is AnswerType.EXPANSION:
        return 1.0 if abbreviation and expands(abbreviation, sentence) else 0.0
    if kind is AnswerType.DURATION:
        return 1.0 if _DURATION.search(sentence) else 0.0
    if kind is AnswerType.PERSON:
        return 1.0 if _PERSON.search(sentence) else 0.3 if _ROLE.search(sentence) else 0.0
    if kind is AnswerType.WHO:
        return 1.0 if _ROLE.search(sentence) or _PERSON.search(sentence) else 0.0
    if kind is AnswerType.AMOUNT:
        return 1.0 if _AMOUNT.search(sentence) else 0.2 if _DIGIT.search(sentence) else 0.0
    if kind is AnswerType.COUNT:
        without_years = _YEAR.sub(" ", _NUMBERING.sub(" ", sentence))
        if not _COUNT.search(without_years):
            return 0.0
        return 1.0 if focus is None or _about(focus, sentence) else 0.5
    if kind is AnswerType.FREQUENCY:
        return 1.0 if _FREQUENCY.search(sentence) else 0.0
    if kind is AnswerType.DATE:
        found = [m.group(0) for m in _DATE.finditer(sentence)]
        if day:
            found = [f for f in found if not _YEAR.fullmatch(f)]
        return 1.0 if found else 0.0
    if kind is AnswerType.PURPOSE:
        return 1.0 if _PURPOSE.search(sentence) else 0.0
    if kind is AnswerType.DEFINITION:
        return 1.0 if _DEFINES.search(sentence) else 0.0
    if kind is AnswerType.RULE:
        return 1.0 if _RULE.search(sentence) else 0.0
    if kind is AnswerType.HOW:
        return 1.0 if _HOW.search(sentence) else 0.5
    if kind is AnswerType.QUOTE:
        return 1.0 if _QUOTED.search(sentence) else 0.0
    if kind is AnswerType.LIST:
        return 1.0 if _ENUMERATION.search(sentence) else 0.0
    return 0.5


# Words an abbreviation's letters skip: "mål- og resultatstyring" is MRS.
_LINKING = frozenset({"og", "i", "for", "av", "til", "med", "på", "and", "of", "the", "in"})
_PART = 4  # a letter inside a word stands for a compound's part this far from the last one


def expands(abbreviation: str, sentence: str) -> bool:
    """Whether the sentence spells the abbreviation out: words in a row whose first letters, or
    the starts of a compound's parts, are its letters ("tildelingsbrev" for TB, "mål- og
    resultatstyring" for MRS, "eldre, helse og arbeid" for EHA), or a word it begins
    ("byrådsavdelingen" for BYR)."""
    letters = abbreviation.lower()
    words = [w for w in _WORD.findall(sentence.lower()) if w not in _LINKING and not w.isdigit()]

    def spells(rest: str, index: int, offset: int) -> bool:
        if not rest:
            return True
        word = words[index]
        # The next letter inside this word (a compound's next part) …
        found = word.find(rest[0], offset + _PART)
        if found >= 0 and spells(rest[1:], index, found):
            return True
        # … or the first letter of the next word.
        nxt = index + 1
        return nxt < len(words) and words[nxt][0] == rest[0] and spells(rest[1:], nxt, 0)

    return any(
        word[0] == letters[0]
        and word != letters
        and (word.startswith(letters) or spells(letters[1:], i, 0))
        for i, word in enumerate(words)
    )


def _abbreviation_in(abbreviation: str, text: str) -> str:
    """The abbreviation, when the text names it; "" otherwise."""
    if not abbreviation:
        return ""
    found = re.search(rf"(?<![^\W_]){re.escape(abbreviation)}(?![^\W_])", text, re.IGNORECASE)
    return abbreviation if found else ""


def _stems(text: str) -> set[str]:
    from ingest.lexical import tokenize

    return set(tokenize(text))


FOCUS_SHARE = 0.6  # a word is the counted thing's when it has this share of its letter 4-grams


def _about(focus: set[str], sentence: str) -> bool:
    """Whether the sentence names what is counted, also inflected, in nynorsk or in a compound:
    "folkevalde" in "to folkevalgte nivåer", "ansatte" in "Over 50 000 ansatte"."""
    if focus & _stems(sentence):
        return True
    words = [_grams(w) for w in _WORD.findall(normalize(sentence))]
    for stem in focus:
        wanted = _grams(stem)
        if any(len(wanted & grams) >= FOCUS_SHARE * len(wanted) for grams in words):
            return True
    return False


_FOCUS_AFTER = re.compile(
    r"\b(?:hvor mange|antall(?:et)?(?: på| av)?|how many|number of)\s+(\w+(?:-\w+)*)",
    re.IGNORECASE,
)


def count_focus(text: str) -> str | None:
    """The thing a "hvor mange …?" question counts ("ansatte" in "hvor mange ansatte")."""
    match = _FOCUS_AFTER.search(text)
    return match.group(1) if match else None


@dataclass(frozen=True)
class Candidate:
    """A sentence of one of the first passages, with why it may answer the question."""

    passage: int  # its passage's position in the ranked list
    text: str  # the sentence
    lead: str  # how it is quoted as a lead (see `leads`)
    features: dict[str, float]
    score: float  # estimated probability that it answers the question
    anchored: bool = True  # it (or its heading) holds one of the question's rarest known words


@dataclass
class Reading:
    """The reader's view of one question: its candidate sentences, best first (by score, but a
    sentence holding the asked-for number, name or date may lead one that lacks it)."""

    candidates: list[Candidate] = field(default_factory=list)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def top_score(self) -> float:
        """The highest score of any candidate (the reader's confidence that something answers)."""
        return max((c.score for c in self.candidates), default=0.0)

    def type_support(self) -> float:
        """Whether a sentence about the question holds the asked-for answer type: the best type
        match among the candidates that hold (with their heading) one of the question's rarest
        words — "hvor ofte holdes strategimøter?" is not answered by how often kontaktmøter are
        held (1 when the question asks for no particular type)."""
        if not self.candidates:
            return 0.0
        if not any(c.features["type_match"] or c.features["type_missing"] for c in self.candidates):
            return 1.0
        return max(c.features["type_match"] * c.anchored for c in self.candidates)

    def coverage(self) -> float:
        """How much of the question the best sentence and its heading hold."""
        return self.candidates[0].features["overlap_context"] if self.candidates else 0.0


@dataclass(frozen=True)
class ReaderModel(logistic.JsonModel):
    """Logistic weights over FEATURES, standardized; stored as JSON like the abstention rule."""

    embedder: str
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    fitted_on: str = ""
    features: tuple[str, ...] = FEATURES

    def score(self, values: list[float]) -> float:
        return logistic.probability(values, self.mean, self.scale, self.coef, self.intercept)

    @classmethod
    def neutral(cls, embedder: str) -> ReaderModel:
        """Before any fit: the sentence closest to the question in words and meaning."""
        weights = {"cos_gap": 1.0, "overlap": 1.0, "rank": 0.5}
        return cls(
            embedder,
            mean=[0.0] * len(FEATURES),
            scale=[1.0] * len(FEATURES),
            coef=[weights.get(f, 0.0) for f in FEATURES],
            intercept=0.0,
            fitted_on="none",
        )

    @classmethod
    def load(cls, path: Path) -> ReaderModel:
        return cls(**cls.read(path, FEATURES))

    @classmethod
    def for_index(cls, data_dir: Path, embedder_id: str) -> ReaderModel:
        """A fit for this index in the data dir, else the shipped one. Another embedder's
        cosines live on another scale: the shipped fit then leaves the cosine out."""
        fitted = data_dir / FITTED_NAME
        if fitted.exists():
            model = cls.load(fitted)
            if model.embedder == embedder_id and model.features == FEATURES:
                return model
        if not DEFAULT_PATH.exists():
            return cls.neutral(embedder_id)
        default = cls.load(DEFAULT_PATH)
        if default.features != FEATURES:
            return cls.neutral(embedder_id)  # fitted for other features: refit with calibrate
        if default.embedder == embedder_id:
            return default
        coef = [0.0 if name == "cos" else w for name, w in zip(FEATURES, default.coef, strict=True)]
        return ReaderModel(
            embedder_id, default.mean, default.scale, coef, default.intercept, "cosine left out"
        )


class Reader:
    """Scores the sentences of the first passages for answering a question."""

    def __init__(  # type: ignore[no-untyped-def]
        self,
        index,
        analyzer: Analyzer,
        idf: dict[str, float],
        unseen_idf: float,
        model: ReaderModel,
    ) -> None:
        self.index = index
        self.analyzer = analyzer
        self.idf = idf
        self.unseen_idf = unseen_idf
        self.model = model
        self._terms = lru_cache(maxsize=50_000)(self._sentence_terms)
        self._grams = lru_cache(maxsize=50_000)(_text_grams)
        self._leads = lru_cache(maxsize=5_000)(_passage_leads)
        self._sections = lru_cache(maxsize=5_000)(_passage_sections)

    def _sentence_terms(self, text: str) -> frozenset[str]:
        return frozenset(t for t in self.analyzer.terms(text) if "_" not in t)

    def _question_weights(self, text: str) -> dict[str, float]:
        """The IDF weight of each of a question's terms."""
        terms = {t for t in self.analyzer.terms(text) if "_" not in t}
        return {t: self.idf.get(t, self.unseen_idf) for t in terms}

    def _word_weights(self, text: str) -> dict[str, float]:
        """The question's words (folded, stop words left out), each weighted by its stem's IDF."""
        weights: dict[str, float] = {}
        for word in _WORD.findall(normalize(text)):
            stems = [t for t in self.analyzer.terms(word) if "_" not in t]
            if stems:
                weights[word] = min(self.idf.get(stems[0], self.unseen_idf), self.unseen_idf)
        return weights

    def _pairs(self, text: str) -> set[str]:
        return {t for t in self.analyzer.terms(text) if "_" in t}

    def read(self, result) -> Reading:  # type: ignore[no-untyped-def]
        """Candidates from the first READ_PASSAGES passages of a search result, best first."""
        passages = result.passages[:READ_PASSAGES]
        plan: QueryPlan | None = result.plan
        if not passages or plan is None:
            return Reading()
        query_vector = result.query_vector
        guide_quotes = [normalize(cite.quote) for cite, _ in result.guide_cites]
        card_quotes = [normalize(cite.quote) for _, _, cite, _ in result.card_quotes]
        asked = f"{plan.search_text} {result.expansion}".strip()
        weights = self._question_weights(asked)
        query_terms = set(weights)
        total = sum(weights.values()) or 1.0
        question_pairs = self._pairs(plan.search_text)
        words = {w: (weight, _grams(w)) for w, weight in self._word_weights(asked).items()}
        words_total = sum(weight for weight, _ in words.values()) or 1.0
        # Rarest first; words of one rarity in alphabetical order, not the set's (hash) order.
        known = sorted((t for t in query_terms if t in self.idf), key=lambda t: (-self.idf[t], t))
        anchors = set(known[:ANCHORS])
        focus = set(self.analyzer.terms(result.focus)) if result.focus else None
        typed = plan.answer_type in TYPED
        earlier = set(plan.context.cited) if plan.context else set()
        # A follow-up asks for something new: a sentence in the earlier question's words ("Kan
        # tillitsbasert styring og ledelse medføre mer forskjellsbehandling?" after that question,
        # then "hvilket annet dilemma nevnes?") is seldom what it asks for.
        before = self._question_weights(plan.context.question) if plan.context else {}
        before_total = sum(before.values()) or 1.0
        best_score = passages[0].score

        raw: list[tuple[int, str, float]] = []
        for rank, passage in enumerate(passages):
            position = self.index.position(passage.chunk.id)
            rows = self.index.sentence_rows[position] if position is not None else []
            texts = [self.index.sentence_texts[r] for r in rows]
            cosines: list[float | None] = [None] * len(texts)
            if rows and query_vector is not None:
                vectors = self.index.sentence_vectors(rows)
                if vectors is not None:
                    cosines = [float(v) for v in vectors @ query_vector]
            if not texts:  # no stored sentences: read the passage's own
                texts = [s for s in split_sentences(passage.text) if len(s.split()) >= 2]
                cosines = [None] * len(texts)
            for text, cosine in zip(texts, cosines, strict=True):
                raw.append((rank, text, cosine if cosine is not None else passage.dense))
        top_cos = max(c for _, _, c in raw)

        candidates = []
        # A fact (a role, a number, a date …) is one statement: a list is quoted only for the
        # other questions ("Hva kjennetegner …?", "Hvilke …?").
        lists = not typed
        quoted = [self._leads(p.chunk.id, p.text, lists) for p in passages]
        labels = [self._sections(p.chunk.id, p.text) for p in passages]
        # An abbreviation is spelt out where it also stands ("Tildelingsbrev (TB)"), or by the
        # glossary.
        definition = result.guide.definition if result.guide else None
        expanded = plan.answer_type is AnswerType.EXPANSION and bool(
            definition and definition.expansion
        )
        spelt = [
            _abbreviation_in(plan.abbreviation, f"{p.chunk.heading or ''} {p.text}")
            for p in passages
        ]
        for rank, text, cosine in raw:
            passage = passages[rank]
            lead = quoted[rank].get(normalize(text), text)
            terms = self._terms(text)
            context_terms = terms | self._terms(passage.chunk.heading or "")
            overlap = sum(w for t, w in weights.items() if t in terms) / total
            overlap_context = sum(w for t, w in weights.items() if t in context_terms) / total
            lead_terms = self._terms(lead) if lead != text else terms
            lead_overlap = sum(w for t, w in weights.items() if t in lead_terms) / total
            pairs = self._pairs(text)
            phrase = len(question_pairs & pairs) / len(question_pairs) if question_pairs else 0.0
            folded = normalize(text)
            quoted_by_guide = _quoted(folded, guide_quotes)
            match = type_match(plan.answer_type, text, focus, plan.day, spelt[rank])
            if expanded and quoted_by_guide:  # the glossary spells it out, quoting this
                match = 1.0
            if lead != text:  # a list it introduces holds the answer less directly
                lead_match = type_match(plan.answer_type, lead, focus, plan.day, spelt[rank])
                match = max(match, 0.5 * lead_match)
            # A list is answered by the line that introduces it, with its items.
            form = plan.answer_type in FORMS
            shape = lead if plan.answer_type is AnswerType.LIST else text
            form_match = type_match(plan.answer_type, shape) if form else 0.0
            # Compounds and inflections: "toppledergrupper" holds much of "ledergruppene".
            grams = self._grams(text)
            soft = sum(wt * len(g & grams) / len(g) for wt, g in words.values()) / words_total
            n_words = len(text.split())
            features = {
                "cos": cosine,
                "cos_gap": cosine - top_cos,
                "overlap": overlap,
                "overlap_context": overlap_context,
                "soft_overlap": soft,
                "lead_overlap": lead_overlap,
                "listing": float(" / " in lead[len(text) :]),
                "phrase": phrase,
                "rank": 1.0 / (rank + 1),
                "passage_gap": max(passage.score - best_score, -5.0),
                "type_match": match if typed else 0.0,
                "type_missing": float(typed and match < 1.0),
                "form_match": form_match,
                "guide": float(quoted_by_guide),
                "card": float(_quoted(folded, card_quotes)),
                "earlier": float(passage.chunk.id in earlier),
                "restates": sum(w for t, w in before.items() if t in terms) / before_total,
                "heading": float(_is_heading(text, passage.chunk.heading)),
                "question": float(text.rstrip().endswith("?")),
                "length": math.log(max(n_words, 1)),
            }
            score = self.model.score([features[f] for f in FEATURES])
            # The topic may be named by the label line above the sentence, or the guide may
            # quote the sentence for what is asked.
            label = labels[rank].get(folded, "")
            around = context_terms | lead_terms | (self._terms(label) if label else frozenset())
            # A follow-up's topic is the passage its earlier answer cited ("hvor ofte skal
            # virksomhetene gjennomføre den?" after «Hva er 10-faktor?»): there the topic's
            # words need not stand again.
            anchored = (
                not anchors
                or bool(anchors & around)
                or bool(features["guide"])
                or bool(features["earlier"])
            )
            candidates.append(Candidate(rank, text, lead, features, score, anchored))
        candidates.sort(key=lambda c: (-c.score, c.passage))
        return Reading(_typed_first(candidates) if typed else candidates)


def _typed_first(candidates: list[Candidate]) -> list[Candidate]:
    """For a question asking for a number, a name, a date …: the best sentence that has it
    beside the question's words leads, when it scores at least TYPED_LEAD of the best sentence,
    which lacks it ("Over 50 000 ansatte" for "Hvor mange ansatte har Oslo kommune?", not "En av
    landets største organisasjoner, målt i ansatte og økonomi")."""
    best = candidates[0] if candidates else None
    if best is None or best.features["type_match"] >= 1.0:
        return candidates
    for i, candidate in enumerate(candidates[1:], start=1):
        if candidate.features["type_match"] >= 1.0 and candidate.anchored:
            if candidate.score < TYPED_LEAD * best.score:
                break
            return [candidate, *candidates[:i], *candidates[i + 1 :]]
    return candidates


_WORD = re.compile(r"[^\W_]+")
GRAM = 4


def _grams(word: str) -> frozenset[str]:
    """A word's letter 4-grams, its start and end marked ("#led", "lede", … "der#")."""
    marked = f"#{word}#"
    return frozenset(marked[i : i + GRAM] for i in range(max(1, len(marked) - GRAM + 1)))


def _text_grams(text: str) -> frozenset[str]:
    found: set[str] = set()
    for word in _WORD.findall(normalize(text)):
        found |= _grams(word)
    return frozenset(found)


def _quoted(sentence: str, quotes: list[str]) -> bool:
    """Whether a (normalized) sentence lies in one of the (normalized) quotes, or holds one."""
    return any(sentence in quote or (len(quote) >= 20 and quote in sentence) for quote in quotes)


def _passage_leads(_chunk_id: str, text: str, lists: bool) -> dict[str, str]:
    return leads(text, lists=lists)


def _passage_sections(_chunk_id: str, text: str) -> dict[str, str]:
    return sections(text)


def _is_heading(text: str, heading: str | None) -> bool:
    stripped = text.strip().rstrip(":")
    if heading and normalize(stripped) == normalize(heading):
        return True
    return len(text.split()) <= 4 and not text.rstrip().endswith((".", "!", "?"))


LEAD_CHARS = 320  # a lead longer than this takes no more sentences or list items
SHORT_LEAD = 60  # a sentence shorter than this takes the rest of its line along
LIST_ITEMS = 6
_LIST_ITEM = re.compile(r"^\s*(?:[•●▪◦·\-–+*o]\s|[•●▪◦·]|\d{1,2}[.)]\s)")


def leads(passage_text: str, limit: int = LEAD_CHARS, lists: bool = True) -> dict[str, str]:
    """Each sentence of a passage (normalized) → its lead as quoted: the sentence, with the rest
    of its line when the sentence is short ("Ledes av kommunaldirektør." + "Fra BYR: …"), or the
    list it introduces when it is a label or ends in a colon ("3 overordnede forutsetninger for
    MRS:" + its bullets; not with `lists` off). Whole sentences and list items only, never a cut
    fragment; line breaks in the source show as " / "."""
    lines = split_lines(passage_text)
    found: dict[str, str] = {}
    for i, line in enumerate(lines):
        parts = split_sentences(line)
        for j, part in enumerate(parts):
            quote = part
            k = j + 1
            while k < len(parts) and len(quote) < SHORT_LEAD and len(quote) + len(parts[k]) < limit:
                quote = f"{quote} {parts[k]}"
                k += 1
            following = lines[i + 1 :]
            if lists and k >= len(parts) and _introduces(line, quote, following):
                items = _list_after(following, limit - len(quote))
                if items:
                    quote = " / ".join([quote, *items])
            found.setdefault(normalize(part), quote)
    return found


def sections(passage_text: str) -> dict[str, str]:
    """Each sentence of a passage (normalized) → the label line above it inside the passage
    ("Kontaktmøter – møter med POL" over its bullets); sentences before any label are left out."""
    found: dict[str, str] = {}
    label = ""
    lines = split_lines(passage_text)
    for i, line in enumerate(lines):
        stripped = line.strip(" •●▪◦·–-")
        if not _LIST_ITEM.match(line) and _introduces(line, stripped, lines[i + 1 :]):
            label = stripped
            continue
        if label:
            for part in split_sentences(line):
                found.setdefault(normalize(part), label)
    return found


def _introduces(line: str, quote: str, following: list[str]) -> bool:
    """A line that a list follows: it ends in a colon, or it is a bare label ("Formål") or a
    question over bullets ("Hvorfor er tillit viktig?" + "• Kostnadseffektivt") that is not
    itself an item of a list."""
    if quote.rstrip().endswith(":"):
        return True
    if _LIST_ITEM.match(line):
        return False
    stripped = line.strip(" •●▪◦·–-")
    if stripped.endswith("?"):
        return bool(following) and bool(_LIST_ITEM.match(following[0]))
    return len(stripped.split()) <= 8 and not stripped.endswith((".", "!", ";", ","))


def _list_after(following: list[str], budget: int) -> list[str]:
    """The items of the list that starts at `following`: bullets, or short lines."""
    items: list[str] = []
    bullets = bool(following) and bool(_LIST_ITEM.match(following[0]))
    for line in following:
        if bullets != bool(_LIST_ITEM.match(line)):
            break
        item = line.strip(" •●▪◦·–-")
        # A bullet may ask a question ("• Hvilke verdier skal toppledere bidra til å skape?");
        # a bare line that does is the next heading.
        if (item.endswith("?") and not bullets) or (not bullets and len(item.split()) > 12):
            break
        if not item or sum(len(x) + 3 for x in items) + len(item) + 3 > budget:
            break
        items.append(item)
        if len(items) == LIST_ITEMS:
            break
    return items
