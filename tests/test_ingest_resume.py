"""A killed ingest is continued, not redone: the real `styringsbot ingest` is killed with SIGKILL
in the middle of embedding, and the next ingest embeds only what the first had not saved."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_settings, state_of, subprocess_env

from ingest.checkpoint import CHECKPOINT_FILE
from ingest.pipeline import CHECKPOINT_CHUNKS, sync
from ingest.store import read_chunks

SEEDS = ("politisk-styringssystem-2019.txt", "styringsdialogen-sann-gjor-vi-det-her-2019.txt")


def archive(root: Path, seed_knowledge: Path, copies: int) -> Path:
    """A knowledge folder of `copies` renamed copies of two seed documents: each copy has a title
    of its own (its file name), so each of its chunks is a passage the model has not seen."""
    knowledge = root / "knowledge"
    knowledge.mkdir()
    for n in range(copies):
        for name in SEEDS:
            shutil.copy(seed_knowledge / name, knowledge / f"arkiv-{n:02d}-{name}")
    return knowledge


def saved(data: Path) -> int:
    """Chunks in the checkpoint, read as another process would (0 before the first group)."""
    path = data / CHECKPOINT_FILE
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM vectors").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_killed_ingest_is_continued_and_embeds_only_what_was_not_done(
    tmp_path: Path, seed_knowledge: Path
) -> None:
    knowledge = archive(tmp_path, seed_knowledge, copies=6)
    data = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "ingest", "--quiet"],
        cwd=tmp_path,
        env=subprocess_env(
            STYRINGSBOT_HOME=str(tmp_path),
            STYRINGSBOT_DATA_DIR=str(data),
            STYRINGSBOT_KNOWLEDGE_DIR=str(knowledge),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while saved(data) == 0:  # midway: the first group is saved, the rest is being embedded
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the ingest never saved a group"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    done = saved(data)
    assert not (data / "index.json").exists()  # killed before anything was published

    settings = make_settings(data, knowledge)
    report = sync(knowledge, data, settings.embedder_spec, progress=False)

    chunks = read_chunks(data, state_of(data))
    assert report.chunks == len(chunks) > done >= CHECKPOINT_CHUNKS
    assert report.resumed == done  # everything the killed ingest saved is used …
    assert report.embedded - report.resumed == len(chunks) - done  # … and nothing else redone
    assert f"{done} av dem fra et avbrutt ingest" in report.summary()
    assert not (data / CHECKPOINT_FILE).exists()  # published: nothing left to resume

    from bot.engine import Engine

    answer = Engine.open(settings, progress=False).ask("Hvem leder etatsstyringsmøtet?")
    assert not answer.abstained
    assert answer.citations[0].source.startswith("arkiv-")


def test_a_checkpoint_never_gives_a_vector_for_changed_text(
    tmp_path: Path, seed_knowledge: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ingest that fails after saving vectors, then a file edited before the next run: the
    edited chunks are embedded again, the others are taken from the checkpoint."""
    import ingest.pipeline as pipeline

    knowledge = archive(tmp_path, seed_knowledge, copies=1)
    data = tmp_path / "data"
    settings = make_settings(data, knowledge)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disken er full (fremprovosert i testen)")

    monkeypatch.setattr(pipeline, "write_generation", fail)
    with pytest.raises(pipeline.IngestError, match="disken er full"):
        sync(knowledge, data, settings.embedder_spec, progress=False)
    monkeypatch.undo()
    assert (data / CHECKPOINT_FILE).exists()

    edited = knowledge / f"arkiv-00-{SEEDS[0]}"
    edited.write_text(edited.read_text(encoding="utf-8") + "\n\nEt nytt avsnitt.\n", "utf-8")
    report = sync(knowledge, data, settings.embedder_spec, progress=False)

    chunks = read_chunks(data, state_of(data))
    changed = [c for c in chunks if "Et nytt avsnitt" in c.text]
    assert len(changed) == 1
    assert report.embedded == len(chunks)
    assert report.resumed == len(chunks) - len(changed)
