"""Requests that are not proper HTTP, sent as raw bytes to `create_app()` served on 127.0.0.1.

aiohttp's parser refuses them with 400 before any handler or middleware runs, so the body is
aiohttp's own text/plain error, not JSON (and it quotes what it choked on): the application
cannot change it. What the app decides is what is logged: one short line per request, never a
traceback, never the raw bytes (aiohttp's parser errors quote them, up to a whole body).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable

import aiohttp
import pytest
from app_server import Server

QUESTION = "Hvem leder etatsstyringsmøtet?"
BODY = json.dumps({"question": QUESTION}).encode()
BIG_BODY = json.dumps({"question": "x" * 60_000}).encode()


POST = b"POST /api/ask HTTP/1.1"


def _head(*headers: bytes, length: int | None = None, line: bytes = POST) -> bytes:
    lines = [line, b"Host: 127.0.0.1", b"Content-Type: application/json", *headers]
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join([*lines, b"", b""])


MALFORMED: dict[str, bytes] = {
    # 5 bytes of body, then 60 KB that aiohttp reads as the next request
    "a Content-Length that says less": _head(length=5) + BIG_BODY,
    "a Content-Length that is not a number": _head(b"Content-Length: 12abc") + BODY,
    "two Content-Lengths that disagree": _head(b"Content-Length: 3", length=len(BODY)) + BODY,
    "a header line of 100 KB": _head(b"X-Big: " + b"a" * 100_000, length=len(BODY)) + BODY,
    "10 000 headers": _head(*(b"X-H%d: v" % i for i in range(10_000)), length=len(BODY)) + BODY,
    "a request line of 100 KB": _head(line=b"POST /api/ask?" + b"q" * 100_000 + b" HTTP/1.1"),
    "a header of 8 KB with a control byte": _head(b"X-Bad: " + b"a" * 8000 + b"\x01", length=2)
    + b"{}",
    "bytes that are not HTTP": b"\x16\x03\x01\x02\x00" + b"\x00" * 2000 + b"\r\n\r\n",
}


def _exchange(port: int, data: bytes, timeout: float = 30) -> tuple[int, bytes]:
    """Send `data` as it is and read until the server closes; returns (status, body)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # The server may close before it has read everything: its answer still counts.
        with contextlib.suppress(OSError):
            sock.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), received[:300]
    return int(head.split()[1]), body


def _port(client: aiohttp.ClientSession) -> int:
    return int(str(client._base_url).rsplit(":", 1)[1])


def _assert_short_lines(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.stack_info]
    assert "Traceback" not in caplog.text
    for record in caplog.records:
        if record.name.startswith("aiohttp"):
            line = record.getMessage()
            assert "\n" not in line and len(line) < 300, line


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_are_4xx_and_one_short_log_line(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture, case: str
):
    caplog.set_level(logging.DEBUG)

    async def scenario(client: aiohttp.ClientSession) -> tuple[tuple[int, bytes], int]:
        answer = await asyncio.to_thread(_exchange, _port(client), MALFORMED[case])
        async with client.post("/api/ask", json={"question": QUESTION}) as response:
            return answer, response.status  # and the server answers as before

    (status, body), after = make_server().run(scenario)
    assert 400 <= status < 500, (status, body[:300])
    assert after == 200
    refused = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(refused) == 1 and refused[0].levelno <= logging.WARNING, refused
    _assert_short_lines(caplog)


def test_a_content_length_that_says_more_is_408(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
):
    """The body promised never comes: the app's own 408, in JSON."""

    async def scenario(client: aiohttp.ClientSession) -> tuple[int, bytes]:
        data = _head(length=len(BODY) + 500) + BODY
        return await asyncio.to_thread(_exchange, _port(client), data)

    status, body = make_server().run(scenario)
    assert status == 408 and set(json.loads(body)) == {"error"}
    _assert_short_lines(caplog)


def test_100_malformed_requests_log_under_100_kb(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
):
    """At DEBUG, the level that logs the most: 100 malformed requests (6 MB of log before)."""
    caplog.set_level(logging.DEBUG)
    cases = list(MALFORMED.values())

    async def scenario(client: aiohttp.ClientSession) -> list[int]:
        port = _port(client)
        return [
            (await asyncio.to_thread(_exchange, port, cases[i % len(cases)]))[0] for i in range(100)
        ]

    statuses = make_server().run(scenario)
    assert all(400 <= status < 500 for status in statuses), statuses
    assert len(caplog.text.encode()) < 100_000, len(caplog.text)
    _assert_short_lines(caplog)
