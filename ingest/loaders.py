"""File → pages, for .txt .md .pdf .docx .pptx .html, on the well-kept parser of each format."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from ingest.clean import shorten
from ingest.model import Page

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".pdf", ".docx", ".pptx", ".html", ".htm")

# A title is shown in every citation and travels with every passage into the model; longer than
# this it is not a title (a sources.yaml title is refused, a file's own title shortened).
MAX_TITLE_CHARS = 300


class LoadError(Exception):
    """A file could not be read; the message says why in one sentence."""


@dataclass(frozen=True)
class LoadedFile:
    pages: list[Page]
    title: str | None = None  # the title the file declares about itself, if any


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES and not path.name.startswith((".", "~$"))


def load(path: Path) -> LoadedFile:
    """Read a supported file into pages; raises LoadError for unreadable or corrupt files."""
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise LoadError(f"filtypen {path.suffix or '(ingen)'} støttes ikke")
    try:
        loaded = loader(path)
    except LoadError:
        raise
    except Exception as exc:  # parsers raise many kinds of errors for corrupt input
        raise LoadError(f"filen er skadet eller ikke en gyldig {path.suffix}-fil ({exc})") from exc
    if loaded.title and len(loaded.title) > MAX_TITLE_CHARS:
        # A file's own title (PDF metadata, first heading) cannot be refused like a manifest one.
        loaded = LoadedFile(loaded.pages, shorten(loaded.title, MAX_TITLE_CHARS))
    return loaded


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LoadError("filen er ikke UTF-8-tekst; lagre den som UTF-8 og prøv igjen") from None


# In plain-text extractions of slides and PDF pages a new page starts with a form feed, or (as in
# the seed extractions) with a line that begins with exactly one space before its first word.
_PAGE_BREAK = re.compile(r"\f|^ (?=\S)", re.MULTILINE)


def load_txt(path: Path) -> LoadedFile:
    text = _read_text(path)
    starts = [m.start() for m in _PAGE_BREAK.finditer(text)]
    if not starts:
        return LoadedFile([Page(text)])
    segments = [text[: starts[0]]] if text[: starts[0]].strip() else []
    segments += [text[a:b] for a, b in pairwise([*starts, len(text)])]
    while len(segments) > 1 and not segments[-1].strip("\f \n"):
        segments.pop()  # a final form feed ends the last page; it does not start another
    return LoadedFile([Page(seg, number=i) for i, seg in enumerate(segments, start=1)])


def load_markdown(path: Path) -> LoadedFile:
    from langchain_text_splitters import MarkdownHeaderTextSplitter

    text = _read_text(path)
    headers = [("#", "h1"), ("##", "h2"), ("###", "h3")]
    splitter = MarkdownHeaderTextSplitter(headers_to_split_on=headers, strip_headers=False)
    pages: list[Page] = []
    title: str | None = None
    for doc in splitter.split_text(text):
        heading = doc.metadata.get("h3") or doc.metadata.get("h2") or doc.metadata.get("h1")
        title = title or doc.metadata.get("h1")
        body = re.sub(r"^#{1,6}\s+", "", doc.page_content, flags=re.MULTILINE)
        pages.append(Page(body, heading=heading))
    return LoadedFile(pages, title)


def load_pdf(path: Path) -> LoadedFile:
    from pypdf import PdfReader

    reader = PdfReader(path)
    if reader.is_encrypted:
        raise LoadError("PDF-en er passordbeskyttet; lagre en kopi uten passord")
    pages = [Page(page.extract_text() or "", number=i) for i, page in enumerate(reader.pages, 1)]
    meta = reader.metadata
    return LoadedFile(pages, (meta.title if meta else None) or None)


def load_docx(path: Path) -> LoadedFile:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(str(path))
    sections = _Sections()
    lines = sections.lines
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            style = (block.style.name if block.style is not None else "") or ""
            if style.startswith(("Heading", "Overskrift", "Title", "Tittel")) and text:
                sections.start(text)
            elif text:
                lines.append(f"• {text}" if style.startswith(("List", "Liste")) else text)
            lines.append("")
        elif isinstance(block, Table):
            for row in block.rows:
                cells = [cell.text.strip() for cell in row.cells]
                lines.append(" | ".join(dict.fromkeys(c for c in cells if c)))
            lines.append("")
    return LoadedFile(sections.finish(), document.core_properties.title or None)


def load_pptx(path: Path) -> LoadedFile:
    from pptx import Presentation

    deck = Presentation(str(path))
    pages: list[Page] = []
    for number, slide in enumerate(deck.slides, start=1):
        title_shape = slide.shapes.title
        heading = title_shape.text_frame.text.strip() if title_shape is not None else None
        lines: list[str] = []
        for shape in _walk_shapes(slide.shapes):
            if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                for paragraph in shape.text_frame.paragraphs:
                    text = "".join(run.text for run in paragraph.runs).strip()
                    if text:
                        lines.append(text)
                lines.append("")
            elif getattr(shape, "has_table", False) and shape.has_table:
                for row in shape.table.rows:
                    cells = [cell.text.strip() for cell in row.cells]
                    lines.append(" | ".join(c for c in cells if c))
                lines.append("")
        pages.append(Page("\n".join(lines), number=number, heading=heading or None))
    return LoadedFile(pages, deck.core_properties.title or None)


def _walk_shapes(shapes):  # type: ignore[no-untyped-def]
    for shape in shapes:
        if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP
            yield from _walk_shapes(shape.shapes)
        else:
            yield shape


class _Sections:
    """Collects the lines of a headed document (DOCX, HTML) into one page per section."""

    def __init__(self) -> None:
        self.pages: list[Page] = []
        self.heading: str | None = None
        self.lines: list[str] = []

    def _flush(self) -> None:
        if any(line.strip() for line in self.lines):
            self.pages.append(Page("\n".join(self.lines), heading=self.heading))
        self.lines.clear()

    def start(self, heading: str) -> None:
        self._flush()
        self.heading = heading
        self.lines.append(heading)

    def finish(self) -> list[Page]:
        self._flush()
        return self.pages


_HTML_BLOCKS = ["h1", "h2", "h3", "h4", "p", "li", "td", "th", "pre", "blockquote", "dt", "dd"]


def load_html(path: Path) -> LoadedFile:
    from bs4 import BeautifulSoup

    raw = path.read_bytes()
    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "header", "footer", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    root = soup.body or soup
    sections = _Sections()

    for element in root.find_all(_HTML_BLOCKS):
        if element.find_parent(_HTML_BLOCKS):
            continue  # its text is part of the enclosing block
        text = element.get_text(" ", strip=True)
        if not text:
            continue
        if element.name in ("h1", "h2", "h3", "h4"):
            sections.start(text)
            sections.lines.append("")
            title = title or text
        else:
            sections.lines.extend([f"• {text}" if element.name == "li" else text, ""])
    pages = sections.finish()
    if not pages:
        text = root.get_text("\n", strip=True)
        if text:
            pages.append(Page(text))
    return LoadedFile(pages, title or None)


_LOADERS: dict[str, Callable[[Path], LoadedFile]] = {
    ".txt": load_txt,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".pdf": load_pdf,
    ".docx": load_docx,
    ".pptx": load_pptx,
    ".html": load_html,
    ".htm": load_html,
}
