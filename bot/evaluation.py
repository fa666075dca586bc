"""Retrieval and answer metrics on a question set, as defined in the shared eval README.

A file holds single questions (`question`) and follow-up pairs (`first`, `follow_up`); a pair is
asked as a conversation would ask it, through the conversation service, and scored on the
follow-up. Answers are scored on their passages (hit@k, MRR), their citations (cited hit) and their
lead (lead hit: the first statement or quote the answer gives holds an expected phrase). Lines with
a `statement` and a `passage` are labelled pairs for the verifier of generated answers
(`bot.verifier`), scored apart.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.answer import Answer
from bot.engine import Engine
from bot.verifier import Pair, VerifierError, is_pair
from ingest.clean import fold as normalize

EVAL_K = 10


class EvalFileError(Exception):
    pass


def is_relevant(text: str, expect_any: list[str]) -> bool:
    normalized = normalize(text.replace(" / ", " "))
    return any(normalize(phrase) in normalized for phrase in expect_any if phrase.strip())


def read_questions(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise EvalFileError(f"Fant ikke {path}; oppgi en JSONL-fil med ett spørsmål per linje.")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if is_pair(item):  # a statement–passage pair for the verifier
                Pair.from_item(item)
                questions.append(item)
                continue
            if "follow_up" in item:
                item["first"], item["question"] = item["first"], item["follow_up"]
            item["question"], item.setdefault("expect_any", []), item.setdefault("abstain", False)
        except (json.JSONDecodeError, KeyError, TypeError, VerifierError) as exc:
            raise EvalFileError(
                f"Linje {number} i {path} er ikke et JSON-objekt med «question» (eller «first» "
                "og «follow_up», eller «statement» og «passage»); rett linjen."
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
    lead_relevant: bool
    latency_ms: float
    language: str = "nb"
    near_domain: bool = False
    follow_up: bool = False
    lead: str = ""
    confident: bool = False  # answered without a caveat


@dataclass
class Scores:
    """The metrics of one group of outcomes."""

    answerable: int = 0
    out_of_scope: int = 0
    hit_at_1: float = 0.0
    hit_at_3: float = 0.0
    hit_at_5: float = 0.0
    mrr_at_10: float = 0.0
    cited_hit: float = 0.0
    lead_hit: float = 0.0
    false_abstention: float = 0.0
    abstention_recall: float = 0.0
    confident_out_of_scope: float = 0.0  # out-of-scope questions answered without a caveat

    @classmethod
    def of(cls, outcomes: list[Outcome]) -> Scores:
        answerable = [o for o in outcomes if not o.abstain_expected]
        out_of_scope = [o for o in outcomes if o.abstain_expected]

        def hit(k: int) -> float:
            return _share(
                [
                    o.first_relevant_rank is not None and o.first_relevant_rank <= k
                    for o in answerable
                ]
            )

        mrr = [
            1.0 / o.first_relevant_rank
            if o.first_relevant_rank is not None and o.first_relevant_rank <= 10
            else 0.0
            for o in answerable
        ]
        return cls(
            answerable=len(answerable),
            out_of_scope=len(out_of_scope),
            hit_at_1=hit(1),
            hit_at_3=hit(3),
            hit_at_5=hit(5),
            mrr_at_10=sum(mrr) / len(mrr) if mrr else 0.0,
            cited_hit=_share([o.cited_relevant for o in answerable]),
            lead_hit=_share([o.lead_relevant for o in answerable]),
            false_abstention=_share([o.abstained for o in answerable]),
            abstention_recall=_share([o.abstained for o in out_of_scope]),
            confident_out_of_scope=_share([o.confident for o in out_of_scope]),
        )


@dataclass
class Report:
    answerable: int
    out_of_scope: int
    hit_at_1: float
    hit_at_3: float
    hit_at_5: float
    mrr_at_10: float
    cited_hit: float
    lead_hit: float
    false_abstention: float
    abstention_recall: float
    confident_out_of_scope: float
    latency_p50_ms: float
    latency_p95_ms: float
    groups: dict[str, Scores] = field(default_factory=dict)  # by language, pairs, near-domain

    def table(self) -> str:
        rows = [
            ("answerable questions", f"{self.answerable}"),
            ("out-of-scope questions", f"{self.out_of_scope}"),
            ("hit@1", f"{self.hit_at_1:.3f}"),
            ("hit@3", f"{self.hit_at_3:.3f}"),
            ("hit@5", f"{self.hit_at_5:.3f}"),
            ("MRR@10", f"{self.mrr_at_10:.3f}"),
            ("cited hit", f"{self.cited_hit:.3f}"),
            ("lead hit", f"{self.lead_hit:.3f}"),
            ("false abstention", f"{self.false_abstention:.3f}"),
            ("abstention recall", f"{self.abstention_recall:.3f}"),
            ("out of scope, answered confidently", f"{self.confident_out_of_scope:.3f}"),
            ("latency p50 (ms)", f"{self.latency_p50_ms:.1f}"),
            ("latency p95 (ms)", f"{self.latency_p95_ms:.1f}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        if self.groups:
            lines += ["", _group_table(self.groups)]
        return "\n".join(lines)


def _group_table(groups: dict[str, Scores]) -> str:
    header = (
        f"{'group':<22} {'n':>4} {'hit@5':>6} {'cited':>6} {'lead':>6} {'f.abst':>6} "
        f"{'n oos':>5} {'recall':>6}"
    )
    lines = [header]
    for name, s in groups.items():
        answer = (
            f"{s.answerable:>4} {s.hit_at_5:>6.3f} {s.cited_hit:>6.3f} {s.lead_hit:>6.3f} "
            f"{s.false_abstention:>6.3f}"
            if s.answerable
            else f"{0:>4} {'-':>6} {'-':>6} {'-':>6} {'-':>6}"
        )
        oos = (
            f"{s.out_of_scope:>5} {s.abstention_recall:>6.3f}"
            if s.out_of_scope
            else f"{0:>5} {'-':>6}"
        )
        lines.append(f"{name:<22} {answer} {oos}")
    return "\n".join(lines)


def _share(values: list[bool]) -> float:
    return sum(values) / len(values) if values else 0.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _ask(engine: Engine, item: dict[str, Any]) -> Answer:
    """A single question, or a pair asked as a conversation: the follow-up is understood (or
    not) by the conversation service exactly as in a chat."""
    first = item.get("first")
    if not first:
        return engine.ask(item["question"], k=EVAL_K)
    from bot.conversation import ConversationService

    service = ConversationService(engine, question_log="off", top_k=EVAL_K)
    service.ask("eval", first)
    return service.ask("eval", item["question"]).answer


def run(engine: Engine, questions: list[dict[str, Any]]) -> tuple[Report, list[Outcome]]:
    engine.ask("oppvarming")  # warm: the first call pays for lazy initialisation
    outcomes = []
    for item in questions:
        started = time.perf_counter()
        answer = _ask(engine, item)
        latency = (time.perf_counter() - started) * 1000
        expect = item.get("expect_any", [])
        rank = next(
            (i for i, p in enumerate(answer.passages, 1) if is_relevant(p.text, expect)), None
        )
        outcomes.append(
            Outcome(
                id=str(item.get("id", len(outcomes) + 1)),
                question=item["question"],
                abstain_expected=bool(item.get("abstain")),
                abstained=answer.abstained,
                first_relevant_rank=rank,
                cited_relevant=any(is_relevant(c.text, expect) for c in answer.citations),
                lead_relevant=bool(answer.lead) and is_relevant(answer.lead, expect),
                latency_ms=latency,
                language=str(item.get("lang") or answer.language),
                near_domain=bool(item.get("abstain") and item.get("near_domain", False)),
                follow_up=bool(item.get("first")),
                lead=answer.lead,
                confident=not answer.abstained and answer.confident,
            )
        )
    overall = Scores.of(outcomes)
    latencies = [o.latency_ms for o in outcomes if not o.follow_up]
    report = Report(
        **asdict(overall),
        latency_p50_ms=_percentile(latencies, 50),
        latency_p95_ms=_percentile(latencies, 95),
        groups=_groups(outcomes),
    )
    return report, outcomes


def _groups(outcomes: list[Outcome]) -> dict[str, Scores]:
    """Per language, follow-up pairs, and the near-domain out-of-scope questions; shown when
    the file has more than one kind."""
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if o.follow_up:
            groups.setdefault("follow-up pairs", []).append(o)
            continue
        groups.setdefault(f"language {o.language}", []).append(o)
        if o.abstain_expected:
            key = "near-domain oos" if o.near_domain else "other oos"
            groups.setdefault(key, []).append(o)
    if len(groups) <= 1:
        return {}
    return {name: Scores.of(items) for name, items in sorted(groups.items())}


def report_json(
    report: Report, outcomes: list[Outcome], verifier: dict[str, Any] | None = None
) -> str:
    data: dict[str, Any] = {"metrics": asdict(report), "questions": [asdict(o) for o in outcomes]}
    if verifier is not None:
        data["verifier"] = verifier
    return json.dumps(
        data,
        ensure_ascii=False,
        indent=1,
    )
