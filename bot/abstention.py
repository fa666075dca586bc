"""When to say "the documents do not answer this": a logistic rule over retrieval signals.

The weights are fitted (`styringsbot calibrate`) on labelled questions, answerable and out of scope,
and measured on the dev set in both directions. A fit for the current index in the data dir takes
precedence over the shipped default, which was fitted on the seed corpus with the default embedder.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bot.retrieval import Signals

FEATURES = ("dense_top", "coverage_top3", "unknown_share", "english")
DEFAULT_PATH = Path(__file__).with_name("abstention_default.json")
FITTED_NAME = "abstention.json"


@dataclass(frozen=True)
class AbstentionModel:
    embedder: str
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float = 0.5
    fitted_on: str = ""

    def probability(self, signals: Signals) -> float:
        """Estimated probability that the retrieved passages answer the question."""
        z = self.intercept
        for x, m, s, w in zip(signals.as_vector(), self.mean, self.scale, self.coef, strict=True):
            z += w * (x - m) / (s or 1.0)
        return 1.0 / (1.0 + math.exp(-z))

    def abstains(self, signals: Signals) -> bool:
        return self.probability(signals) < self.threshold

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> AbstentionModel:
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    @classmethod
    def for_index(cls, data_dir: Path, embedder_id: str) -> AbstentionModel:
        fitted = data_dir / FITTED_NAME
        if fitted.exists():
            model = cls.load(fitted)
            if model.embedder == embedder_id:
                return model
        default = cls.load(DEFAULT_PATH)
        if default.embedder == embedder_id:
            return default
        # Another model's cosine scores live on another scale: until `calibrate` has fitted a rule
        # for it, decide on the lexical signals alone.
        coef = [
            0.0 if name == "dense_top" else w
            for name, w in zip(FEATURES, default.coef, strict=True)
        ]
        return replace(default, embedder=embedder_id, coef=coef, fitted_on="lexical fallback")


def fit(
    signals: list[Signals], answerable: list[bool], embedder: str, fitted_on: str, c: float = 3.0
) -> AbstentionModel:
    """Class-balanced, L2-regularized logistic regression on standardized signals."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.array([s.as_vector() for s in signals], dtype=float)
    y = np.array(answerable, dtype=int)
    if len(set(y.tolist())) < 2:
        raise ValueError("calibration needs both answerable and out-of-scope questions")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, class_weight="balanced").fit((x - mean) / scale, y)
    return AbstentionModel(
        embedder=embedder,
        mean=[round(float(v), 6) for v in mean],
        scale=[round(float(v), 6) for v in scale],
        coef=[round(float(v), 6) for v in model.coef_[0]],
        intercept=round(float(model.intercept_[0]), 6),
        fitted_on=fitted_on,
    )
