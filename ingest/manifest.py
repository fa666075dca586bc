"""The knowledge manifest (`sources.yaml`): title, kind, date and description of each file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ingest.model import Source

MANIFEST_NAME = "sources.yaml"
KINDS = ("presentation", "document", "memo")


class ManifestError(Exception):
    """The manifest cannot be read; the message says what to fix."""


@dataclass
class Manifest:
    entries: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def read(cls, knowledge_dir: Path) -> Manifest:
        path = knowledge_dir / MANIFEST_NAME
        if not path.exists():
            return cls()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ManifestError(
                f"{path} er ikke gyldig YAML ({exc.__class__.__name__}); rett filen og prøv igjen."
            ) from exc
        documents = data.get("documents", []) if isinstance(data, dict) else None
        if not isinstance(documents, list):
            raise ManifestError(f"{path} må ha en liste under «documents:»; se eksempelet i filen.")
        entries: dict[str, dict[str, str]] = {}
        for item in documents:
            if not isinstance(item, dict) or not item.get("file"):
                raise ManifestError(f"Hver oppføring i {path} trenger et «file:»-felt.")
            kind = item.get("kind", "document")
            if kind not in KINDS:
                raise ManifestError(
                    f"{path}: «kind: {kind}» for {item['file']} er ukjent; bruk {', '.join(KINDS)}."
                )
            entries[str(item["file"])] = {k: str(v) for k, v in item.items() if v is not None}
        return cls(entries)

    def source_for(self, relative: str, declared_title: str | None = None) -> Source:
        """The manifest entry for a file, or defaults read off the file itself."""
        entry = self.entries.get(relative, {})
        suffix = Path(relative).suffix.lower()
        default_kind = "presentation" if suffix == ".pptx" else "document"
        return Source(
            path=relative,
            title=entry.get("title") or declared_title or title_from_filename(relative),
            kind=entry.get("kind", default_kind),
            date=entry.get("date"),
            description=" ".join(entry["description"].split())
            if entry.get("description")
            else None,
        )

    def entry_fingerprint(self, relative: str) -> str:
        entry = self.entries.get(relative, {})
        return repr(sorted(entry.items()))


def title_from_filename(relative: str) -> str:
    stem = Path(relative).stem
    words = re.sub(r"[-_]+", " ", stem).strip()
    return words[:1].upper() + words[1:] if words else relative
