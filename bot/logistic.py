"""Standardized logistic models stored as JSON: what the answer reader and the abstention rule are.

Answering only evaluates the stored weights (no scikit-learn import on the answer path); fitting
(`styringsbot calibrate`) uses scikit-learn's logistic regression.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Self


def probability(
    values: Sequence[float],
    mean: Sequence[float],
    scale: Sequence[float],
    coef: Sequence[float],
    intercept: float,
) -> float:
    """The logistic of the weighted, standardized values."""
    z = intercept
    for x, m, s, w in zip(values, mean, scale, coef, strict=True):
        z += w * (x - m) / (s or 1.0)
    return 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))


def fit(
    rows: list[list[float]], labels: list[bool], c: float, balanced: bool = True
) -> dict[str, Any]:
    """L2-regularized logistic regression on standardized rows, class-balanced unless told
    otherwise: the fields `mean`, `scale`, `coef` and `intercept` of a stored model."""
    import numpy as np

    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:  # an extra: answering never needs it, only refitting does
        from bot.calibration import CalibrationError

        raise CalibrationError(
            "refitting needs scikit-learn, which the default install leaves out; "
            'install it with: pip install -e ".[fit]"'
        ) from None

    x = np.array(rows, dtype=float)
    y = np.array(labels, dtype=int)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, class_weight="balanced" if balanced else None, max_iter=2000)
    model.fit((x - mean) / scale, y)
    return {
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "coef": [round(float(v), 6) for v in model.coef_[0]],
        "intercept": round(float(model.intercept_[0]), 6),
    }


class JsonModel:
    """Saving and reading a frozen dataclass with a `features` tuple as indented JSON."""

    def save(self, path: Path) -> None:
        data = asdict(self)  # type: ignore[call-overload]
        data["features"] = list(data["features"])
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    @staticmethod
    def read(path: Path, features: tuple[str, ...]) -> dict[str, Any]:
        """The stored fields; a file that names no features has `features`."""
        data = json.loads(path.read_text(encoding="utf-8"))
        data["features"] = tuple(data.get("features", features))
        return data


@dataclass(frozen=True)
class Rule(JsonModel):
    """A fitted logistic rule over named signals and its threshold (abstention, the verifier)."""

    embedder: str
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float = 0.5
    fitted_on: str = ""
    features: tuple[str, ...] = ()

    def probability(self, signals: dict[str, float]) -> float:
        values = [signals.get(name, 0.0) for name in self.features]
        return probability(values, self.mean, self.scale, self.coef, self.intercept)

    @classmethod
    def load(cls, path: Path) -> Self:
        return cls(**cls.read(path, cls.__dataclass_fields__["features"].default))

    @classmethod
    def pick(cls, fitted: Path, default: Path, embedder_id: str, scaled: tuple[str, ...]) -> Self:
        """The fit in the data dir (`fitted`) when it is for this embedder and these features,
        else the shipped one (`default`). Another embedder's cosines (the `scaled` signals) live
        on another scale: until `calibrate` has fitted a rule for it, decide without them."""
        features = cls.__dataclass_fields__["features"].default
        if fitted.exists():
            model = cls.load(fitted)
            if model.embedder == embedder_id and model.features == features:
                return model
        shipped = cls.load(default)
        if shipped.embedder == embedder_id:
            return shipped
        coef = [
            0.0 if name in scaled else w
            for name, w in zip(shipped.features, shipped.coef, strict=True)
        ]
        return replace(shipped, embedder=embedder_id, coef=coef, fitted_on="without cosine")
