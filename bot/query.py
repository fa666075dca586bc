"""What a question asks for, read before anything is searched: the query plan.

The plan holds the user's language, the question in the form the index understands (nynorsk
question words in bokmål, misspelt words mended against the index's own vocabulary), the *answer
type* (a role, a number, a date, a frequency, a rule, a definition …) and what a follow-up builds
on. Retrieval searches with it, the reader scores sentences against it, and the abstention rule
asks whether any sentence holds what it asks for.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from bot.language import detect as detect_language


class AnswerType(StrEnum):
    """What kind of statement answers a question."""

    PERSON = "person"  # hvem er byrådsleder?  → a name
    WHO = "who"  # hvem leder møtet?  → a role, body or person
    AMOUNT = "amount"  # hvor mye koster …?  → a sum of money
    COUNT = "count"  # hvor mange …?  → a number
    FREQUENCY = "frequency"  # hvor ofte …?  → how often
    DATE = "date"  # når …? hvilket år …?  → a date, year or point in a process
    DURATION = "duration"  # hvor lenge varer …?  → a length of time
    EXPANSION = "expansion"  # hva står TB for?  → the words an abbreviation is made of
    PURPOSE = "purpose"  # hvorfor …? hva er formålet …?  → an aim
    DEFINITION = "definition"  # hva er …? hva betyr …?  → what something is
    RULE = "rule"  # er/kan/skal/må …?  → a sentence that states the rule
    HOW = "how"  # hvordan …?  → a way or a process
    QUOTE = "quote"  # hva sa …? what did … conclude?  → what someone said, in quotation marks
    LIST = "list"  # hvilke …? what are the …?  → the items of a list
    OTHER = "other"


# Nynorsk (and common dialect spellings of) question and function words, in bokmål: the role
# guide, the question-type cues and the lexical index all speak bokmål.
_NYNORSK = {
    "kven": "hvem",
    "kva": "hva",
    "kvifor": "hvorfor",
    "korleis": "hvordan",
    "kor": "hvor",
    "kvar": "hvor",
    "kvart": "hvert",
    "leiar": "leder",
    "leiarar": "ledere",
    "leiaren": "lederen",
    "leiarane": "lederne",
    "leier": "leder",
    "leie": "lede",
    "leiing": "ledelse",
    "leiinga": "ledelsen",
    "ikkje": "ikke",
    "eg": "jeg",
    "dykk": "dere",
    "dei": "de",
    "noko": "noe",
    "nokon": "noen",
    "nokre": "noen",
    "berre": "bare",
    "frå": "fra",
    "kjem": "kommer",
    "vert": "blir",
    "vere": "være",
    "vore": "vært",
    "ein": "en",
    "eit": "et",
    "òg": "også",
    "deltek": "deltar",
    "tek": "tar",
    "gjer": "gjør",
    "seier": "sier",
    "heiter": "heter",
    "fleire": "flere",
    "mykje": "mye",
    "saman": "sammen",
    "sjølv": "selv",
    "mellom": "mellom",
    "verksemd": "virksomhet",
    "verksemda": "virksomheten",
    "verksemder": "virksomheter",
    "verksemdene": "virksomhetene",
    "tilsette": "ansatte",
    "tenester": "tjenester",
    "møta": "møtene",
    "skrivast": "skrives",
    "skildrar": "beskriver",
    "føremål": "formål",
    "føremålet": "formålet",
    "arbeidsgjevar": "arbeidsgiver",
    "sende": "sende",
    "nemnd": "nevnt",
    "spørsmål": "spørsmål",
    "bydelane": "bydelene",
    "etatane": "etatene",
    "avdelinga": "avdelingen",
    "byrådsavdelinga": "byrådsavdelingen",
    "ho": "hun",
    "dokumenta": "dokumentene",
    "tildelingsbreva": "tildelingsbrevene",
    "kva tid": "når",
}
# Nynorsk stems inside compounds ("verksemdsstyring" → "virksomhetsstyring").
_NYNORSK_STEMS = {
    "verksemd": "virksomhet",
    "leiing": "ledelse",
    "leiar": "leder",
    "tilsett": "ansatt",
    "teneste": "tjeneste",
    "hovud": "hoved",
    "toppleiar": "toppleder",
    "tilbod": "tilbud",
    "møta": "møtene",
}
_NYNORSK_STEM = re.compile("|".join(_NYNORSK_STEMS), re.IGNORECASE)
_NYNORSK_WORD = re.compile(
    r"\b(" + "|".join(sorted((re.escape(k) for k in _NYNORSK), key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)

_TYPE_CUES: list[tuple[AnswerType, re.Pattern[str]]] = [
    (
        AnswerType.QUOTE,
        re.compile(
            r"\bhva (sa|sier|skrev|skriver|uttalte|mente|konkluderte)\b|\bsitat"
            r"|\bwhat (did|does) .{0,60}\b(say|said|write|conclude|state)\b|\bquote",
            re.IGNORECASE,
        ),
    ),
    (
        AnswerType.PERSON,
        re.compile(
            r"\bhva het(er)?\b|\bnavnet på\b|\bname of\b|\bwhat is the name\b"
            r"|^\W*(hvem|who) (er|var|is|was)\b.*\b(i dag|nå|nåværende|today|now|currently)\b"
            r"|^\W*(hvem|who) (er|var|is|was|heads?)( the)? (?!\w*møte)\w*(byråd|direktør|sjef"
            r"|sekretær|leder|director|head|commissioner|mayor|chief|secretary)\w*\b",
            re.IGNORECASE,
        ),
    ),
    (
        AnswerType.DURATION,
        re.compile(
            r"\bhvor lenge\b|\bhow long\b|\bvarighet|\bduration\b"
            r"|\b(hvor mange|how many) (minutter|timer|dager|uker|måneder|minutes|hours|days|weeks"
            r"|months)\b",
            re.IGNORECASE,
        ),
    ),
    (
        AnswerType.AMOUNT,
        re.compile(
            r"\bhvor mye (koste|kostet|koster|betal|brukte?|fikk|får|har)\b|\bkostna|\bkoste[rt]?\b"
            r"|\bpris(en)?\b|\bbudsjett(et|ramme)|\bhow much\b|\bcost|\bprice|\bbudget\b"
            r"|\bkroner\b|\bmillion|\bprosent|\bpercent|\bhvor (høy|høyt)\b|\bhow high\b",
            re.IGNORECASE,
        ),
    ),
    (
        AnswerType.COUNT,
        re.compile(r"\bhvor mange\b|\bantall(et)?\b|\bhow many\b|\bnumber of\b", re.IGNORECASE),
    ),
    (
        AnswerType.FREQUENCY,
        re.compile(
            r"\bhvor (ofte|tett|jevnlig)\b|\bhyppig|\bhow (often|regularly)\b|\bfrequen",
            re.IGNORECASE,
        ),
    ),
    (
        AnswerType.DATE,
        re.compile(
            r"\bnår på året\b|\b(siden|fra|til) når\b|\bnår (ble|startet|kom|var|begynte)\b"
            r"|\bhvilke[tn] (år|dato|måned|tidspunkt)\b|\bsince when\b"
            r"|\bwhen (was|were|did)\b|\b(what|which) (year|date|month)\b"
            r"|\bdato(en)?\b|\bfrist|\bdeadline\b|\bat what time\b",
            re.IGNORECASE,
        ),
    ),
    (
        AnswerType.WHO,
        re.compile(
            r"\bhvem\b|\bwho\b|\bwhom\b|\bhvilke(n|t)? (rolle|roller|enhet|enheter|avdeling|etat"
            r"|aktør|aktører|organ|virksomhet)\w*|\bwhich (body|unit|role|department|agency)",
            re.IGNORECASE,
        ),
    ),
    (
        AnswerType.PURPOSE,
        re.compile(
            r"\bhvorfor\b|\bformål|\bhensikt|\bwhy\b|\bpurpose|\bwhat for\b|\bhva skal .* til\b"
            r"|\bmålet med\b|\baim of\b|\bgoal of\b",
            re.IGNORECASE,
        ),
    ),
    (
        AnswerType.LIST,
        re.compile(
            r"^\W*(which \w+(s|ies)|which\b.*\b(are|were|have|do)|what (are|were) the)\b"
            r"|\bwhat (kinds?|types?|sorts?) of\b|\bhvilke\b|\bhva kjennetegner\b|\bhva består\b",
            re.IGNORECASE,
        ),
    ),
    (
        AnswerType.DEFINITION,
        re.compile(
            r"^\W*(hva (er|betyr|menes|innebærer|står|vil det si)|hva er (en|et|ei)\b"
            r"|what (is|are|does|do)\b|what's\b|define\b|explain\b|forklar\b|definer\b)",
            re.IGNORECASE,
        ),
    ),
    (AnswerType.HOW, re.compile(r"^\W*(hvordan|how)\b", re.IGNORECASE)),
]

# "Hva står TB for?", "What does OVK stand for?", "Hva er forkortelsen MRS?": the abbreviation
# whose words are asked for.
_ABBREVIATION = re.compile(
    r"\bhva står (?:forkortelsen )?(?!(?:det|den|dette|dei|de)\b)([^\W_]{2,8}) for\b"
    r"|\bwhat (?:does|do|is) (?:the )?(?:abbreviation |acronym )?(?!(?:it|this|that)\b)"
    r"([^\W_]{2,8}) (?:stand|short) for\b",
    re.IGNORECASE,
)
# … and one written in capitals before or after the words that ask ("TB står for hva?"), not
# "Hvem står for opplæringen?".
_CAPITALS = re.compile(
    r"\b([A-ZÆØÅ]{2,8}) (?:står for|stands for|is short for|er (?:en )?forkortelse for)\b"
    r"|\b(?:[Ff]orkortelsen|[Aa]bbreviation|[Aa]cronym) ([A-ZÆØÅ]{2,8})\b"
)


def abbreviation_asked(text: str) -> str:
    """The abbreviation a question asks the words of ("TB" in "Hva står TB for?"), or ""."""
    match = _ABBREVIATION.search(text) or _CAPITALS.search(text)
    return next((g for g in match.groups() if g), "") if match else ""


# A question that starts with a verb asks yes or no: it is answered by the sentence that states the
# rule, whatever else it mentions ("Kan etaten … når kommunaldirektøren møter den?").
_YES_NO = re.compile(
    r"^\W*(er|kan|skal|må|bør|har|får|blir|gjelder|trenger|finnes|holdes|føres|lages|stemmer"
    r"|is|are|can|should|must|do|does|may|will|shall|has|have|could|would)\b",
    re.IGNORECASE,
)

# … as does one that starts with a verb and then its subject ("Står det noe om …?", "Går det an
# å …?", "Møter alle virksomheter PL?"); a plural noun ("Referater fra …") is not followed so.
_VERB_FIRST = re.compile(
    r"^\W*[a-zæøå]+r\s+(det|den|dette|man|vi|du|jeg|alle|de|dere|noen|en|et|ei|hver)\b",
    re.IGNORECASE,
)

# "today", "currently", "this year": the documents describe a year in the past, not the present.
_PRESENT = re.compile(
    r"\b(i dag|nå|nåværende|per i dag|for tiden|i år|dagens|sittende|today|current(ly)?|now"
    r"|this year|at present|presently)\b",
    re.IGNORECASE,
)
_YEAR = re.compile(r"\b(19[5-9]\d|20[0-4]\d)\b")
_DAY = re.compile(
    r"\bpå året\b|\bmåned|\bdato|\bdag(en)?\b|\buke|\btidspunkt|\bfrist|\bdeadline|\bmonth"
    r"|\bdate\b|\btime of (the )?year\b|\bwhat day\b",
    re.IGNORECASE,
)
# "Hvordan søker jeg …?", "How do I appeal …?": a personal errand. The documents describe roles
# and principles of governance, not procedures for one's own case.
_ERRAND = re.compile(
    r"^\W*(hvordan|hvor|hva gjør|how|where|what do)\b.{0,20}\b(jeg|meg|i|me)\b"
    r"|\b(søker jeg|får jeg|klager jeg|melder jeg|bestiller jeg|fornyer jeg|finner jeg"
    r"|do i|can i|should i)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class FollowUpContext:
    """What a follow-up builds on: the earlier turn's topic, not its whole text. The topic is a
    few words (`bounded_topic`), so a chain of follow-ups never grows what is searched."""

    question: str  # the earlier question as the user wrote it
    topic: str  # its subject in a few words (meeting form, document, term …)
    cited: tuple[str, ...] = ()  # chunk ids the earlier answer cited


TOPIC_WORDS = 12
TOPIC_CHARS = 160


def bounded_topic(topic: str) -> str:
    """A follow-up's topic as searched: at most TOPIC_WORDS words and TOPIC_CHARS characters."""
    words = topic.split()[:TOPIC_WORDS]
    while words and len(" ".join(words)) > TOPIC_CHARS:
        words.pop()
    return " ".join(words)


@dataclass
class QueryPlan:
    """A question read for searching and answering."""

    question: str  # as the user wrote it
    text: str  # normalized: bokmål question words, spelling mended
    language: str  # "nb" or "en": what the answer is written in
    answer_type: AnswerType
    present: bool = False  # asks about "today"/"now"
    errand: bool = False  # asks how to do something for oneself ("hvordan søker jeg …")
    day: bool = False  # a date question asking for a time of year or a day, not a year
    years: tuple[int, ...] = ()  # years the question names
    abbreviation: str = ""  # the abbreviation whose words are asked for ("TB")
    corrections: dict[str, str] = field(default_factory=dict)  # misspelt word → mended
    context: FollowUpContext | None = None

    @property
    def search_text(self) -> str:
        """What is searched: the question, and for a follow-up the earlier topic with it."""
        if self.context and self.context.topic:
            return f"{self.text} {bounded_topic(self.context.topic)}"
        return self.text


def from_nynorsk(text: str) -> str:
    """Nynorsk question and function words in bokmål ("Kven leiar møtet?" → "hvem leder …")."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        replacement = _NYNORSK[word.lower()]
        return replacement.capitalize() if word[0].isupper() else replacement

    def swap_stem(match: re.Match[str]) -> str:
        word = match.group(0)
        replacement = _NYNORSK_STEMS[word.lower()]
        return replacement.capitalize() if word[0].isupper() else replacement

    return _NYNORSK_STEM.sub(swap_stem, _NYNORSK_WORD.sub(swap, text))


def answer_type(text: str) -> AnswerType:
    """A yes/no question asks for a rule; otherwise the first cue that matches, most specific
    first."""
    if _YES_NO.match(text):
        return AnswerType.RULE
    if abbreviation_asked(text):  # before "hva står … for?" is read as a definition
        return AnswerType.EXPANSION
    for kind, pattern in _TYPE_CUES:
        if pattern.search(text):
            return kind
    return AnswerType.RULE if _VERB_FIRST.match(text) else AnswerType.OTHER


_MARKUP = re.compile(r"</?[a-zA-Z][^<>]{0,200}>")


def plan(
    question: str,
    speller: Speller | None = None,
    context: FollowUpContext | None = None,
) -> QueryPlan:
    question = " ".join(question.split())
    language = detect_language(question)
    text = " ".join(_MARKUP.sub(" ", question).split())  # pasted HTML tags are not the question
    text = from_nynorsk(text) if language != "en" else text
    corrections: dict[str, str] = {}
    if speller is not None:
        # English words are not misspelt Norwegian ones: only long (compound) words are mended.
        text, corrections = speller.mend(text, min_chars=TWO_EDITS_CHARS if language == "en" else 0)
    return QueryPlan(
        question=question,
        text=text,
        language=language,
        answer_type=answer_type(text),
        present=bool(_PRESENT.search(text)),
        errand=bool(_ERRAND.search(text)),
        day=bool(_DAY.search(text)),
        years=tuple(sorted({int(y) for y in _YEAR.findall(text)})),
        abbreviation=abbreviation_asked(text),
        corrections=corrections,
        context=context,
    )


# ---------------------------------------------------------------------------------------------
# Spelling: a misspelt domain word ("etatstyringsmøtet") is mended to the index's own word


_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
MIN_MEND_CHARS = 6  # shorter words are too easily mended into another word
TWO_EDITS_CHARS = 11  # from this length a word may be two edits from the index's word
MIN_TARGET_COUNT = 2  # a word is mended only into one the documents use more than once


class Speller:
    """Mends words the index has never seen into a word it has, one edit away (two for long
    words), found through deletions (symmetric-delete look-up) and confirmed with the
    Damerau–Levenshtein distance. The first letter is kept: typos there are rare, and mending it
    turns one word into another."""

    def __init__(self, counts: Counter[str]) -> None:
        self._counts = counts
        self._deletes: dict[int, dict[str, list[str]]] = {}

    def _index(self, min_count: int = MIN_TARGET_COUNT) -> dict[str, list[str]]:
        if min_count not in self._deletes:
            deletes: dict[str, list[str]] = {}
            for word, n in self._counts.items():
                if n < min_count or len(word) < MIN_MEND_CHARS - 1 or not word.isalpha():
                    continue
                for key in {word, *_deletions(word)}:
                    deletes.setdefault(key, []).append(word)
            self._deletes[min_count] = deletes
        return self._deletes[min_count]

    def correct(self, word: str, min_chars: int = 0) -> str | None:
        """The index's word for a word it does not know, or None."""
        lowered = word.lower()
        if len(lowered) < max(MIN_MEND_CHARS, min_chars) or lowered in self._counts:
            return None
        return self._nearest(lowered, self._index())

    def resembles(self, word: str) -> bool:
        """Whether the index has this word, or one a typo away, even one it uses only once (a
        misspelt name: "Jostien" for "Jostein")."""
        lowered = word.lower()
        if lowered in self._counts:
            return True
        return len(lowered) >= MIN_MEND_CHARS and self._nearest(lowered, self._index(1)) is not None

    def _nearest(self, lowered: str, index: dict[str, list[str]]) -> str | None:
        limit = 1 if len(lowered) < TWO_EDITS_CHARS else 2
        candidates: set[str] = set()
        for key in {lowered, *_deletions(lowered)}:
            candidates.update(index.get(key, ()))
        best = None
        for candidate in candidates:
            if candidate[0] != lowered[0]:
                continue
            distance = _damerau_levenshtein(lowered, candidate, limit)
            if distance <= limit:
                rank = (distance, -self._counts[candidate], candidate)
                if best is None or rank < best[0]:
                    best = (rank, candidate)
        return best[1] if best else None

    def mend(self, text: str, min_chars: int = 0) -> tuple[str, dict[str, str]]:
        corrections: dict[str, str] = {}

        def swap(match: re.Match[str]) -> str:
            word = match.group(0)
            fixed = self.correct(word, min_chars)
            if fixed is None:
                return word
            corrections[word] = fixed
            return fixed.capitalize() if word[0].isupper() else fixed

        return _WORD.sub(swap, text), corrections


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def _damerau_levenshtein(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance, giving up (limit + 1) once it exceeds `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]
