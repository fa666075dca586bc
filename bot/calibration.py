"""Fitting the answer reader and the abstention rule on labelled questions (`styringsbot
calibrate`).

The reader learns from labelled *sentences*: every sentence the reader considers for an answerable
question is positive when it holds one of the question's expected phrases (or the phrase runs
through it), negative otherwise. The abstention rule is fitted afterwards on what the fitted reader
and retrieval report for every question, answerable and out of scope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot import logistic
from bot.abstention import FEATURES as ABSTENTION_FEATURES
from bot.abstention import AbstentionModel, QuestionMemory
from bot.abstention import fit as fit_abstention
from bot.answer import guide_settles, signals_for
from bot.engine import Engine
from bot.query import FollowUpContext
from bot.reader import FEATURES, ReaderModel, Reading
from bot.retrieval import SearchResult
from ingest.clean import fold as normalize

EVAL_K = 10


class CalibrationError(ValueError):
    """The labelled questions cannot fit a rule (one kind of example only)."""


@dataclass
class Example:
    """One labelled question: asked alone, or as the follow-up of `first`."""

    id: str
    question: str
    expect_any: list[str]
    abstain: bool
    first: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Example:
        if "follow_up" in item:
            return cls(
                str(item.get("id", "")),
                item["follow_up"],
                item.get("expect_any", []),
                bool(item.get("abstain", False)),
                first=item["first"],
            )
        return cls(
            str(item.get("id", "")),
            item["question"],
            item.get("expect_any", []),
            bool(item.get("abstain", False)),
        )


@dataclass
class Observed:
    """What the engine makes of one example: its search result and the reader's view."""

    example: Example
    result: SearchResult
    reading: Reading
    context: FollowUpContext | None = None
    labels: list[bool] = field(default_factory=list)  # per candidate, in reading order


def context_for(engine: Engine, example: Example, k: int = EVAL_K) -> FollowUpContext | None:
    """For a follow-up, the context its first question leaves (as the conversation keeps it)."""
    if example.first is None:
        return None
    return engine.ask(example.first, k=k).follow_up_context()


def observe(engine: Engine, example: Example, k: int = EVAL_K) -> Observed:
    context = context_for(engine, example, k)
    plan = engine.retriever.plan(example.question, context)
    result = engine.retriever.search(plan, k=k)
    reading = engine.reader.read(result)
    labels = [holds(c.lead, example.expect_any) for c in reading.candidates]
    return Observed(example, result, reading, context, labels)


def holds(lead: str, expect_any: list[str]) -> bool:
    """Whether a lead, as quoted, holds one of the expected phrases (the eval's lead hit; line
    breaks the lead marks with " / " count as white space)."""
    text = normalize(lead.replace(" / ", " "))
    return any(normalize(phrase) in text for phrase in expect_any if phrase.strip())


def fit_reader(
    observed: list[Observed], embedder: str, fitted_on: str, c: float = 1.0
) -> ReaderModel:
    """Logistic regression over the candidates of the answerable examples."""
    rows, labels = [], []
    for item in observed:
        if item.example.abstain or not item.example.expect_any:
            continue
        for candidate, label in zip(item.reading.candidates, item.labels, strict=True):
            rows.append([candidate.features[f] for f in FEATURES])
            labels.append(label)
    if not any(labels) or all(labels):
        raise CalibrationError("the reader needs sentences that answer and sentences that do not")
    # Few sentences answer. Weighting them up to half the loss (as the abstention rule does)
    # picked the right sentence less often, cross-validated (90 against 93 of 161 fitting
    # questions), so the weights are fitted unweighted; the intercept then takes the balanced
    # prior, so that scores keep the scale the lead and citation rules compare.
    fitted = logistic.fit(rows, labels, c, balanced=False)
    positives = sum(labels)
    prior = math.log((len(labels) - positives) / positives)
    fitted["intercept"] = round(fitted["intercept"] + prior, 6)
    return ReaderModel(embedder=embedder, **fitted, fitted_on=fitted_on)


def abstention_signals(
    engine: Engine, observed: list[Observed], like: list[float] | None = None
) -> list[dict[str, float]]:
    """The abstention signals of every example, read again with the engine's current reader
    (`like`: each example's question-memory signal, held out; 0 when not given)."""
    from bot.answer import _fields_read, _guide_answers

    signals = []
    for i, item in enumerate(observed):
        reading = engine.reader.read(item.result)
        guided = bool(_fields_read(item.result, reading)) or (
            item.result.pinned > 0 and _guide_answers(item.result)
        )
        signals.append(signals_for(item.result, reading, guided, like[i] if like else 0.0))
    return signals


# The abstention signals that name why the documents do not answer a question: the question
# memory leaves out the unanswered questions one of them holds for.
EXPLAINED_BY = ("unknown_name", "year_missing")


def question_memory(engine: Engine, observed: list[Observed]) -> QuestionMemory:
    """The labelled questions as the engine's embedder saw them, which the documents answer, and
    which of the others a signal of their own explains."""
    vectors = [item.result.query_vector for item in observed]
    width = next((len(v) for v in vectors if v is not None), 1)
    # A question the index returned nothing for has no vector: it stands nowhere near the others.
    rows = np.array(
        [v if v is not None else np.zeros(width) for v in vectors], dtype=np.float32
    ).reshape(len(vectors), width)
    explained = [
        item.example.abstain
        and any(signals_for(item.result, item.reading, False)[name] for name in EXPLAINED_BY)
        for item in observed
    ]
    return QuestionMemory(
        engine.embedder.id,
        rows,
        np.array([not item.example.abstain for item in observed], dtype=bool),
        tuple(item.example.question for item in observed),
        np.array(explained, dtype=bool),
    )


def held_out_like(memory: QuestionMemory, members: list[int], folds: int) -> list[float]:
    """Each member's question-memory signal against the other members outside its fold (a
    question is never compared with itself or the questions fitted beside it)."""
    group = np.array(members, dtype=int)
    fold_of = np.arange(len(group)) % folds
    return [
        memory.like_answered(memory.vectors[i], among=group[fold_of != fold_of[j]])
        for j, i in enumerate(members)
    ]


@dataclass
class Calibration:
    reader: ReaderModel
    abstention: AbstentionModel
    memory: QuestionMemory
    observed: list[Observed]
    misread: list[str]  # answerable examples whose best sentence holds no expected phrase
    wrong_abstention: list[str]  # examples the fitted rule decides wrongly
    cross_validated: dict[str, float] = field(default_factory=dict)


FALSE_ABSTENTION = 0.05  # the share of answerable questions the rule may turn away, held out
FOLDS = 5
# The reader's regularization (logistic C) is chosen among these by cross-validated lead hit;
# on a tie the weaker regularization (the larger C) wins.
READER_CS = (1.0, 0.3, 0.1, 0.03)
# The abstention rule's C is then chosen among these by cross-validated abstention recall at the
# false-abstention limit; on a tie the larger C wins.
ABSTENTION_CS = (1.0, 0.3, 0.1, 0.03)


def calibrate(
    engine: Engine,
    items: list[dict[str, Any]],
    fitted_on: str,
    reader_c: float | None = None,
    abstention_c: float | None = None,
    false_abstention: float = FALSE_ABSTENTION,
    folds: int = FOLDS,
) -> Calibration:
    """Fit the reader, then the abstention rule on the fitted reader's signals; the engine keeps
    both (so what follows measures the new fit). The reader's C, unless given, is the one of
    READER_CS with the best cross-validated lead hit. The threshold is the highest at which the
    rule, cross-validated over the examples, turns away at most `false_abstention` of the
    answerable ones; the rule's C, unless given, is the one of ABSTENTION_CS that then turns
    away the most of the others."""
    examples = [Example.from_item(item) for item in items]
    observed = [observe(engine, example) for example in examples]
    answerable = [not item.example.abstain for item in observed]
    if len(set(answerable)) < 2:
        raise CalibrationError("abstention needs answerable and out-of-scope questions")
    memory = question_memory(engine, observed)
    # Questions the role guide answers itself are never turned away: the threshold is chosen
    # on the others.
    settled = [guide_settles(item.result) for item in observed]
    abstention_cs = (abstention_c,) if abstention_c is not None else ABSTENTION_CS
    best: tuple[int, float, list[float]] | None = None
    for c in (reader_c,) if reader_c is not None else READER_CS:
        probabilities, hits = _cross_validate(
            engine, observed, memory, fitted_on, c, abstention_cs[0], folds
        )
        probabilities = _decided(probabilities, settled)
        if best is None or hits > best[0]:
            best = (hits, c, probabilities)
    assert best is not None
    lead_hits, reader_c, held_out = best
    threshold = _threshold(held_out, answerable, false_abstention)
    recall = _recall(held_out, answerable, threshold)
    abstention_c = abstention_cs[0]
    for c in abstention_cs[1:]:
        probabilities, _ = _cross_validate(engine, observed, memory, fitted_on, reader_c, c, folds)
        probabilities = _decided(probabilities, settled)
        at = _threshold(probabilities, answerable, false_abstention)
        if _recall(probabilities, answerable, at) > recall:
            held_out, threshold, abstention_c = probabilities, at, c
            recall = _recall(probabilities, answerable, at)

    reader = fit_reader(observed, engine.embedder.id, fitted_on, reader_c)
    engine.reader.model = reader
    like = held_out_like(memory, list(range(len(observed))), folds)
    signals = abstention_signals(engine, observed, like)
    abstention = fit_abstention(
        signals, answerable, engine.embedder.id, fitted_on, c=abstention_c, threshold=threshold
    )
    engine.answerer.abstention = abstention
    engine.answerer.memory = memory
    misread = []
    for item in observed:
        if item.example.abstain:
            continue
        best = engine.reader.read(item.result).best
        if best is None or not holds(best.lead, item.example.expect_any):
            misread.append(item.example.id)
    wrong = [
        item.example.id
        for item, s, y, guide in zip(observed, signals, answerable, settled, strict=True)
        if (abstention.abstains(s) and not guide) == y
    ]
    n_answerable = sum(answerable)
    n_out = len(answerable) - n_answerable
    cross = {
        "threshold": threshold,
        "reader_c": reader_c,
        "abstention_c": abstention_c,
        "lead_hit": lead_hits / n_answerable if n_answerable else 0.0,
        "false_abstention": sum(
            p < threshold for p, y in zip(held_out, answerable, strict=True) if y
        )
        / n_answerable,
        "abstention_recall": sum(
            p < threshold for p, y in zip(held_out, answerable, strict=True) if not y
        )
        / n_out,
    }
    return Calibration(reader, abstention, memory, observed, misread, wrong, cross)


def _cross_validate(
    engine: Engine,
    observed: list[Observed],
    memory: QuestionMemory,
    fitted_on: str,
    reader_c: float,
    abstention_c: float,
    folds: int,
) -> tuple[list[float], int]:
    """Held-out answer probabilities of every example, and how many answerable examples the
    held-out reader leads with an expected phrase."""
    probabilities = [0.0] * len(observed)
    lead_hits = 0
    for fold in range(folds):
        members = [i for i in range(len(observed)) if i % folds != fold]
        train = [observed[i] for i in members]
        answerable = [not o.example.abstain for o in train]
        if len(set(answerable)) < 2:
            continue
        engine.reader.model = fit_reader(train, engine.embedder.id, fitted_on, reader_c)
        train_like = held_out_like(memory, members, folds)
        train_signals = abstention_signals(engine, train, train_like)
        rule = fit_abstention(
            train_signals, answerable, engine.embedder.id, fitted_on, c=abstention_c
        )
        test = [(i, o) for i, o in enumerate(observed) if i % folds == fold]
        among = np.array(members, dtype=int)
        test_like = [memory.like_answered(memory.vectors[i], among=among) for i, _ in test]
        for (i, item), signals in zip(
            test, abstention_signals(engine, [o for _, o in test], test_like), strict=True
        ):
            probabilities[i] = rule.probability(signals)
            if not item.example.abstain:
                best = engine.reader.read(item.result).best
                lead_hits += bool(best and holds(best.lead, item.example.expect_any))
    return probabilities, lead_hits


def _decided(probabilities: list[float], settled: list[bool]) -> list[float]:
    """Held-out answer probabilities as the answer step uses them: 1 where the guide settles it."""
    return [1.0 if guide else p for p, guide in zip(probabilities, settled, strict=True)]


def _recall(probabilities: list[float], answerable: list[bool], threshold: float) -> float:
    """The share of the out-of-scope examples a threshold turns away."""
    out = [p for p, y in zip(probabilities, answerable, strict=True) if not y]
    return sum(p < threshold for p in out) / len(out) if out else 0.0


def _threshold(probabilities: list[float], answerable: list[bool], limit: float) -> float:
    """The highest threshold (0.05 to 0.50, in steps of 0.01) turning away at most `limit` of
    the answerable examples."""
    scores = [p for p, y in zip(probabilities, answerable, strict=True) if y]
    for step in range(50, 4, -1):
        threshold = step / 100
        if sum(p < threshold for p in scores) <= limit * len(scores):
            return threshold
    return 0.05


__all__ = ["ABSTENTION_FEATURES", "Calibration", "Example", "calibrate", "holds"]
