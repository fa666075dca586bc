"""The HTTP API of `styringsbot serve`: `POST /api/ask` and `GET /healthz`, served for real.

Every test serves `create_app()` on a random port of 127.0.0.1 and talks to it with an
`aiohttp.ClientSession`, over the real seed index with the real embedding model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from conftest import (
    ANSWER_KEYS,
    CITATION_KEYS,
    PASSAGE_KEYS,
    console_script,
    make_settings,
    subprocess_env,
)

from bot.channels.http import create_app
from bot.conversation import ConversationService
from bot.feedback import FeedbackStore

T = TypeVar("T")

QUESTION = "Hvem leder etatsstyringsmøtet?"
FOLLOW_UP = "og hvem skriver referatet?"
OUT_OF_SCOPE = "Hva er hovedstaden i Frankrike?"


@contextlib.asynccontextmanager
async def running(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a random port of 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Server:
    """A fresh service and settings for one `create_app()`; `run` serves it for one scenario."""

    def __init__(
        self, engine: Any, root: Path, knowledge: Path, question_log: str = "gaps", **settings: Any
    ) -> None:
        self.store = FeedbackStore(root / "fb.sqlite3")
        self.service = ConversationService(engine, store=self.store, question_log=question_log)
        self.settings = make_settings(
            root / "data", knowledge, **{"teams_allow_anonymous": True, **settings}
        )

    def run(self, scenario: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
        async def main() -> T:
            async with (
                running(create_app(self.service, self.settings)) as url,
                aiohttp.ClientSession(url) as client,
            ):
                return await scenario(client)

        return asyncio.run(main())

    def events(self, *kinds: str) -> list[Any]:
        return self.store.events(*kinds)  # type: ignore[arg-type]


@pytest.fixture
def make_server(
    seed_engine: Any, seed_knowledge: Path, tmp_path: Path
) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(**options: Any) -> Server:
        root = tmp_path / f"server{len(servers)}"
        root.mkdir()
        servers.append(Server(seed_engine, root, seed_knowledge, **options))
        return servers[-1]

    yield make
    for server in servers:
        server.service.close()


async def call(
    client: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    """One request; the answer must be JSON whatever the status. Returns (status, body)."""
    async with client.request(method, path, **kwargs) as response:
        text = await response.text()
        assert response.content_type == "application/json", (response.status, text[:300])
        return response.status, json.loads(text)


async def ask(client: aiohttp.ClientSession, payload: Any, **kwargs: Any) -> tuple[int, Any]:
    return await call(client, "POST", "/api/ask", json=payload, **kwargs)


def assert_error(status: int, body: Any, expected: int) -> None:
    """A 4xx is `{"error": "<one sentence>"}` and nothing else."""
    assert status == expected, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str) and message.strip(), body
    assert "\n" not in message and "Traceback" not in message, body


def assert_ask_shape(body: Any) -> None:
    assert set(body) == ANSWER_KEYS, body
    assert isinstance(body["answer"], str) and isinstance(body["abstained"], bool)
    for citation in body["citations"]:
        assert set(citation) == CITATION_KEYS
    for passage in body["passages"]:
        assert set(passage) == PASSAGE_KEYS


# -- /api/ask -------------------------------------------------------------------------------


def test_ask_returns_the_ask_json_object(make_server: Callable[..., Server], seed_engine: Any):
    status, body = make_server().run(lambda client: ask(client, {"question": QUESTION}))
    assert status == 200
    assert_ask_shape(body)
    expected = seed_engine.ask(QUESTION).to_dict()
    assert body["question"] == QUESTION
    assert body["answer"] == expected["answer"]
    assert body["abstained"] is False
    assert body["citations"] == expected["citations"]
    assert [p["source"] for p in body["passages"]] == [p["source"] for p in expected["passages"]]
    assert "kommunaldirektør" in body["answer"]
    assert body["citations"] and "lysbilde" in (body["citations"][0]["location"] or "")


def test_conversation_id_carries_a_follow_up(make_server: Callable[..., Server]):
    async def scenario(client: aiohttp.ClientSession) -> tuple[Any, Any, Any]:
        _, first = await ask(client, {"question": QUESTION, "conversation_id": "møte-1"})
        _, follow = await ask(client, {"question": FOLLOW_UP, "conversation_id": "møte-1"})
        _, alone = await ask(client, {"question": FOLLOW_UP})
        return first, follow, alone

    first, follow, alone = make_server().run(scenario)
    assert "kommunaldirektør" in first["answer"]
    assert "referat" in follow["answer"].lower()
    assert "Etatsstyringsmøte" in follow["answer"]  # the context of the first question
    assert not follow["abstained"]
    assert alone["answer"] != follow["answer"]  # without the conversation it is not a follow-up


def test_conversations_are_kept_apart(make_server: Callable[..., Server]):
    async def scenario(client: aiohttp.ClientSession) -> tuple[Any, Any]:
        await ask(client, {"question": QUESTION, "conversation_id": "a"})
        _, other = await ask(client, {"question": FOLLOW_UP, "conversation_id": "b"})
        _, alone = await ask(client, {"question": FOLLOW_UP})
        return other, alone

    other, alone = make_server().run(scenario)
    assert other["answer"] == alone["answer"]


def test_healthz_describes_the_index(make_server: Callable[..., Server], seed_engine: Any):
    status, body = make_server().run(lambda client: call(client, "GET", "/healthz"))
    assert status == 200
    assert body["index_loaded"] is True
    assert body["documents"] == 5
    assert body["chunks"] == len(seed_engine.index.chunks)
    assert body["embedder"] == seed_engine.embedder.id


# -- bad input ------------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
BAD_REQUESTS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "not JSON": ("POST", "/api/ask", {"data": b"question=hei", "headers": JSON}, 400),
    "broken JSON": ("POST", "/api/ask", {"data": b'{"question": ', "headers": JSON}, 400),
    "not UTF-8": ("POST", "/api/ask", {"data": b'{"question": "\xff"}', "headers": JSON}, 400),
    "a JSON list": ("POST", "/api/ask", {"json": [{"question": QUESTION}]}, 400),
    "a JSON string": ("POST", "/api/ask", {"json": QUESTION}, 400),
    "missing question": ("POST", "/api/ask", {"json": {"q": QUESTION}}, 400),
    "question a number": ("POST", "/api/ask", {"json": {"question": 42}}, 400),
    "question null": ("POST", "/api/ask", {"json": {"question": None}}, 400),
    "question a list": ("POST", "/api/ask", {"json": {"question": [QUESTION]}}, 400),
    "empty question": ("POST", "/api/ask", {"json": {"question": ""}}, 400),
    "whitespace question": ("POST", "/api/ask", {"json": {"question": " \n\t "}}, 400),
    "10 000 characters": ("POST", "/api/ask", {"json": {"question": "hvem " * 2000}}, 413),
    "conversation_id a number": (
        "POST",
        "/api/ask",
        {"json": {"question": QUESTION, "conversation_id": 7}},
        400,
    ),
    "conversation_id empty": (
        "POST",
        "/api/ask",
        {"json": {"question": QUESTION, "conversation_id": ""}},
        400,
    ),
    "conversation_id too long": (
        "POST",
        "/api/ask",
        {"json": {"question": QUESTION, "conversation_id": "c" * 201}},
        400,
    ),
    "a 1 MB body": ("POST", "/api/ask", {"json": {"question": "x" * 1_000_000}}, 413),
    "unknown path": ("POST", "/api/unknown", {"json": {"question": QUESTION}}, 404),
    "GET on /api/ask": ("GET", "/api/ask", {}, 405),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_one_json_sentence(make_server: Callable[..., Server], case: str):
    method, path, kwargs, expected = BAD_REQUESTS[case]

    async def scenario(client: aiohttp.ClientSession) -> None:
        status, body = await call(client, method, path, **kwargs)
        assert_error(status, body, expected)
        # The server still answers afterwards.
        status, body = await ask(client, {"question": QUESTION})
        assert status == 200 and "kommunaldirektør" in body["answer"]
        assert (await call(client, "GET", "/healthz"))[0] == 200

    make_server().run(scenario)


def test_conversation_id_of_max_length_is_accepted(make_server: Callable[..., Server]):
    payload = {"question": QUESTION, "conversation_id": "c" * 200}
    status, body = make_server().run(lambda client: ask(client, payload))
    assert status == 200 and "kommunaldirektør" in body["answer"]


def test_method_not_allowed_names_the_allowed_method(make_server: Callable[..., Server]):
    async def scenario(client: aiohttp.ClientSession) -> tuple[int, str | None]:
        async with client.get("/api/ask") as response:
            return response.status, response.headers.get("Allow")

    status, allow = make_server().run(scenario)
    assert status == 405
    assert allow == "POST"  # RFC 9110 §15.5.6: a 405 response must carry Allow


def test_long_whitespace_question_is_empty_not_too_long(make_server: Callable[..., Server]):
    status, body = make_server().run(lambda client: ask(client, {"question": " " * 1500}))
    assert_error(status, body, 400)


# -- hostile but valid questions and the question log ---------------------------------------

HOSTILE = ["<b>hei</b> & *x*", "'; DROP TABLE events;--", "Hvem leder møtet? 🤔 ÆØÅ 中文 \u202e"]


def test_hostile_questions_get_json_answers(make_server: Callable[..., Server]):
    async def scenario(client: aiohttp.ClientSession) -> list[tuple[int, Any]]:
        return [await ask(client, {"question": q}) for q in [*HOSTILE, OUT_OF_SCOPE]]

    server = make_server()
    results = server.run(scenario)
    for question, (status, body) in zip([*HOSTILE, OUT_OF_SCOPE], results, strict=True):
        assert status == 200, body
        assert_ask_shape(body)
        assert body["question"] == question.strip()
    assert results[-1][1]["abstained"] is True
    logged = [e.question for e in server.events("abstained")]
    assert OUT_OF_SCOPE in logged
    assert "'; DROP TABLE events;--" in logged  # stored as text, the table is still there
    assert not server.events("asked")


@pytest.mark.parametrize(
    ("question_log", "question", "kind", "logged"),
    [
        ("gaps", OUT_OF_SCOPE, "abstained", True),
        ("gaps", QUESTION, "asked", False),
        ("off", OUT_OF_SCOPE, "abstained", False),
        ("all", QUESTION, "asked", True),
        ("all", OUT_OF_SCOPE, "abstained", True),
    ],
)
def test_question_log_setting(
    make_server: Callable[..., Server], question_log: str, question: str, kind: str, logged: bool
):
    server = make_server(question_log=question_log)
    status, _ = server.run(lambda client: ask(client, {"question": question}))
    assert status == 200
    events = server.events("up", "down", "abstained", "asked")
    if logged:
        assert [(e.kind, e.channel, e.question) for e in events] == [(kind, "http", question)]
    else:
        assert events == []


# -- STYRINGSBOT_API_TOKEN ------------------------------------------------------------------


def test_api_token_is_required_when_set(make_server: Callable[..., Server]):
    async def scenario(client: aiohttp.ClientSession) -> dict[str, tuple[int, Any]]:
        headers = {
            "none": {},
            "wrong": {"Authorization": "Bearer nope"},
            "not bearer": {"Authorization": "Basic s3cret"},
            "right": {"Authorization": "Bearer s3cret"},
        }
        results = {
            k: await ask(client, {"question": QUESTION}, headers=h) for k, h in headers.items()
        }
        results["healthz"] = await call(client, "GET", "/healthz")
        return results

    results = make_server(api_token="s3cret").run(scenario)
    for case in ("none", "wrong", "not bearer"):
        assert_error(*results[case], 401)
    status, body = results["right"]
    assert status == 200 and "kommunaldirektør" in body["answer"]
    assert results["healthz"][0] == 200


# -- `styringsbot serve` as a real process --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http(url: str, payload: Any = None) -> tuple[int, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers=JSON)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _serve(seed_engine: Any, seed_knowledge: Path, tmp_path: Path, port: int, **env: str):
    settings = {
        "STYRINGSBOT_DATA_DIR": str(seed_engine.settings.data_dir),
        "STYRINGSBOT_KNOWLEDGE_DIR": str(seed_knowledge),
        **env,
    }
    return subprocess.Popen(
        [str(console_script("styringsbot")), "serve", "--port", str(port)],
        cwd=tmp_path,  # no .env of the developer
        env=subprocess_env(**settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_subprocess_answers_and_stops(seed_engine: Any, seed_knowledge: Path, tmp_path: Path):
    port = _free_port()
    process = _serve(seed_engine, seed_knowledge, tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                status, health = _http(f"{base}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "serve did not come up within 60 s"
                time.sleep(0.25)
        assert status == 200 and health["documents"] == 5
        status, body = _http(f"{base}/api/ask", {"question": QUESTION})
        assert status == 200
        assert_ask_shape(body)
        assert "kommunaldirektør" in body["answer"]
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("serve did not stop within 30 s of SIGTERM")
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_serve_refuses_anonymous_teams_with_an_app_id(
    seed_engine: Any, seed_knowledge: Path, tmp_path: Path
):
    process = _serve(
        seed_engine,
        seed_knowledge,
        tmp_path,
        _free_port(),
        TEAMS_ALLOW_ANONYMOUS="true",
        MICROSOFT_APP_ID="00000000-0000-0000-0000-000000000001",
        MICROSOFT_APP_PASSWORD="x",
    )
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Feil: ") and "TEAMS_ALLOW_ANONYMOUS" in lines[0]
