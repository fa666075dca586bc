"""The whole index in a Chroma server, so that any number of bot replicas can answer from it.

With `CHROMA_HOST` set, a generation's chunk vectors live in a collection on the server (as in
`ingest.store`), and everything else a replica needs lives there too:

- the files of the generation's folder (chunks, lexical index, sentence vectors, the glossary,
  role guide and course it was checked with), in pieces in the `styringsbot-files` collection,
  with a manifest written last (no manifest: the upload is not finished, nothing reads it);
- the pointer to the current generation (the state file's content) in `styringsbot-state`,
  replaced in one write when ingest publishes;
- the ingest lock: a lease in `styringsbot-state` that one ingest at a time holds, on every
  machine (a record added only if absent; renewed while the ingest runs; a lease left by a
  killed ingest runs out).

A replica's data dir is a cache: `pull` copies the current generation's files into it (to a
temporary folder, checked, then renamed) and writes the local state file, which is what the
serving engine follows. Old generations stay on the server for GRACE_SECONDS after they were
replaced, so a replica still answering from one is not cut off; the next ingest removes them,
and whatever a killed ingest left behind.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ingest.store import (
    COLLECTION_PREFIX,
    LEXICAL_PREFIX,
    STATE_FILE,
    FileRecord,
    IndexState,
    IndexStoreError,
    StateDamaged,
)

log = logging.getLogger(__name__)

STATE_COLLECTION = "styringsbot-state"
FILES_COLLECTION = "styringsbot-files"
POINTER_ID = "current"
LOCK_ID = "ingest-lock"
PIECE_BYTES = 1_000_000  # of a file, per record (1.3 MB as base64)
REQUEST_BYTES = 8_000_000  # of pieces, per request to the server
LEASE_SECONDS = 120.0  # an ingest renews its lease every third of this
GRACE_SECONDS = 600.0  # a replaced generation is kept this long for replicas still using it
COMPLETE = ".complete"  # in a pulled folder: every file arrived and was checked
_NOWHERE = [0.0]  # the records here are looked up by id, never by similarity


class IngestLocked(IndexStoreError):
    """Another process holds the ingest lock."""


class RemoteStore:
    """The index's pointer, files and lock on a Chroma server."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.state = client.get_or_create_collection(
            STATE_COLLECTION, schema=_data_schema(), embedding_function=None
        )
        self.files = client.get_or_create_collection(
            FILES_COLLECTION, schema=_data_schema(), embedding_function=None
        )

    # -- the pointer -------------------------------------------------------------------------

    def pointer(self) -> tuple[str, int] | None:
        """(index id, generation) of the published generation: a small record, which replicas
        read every few seconds (None: nothing published yet)."""
        got = self.state.get(ids=[POINTER_ID], include=["metadatas"])
        if not got["ids"]:
            return None
        meta = got["metadatas"][0] or {}
        return str(meta["index_id"]), int(meta["generation"])

    def current(self) -> IndexState | None:
        """The published generation's state (None: nothing published yet)."""
        found = self.pointer()
        return None if found is None else self.state_of(*found)

    def state_of(self, index_id: str, generation: int) -> IndexState:
        """A published generation's state (its files' records: 2 MB at 50 000 chunks)."""
        record = _state_id(index_id, generation)
        got = self.state.get(ids=[record], include=["metadatas"])
        if not got["ids"]:
            raise StateDamaged(
                f"Indeksen på Chroma-serveren mangler {record}; kjør «styringsbot ingest "
                "--rebuild»."
            )
        return state_from_text((got["metadatas"][0] or {}).get("data", ""), record)

    def retired(self) -> dict[int, float]:
        """Replaced generations still kept, with the time they were replaced."""
        got = self.state.get(ids=[POINTER_ID], include=["metadatas"])
        if not got["ids"]:
            return {}
        raw = (got["metadatas"][0] or {}).get("retired", "{}")
        return {int(k): float(v) for k, v in json.loads(raw).items()}

    def publish(self, state: IndexState, replaced: IndexState | None) -> None:
        """Make `state` the current generation (one write); the one it replaces is kept for the
        grace period."""
        retired = self.retired()
        if replaced is not None and replaced.index_id == state.index_id:
            retired[replaced.generation] = time.time()
        retired.pop(state.generation, None)
        self.state.upsert(  # the state first, then the pointer to it
            ids=[_state_id(state.index_id, state.generation)],
            embeddings=[_NOWHERE],
            metadatas=[{"data": json.dumps(asdict(state), ensure_ascii=False)}],
        )
        self.state.upsert(
            ids=[POINTER_ID],
            embeddings=[_NOWHERE],
            metadatas=[
                {
                    "index_id": state.index_id,
                    "generation": state.generation,
                    "retired": json.dumps({str(k): v for k, v in retired.items()}),
                }
            ],
        )

    # -- a generation's files ----------------------------------------------------------------

    def push(self, data_dir: Path, state: IndexState) -> None:
        """Upload the generation's folder; its manifest last."""
        folder = data_dir / state.lexical_dirname
        prefix = _prefix(state)
        self.forget(state)  # what an interrupted upload left
        manifest: dict[str, list[Any]] = {}
        batch: list[tuple[str, str, str]] = []
        size = 0
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            if relative == COMPLETE:
                continue
            data = path.read_bytes()
            pieces = max(1, -(-len(data) // PIECE_BYTES))
            manifest[relative] = [len(data), pieces, hashlib.sha256(data).hexdigest()]
            for n in range(pieces):
                piece = base64.b64encode(data[n * PIECE_BYTES : (n + 1) * PIECE_BYTES]).decode()
                batch.append((f"{prefix}{relative}#{n}", piece, prefix))
                size += len(piece)
                if size >= REQUEST_BYTES:
                    self._add(batch)
                    batch, size = [], 0
        self._add(batch)
        self._add([(f"{prefix}manifest", json.dumps(manifest), prefix)])  # complete: last

    def forget(self, state: IndexState) -> None:
        """Delete the generation's files (not its collection)."""
        self.files.delete(where={"prefix": _prefix(state)})

    def _add(self, batch: list[tuple[str, str, str]]) -> None:
        """(id, data, prefix) records."""
        if batch:
            self.files.upsert(
                ids=[i for i, _, _ in batch],
                embeddings=[_NOWHERE] * len(batch),
                metadatas=[{"prefix": p, "data": d} for _, d, p in batch],
            )

    def pushed(self, state: IndexState) -> bool:
        return bool(self.files.get(ids=[f"{_prefix(state)}manifest"], include=[])["ids"])

    def pull(self, data_dir: Path, state: IndexState) -> Path:
        """The generation's folder in `data_dir`, downloaded if it is not there whole yet."""
        folder = data_dir / state.lexical_dirname
        if (folder / COMPLETE).exists():
            return folder
        prefix = _prefix(state)
        got = self.files.get(ids=[f"{prefix}manifest"], include=["metadatas"])
        if not got["ids"]:
            raise IndexStoreError(
                f"Generasjon {state.generation} mangler filene sine på Chroma-serveren; kjør "
                "«styringsbot ingest --rebuild»."
            )
        manifest = json.loads(got["metadatas"][0]["data"])
        data_dir.mkdir(parents=True, exist_ok=True)
        temporary = data_dir / f".pull-{uuid.uuid4().hex}"
        try:
            for relative, (size, pieces, digest) in manifest.items():
                target = temporary / relative
                if target.resolve().parent != temporary.resolve() / Path(relative).parent:
                    raise IndexStoreError(f"Ugyldig filnavn i generasjon {state.generation}.")
                target.parent.mkdir(parents=True, exist_ok=True)
                ids = [f"{prefix}{relative}#{n}" for n in range(pieces)]
                step = max(1, REQUEST_BYTES * 3 // 4 // PIECE_BYTES)
                hasher, written = hashlib.sha256(), 0
                with target.open("wb") as handle:
                    for start in range(0, len(ids), step):
                        part = ids[start : start + step]
                        by_id = self._pieces(part)
                        for piece_id in part:
                            if piece_id not in by_id:
                                raise IndexStoreError(
                                    f"{relative} i generasjon {state.generation} er ufullstendig "
                                    "på Chroma-serveren."
                                )
                            piece = base64.b64decode(by_id[piece_id])
                            hasher.update(piece)
                            written += len(piece)
                            handle.write(piece)
                if written != size or hasher.hexdigest() != digest:
                    raise IndexStoreError(
                        f"{relative} i generasjon {state.generation} er skadet på Chroma-serveren."
                    )
            (temporary / COMPLETE).write_text("", encoding="utf-8")
            if folder.exists():  # a download that was interrupted before it was renamed
                shutil.rmtree(folder)
            os.replace(temporary, folder)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        return folder

    def _pieces(self, ids: list[str]) -> dict[str, str]:
        found = self.files.get(ids=ids, include=["metadatas"])
        return {i: m["data"] for i, m in zip(found["ids"], found["metadatas"], strict=True)}

    # -- removing what is no longer needed ---------------------------------------------------

    def remove_unused(self, live: IndexState, now: float | None = None) -> list[int]:
        """Delete every generation on the server but the live one and those replaced less than
        GRACE_SECONDS ago: their collections and files, also those a killed ingest left (a
        collection or files of a generation never published). Returns the generations kept
        beside the live one. Call it only while holding the lock."""
        now = time.time() if now is None else now
        retired = {g: t for g, t in self.retired().items() if now - t < GRACE_SECONDS}
        keep = {live.generation, *retired}
        names = {f"{COLLECTION_PREFIX}{live.index_id}-g{g}" for g in keep}
        with contextlib.suppress(Exception):
            for collection in self.client.list_collections():
                name = collection.name
                if name in (STATE_COLLECTION, FILES_COLLECTION) or name in names:
                    continue
                if name.startswith(COLLECTION_PREFIX) and "-g" in name:
                    with contextlib.suppress(Exception):
                        self.client.delete_collection(name)
        prefixes = {_prefix(IndexState(live.embedder, live.dim, live.index_id, g)) for g in keep}
        offset, stale = 0, set()
        while True:  # ids only: an id starts with its generation's prefix ("index/gN/")
            found = self.files.get(include=[], limit=5000, offset=offset)
            if not found["ids"]:
                break
            for record in found["ids"]:
                prefix = "/".join(record.split("/")[:2]) + "/"
                if prefix not in prefixes:
                    stale.add(prefix)
            offset += len(found["ids"])
        for prefix in stale:
            with contextlib.suppress(Exception):
                self.files.delete(where={"prefix": prefix})
        states = {_state_id(live.index_id, g) for g in keep}
        with contextlib.suppress(Exception):
            old = [
                i
                for i in self.state.get(include=[])["ids"]
                if i.startswith("state/") and i not in states
            ]
            if old:
                self.state.delete(ids=old)
        if set(self.retired()) != set(retired):
            self._set_retired(retired)
        return sorted(retired)

    def _set_retired(self, retired: dict[int, float]) -> None:
        got = self.state.get(ids=[POINTER_ID], include=["metadatas"])
        if not got["ids"]:
            return
        meta = dict(got["metadatas"][0] or {})
        meta["retired"] = json.dumps({str(k): v for k, v in retired.items()})
        self.state.update(ids=[POINTER_ID], metadatas=[meta])

    # -- the lock ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the ingest lock, or raise IngestLocked at once naming who holds it."""
        token = uuid.uuid4().hex
        holder = f"{socket.gethostname()}, pid {os.getpid()}"
        for _ in range(2):
            self.state.add(
                ids=[LOCK_ID],
                embeddings=[_NOWHERE],
                documents=[holder],
                metadatas=[{"token": token, "expires": time.time() + LEASE_SECONDS}],
            )
            got = self.state.get(ids=[LOCK_ID], include=["documents", "metadatas"])
            meta = got["metadatas"][0] if got["ids"] else {}
            if meta and meta.get("token") == token:
                break
            # Held: by a live ingest, or by one that was killed and whose lease has run out.
            self.state.delete(ids=[LOCK_ID], where={"expires": {"$lt": time.time()}})
        else:
            other = got["documents"][0] if got["ids"] else "ukjent prosess"
            raise IngestLocked(
                f"En annen ingest ({other}) bygger indeksen på Chroma-serveren; vent til den er "
                "ferdig og prøv igjen."
            )
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(token, stop), daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(timeout=5)
            with contextlib.suppress(Exception):
                self.state.delete(ids=[LOCK_ID], where={"token": token})

    def _renew(self, token: str, stop: threading.Event) -> None:
        while not stop.wait(LEASE_SECONDS / 3):
            with contextlib.suppress(Exception):
                got = self.state.get(ids=[LOCK_ID], include=["metadatas"])
                if got["ids"] and (got["metadatas"][0] or {}).get("token") == token:
                    self.state.update(
                        ids=[LOCK_ID],
                        metadatas=[{"token": token, "expires": time.time() + LEASE_SECONDS}],
                    )

    def locked(self) -> str | None:
        """Who holds a live lease on the lock, as "host, pid N" (None: nobody)."""
        got = self.state.get(ids=[LOCK_ID], include=["documents", "metadatas"])
        if not got["ids"] or (got["metadatas"][0] or {}).get("expires", 0) < time.time():
            return None
        return str(got["documents"][0])


def _data_schema() -> Any:
    """File pieces and the state are kept in a metadata field, not as documents: Chroma indexes
    every document for full-text search (8 MB of pieces took 4 s to add, and 9 times the space)
    and would index a string field for filtering; `data` is neither."""
    from chromadb import Schema, StringInvertedIndexConfig

    schema = Schema()
    schema.delete_index(config=StringInvertedIndexConfig(), key="data")
    return schema


def _state_id(index_id: str, generation: int) -> str:
    return f"state/{index_id}/g{generation}"


def _prefix(state: IndexState) -> str:
    return f"{state.index_id}/g{state.generation}/"


def state_from_text(text: str, shown: str) -> IndexState:
    try:
        data = json.loads(text)
        files = {k: FileRecord(**v) for k, v in data.pop("files", {}).items()}
        return IndexState(**data, files=files)
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise StateDamaged(
            f"Indekspekeren {shown} er skadet; kjør «styringsbot ingest --rebuild»."
        ) from exc


def sync_local(remote: RemoteStore, data_dir: Path) -> IndexState | None:
    """Make the data dir a copy of the current generation on the server: its folder pulled,
    the state file written when it names another generation (which is what a serving engine
    follows). Older local folders, beside the one in use before, are removed. Returns the
    current state (None: nothing published yet)."""
    found = remote.pointer()  # a small record; the state itself only when it has moved
    if found is None:
        return None
    local = IndexState.read(data_dir) if (data_dir / STATE_FILE).exists() else None
    if (
        local is not None
        and (local.index_id, local.generation) == found
        and (data_dir / local.lexical_dirname / "chunks.jsonl").exists()
    ):
        return local
    state = remote.state_of(*found)
    remote.pull(data_dir, state)
    state.write(data_dir)
    keep = {state.lexical_dirname, local.lexical_dirname if local else ""}
    for path in data_dir.glob(f"{LEXICAL_PREFIX}*"):
        if path.name not in keep and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
    return state
