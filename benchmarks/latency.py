"""Latency benchmark: warm answers in a running process, and a fresh `styringsbot ask` process.

Usage: python benchmarks/latency.py [--questions FILE.jsonl] [--fresh-runs N]
Builds the index first if there is none. Prints p50/p95 figures; exits non-zero only on errors.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_QUESTIONS = ROOT / "benchmarks" / "fit" / "calibration.jsonl"


def percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--fresh-runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions (warm)")
    args = parser.parse_args()

    from bot.config import Settings
    from bot.engine import Engine, sync_index

    settings = Settings()
    started = time.perf_counter()
    report = sync_index(settings, progress=False)
    ingest_s = time.perf_counter() - started
    print(f"ingest of current knowledge/: {ingest_s:.2f} s, re-embedded {report.embedded} chunks")

    questions = [json.loads(line)["question"] for line in args.questions.open() if line.strip()]
    started = time.perf_counter()
    engine = Engine.open(settings)
    open_s = time.perf_counter() - started
    engine.ask("oppvarming")
    warm: list[float] = []
    for _ in range(args.rounds):
        for question in questions:
            t0 = time.perf_counter()
            engine.ask(question)
            warm.append((time.perf_counter() - t0) * 1000)
    print(f"engine open (index + model): {open_s * 1000:.0f} ms")
    print(
        f"warm answer latency over {len(warm)} questions: p50 {percentile(warm, 50):.1f} ms, "
        f"p95 {percentile(warm, 95):.1f} ms, max {max(warm):.1f} ms"
    )

    cli = shutil.which("styringsbot") or str(Path(sys.executable).with_name("styringsbot"))
    fresh: list[float] = []
    for i in range(args.fresh_runs):
        t0 = time.perf_counter()
        done = subprocess.run(
            [cli, "ask", questions[i % len(questions)]], capture_output=True, text=True, cwd=ROOT
        )
        fresh.append(time.perf_counter() - t0)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
    print(
        f"fresh `styringsbot ask` process with the index in place ({len(fresh)} runs): "
        f"p50 {percentile(fresh, 50):.2f} s, max {max(fresh):.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
