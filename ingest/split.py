"""Cleaned pages → readable chunks (whole bullets, sentences) that know their page and heading."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import cache

from ingest.model import Chunk, Page, Source

# About 60–300 tokens of Norwegian (roughly four characters a token): one slide is usually one
# chunk, a long memo page becomes a few.
CHUNK_CHARS = 1100
MIN_CHUNK_CHARS = 240
# Fewer letters than this is a title slide or a "Takk for oss!", not a passage worth retrieving.
MIN_LETTERS = 25


@cache
def _splitter():  # type: ignore[no-untyped-def]
    # Imported on first use: a sync with nothing to split should not pay for LangChain's import.
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(
        chunk_size=CHUNK_CHARS,
        chunk_overlap=0,
        # Strongest break first; a sentence break is the white space after its full stop, so
        # the stop stays with its sentence.
        separators=["\n\n\n", "\n\n", "\n• ", "\n", r"(?<=[.!?])\s+", "; ", ", ", " "],
        is_separator_regex=True,
        keep_separator="start",
        strip_whitespace=True,
    )


_NUMBERED_HEADING = re.compile(r"^\d+(\.\d+)*\.?\s+\S")


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def _looks_like_heading(line: str) -> bool:
    line = line.strip()
    if not line or len(line) > 90 or line.startswith(("•", "-", "–", "(")):
        return False
    if line.endswith((",", ";", ".")) and not _NUMBERED_HEADING.match(line):
        return False
    first = line[0]
    return first.isupper() or first.isdigit() or first in '«"'


def _page_heading(page: Page, text: str, is_presentation: bool) -> str | None:
    if page.heading:
        return page.heading
    first = next((line for line in text.split("\n") if line.strip()), "")
    if is_presentation and _looks_like_heading(first):
        return first.strip()
    return None


def _section_headings(text: str) -> list[tuple[int, str]]:
    """Offsets of section headings in running text ("2. Bakgrunn", a short line set apart)."""
    found = []
    lines = text.split("\n")
    offset = 0
    for i, line in enumerate(lines):
        before = lines[i - 1] if i > 0 else ""
        after = lines[i + 1] if i + 1 < len(lines) else ""
        set_apart = not before.strip() and not after.strip()
        standalone = set_apart or _NUMBERED_HEADING.match(line)
        if _looks_like_heading(line) and standalone and len(line.split()) <= 12:
            found.append((offset, line.strip()))
        offset += len(line) + 1
    return found


def _tidy(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def chunk_id(source: str, ordinal: int, text: str) -> str:
    digest = hashlib.sha1(f"{source}\n{ordinal}\n{text}".encode()).hexdigest()
    return f"{hashlib.sha1(source.encode()).hexdigest()[:10]}-{ordinal:04d}-{digest[:10]}"


def split_pages(source: Source, pages: Sequence[Page], texts: Sequence[str]) -> list[Chunk]:
    """Split each cleaned page text into chunks; a chunk never spans two pages."""
    is_presentation = source.kind == "presentation"
    chunks: list[Chunk] = []
    current_heading: str | None = None
    for page, text in zip(pages, texts, strict=True):
        if _letters(text) < MIN_LETTERS:
            continue
        heading = _page_heading(page, text, is_presentation)
        pieces = _merge_small(_splitter().split_text(text))
        sections = _section_headings(text) if not heading else []
        cursor = 0
        for piece in pieces:
            start = text.find(piece[:40], cursor)
            cursor = max(cursor, start)
            for offset, title in sections:
                if offset <= max(start, 0):
                    current_heading = title
            piece_heading = heading or current_heading
            body = _tidy(piece)
            if _letters(body) < MIN_LETTERS:
                continue
            chunks.append(
                Chunk(
                    id=chunk_id(source.path, len(chunks), body),
                    source=source.path,
                    title=source.title,
                    location=source.location(page),
                    heading=piece_heading,
                    text=body,
                )
            )
    return chunks


def _merge_small(pieces: list[str]) -> list[str]:
    """Fold pieces too short to stand alone into a neighbour on the same page."""
    merged: list[str] = []
    for piece in pieces:
        small = merged and min(len(piece), len(merged[-1])) < MIN_CHUNK_CHARS
        if small and len(merged[-1]) + len(piece) <= CHUNK_CHARS * 1.4:
            merged[-1] = f"{merged[-1]}\n\n{piece}"
            continue
        merged.append(piece)
    return merged


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[«\"(]?[A-ZÆØÅ0-9•])")
_BULLET = re.compile(r"^\s*(?:[•●▪◦·\-–+*o]\s|[•●▪◦·]|\d{1,2}[.)]\s)")
_CARRIES_ON = re.compile(r"[,/\-–+&(]$|\b(og|eller|i|av|til|for|med|på|om|som|at|den|det|en|et)$")
_LIST_NUMBER = re.compile(r"^\d{1,2}[.)]$")
# A full stop that does not end a sentence: a list number or a common abbreviation.
_OPEN_END = re.compile(
    r"(^|\s)(\d{1,2}|nr|jf|ca|bl\.a|f\.eks|dvs|mv|evt|osv|pkt|kap|ref|mht|iht|vs)\.$",
    re.IGNORECASE,
)
MIN_SENTENCE_WORDS = 2


def lines(text: str) -> list[str]:
    """The passage's lines, with a line the source broke mid-sentence joined to the next one:
    "Fra BYR:" + "ledergruppe/utvalgte medarbeidere." is one line, a new bullet never is."""
    joined: list[str] = []
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            if joined and joined[-1]:
                joined.append("")  # a blank line ends whatever came before
            continue
        if joined and not joined[-1] and len(joined) > 1:
            above = joined[-2]
            if _LIST_NUMBER.match(above) or _CARRIES_ON.search(above):
                joined.pop()  # "1." or "… og" above a blank line runs on into the next line
        previous = joined[-1] if joined else ""
        first = next((ch for ch in line if ch.isalnum()), "")
        continues = (
            bool(previous)
            and not _BULLET.match(line)
            and (
                first.islower()
                or line[0] == "("
                or bool(_CARRIES_ON.search(previous))
                or bool(_LIST_NUMBER.match(previous))
            )
        )
        if continues:
            joined[-1] = f"{previous} {line}"
        else:
            joined.append(line)
    return [line for line in joined if line]


def sentences(text: str) -> list[str]:
    """The sentences and bullets of a passage, as they stand: whole, never cut mid-sentence."""
    found = []
    for line in lines(text):
        parts: list[str] = []
        for part in _SENTENCE_SPLIT.split(line):
            if parts and _OPEN_END.search(parts[-1]):
                parts[-1] = f"{parts[-1]} {part}"  # "1. Innledning", "Byrådssak nr. 1", "jf. KMD"
            else:
                parts.append(part)
        for part in parts:
            part = part.strip(" •●▪◦·–-")
            if any(ch.isalnum() for ch in part):
                found.append(part)
    return found


def sentence_units(chunk: Chunk) -> list[str]:
    """The sentences of a chunk that get a vector of their own (one-word lines do not)."""
    return [s for s in sentences(chunk.text) if len(s.split()) >= MIN_SENTENCE_WORDS]


def sentence_texts(chunk: Chunk) -> list[str]:
    """What the embedder sees of each sentence: the document title travels with it."""
    return [f"{chunk.title}: {s}" for s in sentence_units(chunk)]


def spans_of(text: str, units: Sequence[str]) -> list[tuple[int, int] | None]:
    """Where each unit (a sentence of `sentences(…)`, in order) stands in `text`: its words in
    turn with any white space between them, since a sentence may join lines of the source. None
    for a unit that cannot be found."""
    found: list[tuple[int, int] | None] = []
    cursor = 0
    for unit in units:
        words = unit.split()
        if not words:
            found.append(None)
            continue
        pattern = re.compile(r"\s+".join(re.escape(w) for w in words))
        match = pattern.search(text, cursor) or pattern.search(text)
        if match is None:
            found.append(None)
            continue
        found.append(match.span())
        cursor = match.end()
    return found
