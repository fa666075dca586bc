"""What each component buys: the eval metrics with components added one by one, and with each one
taken out of the full system.

Usage: python benchmarks/ablation.py [FILE.jsonl ...]
(default: the shared dev set if present, and the measure-only sets in benchmarks/measure)

Builds the index first if there is none. Components switched off here are switched off in memory
only (a plain lexical index is rebuilt from the indexed chunks); the reader and the abstention
rule are the ones fitted for the full system ("answer reader" off: the unfitted reader, which takes
the sentence closest to the question in words and meaning).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import Settings  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.evaluation import read_questions, run  # noqa: E402
from bot.guide import Guide  # noqa: E402
from bot.reader import ReaderModel  # noqa: E402
from bot.retrieval import Ranking, Retriever  # noqa: E402
from ingest.lexical import LexicalIndex  # noqa: E402
from ingest.store import lexical_text  # noqa: E402

DEFAULT_SETS = [
    ROOT.parent / "shared" / "eval" / "dev.jsonl",
    ROOT / "benchmarks" / "measure" / "blind-b.jsonl",
    ROOT / "benchmarks" / "measure" / "blind-c.jsonl",
    ROOT / "benchmarks" / "measure" / "blind-b-followups.jsonl",
]

FULL = {"compounds": True, "bigrams": True, "fusion": "score", "sentences": True, "glossary": True,
        "cards": True, "lexicon": True, "spelling": True, "reader": True}  # fmt: skip
STEPS = list(FULL)
LABELS = {
    "compounds": "compound splitting (lexical)",
    "bigrams": "neighbouring-word pairs (lexical)",
    "fusion": "score fusion instead of RRF",
    "sentences": "best-sentence vectors",
    "glossary": "glossary query expansion",
    "cards": "role-guide cards (pinned passages, guided answers)",
    "lexicon": "English→Norwegian lexicon",
    "spelling": "spelling and nynorsk mended",
    "reader": "answer reader (fitted)",
}


def configure(
    engine: Engine, parts: dict[str, object], lexical: dict, guide: Guide, fitted: ReaderModel
) -> None:
    """Point the engine's retriever at the given component set."""
    key = (bool(parts["compounds"]), bool(parts["bigrams"]))
    if key not in lexical:
        texts = [lexical_text(c) for c in engine.index.chunks]
        lexical[key] = LexicalIndex.build(texts, compounds=key[0], bigrams=key[1])
    engine.index.lexical = lexical[key]
    ranking = replace(
        Ranking(),
        fusion="score" if parts["fusion"] == "score" else "rrf",
        # The spine's RRF weighed both sides equally.
        lexical_weight=Ranking().lexical_weight if parts["fusion"] == "score" else 1.0,
        lexical_weight_english=Ranking().lexical_weight_english
        if parts["fusion"] == "score"
        else 1.0,
        sentence_weight=Ranking().sentence_weight if parts["sentences"] else 0.0,
        expand=bool(parts["glossary"]),
        pin=bool(parts["cards"]),
        translate=bool(parts["lexicon"]),
        spelling=bool(parts["spelling"]),
    )
    uses_guide = parts["glossary"] or parts["cards"]
    engine.retriever = Retriever(
        engine.index, engine.embedder, ranking, guide if uses_guide else Guide()
    )
    model = fitted if parts["reader"] else ReaderModel.neutral(engine.embedder.id)
    engine.reader = engine.retriever.reader(model)


def measure(engine: Engine, sets: dict[str, list[dict]]) -> list[str]:
    cells = []
    for questions in sets.values():
        report, _ = run(engine, questions)
        cells.append(
            f"{report.hit_at_1:.3f} / {report.hit_at_5:.3f} / {report.cited_hit:.3f} / "
            f"{report.lead_hit:.3f} / {report.false_abstention:.2f}"
            + (f" / {report.abstention_recall:.2f}" if report.out_of_scope else "")
        )
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args()
    files = args.files or [p for p in DEFAULT_SETS if p.exists()]
    sets = {p.stem: read_questions(p) for p in files}

    engine = Engine.open(Settings(), build_if_missing=True, progress=False)
    guide = engine.retriever.guide
    fitted = engine.reader.model
    lexical: dict = {}
    print("cells: hit@1 / hit@5 / cited hit / lead hit / false abstention / abstention recall")
    header = "| configuration | " + " | ".join(sets) + " |"
    print(header)
    print("|---" * (len(sets) + 1) + "|")

    parts: dict[str, object] = {name: False for name in STEPS}
    parts["fusion"] = "rrf"
    configure(engine, parts, lexical, guide, fitted)
    print(f"| spine (issue 2: BM25 + dense, RRF) | {' | '.join(measure(engine, sets))} |")
    for name in STEPS:
        parts[name] = FULL[name]
        configure(engine, parts, lexical, guide, fitted)
        print(f"| + {LABELS[name]} | {' | '.join(measure(engine, sets))} |", flush=True)
    for name in STEPS:
        without = dict(FULL)
        without[name] = "rrf" if name == "fusion" else False
        configure(engine, without, lexical, guide, fitted)
        print(f"| all but {LABELS[name]} | {' | '.join(measure(engine, sets))} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
