"""Several bot replicas on one Chroma server: a real `chroma run` on 127.0.0.1 (one per test,
started here), the real model, real files. A replica has only CHROMA_HOST and an empty data dir."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    HOST,
    SEED_KNOWLEDGE,
    chroma_server,
    console_script,
    free_port,
    make_settings,
    subprocess_env,
)

from ingest import remote as remote_module
from ingest.embeddings import EmbedderSpec
from ingest.pipeline import sync
from ingest.remote import FILES_COLLECTION, LOCK_ID, IngestLocked, RemoteStore
from ingest.store import IndexState, chroma_client


@pytest.fixture
def chroma_port(tmp_path: Path) -> Iterator[int]:
    root = tmp_path / "chroma-server"
    root.mkdir()
    with chroma_server(root) as port:
        yield port


def remote(port: int) -> RemoteStore:
    return RemoteStore(chroma_client(Path("."), HOST, port))


def ingest(knowledge: Path, data: Path, port: int):  # type: ignore[no-untyped-def]
    return sync(knowledge, data, EmbedderSpec(), chroma_host=HOST, chroma_port=port, progress=False)


def replica(tmp_path: Path, name: str, knowledge: Path, port: int):  # type: ignore[no-untyped-def]
    from bot.engine import Engine

    data = tmp_path / name
    data.mkdir()
    settings = make_settings(data, knowledge, chroma_host=HOST, chroma_port=port)
    return Engine.open(settings, progress=False)


def collection_names(port: int) -> set[str]:
    return {c.name for c in remote(port).client.list_collections()}


def test_replicas_with_empty_data_dirs_answer_and_follow_a_new_generation(
    tmp_path: Path, small_knowledge: Path, chroma_port: int
) -> None:
    first = ingest(small_knowledge, tmp_path / "ingest-data", chroma_port)
    # The replicas see neither the knowledge folder nor the ingest's data dir.
    nowhere = tmp_path / "no-knowledge"
    a = replica(tmp_path, "a", nowhere, chroma_port)
    b = replica(tmp_path, "b", nowhere, chroma_port)
    for engine in (a, b):
        answer = engine.ask("Hvem sender tildelingsbrevet til virksomheten?")
        assert not answer.abstained
        assert answer.citations[0].source == "tildelingsbrev.md"
    old = IndexState.read(tmp_path / "a")
    assert old is not None and old.generation == 1

    # A stream of questions to both while ingest writes and publishes a new generation.
    failures: list[BaseException] = []
    stop = threading.Event()

    def ask_on(engine) -> None:  # type: ignore[no-untyped-def]
        while not stop.is_set():
            try:
                engine.ask("Hvor ofte holdes fagmøtene?")
            except BaseException as exc:
                failures.append(exc)

    askers = [threading.Thread(target=ask_on, args=(e,)) for e in (a, b)]
    for thread in askers:
        thread.start()
    try:
        (small_knowledge / "fagmote.txt").write_text(
            "Fagmøter\n\nFagmøtene holdes nå hver fjerde uke, og referatet arkiveres i Websak.\n",
            encoding="utf-8",
        )
        second = ingest(small_knowledge, tmp_path / "ingest-data", chroma_port)
        assert second.changed == ["fagmote.txt"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and {a.generation[1], b.generation[1]} != {2}:
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in askers:
            thread.join(timeout=30)
    assert failures == []
    assert a.generation[1] == b.generation[1] == 2
    for engine in (a, b):
        assert "hver fjerde uke" in engine.ask("Hvor ofte holdes fagmøtene?").citations[0].text

    # The replaced generation stays on the server for the grace period.
    assert old.collection_name in collection_names(chroma_port)
    assert first.chunks and second.chunks

    # Stopping one replica leaves the other serving.
    a.close()
    del a
    assert not b.ask("Hva er et fagmøte?").abstained


def test_two_ingests_started_together_leave_one_whole_index_and_say_so(
    tmp_path: Path, chroma_port: int
) -> None:
    def start(name: str) -> subprocess.Popen[str]:
        data = tmp_path / name
        return subprocess.Popen(
            [str(console_script("styringsbot")), "ingest"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=subprocess_env(
                STYRINGSBOT_DATA_DIR=str(data),
                STYRINGSBOT_KNOWLEDGE_DIR=str(SEED_KNOWLEDGE),
                CHROMA_HOST=HOST,
                CHROMA_PORT=str(chroma_port),
            ),
        )

    runs = [start("one"), start("two")]
    results = [(p.wait(timeout=600), *p.communicate()) for p in runs]
    codes = sorted(code for code, _, _ in results)
    for code, _, err in results:
        assert "Traceback" not in err
        if code != 0:
            assert code == 2
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "En annen ingest" in lines[0], err
    assert codes[0] == 0  # at least one built the index

    # One whole index: the published generation opens and answers on a fresh replica.
    state = remote(chroma_port).current()
    assert state is not None
    engine = replica(tmp_path, "reader", tmp_path / "nowhere", chroma_port)
    answer = engine.ask("Hvem leder etatsstyringsmøtet?")
    assert not answer.abstained and answer.citations
    indexes = [n for n in collection_names(chroma_port) if n.startswith("styringsbot-")]
    generations = [n for n in indexes if n not in ("styringsbot-state", FILES_COLLECTION)]
    assert state.collection_name in generations
    # Both ran one after the other (the second found nothing to do) or one was refused.
    assert len(generations) == 1


def test_a_killed_ingests_lease_runs_out_and_its_leftovers_are_removed(
    tmp_path: Path, small_knowledge: Path, chroma_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(small_knowledge, tmp_path / "data", chroma_port)
    store = remote(chroma_port)
    live = store.current()
    assert live is not None

    # What a `kill -9` in the middle of an ingest leaves: its lease, a collection and some
    # uploaded files of a generation it never published.
    store.state.add(
        ids=[LOCK_ID],
        embeddings=[[0.0]],
        documents=["en-annen-maskin, pid 1"],
        metadatas=[{"token": "killed", "expires": time.time() + 60}],
    )
    orphan = IndexState(live.embedder, live.dim, live.index_id, generation=7)
    store.client.create_collection(orphan.collection_name, embedding_function=None)
    store.files.add(
        ids=[f"{live.index_id}/g7/chunks.jsonl#0"],
        embeddings=[[0.0]],
        documents=["eA=="],
        metadatas=[{"prefix": f"{live.index_id}/g7/", "index_id": live.index_id}],
    )

    # While the lease lives, another ingest is refused in one sentence.
    with pytest.raises(IngestLocked, match="pid 1"):
        ingest(small_knowledge, tmp_path / "data", chroma_port)

    # Once it has run out, the next ingest takes the lock and removes the leftovers.
    store.state.update(ids=[LOCK_ID], metadatas=[{"token": "killed", "expires": time.time() - 1}])
    (small_knowledge / "ny.md").write_text("# Nytt\n\nEt nytt notat om styringsdialog.\n")
    report = ingest(small_knowledge, tmp_path / "data", chroma_port)
    assert report.added == ["ny.md"]
    assert orphan.collection_name not in collection_names(chroma_port)
    assert not store.files.get(where={"prefix": f"{live.index_id}/g7/"}, include=[])["ids"]
    assert store.locked() is None  # released

    # With the grace period over, the generation it replaced goes too.
    monkeypatch.setattr(remote_module, "GRACE_SECONDS", 0.0)
    ingest(small_knowledge, tmp_path / "data", chroma_port)
    assert live.collection_name not in collection_names(chroma_port)
    assert not store.files.get(where={"prefix": f"{live.index_id}/g1/"}, include=[])["ids"]
    assert f"state/{live.index_id}/g1" not in store.state.get(include=[])["ids"]


def test_a_replica_on_an_empty_server_waits_for_the_ingest_that_holds_the_lock(
    tmp_path: Path, small_knowledge: Path, chroma_port: int
) -> None:
    from bot.engine import Engine

    store = remote(chroma_port)
    store.state.add(
        ids=[LOCK_ID],
        embeddings=[[0.0]],
        documents=["en-annen-maskin, pid 2"],
        metadatas=[{"token": "other", "expires": time.time() + 120}],
    )
    settings = make_settings(
        tmp_path / "replica", small_knowledge, chroma_host=HOST, chroma_port=chroma_port
    )
    opened: list[Engine] = []
    thread = threading.Thread(
        target=lambda: opened.append(Engine.open(settings, build_if_missing=True, progress=False))
    )
    thread.start()
    time.sleep(3)
    assert thread.is_alive() and not opened  # waiting, not building
    assert store.current() is None

    # The lock is let go, and an ingest starts here at once. The waiting replica either sees
    # it publish, or finds the lock free first and builds the index itself (and this ingest
    # then finds it locked): one generation either way, and the replica answers.
    store.state.delete(ids=[LOCK_ID])
    with contextlib.suppress(IngestLocked):
        ingest(small_knowledge, tmp_path / "ingest-data", chroma_port)
    thread.join(timeout=60)
    assert opened
    assert not opened[0].ask("Hva er et fagmøte?").abstained
    assert store.current() is not None


def test_one_conversation_alternating_between_two_replicas_keeps_its_state(
    tmp_path: Path, chroma_port: int, postgres_url: str
) -> None:
    """Two replicas, each its own engine (empty data dir, the index from the Chroma server) and
    its own connection to one PostgreSQL database: a conversation that moves between them
    keeps its follow-up, "kilde N" and 👍 as if it had stayed on one."""
    from bot.conversation import ConversationService, ReplyKind, Vote
    from bot.store import Store, drop_everything

    ingest(SEED_KNOWLEDGE, tmp_path / "ingest-data", chroma_port)
    nowhere = tmp_path / "nowhere"
    a = ConversationService(replica(tmp_path, "a", nowhere, chroma_port), Store(postgres_url))
    b = ConversationService(replica(tmp_path, "b", nowhere, chroma_port), Store(postgres_url))
    alone = ConversationService(a.engine, Store("sqlite://"))  # the same turns on one replica
    try:
        first = a.handle("chat-1", "u1", "Hva er et etatsstyringsmøte?", "telegram")
        follow = b.handle("chat-1", "u1", "Hvem leder det?", "telegram")
        alone.handle("chat-1", "u1", "Hva er et etatsstyringsmøte?", "telegram")
        expected = alone.handle("chat-1", "u1", "Hvem leder det?", "telegram")
        assert first.kind is ReplyKind.ANSWER and follow.kind is ReplyKind.ANSWER
        assert follow.answer is not None and expected.answer is not None
        assert follow.answer.lead == expected.answer.lead
        assert follow.answer.citations[0].chunk_id == expected.answer.citations[0].chunk_id

        source = a.handle("chat-1", "u1", "kilde 1", "telegram")
        assert source.kind is ReplyKind.SOURCE and source.source is not None
        assert source.source.turn == follow.turn_id  # the turn answered on the other replica
        assert source.source.citation.chunk_id == follow.answer.citations[0].chunk_id

        assert follow.turn_id is not None
        thanks = a.handle("chat-1", "u1", Vote(follow.turn_id, True), "telegram")
        assert thanks.kind is ReplyKind.FEEDBACK
    finally:
        for service in (a, b):
            service.engine.close()
        drop_everything(b.store._engine)


def _serve(tmp_path: Path, name: str, chroma: int, database: str) -> tuple[subprocess.Popen, str]:
    """`styringsbot serve` as in README's "Running several replicas": the Chroma server, the
    database and an empty data dir."""
    port = free_port()
    log = (tmp_path / f"{name}.log").open("w")
    process = subprocess.Popen(
        [str(console_script("styringsbot")), "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env=subprocess_env(
            STYRINGSBOT_DATA_DIR=str(tmp_path / name),
            STYRINGSBOT_KNOWLEDGE_DIR=str(tmp_path / "nowhere"),
            CHROMA_HOST=HOST,
            CHROMA_PORT=str(chroma),
            STYRINGSBOT_DATABASE_URL=database,
            STYRINGSBOT_CACHE_SECONDS="0",
        ),
    )
    return process, f"http://{HOST}:{port}"


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _ready(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{base} did not get ready:\n{log.read_text()}")


def test_two_serve_replicas_behind_one_address_share_index_and_conversations(
    tmp_path: Path, chroma_port: int, postgres_url: str
) -> None:
    from bot.store import Store, drop_everything

    ingest(SEED_KNOWLEDGE, tmp_path / "ingest-data", chroma_port)
    (a, base_a), (b, base_b) = (
        _serve(tmp_path, "a", chroma_port, postgres_url),
        _serve(tmp_path, "b", chroma_port, postgres_url),
    )
    try:
        _ready(base_a, a, tmp_path / "a.log")
        _ready(base_b, b, tmp_path / "b.log")
        chat = {"conversation_id": "meeting-7"}
        status, first = _post(
            f"{base_a}/api/ask", {"question": "Hva er et etatsstyringsmøte?", **chat}
        )
        assert status == 200 and first["citations"]
        status, follow = _post(f"{base_b}/api/ask", {"question": "Hvem leder det?", **chat})
        assert status == 200
        assert "kommunaldirektør" in follow["lead"].lower()  # read as a follow-up on B
        status, thanks = _post(
            f"{base_a}/api/feedback", {"turn_id": follow["turn_id"], "helpful": True, **chat}
        )
        assert status == 200 and thanks["thanks"]  # A knows the turn B answered

        a.terminate()  # one replica goes away …
        a.wait(timeout=30)
        status, answer = _post(f"{base_b}/api/ask", {"question": "Hva er et fagmøte?", **chat})
        assert status == 200 and answer["citations"]  # … the other serves on
    finally:
        for process in (a, b):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        drop_everything(Store(postgres_url)._engine)
