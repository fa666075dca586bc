"""Embedded work of an ingest that has not been published yet, kept on disk as it is done.

Embedding is nearly all of an ingest's cost. Every group of chunks embedded is written here
(one SQLite file in the data folder) before the next group starts, so an ingest that is killed
or fails — the machine restarts, the disk fills, a file breaks the write — is continued by the
next ingest from where it stopped: what is found here is not embedded again. A vector is found
by what it was made from (the model, the pipeline version and the exact text the model saw), so
an edited file, another model or another chunking never picks up a stale vector. The file is
removed once an ingest has published its index.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import numpy as np

CHECKPOINT_FILE = "ingest-checkpoint.sqlite3"


def checkpoint_key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class Checkpoint:
    def __init__(self, data_dir: Path, dim: int) -> None:
        self.path = data_dir / CHECKPOINT_FILE
        self.dim = dim
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS vectors "
                "(key TEXT PRIMARY KEY, passage BLOB NOT NULL, sentences BLOB NOT NULL)"
            )
        return self._db

    def exists(self) -> bool:
        return self.path.is_file()

    def get(self, keys: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """What was saved of these keys; a damaged file counts as empty (it is only a saving)."""
        if not self.exists():
            return {}
        wanted = list(dict.fromkeys(keys))
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        try:
            db = self._open()
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = db.execute(
                    f"SELECT key, passage, sentences FROM vectors WHERE key IN ({marks})", part
                )
                for key, passage, sentences in rows:
                    vector = np.frombuffer(passage, dtype=np.float32)
                    rows_of = np.frombuffer(sentences, dtype=np.float32).reshape(-1, self.dim)
                    if vector.shape == (self.dim,):
                        found[key] = (vector, rows_of)
        except (sqlite3.Error, ValueError):
            self.close()
            return {}
        return found

    def put(self, items: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Saves one group of embedded chunks, durably, before the next is started."""
        db = self._open()
        with db:
            db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [
                    (
                        key,
                        np.asarray(vector, dtype=np.float32).tobytes(),
                        np.asarray(sentences, dtype=np.float32).reshape(-1, self.dim).tobytes(),
                    )
                    for key, (vector, sentences) in items.items()
                ],
            )

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def remove(self) -> None:
        self.close()
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
