"""`styringsbot explain`: each stage's view of one question, for maintainers doing error analysis.

The stages are the ones the code has: the query plan, the ranked passages with their dense,
sentence, lexical and guide evidence, the reader's best sentences with their features, and the
abstention signals with the decision (and the labelled questions nearest to it, which the
question-memory signal compares it with).
"""

from __future__ import annotations

from typing import Any

from bot.abstention import FEATURES as ABSTENTION_FEATURES
from bot.abstention import QuestionMemory
from bot.answer import guide_settles
from bot.engine import Trace
from bot.reader import FEATURES as READER_FEATURES

SHOWN_SENTENCES = 8


def explanation(
    trace: Trace,
    threshold: float,
    sentences: int = SHOWN_SENTENCES,
    memory: QuestionMemory | None = None,
) -> dict[str, Any]:
    """The trace as plain data (`explain --json`); `threshold` is the abstention rule's,
    `memory` the labelled questions it is compared with."""
    plan, result, reading, answer = trace.plan, trace.result, trace.reading, trace.answer
    return {
        "question": plan.question,
        "plan": {
            "language": plan.language,
            "answer_type": plan.answer_type.value,
            "text": plan.text,
            "corrections": plan.corrections,
            "present": plan.present,
            "years": list(plan.years),
            "errand": plan.errand,
            "follow_up": (
                {
                    "question": plan.context.question,
                    "topic": plan.context.topic,
                    "cited": list(plan.context.cited),
                }
                if plan.context
                else None
            ),
            "searched_with": result.expansion,
            "guide": {
                "cards": [card.name for card in result.guide.cards],
                "terms": [term.term for term in result.guide.terms],
                "fields": result.guide.fields,
                "definition": result.guide.definition.term if result.guide.definition else None,
                "classify": result.guide.classify,
            },
        },
        "passages": [
            {
                "rank": rank,
                "title": p.title,
                "location": p.location,
                "fused": round(p.score, 4),
                "dense": round(p.dense, 4),
                "sentence": round(p.sentence, 4),
                "bm25": round(p.lexical, 4),
                "coverage": round(p.coverage, 4),
                "pinned": p.pinned,
            }
            for rank, p in enumerate(result.passages, 1)
        ],
        "reader": [
            {
                "score": round(c.score, 4),
                "passage": c.passage + 1,
                "sentence": c.text,
                "lead": c.lead,
                "features": {name: round(c.features[name], 4) for name in READER_FEATURES},
            }
            for c in reading.candidates[:sentences]
        ],
        "abstention": {
            "signals": {
                name: round(answer.signals.get(name, 0.0), 4) for name in ABSTENTION_FEATURES
            },
            "probability": round(answer.confidence, 4),
            "threshold": threshold,
            "abstained": answer.abstained,
            "settled_by_guide": guide_settles(result),
            "nearest_labelled": [
                {"question": question, "answered": answered, "cosine": cosine}
                for question, answered, cosine in (
                    memory.nearest(result.query_vector) if memory else []
                )
            ],
        },
        "answer": {"lead": answer.lead, "citations": [c.n for c in answer.citations]},
    }


def render(data: dict[str, Any]) -> str:
    """The explanation as text for a terminal."""
    plan = data["plan"]
    lines = [f"Question: {data['question']}", "", "1. Query plan"]
    lines.append(
        f"   language {plan['language']} · answer type {plan['answer_type']}"
        + (" · asks about today" if plan["present"] else "")
        + (f" · years {plan['years']}" if plan["years"] else "")
        + (" · a personal errand" if plan["errand"] else "")
    )
    if plan["text"] != data["question"]:
        lines.append(f"   read as: {plan['text']}")
    if plan["corrections"]:
        mended = ", ".join(f"{a} → {b}" for a, b in plan["corrections"].items())
        lines.append(f"   spelling: {mended}")
    if plan["follow_up"]:
        follow = plan["follow_up"]
        lines.append(f"   follow-up of «{follow['question']}», topic «{follow['topic']}»")
    guide = plan["guide"]
    if guide["cards"] or guide["terms"]:
        lines.append(
            f"   role guide: cards {guide['cards']} fields {guide['fields']} terms {guide['terms']}"
            + (f" · defines {guide['definition']}" if guide["definition"] else "")
            + (" · classification" if guide["classify"] else "")
        )
    if plan["searched_with"]:
        lines.append(f"   searched with: {plan['searched_with']}")

    lines += ["", "2. Passages (fused = dense z + best-sentence z + weighted BM25; pin = guide)"]
    lines.append(f"   {'#':>2} {'fused':>6} {'dense':>6} {'sent':>6} {'bm25':>7} {'cover':>6}")
    for p in data["passages"]:
        where = f"{p['title'][:48]}" + (f", {p['location']}" if p["location"] else "")
        pin = " pin" if p["pinned"] else ""
        lines.append(
            f"   {p['rank']:>2} {p['fused']:>6.2f} {p['dense']:>6.3f} {p['sentence']:>6.3f} "
            f"{p['bm25']:>7.2f} {p['coverage']:>6.2f}{pin}  {where}"
        )

    lines += ["", "3. Reader (best sentences; score = estimated chance it answers)"]
    for i, c in enumerate(data["reader"], 1):
        lines.append(f"   {i}. {c['score']:.3f}  passage {c['passage']}: «{_clip(c['lead'], 110)}»")
        shown = {k: v for k, v in c["features"].items() if v}
        lines.append("      " + " ".join(f"{k}={v:g}" for k, v in shown.items()))

    abstention = data["abstention"]
    decision = "abstains" if abstention["abstained"] else "answers"
    if not abstention["abstained"] and abstention.get("settled_by_guide"):
        decision += " (the role guide holds the answer: the rule does not turn it away)"
    lines += [
        "",
        f"4. Abstention: probability {abstention['probability']:.3f} "
        f"(threshold {abstention['threshold']:g}) → {decision}",
    ]
    lines.append("   " + " ".join(f"{k}={v:g}" for k, v in abstention["signals"].items()))
    for near in abstention["nearest_labelled"]:
        kind = "answered" if near["answered"] else "not answered"
        lines.append(f"   like ({kind}, {near['cosine']:.3f}): {_clip(near['question'], 90)}")
    lines += ["", "5. Answer"]
    if abstention["abstained"]:
        lines.append("   not in the documents (the nearest passages are shown as related)")
    else:
        lines.append(f"   lead: {_clip(data['answer']['lead'], 200)}")
        lines.append(f"   cites: {data['answer']['citations']}")
    return "\n".join(lines)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
