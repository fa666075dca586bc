"""The HTTP server: `POST /api/ask`, `GET /healthz`, and Teams' `POST /api/messages`.

`styringsbot serve` runs it. `/api/ask` returns the same object as `styringsbot ask --json`.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from aiohttp import web

from bot.config import Settings
from bot.conversation import ConversationService, ServiceError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
MAX_CONVERSATION_ID = 200
SERVICE_KEY = web.AppKey("service", ConversationService)
SETTINGS_KEY = web.AppKey("settings", Settings)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def ask(request: web.Request) -> web.Response:
    """`{"question": str, "conversation_id": str?}` → the `ask --json` object."""
    settings = request.app[SETTINGS_KEY]
    if settings.api_token and not _bearer_matches(request, settings.api_token):
        return _error(401, "Missing or wrong API token; send 'Authorization: Bearer <token>'.")
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, 'The body is not JSON; send {"question": "..."}.')
    if not isinstance(body, dict):
        return _error(400, 'The body must be a JSON object such as {"question": "..."}.')
    question = body.get("question")
    if not isinstance(question, str):
        return _error(400, 'The field "question" is missing or not a string.')
    conversation = body.get("conversation_id")
    if conversation is not None and (
        not isinstance(conversation, str) or not 0 < len(conversation) <= MAX_CONVERSATION_ID
    ):
        return _error(
            400, f'"conversation_id" must be a string of 1 to {MAX_CONVERSATION_ID} characters.'
        )
    service = request.app[SERVICE_KEY]
    chat = f"http:{conversation}" if conversation else None
    try:
        turn = await service.run(service.ask, chat, question, "http")
    except ServiceError as exc:
        status = 413 if len(question.strip()) > service.max_question_chars else 400
        return _error(status, str(exc))
    return web.json_response(turn.answer.to_dict(), dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _bearer_matches(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


async def healthz(request: web.Request) -> web.Response:
    """Is the index loaded, how big is it, which embedder answers."""
    service = request.app[SERVICE_KEY]
    engine = service.engine
    chunks = engine.index.chunks
    teams = request.app.get(TEAMS_STATUS_KEY, "off")
    return web.json_response(
        {
            "status": "ok",
            "index_loaded": True,
            "documents": len({c.source for c in chunks}),
            "chunks": len(chunks),
            "embedder": engine.embedder.id,
            "teams": teams,
        },
        dumps=_dumps,
    )


TEAMS_STATUS_KEY = web.AppKey("teams_status", str)


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


def create_app(service: ConversationService, settings: Settings) -> web.Application:
    """The aiohttp application with every HTTP route; Teams is added when configured."""
    from bot.channels.teams import add_teams_routes

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
    app[SERVICE_KEY] = service
    app[SETTINGS_KEY] = settings
    app.router.add_post("/api/ask", ask)
    app.router.add_get("/healthz", healthz)
    app[TEAMS_STATUS_KEY] = add_teams_routes(app, service, settings)
    return app
