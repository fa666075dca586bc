"""Incremental sync of the knowledge folder into the index, by content hash.

Unchanged files are skipped (nothing re-embedded), changed files replaced, deleted files removed.
A file that cannot be read is reported and skipped; if an earlier version of it was indexed, that
version stays. The new index is written beside the old one and takes over in one atomic step.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingest.clean import clean_pages, find_boilerplate, normalize
from ingest.embeddings import Embedder, EmbedderSpec
from ingest.loaders import LoadError, is_supported, load
from ingest.manifest import MANIFEST_NAME, Manifest
from ingest.model import Chunk, Page
from ingest.split import sentence_texts, sentence_units, split_pages
from ingest.store import (
    FileRecord,
    IndexState,
    StateDamaged,
    chroma_client,
    drop_generation,
    read_chunks,
    read_sentence_vectors,
    read_vectors,
    write_generation,
)

# Bump when loading, cleaning or chunking changes what a file turns into: every file is redone.
PIPELINE_VERSION = "3"  # 2: sentence vectors, compound-aware lexical index; 3: whole sentences
EMBED_BATCH = 16


class IngestError(Exception):
    """Ingest could not run or finish; the message says what to do. The old index is intact."""


@dataclass
class FileProblem:
    path: str
    reason: str


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[FileProblem] = field(default_factory=list)
    embedded: int = 0
    chunks: int = 0
    documents: int = 0
    rebuilt: bool = False
    seconds: float = 0.0

    @property
    def changed_anything(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.rebuilt)

    def summary(self) -> str:
        parts = [
            f"{len(self.added)} nye",
            f"{len(self.changed)} endrede",
            f"{len(self.removed)} fjernede",
            f"{len(self.unchanged)} uendrede",
        ]
        if self.failed:
            parts.append(f"{len(self.failed)} hoppet over")
        return (
            f"Indeksen har {self.documents} dokumenter og {self.chunks} tekstbiter "
            f"({', '.join(parts)}; {self.embedded} tekstbiter embeddet på {self.seconds:.1f} s)."
        )


@dataclass
class _Loaded:
    relative: str
    sha256: str
    fingerprint: str
    title: str | None
    pages: list[Page]
    normalized: list[str]
    boilerplate: set[str]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _relative(path: Path, root: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


def _scan(knowledge_dir: Path, paths: Iterable[Path] | None) -> tuple[list[Path], list[str]]:
    """Files to consider, and the scope (relative prefixes) within which deletions count."""
    root = knowledge_dir.resolve()
    if not paths:
        items, scope = [root], [""]
    else:
        items, scope = [], []
        for given in paths:
            resolved = given.resolve()
            if not resolved.exists():
                raise IngestError(f"Fant ikke {given}; sjekk stien.")
            if resolved != root and root not in resolved.parents:
                raise IngestError(
                    f"{given} ligger utenfor kunnskapsmappen {knowledge_dir}; kopier filen dit "
                    "(eller sett STYRINGSBOT_KNOWLEDGE_DIR) og kjør ingest på nytt."
                )
            if resolved.is_file() and not is_supported(resolved):
                raise IngestError(
                    f"{given} har en filtype som ikke støttes; bruk .txt, .md, .pdf, .docx, .pptx "
                    "eller .html."
                )
            items.append(resolved)
            rel = _relative(resolved, root)
            scope.append("" if rel == "." else rel)
    files: dict[Path, None] = {}
    for item in items:
        candidates = [item] if item.is_file() else sorted(item.rglob("*"))
        for path in candidates:
            inside = path.relative_to(root).parts
            if any(part.startswith(".") for part in inside):
                continue
            if path.is_file() and path.name != MANIFEST_NAME and is_supported(path):
                files[path] = None
    return list(files), scope


def _in_scope(relative: str, scope: list[str]) -> bool:
    return any(s == "" or relative == s or relative.startswith(s.rstrip("/") + "/") for s in scope)


# Away from a terminal, progress is one plain line at most this often (seconds).
LOG_PROGRESS_EVERY = 30.0


def _progress(iterable, total: int, desc: str, show: bool):  # type: ignore[no-untyped-def]
    """Progress of one stage on stderr: a bar on a terminal; in a log or pipe (stderr not a
    terminal), no redrawn bar but a plain line now and then (`_LogProgress`); nothing when `show`
    is false or there is nothing to do. Iterate over it, or use it as a context manager and
    call `update(n)`."""
    if show and total and not sys.stderr.isatty():
        return _LogProgress(iterable, total, desc)
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=" stk",
        file=sys.stderr,
        disable=not show or total == 0,
        leave=False,
    )


class _LogProgress:
    """Progress for a log: "Embedder tekstbiter: 160 av 2000" once every LOG_PROGRESS_EVERY
    seconds of a stage, the first after that long; a quick stage prints nothing."""

    def __init__(self, iterable: Iterable | None, total: int, desc: str) -> None:
        self.iterable, self.total, self.desc = iterable, total, desc
        self.done = 0
        self.last = time.monotonic()

    def __iter__(self):  # type: ignore[no-untyped-def]
        for item in self.iterable or ():
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= LOG_PROGRESS_EVERY:
            self.last = now
            print(f"{self.desc}: {self.done} av {self.total}", file=sys.stderr, flush=True)

    def __enter__(self) -> _LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def sync(
    knowledge_dir: Path,
    data_dir: Path,
    spec: EmbedderSpec,
    *,
    chroma_host: str | None = None,
    chroma_port: int = 8000,
    paths: Iterable[Path] | None = None,
    rebuild: bool = False,
    progress: bool = True,
    embedder: Embedder | None = None,
) -> SyncReport:
    """Bring the index in line with the knowledge folder (or the given files/folders in it)."""
    started = time.perf_counter()
    if not knowledge_dir.is_dir():
        raise IngestError(
            f"Fant ikke kunnskapsmappen {knowledge_dir}; opprett den eller sett "
            "STYRINGSBOT_KNOWLEDGE_DIR."
        )
    manifest = Manifest.read(knowledge_dir)
    files, scope = _scan(knowledge_dir, list(paths) if paths else None)
    try:
        old = IndexState.read(data_dir)
    except StateDamaged:
        if not rebuild:
            raise
        old = None  # --rebuild starts over; leftovers of the damaged index are not read
    report = SyncReport()
    if old is not None and old.embedder != spec.id:
        rebuild = True  # vectors of another model cannot be mixed with new ones
    report.rebuilt = rebuild and old is not None

    current: dict[str, tuple[Path, str, str]] = {}
    for path in files:
        relative = _relative(path, knowledge_dir)
        sha = _sha256(path)
        fingerprint = hashlib.sha256(
            f"{PIPELINE_VERSION}\n{sha}\n{manifest.entry_fingerprint(relative)}".encode()
        ).hexdigest()
        current[relative] = (path, sha, fingerprint)

    old_files = old.files if old else {}
    to_process = [
        rel
        for rel, (_, _, fp) in current.items()
        if rebuild or rel not in old_files or old_files[rel].fingerprint != fp
    ]
    report.removed = [r for r in old_files if _in_scope(r, scope) and r not in current]
    report.unchanged = [r for r in current if r not in to_process]
    kept = {
        rel: rec
        for rel, rec in old_files.items()
        if not rebuild and rel not in to_process and rel not in report.removed
    }

    if not to_process and not report.removed and old is not None and old.generation > 0:
        report.documents = len(old_files)
        report.chunks = sum(len(r.chunk_ids) for r in old_files.values())
        report.seconds = time.perf_counter() - started
        return report

    loaded: list[_Loaded] = []
    for rel in _progress(to_process, len(to_process), "Leser filer", progress):
        path, sha, fingerprint = current[rel]
        try:
            result = load(path)
        except (LoadError, OSError) as exc:
            report.failed.append(FileProblem(rel, str(exc)))
            if rel in old_files and not rebuild:
                kept[rel] = old_files[rel]  # nothing already indexed is lost
            continue
        normalized = [normalize(p.text) for p in result.pages]
        loaded.append(
            _Loaded(
                rel,
                sha,
                fingerprint,
                result.title,
                result.pages,
                normalized,
                find_boilerplate(normalized),
            )
        )

    # Template text learned from one deck is template text in the others made from it.
    shared_boilerplate = {line for rec in kept.values() for line in rec.boilerplate}
    shared_boilerplate |= {line for item in loaded for line in item.boilerplate}

    new_chunks: list[Chunk] = []
    records: dict[str, FileRecord] = dict(kept)
    for item in loaded:
        source = manifest.source_for(item.relative, item.title)
        texts = clean_pages([p.text for p in item.pages], shared_boilerplate)
        chunks = split_pages(source, item.pages, texts)
        if not chunks:
            report.failed.append(FileProblem(item.relative, "fant ingen tekst å indeksere"))
            if item.relative in old_files and not rebuild:
                kept[item.relative] = records[item.relative] = old_files[item.relative]
            continue
        new_chunks.extend(chunks)
        records[item.relative] = FileRecord(
            sha256=item.sha256,
            fingerprint=item.fingerprint,
            title=source.title,
            chunk_ids=[c.id for c in chunks],
            boilerplate=sorted(item.boilerplate),
        )
        if item.relative in old_files and not rebuild:
            report.changed.append(item.relative)
        else:
            report.added.append(item.relative)

    if old is not None and not report.changed_anything and not report.removed:
        # Only failures: the current index already holds everything that could be read.
        report.documents = len(old_files)
        report.chunks = sum(len(r.chunk_ids) for r in old_files.values())
        report.seconds = time.perf_counter() - started
        return report

    if not records:
        raise IngestError(
            f"Fant ingen lesbare dokumenter i {knowledge_dir}; legg .pdf-, .docx-, .pptx-, .html-, "
            ".md- eller .txt-filer der og kjør ingest på nytt (en eventuell tidligere indeks er "
            "beholdt)."
        )
    client = chroma_client(data_dir, chroma_host, chroma_port)  # fail fast if a server is down
    embedder = embedder or spec.build()

    kept_ids = [cid for rel, rec in records.items() if rel in kept for cid in rec.chunk_ids]
    kept_chunks: list[Chunk] = []
    kept_vectors: dict[str, np.ndarray] = {}
    if kept_ids and old is not None:
        by_id = {c.id: c for c in read_chunks(data_dir, old)}
        kept_chunks = [by_id[cid] for cid in kept_ids if cid in by_id]
        try:
            kept_vectors = read_vectors(client, old, [c.id for c in kept_chunks])
        except Exception:
            kept_vectors = {}  # the old collection is gone: embed those chunks again below
    missing = [c for c in kept_chunks if c.id not in kept_vectors]
    to_embed = missing + new_chunks

    vectors: dict[str, np.ndarray] = dict(kept_vectors)
    with _progress(None, len(to_embed), "Embedder tekstbiter", progress) as bar:
        for start in range(0, len(to_embed), EMBED_BATCH):
            part = to_embed[start : start + EMBED_BATCH]
            embedded = embedder.embed_passages([c.embedding_text() for c in part])
            for chunk, vector in zip(part, embedded, strict=True):
                vectors[chunk.id] = vector
            bar.update(len(part))
    report.embedded = len(to_embed)
    sentence_vectors = _embed_sentences(
        embedder, data_dir, old, kept_chunks, new_chunks, rebuild, progress
    )

    all_chunks = kept_chunks + new_chunks
    new_state = IndexState(embedder=embedder.id, dim=embedder.dim, files=records)
    if old is not None:
        new_state.index_id = old.index_id
        new_state.generation = old.generation + 1
    else:
        new_state.generation = 1
    matrix = (
        np.stack([vectors[c.id] for c in all_chunks])
        if all_chunks
        else np.zeros((0, embedder.dim), dtype=np.float32)
    )
    try:
        write_generation(client, data_dir, new_state, all_chunks, matrix, sentence_vectors)
        new_state.write(data_dir)
    except Exception as exc:
        drop_generation(client, data_dir, new_state)
        raise IngestError(
            f"Kunne ikke skrive den nye indeksen ({exc}); den forrige indeksen er urørt."
        ) from exc
    if old is not None and old.generation > 0:
        drop_generation(client, data_dir, old)

    report.documents = len(records)
    report.chunks = len(all_chunks)
    report.seconds = time.perf_counter() - started
    return report


def _embed_sentences(
    embedder: Embedder,
    data_dir: Path,
    old: IndexState | None,
    kept_chunks: list[Chunk],
    new_chunks: list[Chunk],
    rebuild: bool,
    progress: bool,
) -> dict[str, np.ndarray]:
    """Vectors of every chunk's sentences: kept ones read back, the rest embedded."""
    found: dict[str, np.ndarray] = {}
    if old is not None and not rebuild:
        found = read_sentence_vectors(data_dir, old, [c.id for c in kept_chunks])
        # Vectors split another way than today's sentences are embedded again.
        found = {
            c.id: found[c.id]
            for c in kept_chunks
            if c.id in found and len(found[c.id]) == len(sentence_units(c))
        }
    todo = [c for c in kept_chunks if c.id not in found] + new_chunks
    texts = [(c.id, t) for c in todo for t in sentence_texts(c)]
    parts: dict[str, list[np.ndarray]] = {}
    with _progress(None, len(texts), "Embedder setninger", progress) as bar:
        for start in range(0, len(texts), EMBED_BATCH):
            batch = texts[start : start + EMBED_BATCH]
            embedded = embedder.embed_passages([t for _, t in batch])
            for (chunk_id, _), vector in zip(batch, embedded, strict=True):
                parts.setdefault(chunk_id, []).append(vector)
            bar.update(len(batch))
    found.update({chunk_id: np.stack(rows) for chunk_id, rows in parts.items()})
    return found
