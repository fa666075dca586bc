"""Retrieval and answer metrics on a question set, as defined in the shared eval README."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bot.engine import Engine
from ingest.clean import fold as normalize

EVAL_K = 10


class EvalFileError(Exception):
    pass


def is_relevant(text: str, expect_any: list[str]) -> bool:
    normalized = normalize(text)
    return any(normalize(phrase) in normalized for phrase in expect_any)


def read_questions(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise EvalFileError(f"Fant ikke {path}; oppgi en JSONL-fil med ett spørsmål per linje.")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            item["question"], item.setdefault("expect_any", []), item.setdefault("abstain", False)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise EvalFileError(
                f"Linje {number} i {path} er ikke et JSON-objekt med «question»; rett linjen."
            ) from exc
        questions.append(item)
    return questions


@dataclass
class Outcome:
    id: str
    question: str
    abstain_expected: bool
    abstained: bool
    first_relevant_rank: int | None
    cited_relevant: bool
    latency_ms: float


@dataclass
class Report:
    answerable: int
    out_of_scope: int
    hit_at_1: float
    hit_at_3: float
    hit_at_5: float
    mrr_at_10: float
    cited_hit: float
    false_abstention: float
    abstention_recall: float
    latency_p50_ms: float
    latency_p95_ms: float

    def table(self) -> str:
        rows = [
            ("answerable questions", f"{self.answerable}"),
            ("out-of-scope questions", f"{self.out_of_scope}"),
            ("hit@1", f"{self.hit_at_1:.3f}"),
            ("hit@3", f"{self.hit_at_3:.3f}"),
            ("hit@5", f"{self.hit_at_5:.3f}"),
            ("MRR@10", f"{self.mrr_at_10:.3f}"),
            ("cited hit", f"{self.cited_hit:.3f}"),
            ("false abstention", f"{self.false_abstention:.3f}"),
            ("abstention recall", f"{self.abstention_recall:.3f}"),
            ("latency p50 (ms)", f"{self.latency_p50_ms:.1f}"),
            ("latency p95 (ms)", f"{self.latency_p95_ms:.1f}"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _share(values: list[bool]) -> float:
    return sum(values) / len(values) if values else 0.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(engine: Engine, questions: list[dict[str, Any]]) -> tuple[Report, list[Outcome]]:
    engine.ask("oppvarming")  # warm: the first call pays for lazy initialisation
    outcomes = []
    for item in questions:
        started = time.perf_counter()
        answer = engine.ask(item["question"], k=EVAL_K)
        latency = (time.perf_counter() - started) * 1000
        expect = item.get("expect_any", [])
        rank = next(
            (i for i, p in enumerate(answer.passages, 1) if is_relevant(p.text, expect)), None
        )
        cited = any(is_relevant(c.text, expect) for c in answer.citations)
        outcomes.append(
            Outcome(
                id=str(item.get("id", len(outcomes) + 1)),
                question=item["question"],
                abstain_expected=bool(item.get("abstain")),
                abstained=answer.abstained,
                first_relevant_rank=rank,
                cited_relevant=cited,
                latency_ms=latency,
            )
        )
    answerable = [o for o in outcomes if not o.abstain_expected]
    out_of_scope = [o for o in outcomes if o.abstain_expected]
    latencies = [o.latency_ms for o in outcomes]

    def hit(k: int) -> float:
        return _share(
            [o.first_relevant_rank is not None and o.first_relevant_rank <= k for o in answerable]
        )

    mrr = [
        1.0 / o.first_relevant_rank
        if o.first_relevant_rank is not None and o.first_relevant_rank <= 10
        else 0.0
        for o in answerable
    ]
    report = Report(
        answerable=len(answerable),
        out_of_scope=len(out_of_scope),
        hit_at_1=hit(1),
        hit_at_3=hit(3),
        hit_at_5=hit(5),
        mrr_at_10=sum(mrr) / len(mrr) if mrr else 0.0,
        cited_hit=_share([o.cited_relevant for o in answerable]),
        false_abstention=_share([o.abstained for o in answerable]),
        abstention_recall=_share([o.abstained for o in out_of_scope]),
        latency_p50_ms=_percentile(latencies, 50),
        latency_p95_ms=_percentile(latencies, 95),
    )
    return report, outcomes


def report_json(report: Report, outcomes: list[Outcome]) -> str:
    return json.dumps(
        {"metrics": asdict(report), "questions": [asdict(o) for o in outcomes]},
        ensure_ascii=False,
        indent=1,
    )
