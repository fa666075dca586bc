"""Load on the HTTP API: many clients at once sending `POST /api/ask`; prints latency figures.

    python benchmarks/http_load.py                       # starts `styringsbot serve` itself
    python benchmarks/http_load.py --concurrency 50 --requests 500
    python benchmarks/http_load.py --url http://127.0.0.1:3978   # an already running server

Questions are the ones in benchmarks/*.jsonl (and the dev set if given), cycled, so the figures
cover the whole mix of guided, plain and out-of-scope questions. Each client sends its next
question as soon as the previous answer arrives (a closed loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent


def _questions(extra: list[Path]) -> list[str]:
    questions = []
    for path in [*sorted(HERE.glob("*.jsonl")), *extra]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                questions.append(json.loads(line)["question"])
    return questions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_until_up(session: aiohttp.ClientSession, url: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            async with session.get(f"{url}/healthz") as response:
                if response.status == 200:
                    return await response.json()
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"The server at {url} did not come up within {seconds:.0f} s.")
        await asyncio.sleep(0.25)


async def _run(url: str, questions: list[str], concurrency: int, total: int) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        health = await _wait_until_up(session, url, 120)
        print(
            f"server: {health['documents']} documents, {health['chunks']} chunks, "
            f"embedder {health['embedder']}"
        )

        async def one(question: str) -> float:
            start = time.perf_counter()
            async with session.post(f"{url}/api/ask", json={"question": question}) as response:
                body = await response.json()
                if response.status != 200 or "answer" not in body:
                    raise SystemExit(f"Bad response {response.status}: {body}")
            return (time.perf_counter() - start) * 1000

        # Warm-up: one pass of a few questions, one at a time.
        single = [await one(q) for q in questions[:20]]

        latencies: list[float] = []
        queue: asyncio.Queue[str] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(questions[i % len(questions)])

        async def client() -> None:
            while not queue.empty():
                latencies.append(await one(queue.get_nowait()))

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start

    def pct(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    print(
        f"one client, {len(single)} requests: p50 {statistics.median(single):.1f} ms, "
        f"p95 {pct(single, 95):.1f} ms"
    )
    print(
        f"{concurrency} concurrent clients, {len(latencies)} requests in {elapsed:.1f} s "
        f"({len(latencies) / elapsed:.0f} requests/s)"
    )
    print(
        f"  p50 {pct(latencies, 50):.0f} ms   p95 {pct(latencies, 95):.0f} ms   "
        f"p99 {pct(latencies, 99):.0f} ms   max {max(latencies):.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument(
        "--questions",
        type=Path,
        action="append",
        default=[],
        help="another JSONL question file to draw from (repeatable)",
    )
    args = parser.parse_args()
    questions = _questions(args.questions)
    server = None
    url = args.url
    if url is None:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        command = [str(Path(sys.executable).parent / "styringsbot"), "serve", "--port", str(port)]
        server = subprocess.Popen(command, env={**os.environ, "STYRINGSBOT_QUESTION_LOG": "off"})
    try:
        asyncio.run(_run(url.rstrip("/"), questions, args.concurrency, args.requests))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
