"""Warm answer latency on a shared machine, in one run: one answering process alone; two answering
processes side by side (e.g. `serve` and `telegram`); one beside a CPU hog on every core.

    python benchmarks/shared_machine.py [--rounds 3]

Each case is run with the thread policy Styringsbot sets (`ingest/threads.py`: idle OpenMP threads
spin a few microseconds, then sleep), and once more with spinning threads (OMP_WAIT_POLICY=ACTIVE)
to show what the policy is for. The benchmark starts and
stops every process itself. Figures are comparable within one run (a shared machine's speed
varies); the goal is two processes at p95 ≤ 3 × the single idle p95.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "fit" / "calibration.jsonl"


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def worker(rounds: int, start_at: float) -> None:
    """One answering process: open the engine, wait for the common start, answer, print JSON."""
    from bot.config import Settings
    from bot.engine import Engine

    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines()]
    engine = Engine.open(Settings(), build_if_missing=True, progress=False)
    for question in questions[:5]:
        engine.ask(question)
    time.sleep(max(0.0, start_at - time.time()))
    latencies = []
    for _ in range(rounds):
        for question in questions:
            started = time.perf_counter()
            engine.ask(question)
            latencies.append((time.perf_counter() - started) * 1000)
    print(json.dumps(latencies))


def hog() -> None:
    while True:
        pass


def _python(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], env=env, stdout=subprocess.PIPE, text=True
    )


def run_case(answering: int, hogs: int, policy: str, rounds: int) -> list[list[float]]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy == "ACTIVE":
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    hogs_running = [_python("--hog", env=env) for _ in range(hogs)]
    try:
        start_at = time.time() + 8  # every worker has opened its engine by then
        workers = [
            _python("--worker", str(rounds), str(start_at), env=env) for _ in range(answering)
        ]
        results = []
        for process in workers:
            out, _ = process.communicate(timeout=900)
            if process.returncode != 0:
                raise SystemExit(f"A worker failed (exit {process.returncode}).")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for process in hogs_running:
            process.kill()
            process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--hog", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hog:
        hog()
    if args.worker:
        worker(int(args.worker[0]), float(args.worker[1]))
        return 0

    cores = os.cpu_count() or 1
    print(f"{cores} cores; {args.rounds} passes over {QUESTIONS.name} per answering process")
    print(f"{'case':<44} {'p50 ms':>8} {'p95 ms':>8} {'× idle p95':>11}")
    idle_p95 = None
    for policy in ("default", "ACTIVE"):
        label = "thread policy" if policy == "default" else "spinning threads"
        for name, answering, hogs in (
            ("one process, idle machine", 1, 0),
            ("two processes side by side", 2, 0),
            (f"one process beside {cores} CPU hogs", 1, cores),
        ):
            runs = run_case(answering, hogs, policy, args.rounds)
            latencies = [t for run in runs for t in run]
            p50, p95 = statistics.median(latencies), _pct(latencies, 95)
            if idle_p95 is None:
                idle_p95 = p95
            print(
                f"{label + ': ' + name:<44} {p50:>8.1f} {p95:>8.1f} {p95 / idle_p95:>10.1f}×",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
