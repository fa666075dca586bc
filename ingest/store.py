"""The index on disk: a Chroma collection, a BM25 folder and a state file that ties them together.

Every ingest that changes something writes a new *generation* (collection + lexical folder) next to
the current one and then replaces the state file atomically; only then is the old generation
deleted. A failed or interrupted ingest therefore leaves the previous index whole, and the next
ingest removes what it left (`remove_leftovers`). A generation's folder also keeps the glossary
and role guide it was checked with, which is what a bot answering from it loads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, overload
from urllib.parse import quote

import numpy as np

from ingest.lexical import WORDS_FILE, LexicalIndex
from ingest.model import Chunk
from ingest.split import sentence_units

STATE_FILE = "index.json"
SENTENCES_FILE = "sentences.npz"
STATE_VERSION = 1
GUIDE_DIR = "guide"  # in a generation's folder: the glossary and role guide it was checked with
LOCK_FILE = ".ingest.lock"
COLLECTION_PREFIX = "styringsbot-"
LEXICAL_PREFIX = "lexical-g"


class IndexStoreError(Exception):
    """Base of the index errors a user can cause; the message says what to do."""


class IndexMissing(IndexStoreError):
    pass


class EmbedderMismatch(IndexStoreError):
    pass


class StoreUnavailable(IndexStoreError):
    pass


class StateDamaged(IndexStoreError):
    pass


@dataclass
class FileRecord:
    sha256: str
    fingerprint: str  # content + manifest entry + pipeline version: what decides a re-ingest
    title: str
    chunk_ids: list[str]
    boilerplate: list[str] = field(default_factory=list)


@dataclass
class IndexState:
    embedder: str
    dim: int
    index_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    generation: int = 0
    files: dict[str, FileRecord] = field(default_factory=dict)
    version: int = STATE_VERSION

    @property
    def collection_name(self) -> str:
        return f"{COLLECTION_PREFIX}{self.index_id}-g{self.generation}"

    @property
    def lexical_dirname(self) -> str:
        return f"{LEXICAL_PREFIX}{self.generation}"

    @classmethod
    def read(cls, data_dir: Path) -> IndexState | None:
        path = data_dir / STATE_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION:
                return None
            files = {k: FileRecord(**v) for k, v in data.pop("files", {}).items()}
            return cls(**data, files=files)
        except (json.JSONDecodeError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise StateDamaged(
                f"Indeksfilen {path} er skadet; kjør «styringsbot ingest --rebuild»."
            ) from exc

    def write(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(asdict(self), ensure_ascii=False, indent=1)
        # A fresh name per write; open() honours the umask like the rest of the index does.
        tmp = data_dir / f".index-{uuid.uuid4().hex}.json"
        with tmp.open("x", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, data_dir / STATE_FILE)


def chroma_client(data_dir: Path, host: str | None, port: int):  # type: ignore[no-untyped-def]
    """An embedded client in the data dir, or a client of the Chroma server at host:port."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if host:
        try:
            client = chromadb.HttpClient(host=host, port=port, settings=chroma_settings)
            client.heartbeat()
        except Exception as exc:
            raise StoreUnavailable(
                f"Fikk ikke kontakt med Chroma-serveren på {host}:{port}; start den, eller fjern "
                "CHROMA_HOST for å bruke den innebygde databasen."
            ) from exc
        return client
    return chromadb.PersistentClient(path=str(data_dir / "chroma"), settings=chroma_settings)


def _chunk_metadata(chunk: Chunk) -> dict[str, str]:
    # Chroma metadata values cannot be None.
    return {
        "source": chunk.source,
        "title": chunk.title,
        "location": chunk.location or "",
        "heading": chunk.heading or "",
    }


def write_generation(
    client: Any,
    data_dir: Path,
    state: IndexState,
    chunks: list[Chunk],
    vectors: np.ndarray,
    sentence_vectors: dict[str, np.ndarray] | None = None,
    guide_files: Mapping[str, bytes] | None = None,
) -> None:
    """Write chunks and their vectors as generation `state.generation` (collection + lexical,
    plus the vectors of each chunk's sentences, and the guide files it goes with).

    The generation must not be published yet: whatever an interrupted earlier attempt left under
    its name (a collection, a folder) is replaced."""
    with contextlib.suppress(Exception):  # a leftover of an ingest that was killed half-way
        client.delete_collection(state.collection_name)
    collection = client.create_collection(
        state.collection_name,
        configuration={"hnsw": {"space": "cosine"}},
        metadata={"embedder": state.embedder, "index_id": state.index_id},
        embedding_function=None,
    )
    batch = 1000
    for start in range(0, len(chunks), batch):
        part = chunks[start : start + batch]
        collection.add(
            ids=[c.id for c in part],
            embeddings=vectors[start : start + batch],
            documents=[c.text for c in part],
            metadatas=[_chunk_metadata(c) for c in part],
        )
    folder = data_dir / state.lexical_dirname
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    LexicalIndex.build([lexical_text(c) for c in chunks]).save(folder)
    with (folder / "chunks.jsonl").open("w", encoding="utf-8") as handle:
        for chunk in chunks:
            handle.write(json.dumps(chunk.to_dict(), ensure_ascii=False) + "\n")
    if sentence_vectors is not None:
        _write_sentences(folder, chunks, sentence_vectors, vectors.shape[1])
    if guide_files is not None:
        (folder / GUIDE_DIR).mkdir()
        for name, content in guide_files.items():
            (folder / GUIDE_DIR / name).write_bytes(content)


def guide_files_of(data_dir: Path, state: IndexState) -> dict[str, bytes] | None:
    """The guide files kept with a generation; None for a generation written before they were
    kept (its guide is read from the knowledge folder)."""
    folder = data_dir / state.lexical_dirname / GUIDE_DIR
    if not folder.is_dir():
        return None
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def verify_generation(client: Any, data_dir: Path, state: IndexState, chunks: int) -> None:
    """Raise unless generation `state` is whole: a collection of `chunks` vectors and a lexical
    folder of as many chunks (what serving it will open)."""
    stored = client.get_collection(state.collection_name, embedding_function=None).count()
    written = len(read_chunks(data_dir, state))
    if stored != chunks or written != chunks:
        raise IndexStoreError(
            f"generasjon {state.generation} har {stored} vektorer og {written} tekstbiter, "
            f"ikke {chunks}"
        )


@contextlib.contextmanager
def ingest_lock(data_dir: Path) -> Iterator[None]:
    """One ingest at a time per data dir: a second one gets IndexStoreError at once (it would
    write the same generation, and tidying up after one would remove the other's work)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        handle = (data_dir / LOCK_FILE).open("a")
    except OSError:  # a data dir this user cannot write: writing the index will say so
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise IndexStoreError(
                f"En annen ingest skriver allerede til {data_dir}; vent til den er ferdig og "
                "prøv igjen."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_leftovers(
    client: Any | None, data_dir: Path, live: IndexState | None, embedded: bool
) -> None:
    """Remove every part of an index generation that is not `live` (the published one, or none):
    the previous generation, and what an interrupted ingest left behind — collections, lexical
    folders, half-written state files and, in the embedded database, the vector-segment folders
    Chroma leaves on disk when it deletes a collection. Call it only under `ingest_lock`.

    With a Chroma server (not `embedded`) only this index's own collections are touched."""
    keep_folder = live.lexical_dirname if live else None
    for path in data_dir.glob(f"{LEXICAL_PREFIX}*"):
        if path.name != keep_folder and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
    for path in data_dir.glob(".index-*.json"):
        with contextlib.suppress(OSError):
            path.unlink()
    if client is None:
        return
    if embedded:
        ours = COLLECTION_PREFIX  # the data dir's own database: every index collection in it
    elif live is not None:
        ours = f"{COLLECTION_PREFIX}{live.index_id}-g"
    else:
        return  # a server may hold other indexes' collections: nothing here says which are ours
    keep = live.collection_name if live else None
    try:
        names = [c.name for c in client.list_collections()]
    except Exception:
        names = []
    for name in names:
        if name != keep and name.startswith(ours):
            with contextlib.suppress(Exception):
                client.delete_collection(name)
    if embedded:
        remove_unused_segments(data_dir / "chroma", client, keep)


def remove_unused_segments(chroma_dir: Path, client: Any, live_collection: str | None) -> list[str]:
    """Delete the folders of vector segments no collection uses; the names of those removed.

    Chroma (1.x, embedded) keeps each collection's HNSW index in a folder named after the
    collection's vector segment id in the persist directory, and its sysdb lists every segment
    of every existing collection in the `segments` table of chroma.sqlite3. Deleting a
    collection removes its rows but leaves the folder. A UUID-named folder whose name is not a
    segment id is therefore left over. Nothing is removed unless that table can be read and
    lists the live collection's segments (the check that the schema is what this expects)."""
    database = chroma_dir / "chroma.sqlite3"
    if not database.is_file():
        return []
    try:
        live_id = (
            str(client.get_collection(live_collection, embedding_function=None).id)
            if live_collection
            else None
        )
        uri = f"file:{quote(str(database))}?mode=ro"
        connection = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            rows = connection.execute("SELECT id, collection FROM segments").fetchall()
        finally:
            connection.close()
    except Exception:
        return []  # cannot tell what is in use: remove nothing
    used = {str(segment) for segment, _ in rows}
    if live_id is not None and live_id not in {str(owner) for _, owner in rows}:
        return []
    removed = []
    for path in chroma_dir.iterdir():
        if path.name in used or not path.is_dir() or path.is_symlink():
            continue
        if not _is_uuid(path.name):
            continue  # not a segment folder
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def _write_sentences(
    folder: Path, chunks: list[Chunk], sentence_vectors: dict[str, np.ndarray], dim: int
) -> None:
    """Each chunk's sentence vectors, with the sentence each row stands for: the chunks' ids and
    sentence counts, the vectors as float16 (half the memory; cosines move by under 1e-4), the
    texts as one UTF-8 string with offsets (a numpy string array pads every text to the longest,
    which at 50 000 chunks took over a gigabyte to load)."""
    ids: list[str] = []
    counts: list[int] = []
    texts: list[bytes] = []
    rows: list[np.ndarray] = []
    for chunk in chunks:
        block = sentence_vectors.get(chunk.id)
        units = sentence_units(chunk)
        if block is not None and len(block) and len(block) == len(units):
            ids.append(chunk.id)
            counts.append(len(block))
            texts.extend(u.encode("utf-8") for u in units)
            rows.append(np.asarray(block, dtype=np.float16))
    matrix = np.concatenate(rows) if rows else np.zeros((0, dim), dtype=np.float16)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in texts], dtype=np.int64)])
    np.savez(
        folder / SENTENCES_FILE,
        vectors=matrix,
        chunk_ids=np.array(ids, dtype=str),
        counts=np.array(counts, dtype=np.int64),
        text_offsets=offsets.astype(np.int64),
        text_bytes=np.frombuffer(b"".join(texts), dtype=np.uint8),
    )


class _Texts(Sequence[str]):
    """Sentence texts decoded from one UTF-8 string when asked for (rows: which sentences)."""

    def __init__(self, blob: bytes, offsets: np.ndarray, rows: np.ndarray) -> None:
        self._blob, self._offsets, self._rows = blob, offsets, rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, row: int) -> str: ...
    @overload
    def __getitem__(self, row: slice) -> list[str]: ...
    def __getitem__(self, row: int | slice) -> str | list[str]:
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        n = int(self._rows[row])
        return self._blob[int(self._offsets[n]) : int(self._offsets[n + 1])].decode("utf-8")


def read_sentence_vectors(
    data_dir: Path, state: IndexState, ids: list[str]
) -> dict[str, np.ndarray]:
    """Stored sentence vectors of kept chunks, by chunk id (missing file: none)."""
    path = data_dir / state.lexical_dirname / SENTENCES_FILE
    if not ids or not path.exists():
        return {}
    with np.load(path) as data:
        vectors = np.asarray(data["vectors"], dtype=np.float32)
        if "counts" in data.files:
            owners = np.repeat(data["chunk_ids"], data["counts"])
        else:
            owners = data["owners"]
    wanted = set(ids)
    found: dict[str, list[np.ndarray]] = {}
    for owner, vector in zip(owners.tolist(), vectors, strict=True):
        if owner in wanted:
            found.setdefault(owner, []).append(vector)
    return {owner: np.stack(rows) for owner, rows in found.items()}


def _is_uuid(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def lexical_text(chunk: Chunk) -> str:
    return f"{chunk.heading}\n{chunk.text}" if chunk.heading else chunk.text


def drop_generation(client: Any, data_dir: Path, state: IndexState) -> None:
    """Remove one generation; missing parts are fine (it may have failed half-way)."""
    with contextlib.suppress(Exception):
        client.delete_collection(state.collection_name)
    shutil.rmtree(data_dir / state.lexical_dirname, ignore_errors=True)


def read_vectors(client: Any, state: IndexState, ids: list[str]) -> dict[str, np.ndarray]:
    """Stored vectors of chunks kept from the current generation (nothing is re-embedded)."""
    if not ids:
        return {}
    collection = client.get_collection(state.collection_name, embedding_function=None)
    found: dict[str, np.ndarray] = {}
    batch = 1000
    for start in range(0, len(ids), batch):
        got = collection.get(ids=ids[start : start + batch], include=["embeddings"])
        for chunk_id, vector in zip(got["ids"], got["embeddings"], strict=True):
            found[chunk_id] = np.asarray(vector, dtype=np.float32)
    return found


def read_chunks(data_dir: Path, state: IndexState) -> list[Chunk]:
    path = data_dir / state.lexical_dirname / "chunks.jsonl"
    with path.open(encoding="utf-8") as handle:
        return [Chunk(**json.loads(line)) for line in handle if line.strip()]


def _load_lexical(folder: Path, chunks: list[Chunk]) -> LexicalIndex:
    if not (folder / WORDS_FILE).exists():
        # Written before compounds were split: rebuilt in memory, in the format of today.
        return LexicalIndex.build([lexical_text(c) for c in chunks])
    return LexicalIndex.load(folder)


class Index:
    """The current generation, opened for search."""

    def __init__(
        self, state: IndexState, chunks: list[Chunk], lexical: LexicalIndex, collection: Any
    ) -> None:
        self.state = state
        self.chunks = chunks
        self.lexical = lexical
        self._collection = collection
        self._position = {c.id: i for i, c in enumerate(chunks)}
        self._sentences: np.ndarray | None = None
        self._sentence_owner: np.ndarray | None = None
        # Row numbers (into the sentence matrix) of each chunk's sentences, and their texts.
        self.sentence_rows: list[list[int]] = [[] for _ in chunks]
        self.sentence_texts: Sequence[str] = []

    def load_sentences(self, folder: Path) -> None:
        path = folder / SENTENCES_FILE
        if not path.exists():
            return  # built before sentence vectors were stored: the chunk vectors alone serve
        with np.load(path) as data:
            if "counts" in data.files:
                self._load_sentence_blocks(data)
                return
            owners = [self._position.get(o, -1) for o in data["owners"].tolist()]
            vectors = np.asarray(data["vectors"], dtype=np.float32)
            texts = data["texts"].tolist() if "texts" in data.files else None
        if texts is None:
            texts = self._sentence_texts_of_old_index(owners)
        keep = np.array(
            [o >= 0 and t is not None for o, t in zip(owners, texts, strict=True)], dtype=bool
        )
        self._sentences = vectors[keep] if len(vectors) else vectors
        self._sentence_owner = np.array(owners, dtype=np.int64)[keep]
        self.sentence_texts = [t for t, k in zip(texts, keep.tolist(), strict=True) if k]
        self.sentence_rows = [[] for _ in self.chunks]
        for row, owner in enumerate(self._sentence_owner.tolist()):
            self.sentence_rows[owner].append(row)

    def _load_sentence_blocks(self, data: Any) -> None:
        """The format written today (`_write_sentences`): each chunk's sentences as one block."""
        ids, counts = data["chunk_ids"].tolist(), data["counts"]
        vectors = data["vectors"]
        offsets = data["text_offsets"]
        blob = data["text_bytes"].tobytes()
        positions = np.array([self._position.get(c, -1) for c in ids], dtype=np.int64)
        owners = np.repeat(positions, counts)
        keep = owners >= 0
        self._sentences = vectors if keep.all() else vectors[keep]
        self._sentence_owner = owners[keep]
        self.sentence_texts = _Texts(blob, offsets, np.flatnonzero(keep))
        self.sentence_rows = [[] for _ in self.chunks]
        starts = np.concatenate([[0], np.cumsum(counts[positions >= 0])])
        for n, position in enumerate(positions[positions >= 0].tolist()):
            self.sentence_rows[position] = list(range(int(starts[n]), int(starts[n + 1])))

    def _sentence_texts_of_old_index(self, owners: list[int]) -> list[str | None]:
        """An index written before sentence texts were stored: today's sentence split, where it
        gives a chunk as many sentences as it has vectors (else that chunk's rows are left out)."""
        counts: dict[int, int] = {}
        for owner in owners:
            counts[owner] = counts.get(owner, 0) + 1
        units = {
            owner: sentence_units(self.chunks[owner])
            for owner in counts
            if owner >= 0 and len(sentence_units(self.chunks[owner])) == counts[owner]
        }
        seen: dict[int, int] = {}
        texts: list[str | None] = []
        for owner in owners:
            found = units.get(owner)
            texts.append(found[seen.get(owner, 0)] if found else None)
            seen[owner] = seen.get(owner, 0) + 1
        return texts

    def position(self, chunk_id: str) -> int | None:
        return self._position.get(chunk_id)

    def sentence_vectors(self, rows: list[int]) -> np.ndarray | None:
        if self._sentences is None or not rows:
            return None
        return self._sentences[rows].astype(np.float32)

    def sentence_scores(
        self, query_vector: np.ndarray, positions: Iterable[int]
    ) -> dict[int, float] | None:
        """For each chunk position given, the best cosine of the query with one of its sentences
        (-1: none). Only those chunks' sentences are read: the search asks for its candidates,
        never for every sentence of the index (400 000 of them at 50 000 chunks)."""
        if self._sentences is None:
            return None
        wanted = sorted(set(positions))
        rows = [self.sentence_rows[p] for p in wanted]
        flat = [r for block in rows for r in block]
        cosines = (
            self._sentences[flat].astype(np.float32) @ np.asarray(query_vector, dtype=np.float32)
            if flat
            else np.zeros(0, dtype=np.float32)
        )
        best: dict[int, float] = {}
        at = 0
        for position, block in zip(wanted, rows, strict=True):
            best[position] = float(cosines[at : at + len(block)].max()) if block else -1.0
            at += len(block)
        return best

    @classmethod
    def open(
        cls, data_dir: Path, embedder_id: str, chroma_host: str | None, chroma_port: int
    ) -> Index:
        state = IndexState.read(data_dir)
        if state is None or state.generation == 0:
            raise IndexMissing(
                f"Fant ingen indeks i {data_dir}; kjør «styringsbot ingest» for å bygge den."
            )
        if state.embedder != embedder_id:
            raise EmbedderMismatch(
                f"Indeksen er bygd med {state.embedder}, men innstillingen er {embedder_id}; "
                "kjør «styringsbot ingest --rebuild» for å bygge den på nytt."
            )
        client = chroma_client(data_dir, chroma_host, chroma_port)
        try:
            collection = client.get_collection(state.collection_name, embedding_function=None)
            chunks = read_chunks(data_dir, state)
            lexical = _load_lexical(data_dir / state.lexical_dirname, chunks)
        except Exception as exc:
            raise IndexMissing(
                f"Indeksen i {data_dir} er ufullstendig ({exc.__class__.__name__}); kjør "
                "«styringsbot ingest --rebuild»."
            ) from exc
        index = cls(state, chunks, lexical, collection)
        index.load_sentences(data_dir / state.lexical_dirname)
        return index

    def dense(self, query_vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        """(chunk position, cosine similarity) of the n nearest chunks, best first."""
        n = min(n, len(self.chunks))
        if n == 0:
            return []
        result = self._collection.query(
            query_embeddings=[np.asarray(query_vector, dtype=np.float32)],
            n_results=n,
            include=["distances"],
        )
        return [
            (self._position[chunk_id], 1.0 - float(distance))
            for chunk_id, distance in zip(result["ids"][0], result["distances"][0], strict=True)
            if chunk_id in self._position
        ]
