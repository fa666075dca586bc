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

from dataclasses import dataclass, replace
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
class AbstentionModel(logistic.JsonModel):
    embedder: str
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float = 0.5
    fitted_on: str = ""
    features: tuple[str, ...] = FEATURES

    def probability(self, signals: dict[str, float]) -> float:
        """Estimated probability that the documents answer the question."""
        values = [signals.get(name, 0.0) for name in self.features]
        return logistic.probability(values, self.mean, self.scale, self.coef, self.intercept)

    def abstains(self, signals: dict[str, float]) -> bool:
        return self.probability(signals) < self.threshold

    @classmethod
    def load(cls, path: Path) -> AbstentionModel:
        # Rules fitted before the reader existed name no features: the four retrieval signals.
        return cls(**cls.read(path, FEATURES[:4]))

    @classmethod
    def for_index(cls, data_dir: Path, embedder_id: str) -> AbstentionModel:
        fitted = data_dir / FITTED_NAME
        if fitted.exists():
            model = cls.load(fitted)
            if model.embedder == embedder_id and model.features == FEATURES:
                return model
        default = cls.load(DEFAULT_PATH)
        if default.embedder == embedder_id:
            return default
        # Another model's cosine scores live on another scale: until `calibrate` has fitted a rule
        # for it, decide without the cosine.
        coef = [
            0.0 if name == "dense_top" else w
            for name, w in zip(default.features, default.coef, strict=True)
        ]
        return replace(default, embedder=embedder_id, coef=coef, fitted_on="without cosine")


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
