"""The role guide: the glossary and the meeting/document cards in `knowledge/`, read as data.

`glossary.yaml` expands the domain's abbreviations and maps English phrases onto the documents'
Norwegian terms (query expansion), and answers "Hva står MRS for?". `roles.yaml` describes each
meeting form and governance document field by field, plus the criteria that tell governance
(styring) from informal dialogue. Every entry cites a verbatim quote from a source document; the
quote is resolved to the indexed passage that holds it, and that passage is what the answer cites.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.clean import fold as normalize

if TYPE_CHECKING:
    from bot.intro import Course

GLOSSARY_FILE = "glossary.yaml"
ROLES_FILE = "roles.yaml"
INTRO_FILE = "intro.yaml"  # the onboarding course (bot/intro.py), checked and kept the same way
GUIDE_FILES = (GLOSSARY_FILE, ROLES_FILE, INTRO_FILE)

# What a question asks about a card: cue words per field (Norwegian and English), most specific
# first. Shown to the user under these labels.
FIELDS: dict[str, tuple[str, str, str]] = {
    # name: (Norwegian label, English label, cue pattern)
    "leads": (
        "Ledes av",
        "Chaired by",
        r"\bled(er|es|et|e)?\b|\bchair|\blead(s|ing)?\b|\bran\b|\bruns?\b|\bin charge\b",
    ),
    "participants": (
        "Deltakere",
        "Participants",
        r"\bdelta|\bmøter (opp|fra)\b|\bhvem (er|sitter) (med|i)\b|\battend|\bparticipa",
    ),
    "frequency": (
        "Hyppighet",
        "Frequency",
        r"\bhvor ofte\b|\bhvor mange\b.*\b(år|året|gang|ganger)\b|\bhyppig|\bhow often|\bper year",
    ),
    "minutes": ("Referat", "Minutes", r"\breferat|\bminutes\b|\bnotes?\b"),
    "openness": (
        "Åpenhet",
        "Openness",
        r"\boffentlig|\båpen|\binnsyn|\barkiv|\bpublic|\bopen(ness)?\b|\barchiv",
    ),
    "agenda": (
        "Agenda og innhold",
        "Agenda and content",
        r"\bagenda|\bdagsorden|\btema|\binnhold|\bta opp\b|\bdiskuter"
        r"|\bhva (skal|står) .*\b(i|på)\b|\bcontent|\bdiscuss|\bcontain",
    ),
    "purpose": (
        "Formål",
        "Purpose",
        r"\bformål|\bhensikt|\bhvorfor\b|\bmålet med\b|\bpurpose|\bwhy\b|\bwhat is .* for\b",
    ),
    "role": ("Rolle", "Role", r"\bstyring\b|\bvirksomhetsstyring|\bgovernance\b"),
}

_DEFINITION = re.compile(
    r"^\s*(hva\s+(står|betyr|menes\s+med|er|er\s+en|er\s+et|er\s+det)|hva\s+er\s+(en|et)?|"
    r"forklar|definer|what\s+(does|is|are)|what's|define|explain)\b(?P<rest>.*?)"
    r"(\s+(for|stand\s+for|mean|betyr))?\s*[?.!]*\s*$",
    re.IGNORECASE,
)
_CLASSIFY = re.compile(
    r"\beller\b|\bhva nå\b|\bhva gjør (jeg|vi)\b|\bregnes\b|\bteller\b|\bskal vi\b|"
    r"^\s*(er|var|blir)\s+(dette|det|et|en|den|møtet)\b|\bor\b|^\s*(is|was)\s+(this|it|a|an|the)\b"
    r"|\bwhat now\b|\bwhat do (i|we) do\b|\bforskjell\w*\b|\bskiller\b|\bdifference\b"
    r"|\bcounts?\s+as\b|\bregarded\s+as\b",
    re.IGNORECASE,
)
_GOVERNANCE_ITSELF = {"styring", "governance", "steering"}  # "Hva er styring?"
_GOVERNANCE_WORD = re.compile(
    r"\b(styring|virksomhetsstyring|styringssignal\w*|styrer|styres)\b|\bgovernance\b|"
    r"\bsteering\b|\binstructions?\b|\bsignals?\b",
    re.IGNORECASE,
)
_EXPANSION = re.compile(
    r"\bstår\b.*\bfor\b|\bstands? for\b|\bforkortelse|\babbreviat|\bshort for\b"
    r"|\bspell(ed)? out\b|\bbetyr (forkortelsen|bokstavene)",
    re.IGNORECASE,
)
_ALTERNATIVES = re.compile(r"\beller\b|\bor\b|\bhva nå\b|\bwhat now\b", re.IGNORECASE)


class GuideError(Exception):
    """The glossary or role guide cannot be read; the message says which file and what to fix."""


@dataclass(frozen=True)
class Cite:
    source: str
    quote: str


@dataclass(frozen=True)
class Term:
    term: str
    definition: str
    cite: Cite
    expansion: str | None = None
    aliases: tuple[str, ...] = ()
    english: tuple[str, ...] = ()
    definition_en: str | None = None

    def text(self, english: bool = False) -> str:
        """The definition in the user's language (Norwegian where no English is given)."""
        return (self.definition_en if english else None) or self.definition

    @property
    def norwegian(self) -> str:
        """What the documents call it, for searching: the expansion of an abbreviation, else
        the term itself."""
        return self.expansion or self.term


@dataclass(frozen=True)
class CardField:
    name: str
    text: str
    cites: tuple[Cite, ...]
    text_en: str | None = None

    def body(self, english: bool = False) -> str:
        return (self.text_en if english else None) or self.text


@dataclass(frozen=True)
class Card:
    id: str
    name: str
    kind: str
    governance: bool | None
    aliases: tuple[str, ...]
    english: tuple[str, ...]
    fields: dict[str, CardField]
    name_en: str | None = None

    def display(self, english: bool = False) -> str:
        return (self.name_en if english else None) or self.name


@dataclass(frozen=True)
class Criterion:
    text: str
    cites: tuple[Cite, ...]
    text_en: str | None = None

    def body(self, english: bool = False) -> str:
        return (self.text_en if english else None) or self.text


@dataclass
class GuideMatch:
    """What the guide recognizes in one question."""

    terms: list[Term] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)  # card fields the question asks about
    definition: Term | None = None  # "Hva står MRS for?": the question is this term
    asks_expansion: bool = False  # … and asks what the abbreviation stands for
    classify: bool = False  # "Er dette et fagmøte eller styring?"
    expansion: str = ""  # Norwegian words to search with, in addition to the question

    @property
    def empty(self) -> bool:
        return not (self.terms or self.cards)


@dataclass
class Guide:
    terms: list[Term] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    criteria: list[Criterion] = field(default_factory=list)
    course: Course | None = None  # the onboarding course, when the folder has one

    def __post_init__(self) -> None:
        self._compile()

    @classmethod
    def load(cls, knowledge_dir: Path) -> Guide:
        """Read the glossary and the role guide; a missing file means an empty part."""
        return cls.from_files(read_guide_files(knowledge_dir))

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> Guide:
        """The guide in the contents of its files (by name; a missing name is an empty part):
        what ingest checks is exactly what it keeps with the index."""
        guide = cls()
        glossary = _parse_yaml(GLOSSARY_FILE, files.get(GLOSSARY_FILE))
        if glossary is not None:
            guide.terms = [_term(item, GLOSSARY_FILE) for item in _list(glossary, "terms")]
        roles = _parse_yaml(ROLES_FILE, files.get(ROLES_FILE))
        if roles is not None:
            guide.cards = [_card(item) for item in _list(roles, "cards")]
            guide.criteria = [
                Criterion(
                    _text(item, "text", ROLES_FILE),
                    _cites(item.get("cite"), ROLES_FILE, f" «kriterium {number}»"),
                    _optional_text(item, "text_en"),
                )
                for number, item in enumerate(_list(roles, "criteria"), 1)
            ]
        intro = _parse_yaml(INTRO_FILE, files.get(INTRO_FILE))
        if intro is not None:
            from bot.intro import Course

            guide.course = Course.from_data(intro)
        guide._compile()
        return guide

    def cites(self) -> list[tuple[str, Cite]]:
        """Every quote the guide rests on, with what cites it (for checks and reports)."""
        found = [(f"glossary: {t.term}", t.cite) for t in self.terms]
        for card in self.cards:
            for name, card_field in card.fields.items():
                found.extend((f"{card.name}: {name}", c) for c in card_field.cites)
        for number, criterion in enumerate(self.criteria, 1):
            found.extend((f"criterion {number}", c) for c in criterion.cites)
        if self.course is not None:
            found.extend(self.course.cites())
        return found

    def locate(self, passages: list[tuple[str, str]]) -> dict[Cite, int]:
        """Where each quote stands: the position, among (source, text) passages, of the first
        passage of the quote's source that holds it. Quotes found nowhere are left out."""
        by_source: dict[str, list[tuple[int, str]]] = {}
        for position, (source, text) in enumerate(passages):
            by_source.setdefault(source, []).append((position, normalize(text)))
        found: dict[Cite, int] = {}
        for _, cite in self.cites():
            quote = normalize(cite.quote)
            for position, text in by_source.get(cite.source, []):
                if quote in text:
                    found.setdefault(cite, position)
                    break
        return found

    def missing_quotes(self, passages: list[tuple[str, str]]) -> list[str]:
        """What cites a quote that no passage of its source holds."""
        found = self.locate(passages)
        return [f"{label} ({cite.source})" for label, cite in self.cites() if cite not in found]

    def match(self, question: str) -> GuideMatch:
        result = GuideMatch()
        for term, pattern in self._term_patterns:
            if pattern.search(question):
                result.terms.append(term)
        for card, pattern in self._card_patterns:
            if pattern.search(question):
                result.cards.append(card)
        lowered = question.lower()
        if result.cards:
            result.fields = self.field_cues(question)
        # "agency governance meeting" names a card; it does not ask whether something is styring.
        rest = question
        for card, pattern in self._card_patterns:
            if card in result.cards:
                rest = pattern.sub(" ", rest)
        governance = _GOVERNANCE_WORD.search(rest)
        # "Er det referat fra etatsstyringsmøtet?" asks for a field, not for a classification.
        about_styring = governance or _ALTERNATIVES.search(question) or not result.fields
        result.classify = bool(
            _CLASSIFY.search(question) and (result.cards or governance) and about_styring
        )
        definition = _DEFINITION.match(question)
        asked = ""  # what a definition question asks about, folded, without an article
        if definition:
            asked = normalize(definition.group("rest"))
            asked = re.sub(r"^(en|et|ei|a|an|the)\s+", "", asked).strip(" ?.!\"'")
        # "Hva er styring?" asks what the decision aid tells apart, not for a glossary term.
        if asked in _GOVERNANCE_ITSELF and not result.cards:
            result.classify = True
        if definition and not result.classify:
            for term in result.terms:
                names = [term.term, *term.aliases, *term.english]
                if term.expansion:
                    names.append(term.expansion)
                if any(_same_name(asked, name) for name in names):
                    result.definition = term
                    result.asks_expansion = bool(_EXPANSION.search(question))
                    break
        words = []
        for term in result.terms:
            words.append(term.norwegian)
        for card in result.cards:
            words.append(card.name)
        unique = {w.lower(): w for w in reversed(words) if w.lower() not in lowered}
        result.expansion = " ".join(reversed(unique.values()))
        return result

    @staticmethod
    def field_cues(question: str) -> list[str]:
        """The card fields a question asks about ("hvem leder" → leads), named card or not."""
        lowered = question.lower()
        asked = [name for name, (_, _, cue) in FIELDS.items() if re.search(cue, lowered)]
        return [name for name in asked if name != "role"]

    def match_follow_up(self, context: str, question: str) -> GuideMatch:
        """A follow-up keeps the earlier subject unless it names its own, and asks for its own
        field: "Hvem leder etatsstyringsmøtet?" + "og hvem skriver referatet?" → the minutes
        of the etatsstyringsmøte, not who leads it."""
        match = self.match(f"{context} {question}")
        own = self.match(question)
        if own.cards:
            match.cards = own.cards
        asked = self.field_cues(question)
        if asked and match.cards:
            match.fields = asked
        match.classify = own.classify
        match.definition = own.definition
        return match

    def _compile(self) -> None:
        self._term_patterns = [(t, _names(t.term, t.aliases, t.english)) for t in self.terms]
        self._card_patterns = [(c, _names(c.name, c.aliases, c.english)) for c in self.cards]


def _same_name(rest: str, name: str) -> bool:
    name = normalize(name)
    return rest == name or rest.rstrip("s") == name or rest.startswith(name + " ")


def _names(term: str, aliases: tuple[str, ...], english: tuple[str, ...]) -> re.Pattern[str]:
    """Abbreviations match as written (MRS, not "mrs" inside a word); other names match
    case-insensitively as whole words, inflected endings allowed."""
    alternatives = []
    for name in (term, *aliases, *english):
        name = name.strip()
        if not name:
            continue
        if _is_abbreviation(name):
            alternatives.append(rf"(?<!\w)(?-i:{re.escape(name)})(?!\w)")
        else:
            stem = re.escape(name.lower()).replace(r"\ ", r"\s+")
            # "etatsstyringsmøte" also finds "etatsstyringsmøtet", "-møter", "-møtene"
            alternatives.append(rf"(?<!\w){stem}\w{{0,4}}(?!\w)")
    return re.compile("|".join(alternatives), re.IGNORECASE)


def _is_abbreviation(name: str) -> bool:
    letters = [ch for ch in name if ch.isalpha()]
    return 1 < len(letters) <= 6 and sum(ch.isupper() for ch in letters) >= len(letters) - 1


def read_guide_files(folder: Path) -> dict[str, bytes]:
    """The guide's files in `folder` as they are on disk (absent ones left out)."""
    from ingest.manifest import read_yaml_bytes

    return {
        name: read_yaml_bytes(folder / name, GuideError)
        for name in GUIDE_FILES
        if (folder / name).exists()
    }


def guide_fingerprint(files: Mapping[str, bytes]) -> str:
    """What identifies a guide's files: their names and contents."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\n{len(files[name])}\n".encode())
        digest.update(files[name])
    return digest.hexdigest()


def _parse_yaml(name: str, raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    from ingest.manifest import decode_yaml, load_yaml

    data = load_yaml(decode_yaml(raw, name, GuideError), Path(name), GuideError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GuideError(f"{name} skal være en YAML-ordbok på øverste nivå; rett fila.")
    return data


def _list(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = data.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise GuideError(f"«{key}» skal være en liste av oppføringer; rett fila.")
    return items


def _text(item: dict[str, Any], key: str, file: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        name = item.get("term") or item.get("name") or item.get("id") or "?"
        raise GuideError(f"Oppføringen «{name}» i {file} mangler «{key}»; fyll det inn.")
    return " ".join(value.split())


def _optional_text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return " ".join(value.split()) if isinstance(value, str) and value.strip() else None


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value if v)


def _cites(value: Any, file: str, where: str = "") -> tuple[Cite, ...]:
    items = value if isinstance(value, list) else [value] if value else []
    cites = []
    for item in items:
        if not isinstance(item, dict) or not item.get("source") or not item.get("quote"):
            raise GuideError(
                f"Et sitat{where} i {file} mangler «source» eller «quote»; fyll det inn."
            )
        cites.append(Cite(str(item["source"]), " ".join(str(item["quote"]).split())))
    if not cites:
        raise GuideError(
            f"Oppføringen{where} i {file} har ingen kilde («cite»); hver påstand må ha en."
        )
    return tuple(cites)


def _term(item: dict[str, Any], file: str) -> Term:
    term = _text(item, "term", file)
    return Term(
        term=term,
        definition=_text(item, "definition", file),
        cite=_cites({"source": item.get("source"), "quote": item.get("quote")}, file, f" «{term}»")[
            0
        ],
        expansion=(item.get("expansion") or None),
        aliases=_strings(item.get("aliases")),
        english=_strings(item.get("english")),
        definition_en=_optional_text(item, "definition_en"),
    )


def _card(item: dict[str, Any]) -> Card:
    name = _text(item, "name", ROLES_FILE)
    fields_data = item.get("fields") or {}
    if not isinstance(fields_data, dict):
        raise GuideError(f"«fields» på kortet «{name}» skal være en ordbok; rett fila.")
    fields = {}
    for field_name, value in fields_data.items():
        if field_name not in FIELDS:
            known = ", ".join(FIELDS)
            raise GuideError(
                f"Kortet «{name}» har feltet «{field_name}», som ikke finnes; bruk ett av {known}."
            )
        if not isinstance(value, dict):
            raise GuideError(f"Feltet «{field_name}» på kortet «{name}» mangler tekst og kilde.")
        fields[field_name] = CardField(
            field_name,
            _text(value, "text", ROLES_FILE),
            _cites(value.get("cite"), ROLES_FILE, f" «{name}: {field_name}»"),
            _optional_text(value, "text_en"),
        )
    governance = item.get("governance")
    return Card(
        id=str(item.get("id") or name.lower()),
        name=name,
        kind=str(item.get("kind") or "meeting"),
        governance=governance if isinstance(governance, bool) else None,
        aliases=_strings(item.get("aliases")),
        english=_strings(item.get("english")),
        fields=fields,
        name_en=_optional_text(item, "name_en"),
    )
