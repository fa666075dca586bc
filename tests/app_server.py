"""An HTTP app (`create_app`) served on 127.0.0.1 for one scenario, shared by the HTTP API and
Teams tests: the same service and settings, a store file that outlives a restart, and JSON calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from conftest import make_settings

from bot.channels.http import create_app
from bot.conversation import ConversationService
from bot.store import Store

T = TypeVar("T")


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


class SlowEngine:
    """The real engine, answering `delay` seconds late (a busy server, a long document)."""

    def __init__(self, engine: Any, delay: float) -> None:
        self._engine = engine
        self.delay = delay

    def ask(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay)
        return self._engine.ask(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class Server:
    """A service over an SQLite store file and settings for `create_app()`; `run` serves it
    for one scenario, `restart` replaces the service by a new one on the same store."""

    def __init__(
        self,
        engine: Any,
        root: Path,
        knowledge: Path,
        question_log: str = "gaps",
        api_rate_limit: int = 0,
        **settings: Any,
    ) -> None:
        self.engine = engine
        self.question_log = question_log
        self.api_rate_limit = api_rate_limit
        self.store_url = f"sqlite:///{root / 'styringsbot.sqlite3'}"
        self.service = self._new_service()
        self.settings = make_settings(
            root / "data", knowledge, **{"teams_allow_anonymous": True, **settings}
        )

    @property
    def store(self) -> Store:
        return self.service.store

    def _new_service(self) -> ConversationService:
        return ConversationService(
            self.engine,
            Store(self.store_url),
            question_log=self.question_log,
            api_rate_limit=self.api_rate_limit,
        )

    def restart(self) -> None:
        self.service.close()
        self.service = self._new_service()

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


async def call(
    client: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    """One request whose answer is JSON whatever the status. Returns (status, body)."""
    async with client.request(method, path, **kwargs) as response:
        text = await response.text()
        assert response.content_type == "application/json", (response.status, text[:300])
        return response.status, json.loads(text)
