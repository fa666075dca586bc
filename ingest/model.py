"""The small records that flow through ingestion: a loaded page, a source's metadata, a chunk."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Page:
    """A page, slide or section of a loaded file."""

    text: str
    number: int | None = None  # real page/slide number; None when the format has no pages
    heading: str | None = None  # section heading, when the format marks one


@dataclass(frozen=True)
class Source:
    """A knowledge file and its manifest metadata."""

    path: str  # relative to the knowledge dir, with forward slashes
    title: str
    kind: str = "document"  # presentation | document | memo
    date: str | None = None
    description: str | None = None

    def location(self, page: Page) -> str | None:
        """How a citation names where in the source a page is ("lysbilde 12", "side 3")."""
        if page.number is not None:
            word = "lysbilde" if self.kind == "presentation" else "side"
            return f"{word} {page.number}"
        return f"«{page.heading}»" if page.heading else None


@dataclass(frozen=True)
class Chunk:
    """A passage as indexed: readable text plus where it comes from."""

    id: str
    source: str
    title: str
    location: str | None
    heading: str | None
    text: str

    def embedding_text(self) -> str:
        """The text the embedder sees: title and heading travel with the passage as context."""
        context = self.title if not self.heading else f"{self.title} – {self.heading}"
        return f"{context}\n{self.text}"

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)
