"""Load on the HTTP API: many clients at once sending `POST /api/ask`; prints latency and
throughput, the server's CPU time per answer, and what the answer cache saves.

    python benchmarks/http_load.py                       # starts `styringsbot serve` itself
    python benchmarks/http_load.py --concurrency 50 --requests 500

It starts the server twice. First with the answer cache off: one client asks every question once
(latency, and the server's CPU seconds per answer), then `--concurrency` clients send `--requests`
questions in a closed loop (each sends its next question when the previous answer arrives).
Throughput is compared with what the cores can do: cores ÷ CPU seconds of one answer. Then with
the cache on: the same question asked again is timed on the server (`Server-Timing`).
Questions are those of benchmarks/fit and benchmarks/measure, so the figures cover the whole mix
of guided, plain and out-of-scope questions.
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


def _questions() -> list[str]:
    found: dict[str, None] = {}
    for path in sorted(HERE.glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                found.setdefault(item.get("question") or item["first"], None)
    return list(found)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Server:
    def __init__(self, **env: str) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [str(Path(sys.executable).parent / "styringsbot"), "serve", "--port", str(port)]
        settings = {
            "STYRINGSBOT_QUESTION_LOG": "off",
            "STYRINGSBOT_RATE_LIMIT": "0",
            "STYRINGSBOT_API_RATE_LIMIT": "0",
            **env,
        }
        self.process = subprocess.Popen(command, env={**os.environ, **settings})

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def _up(session: aiohttp.ClientSession, url: str) -> dict:
    deadline = time.monotonic() + 120
    while True:
        try:
            async with session.get(f"{url}/healthz") as response:
                if response.status == 200:
                    return await response.json()
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"The server at {url} did not come up within 120 s.")
        await asyncio.sleep(0.25)


async def _ask(
    session: aiohttp.ClientSession, url: str, question: str
) -> tuple[bool, float, float]:
    """(answered, client milliseconds, server milliseconds)."""
    start = time.perf_counter()
    async with session.post(f"{url}/api/ask", json={"question": question}) as response:
        body = await response.json()
        timing = response.headers.get("Server-Timing", "dur=nan").split("dur=")[1]
        ok = response.status == 200 and "answer" in body
    return ok, (time.perf_counter() - start) * 1000, float(timing)


async def _load(server: Server, questions: list[str], concurrency: int, total: int) -> None:
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        health = await _up(session, server.url)
        print(
            f"server: {health['documents']} documents, {health['chunks']} chunks, "
            f"embedder {health['embedder']}; {os.cpu_count()} cores"
        )
        for question in questions[:10]:  # warm the workers
            await _ask(session, server.url, question)

        cpu_before = _cpu_seconds(server.process.pid)
        single = [await _ask(session, server.url, q) for q in questions]
        cpu_per_answer = (_cpu_seconds(server.process.pid) - cpu_before) / len(single)
        times = [t for _, t, _ in single]
        print(
            f"one client, {len(single)} different questions: p50 {statistics.median(times):.1f} "
            f"ms, p95 {_pct(times, 95):.1f} ms; server CPU {cpu_per_answer * 1000:.1f} ms "
            "per answer"
        )

        queue: asyncio.Queue[str] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(questions[i % len(questions)])
        results: list[tuple[bool, float, float]] = []

        async def client() -> None:
            while not queue.empty():
                question = queue.get_nowait()
                try:
                    results.append(await _ask(session, server.url, question))
                except (aiohttp.ClientError, TimeoutError):
                    results.append((False, float("nan"), float("nan")))

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start

    latencies = [t for ok, t, _ in results if ok]
    errors = sum(not ok for ok, _, _ in results)
    throughput = len(latencies) / elapsed
    ideal = (os.cpu_count() or 1) / cpu_per_answer
    print(
        f"{concurrency} concurrent clients, {len(results)} requests in {elapsed:.1f} s: "
        f"{throughput:.1f} answers/s, {errors} errors"
    )
    print(
        f"  p50 {_pct(latencies, 50):.0f} ms   p95 {_pct(latencies, 95):.0f} ms   "
        f"max {max(latencies):.0f} ms"
    )
    print(
        f"  cores ÷ CPU seconds of one answer = {ideal:.1f} answers/s; throughput is "
        f"{throughput / ideal:.2f} of that (goal ≥ 0.80)"
    )


async def _cache(server: Server, question: str, repeats: int) -> None:
    async with aiohttp.ClientSession() as session:
        await _up(session, server.url)
        first = await _ask(session, server.url, question)
        again = [await _ask(session, server.url, question) for _ in range(repeats)]
    server_ms = [s for _, _, s in again]
    print(
        f"answer cache: first asked {first[2]:.1f} ms on the server; asked again {repeats} times: "
        f"p50 {statistics.median(server_ms):.2f} ms, max {max(server_ms):.2f} ms on the server "
        "(goal ≤ 2 ms)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    questions = _questions()

    server = Server(STYRINGSBOT_CACHE_SECONDS="0")
    try:
        asyncio.run(_load(server, questions, args.concurrency, args.requests))
    finally:
        server.stop()
    server = Server()
    try:
        asyncio.run(_cache(server, "Hvem leder etatsstyringsmøtet?", 50))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
