"""When to say "the documents do not answer this": a logistic rule over what retrieval and the
reader found.

The signals ask two things: is the *topic* in the documents (the best cosine, the share of the
question's words the first passages hold, words the index has never seen), and is the *answer*
there (the reader's best sentence, whether any candidate holds the asked-for answer type, a year
the question names that no passage covers, a question about "today"). The weights are fitted
(`styringsbot calibrate`) on labelled questions, near-domain ones among them, and measured on sets
they never saw. A fit for the current index in the data dir takes precedence over the shipped
default, which was fitted on the seed corpus with the default embedder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot import logistic

FEATURES = (
    "dense_top",  # best cosine similarity of the question with a passage
    "coverage_top3",  # best IDF-weighted share of the question's words among the first three
    "unknown_share",  # IDF-weighted share of the question's words the index has never seen
    "english",  # English question (its words are not the documents' words)
    "reader_top",  # the reader's estimate that its best sentence answers (logit)
    "type_support",  # a sentence about the question holds the asked-for answer type
    "type_unsupported",  # it asks for a name, number, date … and no sentence about it has one
    "lead_coverage",  # share of the question's words the best sentence and its heading hold
    "year_missing",  # the question names a year that no passage read covers
    "present",  # the question asks about "today"/"now"; the documents describe a past year
    "errand",  # the question asks how to do something for oneself ("hvordan søker jeg …")
    "guided",  # the role guide answers it (a defined term, a card field, a classification)
)
DEFAULT_PATH = Path(__file__).with_name("fitted") / "abstention.json"
FITTED_NAME = "abstention.json"


@dataclass(frozen=True)
class AbstentionModel(logistic.Rule):
    """`probability`: the estimated probability that the documents answer the question."""

    features: tuple[str, ...] = FEATURES

    def abstains(self, signals: dict[str, float]) -> bool:
        return self.probability(signals) < self.threshold

    @classmethod
    def load(cls, path: Path) -> AbstentionModel:
        # Rules fitted before the reader existed name no features: the four retrieval signals.
        return cls(**cls.read(path, FEATURES[:4]))

    @classmethod
    def for_index(cls, data_dir: Path, embedder_id: str) -> AbstentionModel:
        return cls.pick(data_dir / FITTED_NAME, DEFAULT_PATH, embedder_id, ("dense_top",))


def fit(
    signals: list[dict[str, float]],
    answerable: list[bool],
    embedder: str,
    fitted_on: str,
    c: float = 1.0,
    threshold: float = 0.5,
) -> AbstentionModel:
    """Class-balanced, L2-regularized logistic regression on standardized signals."""
    if len(set(answerable)) < 2:
        raise ValueError("calibration needs both answerable and out-of-scope questions")
    rows = [[s.get(name, 0.0) for name in FEATURES] for s in signals]
    return AbstentionModel(
        embedder=embedder,
        **logistic.fit(rows, answerable, c),
        threshold=threshold,
        fitted_on=fitted_on,
    )
