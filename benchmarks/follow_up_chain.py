"""A long chain of long follow-ups in one conversation, and what it does to everyone else.

One client asks 40 follow-ups of 1000 characters in one conversation ("og …", each leaning on
the turn before), while another client asks ordinary questions in its own conversation. Prints
the chain's first and 40th answer times, and the other client's latency idle and meanwhile.
Goals: the 40th answer within 2× the first; the other client within 2× its idle latency.

Usage: python benchmarks/follow_up_chain.py [--turns 40]
Builds the index first if there is none; the answer cache is off (every answer is computed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "benchmarks" / "fit" / "calibration.jsonl"
FILLER = (
    "og hvordan henger dette sammen med tildelingsbrevet, etatsstyringsmøtet, fagmøtet, "
    "virksomhetsstyringen og den tillitsbaserte ledelsen i byrådsavdelingen og etaten"
)


def follow_up(n: int) -> str:
    text = f"og hva med punkt {n}, "
    while len(text) < 1000:
        text += FILLER + " "
    return text[:1000]


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    args = parser.parse_args()

    from bot.config import Settings
    from bot.conversation import ConversationService, ReplyKind
    from bot.engine import Engine, sync_index

    settings = Settings()
    sync_index(settings, progress=False)
    engine = Engine.open(settings)
    service = ConversationService(engine, cache_seconds=0, workers=2)
    questions = [json.loads(x)["question"] for x in QUESTIONS.open() if x.strip()][:60]

    def ask(chat: str, text: str) -> float:
        started = time.perf_counter()
        reply = service.handle(chat, chat, text)
        assert reply.kind is ReplyKind.ANSWER, reply
        return (time.perf_counter() - started) * 1000

    for question in questions[:5]:
        ask("warm-up", question)
    idle = [ask(f"idle-{i}", q) for i, q in enumerate(questions)]

    chain: list[float] = []
    done = threading.Event()

    def attacker() -> None:
        ask("chain", "Hvem leder etatsstyringsmøtet?")
        for n in range(args.turns):
            chain.append(ask("chain", follow_up(n)))
        done.set()

    meanwhile: list[float] = []
    thread = threading.Thread(target=attacker)
    thread.start()
    i = 0
    while not done.is_set():
        meanwhile.append(ask(f"other-{i}", questions[i % len(questions)]))
        i += 1
    thread.join()

    first, last = chain[0], chain[-1]
    print(f"{args.turns} follow-ups of 1000 characters in one conversation:")
    print(f"  first {first:.0f} ms, last {last:.0f} ms: {last / first:.2f}× (goal ≤ 2×)")
    print(f"  median {statistics.median(chain):.0f} ms, max {max(chain):.0f} ms")
    ratio = p(meanwhile, 50) / p(idle, 50)
    print(
        f"another client: idle p50 {p(idle, 50):.1f} ms, p95 {p(idle, 95):.1f} ms; "
        f"meanwhile p50 {p(meanwhile, 50):.1f} ms, p95 {p(meanwhile, 95):.1f} ms "
        f"({len(meanwhile)} answers): p50 {ratio:.2f}× (goal ≤ 2×)"
    )
    service.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
