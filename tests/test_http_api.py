"""The HTTP API of `styringsbot serve`: `POST /api/ask` and `GET /healthz`, served for real.

Every test serves `create_app()` on a random port of 127.0.0.1 and talks to it with an
`aiohttp.ClientSession`, over the real seed index with the real embedding model.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from app_server import Server, call
from conftest import (
    ANSWER_KEYS,
    CITATION_KEYS,
    PASSAGE_KEYS,
    console_script,
    subprocess_env,
)

QUESTION = "Hvem leder etatsstyringsmøtet?"
FOLLOW_UP = "og hvem skriver referatet?"
OUT_OF_SCOPE = "Hva er hovedstaden i Frankrike?"


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
    # In a conversation the answer also names its turn, for /api/feedback.
    assert set(body) - {"turn_id"} == ANSWER_KEYS, body
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
    assert (body["status"], body["index_problem"]) == ("ok", None)
    assert body["generation"] == seed_engine.generation[1]


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


@pytest.mark.parametrize("token", ["s3cret", "hemmelig-nøkkel"])
def test_api_token_beyond_ascii(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture, token: str
):
    """The header's bytes as a client sends them: the right token in UTF-8 or Latin-1 answers,
    anything else is 401 (never 500), also when the header is not UTF-8 at all."""
    headers = {
        "right, UTF-8": f"Bearer {token}".encode(),
        "right, Latin-1": f"Bearer {token}".encode("latin-1"),
        "wrong, non-ASCII": "Bearer nøkkel-hemmelig".encode(),
        "wrong, Latin-1": "Bearer nøkkel-hemmelig".encode("latin-1"),
        "not UTF-8": b"Bearer \xff\xfe\xfd",
        "a lone continuation byte": b"Bearer hemmelig-n\xb8kkel",
    }
    body = json.dumps({"question": QUESTION}).encode()

    async def scenario(client: aiohttp.ClientSession) -> dict[str, tuple[int, Any]]:
        port = int(str(client._base_url).rsplit(":", 1)[1])
        results = {}
        for name, value in headers.items():
            head = _post(body).replace(b"\r\n\r\n", b"\r\nAuthorization: " + value + b"\r\n\r\n")
            results[name] = await asyncio.to_thread(_raw, port, head, body)
        return results

    results = make_server(api_token=token).run(scenario)
    for name in ("right, UTF-8", "right, Latin-1"):
        status, answer = results[name]
        assert status == 200 and "kommunaldirektør" in answer["answer"], (name, answer)
    for name in set(headers) - {"right, UTF-8", "right, Latin-1"}:
        assert_error(*results[name], 401)
    assert "Traceback" not in caplog.text


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


# -- hostile requests, each answered at once with one sentence -------------------------------


def _raw(port: int, head: bytes, body: bytes = b"", *more: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes as they are (no client library smoothing them); returns (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        for part in more:
            sock.sendall(part)
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert b"charset=utf-8" in headers.lower(), headers
    return int(status_line.split()[1]), json.loads(payload.decode("utf-8"))


def _post(body: bytes, *headers: str) -> bytes:
    lines = ["POST /api/ask HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             *headers, f"Content-Length: {len(body)}", "", ""]  # fmt: skip
    return "\r\n".join(lines).encode()


CHUNKED = _post(b"", "Transfer-Encoding: chunked").replace(b"Content-Length: 0\r\n", b"")


@pytest.mark.parametrize(
    ("name", "head", "body", "more", "status"),
    [
        ("nested 2000 deep", None, b'{"question": ' + b"[" * 2000 + b"]" * 2000 + b"}", (), 400),
        ("a lone surrogate", None, b'{"question": "\\ud800"}', (), 400),
        ("a false gzip encoding", "Content-Encoding: gzip", b'{"question": "Hva?"}', (), 400),
        ("not UTF-8", None, '{"question": "Hvem leder møtet?"}'.encode("latin-1"), (), 400),
        (
            "10 MB chunked",
            "chunked",
            b"",
            (b"".join(b"10000\r\n" + b"x" * 0x10000 + b"\r\n" for _ in range(160)) + b"0\r\n\r\n",),
            413,
        ),
    ],
)
def test_hostile_bodies_get_a_4xx_at_once(
    make_server: Callable[..., Server], name: str, head: str | None, body: bytes,
    more: tuple[bytes, ...], status: int, caplog: pytest.LogCaptureFixture,
):  # fmt: skip
    server = make_server()

    async def scenario(client: aiohttp.ClientSession) -> tuple[int, Any]:
        port = int(str(client._base_url).rsplit(":", 1)[1])
        if head == "chunked":
            request = CHUNKED
        else:
            request = _post(body, head) if head else _post(body)
            body_ = b"" if head == "chunked" else body
            return await asyncio.to_thread(_raw, port, request, body_, *more)
        started = time.monotonic()
        answer = await asyncio.to_thread(_raw, port, request, b"", *more)
        assert time.monotonic() - started < 5, name
        return answer

    got, error = server.run(scenario)
    assert got == status, (name, error)
    assert set(error) == {"error"} and "\n" not in error["error"]
    assert "Traceback" not in caplog.text


def test_a_body_that_never_ends_gets_408(make_server: Callable[..., Server]):
    server = make_server()

    async def scenario(client: aiohttp.ClientSession) -> tuple[int, Any]:
        port = int(str(client._base_url).rsplit(":", 1)[1])
        return await asyncio.to_thread(_raw, port, CHUNKED, b'5\r\n{"que\r\n')

    status, error = server.run(scenario)
    assert status == 408 and "seconds" in error["error"]


# -- feedback, readiness, timing --------------------------------------------------------------


def test_feedback_on_an_api_answer(make_server: Callable[..., Server]):
    server = make_server()

    async def scenario(client: aiohttp.ClientSession) -> list[tuple[int, Any]]:
        _, answer = await ask(client, {"question": QUESTION, "conversation_id": "k"})
        vote = {"conversation_id": "k", "turn_id": answer["turn_id"], "helpful": False}
        return [
            await call(client, "POST", "/api/feedback", json=vote),
            await call(client, "POST", "/api/feedback", json={**vote, "turn_id": "nope"}),
            await call(client, "POST", "/api/feedback", json={"turn_id": "x", "helpful": 1}),
        ]

    (ok, thanks), (gone, missing), (bad, wrong) = server.run(scenario)
    assert (ok, thanks) == (
        200,
        {"thanks": "Takk! Svaret er merket som ikke godt nok, så det kan bli bedre. 👎"},
    )
    assert_error(gone, missing, 404)
    assert_error(bad, wrong, 400)
    assert [e.question for e in server.events("down")] == [QUESTION]


def test_readyz_and_server_timing_with_the_cache(make_server: Callable[..., Server]):
    server = make_server()

    async def scenario(client: aiohttp.ClientSession) -> tuple[Any, list[float]]:
        ready = await call(client, "GET", "/readyz")
        timings = []
        for _ in range(3):
            async with client.post("/api/ask", json={"question": QUESTION}) as response:
                await response.read()
                timing = response.headers["Server-Timing"]
                timings.append(float(timing.split("dur=")[1]))
        return ready, timings

    (status, ready), timings = server.run(scenario)
    assert status == 200 and ready == {"ready": True, "index": True, "store": True}
    # The same question again comes from the answer cache: a couple of milliseconds at most.
    assert min(timings[1:]) < timings[0]


def test_readyz_says_when_the_store_is_down(make_server: Callable[..., Server], tmp_path: Path):
    server = make_server()
    path = Path(server.store.url.removeprefix("sqlite:///"))
    server.store._engine.dispose()
    for leftover in path.parent.glob(path.name + "*"):
        leftover.unlink()
    path.write_bytes(b"this is not an SQLite database " * 200)  # a damaged store file

    async def scenario(client: aiohttp.ClientSession) -> tuple[int, Any]:
        return await call(client, "GET", "/readyz")

    status, body = server.run(scenario)
    assert status == 503 and body == {"ready": False, "index": True, "store": False}


# -- a restart between a question and what follows it ------------------------------------------


class Connector:
    """A local serviceUrl that stands in for Azure's Bot Connector: it records what the bot
    sends (replies to a Teams conversation) and answers like the connector."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                body = json.dumps({"id": f"reply{len(received)}"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_PUT = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _teams(base: str, connector: Connector, text: str) -> None:
    activity = {
        "type": "message", "id": f"m{time.monotonic_ns()}", "channelId": "msteams",
        "serviceUrl": connector.url, "text": text, "locale": "nb-NO",
        "from": {"id": "user-1", "name": "Kari"}, "recipient": {"id": "bot-1", "name": "Bot"},
        "conversation": {"id": "conv-1", "conversationType": "personal"},
    }  # fmt: skip
    request = urllib.request.Request(
        f"{base}/api/messages", data=json.dumps(activity).encode(), headers=JSON
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status in (200, 202), response.status


def _until_up(process: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            _http(f"{base}/healthz")
            return
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "serve did not come up within 60 s"
            time.sleep(0.25)


def _stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    return stderr


def test_restarting_serve_keeps_the_conversations(
    seed_engine: Any, seed_knowledge: Path, tmp_path: Path
):
    database = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    env = {"STYRINGSBOT_DATABASE_URL": database, "TEAMS_ALLOW_ANONYMOUS": "true"}
    connector = Connector()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        first = _serve(seed_engine, seed_knowledge, tmp_path, port, **env)
        try:
            _until_up(first, base)
            status, answer = _http(
                f"{base}/api/ask", {"question": QUESTION, "conversation_id": "k"}
            )
            assert status == 200
            _teams(base, connector, QUESTION)
        finally:
            _stop(first)

        second = _serve(seed_engine, seed_knowledge, tmp_path, port, **env)
        try:
            _until_up(second, base)
            vote = {"conversation_id": "k", "turn_id": answer["turn_id"], "helpful": True}
            assert _http(f"{base}/api/feedback", vote)[0] == 200
            status, follow = _http(
                f"{base}/api/ask", {"question": FOLLOW_UP, "conversation_id": "k"}
            )
            assert status == 200 and "utkast skrives av" in follow["lead"].lower()
            _teams(base, connector, "kilde 1")
        finally:
            _stop(second)
    finally:
        connector.close()
    cards = [a["attachments"][0]["content"] for a in connector.received if a.get("attachments")]
    assert len(cards) == 2  # the answer before the restart, the source after it
    source_runs = json.dumps(cards[1], ensure_ascii=False)
    assert "Ledes av kommunaldirektør" in source_runs and "[1]" in source_runs


def test_one_client_address_cannot_take_the_service(make_server: Callable[..., Server]):
    """POST /api/ask answers a client address STYRINGSBOT_API_RATE_LIMIT times a minute, then
    429 with Retry-After (each conversation id is the same client)."""
    server = make_server(api_rate_limit=3)

    async def scenario(client: aiohttp.ClientSession) -> list[tuple[int, Any, str | None]]:
        results = []
        for n in range(4):
            async with client.post(
                "/api/ask", json={"question": QUESTION, "conversation_id": f"c{n}"}
            ) as response:
                results.append(
                    (response.status, await response.json(), response.headers.get("Retry-After"))
                )
        return results

    results = server.run(scenario)
    assert [status for status, _, _ in results] == [200, 200, 200, 429]
    _, body, retry_after = results[-1]
    assert set(body) == {"error"} and "sekund" in body["error"]
    assert retry_after is not None and 1 <= int(retry_after) <= 60
