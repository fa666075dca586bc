"""Text cleaning: Unicode and white space, slide-template boilerplate, hyphenation and line wrap."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

# Bullets that PDF/PowerPoint extraction leaves as private-use symbol-font characters.
_BULLETS = str.maketrans({"\uf0b7": "•", "\uf0a7": "•", "\uf076": "•", "\uf0d8": "•", "▪": "•"})
_LINE_SEPARATORS = re.compile(r"\r\n?|[\u2028\u2029\x0b\f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
# Control characters (but tab and line feed) and bidirectional overrides, embeddings, isolates and
# marks: a terminal obeys them (ESC clears and recolours it, BEL rings) and RLO turns text around
# in a chat. No document needs them.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

# A line is boilerplate when it recurs on at least this share of a document's pages (and on at
# least MIN_PAGES pages): slide-template text, running headers and footers.
BOILERPLATE_SHARE = 0.2
BOILERPLATE_MIN_PAGES = 3
_MAX_PREFIX_WORDS = 8


def strip_unsafe(text: str) -> str:
    """The text without control characters (tab and line feed kept) or bidi controls."""
    return _UNSAFE.sub("", text)


def shorten(text: str, limit: int, mark: str = "…") -> str:
    """`text` in at most `limit` characters, cut at a word boundary where one is near the end."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - len(mark)]
    space = cut.rfind(" ")
    if space >= len(cut) * 2 // 3:
        cut = cut[:space]
    return cut.rstrip(" ,.;:–-") + mark


def normalize(text: str) -> str:
    """NFC, one kind of line break and bullet, no soft hyphens, no white space at line ends, no
    control or bidi-override characters."""
    text = unicodedata.normalize("NFC", text).replace("\u00ad", "").translate(_BULLETS)
    text = strip_unsafe(_LINE_SEPARATORS.sub("\n", text))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(lines)


def fold(text: str) -> str:
    """The form in which a quote is looked up in a passage: lower-case; NFC; no soft hyphens;
    one kind of quote and dash; white space folded (the eval set's matching rule)."""
    text = unicodedata.normalize("NFC", text.lower()).replace("\u00ad", "")
    for quote in "”“«»":
        text = text.replace(quote, '"')
    text = text.replace("–", "-").replace("—", "-")
    return " ".join(text.split())


def _key(line: str) -> str:
    return " ".join(line.casefold().split())


def find_boilerplate(pages: Sequence[str]) -> set[str]:
    """Lines (case-folded) that stand alone on many pages of one document."""
    if len(pages) < BOILERPLATE_MIN_PAGES:
        return set()
    seen_on = Counter[str]()
    for page in pages:
        seen_on.update({_key(line) for line in page.split("\n") if re.search(r"\w", line)})
    needed = max(BOILERPLATE_MIN_PAGES, math.ceil(BOILERPLATE_SHARE * len(pages)))
    return {key for key, count in seen_on.items() if count >= needed}


def strip_boilerplate(text: str, boilerplate: set[str]) -> str:
    """Drop boilerplate lines, and boilerplate that runs into a real line ("tekst/logo Formål")."""
    if not boilerplate:
        return text
    kept: list[str] = []
    for line in text.split("\n"):
        key = _key(line)
        if key in boilerplate:
            continue
        words = line.split()
        for n in range(min(len(words) - 1, _MAX_PREFIX_WORDS), 0, -1):
            if _key(" ".join(words[:n])) in boilerplate:
                line = " ".join(words[n:])
                break
        kept.append(line)
    return "\n".join(kept)


_CONJUNCTIONS = {"og", "eller", "til", "samt", "and", "or", "to"}
# "farge-\nkombinasjoner", "Etatsstyrings-\n\nmøter": a word broken at a line end.
_HYPHEN_AT_END = re.compile(r"(\w)-\n(?:\n)?(\w+)")
# "Rapport\n-ering": the hyphen carried to the next line.
_HYPHEN_AT_START = re.compile(r"(\w)\n-([a-zæøå])")
_SENTENCE_END = (".", "!", "?", ":", ";", "»", '"')


def _join_hyphenated(match: re.Match[str]) -> str:
    head, word = match.group(1), match.group(2)
    if word.lower() in _CONJUNCTIONS or not word[0].islower():
        return match.group(0)  # "mål-\nog resultatstyring" keeps its hyphen, and so do names
    return head + word


def dehyphenate(text: str) -> str:
    text = _HYPHEN_AT_END.sub(_join_hyphenated, text)
    return _HYPHEN_AT_START.sub(r"\1\2", text)


def reflow(text: str) -> str:
    """Join lines that the layout wrapped mid-sentence; keep bullets, headings and paragraphs."""
    out: list[str] = []
    blanks = 0
    for line in text.split("\n"):
        if not line:
            blanks += 1
            continue
        prev = out[-1] if out else ""
        continues = (
            blanks <= 1
            and prev
            and (line[0].islower() or (line[0] == "(" and line[1:2].islower()))
            and not prev.endswith(_SENTENCE_END)
            and not prev.startswith("#")
        )
        if continues:
            out[-1] = f"{prev} {line}"
        else:
            # Two or more blank lines often separate slides or columns: keep that stronger break.
            if out and blanks:
                out.extend([""] * min(blanks, 2))
            out.append(line)
        blanks = 0
    return "\n".join(out)


def clean_pages(pages: Sequence[str], extra_boilerplate: Iterable[str] = ()) -> list[str]:
    """Normalize, strip boilerplate, mend hyphenation and wrapping; one string per page."""
    normalized = [normalize(page) for page in pages]
    boilerplate = find_boilerplate(normalized) | set(extra_boilerplate)
    return [reflow(dehyphenate(strip_boilerplate(page, boilerplate))) for page in normalized]
