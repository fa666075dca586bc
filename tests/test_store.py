"""The conversation store, the same tests on a real SQLite file and a real PostgreSQL server.

PostgreSQL is started by the test in a temporary folder on 127.0.0.1 (as an unprivileged user
when the tests run as root, since the server refuses root), from the server binaries of the
machine; `.ci/run` installs Debian's package where they are missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.store import Store, StoredTurn, rate_hits


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = Store(url)
    yield opened
    if request.param == "postgresql":  # one server for the module: leave it empty
        from bot.store import drop_everything

        drop_everything(opened._engine)
    opened.close()


def turn(id_: str, chat: str = "c", created: float = 0.0) -> StoredTurn:
    context = {"question": "før", "topic": "Etatsstyringsmøte", "cited": ["k1"]}
    return StoredTurn(id_, chat, created or time.time(), f"spørsmål {id_}", {"n": id_}, context)


def test_turns_keep_the_latest_per_chat(store: Store) -> None:
    for i in range(5):
        store.add_turn(turn(f"t{i}"), keep=3)
    store.add_turn(turn("other", chat="d"), keep=3)
    assert store.last_turn("c").id == "t4"  # type: ignore[union-attr]
    assert store.turn("c", "t1") is None and store.turn("c", "t2") is not None
    kept = store.turn("c", "t3")
    assert (
        kept is not None
        and kept.answer == {"n": "t3"}
        and kept.context["topic"] == "Etatsstyringsmøte"
    )  # type: ignore[index]
    assert store.turn("d", "t3") is None  # turns belong to their chat
    store.forget("c")
    assert store.last_turn("c") is None and store.last_turn("d") is not None


def test_events_a_vote_replaces_a_vote(store: Store) -> None:
    store.record("abstained", "teams", "t1", "Hva er Q?", "ingen svar", [], None)
    store.record("down", "telegram", "t2", "Hva er P?", "svar", [{"n": 1, "title": "T"}], "før")
    store.record("up", "telegram", "t2", "Hva er P?", "svar", [{"n": 1, "title": "T"}], "før")
    assert store.counts() == {"abstained": 1, "up": 1}
    [vote] = store.events("up", "down")
    assert (vote.kind, vote.channel, vote.citations, vote.context) == (
        "up", "telegram", [{"n": 1, "title": "T"}], "før",
    )  # fmt: skip


def test_rate_hits_slide(store: Store) -> None:
    assert [store.hit("u", 2, 60, now) for now in (100.0, 130.0)] == [0.0, 0.0]
    assert store.hit("u", 2, 60, 140.0) == pytest.approx(20.0)
    assert store.hit("v", 2, 60, 140.0) == 0.0
    assert store.hit("u", 2, 60, 160.5) == 0.0  # the first hit has left the window
    assert store.hit("u", 0, 60, 161.0) == 0.0  # 0 = no limit


def test_purge_and_ping(store: Store) -> None:
    store.add_turn(turn("old", created=time.time() - 40 * 86400), keep=20)
    store.add_turn(turn("new"), keep=20)
    store.record("down", "teams", "t", "Et spørsmål med et navn?", "svar", [{"n": 1}], "før")
    assert store.purge(30) >= 1
    assert store.turn("c", "old") is None and store.turn("c", "new") is not None
    assert store.purge(0) == 0
    assert store.ping()


def test_purge_forgets_who_asked_within_an_hour(store: Store) -> None:
    now = time.time()
    store.hit("rate:old-user", 10, 60, now - 2 * 3600)
    store.hit("rate:recent-user", 10, 60, now - 60)
    store.purge(90)
    with store._engine.connect() as db:  # what is left of who asked when
        keys = {row.key for row in db.execute(rate_hits.select())}
    assert keys == {"rate:recent-user"}


def test_many_threads_write_at_once(store: Store) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                store.add_turn(turn(f"{n}-{i}", chat=f"chat{n}"), keep=5)
                store.hit(f"user{n % 2}", 1000, 60, time.time())
                store.record("asked", "http", f"{n}-{i}", "Q?", "A", [], None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert store.counts() == {"asked": 60}
    assert all(store.last_turn(f"chat{n}").id == f"{n}-9" for n in range(6))  # type: ignore[union-attr]


def test_a_store_made_before_migrations_is_taken_over_with_its_data(tmp_path: Path) -> None:
    """A store the bot created with SQLAlchemy's create_all (no migration record) keeps its
    rows and is recorded at the first revision."""
    from sqlalchemy import create_engine, text

    from bot.store import metadata

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as db:
        db.execute(text("INSERT INTO meta (key, value) VALUES ('kept', 'ja')"))
    engine.dispose()

    store = Store(url)
    with store._engine.connect() as db:
        assert db.execute(text("SELECT value FROM meta WHERE key = 'kept'")).scalar() == "ja"
        assert db.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    store.add_turn(turn("t1"), keep=5)
    assert store.last_turn("c") is not None


def test_replicas_starting_together_on_an_empty_postgresql_all_open_it(
    postgres_url: str,
) -> None:
    """Each CREATE TABLE at once fails on PostgreSQL's catalog: the migration lock serializes."""
    from bot.store import drop_everything

    drop_everything(Store(postgres_url)._engine)
    opened: list[Store] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(Store(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert errors == [] and len(opened) == 6  # (without the lock they deadlock or fail)
    opened[0].add_turn(turn("t1"), keep=5)
    assert opened[-1].last_turn("c") is not None
    drop_everything(opened[0]._engine)


def test_the_head_revision_the_store_checks_is_alembics_head() -> None:
    """A store at HEAD_REVISION is opened without running Alembic; a new migration must move the
    constant, or stores would never be brought up to it."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from bot.store import HEAD_REVISION

    config = Config()
    config.set_main_option(
        "script_location", str(Path(__file__).resolve().parents[1] / "bot" / "migrations")
    )
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


def test_a_store_at_the_head_revision_opens_without_alembic(tmp_path: Path) -> None:
    """The second open of a store finds it migrated and does not load Alembic (a fresh process
    then starts 0.2 s sooner); the first open migrates as before."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'store.db'}"
    program = (
        "import sys; from pathlib import Path; from bot.store import Store; "
        f"Store({url!r}); print('alembic' in sys.modules)"
    )
    first = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    second = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert first.stdout.strip() == "True", first.stderr
    assert second.stdout.strip() == "False", second.stderr
