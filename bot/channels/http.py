"""The HTTP server: the HTTP API, health checks, and Teams' `POST /api/messages`.

`styringsbot serve` runs it. `POST /api/ask` returns the same object as `styringsbot ask --json`
(plus the turn's id in a conversation); `POST /api/feedback` takes 👍/👎 on such an answer;
`POST /api/intro` runs the onboarding course for a conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from bot.config import Settings
from bot.conversation import (
    Choose,
    ConversationService,
    Intro,
    Question,
    Reply,
    ReplyKind,
    Vote,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
DRAIN_BYTES = 32 * 1024 * 1024  # an over-long body is read (and dropped) this far, to answer 413
BODY_SECONDS = 5.0  # a body that has not arrived by then gets 408
MAX_CONVERSATION_ID = 200
SERVICE_KEY = web.AppKey("service", ConversationService)
SETTINGS_KEY = web.AppKey("settings", Settings)
TEAMS_STATUS_KEY = web.AppKey("teams_status", str)
TELEGRAM_STATUS_KEY = web.AppKey("telegram_status", str)
CHANNEL = "http"
# What was wrong with a refused question → the HTTP status that says so.
STATUS = {"too_long": 413, "gone": 404, "no_course": 404}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, dumps=_dumps)


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or the error response that says what is wrong with it."""
    settings = request.app[SETTINGS_KEY]
    if settings.api_token and not _bearer_matches(request, settings.api_token):
        return _error(401, "Missing or wrong API token; send 'Authorization: Bearer <token>'.")
    raw = await _read(request)
    if isinstance(raw, web.Response):
        return raw
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _error(400, "The body is not UTF-8; send JSON in UTF-8.")
    except RecursionError:
        return _error(400, "The JSON is nested too deeply; send a flat object.")
    except json.JSONDecodeError:
        return _error(400, 'The body is not JSON; send {"question": "..."}.')
    if not isinstance(body, dict):
        return _error(400, 'The body must be a JSON object such as {"question": "..."}.')
    if not _encodable(body):
        return _error(400, "The body holds a lone surrogate (\\ud800-\\udfff); send real text.")
    return body


async def _read(request: web.Request) -> bytes | web.Response:
    """The body, read within BODY_SECONDS and at most MAX_BODY_BYTES. A longer body is drained
    (up to DRAIN_BYTES) so the client hears 413 instead of a reset connection."""
    size = 0
    parts: list[bytes] = []
    try:
        async with asyncio.timeout(BODY_SECONDS):
            async for part in request.content.iter_chunked(64 * 1024):
                size += len(part)
                if size <= MAX_BODY_BYTES:
                    parts.append(part)
                elif size > DRAIN_BYTES:
                    break
    except TimeoutError:
        # The connection is not kept alive for a client that stopped halfway (RFC 9110 §15.5.9).
        response = _error(408, f"The body did not arrive within {BODY_SECONDS:g} seconds.")
        response.force_close()
        return response
    except (ContentEncodingError, BadHttpMessage, RequestPayloadError):
        # e.g. "Content-Encoding: gzip" on a body that is not: nothing more is read from it (and
        # aiohttp must not try to read the rest either, which would raise the error again).
        request.content.feed_eof()
        response = _error(400, "The body cannot be read as its headers describe it.")
        response.force_close()
        return response
    if size > MAX_BODY_BYTES:
        response = _error(413, f"The body is over {MAX_BODY_BYTES // 1024} KB; send less.")
        response.force_close()
        return response
    return b"".join(parts)


def _encodable(value: Any) -> bool:
    """Whether every string in a JSON value is real text (JSON allows "\\ud800" alone)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_encodable(v) for v in value)
    return True


def _conversation(body: dict[str, Any]) -> web.Response | str | None:
    conversation = body.get("conversation_id")
    if conversation is not None and (
        not isinstance(conversation, str) or not 0 < len(conversation) <= MAX_CONVERSATION_ID
    ):
        return _error(
            400, f'"conversation_id" must be a string of 1 to {MAX_CONVERSATION_ID} characters.'
        )
    return f"http:{conversation}" if conversation else None


async def ask(request: web.Request) -> web.Response:
    """`{"question": str, "conversation_id": str?}` → the `ask --json` object."""
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    question = body.get("question")
    if not isinstance(question, str):
        return _error(400, 'The field "question" is missing or not a string.')
    chat = _conversation(body)
    if isinstance(chat, web.Response):
        return chat
    service = request.app[SERVICE_KEY]
    started = time.perf_counter()
    client = f"http:{request.remote or 'unknown'}"  # the rate limit is per client address
    reply = await service.reply(chat, client, Question(question), CHANNEL)
    elapsed = (time.perf_counter() - started) * 1000
    if reply.kind is ReplyKind.RATE_LIMITED:
        response = _error(429, reply.text)
        response.headers["Retry-After"] = str(max(1, math.ceil(reply.retry_after or 1)))
        return response
    if reply.kind is not ReplyKind.ANSWER or reply.answer is None:
        return _refused(reply)
    data = reply.answer.to_dict()
    if chat is not None:
        data["turn_id"] = reply.turn_id
    response = web.json_response(data, dumps=_dumps)
    response.headers["Server-Timing"] = f"answer;dur={elapsed:.2f}"
    return response


async def feedback(request: web.Request) -> web.Response:
    """`{"conversation_id": str, "turn_id": str, "helpful": bool}` → `{"thanks": sentence}`."""
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    chat = _conversation(body)
    if isinstance(chat, web.Response):
        return chat
    turn, helpful = body.get("turn_id"), body.get("helpful")
    if chat is None or not isinstance(turn, str) or not isinstance(helpful, bool):
        return _error(
            400, 'Send {"conversation_id": str, "turn_id": str, "helpful": true or false}.'
        )
    service = request.app[SERVICE_KEY]
    reply = await service.reply(chat, None, Vote(turn, helpful), CHANNEL)
    if reply.kind is not ReplyKind.FEEDBACK:
        return _refused(reply)
    return web.json_response({"thanks": reply.text}, dumps=_dumps)


async def intro(request: web.Request) -> web.Response:
    """The onboarding course for one conversation. `{"conversation_id": str}` starts it or
    resumes it where the conversation left it (`"restart": true` from the first step, `"language":
    "en"` in English); with `"answer": {"step": str, "choice": int}` it answers a step's check
    question. → `{"text", "verdict", "lesson", "finished", "turn_id"}`."""
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    chat = _conversation(body)
    if isinstance(chat, web.Response):
        return chat
    answer, restart, language = body.get("answer"), body.get("restart", False), body.get("language")
    incoming: Intro | Choose
    if chat is None:
        return _error(400, 'Send a "conversation_id": the course remembers where each one is.')
    if answer is not None:
        step = answer.get("step") if isinstance(answer, dict) else None
        choice = answer.get("choice") if isinstance(answer, dict) else None
        if not isinstance(step, str) or type(choice) is not int:
            return _error(400, 'Send "answer" as {"step": str, "choice": the number chosen}.')
        incoming = Choose(step[:64], choice)
    elif not isinstance(restart, bool) or language not in (None, "nb", "en"):
        return _error(400, '"restart" must be true or false, and "language" "nb" or "en".')
    else:
        incoming = Intro(restart=restart, language=language)
    service = request.app[SERVICE_KEY]
    reply = await service.reply(chat, None, incoming, CHANNEL)
    if reply.kind is not ReplyKind.LESSON:
        return _refused(reply)
    data = {
        "text": reply.text,
        "verdict": reply.verdict.to_dict() if reply.verdict else None,
        "lesson": reply.lesson.to_dict() if reply.lesson else None,
        "finished": reply.lesson is None,
        "turn_id": reply.turn_id,
    }
    return web.json_response(data, dumps=_dumps)


def _refused(reply: Reply) -> web.Response:
    return _error(STATUS.get(reply.problem, 400), reply.text)


def _bearer_matches(request: web.Request, token: str) -> bool:
    """Whether the request's `Authorization: Bearer <token>` is `token`. Compared as bytes:
    `hmac.compare_digest` refuses str with non-ASCII letters, and aiohttp hands over header bytes
    that are not UTF-8 as lone surrogates. The token may come as UTF-8 or as Latin-1 (what HTTP
    clients such as `requests` send)."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    sent = given.strip().encode("utf-8", "surrogateescape")  # the bytes as they came
    expected = {token.encode("utf-8")}
    with contextlib.suppress(UnicodeEncodeError):
        expected.add(token.encode("latin-1"))
    return any(hmac.compare_digest(sent, candidate) for candidate in expected)


async def healthz(request: web.Request) -> web.Response:
    """Liveness, and what answers: the index, its generation and size, the embedder; and
    "degraded" with the reason when a newer index could not be taken into use (the bot goes on
    answering from the one it has)."""
    service = request.app[SERVICE_KEY]
    engine = service.engine
    await service.run(
        engine.follow_index
    )  # a new index.json is looked at now, not at the next question
    chunks = engine.index.chunks
    problem = getattr(engine, "index_problem", None)
    return web.json_response(
        {
            "status": "degraded" if problem else "ok",
            "index_problem": problem,
            "generation": engine.generation[1],
            "index_loaded": True,
            "documents": len({c.source for c in chunks}),
            "chunks": len(chunks),
            "embedder": engine.embedder.id,
            "teams": request.app.get(TEAMS_STATUS_KEY, "off"),
        },
        dumps=_dumps,
    )


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the index is open and the conversation store answers."""
    service = request.app[SERVICE_KEY]
    index_open = bool(service.engine.index.chunks)
    store = await service.run(service.store.ping)
    ready = index_open and store
    body = {"ready": ready, "index": index_open, "store": store}
    return web.json_response(body, status=200 if ready else 503, dumps=_dumps)


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error as one JSON sentence, never an HTML page or a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason)
        if "Allow" in exc.headers:  # a 405 names the methods that work
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("Request to %s failed", request.path)
        return _error(500, "Something went wrong on the server; the error is logged.")


class _ServerLog(logging.LoggerAdapter):
    """aiohttp's server log, except that a request aiohttp could not parse (a header line of
    100 KB, 10 000 headers, a Content-Length that lies, bytes that are not HTTP) is one short line
    at most at WARNING: aiohttp logs the parser's error with its traceback, and that error quotes
    the raw bytes it choked on, up to a whole body. Other errors are logged as they are."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            kwargs.pop("exc_info")
            kwargs.pop("stack_info", None)
            try:
                text = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                text = str(msg)
            level, msg, args = min(level, logging.WARNING), "%s: %s", (text, _parse_error(error))
        super().log(level, msg, *args, **kwargs)


def _parse_error(error: HttpProcessingError) -> str:
    """aiohttp's parser error in at most ~120 characters, without the raw bytes it quotes."""
    lines = str(error.message or "").strip().splitlines()
    text = lines[0] if lines else ""
    for quoted in (" b'", ' b"', " bytearray("):
        text = text.split(quoted, 1)[0]
    text = text.rstrip(" :.")[:100]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def create_app(service: ConversationService, settings: Settings) -> web.Application:
    """The aiohttp application with every HTTP route; Teams is added when configured."""
    from bot.channels.teams import add_teams_routes

    # The API reads its bodies itself (_read); Teams' endpoint keeps aiohttp's limit.
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[_json_errors],
        handler_args={"logger": _ServerLog(logging.getLogger("aiohttp.server"), {})},
    )
    app[SERVICE_KEY] = service
    app[SETTINGS_KEY] = settings
    app.router.add_post("/api/ask", ask)
    app.router.add_post("/api/feedback", feedback)
    app.router.add_post("/api/intro", intro)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app[TEAMS_STATUS_KEY] = add_teams_routes(app, service, settings)
    app[TELEGRAM_STATUS_KEY] = "av"
    if settings.telegram_bot_token and settings.telegram_webhook_url:
        from bot.channels.telegram import add_webhook_route

        app[TELEGRAM_STATUS_KEY] = add_webhook_route(app, service, settings)
    return app
