"""The knowledge manifest (`sources.yaml`): title, kind, date and description of each file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ingest.loaders import MAX_TITLE_CHARS
from ingest.model import Source

MANIFEST_NAME = "sources.yaml"
KINDS = ("presentation", "document", "memo")
# Any other field of an entry (a description, say): shown at most, never embedded.
MAX_FIELD_CHARS = 2000
# A YAML file of the knowledge folder larger than this is not a manifest or a glossary.
MAX_YAML_BYTES = 2_000_000


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
        text = read_yaml_text(path, ManifestError)
        data = load_yaml(text, path, ManifestError) or {}
        documents = data.get("documents", []) if isinstance(data, dict) else None
        if not isinstance(documents, list):
            raise ManifestError(f"{path} må ha en liste under «documents:»; se eksempelet i filen.")
        entries: dict[str, dict[str, str]] = {}
        for item in documents:
            if not isinstance(item, dict) or not item.get("file"):
                raise ManifestError(f"Hver oppføring i {path} trenger et «file:»-felt.")
            name = str(item["file"])
            if not isinstance(item["file"], str) or len(name) > MAX_FIELD_CHARS:
                raise ManifestError(
                    f"«file:» i {path} skal være stien til én fil (høyst {MAX_FIELD_CHARS} tegn); "
                    "rett oppføringen."
                )
            entry: dict[str, str] = {}
            for key, value in item.items():
                if value is None:
                    continue
                limit = MAX_TITLE_CHARS if key == "title" else MAX_FIELD_CHARS
                if expanded_size(value, limit) > limit:
                    what = "Tittelen" if key == "title" else f"Feltet «{key}»"
                    raise ManifestError(
                        f"{what} til {name} i {path} er lengre enn {limit} tegn; kort den ned og "
                        "kjør ingest på nytt."
                    )
                entry[str(key)] = str(value)
            kind = item.get("kind", "document")
            if kind not in KINDS:
                raise ManifestError(
                    f"{path}: «kind: {kind}» for {name} er ukjent; bruk {', '.join(KINDS)}."
                )
            entries[name] = entry
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


def read_yaml_text(path: Path, error: type[Exception]) -> str:
    """The text of a YAML file of the knowledge folder; a file that is too large, unreadable or
    not UTF-8 is `error`, one sentence naming the file and what to do."""
    return decode_yaml(read_yaml_bytes(path, error), str(path), error)


def read_yaml_bytes(path: Path, error: type[Exception]) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(
            f"Kunne ikke lese {path} ({exc.strerror or exc.__class__.__name__}); sjekk filen og "
            "prøv igjen."
        ) from exc
    if len(raw) > MAX_YAML_BYTES:
        raise error(
            f"{path} er på {len(raw) // 1_000_000} MB, mer enn en slik fil kan være; sjekk at det "
            "er riktig fil."
        )
    return raw


def decode_yaml(raw: bytes, shown: str, error: type[Exception]) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(
            f"{shown} er ikke lagret som UTF-8; lagre den som UTF-8 (i redigeringsprogrammets "
            "«Lagre som») og kjør ingest på nytt."
        ) from None


MAX_YAML_DEPTH = 40  # lists and mappings inside each other; the real files need 4
# libyaml's parser where PyYAML was built with it (its wheels are): the role guide's three files
# parse in 11 ms instead of 140, which every `ask` and `serve` pays when it opens the index.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str, path: Path, error: type[Exception]) -> object:
    """`yaml.safe_load` with bounds: nesting deeper than MAX_YAML_DEPTH is refused before the
    (recursive) loader sees it, and so are aliases that would make the data far larger than the
    file. Invalid YAML is `error` too, one sentence naming the file."""
    try:
        depth = 0
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise error(
                        f"{path} har lister eller oppslag mer enn {MAX_YAML_DEPTH} nivåer inni "
                        "hverandre; skriv fila flatere."
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        data = yaml.load(text, Loader=_LOADER)  # a safe loader, C or Python
    except yaml.YAMLError as exc:
        raise error(f"{path} er ikke gyldig YAML ({exc.__class__.__name__}); rett fila.") from exc
    check_expansion(data, text, path, error)
    return data


def expanded_size(value: object, limit: int) -> int:
    """Characters in `value` with every YAML alias written out (yaml.safe_load shares an aliased
    node instead of copying it, so a small file can stand for an enormous text); counting stops
    as soon as it passes `limit`, so a billion-laughs file costs no more than `limit` steps."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, dict):
            total += 2 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            total += len(item) + 1
            stack.extend(item)
        else:
            total += len(str(item)) if isinstance(item, str) else len(repr(item))
    return total


def check_expansion(data: object, text: str, path: Path, error: type[Exception]) -> None:
    """Refuse a YAML file whose aliases (&navn … *navn) make it far larger once read."""
    limit = 10 * len(text) + 100_000
    if expanded_size(data, limit) > limit:
        raise error(
            f"{path} blir mer enn {limit} tegn når YAML-aliasene (*navn) er fylt inn; skriv "
            "verdiene ut uten aliaser og prøv igjen."
        )
