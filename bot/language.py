"""The user's language: tell English from Norwegian in a question, so the answer can follow the
user, and find the Norwegian words the documents use for an English question's words."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

LEXICON_PATH = Path(__file__).with_name("lexicon") / "en-nb.tsv"

_WORD = re.compile(r"[a-zæøåéü]+")

# Function words that are frequent in one language and rare in the other.
_ENGLISH = frozenset(
    [
        "the",
        "a",
        "an",
        "of",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "what",
        "who",
        "whom",
        "whose",
        "which",
        "when",
        "where",
        "why",
        "how",
        "does",
        "do",
        "did",
        "should",
        "would",
        "could",
        "can",
        "will",
        "shall",
        "must",
        "may",
        "might",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "they",
        "it",
        "its",
        "with",
        "from",
        "about",
        "into",
        "and",
        "or",
        "not",
        "no",
        "any",
        "some",
        "our",
        "we",
        "you",
        "your",
        "my",
        "me",
        "he",
        "she",
        "his",
        "her",
    ]
)
# … and others that carry no topic: an English question's word the lexicon has no entry for
# counts as unknown to the documents only when it is none of these.
_FUNCTION = _ENGLISH | frozenset(
    [
        "in",
        "on",
        "at",
        "for",
        "to",
        "by",
        "as",
        "if",
        "than",
        "then",
        "so",
        "also",
        "only",
        "just",
        "up",
        "out",
        "off",
        "over",
        "has",
        "have",
        "had",
        "having",
        "get",
        "gets",
        "got",
        "us",
        "i",
        "him",
        "them",
        "am",
        "being",
        "here",
    ]
)

_NORWEGIAN = frozenset(
    [
        "og",
        "i",
        "er",
        "det",
        "en",
        "et",
        "av",
        "på",
        "til",
        "som",
        "med",
        "for",
        "har",
        "ikke",
        "den",
        "de",
        "om",
        "skal",
        "kan",
        "hva",
        "hvem",
        "hvordan",
        "hvor",
        "hvilke",
        "hvilken",
        "hvorfor",
        "når",
        "må",
        "bør",
        "vi",
        "jeg",
        "du",
        "dere",
        "man",
        "seg",
        "sin",
        "sitt",
        "sine",
        "eller",
        "også",
        "etter",
        "ved",
        "fra",
        "mellom",
        "under",
        "være",
        "blir",
        "ble",
        "står",
        "dette",
        "disse",
        "noe",
        "noen",
        "alle",
        "mye",
        "mer",
        "enn",
        "hos",
    ]
)


def detect(text: str) -> str:
    """ "en" when the text reads as English, otherwise "nb" (the users' usual language)."""
    words = _WORD.findall(text.lower())
    english = sum(w in _ENGLISH for w in words)
    norwegian = sum(w in _NORWEGIAN for w in words)
    if any(ch in text.lower() for ch in "æøå"):
        norwegian += 1
    return "en" if english > norwegian else "nb"


class Lexicon:
    """English words and phrases → the Norwegian words the documents use for them.

    Searches Norwegian documents with an English question: "How many employees …" also searches
    for "ansatte" and "medarbeidere". Longest phrase first ("chain of command" before "command").
    """

    MAX_PHRASE = 4

    def __init__(self, entries: dict[str, tuple[str, ...]]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, path: Path) -> Lexicon:
        entries: dict[str, tuple[str, ...]] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if not line.strip() or line.startswith("#") or "\t" not in line:
                    continue
                english, norwegian = line.split("\t", 1)
                words = tuple(w.strip() for w in norwegian.split(",") if w.strip())
                if english.strip() and words:
                    entries[" ".join(english.lower().split())] = words
        return cls(entries)

    @staticmethod
    @cache
    def bundled() -> Lexicon:
        return Lexicon.load(LEXICON_PATH)

    def translate(self, text: str) -> str:
        """The Norwegian words for the English words and phrases of `text`, once each."""
        return self.read(text)[0]

    def read(self, text: str) -> tuple[str, str]:
        """(the Norwegian words for the English words and phrases of `text`, the words it has no
        entry for, function words left out: "weather" and "tomorrow", not "what is the")."""
        tokens = _WORD.findall(text.lower())
        found: list[str] = []
        missing: list[str] = []
        i = 0
        while i < len(tokens):
            for size in range(min(self.MAX_PHRASE, len(tokens) - i), 0, -1):
                words = self.entries.get(" ".join(tokens[i : i + size]))
                if words:
                    found.extend(w for w in words if w not in found)
                    i += size
                    break
            else:
                if tokens[i] not in _FUNCTION:
                    missing.append(tokens[i])
                i += 1
        return " ".join(found), " ".join(missing)
